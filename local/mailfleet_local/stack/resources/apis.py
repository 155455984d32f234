"""API Gateway REST APIs: what the local front needs (stage, authorizers, gateway
responses, binary media types)."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from mailfleet_local.stack.model import (
    ApiInfo,
    AuthorizerInfo,
    DeployError,
    GatewayResponse,
    Resource,
)
from mailfleet_local.stack.template import merge_globals

if TYPE_CHECKING:
    from mailfleet_local.stack.deployer import Deployer


def create_api(deployer: Deployer, logical_id: str, raw: dict[str, Any]) -> Resource:
    props = deployer.r.resolve(merge_globals(deployer.globals.get("Api", {}), raw))
    return register_api(deployer, logical_id, props, props.get("StageName", "Prod"))


def register_api(
    deployer: Deployer, logical_id: str, props: dict[str, Any], stage: str
) -> Resource:
    api = deployer.client("apigateway").create_rest_api(name=props.get("Name") or logical_id)
    api_id = api["id"]
    auth = props.get("Auth", {})
    authorizers = {
        name: authorizer(deployer, name, spec) for name, spec in auth.get("Authorizers", {}).items()
    }
    default = auth.get("DefaultAuthorizer")
    if default and default not in authorizers and default != "AWS_IAM":
        raise DeployError(f"{logical_id}: DefaultAuthorizer {default} is not defined")
    responses = {}
    for rtype, spec in props.get("GatewayResponses", {}).items():
        templates = spec.get("ResponseTemplates", {})
        body = templates.get("application/json")
        if body is None and templates:
            body = next(iter(templates.values()))
        headers = {
            str(k): str(v).strip("'")
            for k, v in spec.get("ResponseParameters", {}).get("Headers", {}).items()
        }
        status = spec.get("StatusCode")
        responses[rtype] = GatewayResponse(int(status) if status else None, body, headers)
    deployer.apis[logical_id] = ApiInfo(
        logical_id=logical_id,
        api_id=api_id,
        stage=str(stage),
        authorizers=authorizers,
        default_authorizer=default,
        gateway_responses=responses,
        binary_media_types=tuple(
            str(t).replace("~1", "/") for t in props.get("BinaryMediaTypes", [])
        ),
    )
    attrs = {"RootResourceId": api.get("rootResourceId", "")}
    return Resource(logical_id, "AWS::Serverless::Api", api_id, api_id, None, attrs)


def authorizer(deployer: Deployer, name: str, spec: dict[str, Any]) -> AuthorizerInfo:
    identity = spec.get("Identity", {})
    if "UserPoolArn" in spec:
        kind = "COGNITO_USER_POOLS"
    else:
        kind = str(spec.get("FunctionPayloadType", "TOKEN"))
    function = None
    if "FunctionArn" in spec:
        arn = spec["FunctionArn"]
        function = next((f for f in deployer.functions.values() if arn in (f.arn, f.name)), None)
        if function is None:
            raise DeployError(f"authorizer {name}: no function in the template has {arn}")
    return AuthorizerInfo(
        name=name,
        type=kind,
        function_logical_id=function.logical_id if function else None,
        function_name=function.name if function else None,
        identity_header=str(identity.get("Header", "Authorization")),
        validation_expression=identity.get("ValidationExpression"),
        # SAM's default cache is 300 s.
        reauthorize_every=int(identity.get("ReauthorizeEvery", 300)),
    )
