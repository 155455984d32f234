"""EventBridge rules: schedules go to the ticker, event patterns to the local event
routing (moto stores both and fires neither)."""

from __future__ import annotations

import json
from typing import TYPE_CHECKING, Any

from mailfleet_local.stack.model import EventRuleInfo, Resource

if TYPE_CHECKING:
    from mailfleet_local.stack.deployer import Deployer


def create_rule(
    deployer: Deployer, logical_id: str, raw: dict[str, Any], source: str = "AWS::Events::Rule"
) -> Resource:
    props = deployer.r.resolve(raw)
    name = props.get("Name") or deployer.name(logical_id, 64)
    state = props.get("State", "ENABLED")
    kwargs: dict[str, Any] = {"Name": name, "State": state}
    for key in ("ScheduleExpression", "Description", "EventBusName"):
        if key in props:
            kwargs[key] = props[key]
    if "EventPattern" in props:
        kwargs["EventPattern"] = json.dumps(props["EventPattern"])
    events = deployer.client("events")
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
            deployer.add_schedule(
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
            kind, target_id, target_name = deployer.target_of(target["Arn"])
            deployer.event_rules.append(
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
