"""Lambda layers (the code is on sys.path already; moto gets a stub)."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from mailfleet_local.stack.model import Resource
from mailfleet_local.stack.template import dummy_zip

if TYPE_CHECKING:
    from mailfleet_local.stack.deployer import Deployer


def create_layer(deployer: Deployer, logical_id: str, raw: dict[str, Any]) -> Resource:
    # The layer's code is on sys.path already (editable install); moto gets a stub.
    props = deployer.r.resolve(raw)
    name = props.get("LayerName") or deployer.name(logical_id, 140)
    kwargs: dict[str, Any] = {"LayerName": name, "Content": {"ZipFile": dummy_zip()}}
    if props.get("CompatibleRuntimes"):
        kwargs["CompatibleRuntimes"] = props["CompatibleRuntimes"]
    layer = deployer.client("lambda").publish_layer_version(**kwargs)
    arn = layer["LayerVersionArn"]
    return Resource(logical_id, "AWS::Serverless::LayerVersion", arn, name, arn, {})
