"""POST /inventory/import through the local stack: each host taken or refused on its own,
credentials in Secrets Manager, one audit event per host changed."""

from __future__ import annotations

import json
import uuid
from typing import Any

import pytest

from tests.fixtures.stack import LocalApi


@pytest.fixture
def prefix() -> str:
    return f"imp{uuid.uuid4().hex[:6]}"


def dovecot(host_id: str, **extra: Any) -> dict[str, Any]:
    return {"id": host_id, "kind": "dovecot", "endpoint": "http://127.0.0.1:1",
            "credentials": {"api_key": f"key-of-{host_id}"}, "tags": {"site": "imp"}, **extra}


def audit_of(local_api: LocalApi, host_id: str) -> list[dict[str, Any]]:
    answer = local_api.request("GET", "/audit", params={"host": host_id, "limit": 50})
    assert answer.status_code == 200, answer.text
    return answer.json()["events"]


def test_import_takes_good_hosts_and_lists_the_bad_ones(
    local_api: LocalApi, aws_client: Any, prefix: str
) -> None:
    good = [dovecot(f"{prefix}-{i}") for i in range(30)]
    bad = [
        {"id": f"{prefix}-nokind", "endpoint": "http://127.0.0.1:1"},
        dovecot(f"{prefix}-badurl", endpoint="ftp://x"),
        dovecot("Not An Id"),
        {"kind": "proxy"},
        dovecot(f"{prefix}-0"),  # twice in one import
    ]
    answer = local_api.request("POST", "/inventory/import", json={"hosts": good + bad})
    assert answer.status_code == 200, answer.text
    body = answer.json()
    assert sorted(body["created"]) == sorted(h["id"] for h in good)
    assert body["replaced"] == [] and body["skipped"] == []
    failed = {(f["index"], f["field"]) for f in body["failed"]}
    assert failed == {(30, "kind"), (31, "host"), (32, "id"), (33, "id"), (34, "id")}
    assert body["failed"][0]["id"] == f"{prefix}-nokind"
    assert "key-of" not in answer.text

    shown = local_api.request("GET", f"/hosts/{prefix}-7").json()
    assert shown["credentials_secret"].endswith(f"{prefix}-7") and "credentials" not in shown
    secret = aws_client("secretsmanager").get_secret_value(SecretId=shown["credentials_secret"])
    assert json.loads(secret["SecretString"]) == {"api_key": f"key-of-{prefix}-7"}
    events = audit_of(local_api, f"{prefix}-7")
    assert [e["action"] for e in events] == ["host.create"]
    assert events[0]["params"]["via"] == "inventory.import"
    assert "key-of" not in json.dumps(events)
    assert audit_of(local_api, f"{prefix}-badurl") == []


def test_on_conflict_fail_skip_replace(local_api: LocalApi, prefix: str) -> None:
    first = [dovecot(f"{prefix}-a"), dovecot(f"{prefix}-b")]
    assert local_api.request("POST", "/inventory/import", json={"hosts": first}).json()[
        "created"] == [f"{prefix}-a", f"{prefix}-b"]
    again = [dovecot(f"{prefix}-a", tags={"site": "new"}), dovecot(f"{prefix}-c")]

    failed = local_api.request("POST", "/inventory/import", json={"hosts": again}).json()
    assert failed["created"] == [f"{prefix}-c"]
    assert [(f["id"], f["field"]) for f in failed["failed"]] == [(f"{prefix}-a", "id")]

    again[1] = dovecot(f"{prefix}-d")
    skipped = local_api.request("POST", "/inventory/import",
                                json={"hosts": again, "on_conflict": "skip"}).json()
    assert skipped == {"created": [f"{prefix}-d"], "replaced": [], "skipped": [f"{prefix}-a"],
                       "failed": []}
    assert local_api.request("GET", f"/hosts/{prefix}-a").json()["tags"] == {"site": "imp"}

    again[1] = dovecot(f"{prefix}-e")
    replaced = local_api.request("POST", "/inventory/import",
                                 json={"hosts": again, "on_conflict": "replace"}).json()
    assert replaced["replaced"] == [f"{prefix}-a"] and replaced["created"] == [f"{prefix}-e"]
    host = local_api.request("GET", f"/hosts/{prefix}-a").json()
    assert host["tags"] == {"site": "new"}
    assert [e["action"] for e in audit_of(local_api, f"{prefix}-a")] == [
        "host.replace", "host.create"]


def test_a_host_whose_secret_cannot_be_stored_is_put_back(
    local_api: LocalApi, prefix: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A Secrets Manager failure (injected) for two hosts: the new one is removed again,
    the replaced one gets its previous item back, each undo with its own event; the rest
    go on."""
    from mailfleet.store import secrets

    created = local_api.request("POST", "/inventory/import", json={
        "hosts": [dovecot(f"{prefix}-old")]}).json()
    assert created["created"] == [f"{prefix}-old"]
    real = secrets.create_for_host

    def flaky(host_id: str, credentials: Any, secrets_prefix: str) -> str:
        if host_id in (f"{prefix}-new", f"{prefix}-old"):
            raise RuntimeError("injected: Secrets Manager unavailable")
        return real(host_id, credentials, secrets_prefix)

    monkeypatch.setattr(secrets, "create_for_host", flaky)
    external = dovecot(f"{prefix}-ext")
    external.pop("credentials")
    external["credentials_secret"] = f"missing-{prefix}"
    answer = local_api.request("POST", "/inventory/import", json={
        "on_conflict": "replace",
        "hosts": [dovecot(f"{prefix}-new"), dovecot(f"{prefix}-old", tags={"site": "moved"}),
                  dovecot(f"{prefix}-fine"), external]}).json()
    assert answer["created"] == [f"{prefix}-fine"] and answer["replaced"] == []
    assert [(f["id"], f["field"]) for f in answer["failed"]] == [
        (f"{prefix}-new", "credentials"), (f"{prefix}-old", "credentials"),
        (f"{prefix}-ext", "credentials_secret")]
    assert "injected" not in json.dumps(answer)
    assert local_api.request("GET", f"/hosts/{prefix}-new").status_code == 404
    assert local_api.request("GET", f"/hosts/{prefix}-old").json()["tags"] == {"site": "imp"}
    # Each item was written with its event, then put back on the record (docs/audit.md).
    assert [(e["action"], e["outcome"]) for e in audit_of(local_api, f"{prefix}-new")] == [
        ("host.delete", "rolled_back"), ("host.create", "ok")]
    assert [(e["action"], e["outcome"]) for e in audit_of(local_api, f"{prefix}-old")] == [
        ("host.replace", "rolled_back"), ("host.replace", "ok"), ("host.create", "ok")]
    assert "injected" not in json.dumps(audit_of(local_api, f"{prefix}-old"))


def test_import_limits_and_roles(local_api: LocalApi) -> None:
    assert local_api.request("POST", "/inventory/import", json={"hosts": []}).status_code == 422
    too_many = [dovecot(f"many-{i}") for i in range(1001)]
    answer = local_api.request("POST", "/inventory/import", json={"hosts": too_many})
    assert answer.status_code == 422 and "hosts" in answer.text
    answer = local_api.request("POST", "/inventory/import",
                               json={"hosts": [dovecot("x")], "on_conflict": "merge"})
    assert answer.status_code == 422 and "on_conflict" in answer.text
    viewer = local_api.request("POST", "/tokens", json={"role": "viewer", "name": "imp-viewer"})
    answer = local_api.request("POST", "/inventory/import", token=viewer.json()["token"],
                               json={"hosts": [dovecot("by-viewer")]})
    assert answer.status_code == 403
    assert local_api.request("GET", "/hosts/by-viewer").status_code == 404


def test_imported_hosts_keep_credentials_bound_to_their_host(
    local_api: LocalApi, prefix: str
) -> None:
    """As for POST /hosts: another host's secret only when the sharing is named, and never a
    secret outside this stack's host prefix."""
    owner = local_api.request("POST", "/inventory/import", json={
        "hosts": [dovecot(f"{prefix}-owner")]}).json()
    assert owner["created"] == [f"{prefix}-owner"]
    theirs = local_api.request("GET", f"/hosts/{prefix}-owner").json()["credentials_secret"]

    def naming(host_id: str, secret: str, **extra: Any) -> dict[str, Any]:
        body = dovecot(host_id, credentials_secret=secret, **extra)
        body.pop("credentials")
        return body

    answer = local_api.request("POST", "/inventory/import", json={"hosts": [
        naming(f"{prefix}-harvest", theirs),
        naming(f"{prefix}-elsewhere", "some-other-app/credentials"),
        naming(f"{prefix}-shared", theirs, shares_credentials_with=f"{prefix}-owner"),
    ]}).json()
    assert answer["created"] == [f"{prefix}-shared"], answer
    failed = {f["id"]: f for f in answer["failed"]}
    assert failed[f"{prefix}-harvest"]["field"] == "credentials_secret"
    assert f"{prefix}-owner" in failed[f"{prefix}-harvest"]["reason"]
    assert failed[f"{prefix}-elsewhere"]["field"] == "credentials_secret"
    assert "prefix" in failed[f"{prefix}-elsewhere"]["reason"]
    assert local_api.request("GET", f"/hosts/{prefix}-harvest").status_code == 404
