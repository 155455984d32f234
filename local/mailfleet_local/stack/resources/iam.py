"""IAM roles: the template's own, the one shared role every function runs as here, and
the roles SAM would generate for an event."""

from __future__ import annotations

import json
from typing import TYPE_CHECKING, Any

from mailfleet_local.stack.model import FUNCTION, STATE_MACHINES, Resource
from mailfleet_local.stack.template import SHARED_ROLE

if TYPE_CHECKING:
    from mailfleet_local.stack.deployer import Deployer


def create_shared_role(deployer: Deployer) -> None:
    name = f"{deployer.stack}-local-execution-role"
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
    iam = deployer.client("iam")
    try:
        role = iam.create_role(RoleName=name, AssumeRolePolicyDocument=json.dumps(trust))
    except iam.exceptions.EntityAlreadyExistsException:
        role = iam.get_role(RoleName=name)
    deployer.role_arn = role["Role"]["Arn"]
    deployer.r.physical[SHARED_ROLE] = Resource(
        SHARED_ROLE,
        "AWS::IAM::Role",
        name,
        name,
        deployer.role_arn,
        {"Arn": deployer.role_arn, "RoleId": role["Role"]["RoleId"]},
    )
    for logical_id, resource in deployer.resources.items():
        if resource["Type"] in (FUNCTION, *STATE_MACHINES):
            deployer.r.aliases[f"{logical_id}Role"] = SHARED_ROLE


def create_role(deployer: Deployer, logical_id: str, raw: dict[str, Any]) -> Resource:
    props = deployer.r.resolve(raw)
    name = props.get("RoleName") or deployer.name(logical_id, 64)
    kwargs: dict[str, Any] = {
        "RoleName": name,
        "AssumeRolePolicyDocument": json.dumps(props.get("AssumeRolePolicyDocument", {})),
        "Path": props.get("Path", "/"),
    }
    role = deployer.client("iam").create_role(**kwargs)["Role"]
    attrs = {"Arn": role["Arn"], "RoleId": role["RoleId"]}
    return Resource(logical_id, "AWS::IAM::Role", name, name, role["Arn"], attrs)


def generated_role(deployer: Deployer, logical_id: str) -> str:
    """A role SAM would generate for an event (trusting the shared role's services)."""
    iam = deployer.client("iam")
    name = deployer.name(logical_id, 64)
    trust = iam.get_role(RoleName=deployer.r.physical[SHARED_ROLE].name)["Role"]
    try:
        role = iam.create_role(
            RoleName=name, AssumeRolePolicyDocument=json.dumps(trust["AssumeRolePolicyDocument"])
        )
    except iam.exceptions.EntityAlreadyExistsException:
        role = iam.get_role(RoleName=name)
    return str(role["Role"]["Arn"])
