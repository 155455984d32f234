"""Every AWS call a function makes in the suite, checked against that function's role.

A pytest plugin (tests/conftest.py loads it). botocore's `before-call` event gives each
call's service and operation before it is sent; the lambda bridge says which function's
handler is running (`lambda_bridge.current_function`, carried into the threads the
handler starts). The call becomes IAM actions and resource ARNs (`actions_for`), and is
evaluated against the role SAM gives that function: template.yaml expanded by
aws-sam-translator (`make build` writes .aws-sam/translated.json), policy templates
included, with names resolved from the local deployment. A call the role would not allow
is answered AccessDenied, as AWS would, and fails the whole run naming function, action
and resource. Nothing here knows the functions by name: a new one is covered as it comes.
"""

from __future__ import annotations

import concurrent.futures
import contextvars
import fnmatch
import hashlib
import json
import os
import re
import subprocess
import sys
import threading
from collections import defaultdict
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest

REPO = Path(__file__).resolve().parents[1]
TEMPLATE = REPO / "template.yaml"
TRANSLATED = REPO / ".aws-sam" / "translated.json"
SAM_PYTHON = REPO / ".venv-sam" / "bin" / "python"
_MOTO_DIR = os.sep + "moto" + os.sep


@dataclass(frozen=True)
class Need:
    """One IAM authorization a call needs: the action, on a resource, with context keys."""

    action: str
    resource: str
    context: tuple[tuple[str, str], ...] = ()


# ---------------------------------------------------------------- call -> actions

def _name_of(arn_or_name: str, kind: str) -> str:
    return arn_or_name.split(f":{kind}:", 1)[1] if f":{kind}:" in arn_or_name else arn_or_name


def actions_for(prefix: str, op: str, params: dict[str, Any], region: str,
                account: str) -> list[Need]:
    """The IAM actions and resources one API call needs (the services mailfleet uses;
    any other falls back to `prefix:Operation` on `*`, which a policy rarely grants, so a
    new service shows up here as a failure to extend this table, never as a pass)."""
    arn = f"arn:aws:{prefix}:{region}:{account}"
    if prefix == "sts" and op == "GetCallerIdentity":
        return []
    if prefix == "dynamodb":
        table = f"arn:aws:dynamodb:{region}:{account}:table/"
        if op in ("BatchGetItem", "BatchWriteItem"):
            single = "GetItem" if op == "BatchGetItem" else None
            needs = []
            for name, items in params.get("RequestItems", {}).items():
                if single:
                    needs.append(Need(f"dynamodb:{op}", table + name))
                    continue
                kinds = {"PutItem" if "PutRequest" in i else "DeleteItem" for i in items}
                needs.append(Need("dynamodb:BatchWriteItem", table + name))
                needs += [Need(f"dynamodb:{k}", table + name) for k in sorted(kinds)]
            return needs
        if op in ("TransactWriteItems", "TransactGetItems"):
            kinds = {"Put": "PutItem", "Update": "UpdateItem", "Delete": "DeleteItem",
                     "ConditionCheck": "ConditionCheckItem", "Get": "GetItem"}
            needs = []
            for item in params.get("TransactItems", []):
                for key, action in kinds.items():
                    if key in item:
                        needs.append(Need(f"dynamodb:{action}", table + item[key]["TableName"]))
            return needs
        resource = table + params.get("TableName", "*")
        if params.get("IndexName"):
            resource += "/index/" + params["IndexName"]
        return [Need(f"dynamodb:{op}", resource)]
    if prefix == "secretsmanager":
        if op == "BatchGetSecretValue":
            ids = params.get("SecretIdList", [])
            return [Need("secretsmanager:BatchGetSecretValue", "*")] + [
                Need("secretsmanager:GetSecretValue", _secret_arn(i, arn)) for i in ids]
        secret = params.get("SecretId") or params.get("Name")
        return [Need(f"secretsmanager:{op}", _secret_arn(secret, arn) if secret else "*")]
    if prefix == "s3":
        bucket, key = params.get("Bucket", "*"), params.get("Key")
        obj = f"arn:aws:s3:::{bucket}/{key}"
        s3 = {"PutObject": "PutObject", "CreateMultipartUpload": "PutObject",
              "UploadPart": "PutObject", "CompleteMultipartUpload": "PutObject",
              "GetObject": "GetObject", "HeadObject": "GetObject",
              "DeleteObject": "DeleteObject", "AbortMultipartUpload": "AbortMultipartUpload",
              "ListParts": "ListMultipartUploadParts"}
        if op in s3:
            return [Need(f"s3:{s3[op]}", obj)]
        if op in ("ListObjects", "ListObjectsV2", "HeadBucket"):
            return [Need("s3:ListBucket", f"arn:aws:s3:::{bucket}")]
        if op == "DeleteObjects":
            keys = [o["Key"] for o in params.get("Delete", {}).get("Objects", [])]
            return [Need("s3:DeleteObject", f"arn:aws:s3:::{bucket}/{k}") for k in keys]
        if key is not None:
            return [Need(f"s3:{op}", obj)]
        return [Need(f"s3:{op}", f"arn:aws:s3:::{bucket}")]
    if prefix == "lambda":
        name = params.get("FunctionName", "*")
        name = _name_of(name, "function").split(":")[0]
        action = {"Invoke": "InvokeFunction", "InvokeAsync": "InvokeFunction"}.get(op, op)
        return [Need(f"lambda:{action}", f"{arn}:function:{name}")]
    if prefix == "states":
        for key in ("executionArn", "stateMachineArn", "mapRunArn", "activityArn"):
            if key in params:
                return [Need(f"states:{op}", params[key])]
        return [Need(f"states:{op}", "*")]
    if prefix == "scheduler":
        if op == "ListSchedules":
            return [Need("scheduler:ListSchedules", "*")]
        group = params.get("GroupName") or "default"
        if op.endswith("ScheduleGroup"):
            return [Need(f"scheduler:{op}", f"{arn}:schedule-group/{params.get('Name')}")]
        needs = [Need(f"scheduler:{op}", f"{arn}:schedule/{group}/{params.get('Name')}")]
        role = (params.get("Target") or {}).get("RoleArn")
        if role:  # Scheduler assumes the role later: the caller passes it now
            needs.append(Need("iam:PassRole", role,
                              (("iam:PassedToService", "scheduler.amazonaws.com"),)))
        return needs
    if prefix == "ssm" and op in ("GetParameter", "GetParameters", "PutParameter"):
        names = params.get("Names") or [params.get("Name")]
        return [Need(f"ssm:{op}", f"{arn}:parameter/{str(n).lstrip('/')}") for n in names]
    if prefix == "sqs" and "QueueUrl" in params:
        return [Need(f"sqs:{op}", f"{arn}:{params['QueueUrl'].rstrip('/').rsplit('/', 1)[-1]}")]
    if prefix == "kms" and "KeyId" in params:  # the audit sealer's Sign, the API's GetPublicKey
        key = str(params["KeyId"])
        return [Need(f"kms:{op}", key if key.startswith("arn:") else f"{arn}:key/{key}")]
    if prefix == "sns" and "TopicArn" in params:
        return [Need(f"sns:{op}", params["TopicArn"])]
    return [Need(f"{prefix}:{op}", "*")]


def _secret_arn(secret: str, arn: str) -> str:
    # Secrets Manager appends six random characters to a secret's name in its ARN.
    return secret if secret.startswith("arn:") else f"{arn}:secret:{secret}-AbCdEf"


# ---------------------------------------------------------------- policy evaluation

def _listed(value: Any) -> list[Any]:
    return value if isinstance(value, list) else [value]


def _matches(pattern: str, value: str, *, case: bool) -> bool:
    if not case:
        pattern, value = pattern.lower(), value.lower()
    regex = "".join(".*" if c == "*" else "." if c == "?" else re.escape(c) for c in pattern)
    return re.fullmatch(regex, value, re.DOTALL) is not None


def _condition_holds(condition: dict[str, Any], context: dict[str, str]) -> bool:
    for operator, tests in condition.items():
        for key, wanted in tests.items():
            have = context.get(key)
            if have is None:
                return False  # a key this call does not carry: as IAM, no match
            options = [str(w) for w in _listed(wanted)]
            if operator in ("StringEquals", "ArnEquals"):
                ok = have in options
            elif operator in ("StringLike", "ArnLike"):
                ok = any(fnmatch.fnmatchcase(have, w) for w in options)
            else:
                return False  # an operator this check does not know cannot allow
            if not ok:
                return False
    return True


def _statement_applies(statement: dict[str, Any], need: Need) -> bool:
    if "Action" in statement:
        if not any(_matches(a, need.action, case=False) for a in _listed(statement["Action"])):
            return False
    elif any(_matches(a, need.action, case=False) for a in _listed(statement["NotAction"])):
        return False
    if "Resource" in statement:
        if not any(_matches(r, need.resource, case=True) for r in _listed(statement["Resource"])):
            return False
    elif any(_matches(r, need.resource, case=True) for r in _listed(statement["NotResource"])):
        return False
    return _condition_holds(statement.get("Condition") or {}, dict(need.context))


def allowed(statements: Iterable[dict[str, Any]], need: Need) -> bool:
    statements = list(statements)
    if any(s.get("Effect") == "Deny" and _statement_applies(s, need) for s in statements):
        return False
    return any(s.get("Effect") == "Allow" and _statement_applies(s, need) for s in statements)


# ---------------------------------------------------------------- the template's roles

def translated_template(*, regenerate: bool = True) -> dict[str, Any] | None:
    """template.yaml as SAM expands it; made again when the template changed. None when
    the SAM CLI's venv is missing (`make build` makes it)."""
    digest = hashlib.sha256(TEMPLATE.read_bytes()).hexdigest()
    if TRANSLATED.is_file():
        data = json.loads(TRANSLATED.read_text())
        if data.get("x-mailfleet-template-sha256") == digest:
            return data
    if not regenerate or not SAM_PYTHON.is_file():
        return None
    TRANSLATED.parent.mkdir(exist_ok=True)
    subprocess.run([str(SAM_PYTHON), str(REPO / "scripts" / "sam_translate.py"),
                    str(TEMPLATE), str(TRANSLATED)], check=True, timeout=300)
    return json.loads(TRANSLATED.read_text())


def role_statements(translated: dict[str, Any], function_id: str,
                    resolve: Callable[[Any], Any]) -> list[dict[str, Any]]:
    """Every statement of the role the function runs as (inline policies; the managed
    ones SAM adds grant logs and X-Ray only, which no handler calls)."""
    resources = translated["Resources"]
    role = resources[function_id]["Properties"]["Role"]
    role_id = role["Fn::GetAtt"][0] if isinstance(role, dict) and "Fn::GetAtt" in role else None
    if role_id is None or role_id not in resources:
        raise AssertionError(f"{function_id}: role {role!r} is not a role of the template")
    statements: list[dict[str, Any]] = []
    for policy in resources[role_id]["Properties"].get("Policies", []):
        document = resolve(policy["PolicyDocument"])
        statements += _listed(document.get("Statement", []))
    return statements


def _resolver_for(deployment: Any, translated: dict[str, Any]) -> Callable[[Any], Any]:
    from mailfleet_local import stack

    pseudo = {
        "AWS::Region": deployment.region, "AWS::AccountId": deployment.account_id,
        "AWS::StackName": deployment.stack_name, "AWS::Partition": "aws",
        "AWS::URLSuffix": "amazonaws.com", "AWS::NotificationARNs": [],
        "AWS::StackId": f"arn:aws:cloudformation:{deployment.region}:"
                        f"{deployment.account_id}:stack/{deployment.stack_name}/local",
    }
    resolver = stack.Resolver(pseudo, deployment.parameters,
                               translated.get("Mappings", {}), deployment.region)
    resolver.physical.update(deployment.resources)
    for name, expr in translated.get("Conditions", {}).items():
        resolver.conditions[name] = bool(resolver.resolve(expr))
    return resolver.resolve


# ---------------------------------------------------------------- the recorder

@dataclass
class Recorder:
    translated: dict[str, Any] | None
    deployments: list[Any] = field(default_factory=list)
    checked: dict[str, set[str]] = field(default_factory=lambda: defaultdict(set))
    denied: dict[tuple[str, str, str], str] = field(default_factory=dict)
    _roles: dict[tuple[int, str], list[dict[str, Any]]] = field(default_factory=dict)
    _lock: threading.Lock = field(default_factory=threading.Lock)

    def function_of(self, name: str) -> tuple[Any, str] | None:
        for deployment in reversed(self.deployments):
            for logical_id, info in deployment.functions.items():
                if info.name == name:
                    return deployment, logical_id
        return None

    def statements(self, deployment: Any, logical_id: str) -> list[dict[str, Any]]:
        key = (id(deployment), logical_id)
        with self._lock:
            if key not in self._roles:
                assert self.translated is not None
                resolve = _resolver_for(deployment, self.translated)
                self._roles[key] = role_statements(self.translated, logical_id, resolve)
            return self._roles[key]

    @staticmethod
    def keep_params(params: dict[str, Any], context: dict[str, Any], **_: Any) -> None:
        # before-call sees the serialized request; the API's own parameters are here.
        context["mailfleet_api_params"] = dict(params)

    def before_call(self, model: Any, context: dict[str, Any], **_: Any) -> Any:
        from mailfleet_local import lambda_bridge

        params = context.get("mailfleet_api_params", {})

        name = lambda_bridge.current_function.get()
        if name is None or self.translated is None or _called_by_moto():
            return None
        found = self.function_of(name)
        if found is None:
            return None
        deployment, logical_id = found
        if Path(deployment.template_path).resolve() != TEMPLATE:
            return None  # a test's own template: no SAM roles to hold it to
        prefix = model.service_model.signing_name
        needs = actions_for(prefix, model.name, params, deployment.region,
                            deployment.account_id)
        statements = self.statements(deployment, logical_id)
        for need in needs:
            with self._lock:
                self.checked[logical_id].add(need.action)
            if not allowed(statements, need):
                with self._lock:
                    self.denied.setdefault((logical_id, need.action, need.resource),
                                           _current_test())
                return _access_denied(logical_id, need)
        return None


def _called_by_moto() -> bool:
    """True for calls moto makes itself (its Step Functions interpreter), not a handler."""
    frame = sys._getframe(2)
    while frame is not None:
        filename = frame.f_code.co_filename
        if frame.f_code.co_name == "_run" and filename.endswith("lambda_bridge.py"):
            return False
        if _MOTO_DIR in filename:
            return True
        frame = frame.f_back
    return False


def _current_test() -> str:
    return os.environ.get("PYTEST_CURRENT_TEST", "?").split(" ")[0]


class _Raw:
    status_code = 400
    headers: dict[str, str] = {}
    content = b""
    text = ""


def _access_denied(function_id: str, need: Need) -> tuple[Any, dict[str, Any]]:
    message = (f"User: {function_id}Role is not authorized to perform: {need.action} on "
               f"resource: {need.resource} because no identity-based policy allows it")
    return _Raw(), {"Error": {"Code": "AccessDeniedException", "Message": message},
                    "ResponseMetadata": {"HTTPStatusCode": 400}}


# ---------------------------------------------------------------- installation

_recorder: Recorder | None = None


def _carry_function_into_threads() -> None:
    """A handler's own threads (the fan-out engine's workers) act as its function."""
    from mailfleet_local import lambda_bridge

    start = threading.Thread.start
    submit = concurrent.futures.ThreadPoolExecutor.submit

    def started(self: threading.Thread) -> None:
        name = lambda_bridge.current_function.get()
        if name is not None:
            run = self.run

            def run_as_function() -> None:
                lambda_bridge.current_function.set(name)
                run()

            self.run = run_as_function  # type: ignore[method-assign]
        start(self)

    def submitted(self: Any, fn: Any, /, *args: Any, **kwargs: Any) -> Any:
        return submit(self, contextvars.copy_context().run, fn, *args, **kwargs)

    threading.Thread.start = started  # type: ignore[method-assign]
    concurrent.futures.ThreadPoolExecutor.submit = submitted  # type: ignore[method-assign]


def install() -> Recorder:
    global _recorder
    if _recorder is not None:
        return _recorder
    import botocore.session

    from mailfleet_local import stack

    recorder = Recorder(translated_template())
    create_client = botocore.session.Session.create_client
    deploy = stack.LocalAws.deploy

    def client_with_check(self: Any, *args: Any, **kwargs: Any) -> Any:
        client = create_client(self, *args, **kwargs)
        client.meta.events.register("before-parameter-build", recorder.keep_params,
                                    unique_id="mailfleet-iam-params")
        client.meta.events.register("before-call", recorder.before_call,
                                    unique_id="mailfleet-iam-check")
        return client

    def deploy_and_note(self: Any, *args: Any, **kwargs: Any) -> Any:
        deployment = deploy(self, *args, **kwargs)
        with recorder._lock:
            recorder.deployments.append(deployment)
        return deployment

    botocore.session.Session.create_client = client_with_check  # type: ignore[method-assign]
    stack.LocalAws.deploy = deploy_and_note  # type: ignore[method-assign]
    _carry_function_into_threads()
    _recorder = recorder
    return recorder


# ---------------------------------------------------------------- pytest hooks

def pytest_configure(config: pytest.Config) -> None:
    recorder = install()
    if recorder.translated is None and os.environ.get("MAILFLEET_REQUIRE_BUILD"):
        raise pytest.UsageError("IAM check: no SAM translation of template.yaml "
                                "(.venv-sam missing: run `make build`)")


def pytest_terminal_summary(terminalreporter: Any) -> None:
    recorder = _recorder
    if recorder is None:
        return
    say = terminalreporter.write_line
    if recorder.translated is None:
        say("IAM check: NOT RUN (no .venv-sam: `make build` makes it)")
        return
    if recorder.checked:
        counts = ", ".join(f"{f} {len(a)}" for f, a in sorted(recorder.checked.items()))
        say(f"IAM check: distinct actions checked per function: {counts}")
    for (function, action, resource), test in sorted(recorder.denied.items()):
        say(f"IAM DENIED: {function} may not {action} on {resource} (in {test})")


def pytest_sessionfinish(session: pytest.Session, exitstatus: int) -> None:
    if _recorder is not None and _recorder.denied and exitstatus == 0:
        session.exitstatus = pytest.ExitCode.TESTS_FAILED
