"""EventBridge Scheduler schedules and schedule groups (stored by moto, fired by the
local ticker)."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from mailfleet_local.stack.model import Resource

if TYPE_CHECKING:
    from mailfleet_local.stack.deployer import Deployer


def create_schedule(
    deployer: Deployer,
    logical_id: str,
    raw: dict[str, Any],
    source: str = "AWS::Scheduler::Schedule",
) -> Resource:
    props = deployer.r.resolve(raw)
    name = props.get("Name") or deployer.name(logical_id, 64)
    target = props["Target"]
    kwargs: dict[str, Any] = {
        "Name": name,
        "ScheduleExpression": props["ScheduleExpression"],
        "FlexibleTimeWindow": props.get("FlexibleTimeWindow", {"Mode": "OFF"}),
        "Target": {
            "Arn": target["Arn"],
            "RoleArn": target.get("RoleArn") or deployer.role_arn,
            **({"Input": target["Input"]} if "Input" in target else {}),
        },
        "State": props.get("State", "ENABLED"),
    }
    for key in ("GroupName", "ScheduleExpressionTimezone", "Description"):
        if key in props:
            kwargs[key] = props[key]
    arn = deployer.client("scheduler").create_schedule(**kwargs)["ScheduleArn"]
    deployer.add_schedule(
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


def create_schedule_group(deployer: Deployer, logical_id: str, raw: dict[str, Any]) -> Resource:
    props = deployer.r.resolve(raw)
    name = props.get("Name") or deployer.name(logical_id, 64)
    arn = deployer.client("scheduler").create_schedule_group(Name=name)["ScheduleGroupArn"]
    return Resource(logical_id, "AWS::Scheduler::ScheduleGroup", name, name, arn, {"Arn": arn})
