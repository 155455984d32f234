"""The deployer: reads template.yaml (cfn-lint's loader understands !Ref, !GetAtt, !Sub),
resolves parameters and conditions, and creates each resource after what it refers to,
through the creator of its type (resources/). What a type it cannot run locally becomes a
listed stand-in, never a silent gap."""

from __future__ import annotations

import json
import logging
import re
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any

from mailfleet_local.stack import wiring
from mailfleet_local.stack.intrinsics import Resolver, plain, references
from mailfleet_local.stack.model import (
    FUNCTION,
    STATE_MACHINES,
    TABLE,
    ApiInfo,
    DeployError,
    Deployment,
    EventRuleInfo,
    FunctionInfo,
    Resource,
    ScheduleInfo,
    SkippedResource,
    Unsupported,
)
from mailfleet_local.stack.resources import (
    alarms,
    apis,
    buckets,
    events,
    functions,
    iam,
    kms,
    layers,
    parameters,
    queues,
    scheduler,
    secrets,
    state_machines,
    tables,
)
from mailfleet_local.stack.resources.iam import create_shared_role
from mailfleet_local.stack.template import (
    NOT_EMULATED,
    PER_FUNCTION_ONLY,
    SERVERLESS_TRANSFORM,
    SHARED_ROLE,
    merge_globals,
    suffix,
)

if TYPE_CHECKING:
    from mailfleet_local.stack.server import LocalAws

log = logging.getLogger("mailfleet-local.stack")

Creator = Callable[["Deployer", str, dict[str, Any]], Resource]
# What creates each resource type the local stack runs (anything else: NOT_EMULATED).
CREATORS: dict[str, Creator] = {
    TABLE: tables.create_table,
    "AWS::SecretsManager::Secret": secrets.create_secret,
    "AWS::S3::Bucket": buckets.create_bucket,
    "AWS::SSM::Parameter": parameters.create_parameter,
    "AWS::IAM::Role": iam.create_role,
    "AWS::Serverless::LayerVersion": layers.create_layer,
    "AWS::Lambda::LayerVersion": layers.create_layer,
    FUNCTION: functions.create_function,
    "AWS::Serverless::StateMachine": state_machines.create_state_machine,
    "AWS::StepFunctions::StateMachine": state_machines.create_state_machine,
    "AWS::Serverless::Api": apis.create_api,
    "AWS::Scheduler::Schedule": scheduler.create_schedule,
    "AWS::Scheduler::ScheduleGroup": scheduler.create_schedule_group,
    "AWS::Events::Rule": events.create_rule,
    "AWS::CloudWatch::Alarm": alarms.create_alarm,
    "AWS::SQS::Queue": queues.create_queue,
    "AWS::KMS::Key": kms.create_key,
}


class Deployer:
    """Reads the template and creates its resources in order; one instance per deploy."""

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
        self.template: dict[str, Any] = plain(cfn_yaml.load(str(self.template_path)))
        self.secret_values = secret_values
        self.stack = stack_name
        self.region = aws.region
        self.account = aws.account_id
        self.globals = self.template.get("Globals", {})
        self.resources: dict[str, Any] = self.template.get("Resources", {})
        self.parameters = self._parameters(overrides)
        self.r = Resolver(
            {
                "AWS::Region": self.region,
                "AWS::AccountId": self.account,
                "AWS::StackName": stack_name,
                "AWS::StackId": (
                    f"arn:aws:cloudformation:{self.region}:{self.account}:stack/"
                    f"{stack_name}/{suffix(stack_name, 'stack', 8).lower()}"
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
        if any(t and t != SERVERLESS_TRANSFORM for t in transforms):
            raise DeployError(f"unsupported Transform {transform}")
        for name, expr in self.template.get("Conditions", {}).items():
            self.r.conditions[name] = bool(self.r.resolve(expr))
        create_shared_role(self)
        for logical_id in self._order():
            resource = self.resources[logical_id]
            condition = resource.get("Condition")
            if condition and not self.r.condition(condition):
                self.skipped.append(
                    SkippedResource(logical_id, resource["Type"], f"condition {condition} false")
                )
                continue
            self._create(logical_id, resource)
        routes = wiring.routes(self)
        wiring.event_triggers(self)
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
            resources={k: v for k, v in self.r.physical.items() if k != SHARED_ROLE},
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
            if resource["Type"] == FUNCTION:
                # Events (Api, schedules) are wired after everything exists: an Api event
                # and the Api's authorizer would otherwise make a cycle.
                props.pop("Events", None)
                props = merge_globals(function_globals, props)
            elif resource["Type"] == "AWS::Serverless::Api":
                props = merge_globals(api_globals, props)
            elif resource["Type"] in STATE_MACHINES:
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
            if self.resources.get(base, {}).get("Type") in (FUNCTION, *STATE_MACHINES):
                return SHARED_ROLE
        return logical_id

    def _create(self, logical_id: str, resource: dict[str, Any]) -> None:
        rtype = resource["Type"]
        creator = CREATORS.get(rtype)
        if creator is None:
            reason = NOT_EMULATED.get(rtype, "resource type not supported by the local stack")
            self._skip(logical_id, rtype, reason)
            return
        raw = resource.get("Properties", {})
        try:
            self.r.physical[logical_id] = creator(self, logical_id, raw)
        except Unsupported as exc:
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

    def name(self, logical_id: str, max_len: int = 255) -> str:
        """A name as CloudFormation makes one: stack, logical id and a (stable) suffix."""
        name = f"{self.stack}-{logical_id}-{suffix(self.stack, logical_id)}"
        return name[-max_len:]

    def target_of(self, arn: str) -> tuple[str, str | None, str | None]:
        """(kind, logical id, name) of what a schedule or rule invokes."""
        for info in self.functions.values():
            if arn in (info.arn, info.name):
                return "function", info.logical_id, info.name
        for sm_id, sm_arn in self.state_machines.items():
            if arn == sm_arn:
                return "state_machine", sm_id, self.r.physical[sm_id].name
        return "other", None, None

    def add_schedule(
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
        kind, target_id, target_name = self.target_of(target_arn)
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
