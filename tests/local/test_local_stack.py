"""The embedded stack: template.yaml deployed into moto, and the API Gateway front.

Front behaviour is checked on the real template's wiring (its routes, authorizer and
GatewayResponses) deployed under a second stack name, with throw-away handlers standing
in for the functions, so these tests hold whatever the real handlers do.
"""

from __future__ import annotations

import base64
import json
import os
import textwrap
import time
from pathlib import Path
from typing import Any

import pytest
import requests

from mailfleet_local import lambda_bridge, stack
from mailfleet_local.front import ApiFront, evaluate_policy, match_route
from mailfleet_local.stack import DeployError, Deployment, LocalAws, Route
from tests.fixtures.stack import TEMPLATE, LocalApi, shared_local_api, shared_local_aws
from tests.waiting import wait_until

REPO = TEMPLATE.parent


def raw_template() -> dict[str, Any]:
    from cfnlint.decode import cfn_yaml

    return cfn_yaml.load(str(TEMPLATE))


def resources_of(kind: str) -> dict[str, Any]:
    return {k: v for k, v in raw_template()["Resources"].items() if v["Type"] == kind}


@pytest.fixture(scope="module")
def aws() -> LocalAws:
    return shared_local_aws()


@pytest.fixture(scope="module")
def api() -> LocalApi:
    return shared_local_api()


@pytest.fixture(scope="module")
def deployment(api: LocalApi) -> Deployment:
    api.ensure_deployed()
    return api.deployment


# ---------------------------------------------------------------- the real template


def test_every_table_exists_as_declared(aws: LocalAws, deployment: Deployment) -> None:
    ddb = aws.client("dynamodb")
    tables = resources_of("AWS::DynamoDB::Table")
    assert tables, "the template declares tables"
    for logical_id, resource in tables.items():
        props = resource["Properties"]
        name = deployment.resources[logical_id].name
        assert name.startswith(f"mailfleet-{logical_id}-")
        table = ddb.describe_table(TableName=name)["Table"]
        assert table["KeySchema"] == props["KeySchema"]
        assert table["BillingModeSummary"]["BillingMode"] == "PAY_PER_REQUEST"
        declared = {g["IndexName"]: g["KeySchema"] for g in props.get("GlobalSecondaryIndexes", [])}
        present = {g["IndexName"]: g["KeySchema"] for g in table.get("GlobalSecondaryIndexes", [])}
        assert present == declared
        ttl = props.get("TimeToLiveSpecification")
        if ttl:
            described = ddb.describe_time_to_live(TableName=name)["TimeToLiveDescription"]
            assert described["TimeToLiveStatus"] == "ENABLED"
            assert described["AttributeName"] == ttl["AttributeName"]


def test_secrets_exist_and_the_admin_token_is_the_one_given(
    aws: LocalAws, api: LocalApi, deployment: Deployment
) -> None:
    secrets = aws.client("secretsmanager")
    for logical_id in resources_of("AWS::SecretsManager::Secret"):
        arn = deployment.resources[logical_id].arn
        assert secrets.describe_secret(SecretId=arn)["ARN"] == arn
    value = secrets.get_secret_value(SecretId=deployment.resources["AdminTokenSecret"].arn)
    assert value["SecretString"] == api.admin_token


def _expected_function_name(props: dict[str, Any], stack: str) -> str | None:
    name = props.get("FunctionName")
    if isinstance(name, dict) and "Fn::Sub" in name and isinstance(name["Fn::Sub"], str):
        return name["Fn::Sub"].replace("${AWS::StackName}", stack)
    return name if isinstance(name, str) else None


def test_every_function_exists_with_resolved_settings(
    aws: LocalAws, deployment: Deployment
) -> None:
    lam = aws.client("lambda")
    template = raw_template()
    global_props = template.get("Globals", {}).get("Function", {})
    functions = resources_of("AWS::Serverless::Function")
    assert set(deployment.functions) == set(functions)
    for logical_id, resource in functions.items():
        props = resource["Properties"]
        info = deployment.functions[logical_id]
        expected = _expected_function_name(props, "mailfleet")
        if expected:
            assert info.name == expected
        config = lam.get_function_configuration(FunctionName=info.name)
        assert config["Handler"] == props["Handler"]
        assert config["Timeout"] == props.get("Timeout", global_props.get("Timeout"))
        assert config["MemorySize"] == props.get("MemorySize", global_props.get("MemorySize"))
        assert info.code_dir == (REPO / props["CodeUri"]).resolve()
        assert info.handler_file == info.code_dir / "app.py"
        variables = config["Environment"]["Variables"]
        assert variables == info.environment
        for key, value in variables.items():
            assert isinstance(value, str)
            assert "Ref" not in value and "Fn::" not in value and "${" not in value, key
    env = deployment.functions["ApiFunction"].environment
    assert env["HOSTS_TABLE"] == deployment.resources["HostsTable"].name
    assert env["ADMIN_TOKEN_SECRET"] == deployment.resources["AdminTokenSecret"].arn
    assert env["FANOUT_FUNCTION"] == deployment.functions["FanoutWorkerFunction"].name
    # Functions run in-process: the union of their environments is the process's.
    for key, value in deployment.environment.items():
        assert os.environ[key] == value
    assert os.environ["AWS_ENDPOINT_URL"] == aws.endpoint_url


def test_state_machines_and_schedules_are_listed(aws: LocalAws, deployment: Deployment) -> None:
    template = raw_template()
    machines = {
        k
        for k, v in template["Resources"].items()
        if v["Type"] in ("AWS::Serverless::StateMachine", "AWS::StepFunctions::StateMachine")
    }
    assert set(deployment.state_machines) == machines
    sfn = aws.client("stepfunctions")
    for arn in deployment.state_machines.values():
        assert sfn.describe_state_machine(stateMachineArn=arn)["status"] == "ACTIVE"
    expected = 0
    for resource in template["Resources"].values():
        if resource["Type"] == "AWS::Scheduler::Schedule":
            expected += 1
        elif resource["Type"] == "AWS::Events::Rule" and "ScheduleExpression" in resource.get(
            "Properties", {}
        ):
            expected += len(resource["Properties"].get("Targets", []))
        events = resource.get("Properties", {}).get("Events", {}) or {}
        expected += sum(1 for e in events.values() if e["Type"] in ("Schedule", "ScheduleV2"))
    assert len(deployment.schedules) == expected
    for schedule in deployment.schedules:
        assert schedule.expression.startswith(("rate(", "cron(", "at("))
        assert schedule.target_kind in ("function", "state_machine")


def test_nothing_in_the_template_is_skipped(deployment: Deployment) -> None:
    # Only what the local stack leaves out on purpose, each with its reason.
    unexpected = [s for s in deployment.skipped if s.type not in stack.NOT_EMULATED]
    assert unexpected == [], "resource types the local stack does not create yet"


def test_routes_come_from_the_template(deployment: Deployment) -> None:
    routes = {(r.path, r.method): r for r in deployment.routes}
    assert routes[("/health", "GET")].authorizer is None
    proxy = routes[("/{proxy+}", "ANY")]
    assert proxy.authorizer is not None
    assert proxy.authorizer.function_name == deployment.functions["AuthorizerFunction"].name
    assert proxy.authorizer.identity_header == "Authorization"
    assert proxy.authorizer.reauthorize_every == 0
    assert deployment.api().stage == "prod"


@pytest.mark.skipif(
    not (REPO / "functions/api/app.py").exists(), reason="the API handler is not written yet"
)
def test_smoke_real_handlers_health(api: LocalApi) -> None:
    response = api.request("GET", "/health", token=None)
    assert response.status_code == 200, response.text
    assert api.request("GET", "/whoami", token="not-a-token").status_code == 401


def test_a_mock_aws_elsewhere_wipes_moto_and_the_fixture_redeploys(api: LocalApi) -> None:
    from moto import mock_aws

    with mock_aws():  # what a unit test using moto's decorator does
        pass
    assert not api.aws.is_deployed(api.deployment)
    response = api.request("GET", "/health", token=None)  # request() redeploys first
    assert api.aws.is_deployed(api.deployment)
    if (REPO / "functions/api/app.py").exists():
        assert response.status_code == 200, response.text


# ---------------------------------------------------------------- the front

STUB_AUTHORIZER = """
import json
from pathlib import Path

HERE = Path(__file__).parent


def lambda_handler(event, context):
    calls = HERE / "calls"
    calls.write_text(str(int(calls.read_text()) + 1 if calls.exists() else 1))
    (HERE / "last_event.json").write_text(json.dumps(event))
    token = event["authorizationToken"].removeprefix("Bearer ")
    if token == "boom":
        raise RuntimeError("kaput")
    if token not in ("good", "deny"):
        raise Exception("Unauthorized")
    effect = "Allow" if token == "good" else "Deny"
    resource = "arn:aws:execute-api:*" if token == "good" else event["methodArn"]
    return {
        "principalId": "stub-user",
        "policyDocument": {
            "Version": "2012-10-17",
            "Statement": [{"Action": "execute-api:Invoke", "Effect": effect, "Resource": resource}],
        },
        "context": {"role": "admin", "n": 7, "ok": True},
    }
"""

STUB_API = """
import base64
import json

from aws_lambda_powertools.event_handler import APIGatewayRestResolver

resolver = APIGatewayRestResolver()


@resolver.get("/powertools/items/<item_id>")
def item(item_id):
    authorizer = resolver.current_event.request_context.authorizer
    return {"id": item_id, "principal": authorizer.principal_id, "role": authorizer["role"]}


def lambda_handler(event, context):
    if event["path"].startswith("/powertools/"):
        return resolver.resolve(event, context)
    if event["path"] == "/crash":
        raise ValueError("the handler broke")
    if event["path"] == "/png":
        return {
            "statusCode": 200,
            "headers": {"Content-Type": "image/png"},
            "body": base64.b64encode(bytes(range(256))).decode(),
            "isBase64Encoded": True,
        }
    return {
        "statusCode": 200,
        "headers": {"Content-Type": "application/json", "X-Single": "one"},
        "multiValueHeaders": {"Set-Cookie": ["a=1", "b=2"]},
        "body": json.dumps(event),
    }
"""


GOOD = "good"  # the stub authorizer's one allowed token


class Stub:
    def __init__(self, deployment: Deployment, front: ApiFront, auth_dir: Path) -> None:
        self.deployment = deployment
        self.front = front
        self.auth_dir = auth_dir
        self.session = requests.Session()
        self.session.trust_env = False

    def get(self, path: str, token: str | None = GOOD, **kwargs: Any) -> requests.Response:
        return self.send("GET", path, token, **kwargs)

    def send(
        self, method: str, path: str, token: str | None = GOOD, **kwargs: Any
    ) -> requests.Response:
        headers = dict(kwargs.pop("headers", {}))
        if token is not None:
            headers["Authorization"] = f"Bearer {token}"
        return self.session.request(
            method, self.front.url + path, headers=headers, timeout=30, **kwargs
        )

    def authorizer_calls(self) -> int:
        calls = self.auth_dir / "calls"
        return int(calls.read_text()) if calls.exists() else 0


@pytest.fixture(scope="module")
def stub(aws: LocalAws, tmp_path_factory: pytest.TempPathFactory) -> Any:
    # The real template under another stack name: its own functions, for stubs to stand in.
    deployment = aws.deploy(
        TEMPLATE,
        secret_values={"AdminTokenSecret": "unused"},
        stack_name="mfstub",
        apply_environment=False,
    )
    auth_dir = tmp_path_factory.mktemp("stub_authorizer")
    (auth_dir / "app.py").write_text(textwrap.dedent(STUB_AUTHORIZER))
    api_dir = tmp_path_factory.mktemp("stub_api")
    (api_dir / "app.py").write_text(textwrap.dedent(STUB_API))
    route = next(r for r in deployment.routes if r.authorizer is not None)
    assert route.authorizer is not None and route.authorizer.function_name
    lambda_bridge.register_function(route.authorizer.function_name, auth_dir)
    for r in deployment.routes:
        lambda_bridge.register_function(r.function_name, api_dir)
    with ApiFront(deployment, access_log=False) as front:
        yield Stub(deployment, front, auth_dir)


def test_no_token_is_401_without_calling_the_authorizer(stub: Stub) -> None:
    before = stub.authorizer_calls()
    response = stub.get("/hosts", token=None)
    assert response.status_code == 401
    # The template's GatewayResponses body, not API Gateway's default.
    assert response.json() == {"message": "missing or unknown bearer token"}
    assert response.headers["x-amzn-ErrorType"] == "UnauthorizedException"
    assert stub.authorizer_calls() == before


def test_unknown_token_is_401(stub: Stub) -> None:
    before = stub.authorizer_calls()
    response = stub.get("/hosts", token="who-knows")
    assert response.status_code == 401
    assert response.json() == {"message": "missing or unknown bearer token"}
    assert stub.authorizer_calls() == before + 1  # ReauthorizeEvery 0: asked every time
    stub.get("/hosts", token="who-knows")
    assert stub.authorizer_calls() == before + 2


def test_deny_is_403(stub: Stub) -> None:
    response = stub.get("/hosts", token="deny")
    assert response.status_code == 403
    assert response.json() == {"message": "forbidden"}


def test_authorizer_crash_is_500(stub: Stub) -> None:
    response = stub.get("/hosts", token="boom")
    assert response.status_code == 500
    assert response.json() == {"message": None}


def test_the_authorizer_gets_a_token_event(stub: Stub) -> None:
    assert stub.get("/hosts/h1").status_code == 200
    event = json.loads((stub.auth_dir / "last_event.json").read_text())
    api = stub.deployment.api()
    assert event == {
        "type": "TOKEN",
        "authorizationToken": "Bearer good",
        "methodArn": f"arn:aws:execute-api:us-east-1:123456789012:{api.api_id}/prod/GET/hosts/h1",
    }


def test_health_needs_no_token(stub: Stub) -> None:
    before = stub.authorizer_calls()
    response = stub.get("/health", token=None)
    assert response.status_code == 200
    event = response.json()
    assert event["resource"] == "/health"
    assert event["pathParameters"] is None
    assert "authorizer" not in event["requestContext"]
    assert stub.authorizer_calls() == before


def test_no_route_is_403_missing_authentication_token(stub: Stub) -> None:
    before = stub.authorizer_calls()
    # Methods API Gateway does not know get the same answer, not an HTML 501, even on a
    # resource with ANY.
    for method, path in (("GET", "/"), ("POST", "/health"), ("TRACE", "/whoami"),
                         ("PROPFIND", "/hosts"), ("TRACE", "/health")):
        response = stub.send(method, path, token=None)
        assert response.status_code == 403, (method, path)
        assert response.json() == {"message": "Missing Authentication Token"}
    assert stub.authorizer_calls() == before


def test_the_front_takes_many_clients_at_once(stub: Stub) -> None:
    """64 clients connecting at the same moment are all answered (no connection reset
    from a short listen backlog)."""
    import concurrent.futures
    import socket

    def one(_: int) -> int:
        with socket.create_connection(("127.0.0.1", stub.front.port), timeout=30) as sock:
            sock.sendall(b"GET /health HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
            answer = b""
            while chunk := sock.recv(65536):
                answer += chunk
        return int(answer.split(b" ", 2)[1])

    with concurrent.futures.ThreadPoolExecutor(64) as pool:
        statuses = list(pool.map(one, range(192)))
    assert statuses == [200] * 192


REST_V1_KEYS = {
    "resource",
    "path",
    "httpMethod",
    "headers",
    "multiValueHeaders",
    "queryStringParameters",
    "multiValueQueryStringParameters",
    "pathParameters",
    "stageVariables",
    "requestContext",
    "body",
    "isBase64Encoded",
}
REQUEST_CONTEXT_KEYS = {
    "resourceId",
    "resourcePath",
    "httpMethod",
    "extendedRequestId",
    "requestTime",
    "path",
    "accountId",
    "protocol",
    "stage",
    "domainPrefix",
    "requestTimeEpoch",
    "requestId",
    "identity",
    "domainName",
    "deploymentId",
    "apiId",
    "authorizer",
}


def test_rest_v1_proxy_event_shape(stub: Stub) -> None:
    started_ms = time.time() * 1000
    response = stub.get(
        "/hosts/h1/actions",
        params=[("tag", "role:backend"), ("tag", "site:fra1"), ("limit", "5")],
        headers={"User-Agent": "shape-test/1"},
    )
    assert response.status_code == 200
    event = response.json()
    api = stub.deployment.api()
    assert set(event) == REST_V1_KEYS
    assert event["resource"] == "/{proxy+}"
    assert event["path"] == "/hosts/h1/actions"
    assert event["httpMethod"] == "GET"
    assert event["pathParameters"] == {"proxy": "hosts/h1/actions"}
    assert event["queryStringParameters"] == {"tag": "site:fra1", "limit": "5"}
    assert event["multiValueQueryStringParameters"] == {
        "tag": ["role:backend", "site:fra1"],
        "limit": ["5"],
    }
    assert event["stageVariables"] is None
    assert event["body"] is None and event["isBase64Encoded"] is False
    assert event["headers"]["Authorization"] == "Bearer good"
    assert event["headers"]["X-Forwarded-For"] == "127.0.0.1"
    assert event["multiValueHeaders"]["User-Agent"] == ["shape-test/1"]
    context = event["requestContext"]
    assert set(context) == REQUEST_CONTEXT_KEYS
    assert context["resourcePath"] == "/{proxy+}"
    assert context["path"] == "/prod/hosts/h1/actions"
    assert context["stage"] == "prod"
    assert context["apiId"] == api.api_id
    assert context["accountId"] == "123456789012"
    assert context["requestId"] == response.headers["x-amzn-RequestId"]
    assert started_ms - 1000 <= context["requestTimeEpoch"] <= time.time() * 1000 + 1000
    assert context["identity"]["sourceIp"] == "127.0.0.1"
    assert context["identity"]["userAgent"] == "shape-test/1"
    authorizer = context["authorizer"]
    assert isinstance(authorizer.pop("integrationLatency"), int)
    # API Gateway hands the authorizer's context on as strings.
    assert authorizer == {"principalId": "stub-user", "role": "admin", "n": "7", "ok": "true"}


def test_bodies_text_and_binary(stub: Stub) -> None:
    event = stub.send("POST", "/jobs", json={"action": "who", "n": 1}).json()
    assert event["httpMethod"] == "POST"
    assert json.loads(event["body"]) == {"action": "who", "n": 1}
    assert event["isBase64Encoded"] is False
    raw = bytes(range(256))
    event = stub.send(
        "PUT", "/blobs/b1", data=raw, headers={"Content-Type": "application/octet-stream"}
    ).json()
    assert event["isBase64Encoded"] is True
    assert base64.b64decode(event["body"]) == raw


def test_proxy_response_headers_and_binary_body(stub: Stub) -> None:
    response = stub.get("/hosts")
    assert response.headers["X-Single"] == "one"
    assert response.raw.headers.getlist("Set-Cookie") == ["a=1", "b=2"]
    response = stub.get("/png")
    assert response.headers["Content-Type"] == "image/png"
    assert response.content == bytes(range(256))


def test_powertools_rest_resolver_understands_the_event(stub: Stub) -> None:
    response = stub.get("/powertools/items/42")
    assert response.status_code == 200, response.text
    assert response.json() == {"id": "42", "principal": "stub-user", "role": "admin"}


def test_crashing_handler_is_502(stub: Stub) -> None:
    response = stub.get("/crash")
    assert response.status_code == 502
    assert response.json() == {"message": "Internal server error"}


def test_body_over_10_mb_is_413(stub: Stub) -> None:
    response = stub.send("POST", "/jobs", data=b"x" * (10 * 1024 * 1024 + 1))
    assert response.status_code == 413
    assert response.json() == {"message": "Request Too Long"}


def _route(path: str, method: str = "ANY") -> Route:
    return Route("Api", path, method, "Fn", "fn", None, "E")


def test_route_matching_prefers_the_most_specific_resource() -> None:
    routes = [
        _route("/{proxy+}"),
        _route("/health", "GET"),
        _route("/items/{id}", "GET"),
        _route("/items/special", "GET"),
    ]

    def pick(method: str, path: str) -> tuple[str, dict[str, str]] | None:
        found = match_route(routes, method, path)
        return None if found is None else (found[0].path, found[1])

    assert pick("GET", "/health") == ("/health", {})
    assert pick("GET", "/health/") == ("/health", {})
    assert pick("GET", "/items/7") == ("/items/{id}", {"id": "7"})
    assert pick("GET", "/items/special") == ("/items/special", {})
    assert pick("GET", "/items/7/more") == ("/{proxy+}", {"proxy": "items/7/more"})
    assert pick("DELETE", "/a/b/c") == ("/{proxy+}", {"proxy": "a/b/c"})
    assert pick("GET", "/") is None  # {proxy+} needs at least one segment
    assert pick("POST", "/items/7") is None  # the resource matched; it has no POST


def test_policy_evaluation() -> None:
    arn = "arn:aws:execute-api:us-east-1:123456789012:abc/prod/GET/hosts/h1"

    def policy(effect: str, resource: Any, action: Any = "execute-api:Invoke") -> Any:
        return {"Statement": [{"Effect": effect, "Action": action, "Resource": resource}]}

    assert evaluate_policy(policy("Allow", "arn:aws:execute-api:*:*:abc/prod/*/*"), arn) == "Allow"
    assert (
        evaluate_policy(policy("Allow", "arn:aws:execute-api:*:*:abc/prod/POST/*"), arn) == "None"
    )
    assert evaluate_policy(policy("Allow", [arn], action="execute-api:*"), arn) == "Allow"
    both = {
        "Statement": [
            {"Effect": "Allow", "Action": "execute-api:Invoke", "Resource": "*"},
            {"Effect": "Deny", "Action": "execute-api:Invoke", "Resource": arn},
        ]
    }
    assert evaluate_policy(both, arn) == "Deny"


# ---------------------------------------------------------------- the deployer, more widely

MINI_TEMPLATE = """
AWSTemplateFormatVersion: "2010-09-09"
Transform: AWS::Serverless-2016-10-31
Parameters:
  Flavour:
    Type: String
    Default: plain
    AllowedValues: [plain, fancy]
Conditions:
  IsFancy: !Equals [!Ref Flavour, fancy]
Globals:
  Function:
    Runtime: python3.12
    Timeout: 10
    Environment:
      Variables:
        MINI_BUCKET: !Ref Blobs
        MINI_PARAM: !Ref Setting
Resources:
  Blobs:
    Type: AWS::S3::Bucket
    Properties:
      LifecycleConfiguration:
        Rules:
          - Id: expire-backups
            Status: Enabled
            Prefix: backups/
            ExpirationInDays: 30
  Setting:
    Type: AWS::SSM::Parameter
    Properties:
      Type: String
      Value: !Join [":", [!Ref Flavour, !Select [1, [a, b, c]], !If [IsFancy, big, small]]]
  Worker:
    Type: AWS::Serverless::Function
    Properties:
      FunctionName: !Sub "${AWS::StackName}-worker"
      CodeUri: worker
      Handler: app.handler
      Events:
        Nightly:
          Type: Schedule
          Properties:
            Schedule: cron(0 3 * * ? *)
            Input: '{"sweep": true}'
        Often:
          Type: ScheduleV2
          Properties:
            ScheduleExpression: rate(5 minutes)
        Queue:
          Type: SQS
          Properties:
            Queue: arn:aws:sqs:us-east-1:123456789012:nowhere
  Flow:
    Type: AWS::Serverless::StateMachine
    Properties:
      DefinitionUri: flow.asl.json
      DefinitionSubstitutions:
        WorkerArn: !GetAtt Worker.Arn
        Table: !Sub ["${Prefix}-table", {Prefix: !Ref "AWS::StackName"}]
      Events:
        Hourly:
          Type: ScheduleV2
          Properties:
            ScheduleExpression: rate(1 hour)
  Tick:
    Type: AWS::Scheduler::Schedule
    Properties:
      ScheduleExpression: rate(1 minute)
      FlexibleTimeWindow: {Mode: "OFF"}
      Target:
        Arn: !GetAtt Worker.Arn
        RoleArn: !GetAtt WorkerRole.Arn
        Input: '{"tick": 1}'
  Topic:
    Type: AWS::SNS::Topic
  FancyOnly:
    Type: AWS::SSM::Parameter
    Condition: IsFancy
    Properties:
      Type: String
      Value: fancy
"""

FLOW = {
    "StartAt": "Work",
    "States": {
        "Work": {
            "Type": "Task",
            "Resource": "${WorkerArn}",
            "ResultPath": "$.work",
            "Next": "Done",
        },
        "Done": {
            "Type": "Pass",
            "Result": {"table": "${Table}"},
            "ResultPath": "$.done",
            "End": True,
        },
    },
}


@pytest.fixture(scope="module")
def mini(aws: LocalAws, tmp_path_factory: pytest.TempPathFactory) -> Deployment:
    root = tmp_path_factory.mktemp("mini")
    (root / "template.yaml").write_text(MINI_TEMPLATE)
    (root / "flow.asl.json").write_text(json.dumps(FLOW))
    (root / "worker").mkdir()
    (root / "worker" / "app.py").write_text(
        "import os\n\ndef handler(event, context):\n"
        "    return {'seen': event, 'bucket': os.environ['MINI_BUCKET']}\n"
    )
    return aws.deploy(root / "template.yaml", stack_name="mini")


def test_mini_template_resources(aws: LocalAws, mini: Deployment) -> None:
    bucket = mini.resources["Blobs"].name
    rules = aws.client("s3").get_bucket_lifecycle_configuration(Bucket=bucket)["Rules"]
    assert rules[0]["ID"] == "expire-backups"
    assert rules[0]["Expiration"] == {"Days": 30}
    parameter = aws.client("ssm").get_parameter(Name=mini.resources["Setting"].name)
    assert parameter["Parameter"]["Value"] == "plain:b:small"
    worker = mini.functions["Worker"]
    assert worker.name == "mini-worker"
    assert worker.environment == {
        "MINI_BUCKET": bucket,
        "MINI_PARAM": mini.resources["Setting"].name,
    }
    skipped = {s.logical_id: s for s in mini.skipped}
    assert skipped["Topic"].type == "AWS::SNS::Topic"
    assert "condition IsFancy" in skipped["FancyOnly"].reason
    assert "WorkerQueue" in skipped


def test_mini_template_state_machine_runs_the_worker(aws: LocalAws, mini: Deployment) -> None:
    sfn = aws.client("stepfunctions")
    arn = mini.state_machines["Flow"]
    definition = json.loads(sfn.describe_state_machine(stateMachineArn=arn)["definition"])
    assert definition["States"]["Work"]["Resource"] == mini.functions["Worker"].arn
    execution = sfn.start_execution(stateMachineArn=arn, name="run-1", input='{"x": 1}')
    described = wait_until(lambda: (lambda d: d if d["status"] != "RUNNING" else None)(
        sfn.describe_execution(executionArn=execution["executionArn"])), 30,
        what="the execution finished")
    assert described["status"] == "SUCCEEDED", described
    output = json.loads(described["output"])
    assert output["done"] == {"table": "mini-table"}
    assert output["work"]["seen"] == {"x": 1}
    assert output["work"]["bucket"] == mini.resources["Blobs"].name


def test_mini_template_schedules(mini: Deployment) -> None:
    by_id = {s.logical_id: s for s in mini.schedules}
    assert set(by_id) == {"WorkerNightly", "WorkerOften", "FlowHourly", "Tick"}
    nightly = by_id["WorkerNightly"]
    assert (nightly.source, nightly.expression, nightly.enabled) == (
        "Schedule",
        "cron(0 3 * * ? *)",
        True,
    )
    assert nightly.target_kind == "function" and nightly.target_name == "mini-worker"
    assert nightly.input == '{"sweep": true}'
    assert by_id["WorkerOften"].source == "ScheduleV2"
    assert by_id["FlowHourly"].target_kind == "state_machine"
    assert by_id["FlowHourly"].target_logical_id == "Flow"
    assert by_id["Tick"].source == "AWS::Scheduler::Schedule"
    assert by_id["Tick"].input == '{"tick": 1}'


def test_conflicting_function_environments_fail_loudly(aws: LocalAws, tmp_path: Path) -> None:
    template = """
Transform: AWS::Serverless-2016-10-31
Resources:
  One:
    Type: AWS::Serverless::Function
    Properties: {CodeUri: fn, Handler: app.h, Runtime: python3.12,
                 Environment: {Variables: {SHARED: one}}}
  Two:
    Type: AWS::Serverless::Function
    Properties: {CodeUri: fn, Handler: app.h, Runtime: python3.12,
                 Environment: {Variables: {SHARED: two}}}
"""
    (tmp_path / "template.yaml").write_text(template)
    with pytest.raises(DeployError, match="SHARED"):
        aws.deploy(tmp_path / "template.yaml", stack_name="clash")
