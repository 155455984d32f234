"""KMS keys."""

from __future__ import annotations

import json
from typing import TYPE_CHECKING, Any

from mailfleet_local.stack.model import Resource

if TYPE_CHECKING:
    from mailfleet_local.stack.deployer import Deployer


def create_key(deployer: Deployer, logical_id: str, raw: dict[str, Any]) -> Resource:
    # moto signs and verifies with asymmetric keys (the audit sealer's ECC_NIST_P256).
    props = deployer.r.resolve(raw)
    kwargs: dict[str, Any] = {
        "KeySpec": props.get("KeySpec", "SYMMETRIC_DEFAULT"),
        "KeyUsage": props.get("KeyUsage", "ENCRYPT_DECRYPT"),
    }
    if props.get("Description"):
        kwargs["Description"] = props["Description"]
    if props.get("KeyPolicy"):
        kwargs["Policy"] = json.dumps(props["KeyPolicy"])
    meta = deployer.client("kms").create_key(**kwargs)["KeyMetadata"]
    return Resource(
        logical_id,
        "AWS::KMS::Key",
        meta["KeyId"],
        meta["KeyId"],
        meta["Arn"],
        {"Arn": meta["Arn"], "KeyId": meta["KeyId"]},
    )
