"""The Lambda bridge: moto (pinned 5.2.5) invoking our handlers in-process.

These pin what the rest of the local stack relies on: the result payload, the Unhandled
error shape (errorType = the exception class, so Step Functions' Retry/Catch match it),
Event invocations running in the background, and Retry/Catch under moto's interpreter.
"""

from __future__ import annotations

import io
import json
import re
import textwrap
import time
import uuid
import zipfile
from pathlib import Path
from typing import Any

import pytest

from mailfleet_local import lambda_bridge
from mailfleet_local.stack import LocalAws
from tests.fixtures.stack import shared_local_aws
from tests.waiting import wait_until

HANDLERS = """
import json
import time
from pathlib import Path

HERE = Path(__file__).parent


class HostUnreachable(Exception):
    pass


class AuthFailed(Exception):
    pass


def _count(name):
    path = HERE / f"{name}.count"
    n = int(path.read_text()) + 1 if path.exists() else 1
    path.write_text(str(n))
    return n


def echo(event, context):
    return {
        "event": event,
        "function_name": context.function_name,
        "function_version": context.function_version,
        "invoked_function_arn": context.invoked_function_arn,
        "memory_limit_in_mb": context.memory_limit_in_mb,
        "aws_request_id": context.aws_request_id,
        "log_group_name": context.log_group_name,
        "log_stream_name": context.log_stream_name,
        "remaining": context.get_remaining_time_in_millis(),
    }


def boom(event, context):
    raise HostUnreachable("host h1 did not answer")


def flaky(event, context):
    n = _count("flaky")
    if n <= event.get("fail_times", 0):
        raise HostUnreachable(f"attempt {n} failed")
    return {"attempts": n}


def auth_fails(event, context):
    _count("auth")
    raise AuthFailed("bad token")


def slow(event, context):
    time.sleep(0.5)
    (HERE / "slow.done").write_text(json.dumps(event))
    return None


def not_json(event, context):
    return {"when": object()}
"""


@pytest.fixture(scope="module")
def aws() -> LocalAws:
    return shared_local_aws()


@pytest.fixture
def code_dir(tmp_path: Path) -> Path:
    (tmp_path / "app.py").write_text(textwrap.dedent(HANDLERS))
    return tmp_path


def _zip() -> bytes:
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w") as zf:
        zf.writestr("placeholder.txt", "code runs from the registered directory")
    return buf.getvalue()


def make_function(
    aws: LocalAws, code_dir: Path, handler: str, timeout: int = 7, memory: int = 256
) -> tuple[str, str]:
    name = f"bridge-{handler.rpartition('.')[2].replace('_', '-')}-{uuid.uuid4().hex[:8]}"
    iam = aws.client("iam")
    try:
        role = iam.get_role(RoleName="bridge-test")["Role"]["Arn"]
    except iam.exceptions.NoSuchEntityException:
        trust = {"Version": "2012-10-17", "Statement": []}
        role = iam.create_role(RoleName="bridge-test", AssumeRolePolicyDocument=json.dumps(trust))
        role = role["Role"]["Arn"]
    arn = aws.client("lambda").create_function(
        FunctionName=name,
        Runtime="python3.12",
        Role=role,
        Handler=handler,
        Code={"ZipFile": _zip()},
        Timeout=timeout,
        MemorySize=memory,
    )["FunctionArn"]
    lambda_bridge.register_function(name, code_dir)
    return name, arn


def invoke(aws: LocalAws, name: str, event: Any, **kwargs: Any) -> dict[str, Any]:
    response = aws.client("lambda").invoke(
        FunctionName=name, Payload=json.dumps(event).encode(), **kwargs
    )
    response["Body"] = response["Payload"].read()
    return response


def test_result_payload_and_context(aws: LocalAws, code_dir: Path) -> None:
    name, arn = make_function(aws, code_dir, "app.echo", timeout=7, memory=256)
    began = time.monotonic()
    response = invoke(aws, name, {"hello": ["world", 1]})
    took_ms = (time.monotonic() - began) * 1000
    assert response["StatusCode"] == 200
    assert "FunctionError" not in response
    result = json.loads(response["Body"])
    assert result["event"] == {"hello": ["world", 1]}
    assert result["function_name"] == name
    assert result["function_version"] == "$LATEST"
    assert result["invoked_function_arn"] == arn
    assert result["memory_limit_in_mb"] == "256"  # a string, as the real runtime has it
    assert uuid.UUID(result["aws_request_id"])
    assert result["log_group_name"] == f"/aws/lambda/{name}"
    assert re.fullmatch(r"\d{4}/\d{2}/\d{2}/\[\$LATEST\][0-9a-f]{32}", result["log_stream_name"])
    # The 7 s timeout less what the call took at most (however slow the machine is).
    assert 7000 - took_ms - 1 <= result["remaining"] <= 7000


def test_unhandled_error_shape(aws: LocalAws, code_dir: Path) -> None:
    name, _ = make_function(aws, code_dir, "app.boom")
    response = invoke(aws, name, {})
    assert response["StatusCode"] == 200
    assert response["FunctionError"] == "Unhandled"
    error = json.loads(response["Body"])
    assert error["errorType"] == "HostUnreachable"
    assert error["errorMessage"] == "host h1 did not answer"
    assert isinstance(error["stackTrace"], list)
    assert any("in boom" in line for line in error["stackTrace"])


def test_runtime_errors_are_named_like_lambda(aws: LocalAws, code_dir: Path) -> None:
    name, _ = make_function(aws, code_dir, "app.not_json")
    error = json.loads(invoke(aws, name, {})["Body"])
    assert error["errorType"] == "Runtime.MarshalError"

    name, _ = make_function(aws, code_dir, "missing_module.handler")
    error = json.loads(invoke(aws, name, {})["Body"])
    assert error["errorType"] == "Runtime.ImportModuleError"

    name, _ = make_function(aws, code_dir, "app.no_such_handler")
    error = json.loads(invoke(aws, name, {})["Body"])
    assert error["errorType"] == "Runtime.HandlerNotFound"


def test_event_invocation_runs_in_the_background(aws: LocalAws, code_dir: Path) -> None:
    name, _ = make_function(aws, code_dir, "app.slow")
    started = time.monotonic()
    response = invoke(aws, name, {"job": "j1"}, InvocationType="Event")
    took = time.monotonic() - started
    assert response["StatusCode"] == 202
    assert response["Body"] == b""
    assert took < 0.4, "an Event invocation must not wait for the handler"
    assert not (code_dir / "slow.done").exists()
    assert lambda_bridge.drain(timeout=10)
    assert json.loads((code_dir / "slow.done").read_text()) == {"job": "j1"}


def test_invoke_local_calls_the_handler_directly(aws: LocalAws, code_dir: Path) -> None:
    name, arn = make_function(aws, code_dir, "app.echo")
    result = lambda_bridge.invoke_local(name, {"a": 1})
    assert result["event"] == {"a": 1}
    assert result["invoked_function_arn"] == arn

    boom, _ = make_function(aws, code_dir, "app.boom")
    with pytest.raises(Exception, match="host h1 did not answer") as caught:
        lambda_bridge.invoke_local(boom, {})
    assert type(caught.value).__name__ == "HostUnreachable"


def test_each_function_gets_its_own_module(aws: LocalAws, tmp_path: Path) -> None:
    # Every function's module is app.py: two directories must not share one module.
    first, second = tmp_path / "one", tmp_path / "two"
    for directory, answer in ((first, "one"), (second, "two")):
        directory.mkdir()
        (directory / "helper.py").write_text(f"ANSWER = {answer!r}\n")
        (directory / "app.py").write_text(
            "import helper\n\ndef handler(event, context):\n    return helper.ANSWER\n"
        )
    one, _ = make_function(aws, first, "app.handler")
    two, _ = make_function(aws, second, "app.handler")
    assert lambda_bridge.invoke_local(one, {}) == "one"
    assert lambda_bridge.invoke_local(two, {}) == "two"


def test_sibling_modules_stay_where_libraries_look_them_up(aws: LocalAws, tmp_path: Path) -> None:
    # pydantic resolves a forward reference through sys.modules[cls.__module__] at first use.
    (tmp_path / "shapes.py").write_text(
        "from __future__ import annotations\n\nfrom pydantic import BaseModel\n\n\n"
        "class Outer(BaseModel):\n    inner: Inner\n\n\n"
        "class Inner(BaseModel):\n    n: int\n"
    )
    (tmp_path / "app.py").write_text(
        "import shapes\n\n\ndef handler(event, context):\n"
        "    return shapes.Outer.model_validate(event).inner.n\n"
    )
    name, _ = make_function(aws, tmp_path, "app.handler")
    assert lambda_bridge.invoke_local(name, {"inner": {"n": 5}}) == 5


def test_state_machine_retry_and_catch_on_custom_errors(aws: LocalAws, code_dir: Path) -> None:
    _, flaky_arn = make_function(aws, code_dir, "app.flaky")
    _, auth_arn = make_function(aws, code_dir, "app.auth_fails")
    definition = {
        "StartAt": "Flaky",
        "States": {
            "Flaky": {
                "Type": "Task",
                "Resource": flaky_arn,
                "Retry": [
                    {
                        "ErrorEquals": ["HostUnreachable"],
                        "IntervalSeconds": 1,
                        "MaxAttempts": 3,
                        "BackoffRate": 2.0,
                    }
                ],
                "ResultPath": "$.flaky",
                "Next": "Auth",
            },
            "Auth": {
                "Type": "Task",
                "Resource": "arn:aws:states:::lambda:invoke",
                "Parameters": {"FunctionName": auth_arn, "Payload.$": "$"},
                # Not retried: AuthFailed is not in ErrorEquals.
                "Retry": [{"ErrorEquals": ["HostUnreachable"], "MaxAttempts": 5}],
                "Catch": [
                    {"ErrorEquals": ["AuthFailed"], "ResultPath": "$.caught", "Next": "Caught"}
                ],
                "Next": "NotCaught",
            },
            "Caught": {"Type": "Pass", "End": True},
            "NotCaught": {"Type": "Fail", "Error": "ShouldNotHappen"},
        },
    }
    sfn = aws.client("stepfunctions")
    role = aws.client("iam").get_role(RoleName="bridge-test")["Role"]["Arn"]
    machine = sfn.create_state_machine(
        name=f"bridge-{uuid.uuid4().hex[:8]}", definition=json.dumps(definition), roleArn=role
    )["stateMachineArn"]
    with lambda_bridge.instant_waits():
        execution = sfn.start_execution(
            stateMachineArn=machine, name=str(uuid.uuid4()), input=json.dumps({"fail_times": 2})
        )["executionArn"]
        described = wait_until(lambda: (lambda d: d if d["status"] != "RUNNING" else None)(
            sfn.describe_execution(executionArn=execution)), 30, what="the execution finished")
    assert described["status"] == "SUCCEEDED", described
    output = json.loads(described["output"])
    assert output["flaky"] == {"attempts": 3}  # two HostUnreachable, retried, then success
    assert output["caught"]["Error"] == "AuthFailed"
    assert json.loads(output["caught"]["Cause"])["errorMessage"] == "bad token"
    assert (code_dir / "flaky.count").read_text() == "3"
    assert (code_dir / "auth.count").read_text() == "1"
