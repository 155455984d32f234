"""What a deployment is made of: the resources created, the functions, APIs, routes,
schedules and rules the local runtime (front, bridge, ticker) serves from."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

# Resource types the deployer and the server both look for.
TABLE = "AWS::DynamoDB::Table"
FUNCTION = "AWS::Serverless::Function"
STATE_MACHINES = ("AWS::Serverless::StateMachine", "AWS::StepFunctions::StateMachine")


class DeployError(Exception):
    """The template asks for something the local stack cannot do faithfully."""


class Unsupported(Exception):
    """A resource of a known type in a form the local stack cannot create: skipped."""


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
