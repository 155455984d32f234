"""CloudWatch alarms: stored only (moto evaluates none), so the wiring shows."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from mailfleet_local.stack.model import Resource

if TYPE_CHECKING:
    from mailfleet_local.stack.deployer import Deployer


def create_alarm(deployer: Deployer, logical_id: str, raw: dict[str, Any]) -> Resource:
    # Stored only: moto evaluates no alarms, but the wiring (metric, dimensions) shows.
    props = deployer.r.resolve(raw)
    name = props.get("AlarmName") or deployer.name(logical_id, 255)
    keys = (
        "AlarmDescription",
        "ActionsEnabled",
        "OKActions",
        "AlarmActions",
        "InsufficientDataActions",
        "MetricName",
        "Namespace",
        "Statistic",
        "ExtendedStatistic",
        "Dimensions",
        "Period",
        "Unit",
        "EvaluationPeriods",
        "DatapointsToAlarm",
        "Threshold",
        "ComparisonOperator",
        "TreatMissingData",
        "Metrics",
    )
    kwargs: dict[str, Any] = {k: props[k] for k in keys if k in props}
    for key in ("Period", "EvaluationPeriods", "DatapointsToAlarm"):
        if key in kwargs:
            kwargs[key] = int(kwargs[key])
    if "Threshold" in kwargs:
        kwargs["Threshold"] = float(kwargs["Threshold"])
    cloudwatch = deployer.client("cloudwatch")
    cloudwatch.put_metric_alarm(AlarmName=name, **kwargs)
    arn = cloudwatch.describe_alarms(AlarmNames=[name])["MetricAlarms"][0]["AlarmArn"]
    return Resource(logical_id, "AWS::CloudWatch::Alarm", name, name, arn, {"Arn": arn})
