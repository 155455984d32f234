"""End to end through the local API Gateway front: tokens, hosts, jobs on real Dovecot,
the audit trail. Everything an operator does with curl, checked as they would see it."""

from __future__ import annotations

import json
import time
import uuid
from typing import Any

import pytest

from mailfleet_local.peers.dovecot import DovecotInstance
from tests.fixtures.dovecot import host_body
from tests.waiting import wait_until

pytestmark = pytest.mark.dovecot


def uid(prefix: str = "t") -> str:
    return f"{prefix}-{uuid.uuid4().hex[:10]}"


@pytest.fixture
def fleet(local_api: Any, dovecot_hosts: list[DovecotInstance]) -> dict[str, Any]:
    """Three real Dovecot hosts registered under a fresh tag."""
    site = uid("site")
    ids = []
    for n, inst in enumerate(dovecot_hosts):
        host_id = uid(f"dc{n}")
        body = host_body(inst, host_id, tags={"site": site, "role": "backend"},
                         auth="api_key" if n % 2 == 0 else "password")
        answer = local_api.request("POST", "/hosts", json=body)
        assert answer.status_code == 201, answer.text
        ids.append(host_id)
    return {"site": site, "ids": ids, "instances": dovecot_hosts}


def job(local_api: Any, body: dict[str, Any], wait: float = 20, **kw: Any) -> dict[str, Any]:
    answer = local_api.request("POST", f"/jobs?wait={wait}", json=body, **kw)
    assert answer.status_code in (200, 202), answer.text
    data = answer.json()
    if data.get("results") is None:
        data = wait_for(local_api, data["job_id"])
    return data


def wait_for(local_api: Any, job_id: str, timeout: float = 30) -> dict[str, Any]:
    def final() -> dict[str, Any] | None:
        data = local_api.request("GET", f"/jobs/{job_id}").json()
        return data if data["status"] not in ("PENDING", "RUNNING") else None
    return wait_until(final, timeout, interval=0.1, what=f"job {job_id} final")


def test_who_sees_a_real_imap_session_and_kick_ends_it(local_api: Any, fleet: dict[str, Any]
                                                       ) -> None:
    inst = fleet["instances"][0]
    imap = inst.imap("alice")
    try:
        seen = job(local_api, {"action": "who", "targets": {"hosts": [fleet["ids"][0]]}})
        assert seen["status"] == "SUCCEEDED", seen
        rows = seen["results"][0]["output"]
        assert any(row["username"] == "alice" for row in rows)

        kicked = job(local_api, {"action": "kick", "params": {"mask": ["alice"]},
                                 "targets": {"hosts": [fleet["ids"][0]]}})
        assert kicked["status"] == "SUCCEEDED", kicked
        assert kicked["results"][0]["output"] == [{"result": "alice"}]
        with pytest.raises((imaplib_abort(), OSError)):
            for _ in range(20):
                imap.noop()
                time.sleep(0.1)
    finally:
        try:
            imap.logout()
        except Exception:  # noqa: S110 - the server already closed it
            pass


def imaplib_abort() -> type[Exception]:
    import imaplib

    return imaplib.IMAP4.abort


def test_job_on_a_tag_reads_back_and_is_audited(local_api: Any, fleet: dict[str, Any]) -> None:
    answer = local_api.request("POST", "/jobs", json={
        "action": "statsDump", "targets": {"kind": "dovecot", "tags": {"site": fleet["site"]}},
        "max_concurrency": "50%"})
    assert answer.status_code == 202, answer.text
    accepted = answer.json()
    assert accepted["status"] == "PENDING" and accepted["total"] == 3
    done = wait_for(local_api, accepted["job_id"])
    assert done["status"] == "SUCCEEDED"
    assert done["counts"] == {"SUCCEEDED": 3}
    assert sorted(r["host"] for r in done["results"]) == sorted(fleet["ids"])
    for result in done["results"]:
        assert result["attempts"] == 1 and result["duration_ms"] >= 0
        assert isinstance(result["output"], list)
    assert done["created_by"] == "bootstrap-admin" and done["finished_at"]

    listed = local_api.request("GET", "/jobs", params={"status": "SUCCEEDED", "limit": 50})
    assert accepted["job_id"] in [j["job_id"] for j in listed.json()["jobs"]]

    events = local_api.request("GET", "/audit", params={"job_id": accepted["job_id"]}).json()
    actions = sorted(e["action"] for e in events["events"])
    assert actions == ["job.end", "job.start"]
    verify = local_api.request("GET", "/audit/verify").json()
    assert verify["ok"] is True and verify["checked"] >= 5


def test_reload_quota_and_command_failures(local_api: Any, fleet: dict[str, Any]) -> None:
    target = {"hosts": [fleet["ids"][0]]}
    assert job(local_api, {"action": "reload", "targets": target})["status"] == "SUCCEEDED"
    quota = job(local_api, {"action": "quotaGet", "params": {"user": "alice"},
                            "targets": target})
    assert quota["status"] == "SUCCEEDED"
    assert quota["results"][0]["output"][0]["type"] in ("STORAGE", "MESSAGE")

    missing_user = job(local_api, {"action": "quotaGet", "params": {"user": "nobody-here"},
                                   "targets": target})
    assert missing_user["status"] == "FAILED"
    assert missing_user["results"][0]["error"]["type"] == "exitCode"
    assert missing_user["results"][0]["error"]["code"] == 67

    no_session = job(local_api, {"action": "kick", "params": {"mask": ["carol"]},
                                 "targets": target})
    assert no_session["results"][0]["error"]["code"] == 68


def test_unknown_command_and_parameter_are_422_before_any_host_is_contacted(
    local_api: Any, fleet: dict[str, Any]
) -> None:
    target = {"hosts": fleet["ids"]}
    unknown = local_api.request("POST", "/jobs", json={"action": "noSuchCommand",
                                                       "targets": target})
    assert unknown.status_code == 422
    assert unknown.json()["errors"][0]["field"] == "action"
    bad_param = local_api.request("POST", "/jobs", json={
        "action": "who", "params": {"bogus": 1}, "targets": target})
    assert bad_param.status_code == 422
    assert bad_param.json()["errors"][0]["field"] == "params.bogus"
    too_long = local_api.request("POST", "/jobs", json={
        "action": "who", "timeout_seconds": 900, "targets": target})
    assert too_long.status_code == 422
    assert too_long.json()["errors"][0]["field"] == "timeout_seconds"


def test_a_host_that_is_down_fails_alone_and_the_job_ends(local_api: Any,
                                                          fleet: dict[str, Any]) -> None:
    dead = uid("dead")
    body = host_body(fleet["instances"][0], dead, tags={"site": fleet["site"]})
    body["endpoint"] = "http://127.0.0.1:9"  # discard port: nothing listens
    assert local_api.request("POST", "/hosts", json=body).status_code == 201
    done = job(local_api, {"action": "who", "timeout_seconds": 5,
                           "targets": {"hosts": [*fleet["ids"], dead]}})
    assert done["status"] == "PARTIAL"
    by_host = {r["host"]: r for r in done["results"]}
    assert by_host[dead]["status"] == "FAILED"
    assert by_host[dead]["error"]["type"] == "connection"
    assert all(by_host[h]["status"] == "SUCCEEDED" for h in fleet["ids"])


def test_wrong_credentials_are_an_auth_failure(local_api: Any,
                                               dovecot_hosts: list[DovecotInstance]) -> None:
    host_id = uid("badauth")
    body = host_body(dovecot_hosts[1], host_id)
    body["credentials"] = {"api_key": "not-the-key"}
    assert local_api.request("POST", "/hosts", json=body).status_code == 201
    done = job(local_api, {"action": "who", "targets": {"hosts": [host_id]},
                           "timeout_seconds": 5})
    result = done["results"][0]
    assert result["status"] == "FAILED" and result["error"]["type"] == "auth"
    # Refused already when asked for its command list: the command itself is never sent.
    assert result["attempts"] <= 1


def test_max_errors_and_dry_run(local_api: Any, fleet: dict[str, Any]) -> None:
    dead = [uid("down") for _ in range(4)]
    for host_id in dead:
        body = host_body(fleet["instances"][0], host_id)
        body["endpoint"] = "http://127.0.0.1:9"
        assert local_api.request("POST", "/hosts", json=body).status_code == 201
    done = job(local_api, {"action": "who", "targets": {"hosts": dead}, "max_concurrency": 1,
                           "max_errors": 2})
    counts = done["counts"]
    assert counts == {"FAILED": 2, "SKIPPED": 2}, done

    dry = local_api.request("POST", "/jobs", json={
        "action": "who", "targets": {"kind": "dovecot", "tags": {"site": fleet["site"]}},
        "dry_run": True})
    assert dry.status_code == 200
    assert dry.json()["dry_run"] is True and dry.json()["total"] == 3
    view = local_api.request("GET", f"/jobs/{dry.json()['job_id']}").json()
    assert {r["status"] for r in view["results"]} == {"SKIPPED"}


def test_idempotency_key(local_api: Any, fleet: dict[str, Any]) -> None:
    body = {"action": "who", "targets": {"hosts": fleet["ids"][:1]}}
    key = {"Idempotency-Key": uid("key")}
    first = local_api.request("POST", "/jobs", json=body, headers=key)
    second = local_api.request("POST", "/jobs", json=body, headers=key)
    assert first.status_code == second.status_code == 202
    assert first.json()["job_id"] == second.json()["job_id"]
    other = local_api.request("POST", "/jobs", json={**body, "action": "statsDump"},
                              headers=key)
    assert other.status_code == 409


def test_cancel_a_job(local_api: Any, fleet: dict[str, Any]) -> None:
    import socket

    slow = [uid("slow") for _ in range(6)]
    # A loopback port that accepts connections and never answers: hosts that hang.
    sink = socket.socket()
    sink.bind(("127.0.0.1", 0))
    sink.listen(50)
    try:
        for host_id in slow:
            body = host_body(fleet["instances"][0], host_id)
            body["endpoint"] = f"http://127.0.0.1:{sink.getsockname()[1]}"
            assert local_api.request("POST", "/hosts", json=body).status_code == 201
        accepted = local_api.request("POST", "/jobs", json={
            "action": "who", "targets": {"hosts": slow}, "max_concurrency": 1,
            "timeout_seconds": 2}).json()
        wait_until(lambda: local_api.request("GET", f"/jobs/{accepted['job_id']}"
                                             ).json()["status"] == "RUNNING", 10,
                   what="the job under way")
        cancel = local_api.request("POST", f"/jobs/{accepted['job_id']}/cancel")
        assert cancel.status_code == 202
        done = wait_for(local_api, accepted["job_id"])
        assert done["status"] == "CANCELLED"
        assert done["counts"].get("SKIPPED", 0) >= 4
        assert len(done["results"]) == 6
    finally:
        sink.close()


# ---------------------------------------------------------------------- status codes
def test_401_403_404_409_422(local_api: Any, dovecot_hosts: list[DovecotInstance]) -> None:
    assert local_api.request("GET", "/whoami", token=None).status_code == 401
    assert local_api.request("GET", "/whoami", token="mft_nope_nope").status_code == 401
    assert local_api.request("GET", "/health", token=None).status_code == 200

    viewer = local_api.request("POST", "/tokens", json={"role": "viewer", "name": "ro"}).json()
    assert viewer["token"].startswith("mft_")
    me = local_api.request("GET", "/whoami", token=viewer["token"])
    assert me.json() == {"principal": "token:ro", "role": "viewer"}
    forbidden = local_api.request("POST", "/hosts", token=viewer["token"],
                                  json=host_body(dovecot_hosts[0], uid("x")))
    assert forbidden.status_code == 403
    assert local_api.request("POST", "/jobs", token=viewer["token"], json={
        "action": "who", "targets": {"kind": "dovecot"}}).status_code == 403

    assert local_api.request("GET", "/hosts/no-such-host").status_code == 404
    assert local_api.request("GET", "/jobs/no-such-job").status_code == 404

    host_id = uid("dup")
    body = host_body(dovecot_hosts[0], host_id)
    assert local_api.request("POST", "/hosts", json=body).status_code == 201
    assert local_api.request("POST", "/hosts", json=body).status_code == 409

    bad = local_api.request("POST", "/hosts", json={**body, "id": "Bad Id!", "kind": "nope"})
    assert bad.status_code == 422
    fields = {e["field"] for e in bad.json()["errors"]}
    assert {"id", "kind"} <= fields
    assert "Traceback" not in bad.text

    no_creds = local_api.request("POST", "/hosts", json={
        "id": uid("nc"), "kind": "proxy", "endpoint": "http://127.0.0.1:1"})
    assert no_creds.status_code == 422
    assert "https://" in no_creds.text

    listed = local_api.request("GET", "/tokens").json()["tokens"]
    assert all("token" not in t and "token_sha256" not in t for t in listed)
    assert local_api.request("DELETE", f"/tokens/{viewer['token_id']}").status_code == 204
    # Revocation is effective at once.
    assert local_api.request("GET", "/whoami", token=viewer["token"]).status_code == 401


def test_hosts_crud_tags_and_no_credentials_anywhere(local_api: Any,
                                                     dovecot_hosts: list[DovecotInstance]) -> None:
    canary = "canary-" + uuid.uuid4().hex
    site = uid("site")
    host_id = uid("crud")
    body = host_body(dovecot_hosts[0], host_id, tags={"site": site, "role": "backend"})
    body["credentials"] = {"password": canary}
    created = local_api.request("POST", "/hosts", json=body)
    assert created.status_code == 201
    assert created.json()["credentials_secret"].endswith(host_id)
    assert local_api.request("GET", "/hosts",
                             params={"tag": [f"site:{site}", "role:backend"]}).json()["hosts"][0][
        "id"] == host_id
    assert local_api.request("GET", "/hosts",
                             params={"tag": [f"site:{site}", "role:nope"]}).json()["hosts"] == []
    patched = local_api.request("PATCH", f"/hosts/{host_id}",
                                json={"maintenance": True, "tls": {"verify": False}})
    assert patched.status_code == 200 and patched.json()["maintenance"] is True
    # Maintenance keeps a host out of tag-targeted jobs.
    none_left = local_api.request("POST", "/jobs", json={
        "action": "who", "targets": {"kind": "dovecot", "tags": {"site": site}}})
    assert none_left.status_code == 422
    actions = local_api.request("GET", f"/hosts/{host_id}/actions")
    assert actions.status_code == 200

    # The canary may be in Secrets Manager and nowhere else the API shows.
    seen = [
        local_api.request("GET", f"/hosts/{host_id}").text,
        local_api.request("GET", "/hosts").text,
        local_api.request("GET", "/audit", params={"host": host_id}).text,
        patched.text,
        created.text,
    ]
    assert local_api.request("DELETE", f"/hosts/{host_id}").status_code == 204
    seen.append(local_api.request("GET", "/audit", params={"limit": 1000}).text)
    assert not any(canary in text for text in seen)
    audit = local_api.request("GET", "/audit", params={"host": host_id, "order": "asc"}).json()
    kinds = [e["action"] for e in audit["events"]]
    assert kinds == ["host.create", "host.update", "host.delete"]
    update = audit["events"][1]
    assert update["params"]["tls"]["verify"] is False  # verify: false is on the record
    assert local_api.request("GET", f"/hosts/{host_id}").status_code == 404


def test_openapi_agrees_with_the_public_contract(local_api: Any) -> None:
    doc = local_api.request("GET", "/openapi.json").json()
    paths = doc["paths"]
    for path, method in [
        ("/health", "get"), ("/whoami", "get"), ("/tokens", "post"), ("/tokens", "get"),
        ("/tokens/{token_id}", "delete"), ("/hosts", "post"), ("/hosts", "get"),
        ("/hosts/{host_id}", "get"), ("/hosts/{host_id}", "patch"),
        ("/hosts/{host_id}", "delete"), ("/hosts/{host_id}/actions", "get"),
        ("/jobs", "post"), ("/jobs", "get"), ("/jobs/{job_id}", "get"),
        ("/jobs/{job_id}/cancel", "post"), ("/audit", "get"), ("/audit/verify", "get"),
    ]:
        assert method in paths.get(path, {}), f"{method.upper()} {path} missing"
    job_body = doc["components"]["schemas"]["JobRequest"]["properties"]
    assert {"action", "params", "targets", "max_concurrency", "max_errors",
            "timeout_seconds", "dry_run"} <= set(job_body)
    swagger = local_api.request("GET", "/swagger")
    assert swagger.status_code == 200 and "swagger" in swagger.text.lower()
    json.dumps(doc)


def test_patch_keeps_the_command_list_unless_the_endpoint_or_tls_changes(
    local_api: Any, fleet: dict[str, Any]
) -> None:
    from mailfleet.store.hosts import HostStore

    host_id = fleet["ids"][0]
    # A job makes the API fetch and cache the host's own command list.
    assert job(local_api, {"action": "who", "targets": {"hosts": [host_id]}})["status"] == (
        "SUCCEEDED"
    )
    assert "doveadm_commands" in HostStore().get_item(host_id)
    answer = local_api.request("PATCH", f"/hosts/{host_id}", json={"tags": {"site": "x"}})
    assert answer.status_code == 200 and "doveadm_commands" not in answer.json()
    assert "doveadm_commands" in HostStore().get_item(host_id)
    local_api.request("PATCH", f"/hosts/{host_id}", json={"tls": {"verify": True}})
    assert "doveadm_commands" not in HostStore().get_item(host_id)
