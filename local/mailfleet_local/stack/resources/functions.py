"""Lambda functions: created in moto, registered with the Lambda bridge that runs their
handlers from CodeUri in this process."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Any

from mailfleet_local import lambda_bridge
from mailfleet_local.stack.model import FUNCTION, FunctionInfo, Resource, Unsupported
from mailfleet_local.stack.template import dummy_zip, env_value, merge_globals, tags

if TYPE_CHECKING:
    from mailfleet_local.stack.deployer import Deployer


def create_function(deployer: Deployer, logical_id: str, raw: dict[str, Any]) -> Resource:
    own = {k: v for k, v in raw.items() if k != "Events"}
    props = deployer.r.resolve(merge_globals(deployer.globals.get("Function", {}), own))
    name = props.get("FunctionName") or deployer.name(logical_id, 64)
    code_uri = props.get("CodeUri")
    handler = props.get("Handler")
    if not isinstance(code_uri, str) or not handler:
        raise Unsupported("only a CodeUri directory with a Handler runs locally")
    code_dir = (deployer.base_dir / code_uri).resolve()
    module_path = handler.rpartition(".")[0]
    handler_file = code_dir / Path(*module_path.split(".")).with_suffix(".py")
    variables = props.get("Environment", {}).get("Variables", {})
    environment = {str(k): env_value(v) for k, v in variables.items()}
    timeout = int(props.get("Timeout", 3))
    memory = int(props.get("MemorySize", 128))
    kwargs: dict[str, Any] = {
        "FunctionName": name,
        "Runtime": props.get("Runtime", "python3.12"),
        "Role": props.get("Role") or deployer.role_arn,
        "Handler": handler,
        "Code": {"ZipFile": dummy_zip()},
        "Timeout": timeout,
        "MemorySize": memory,
        "Environment": {"Variables": environment},
        "Publish": False,
    }
    if props.get("Description"):
        kwargs["Description"] = props["Description"]
    if props.get("Architectures"):
        kwargs["Architectures"] = props["Architectures"]
    if props.get("Layers"):
        kwargs["Layers"] = props["Layers"]
    if props.get("Tracing"):
        kwargs["TracingConfig"] = {"Mode": props["Tracing"]}
    if props.get("Tags"):
        kwargs["Tags"] = tags(props["Tags"])
    arn = deployer.client("lambda").create_function(**kwargs)["FunctionArn"]
    on_failure = (
        (props.get("EventInvokeConfig") or {}).get("DestinationConfig", {}).get("OnFailure")
    )
    lambda_bridge.register_function(name, code_dir, on_failure)
    deployer.functions[logical_id] = FunctionInfo(
        logical_id=logical_id,
        name=name,
        arn=arn,
        handler=handler,
        code_dir=code_dir,
        handler_file=handler_file,
        environment=environment,
        timeout=timeout,
        memory_size=memory,
        event_invoke_config=props.get("EventInvokeConfig"),
    )
    return Resource(logical_id, FUNCTION, name, name, arn, {"Arn": arn})
