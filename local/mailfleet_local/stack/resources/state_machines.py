"""Step Functions state machines, with DefinitionSubstitutions applied (moto would not)."""

from __future__ import annotations

import json
from typing import TYPE_CHECKING, Any

from mailfleet_local.stack.intrinsics import SUB_VAR, as_text
from mailfleet_local.stack.model import DeployError, Resource, Unsupported
from mailfleet_local.stack.template import suffix

if TYPE_CHECKING:
    from mailfleet_local.stack.deployer import Deployer


def create_state_machine(deployer: Deployer, logical_id: str, raw: dict[str, Any]) -> Resource:
    own = {k: v for k, v in raw.items() if k != "Events"}
    props = deployer.r.resolve(own)
    name = (
        props.get("Name")
        or props.get("StateMachineName")
        or f"{logical_id}-{suffix(deployer.stack, logical_id)}"
    )
    if "DefinitionUri" in props:
        uri = props["DefinitionUri"]
        if not isinstance(uri, str):
            raise Unsupported("DefinitionUri must be a local file")
        path = deployer.base_dir / uri
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
        text = text.replace("${" + key + "}", as_text(value))
    left = sorted(set(SUB_VAR.findall(text)))
    if left:
        raise DeployError(f"{logical_id}: no DefinitionSubstitutions for {left}")
    json.loads(text)  # a broken substitution shows here, not at execution time
    created = deployer.client("stepfunctions").create_state_machine(
        name=name,
        definition=text,
        roleArn=props.get("Role") or props.get("RoleArn") or deployer.role_arn,
        # moto's interpreter runs STANDARD only (EXPRESS is rejected).
        type="STANDARD",
    )
    arn = created["stateMachineArn"]
    deployer.state_machines[logical_id] = arn
    attrs = {"Arn": arn, "Name": name}
    return Resource(logical_id, "AWS::Serverless::StateMachine", arn, name, arn, attrs)
