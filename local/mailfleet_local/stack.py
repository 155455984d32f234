"""The embedded AWS: a moto server on 127.0.0.1 and a deployer that reads template.yaml.

`LocalAws` starts moto in server mode inside this process (so the Lambda bridge can run
our handlers), with real Step Functions execution and no Docker. `LocalAws.deploy()`
creates what the template declares, in dependency order, under the names the template
gives: the template stays the one source of truth for names and wiring.

moto keeps its state per process, so only one LocalAws may run in a process at a time.
Note that `moto.mock_aws()` resets every backend when it starts and stops: a test using it
wipes a running LocalAws's resources (`LocalAws.is_deployed()` tells, redeploy if needed).
"""

from __future__ import annotations

import base64
import hashlib
import io
import json
import logging
import os
import re
import secrets
import string
import threading
import time
import zipfile
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from mailfleet_local import lambda_bridge, moto_speed, moto_transactions

# Not under `mailfleet`: Powertools' Logger(service=mailfleet) owns that one and would
# stamp these lines with whichever function's keys it holds.
log = logging.getLogger("mailfleet-local.stack")

ACCOUNT_ID = "123456789012"
DEFAULT_STACK_NAME = "mailfleet"
# moto accepts anything; fixed fakes keep a real credential out of every request.
_FAKE_CREDENTIALS = {
    "aws_access_key_id": "testing",
    "aws_secret_access_key": "testing",
    "aws_session_token": "testing",
}
_SERVERLESS_TRANSFORM = "AWS::Serverless-2016-10-31"


class DeployError(Exception):
    """The template asks for something the local stack cannot do faithfully."""


class _Unsupported(Exception):
    """A resource of a known type in a form the local stack cannot create: skipped."""


# ---------------------------------------------------------------- the deployment


@dataclass(frozen=True)
class Resource:
    logical_id: str
    type: str
    ref: str  # what !Ref gives (a name, an ARN for secrets and state machines, an id)
    name: str
    arn: str | None
    attributes: dict[str, Any] = field(default_factory=dict)  # what !GetAtt gives


@dataclass(frozen=True)
class FunctionInfo:
    logical_id: str
    name: str
    arn: str
    handler: str  # as in the template, e.g. "app.lambda_handler"
    code_dir: Path
    handler_file: Path
    environment: dict[str, str]
    timeout: int
    memory_size: int
    event_invoke_config: dict[str, Any] | None = None


@dataclass(frozen=True)
class AuthorizerInfo:
    name: str
    type: str  # TOKEN (what the front implements), REQUEST, COGNITO_USER_POOLS
    function_logical_id: str | None
    function_name: str | None
    identity_header: str
    validation_expression: str | None
    reauthorize_every: int  # seconds a decision is cached per token; 0 = never


@dataclass(frozen=True)
class GatewayResponse:
    status_code: int | None
    body: str | None
    headers: dict[str, str]


@dataclass(frozen=True)
class ApiInfo:
    logical_id: str
    api_id: str
    stage: str
    authorizers: dict[str, AuthorizerInfo]
    default_authorizer: str | None
    gateway_responses: dict[str, GatewayResponse]
    binary_media_types: tuple[str, ...]


@dataclass(frozen=True)
class Route:
    api_logical_id: str
    path: str  # the resource path, e.g. "/hosts/{id}" or "/{proxy+}"
    method: str  # upper case, or "ANY"
    function_logical_id: str
    function_name: str
    authorizer: AuthorizerInfo | None  # None: no auth on this route
    event_name: str


@dataclass(frozen=True)
class ScheduleInfo:
    """A time-triggered invocation declared in the template (moto stores, never fires)."""

    logical_id: str
    name: str
    source: str  # AWS::Scheduler::Schedule, AWS::Events::Rule, Schedule or ScheduleV2
    expression: str  # rate(...) / cron(...) / at(...)
    timezone: str | None
    enabled: bool
    target_arn: str
    target_kind: str  # "function", "state_machine" or "other"
    target_logical_id: str | None
    target_name: str | None
    input: str | None  # the Input JSON text the target gets, if the template sets one


@dataclass(frozen=True)
class EventRuleInfo:
    """An EventBridge pattern rule declared in the template (moto stores, never fires)."""

    logical_id: str
    name: str
    source: str  # AWS::Events::Rule, or the SAM event type (EventBridgeRule, CloudWatchEvent)
    pattern: dict[str, Any]
    enabled: bool
    target_arn: str
    target_kind: str  # "function", "state_machine" or "other"
    target_logical_id: str | None
    target_name: str | None
    input: str | None


@dataclass(frozen=True)
class SkippedResource:
    logical_id: str
    type: str
    reason: str


@dataclass
class Deployment:
    stack_name: str
    region: str
    account_id: str
    template_path: Path
    parameters: dict[str, Any]
    resources: dict[str, Resource]
    functions: dict[str, FunctionInfo]
    state_machines: dict[str, str]  # logical id -> ARN
    apis: dict[str, ApiInfo]
    routes: list[Route]
    schedules: list[ScheduleInfo]
    event_rules: list[EventRuleInfo]
    skipped: list[SkippedResource]
    outputs: dict[str, Any]
    environment: dict[str, str]  # what was applied to os.environ for the functions

    def api(self, logical_id: str | None = None) -> ApiInfo:
        if logical_id is not None:
            return self.apis[logical_id]
        if len(self.apis) != 1:
            raise DeployError(f"{len(self.apis)} APIs in the template: name the one to serve")
        return next(iter(self.apis.values()))


# ---------------------------------------------------------------- the server


_running: LocalAws | None = None
_running_lock = threading.Lock()


class LocalAws:
    """moto in server mode on 127.0.0.1, and the process environment pointed at it."""

    def __init__(self, region: str | None = None, port: int = 0, bridge: bool = True) -> None:
        self.region = (
            region or os.environ.get("AWS_REGION") or os.environ.get("AWS_DEFAULT_REGION")
        ) or "us-east-1"
        self.account_id = ACCOUNT_ID
        self._requested_port = port
        self._bridge = bridge
        self._server: Any = None
        self._saved_env: dict[str, str | None] = {}
        self.port: int | None = None
        self._clients: dict[tuple[str, str], Any] = {}
        self._clients_lock = threading.Lock()
        self._session: Any = None
        self._saved_config: dict[str, Any] = {}

    @property
    def endpoint_url(self) -> str:
        if self.port is None:
            raise RuntimeError("LocalAws is not started")
        return f"http://127.0.0.1:{self.port}"

    def __enter__(self) -> LocalAws:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def start(self) -> LocalAws:
        global _running
        with _running_lock:
            if _running is not None:
                raise RuntimeError("a LocalAws already runs in this process (moto state is global)")
            _running = self
        from moto.core.config import default_user_config
        from moto.server import ThreadedMotoServer

        # The request log names every moto call; our own front logs what matters.
        logging.getLogger("werkzeug").setLevel(logging.WARNING)
        self._saved_config = {k: default_user_config.get(k) for k in ("lambda", "stepfunctions")}
        default_user_config["lambda"] = {"use_docker": False}
        default_user_config["stepfunctions"] = {"execute_state_machine": True}
        # Always loopback: ThreadedMotoServer's own default is every interface.
        self._server = ThreadedMotoServer(
            ip_address="127.0.0.1", port=self._requested_port, verbose=False
        )
        # Transactions as DynamoDB runs them (every audited change is one): see the module.
        moto_transactions.install()
        # moto's per-request routing and its DynamoDB response writer: see the module.
        moto_speed.install()
        self._server.start()
        self.port = int(self._server.get_host_and_port()[1])
        # moto's ASL interpreter takes over a second to import: let it load meanwhile.
        threading.Thread(target=_warm_up_step_functions, name="sfn-warm-up", daemon=True).start()
        self._set_env(self._aws_env())
        if self._bridge:
            lambda_bridge.install()
        return self

    def _aws_env(self) -> dict[str, str | None]:
        env: dict[str, str | None] = {
            # Step Functions' interpreter calls Lambda at localhost:$MOTO_PORT.
            "MOTO_PORT": str(self.port),
            "AWS_ENDPOINT_URL": self.endpoint_url,
            **{key.upper(): value for key, value in _FAKE_CREDENTIALS.items()},
            "AWS_DEFAULT_REGION": self.region,
            "AWS_REGION": self.region,
            "AWS_EC2_METADATA_DISABLED": "true",
            # A profile or config file could point a client at real AWS.
            "AWS_PROFILE": None,
            "AWS_CONFIG_FILE": os.devnull,
            "AWS_SHARED_CREDENTIALS_FILE": os.devnull,
            "AWS_IGNORE_CONFIGURED_ENDPOINT_URLS": None,
        }
        # A proxy from the environment must not sit between the clients and moto.
        for key in ("NO_PROXY", "no_proxy"):
            hosts = [h for h in os.environ.get(key, "").split(",") if h]
            env[key] = ",".join([*hosts, "127.0.0.1", "localhost"])
        # A per-service endpoint variable would win over AWS_ENDPOINT_URL.
        for key in os.environ:
            if key.startswith("AWS_ENDPOINT_URL_"):
                env[key] = None
        return env

    def _set_env(self, values: Mapping[str, str | None]) -> None:
        for key, value in values.items():
            if key not in self._saved_env:
                self._saved_env[key] = os.environ.get(key)
            if value is None:
                os.environ.pop(key, None)
            else:
                os.environ[key] = value

    def stop(self, drain_timeout: float = 10.0) -> None:
        """Wait for async invocations, stop moto, put the environment back."""
        global _running
        if self._server is None:
            return
        if not lambda_bridge.drain(drain_timeout):
            log.warning("async Lambda invocations still running at stop")
        self._server.stop()
        self._server = None
        self._clients.clear()
        self._session = None
        if self._bridge:
            lambda_bridge.uninstall()
            lambda_bridge.unregister_all()
        from moto.core.config import default_user_config

        default_user_config.update(self._saved_config)  # type: ignore[typeddict-item]
        for key, value in self._saved_env.items():
            if value is None:
                os.environ.pop(key, None)
            else:
                os.environ[key] = value
        self._saved_env.clear()
        with _running_lock:
            _running = None

    def client(self, service: str, **kwargs: Any) -> Any:
        """A boto3 client pointed at this moto, whatever the environment says.

        Clients without extra arguments are cached (boto3 clients are thread-safe, and
        making one costs tens of milliseconds).
        """
        import boto3

        key = (service, self.endpoint_url)
        with self._clients_lock:
            if not kwargs and key in self._clients:
                return self._clients[key]
            # A session of our own (moto's mock_aws patches boto3's default one), shared so
            # that botocore loads each model once; sessions are not thread-safe: the lock.
            if self._session is None:
                self._session = boto3.session.Session(region_name=self.region, **_FAKE_CREDENTIALS)
            client = self._session.client(service, endpoint_url=self.endpoint_url, **kwargs)
            if not kwargs:
                self._clients[key] = client
        return client

    def reset(self) -> None:
        """Wipe every resource in moto (the server keeps running)."""
        import requests

        with requests.Session() as session:
            session.trust_env = False  # no proxy between us and 127.0.0.1
            session.post(f"{self.endpoint_url}/moto-api/reset", timeout=10).raise_for_status()

    def is_deployed(self, deployment: Deployment) -> bool:
        """False once moto lost the deployment (a mock_aws() in a test resets everything)."""
        from moto.dynamodb.models import dynamodb_backends

        try:
            backend = lambda_bridge.lambda_backend(self.region, self.account_id)
            for info in deployment.functions.values():
                backend.get_function(info.name)
            tables = dynamodb_backends[self.account_id][self.region].tables
        except Exception:
            return False
        return all(r.name in tables for r in deployment.resources.values() if r.type == _TABLE)

    def deploy(
        self,
        template_path: str | Path,
        parameter_overrides: Mapping[str, Any] | None = None,
        secret_values: Mapping[str, str | Mapping[str, Any]] | None = None,
        stack_name: str = DEFAULT_STACK_NAME,
        apply_environment: bool = True,
    ) -> Deployment:
        """Create the template's resources in moto; see the module docstring."""
        if self.port is None:
            raise RuntimeError("start LocalAws before deploying")
        started = time.monotonic()
        deployer = _Deployer(
            self,
            Path(template_path),
            dict(parameter_overrides or {}),
            dict(secret_values or {}),
            stack_name,
        )
        deployment = deployer.run()
        if apply_environment:
            self._set_env(deployment.environment)
        log.info(
            "deployed %s: %d resources, %d skipped, in %.2f s",
            stack_name,
            len(deployment.resources),
            len(deployment.skipped),
            time.monotonic() - started,
        )
        return deployment


def _warm_up_step_functions() -> None:
    import importlib

    try:
        importlib.import_module("moto.stepfunctions.parser.models")
    except Exception:  # the first CreateStateMachine would import it anyway
        log.debug("warming up Step Functions failed", exc_info=True)


# ---------------------------------------------------------------- intrinsics

_NO_VALUE = object()  # !Ref AWS::NoValue: drop the key or list item
_INTRINSICS = {
    "Ref",
    "Condition",
    "Fn::GetAtt",
    "Fn::Sub",
    "Fn::Join",
    "Fn::If",
    "Fn::Equals",
    "Fn::Not",
    "Fn::And",
    "Fn::Or",
    "Fn::Select",
    "Fn::Split",
    "Fn::FindInMap",
    "Fn::Base64",
    "Fn::GetAZs",
    "Fn::ImportValue",
}
_SUB_VAR = re.compile(r"\$\{([^}]*)\}")


def _text(value: Any) -> str:
    """A value as CloudFormation writes it into a string (booleans in lower case)."""
    if isinstance(value, bool):
        return "true" if value else "false"
    return str(value)


def _plain(value: Any) -> Any:
    """cfn-lint's node classes, as plain dicts, lists and strings."""
    if isinstance(value, dict):
        return {str(k): _plain(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_plain(v) for v in value]
    if isinstance(value, str):
        return str(value)
    return value


def _is_intrinsic(value: Any) -> bool:
    return isinstance(value, dict) and len(value) == 1 and next(iter(value)) in _INTRINSICS


def _getatt_parts(arg: Any) -> tuple[str, str]:
    if isinstance(arg, str):
        logical, _, attr = arg.partition(".")
        return logical, attr
    return str(arg[0]), str(arg[1])


def references(value: Any) -> set[str]:
    """Logical ids (and parameter names) that a value refers to."""
    found: set[str] = set()
    if isinstance(value, list):
        for item in value:
            found |= references(item)
    elif isinstance(value, dict):
        if _is_intrinsic(value):
            ((key, arg),) = value.items()
            if key == "Ref" and isinstance(arg, str):
                found.add(arg)
            elif key == "Fn::GetAtt":
                found.add(_getatt_parts(arg)[0])
            elif key == "Fn::Sub":
                text, variables = (arg, {}) if isinstance(arg, str) else (arg[0], arg[1])
                for var in _SUB_VAR.findall(str(text)):
                    if not var.startswith("!") and var.split(".")[0] not in variables:
                        found.add(var.split(".")[0])
                found |= references(variables)
            elif key == "Fn::If":
                found |= references(arg[1:])
            else:
                found |= references(arg)
        else:
            for item in value.values():
                found |= references(item)
    return {f for f in found if not f.startswith("AWS::")}


class _Resolver:
    def __init__(
        self,
        pseudo: dict[str, Any],
        parameters: dict[str, Any],
        mappings: dict[str, Any],
        region: str,
    ) -> None:
        self.pseudo = pseudo
        self.parameters = parameters
        self.mappings = mappings
        self.region = region
        self.conditions: dict[str, bool] = {}
        self.physical: dict[str, Resource] = {}
        self.aliases: dict[str, str] = {}  # SAM's implicit ids, e.g. ApiFunctionRole -> role

    def resolve(self, value: Any) -> Any:
        if isinstance(value, list):
            items = [self.resolve(v) for v in value]
            return [v for v in items if v is not _NO_VALUE]
        if isinstance(value, dict):
            if _is_intrinsic(value):
                ((key, arg),) = value.items()
                return self._intrinsic(key, arg)
            resolved = {k: self.resolve(v) for k, v in value.items()}
            return {k: v for k, v in resolved.items() if v is not _NO_VALUE}
        return _plain(value)

    def _resource(self, logical_id: str) -> Resource:
        logical_id = self.aliases.get(logical_id, logical_id)
        if logical_id not in self.physical:
            raise DeployError(f"reference to {logical_id}, which is not (yet) created")
        return self.physical[logical_id]

    def ref(self, name: str) -> Any:
        if name == "AWS::NoValue":
            return _NO_VALUE
        if name in self.pseudo:
            return self.pseudo[name]
        if name in self.parameters:
            return self.parameters[name]
        return self._resource(name).ref

    def getatt(self, logical_id: str, attr: str) -> Any:
        resource = self._resource(logical_id)
        if attr not in resource.attributes:
            raise DeployError(f"!GetAtt {logical_id}.{attr}: unknown attribute for {resource.type}")
        return resource.attributes[attr]

    def sub(self, text: str, variables: dict[str, Any]) -> str:
        def replace(match: re.Match[str]) -> str:
            var = match.group(1)
            if var.startswith("!"):
                return "${" + var[1:] + "}"
            if var in variables:
                return _text(variables[var])
            if "." in var and not var.startswith("AWS::"):
                logical, attr = var.split(".", 1)
                return _text(self.getatt(logical, attr))
            return _text(self.ref(var))

        return _SUB_VAR.sub(replace, text)

    def condition(self, name: str) -> bool:
        if name not in self.conditions:
            raise DeployError(f"unknown condition {name}")
        return self.conditions[name]

    def _intrinsic(self, key: str, arg: Any) -> Any:
        if key == "Ref":
            return self.ref(str(arg))
        if key == "Condition":
            return self.condition(str(arg))
        if key == "Fn::GetAtt":
            logical, attr = _getatt_parts(arg)
            return self.getatt(logical, attr)
        if key == "Fn::Sub":
            if isinstance(arg, str):
                return self.sub(arg, {})
            return self.sub(str(self.resolve(arg[0])), self.resolve(arg[1]))
        if key == "Fn::Join":
            delimiter, items = arg
            return str(delimiter).join(_text(v) for v in self.resolve(items))
        if key == "Fn::Select":
            index, items = self.resolve(arg)
            return items[int(index)]
        if key == "Fn::Split":
            delimiter, text = self.resolve(arg)
            return str(text).split(delimiter)
        if key == "Fn::If":
            name, if_true, if_false = arg
            return self.resolve(if_true if self.condition(str(name)) else if_false)
        if key == "Fn::Equals":
            left, right = self.resolve(arg)
            return str(left) == str(right)
        if key == "Fn::Not":
            return not self.resolve(arg)[0]
        if key == "Fn::And":
            return all(self.resolve(arg))
        if key == "Fn::Or":
            return any(self.resolve(arg))
        if key == "Fn::FindInMap":
            name, top, second = self.resolve(arg)
            return self.mappings[name][top][second]
        if key == "Fn::Base64":
            return base64.b64encode(str(self.resolve(arg)).encode()).decode()
        if key == "Fn::GetAZs":
            return [f"{self.region}{z}" for z in "abc"]
        raise DeployError(f"{key} is not supported locally")


# ---------------------------------------------------------------- helpers

_TABLE = "AWS::DynamoDB::Table"
# Variables one function sets for itself that would hold for every function here, where
# they share one process: left out of the shared environment (listed with the reason).
PER_FUNCTION_ONLY = {
    "AWS_CALL_TIMEOUT_SECONDS": "short AWS call timeouts of the functions behind API "
    "Gateway; here every function would get them, against a busy embedded AWS",
}
# Types deliberately left out locally, each with the reason (listed in Deployment.skipped).
NOT_EMULATED = {
    "AWS::S3::BucketPolicy": "TLS-only bucket policy: the embedded AWS is plain HTTP on "
    "loopback",
    "AWS::Logs::LogGroup": "log retention: the functions log to this process's output",
    "AWS::SQS::QueuePolicy": "who may send to the queue: nothing is enforced locally",
    "AWS::IAM::ManagedPolicy": "IAM: every function runs under one local role here (the "
    "tests hold each function's calls to its template role instead)",
}
_SHARED_ROLE = "__shared_role__"  # not in the template: the one role functions run as
_FUNCTION = "AWS::Serverless::Function"
_STATE_MACHINES = ("AWS::Serverless::StateMachine", "AWS::StepFunctions::StateMachine")
_TRIGGER_EVENTS = ("Schedule", "ScheduleV2", "EventBridgeRule", "CloudWatchEvent")
_PUNCTUATION = "!\"#$%&'()*+,-./:;<=>?@[\\]^_`{|}~"


def _suffix(stack: str, logical_id: str, length: int = 12) -> str:
    # CloudFormation adds a random suffix; a stable one keeps local names repeatable.
    digest = hashlib.sha256(f"{stack}/{logical_id}".encode()).digest()
    return base64.b32encode(digest).decode()[:length]


def _dummy_zip() -> bytes:
    # moto stores the code; the bridge runs the real files from CodeUri instead.
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w") as zf:
        zf.writestr("LOCAL.txt", "mailfleet local stack: code runs from CodeUri in-process\n")
    return buf.getvalue()


def _tags(tags: Any) -> dict[str, str]:
    if isinstance(tags, list):
        return {str(t["Key"]): str(t["Value"]) for t in tags}
    return {str(k): str(v) for k, v in (tags or {}).items()}


def _merge_globals(global_props: Mapping[str, Any], own: Mapping[str, Any]) -> dict[str, Any]:
    """SAM's Globals rule: maps merge, lists add up (globals first), scalars: own wins."""
    merged = dict(global_props)
    for key, value in own.items():
        base = merged.get(key)
        if isinstance(base, dict) and isinstance(value, dict) and not _is_intrinsic(value):
            merged[key] = _merge_globals(base, value)
        elif isinstance(base, list) and isinstance(value, list):
            merged[key] = base + value
        else:
            merged[key] = value
    return merged


def generate_secret_string(spec: Mapping[str, Any]) -> str:
    """A value as Secrets Manager's GenerateSecretString would make it."""
    exclude = set(str(spec.get("ExcludeCharacters", "")))
    groups = []
    if not spec.get("ExcludeLowercase"):
        groups.append(string.ascii_lowercase)
    if not spec.get("ExcludeUppercase"):
        groups.append(string.ascii_uppercase)
    if not spec.get("ExcludeNumbers"):
        groups.append(string.digits)
    if not spec.get("ExcludePunctuation"):
        groups.append(_PUNCTUATION)
    if spec.get("IncludeSpace"):
        groups.append(" ")
    groups = ["".join(c for c in g if c not in exclude) for g in groups]
    groups = [g for g in groups if g]
    alphabet = "".join(groups)
    length = int(spec.get("PasswordLength", 32))
    if not alphabet:
        raise DeployError("GenerateSecretString excludes every character")
    while True:
        value = "".join(secrets.choice(alphabet) for _ in range(length))
        if not spec.get("RequireEachIncludedType", True) or length < len(groups):
            break
        if all(any(c in g for c in value) for g in groups):
            break
    key = spec.get("GenerateStringKey")
    if key:
        document = json.loads(spec.get("SecretStringTemplate") or "{}")
        document[key] = value
        return json.dumps(document)
    return value


def _lifecycle_rule(rule: Mapping[str, Any]) -> dict[str, Any]:
    """A CloudFormation lifecycle rule in S3 API shape."""
    out: dict[str, Any] = {"Status": rule.get("Status", "Enabled")}
    if "Id" in rule:
        out["ID"] = rule["Id"]
    prefix = rule.get("Prefix")
    tag_filters = rule.get("TagFilters")
    if tag_filters:
        tags = [{"Key": t["Key"], "Value": t["Value"]} for t in tag_filters]
        if prefix is None and len(tags) == 1:
            out["Filter"] = {"Tag": tags[0]}
        else:
            out["Filter"] = {"And": {"Prefix": prefix or "", "Tags": tags}}
    else:
        out["Filter"] = {"Prefix": prefix or ""}
    expiration: dict[str, Any] = {}
    if "ExpirationInDays" in rule:
        expiration["Days"] = int(rule["ExpirationInDays"])
    if "ExpirationDate" in rule:
        expiration["Date"] = rule["ExpirationDate"]
    if "ExpiredObjectDeleteMarker" in rule:
        expiration["ExpiredObjectDeleteMarker"] = bool(rule["ExpiredObjectDeleteMarker"])
    if expiration:
        out["Expiration"] = expiration
    if "NoncurrentVersionExpirationInDays" in rule:
        days = int(rule["NoncurrentVersionExpirationInDays"])
        out["NoncurrentVersionExpiration"] = {"NoncurrentDays": days}
    if "NoncurrentVersionExpiration" in rule:
        out["NoncurrentVersionExpiration"] = {
            "NoncurrentDays": int(rule["NoncurrentVersionExpiration"]["NoncurrentDays"])
        }
    if "AbortIncompleteMultipartUpload" in rule:
        days = int(rule["AbortIncompleteMultipartUpload"]["DaysAfterInitiation"])
        out["AbortIncompleteMultipartUpload"] = {"DaysAfterInitiation": days}
    transitions = list(rule.get("Transitions", []))
    if "Transition" in rule:
        transitions.append(rule["Transition"])
    if transitions:
        out["Transitions"] = [
            {k: (int(v) if k == "TransitionInDays" else v) for k, v in t.items()}
            for t in transitions
        ]
        for t in out["Transitions"]:
            if "TransitionInDays" in t:
                t["Days"] = t.pop("TransitionInDays")
            if "TransitionDate" in t:
                t["Date"] = t.pop("TransitionDate")
    return out


# ---------------------------------------------------------------- the deployer


class _Deployer:
    def __init__(
        self,
        aws: LocalAws,
        template_path: Path,
        overrides: dict[str, Any],
        secret_values: dict[str, Any],
        stack_name: str,
    ) -> None:
        from cfnlint.decode import cfn_yaml

        self.aws = aws
        self.template_path = template_path.resolve()
        self.base_dir = self.template_path.parent
        self.template: dict[str, Any] = _plain(cfn_yaml.load(str(self.template_path)))
        self.secret_values = secret_values
        self.stack = stack_name
        self.region = aws.region
        self.account = aws.account_id
        self.globals = self.template.get("Globals", {})
        self.resources: dict[str, Any] = self.template.get("Resources", {})
        self.parameters = self._parameters(overrides)
        self.r = _Resolver(
            {
                "AWS::Region": self.region,
                "AWS::AccountId": self.account,
                "AWS::StackName": stack_name,
                "AWS::StackId": (
                    f"arn:aws:cloudformation:{self.region}:{self.account}:stack/"
                    f"{stack_name}/{_suffix(stack_name, 'stack', 8).lower()}"
                ),
                "AWS::Partition": "aws",
                "AWS::URLSuffix": "amazonaws.com",
                "AWS::NotificationARNs": [],
            },
            self.parameters,
            self.template.get("Mappings", {}),
            self.region,
        )
        self.skipped: list[SkippedResource] = []
        self.functions: dict[str, FunctionInfo] = {}
        self.state_machines: dict[str, str] = {}
        self.apis: dict[str, ApiInfo] = {}
        self.schedules: list[ScheduleInfo] = []
        self.event_rules: list[EventRuleInfo] = []
        self.role_arn = ""

    def client(self, service: str) -> Any:
        return self.aws.client(service)

    def _parameters(self, overrides: dict[str, Any]) -> dict[str, Any]:
        declared = self.template.get("Parameters", {})
        unknown = set(overrides) - set(declared)
        if unknown:
            raise DeployError(f"parameter overrides not in the template: {sorted(unknown)}")
        values: dict[str, Any] = {}
        for name, spec in declared.items():
            if name in overrides:
                value = overrides[name]
            elif "Default" in spec:
                value = spec["Default"]
            else:
                raise DeployError(f"parameter {name} has no Default and no override")
            value = str(value) if not isinstance(value, list) else value
            allowed = spec.get("AllowedValues")
            if allowed is not None and value not in [str(a) for a in allowed]:
                raise DeployError(f"parameter {name}={value!r} is not one of {allowed}")
            pattern = spec.get("AllowedPattern")
            if pattern is not None and not re.fullmatch(pattern, str(value)):
                raise DeployError(f"parameter {name}={value!r} does not match {pattern}")
            if spec.get("Type") == "CommaDelimitedList" and isinstance(value, str):
                value = [v.strip() for v in value.split(",")]
            values[name] = value
        return values

    # -------------------------------------------------------------- driving

    def run(self) -> Deployment:
        transform = self.template.get("Transform")
        transforms = transform if isinstance(transform, list) else [transform]
        if any(t and t != _SERVERLESS_TRANSFORM for t in transforms):
            raise DeployError(f"unsupported Transform {transform}")
        for name, expr in self.template.get("Conditions", {}).items():
            self.r.conditions[name] = bool(self.r.resolve(expr))
        self._create_role()
        for logical_id in self._order():
            resource = self.resources[logical_id]
            condition = resource.get("Condition")
            if condition and not self.r.condition(condition):
                self.skipped.append(
                    SkippedResource(logical_id, resource["Type"], f"condition {condition} false")
                )
                continue
            self._create(logical_id, resource)
        routes = self._routes()
        self._event_triggers()
        environment = self._environment()
        outputs = {}
        for name, output in self.template.get("Outputs", {}).items():
            condition = output.get("Condition")
            if condition and not self.r.condition(condition):
                continue
            outputs[name] = self.r.resolve(output.get("Value"))
        return Deployment(
            stack_name=self.stack,
            region=self.region,
            account_id=self.account,
            template_path=self.template_path,
            parameters=dict(self.parameters),
            resources={k: v for k, v in self.r.physical.items() if k != _SHARED_ROLE},
            functions=self.functions,
            state_machines=self.state_machines,
            apis=self.apis,
            routes=routes,
            schedules=self.schedules,
            event_rules=self.event_rules,
            skipped=self.skipped,
            outputs=outputs,
            environment=environment,
        )

    def _order(self) -> list[str]:
        """Resources in an order that creates what each one refers to first."""
        deps: dict[str, set[str]] = {}
        function_globals = self.globals.get("Function", {})
        api_globals = self.globals.get("Api", {})
        for logical_id, resource in self.resources.items():
            props = dict(resource.get("Properties", {}))
            if resource["Type"] == _FUNCTION:
                # Events (Api, schedules) are wired after everything exists: an Api event
                # and the Api's authorizer would otherwise make a cycle.
                props.pop("Events", None)
                props = _merge_globals(function_globals, props)
            elif resource["Type"] == "AWS::Serverless::Api":
                props = _merge_globals(api_globals, props)
            elif resource["Type"] in _STATE_MACHINES:
                props.pop("Events", None)
            depends_on = resource.get("DependsOn", [])
            depends = {depends_on} if isinstance(depends_on, str) else set(depends_on)
            refs = references(props) | depends
            deps[logical_id] = {self._canonical(r) for r in refs} & set(self.resources)
        order: list[str] = []
        state: dict[str, int] = {}  # 1 visiting, 2 done

        def visit(node: str, path: list[str]) -> None:
            if state.get(node) == 2:
                return
            if state.get(node) == 1:
                raise DeployError("circular references: " + " -> ".join([*path, node]))
            state[node] = 1
            for dep in sorted(deps[node]):
                visit(dep, [*path, node])
            state[node] = 2
            order.append(node)

        for logical_id in self.resources:
            visit(logical_id, [])
        return order

    def _canonical(self, logical_id: str) -> str:
        # SAM's implicit `<Function>Role`: we create one shared role up front instead.
        if logical_id.endswith("Role") and logical_id not in self.resources:
            base = logical_id[: -len("Role")]
            if self.resources.get(base, {}).get("Type") in (_FUNCTION, *_STATE_MACHINES):
                return _SHARED_ROLE
        return logical_id

    def _create(self, logical_id: str, resource: dict[str, Any]) -> None:
        creators: dict[str, Callable[[str, dict[str, Any]], Resource]] = {
            _TABLE: self._table,
            "AWS::SecretsManager::Secret": self._secret,
            "AWS::S3::Bucket": self._bucket,
            "AWS::SSM::Parameter": self._ssm_parameter,
            "AWS::IAM::Role": self._iam_role,
            "AWS::Serverless::LayerVersion": self._layer,
            "AWS::Lambda::LayerVersion": self._layer,
            _FUNCTION: self._function,
            "AWS::Serverless::StateMachine": self._state_machine,
            "AWS::StepFunctions::StateMachine": self._state_machine,
            "AWS::Serverless::Api": self._api,
            "AWS::Scheduler::Schedule": self._scheduler_schedule,
            "AWS::Scheduler::ScheduleGroup": self._schedule_group,
            "AWS::Events::Rule": self._events_rule,
            "AWS::CloudWatch::Alarm": self._alarm,
            "AWS::SQS::Queue": self._queue,
            "AWS::KMS::Key": self._kms_key,
        }
        rtype = resource["Type"]
        creator = creators.get(rtype)
        if creator is None:
            reason = NOT_EMULATED.get(rtype, "resource type not supported by the local stack")
            self._skip(logical_id, rtype, reason)
            return
        raw = resource.get("Properties", {})
        try:
            self.r.physical[logical_id] = creator(logical_id, raw)
        except _Unsupported as exc:
            self._skip(logical_id, rtype, str(exc))

    def _skip(self, logical_id: str, rtype: str, reason: str) -> None:
        # A stand-in, so that what refers to it still resolves; listed, never silent.
        self.skipped.append(SkippedResource(logical_id, rtype, reason))
        name = f"{self.stack}-{logical_id}-unsupported"
        arn = f"arn:aws:local:{self.region}:{self.account}:unsupported/{logical_id}"
        self.r.physical[logical_id] = Resource(
            logical_id, rtype, name, name, arn, {"Arn": arn, "Name": name}
        )
        log.warning("skipped %s (%s): %s", logical_id, rtype, reason)

    def _name(self, logical_id: str, max_len: int = 255) -> str:
        name = f"{self.stack}-{logical_id}-{_suffix(self.stack, logical_id)}"
        return name[-max_len:]

    # -------------------------------------------------------------- resource types

    def _create_role(self) -> None:
        name = f"{self.stack}-local-execution-role"
        trust = {
            "Version": "2012-10-17",
            "Statement": [
                {
                    "Effect": "Allow",
                    "Principal": {
                        "Service": [
                            "lambda.amazonaws.com",
                            "states.amazonaws.com",
                            "scheduler.amazonaws.com",
                            "events.amazonaws.com",
                        ]
                    },
                    "Action": "sts:AssumeRole",
                }
            ],
        }
        iam = self.client("iam")
        try:
            role = iam.create_role(RoleName=name, AssumeRolePolicyDocument=json.dumps(trust))
        except iam.exceptions.EntityAlreadyExistsException:
            role = iam.get_role(RoleName=name)
        self.role_arn = role["Role"]["Arn"]
        self.r.physical[_SHARED_ROLE] = Resource(
            _SHARED_ROLE,
            "AWS::IAM::Role",
            name,
            name,
            self.role_arn,
            {"Arn": self.role_arn, "RoleId": role["Role"]["RoleId"]},
        )
        for logical_id, resource in self.resources.items():
            if resource["Type"] in (_FUNCTION, *_STATE_MACHINES):
                self.r.aliases[f"{logical_id}Role"] = _SHARED_ROLE

    def _table(self, logical_id: str, raw: dict[str, Any]) -> Resource:
        props = self.r.resolve(raw)
        name = props.get("TableName") or self._name(logical_id)
        kwargs: dict[str, Any] = {
            "TableName": name,
            "AttributeDefinitions": props["AttributeDefinitions"],
            "KeySchema": props["KeySchema"],
            # Capacity means nothing locally.
            "BillingMode": "PAY_PER_REQUEST",
        }
        gsis = [
            {k: g[k] for k in ("IndexName", "KeySchema", "Projection")}
            for g in props.get("GlobalSecondaryIndexes", [])
        ]
        if gsis:
            kwargs["GlobalSecondaryIndexes"] = gsis
        lsis = [
            {k: g[k] for k in ("IndexName", "KeySchema", "Projection")}
            for g in props.get("LocalSecondaryIndexes", [])
        ]
        if lsis:
            kwargs["LocalSecondaryIndexes"] = lsis
        stream = props.get("StreamSpecification")
        if stream:
            kwargs["StreamSpecification"] = {
                "StreamEnabled": True,
                "StreamViewType": stream["StreamViewType"],
            }
        if props.get("Tags"):
            kwargs["Tags"] = [{"Key": k, "Value": v} for k, v in _tags(props["Tags"]).items()]
        ddb = self.client("dynamodb")
        table = ddb.create_table(**kwargs)["TableDescription"]
        ttl = props.get("TimeToLiveSpecification")
        if ttl and str(ttl.get("Enabled", "")).lower() == "true":
            ddb.update_time_to_live(
                TableName=name,
                TimeToLiveSpecification={"AttributeName": ttl["AttributeName"], "Enabled": True},
            )
        pitr = props.get("PointInTimeRecoverySpecification", {})
        if str(pitr.get("PointInTimeRecoveryEnabled", "")).lower() == "true":
            ddb.update_continuous_backups(
                TableName=name,
                PointInTimeRecoverySpecification={"PointInTimeRecoveryEnabled": True},
            )
        attrs = {"Arn": table["TableArn"]}
        if "LatestStreamArn" in table:
            attrs["StreamArn"] = table["LatestStreamArn"]
        return Resource(logical_id, _TABLE, name, name, table["TableArn"], attrs)

    def _secret(self, logical_id: str, raw: dict[str, Any]) -> Resource:
        props = self.r.resolve(raw)
        name = props.get("Name") or f"{logical_id}-{_suffix(self.stack, logical_id)}"
        if logical_id in self.secret_values:
            value = self.secret_values[logical_id]
            secret = value if isinstance(value, str) else json.dumps(value)
        elif "SecretString" in props:
            secret = str(props["SecretString"])
        else:
            secret = generate_secret_string(props.get("GenerateSecretString", {}))
        kwargs: dict[str, Any] = {"Name": name, "SecretString": secret}
        if props.get("Description"):
            kwargs["Description"] = props["Description"]
        if props.get("Tags"):
            kwargs["Tags"] = [{"Key": k, "Value": v} for k, v in _tags(props["Tags"]).items()]
        arn = self.client("secretsmanager").create_secret(**kwargs)["ARN"]
        return Resource(logical_id, "AWS::SecretsManager::Secret", arn, name, arn, {"Id": arn})

    def _bucket(self, logical_id: str, raw: dict[str, Any]) -> Resource:
        props = self.r.resolve(raw)
        name = props.get("BucketName") or self._name(logical_id, 63).lower().lstrip("-")
        s3 = self.client("s3")
        kwargs: dict[str, Any] = {"Bucket": name}
        if self.region != "us-east-1":
            kwargs["CreateBucketConfiguration"] = {"LocationConstraint": self.region}
        s3.create_bucket(**kwargs)
        versioning = props.get("VersioningConfiguration")
        if versioning:
            s3.put_bucket_versioning(
                Bucket=name, VersioningConfiguration={"Status": versioning["Status"]}
            )
        rules = props.get("LifecycleConfiguration", {}).get("Rules")
        if rules:
            s3.put_bucket_lifecycle_configuration(
                Bucket=name,
                LifecycleConfiguration={"Rules": [_lifecycle_rule(r) for r in rules]},
            )
        if props.get("Tags"):
            tag_set = [{"Key": k, "Value": v} for k, v in _tags(props["Tags"]).items()]
            s3.put_bucket_tagging(Bucket=name, Tagging={"TagSet": tag_set})
        arn = f"arn:aws:s3:::{name}"
        attrs = {
            "Arn": arn,
            "DomainName": f"{name}.s3.amazonaws.com",
            "RegionalDomainName": f"{name}.s3.{self.region}.amazonaws.com",
            "WebsiteURL": f"http://{name}.s3-website-{self.region}.amazonaws.com",
        }
        return Resource(logical_id, "AWS::S3::Bucket", name, name, arn, attrs)

    def _queue(self, logical_id: str, raw: dict[str, Any]) -> Resource:
        props = self.r.resolve(raw)
        name = props.get("QueueName") or self._name(logical_id, 80)
        attributes = {k: str(props[k]) for k in ("MessageRetentionPeriod",
                                                 "VisibilityTimeout") if k in props}
        sqs = self.client("sqs")
        url = sqs.create_queue(QueueName=name, Attributes=attributes)["QueueUrl"]
        arn = sqs.get_queue_attributes(QueueUrl=url, AttributeNames=["QueueArn"])[
            "Attributes"]["QueueArn"]
        return Resource(logical_id, "AWS::SQS::Queue", url, name, arn,
                        {"Arn": arn, "QueueName": name, "QueueUrl": url})

    def _kms_key(self, logical_id: str, raw: dict[str, Any]) -> Resource:
        # moto signs and verifies with asymmetric keys (the audit sealer's ECC_NIST_P256).
        props = self.r.resolve(raw)
        kwargs: dict[str, Any] = {
            "KeySpec": props.get("KeySpec", "SYMMETRIC_DEFAULT"),
            "KeyUsage": props.get("KeyUsage", "ENCRYPT_DECRYPT"),
        }
        if props.get("Description"):
            kwargs["Description"] = props["Description"]
        if props.get("KeyPolicy"):
            kwargs["Policy"] = json.dumps(props["KeyPolicy"])
        meta = self.client("kms").create_key(**kwargs)["KeyMetadata"]
        return Resource(logical_id, "AWS::KMS::Key", meta["KeyId"], meta["KeyId"], meta["Arn"],
                        {"Arn": meta["Arn"], "KeyId": meta["KeyId"]})

    def _ssm_parameter(self, logical_id: str, raw: dict[str, Any]) -> Resource:
        props = self.r.resolve(raw)
        name = props.get("Name") or f"CFN-{logical_id}-{_suffix(self.stack, logical_id)}"
        kwargs: dict[str, Any] = {
            "Name": name,
            "Type": props.get("Type", "String"),
            "Value": str(props["Value"]),
        }
        for key in ("Description", "AllowedPattern", "Tier", "DataType"):
            if key in props:
                kwargs[key] = props[key]
        if props.get("Tags"):
            kwargs["Tags"] = [{"Key": k, "Value": v} for k, v in _tags(props["Tags"]).items()]
        self.client("ssm").put_parameter(**kwargs)
        arn = f"arn:aws:ssm:{self.region}:{self.account}:parameter/{name.lstrip('/')}"
        attrs = {"Type": kwargs["Type"], "Value": kwargs["Value"]}
        return Resource(logical_id, "AWS::SSM::Parameter", name, name, arn, attrs)

    def _iam_role(self, logical_id: str, raw: dict[str, Any]) -> Resource:
        props = self.r.resolve(raw)
        name = props.get("RoleName") or self._name(logical_id, 64)
        kwargs: dict[str, Any] = {
            "RoleName": name,
            "AssumeRolePolicyDocument": json.dumps(props.get("AssumeRolePolicyDocument", {})),
            "Path": props.get("Path", "/"),
        }
        role = self.client("iam").create_role(**kwargs)["Role"]
        attrs = {"Arn": role["Arn"], "RoleId": role["RoleId"]}
        return Resource(logical_id, "AWS::IAM::Role", name, name, role["Arn"], attrs)

    def _layer(self, logical_id: str, raw: dict[str, Any]) -> Resource:
        # The layer's code is on sys.path already (editable install); moto gets a stub.
        props = self.r.resolve(raw)
        name = props.get("LayerName") or self._name(logical_id, 140)
        kwargs: dict[str, Any] = {"LayerName": name, "Content": {"ZipFile": _dummy_zip()}}
        if props.get("CompatibleRuntimes"):
            kwargs["CompatibleRuntimes"] = props["CompatibleRuntimes"]
        layer = self.client("lambda").publish_layer_version(**kwargs)
        arn = layer["LayerVersionArn"]
        return Resource(logical_id, "AWS::Serverless::LayerVersion", arn, name, arn, {})

    def _function(self, logical_id: str, raw: dict[str, Any]) -> Resource:
        own = {k: v for k, v in raw.items() if k != "Events"}
        props = self.r.resolve(_merge_globals(self.globals.get("Function", {}), own))
        name = props.get("FunctionName") or self._name(logical_id, 64)
        code_uri = props.get("CodeUri")
        handler = props.get("Handler")
        if not isinstance(code_uri, str) or not handler:
            raise _Unsupported("only a CodeUri directory with a Handler runs locally")
        code_dir = (self.base_dir / code_uri).resolve()
        module_path = handler.rpartition(".")[0]
        handler_file = code_dir / Path(*module_path.split(".")).with_suffix(".py")
        variables = props.get("Environment", {}).get("Variables", {})
        environment = {str(k): _env_value(v) for k, v in variables.items()}
        timeout = int(props.get("Timeout", 3))
        memory = int(props.get("MemorySize", 128))
        kwargs: dict[str, Any] = {
            "FunctionName": name,
            "Runtime": props.get("Runtime", "python3.12"),
            "Role": props.get("Role") or self.role_arn,
            "Handler": handler,
            "Code": {"ZipFile": _dummy_zip()},
            "Timeout": timeout,
            "MemorySize": memory,
            "Environment": {"Variables": environment},
            "Publish": False,
        }
        if props.get("Description"):
            kwargs["Description"] = props["Description"]
        if props.get("Architectures"):
            kwargs["Architectures"] = props["Architectures"]
        if props.get("Layers"):
            kwargs["Layers"] = props["Layers"]
        if props.get("Tracing"):
            kwargs["TracingConfig"] = {"Mode": props["Tracing"]}
        if props.get("Tags"):
            kwargs["Tags"] = _tags(props["Tags"])
        arn = self.client("lambda").create_function(**kwargs)["FunctionArn"]
        on_failure = (props.get("EventInvokeConfig") or {}).get("DestinationConfig", {}).get(
            "OnFailure")
        lambda_bridge.register_function(name, code_dir, on_failure)
        self.functions[logical_id] = FunctionInfo(
            logical_id=logical_id,
            name=name,
            arn=arn,
            handler=handler,
            code_dir=code_dir,
            handler_file=handler_file,
            environment=environment,
            timeout=timeout,
            memory_size=memory,
            event_invoke_config=props.get("EventInvokeConfig"),
        )
        return Resource(logical_id, _FUNCTION, name, name, arn, {"Arn": arn})

    def _state_machine(self, logical_id: str, raw: dict[str, Any]) -> Resource:
        own = {k: v for k, v in raw.items() if k != "Events"}
        props = self.r.resolve(own)
        name = (
            props.get("Name")
            or props.get("StateMachineName")
            or f"{logical_id}-{_suffix(self.stack, logical_id)}"
        )
        if "DefinitionUri" in props:
            uri = props["DefinitionUri"]
            if not isinstance(uri, str):
                raise _Unsupported("DefinitionUri must be a local file")
            path = self.base_dir / uri
            text = path.read_text()
            if path.suffix not in (".json",):
                import yaml

                text = json.dumps(yaml.safe_load(text))
        elif "Definition" in props:
            text = json.dumps(props["Definition"])
        elif "DefinitionString" in props:
            text = str(props["DefinitionString"])
        else:
            raise DeployError(f"{logical_id}: no Definition, DefinitionUri or DefinitionString")
        substitutions = props.get("DefinitionSubstitutions", {})
        for key, value in substitutions.items():
            text = text.replace("${" + key + "}", _text(value))
        left = sorted(set(_SUB_VAR.findall(text)))
        if left:
            raise DeployError(f"{logical_id}: no DefinitionSubstitutions for {left}")
        json.loads(text)  # a broken substitution shows here, not at execution time
        created = self.client("stepfunctions").create_state_machine(
            name=name,
            definition=text,
            roleArn=props.get("Role") or props.get("RoleArn") or self.role_arn,
            # moto's interpreter runs STANDARD only (EXPRESS is rejected).
            type="STANDARD",
        )
        arn = created["stateMachineArn"]
        self.state_machines[logical_id] = arn
        attrs = {"Arn": arn, "Name": name}
        return Resource(logical_id, "AWS::Serverless::StateMachine", arn, name, arn, attrs)

    def _api(self, logical_id: str, raw: dict[str, Any]) -> Resource:
        props = self.r.resolve(_merge_globals(self.globals.get("Api", {}), raw))
        return self._register_api(logical_id, props, props.get("StageName", "Prod"))

    def _register_api(self, logical_id: str, props: dict[str, Any], stage: str) -> Resource:
        api = self.client("apigateway").create_rest_api(name=props.get("Name") or logical_id)
        api_id = api["id"]
        auth = props.get("Auth", {})
        authorizers = {
            name: self._authorizer(name, spec) for name, spec in auth.get("Authorizers", {}).items()
        }
        default = auth.get("DefaultAuthorizer")
        if default and default not in authorizers and default != "AWS_IAM":
            raise DeployError(f"{logical_id}: DefaultAuthorizer {default} is not defined")
        responses = {}
        for rtype, spec in props.get("GatewayResponses", {}).items():
            templates = spec.get("ResponseTemplates", {})
            body = templates.get("application/json")
            if body is None and templates:
                body = next(iter(templates.values()))
            headers = {
                str(k): str(v).strip("'")
                for k, v in spec.get("ResponseParameters", {}).get("Headers", {}).items()
            }
            status = spec.get("StatusCode")
            responses[rtype] = GatewayResponse(int(status) if status else None, body, headers)
        self.apis[logical_id] = ApiInfo(
            logical_id=logical_id,
            api_id=api_id,
            stage=str(stage),
            authorizers=authorizers,
            default_authorizer=default,
            gateway_responses=responses,
            binary_media_types=tuple(
                str(t).replace("~1", "/") for t in props.get("BinaryMediaTypes", [])
            ),
        )
        attrs = {"RootResourceId": api.get("rootResourceId", "")}
        return Resource(logical_id, "AWS::Serverless::Api", api_id, api_id, None, attrs)

    def _authorizer(self, name: str, spec: dict[str, Any]) -> AuthorizerInfo:
        identity = spec.get("Identity", {})
        if "UserPoolArn" in spec:
            kind = "COGNITO_USER_POOLS"
        else:
            kind = str(spec.get("FunctionPayloadType", "TOKEN"))
        function = None
        if "FunctionArn" in spec:
            arn = spec["FunctionArn"]
            function = next((f for f in self.functions.values() if arn in (f.arn, f.name)), None)
            if function is None:
                raise DeployError(f"authorizer {name}: no function in the template has {arn}")
        return AuthorizerInfo(
            name=name,
            type=kind,
            function_logical_id=function.logical_id if function else None,
            function_name=function.name if function else None,
            identity_header=str(identity.get("Header", "Authorization")),
            validation_expression=identity.get("ValidationExpression"),
            # SAM's default cache is 300 s.
            reauthorize_every=int(identity.get("ReauthorizeEvery", 300)),
        )

    def _scheduler_schedule(
        self, logical_id: str, raw: dict[str, Any], source: str = "AWS::Scheduler::Schedule"
    ) -> Resource:
        props = self.r.resolve(raw)
        name = props.get("Name") or self._name(logical_id, 64)
        target = props["Target"]
        kwargs: dict[str, Any] = {
            "Name": name,
            "ScheduleExpression": props["ScheduleExpression"],
            "FlexibleTimeWindow": props.get("FlexibleTimeWindow", {"Mode": "OFF"}),
            "Target": {
                "Arn": target["Arn"],
                "RoleArn": target.get("RoleArn") or self.role_arn,
                **({"Input": target["Input"]} if "Input" in target else {}),
            },
            "State": props.get("State", "ENABLED"),
        }
        for key in ("GroupName", "ScheduleExpressionTimezone", "Description"):
            if key in props:
                kwargs[key] = props[key]
        arn = self.client("scheduler").create_schedule(**kwargs)["ScheduleArn"]
        self._add_schedule(
            logical_id,
            name,
            source,
            props["ScheduleExpression"],
            props.get("ScheduleExpressionTimezone"),
            kwargs["State"] == "ENABLED",
            target["Arn"],
            target.get("Input"),
        )
        return Resource(logical_id, "AWS::Scheduler::Schedule", name, name, arn, {"Arn": arn})

    def _schedule_group(self, logical_id: str, raw: dict[str, Any]) -> Resource:
        props = self.r.resolve(raw)
        name = props.get("Name") or self._name(logical_id, 64)
        arn = self.client("scheduler").create_schedule_group(Name=name)["ScheduleGroupArn"]
        return Resource(logical_id, "AWS::Scheduler::ScheduleGroup", name, name, arn,
                        {"Arn": arn})

    def _alarm(self, logical_id: str, raw: dict[str, Any]) -> Resource:
        # Stored only: moto evaluates no alarms, but the wiring (metric, dimensions) shows.
        props = self.r.resolve(raw)
        name = props.get("AlarmName") or self._name(logical_id, 255)
        keys = ("AlarmDescription", "ActionsEnabled", "OKActions", "AlarmActions",
                "InsufficientDataActions", "MetricName", "Namespace", "Statistic",
                "ExtendedStatistic", "Dimensions", "Period", "Unit", "EvaluationPeriods",
                "DatapointsToAlarm", "Threshold", "ComparisonOperator", "TreatMissingData",
                "Metrics")
        kwargs: dict[str, Any] = {k: props[k] for k in keys if k in props}
        for key in ("Period", "EvaluationPeriods", "DatapointsToAlarm"):
            if key in kwargs:
                kwargs[key] = int(kwargs[key])
        if "Threshold" in kwargs:
            kwargs["Threshold"] = float(kwargs["Threshold"])
        cloudwatch = self.client("cloudwatch")
        cloudwatch.put_metric_alarm(AlarmName=name, **kwargs)
        arn = cloudwatch.describe_alarms(AlarmNames=[name])["MetricAlarms"][0]["AlarmArn"]
        return Resource(logical_id, "AWS::CloudWatch::Alarm", name, name, arn, {"Arn": arn})

    def _events_rule(
        self, logical_id: str, raw: dict[str, Any], source: str = "AWS::Events::Rule"
    ) -> Resource:
        props = self.r.resolve(raw)
        name = props.get("Name") or self._name(logical_id, 64)
        state = props.get("State", "ENABLED")
        kwargs: dict[str, Any] = {"Name": name, "State": state}
        for key in ("ScheduleExpression", "Description", "EventBusName"):
            if key in props:
                kwargs[key] = props[key]
        if "EventPattern" in props:
            kwargs["EventPattern"] = json.dumps(props["EventPattern"])
        events = self.client("events")
        arn = events.put_rule(**kwargs)["RuleArn"]
        targets = props.get("Targets", [])
        if targets:
            events.put_targets(
                Rule=name,
                Targets=[
                    {k: t[k] for k in ("Id", "Arn", "Input", "RoleArn") if k in t} for t in targets
                ],
            )
        for target in targets:
            if "ScheduleExpression" in props:
                self._add_schedule(
                    logical_id,
                    name,
                    source,
                    props["ScheduleExpression"],
                    None,
                    state == "ENABLED",
                    target["Arn"],
                    target.get("Input"),
                )
            else:
                kind, target_id, target_name = self._target(target["Arn"])
                self.event_rules.append(
                    EventRuleInfo(
                        logical_id=logical_id,
                        name=name,
                        source=source,
                        pattern=props.get("EventPattern", {}),
                        enabled=state == "ENABLED",
                        target_arn=target["Arn"],
                        target_kind=kind,
                        target_logical_id=target_id,
                        target_name=target_name,
                        input=target.get("Input"),
                    )
                )
        return Resource(logical_id, "AWS::Events::Rule", name, name, arn, {"Arn": arn})

    def _target(self, arn: str) -> tuple[str, str | None, str | None]:
        """(kind, logical id, name) of what a schedule or rule invokes."""
        for info in self.functions.values():
            if arn in (info.arn, info.name):
                return "function", info.logical_id, info.name
        for sm_id, sm_arn in self.state_machines.items():
            if arn == sm_arn:
                return "state_machine", sm_id, self.r.physical[sm_id].name
        return "other", None, None

    def _add_schedule(
        self,
        logical_id: str,
        name: str,
        source: str,
        expression: str,
        timezone: str | None,
        enabled: bool,
        target_arn: str,
        input_text: Any,
    ) -> None:
        kind, target_id, target_name = self._target(target_arn)
        if input_text is not None and not isinstance(input_text, str):
            input_text = json.dumps(input_text)
        self.schedules.append(
            ScheduleInfo(
                logical_id=logical_id,
                name=name,
                source=source,
                expression=expression,
                timezone=timezone,
                enabled=enabled,
                target_arn=target_arn,
                target_kind=kind,
                target_logical_id=target_id,
                target_name=target_name,
                input=input_text,
            )
        )

    # -------------------------------------------------------------- events

    def _events_of(self, logical_id: str) -> dict[str, Any]:
        resource = self.resources[logical_id]
        if resource["Type"] not in (_FUNCTION, *_STATE_MACHINES):
            return {}
        if logical_id not in self.r.physical or any(
            s.logical_id == logical_id for s in self.skipped
        ):
            return {}
        return resource.get("Properties", {}).get("Events", {}) or {}

    def _routes(self) -> list[Route]:
        routes: list[Route] = []
        for logical_id in self.functions:
            for event_name, event in self._events_of(logical_id).items():
                if event.get("Type") != "Api":
                    if event.get("Type") not in _TRIGGER_EVENTS:
                        self.skipped.append(
                            SkippedResource(
                                f"{logical_id}{event_name}",
                                f"{_FUNCTION} event {event.get('Type')}",
                                "event source not supported by the local stack",
                            )
                        )
                    continue
                props = event.get("Properties", {})
                api_id = self._api_of(props.get("RestApiId"))
                api = self.apis[api_id]
                auth_name = self.r.resolve(props.get("Auth", {})).get(
                    "Authorizer", api.default_authorizer
                )
                if auth_name in (None, "NONE"):
                    authorizer = None
                elif auth_name in api.authorizers:
                    authorizer = api.authorizers[auth_name]
                else:
                    raise DeployError(
                        f"{logical_id}.{event_name}: authorizer {auth_name} not supported locally"
                    )
                method = str(self.r.resolve(props["Method"])).upper()
                routes.append(
                    Route(
                        api_logical_id=api_id,
                        path=str(self.r.resolve(props["Path"])),
                        method=method,
                        function_logical_id=logical_id,
                        function_name=self.functions[logical_id].name,
                        authorizer=authorizer,
                        event_name=event_name,
                    )
                )
        return routes

    def _api_of(self, rest_api_id: Any) -> str:
        if rest_api_id is None:
            # SAM's implicit API, made on first use.
            if "ServerlessRestApi" not in self.apis:
                props = self.r.resolve(self.globals.get("Api", {}))
                self.r.physical["ServerlessRestApi"] = self._register_api(
                    "ServerlessRestApi", props, "Prod"
                )
            return "ServerlessRestApi"
        if isinstance(rest_api_id, dict) and "Ref" in rest_api_id:
            return str(rest_api_id["Ref"])
        api_id = self.r.resolve(rest_api_id)
        for info in self.apis.values():
            if info.api_id == api_id:
                return info.logical_id
        raise DeployError(f"RestApiId {rest_api_id} is not an API in this template")

    def _event_triggers(self) -> None:
        """Schedules and EventBridge rules declared as Events of functions and machines."""
        candidates = list(self.functions) + list(self.state_machines)
        for logical_id in candidates:
            target = self.r.physical[logical_id]
            for event_name, event in self._events_of(logical_id).items():
                etype = event.get("Type")
                props = self.r.resolve(event.get("Properties", {}))
                event_id = f"{logical_id}{event_name}"
                if etype in ("Schedule", "EventBridgeRule", "CloudWatchEvent"):
                    self._event_rule(event_id, etype, target, props)
                elif etype == "ScheduleV2":
                    self._event_scheduler_schedule(event_id, target, props)
                elif logical_id in self.state_machines and etype:
                    self.skipped.append(
                        SkippedResource(
                            event_id,
                            f"{self.resources[logical_id]['Type']} event {etype}",
                            "event source not supported by the local stack",
                        )
                    )

    def _event_rule(
        self, event_id: str, etype: str, target: Resource, props: dict[str, Any]
    ) -> None:
        enabled = props.get("Enabled", True)
        state = props.get("State") or ("ENABLED" if str(enabled).lower() == "true" else "DISABLED")
        rule_target = {"Id": props.get("Target", {}).get("Id", f"{event_id}Target")[:64]}
        rule_target["Arn"] = target.arn or ""
        if "Input" in props:
            rule_target["Input"] = props["Input"]
        rule: dict[str, Any] = {
            "Name": props.get("Name") or props.get("RuleName") or self._name(event_id, 64),
            "State": state,
            "Targets": [rule_target],
        }
        if etype == "Schedule":
            rule["ScheduleExpression"] = props["Schedule"]
        else:
            rule["EventPattern"] = props["Pattern"]
        for key in ("Description", "EventBusName"):
            if key in props:
                rule[key] = props[key]
        self.r.physical[event_id] = self._events_rule(event_id, rule, source=etype)

    def _event_scheduler_schedule(
        self, event_id: str, target: Resource, props: dict[str, Any]
    ) -> None:
        schedule: dict[str, Any] = {
            "Name": props.get("Name") or self._name(event_id, 64),
            "ScheduleExpression": props["ScheduleExpression"],
            "FlexibleTimeWindow": props.get("FlexibleTimeWindow", {"Mode": "OFF"}),
            "State": props.get("State", "ENABLED"),
            "Target": {
                "Arn": target.arn,
                # As SAM: the event's RoleArn, else a role made for this schedule alone
                # (whose ARN the functions' PassRole must then allow: the IAM tests see it).
                "RoleArn": props.get("RoleArn") or self._generated_role(f"{event_id}Role"),
                **({"Input": props["Input"]} if "Input" in props else {}),
            },
        }
        for key in ("GroupName", "ScheduleExpressionTimezone", "Description"):
            if key in props:
                schedule[key] = props[key]
        self.r.physical[event_id] = self._scheduler_schedule(event_id, schedule, "ScheduleV2")

    def _generated_role(self, logical_id: str) -> str:
        """A role SAM would generate for an event (trusting the shared role's services)."""
        iam = self.client("iam")
        name = self._name(logical_id, 64)
        trust = iam.get_role(RoleName=self.r.physical[_SHARED_ROLE].name)["Role"]
        try:
            role = iam.create_role(RoleName=name, AssumeRolePolicyDocument=json.dumps(
                trust["AssumeRolePolicyDocument"]))
        except iam.exceptions.EntityAlreadyExistsException:
            role = iam.get_role(RoleName=name)
        return str(role["Role"]["Arn"])

    # -------------------------------------------------------------- environment

    def _environment(self) -> dict[str, str]:
        """The union of the functions' environments: they share one process."""
        union: dict[str, str] = {}
        owner: dict[str, str] = {}
        clashes = []
        for info in self.functions.values():
            for key, value in info.environment.items():
                if key in PER_FUNCTION_ONLY:
                    continue
                if key in union and union[key] != value:
                    clashes.append(
                        f"{key}: {owner[key]}={union[key]!r}, {info.logical_id}={value!r}"
                    )
                union.setdefault(key, value)
                owner.setdefault(key, info.logical_id)
        if clashes:
            raise DeployError(
                "functions run in one process and share os.environ, but give one variable "
                "different values: " + "; ".join(clashes)
            )
        return union


def _env_value(value: Any) -> str:
    if isinstance(value, (dict, list)):
        raise DeployError(f"environment value left unresolved: {value!r}")
    return _text(value)
