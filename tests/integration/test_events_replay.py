"""Every sample in events/ replayed against its handler, in the deployed local stack.

The samples are what `sam local invoke -e` would take; here they run through the same
in-process Lambda bridge the local API front uses."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from mailfleet import aws
from mailfleet_local import lambda_bridge

EVENTS = Path(__file__).resolve().parents[2] / "events"


def load(name: str) -> dict[str, Any]:
    return json.loads((EVENTS / name).read_text())


def invoke(local_api: Any, logical_id: str, event: dict[str, Any]) -> Any:
    local_api.ensure_deployed()
    name = local_api.deployment.functions[logical_id].name
    return lambda_bridge.invoke_local(name, event)


def body(result: dict[str, Any]) -> Any:
    return json.loads(result["body"]) if result.get("body") else None


def test_every_event_file_is_valid_json_without_credentials() -> None:
    files = sorted(EVENTS.rglob("*.json"))
    assert files, "events/ is empty"
    for path in files:
        text = path.read_text()
        json.loads(text)
        # Only placeholders may stand where a token would.
        for line in text.splitlines():
            if "Bearer" in line:
                assert "REPLACE" in line, f"{path}: a bearer token that is not a placeholder"


@pytest.fixture(scope="module")
def example_host(local_api: Any) -> str:
    """The host and the secret the API samples refer to."""
    local_api.ensure_deployed()
    sm = aws.client("secretsmanager")
    try:
        sm.create_secret(Name="mailfleet/hosts/events-example",
                         SecretString=json.dumps({"api_key": "events-example-key"}))
    except sm.exceptions.ResourceExistsException:
        pass
    return "dc-events-1"


def test_api_events(local_api: Any, example_host: str) -> None:
    assert body(invoke(local_api, "ApiFunction", load("api/health.json"))) == {"status": "ok"}
    me = body(invoke(local_api, "ApiFunction", load("api/whoami.json")))
    assert me == {"principal": "bootstrap-admin", "role": "admin"}

    created = invoke(local_api, "ApiFunction", load("api/create-host.json"))
    assert created["statusCode"] in (201, 409), created
    hosts = body(invoke(local_api, "ApiFunction", load("api/list-hosts.json")))
    assert "hosts" in hosts

    dry = invoke(local_api, "ApiFunction", load("api/create-job-dry-run.json"))
    assert dry["statusCode"] == 200, dry
    assert body(dry)["dry_run"] is True and body(dry)["total"] == 1

    missing = invoke(local_api, "ApiFunction", load("api/get-job.json"))
    assert missing["statusCode"] == 404
    assert "events" in body(invoke(local_api, "ApiFunction", load("api/audit.json")))
    assert body(invoke(local_api, "ApiFunction", load("api/audit-verify.json")))["ok"] is True


def test_authorizer_event_refuses_the_placeholder_token(local_api: Any) -> None:
    with pytest.raises(Exception, match="Unauthorized"):
        invoke(local_api, "AuthorizerFunction", load("authorizer/token.json"))


def test_authorizer_event_with_a_real_token_allows(local_api: Any) -> None:
    event = load("authorizer/token.json")
    event["authorizationToken"] = f"Bearer {local_api.admin_token}"
    policy = invoke(local_api, "AuthorizerFunction", event)
    assert policy["policyDocument"]["Statement"][0]["Effect"] == "Allow"
    assert policy["context"]["role"] == "admin"


def test_fanout_worker_event_for_an_unknown_job_is_harmless(local_api: Any) -> None:
    outcome = invoke(local_api, "FanoutWorkerFunction", load("fanout_worker/run-job.json"))
    assert outcome["status"] == "UNKNOWN"
