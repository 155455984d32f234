"""What the template wires through the Events of functions and state machines: API routes
(for the front) and schedules and rules (for the ticker), made once everything exists."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from mailfleet_local.stack.model import (
    FUNCTION,
    STATE_MACHINES,
    DeployError,
    Resource,
    Route,
    SkippedResource,
)
from mailfleet_local.stack.resources.apis import register_api
from mailfleet_local.stack.resources.events import create_rule
from mailfleet_local.stack.resources.iam import generated_role
from mailfleet_local.stack.resources.scheduler import create_schedule
from mailfleet_local.stack.template import TRIGGER_EVENTS

if TYPE_CHECKING:
    from mailfleet_local.stack.deployer import Deployer


def events_of(deployer: Deployer, logical_id: str) -> dict[str, Any]:
    resource = deployer.resources[logical_id]
    if resource["Type"] not in (FUNCTION, *STATE_MACHINES):
        return {}
    if logical_id not in deployer.r.physical or any(
        s.logical_id == logical_id for s in deployer.skipped
    ):
        return {}
    return resource.get("Properties", {}).get("Events", {}) or {}


def routes(deployer: Deployer) -> list[Route]:
    routes: list[Route] = []
    for logical_id in deployer.functions:
        for event_name, event in events_of(deployer, logical_id).items():
            if event.get("Type") != "Api":
                if event.get("Type") not in TRIGGER_EVENTS:
                    deployer.skipped.append(
                        SkippedResource(
                            f"{logical_id}{event_name}",
                            f"{FUNCTION} event {event.get('Type')}",
                            "event source not supported by the local stack",
                        )
                    )
                continue
            props = event.get("Properties", {})
            api_id = api_of(deployer, props.get("RestApiId"))
            api = deployer.apis[api_id]
            auth_name = deployer.r.resolve(props.get("Auth", {})).get(
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
            method = str(deployer.r.resolve(props["Method"])).upper()
            routes.append(
                Route(
                    api_logical_id=api_id,
                    path=str(deployer.r.resolve(props["Path"])),
                    method=method,
                    function_logical_id=logical_id,
                    function_name=deployer.functions[logical_id].name,
                    authorizer=authorizer,
                    event_name=event_name,
                )
            )
    return routes


def api_of(deployer: Deployer, rest_api_id: Any) -> str:
    if rest_api_id is None:
        # SAM's implicit API, made on first use.
        if "ServerlessRestApi" not in deployer.apis:
            props = deployer.r.resolve(deployer.globals.get("Api", {}))
            deployer.r.physical["ServerlessRestApi"] = register_api(
                deployer, "ServerlessRestApi", props, "Prod"
            )
        return "ServerlessRestApi"
    if isinstance(rest_api_id, dict) and "Ref" in rest_api_id:
        return str(rest_api_id["Ref"])
    api_id = deployer.r.resolve(rest_api_id)
    for info in deployer.apis.values():
        if info.api_id == api_id:
            return info.logical_id
    raise DeployError(f"RestApiId {rest_api_id} is not an API in this template")


def event_triggers(deployer: Deployer) -> None:
    """Schedules and EventBridge rules declared as Events of functions and machines."""
    candidates = list(deployer.functions) + list(deployer.state_machines)
    for logical_id in candidates:
        target = deployer.r.physical[logical_id]
        for event_name, event in events_of(deployer, logical_id).items():
            etype = event.get("Type")
            props = deployer.r.resolve(event.get("Properties", {}))
            event_id = f"{logical_id}{event_name}"
            if etype in ("Schedule", "EventBridgeRule", "CloudWatchEvent"):
                event_rule(deployer, event_id, etype, target, props)
            elif etype == "ScheduleV2":
                event_scheduler_schedule(deployer, event_id, target, props)
            elif logical_id in deployer.state_machines and etype:
                deployer.skipped.append(
                    SkippedResource(
                        event_id,
                        f"{deployer.resources[logical_id]['Type']} event {etype}",
                        "event source not supported by the local stack",
                    )
                )


def event_rule(
    deployer: Deployer, event_id: str, etype: str, target: Resource, props: dict[str, Any]
) -> None:
    enabled = props.get("Enabled", True)
    state = props.get("State") or ("ENABLED" if str(enabled).lower() == "true" else "DISABLED")
    rule_target = {"Id": props.get("Target", {}).get("Id", f"{event_id}Target")[:64]}
    rule_target["Arn"] = target.arn or ""
    if "Input" in props:
        rule_target["Input"] = props["Input"]
    rule: dict[str, Any] = {
        "Name": props.get("Name") or props.get("RuleName") or deployer.name(event_id, 64),
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
    deployer.r.physical[event_id] = create_rule(deployer, event_id, rule, source=etype)


def event_scheduler_schedule(
    deployer: Deployer, event_id: str, target: Resource, props: dict[str, Any]
) -> None:
    schedule: dict[str, Any] = {
        "Name": props.get("Name") or deployer.name(event_id, 64),
        "ScheduleExpression": props["ScheduleExpression"],
        "FlexibleTimeWindow": props.get("FlexibleTimeWindow", {"Mode": "OFF"}),
        "State": props.get("State", "ENABLED"),
        "Target": {
            "Arn": target.arn,
            # As SAM: the event's RoleArn, else a role made for this schedule alone
            # (whose ARN the functions' PassRole must then allow: the IAM tests see it).
            "RoleArn": props.get("RoleArn") or generated_role(deployer, f"{event_id}Role"),
            **({"Input": props["Input"]} if "Input" in props else {}),
        },
    }
    for key in ("GroupName", "ScheduleExpressionTimezone", "Description"):
        if key in props:
            schedule[key] = props[key]
    deployer.r.physical[event_id] = create_schedule(deployer, event_id, schedule, "ScheduleV2")
