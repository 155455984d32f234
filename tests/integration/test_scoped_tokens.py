"""Scoped and expiring tokens, at every route that reads or acts on hosts: a scoped token
sees, targets and cuts over only hosts in its scope; anything else is 404 for reads and
403 for actions, as if the host were not there."""

from __future__ import annotations

import uuid
from typing import Any

import pytest

from tests.fixtures.stack import LocalApi


class Fleet:
    def __init__(self, api: LocalApi) -> None:
        self.api = api
        self.site = f"in{uuid.uuid4().hex[:6]}"
        self.other = f"out{uuid.uuid4().hex[:6]}"
        p = self.site
        self.dc_in, self.px_in = f"{p}-dc", f"{p}-px"
        self.dc_out, self.px_out = f"{self.other}-dc", f"{self.other}-px"
        hosts = [
            host(self.dc_in, "dovecot", self.site), host(self.px_in, "proxy", self.site),
            host(self.dc_out, "dovecot", self.other), host(self.px_out, "proxy", self.other),
        ]
        answer = api.request("POST", "/inventory/import", json={"hosts": hosts})
        assert len(answer.json()["created"]) == 4, answer.text
        self.admin = self.mint("admin", {"tags": {"site": self.site}})
        self.operator = self.mint("operator", {"tags": {"site": self.site}})
        self.viewer = self.mint("viewer", {"kind": "proxy", "tags": {"site": self.site}})

    def mint(self, role: str, scope: dict[str, Any] | None, **extra: Any) -> str:
        answer = self.api.request("POST", "/tokens", json={
            "role": role, "name": f"scoped-{role}-{self.site}", "scope": scope, **extra})
        assert answer.status_code == 201, answer.text
        assert answer.json()["scope"] == ({"kind": None, "tags": {}} | scope if scope else None)
        return str(answer.json()["token"])

    def as_(self, token: str, method: str, path: str, **kwargs: Any) -> Any:
        return self.api.request(method, path, token=token, **kwargs)


def host(host_id: str, kind: str, site: str) -> dict[str, Any]:
    scheme = "http" if kind == "dovecot" else "https"
    creds = {"api_key": "k"} if kind == "dovecot" else {"token": "t"}
    return {"id": host_id, "kind": kind, "endpoint": f"{scheme}://127.0.0.1:9",
            "credentials": creds, "tags": {"site": site}}


@pytest.fixture(scope="module")
def fleet(local_api: LocalApi) -> Fleet:
    from tests.fixtures.maintenance import ensure_fleet_routes

    ensure_fleet_routes(local_api)
    return Fleet(local_api)


def test_host_reads(fleet: Fleet) -> None:
    listed = fleet.as_(fleet.admin, "GET", "/hosts").json()["hosts"]
    assert sorted(h["id"] for h in listed) == sorted([fleet.dc_in, fleet.px_in])
    other = fleet.as_(fleet.admin, "GET", "/hosts", params={"tag": f"site:{fleet.other}"})
    assert other.json()["hosts"] == []
    by_kind = fleet.as_(fleet.viewer, "GET", "/hosts", params={"kind": "dovecot"})
    assert by_kind.json()["hosts"] == []
    assert fleet.as_(fleet.viewer, "GET", "/hosts").json()["hosts"][0]["id"] == fleet.px_in
    for path in (f"/hosts/{fleet.dc_out}", f"/hosts/{fleet.dc_out}/actions",
                 f"/hosts/{fleet.dc_in}"):
        answer = fleet.as_(fleet.viewer, "GET", path)
        assert answer.status_code == 404, (path, answer.text)
        assert answer.json()["message"] == f"host {path.split('/')[2]!r} not found"
    assert fleet.as_(fleet.admin, "GET", f"/hosts/{fleet.dc_in}").status_code == 200
    assert fleet.as_(fleet.viewer, "GET", f"/hosts/{fleet.px_in}/actions").status_code == 200


def test_host_changes(fleet: Fleet) -> None:
    admin = fleet.admin
    assert fleet.as_(admin, "PATCH", f"/hosts/{fleet.dc_out}",
                     json={"maintenance": True}).status_code == 403
    assert fleet.as_(admin, "DELETE", f"/hosts/{fleet.dc_out}").status_code == 403
    moved = fleet.as_(admin, "PATCH", f"/hosts/{fleet.dc_in}", json={"tags": {"site": "x"}})
    assert moved.status_code == 403 and "scope" in moved.json()["message"]
    assert fleet.as_(admin, "PATCH", f"/hosts/{fleet.dc_in}",
                     json={"max_concurrency": 3}).status_code == 200
    outside = host(f"{fleet.other}-new", "dovecot", fleet.other)
    assert fleet.as_(admin, "POST", "/hosts", json=outside).status_code == 403
    answer = fleet.as_(admin, "POST", "/inventory/import", json={
        "hosts": [outside, host(f"{fleet.site}-new", "dovecot", fleet.site),
                  host(fleet.dc_out, "dovecot", fleet.site)],
        "on_conflict": "replace"}).json()
    assert answer["created"] == [f"{fleet.site}-new"]
    assert [(f["index"], f["field"]) for f in answer["failed"]] == [(0, "scope"), (2, "id")]
    assert fleet.api.request("GET", f"/hosts/{fleet.dc_out}").json()["tags"] == {
        "site": fleet.other}


def test_tokens(fleet: Fleet) -> None:
    answer = fleet.as_(fleet.admin, "POST", "/tokens", json={"role": "viewer", "name": "n"})
    assert answer.status_code == 403 and "scope" in answer.json()["message"]
    assert fleet.as_(fleet.admin, "DELETE", "/tokens/0123456789abcdef").status_code == 403
    bad = fleet.api.request("POST", "/tokens", json={"role": "viewer", "name": "n", "scope": {}})
    assert bad.status_code == 422
    bad = fleet.api.request("POST", "/tokens", json={"role": "viewer", "name": "n",
                                                     "expires_in_days": 0})
    assert bad.status_code == 422 and "expires_in_days" in bad.text


def test_an_expired_token_is_401(fleet: Fleet, aws_client: Any) -> None:
    answer = fleet.api.request("POST", "/tokens", json={
        "role": "viewer", "name": "short-lived", "expires_in_days": 1}).json()
    assert answer["expires_at"] > answer["created_at"]
    assert fleet.as_(answer["token"], "GET", "/whoami").status_code == 200
    # A day later: the stored expiry is moved into the past.
    table = next(t for t in aws_client("dynamodb").list_tables()["TableNames"] if "oken" in t)
    aws_client("dynamodb").update_item(
        TableName=table, Key={"token_id": {"S": answer["token_id"]}},
        UpdateExpression="SET expires_at = :t",
        ExpressionAttributeValues={":t": {"S": "2020-01-01T00:00:00.000000Z"}})
    assert fleet.as_(answer["token"], "GET", "/whoami").status_code == 401


def test_jobs(fleet: Fleet) -> None:
    op = fleet.operator
    refused = fleet.as_(op, "POST", "/jobs", json={
        "action": "who", "targets": {"hosts": [fleet.dc_in, fleet.dc_out]}, "dry_run": True})
    assert refused.status_code == 403 and fleet.dc_out in refused.json()["message"]
    by_tag = fleet.as_(op, "POST", "/jobs", json={
        "action": "who", "targets": {"kind": "dovecot"}, "dry_run": True})
    assert by_tag.status_code == 200, by_tag.text
    targets = [t["host"] for t in by_tag.json()["targets"]]
    assert fleet.dc_in in targets and all(t.startswith(fleet.site) for t in targets)
    other_site = fleet.as_(op, "POST", "/jobs", json={
        "action": "who", "targets": {"kind": "dovecot", "tags": {"site": fleet.other}},
        "dry_run": True})
    assert other_site.status_code == 403
    mine = fleet.as_(op, "POST", "/jobs", json={
        "action": "health", "targets": {"hosts": [fleet.px_in]}, "timeout_seconds": 2})
    assert mine.status_code == 202, mine.text
    theirs = fleet.api.request("POST", "/jobs", json={
        "action": "health", "targets": {"hosts": [fleet.px_out]}, "timeout_seconds": 2})
    assert theirs.status_code == 202
    theirs_id = theirs.json()["job_id"]
    assert fleet.as_(op, "GET", f"/jobs/{theirs_id}").status_code == 404
    assert fleet.as_(op, "GET", f"/jobs/{mine.json()['job_id']}").status_code == 200
    listed = {j["job_id"] for j in fleet.as_(op, "GET", "/jobs?limit=100").json()["jobs"]}
    assert mine.json()["job_id"] in listed and theirs_id not in listed
    assert fleet.as_(op, "POST", f"/jobs/{theirs_id}/cancel").status_code == 403


def test_cutovers(fleet: Fleet) -> None:
    op = fleet.operator
    body = {"accounts": ["a@example.org"], "destination": "new", "dry_run": True}
    outside = fleet.as_(op, "POST", "/cutovers", json=body | {"proxies": {"hosts": [
        fleet.px_out]}})
    assert outside.status_code == 403
    by_tag = fleet.as_(op, "POST", "/cutovers", json=body | {"proxies": {"tags": {
        "site": fleet.other}}})
    assert by_tag.status_code == 403
    ok = fleet.as_(op, "POST", "/cutovers", json=body | {"proxies": {"tags": {"role": "x"}}})
    assert ok.status_code == 422  # narrowed to the scope: no proxy of the site has role x
    ok = fleet.as_(op, "POST", "/cutovers", json=body | {"proxies": {"hosts": [fleet.px_in]}})
    assert ok.status_code == 200, ok.text
    theirs = fleet.api.request("POST", "/cutovers", json=body | {"proxies": {"hosts": [
        fleet.px_out]}}).json()["cutover_id"]
    assert fleet.as_(op, "GET", f"/cutovers/{theirs}").status_code == 404
    assert fleet.as_(op, "GET", f"/cutovers/{ok.json()['cutover_id']}").status_code == 200
    listed = {c["cutover_id"] for c in fleet.as_(op, "GET", "/cutovers?limit=100").json()[
        "cutovers"]}
    assert ok.json()["cutover_id"] in listed and theirs not in listed
    assert fleet.as_(op, "POST", f"/cutovers/{theirs}/rollback").status_code == 403


def test_fleet_health_and_sweep(fleet: Fleet) -> None:
    view = fleet.as_(fleet.viewer, "GET", "/fleet/health").json()
    assert sum(sum(c.values()) for c in view["counts"].values()) == 1
    assert view["counts"]["proxy"]["unknown"] == 1
    assert fleet.as_(fleet.operator, "POST", "/fleet/sweep",
                     json={"tags": {"site": fleet.other}}).status_code == 403
    sweep = fleet.as_(fleet.operator, "POST", "/fleet/sweep", json={"kind": "proxy"})
    assert sweep.status_code == 202 and sweep.json()["total"] == 1


def test_schedules(fleet: Fleet) -> None:
    admin = fleet.admin
    job = {"action": "destinations.list", "targets": {"kind": "proxy"}}
    name = f"sc-{fleet.site}"
    made = fleet.as_(admin, "POST", "/schedules", json={
        "name": name, "expression": "rate(1 hour)", "paused": True, "job": job})
    assert made.status_code == 201, made.text
    assert made.json()["job"]["targets"] == {"kind": "proxy", "tags": {"site": fleet.site}}
    outside = fleet.as_(admin, "POST", "/schedules", json={
        "name": f"{name}-x", "expression": "rate(1 hour)",
        "job": job | {"targets": {"hosts": [fleet.px_out]}}})
    assert outside.status_code == 403
    theirs = f"sc-{fleet.other}"
    assert fleet.api.request("POST", "/schedules", json={
        "name": theirs, "expression": "rate(1 hour)", "paused": True,
        "job": job | {"targets": {"kind": "proxy", "tags": {"site": fleet.other}}}}
    ).status_code == 201
    assert fleet.as_(admin, "GET", f"/schedules/{theirs}").status_code == 404
    assert fleet.as_(admin, "GET", f"/schedules/{name}").status_code == 200
    names = {s["name"] for s in fleet.as_(admin, "GET", "/schedules?limit=100").json()[
        "schedules"]}
    assert name in names and theirs not in names
    assert fleet.as_(admin, "POST", f"/schedules/{theirs}/resume").status_code == 403
    assert fleet.as_(admin, "DELETE", f"/schedules/{theirs}").status_code == 403
    assert fleet.as_(admin, "DELETE", f"/schedules/{name}").status_code == 204
    assert fleet.api.request("DELETE", f"/schedules/{theirs}").status_code == 204


def test_audit_shows_only_hosts_in_scope(fleet: Fleet) -> None:
    events = fleet.as_(fleet.admin, "GET", "/audit?limit=1000").json()["events"]
    targets = {e["target"] for e in events}
    assert fleet.dc_in in targets and fleet.dc_out not in targets
    assert fleet.as_(fleet.admin, "GET", "/audit", params={"host": fleet.dc_out}).json()[
        "events"] == []


def test_migrations(fleet: Fleet) -> None:
    op = fleet.operator
    second = f"{fleet.site}-dc2"
    added = fleet.api.request("POST", "/hosts", json=host(second, "dovecot", fleet.site))
    assert added.status_code == 201, added.text
    routing = {"strategy": "proxy", "proxies": {"hosts": [fleet.px_in]}, "destination": "new"}
    body = {"accounts": ["a@example.org"], "routing": routing, "dry_run": True}
    for source, destination in ((fleet.dc_in, fleet.dc_out), (fleet.dc_out, fleet.dc_in)):
        refused = fleet.as_(op, "POST", "/migrations",
                            json=body | {"source": source, "destination": destination})
        assert refused.status_code == 403, refused.text
        assert fleet.dc_out in refused.json()["message"]
    other_proxy = fleet.as_(op, "POST", "/migrations", json=body | {
        "source": fleet.dc_in, "destination": second,
        "routing": routing | {"proxies": {"hosts": [fleet.px_out]}}})
    assert other_proxy.status_code == 403
    ok = fleet.as_(op, "POST", "/migrations",
                   json=body | {"source": fleet.dc_in, "destination": second})
    assert ok.status_code == 200, ok.text
    theirs = fleet.api.request("POST", "/migrations", json=body | {
        "source": fleet.dc_in, "destination": fleet.dc_out}).json()["migration_id"]
    assert fleet.as_(op, "GET", f"/migrations/{theirs}").status_code == 404
    assert fleet.as_(op, "GET", f"/migrations/{ok.json()['migration_id']}").status_code == 200
    listed = {m["migration_id"] for m in fleet.as_(op, "GET", "/migrations?limit=100").json()[
        "migrations"]}
    assert ok.json()["migration_id"] in listed and theirs not in listed
    assert fleet.as_(op, "POST", f"/migrations/{theirs}/rollback").status_code == 403
