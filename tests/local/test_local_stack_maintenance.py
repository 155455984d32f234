"""What the local stack deploys for scheduled maintenance: the schedule group (with the
template's nightly backup in it), the hosts-down alarm wired to the sweep's metric, the
backups bucket's lifecycle rule, the sweep rule."""

from __future__ import annotations

import json
from typing import Any

from mailfleet_local.stack import Deployment, LocalAws


def deployment(local_api: Any) -> Deployment:
    local_api.ensure_deployed()
    return local_api.deployment  # type: ignore[no-any-return]


def test_schedule_group_holds_the_nightly_backup(local_api: Any, local_aws: LocalAws) -> None:
    group = deployment(local_api).resources["JobSchedulesGroup"]
    assert group.type == "AWS::Scheduler::ScheduleGroup" and group.name == "mailfleet-schedules"
    scheduler = local_aws.client("scheduler")
    assert scheduler.get_schedule_group(Name=group.name)["Arn"] == group.arn
    nightly = scheduler.get_schedule(Name="nightly-appliance-backup", GroupName=group.name)
    assert nightly["ScheduleExpression"] == "cron(0 2 * * ? *)"
    payload = json.loads(nightly["Target"]["Input"])
    assert payload["job"]["targets"] == {"kind": "appliance", "tags": {}}
    env = deployment(local_api).environment
    assert env["SCHEDULE_GROUP"] == group.name


def test_hosts_down_alarm_watches_the_sweeps_metric(local_api: Any,
                                                    local_aws: LocalAws) -> None:
    alarm = deployment(local_api).resources["HostsDownAlarm"]
    found = local_aws.client("cloudwatch").describe_alarms(AlarmNames=[alarm.name])
    (described,) = found["MetricAlarms"]
    assert described["Namespace"] == env_value(local_api, "POWERTOOLS_METRICS_NAMESPACE")
    assert described["MetricName"] == "HostsDown"
    assert described["Dimensions"] == [
        {"Name": "service", "Value": env_value(local_api, "POWERTOOLS_SERVICE_NAME")}]
    assert described["ComparisonOperator"] == "GreaterThanThreshold"
    assert described["Threshold"] == 0 and described["EvaluationPeriods"] == 2
    assert described.get("AlarmActions", []) == []  # no AlarmTopicArn given


def env_value(local_api: Any, key: str) -> str:
    return deployment(local_api).environment[key]


def test_backups_bucket_expires_archives(local_api: Any, local_aws: LocalAws) -> None:
    bucket = deployment(local_api).resources["BackupsBucket"].name
    rules = local_aws.client("s3").get_bucket_lifecycle_configuration(Bucket=bucket)["Rules"]
    (rule,) = rules
    assert rule["Status"] == "Enabled" and rule["Expiration"]["Days"] == 30
    assert rule["Filter"] == {"Prefix": "appliances/"}


def test_the_sweep_is_an_eventbridge_rate_rule(local_api: Any) -> None:
    sweep = next(s for s in deployment(local_api).schedules
                 if s.logical_id == "MaintenanceFunctionHealthSweep")
    assert sweep.source == "Schedule" and sweep.expression == "rate(5 minutes)"
    assert sweep.target_name == "mailfleet-maintenance" and sweep.input is None
