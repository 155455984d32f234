"""What only a real deployment would show, checked on the template and the state
machines (the findings of issue 9). Generic: every function, machine and name the
template holds is covered, those added later too."""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

from cfnlint.decode import cfn_yaml

ROOT = Path(__file__).resolve().parents[2]
TEMPLATE = ROOT / "template.yaml"
API_GATEWAY_LIMIT_S = 29
COLD_START_S = 3  # init of the heaviest handler under 3.12 is ~1 s (bench): room to spare

# CloudFormation's name limits of the resource types whose names we build.
NAME_LIMITS = {
    ("AWS::Serverless::Function", "FunctionName"): 64,
    ("AWS::Serverless::StateMachine", "Name"): 80,
    ("AWS::Serverless::LayerVersion", "LayerName"): 140,
    ("AWS::Scheduler::ScheduleGroup", "Name"): 64,
    ("AWS::CloudWatch::Alarm", "AlarmName"): 255,
    ("AWS::Logs::LogGroup", "LogGroupName"): 512,
    ("AWS::SQS::Queue", "QueueName"): 80,
}


def template() -> dict[str, Any]:
    return dict(cfn_yaml.load(str(TEMPLATE)))


def functions(t: dict[str, Any]) -> dict[str, dict[str, Any]]:
    glob = t.get("Globals", {}).get("Function", {})
    return {k: {**glob, **v.get("Properties", {})} for k, v in t["Resources"].items()
            if v["Type"] == "AWS::Serverless::Function"}


def state_machines(t: dict[str, Any]) -> dict[str, tuple[dict[str, Any], dict[str, Any]]]:
    found = {}
    for logical_id, resource in t["Resources"].items():
        if resource["Type"] == "AWS::Serverless::StateMachine":
            props = resource["Properties"]
            asl = json.loads((ROOT / props["DefinitionUri"]).read_text())
            found[logical_id] = (props, asl)
    return found


def all_states(states: dict[str, Any]) -> list[tuple[str, dict[str, Any], bool]]:
    """(name, state, inside a Map's processor) for every state, nested ones too."""
    out = []
    for name, state in states.items():
        out.append((name, state, False))
        inner = state.get("ItemProcessor") or state.get("Iterator")
        if inner:
            out += [(n, s, True) for n, s, _ in all_states(inner["States"])]
    return out


def test_the_layer_is_built_for_the_functions_architecture() -> None:
    t = template()
    for logical_id, resource in t["Resources"].items():
        if resource["Type"] != "AWS::Serverless::LayerVersion":
            continue
        compatible = resource["Properties"]["CompatibleArchitectures"]
        build_arch = resource.get("Metadata", {}).get("BuildArchitecture", "x86_64")
        assert build_arch in compatible, f"{logical_id} is built for {build_arch}"
        for name, props in functions(t).items():
            uses = [ref.get("Ref") for ref in props.get("Layers", []) if isinstance(ref, dict)]
            if logical_id in uses:
                assert props.get("Architectures", ["x86_64"]) == [build_arch], name


def test_map_children_drop_their_output() -> None:
    """A Map gathers every child's output: past a few hundred items 256 KiB is exceeded."""
    for logical_id, (_props, asl) in state_machines(template()).items():
        for name, state in asl["States"].items():
            inner = state.get("ItemProcessor") or state.get("Iterator")
            if not inner:
                continue
            for child, child_state, _ in all_states(inner["States"]):
                ends = child_state.get("End") or child_state["Type"] == "Succeed"
                if ends and child_state["Type"] != "Fail":
                    assert "OutputPath" in child_state and child_state["OutputPath"] is None, (
                        f"{logical_id} {name}: child state {child} ends with its output")


def test_each_task_fits_its_functions_timeout() -> None:
    """A step the machine allows N seconds must be allowed N seconds by Lambda too."""
    t = template()
    fns = functions(t)
    for logical_id, (props, asl) in state_machines(t).items():
        subs = props.get("DefinitionSubstitutions", {})
        for name, state, _ in all_states(asl["States"]):
            resource = state.get("Resource", "")
            match = re.fullmatch(r"\$\{(\w+)\}", resource)
            if state["Type"] != "Task" or not match:
                continue
            target = subs[match.group(1)]
            function_id = target["Fn::GetAtt"][0] if "Fn::GetAtt" in target else None
            if function_id not in fns:
                continue
            allowed = state.get("TimeoutSeconds", 60)
            timeout = int(fns[function_id]["Timeout"])
            assert allowed <= timeout, (
                f"{logical_id}.{name} allows {allowed} s, {function_id} stops at {timeout} s")


def test_functions_behind_the_api_answer_before_api_gateway_gives_up() -> None:
    t = template()
    for name, props in functions(t).items():
        events = props.get("Events", {}).values()
        is_api = any(e.get("Type") == "Api" for e in events)
        is_authorizer = any(
            name in json.dumps(r.get("Properties", {}).get("Auth", {}))
            for r in t["Resources"].values() if r["Type"] == "AWS::Serverless::Api")
        if not (is_api or is_authorizer):
            continue
        assert int(props["Timeout"]) + COLD_START_S <= API_GATEWAY_LIMIT_S, name
        call = float(props.get("Environment", {}).get("Variables", {}).get(
            "AWS_CALL_TIMEOUT_SECONDS", 20))
        # mailfleet.aws: two attempts of (1 s connect + call) when the variable is set
        assert 2 * (1 + call) < int(props["Timeout"]), f"{name}: one AWS call could outlast it"


def test_wait_is_cut_to_what_the_invocation_has_left(monkeypatch: Any) -> None:
    import importlib.util

    from mailfleet import aws

    monkeypatch.setattr(aws, "call_budget_seconds", lambda: 8.0)  # the API's (3 s calls)
    spec = importlib.util.spec_from_file_location(
        "_api_app_for_wait", ROOT / "functions" / "api" / "app.py",
        submodule_search_locations=None)
    assert spec is not None and spec.loader is not None
    import sys

    sys.path.insert(0, str(ROOT / "functions" / "api"))
    try:
        module = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(module)
    finally:
        sys.path.remove(str(ROOT / "functions" / "api"))

    class Context:
        def __init__(self, left_ms: int) -> None:
            self.left_ms = left_ms

        def get_remaining_time_in_millis(self) -> int:
            return self.left_ms

    assert module.wait_budget(25, Context(26_000)) == 18
    assert module.wait_budget(25, Context(1_000)) == 0.0
    assert module.wait_budget(5, Context(26_000)) == 5
    assert module.wait_budget(None, Context(26_000)) == 0.0


def _max_stack_name(t: dict[str, Any]) -> int:
    limit = 10_000
    for resource in t["Resources"].values():
        for (rtype, prop), most in NAME_LIMITS.items():
            value = resource.get("Properties", {}).get(prop) if resource["Type"] == rtype else None
            if isinstance(value, dict) and "Fn::Sub" in value and isinstance(value["Fn::Sub"], str):
                rest = value["Fn::Sub"].replace("${AWS::StackName}", "")
                if rest != value["Fn::Sub"]:
                    limit = min(limit, most - len(rest))
    return limit


def test_the_stack_name_limit_is_stated_and_true() -> None:
    t = template()
    limit = _max_stack_name(t)
    stated = re.search(r"stack name: it may be at most (\d+) characters", t["Description"])
    assert stated, "the template's Description must state the stack-name limit"
    assert int(stated.group(1)) == limit, f"the names allow {limit} characters, not {stated[1]}"
    assert f"at most {limit} characters" in (ROOT / "samconfig.toml").read_text()


def test_host_secrets_are_per_stack() -> None:
    """Two stacks in one account must not overwrite each other's host credentials."""
    t = template()
    env = t["Globals"]["Function"]["Environment"]["Variables"]["HOST_SECRETS_PREFIX"]
    assert env == {"Fn::Sub": "${AWS::StackName}/${HostSecretsPrefix}"}
    text = TEMPLATE.read_text()
    assert text.count("${HostSecretsPrefix}") == text.count(
        "${AWS::StackName}/${HostSecretsPrefix}"), "a secrets ARN without the stack's name"


def test_passrole_names_the_service() -> None:
    for name, props in functions(template()).items():
        for policy in props.get("Policies", []):
            for statement in policy.get("Statement", []) if isinstance(policy, dict) else []:
                actions = statement["Action"]
                if "iam:PassRole" in ([actions] if isinstance(actions, str) else actions):
                    cond = statement.get("Condition", {}).get("StringEquals", {})
                    assert "iam:PassedToService" in cond, f"{name}: PassRole to any service"


def test_template_schedules_use_a_role_the_api_may_pass() -> None:
    """Pausing a schedule (UpdateSchedule) passes its role again."""
    for name, props in functions(template()).items():
        for event_name, event in props.get("Events", {}).items():
            if event.get("Type") == "ScheduleV2" and "GroupName" in event["Properties"]:
                assert event["Properties"].get("RoleArn") == {
                    "Fn::GetAtt": ["SchedulerRole", "Arn"]}, f"{name}.{event_name}"


STATEFUL = ("AWS::DynamoDB::Table", "AWS::S3::Bucket", "AWS::SecretsManager::Secret")


def test_stateful_resources_are_retained_and_recoverable() -> None:
    resources = template()["Resources"]
    for logical_id, resource in resources.items():
        if resource["Type"] not in STATEFUL:
            continue
        assert resource.get("DeletionPolicy") == "Retain", logical_id
        assert resource.get("UpdateReplacePolicy") == "Retain", logical_id
        props = resource["Properties"]
        if resource["Type"] == "AWS::DynamoDB::Table" and logical_id != "IdempotencyTable":
            assert props["PointInTimeRecoverySpecification"]["PointInTimeRecoveryEnabled"], (
                logical_id)
        if resource["Type"] == "AWS::S3::Bucket":
            policies = [r for r in resources.values() if r["Type"] == "AWS::S3::BucketPolicy"
                        and r["Properties"]["Bucket"] == {"Ref": logical_id}]
            assert any(s["Effect"] == "Deny" and s["Condition"]["Bool"][
                "aws:SecureTransport"] == "false" for p in policies
                for s in p["Properties"]["PolicyDocument"]["Statement"]), (
                f"{logical_id}: no TLS-only bucket policy")
    backups = resources["BackupsBucket"]["Properties"]
    assert backups["VersioningConfiguration"]["Status"] == "Enabled"


def test_the_api_keeps_answering_under_load() -> None:
    t = template()
    api = next(r for r in t["Resources"].values() if r["Type"] == "AWS::Serverless::Api")
    settings = api["Properties"]["MethodSettings"][0]
    assert {"ThrottlingRateLimit", "ThrottlingBurstLimit"} <= set(settings)
    for name in ("ApiFunction", "AuthorizerFunction"):
        assert "ReservedConcurrentExecutions" in functions(t)[name], name


def _log_group(t: dict[str, Any], ref: Any) -> dict[str, Any]:
    logical_id = ref.get("Ref") or ref.get("Fn::GetAtt", [None])[0]
    group = t["Resources"][logical_id]
    assert group["Type"] == "AWS::Logs::LogGroup", logical_id
    assert "RetentionInDays" in group["Properties"], f"{logical_id} keeps logs forever"
    return dict(group["Properties"])


def test_every_function_machine_and_api_logs_with_retention() -> None:
    t = template()
    for name, props in functions(t).items():
        group = _log_group(t, props["LoggingConfig"]["LogGroup"])
        assert group["LogGroupName"]["Fn::Sub"].startswith("/aws/lambda/"), name
    for name, (props, _asl) in state_machines(t).items():
        (destination,) = props["Logging"]["Destinations"]
        _log_group(t, destination["CloudWatchLogsLogGroup"]["LogGroupArn"])
        assert props["Logging"]["IncludeExecutionData"] is False, name
    for resource in t["Resources"].values():
        if resource["Type"] == "AWS::Serverless::Api":
            _log_group(t, resource["Properties"]["AccessLogSetting"]["DestinationArn"])


ASYNC_EVENTS = ("Schedule", "ScheduleV2", "EventBridgeRule", "CloudWatchEvent")


def test_every_async_invocation_and_schedule_has_a_failure_destination_with_an_alarm() -> None:
    t = template()
    resources = t["Resources"]
    alarmed = {json.dumps(r["Properties"].get("Dimensions")) + json.dumps(
        r["Properties"].get("MetricName")) for r in resources.values()
        if r["Type"] == "AWS::CloudWatch::Alarm"}
    for name, props in functions(t).items():
        events = props.get("Events", {})
        if not (props.get("EventInvokeConfig") or any(
                e["Type"] in ASYNC_EVENTS for e in events.values())):
            continue
        on_failure = props["EventInvokeConfig"]["DestinationConfig"]["OnFailure"]
        if on_failure["Type"] == "SQS":
            queue = on_failure["Destination"]["Fn::GetAtt"][0]
            assert any(queue in a for a in alarmed), f"{name}: no alarm on {queue}"
        else:  # the maintenance function closes the job and counts it
            assert on_failure["Type"] == "Lambda", name
            assert any("JobsClosedOnWorkerFailure" in a for a in alarmed)
        for event_name, event in events.items():
            if event["Type"] in ("Schedule", "ScheduleV2"):
                assert "DeadLetterConfig" in event["Properties"], f"{name}.{event_name}"
