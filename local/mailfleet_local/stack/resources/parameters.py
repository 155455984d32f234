"""SSM Parameter Store parameters."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from mailfleet_local.stack.model import Resource
from mailfleet_local.stack.template import suffix, tags

if TYPE_CHECKING:
    from mailfleet_local.stack.deployer import Deployer


def create_parameter(deployer: Deployer, logical_id: str, raw: dict[str, Any]) -> Resource:
    props = deployer.r.resolve(raw)
    name = props.get("Name") or f"CFN-{logical_id}-{suffix(deployer.stack, logical_id)}"
    kwargs: dict[str, Any] = {
        "Name": name,
        "Type": props.get("Type", "String"),
        "Value": str(props["Value"]),
    }
    for key in ("Description", "AllowedPattern", "Tier", "DataType"):
        if key in props:
            kwargs[key] = props[key]
    if props.get("Tags"):
        kwargs["Tags"] = [{"Key": k, "Value": v} for k, v in tags(props["Tags"]).items()]
    deployer.client("ssm").put_parameter(**kwargs)
    arn = f"arn:aws:ssm:{deployer.region}:{deployer.account}:parameter/{name.lstrip('/')}"
    attrs = {"Type": kwargs["Type"], "Value": kwargs["Value"]}
    return Resource(logical_id, "AWS::SSM::Parameter", name, name, arn, attrs)
