"""Least privilege on the fleet (issue 10), end to end through the API front with real
Dovecot (and pymap, and the TLS doubles of the proxy and appliance):

- each reproduction of the issue is refused (403/422 naming the rule) before any host is
  contacted, and the marker file a dsync "destination" would have created never appears;
- a role x action matrix over every declared action of every kind (dry runs);
- the approval flow (AWAITING_APPROVAL, approve, reject, expiry) on both job paths;
- outputs, the audit trail and the logs carry no secret (canary values);
- credentials bound to their host; authority ends with the token that held it.
"""

from __future__ import annotations

import json
import uuid
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from mailfleet import aws
from mailfleet.config import SecretSettings
from mailfleet.drivers import driver_class
from mailfleet.drivers.dovecot_policy import RULES
from mailfleet.logic.jobs import Jobs
from mailfleet.store.hosts import HostStore
from mailfleet.store.jobs import JobStore
from mailfleet_local.certs import make_self_signed
from mailfleet_local.peers.appliance import ApplianceDouble
from mailfleet_local.peers.dovecot import DovecotInstance
from mailfleet_local.peers.proxy import ProxyDouble
from mailfleet_local.peers.pymap import PymapServer
from tests.fixtures.dovecot import host_body
from tests.fixtures.maintenance import (
    appliance_body,
    ensure_fleet_routes,
    proxy_body,
    pymap_body,
    register,
)
from tests.fixtures.stack import function_environment
from tests.waiting import wait_until

pytestmark = pytest.mark.dovecot


def uid(prefix: str = "t") -> str:
    return f"{prefix}-{uuid.uuid4().hex[:10]}"


def mint(api: Any, role: str, token: Any = None) -> dict[str, Any]:
    kwargs = {} if token is None else {"token": token}
    answer = api.request("POST", "/tokens", json={"role": role, "name": uid(role)}, **kwargs)
    assert answer.status_code == 201, answer.text
    return dict(answer.json())


@pytest.fixture(scope="module")
def tokens(local_api: Any) -> dict[str, str]:
    return {role: mint(local_api, role)["token"] for role in ("viewer", "operator", "admin")}


@pytest.fixture
def fleet(local_api: Any, dovecot_hosts: list[DovecotInstance]) -> dict[str, Any]:
    """Two real Dovecot hosts under a fresh tag, never contacted yet."""
    site = uid("site")
    ids = [register(local_api, host_body(inst, uid(f"dc{n}"), tags={"site": site}))
           for n, inst in enumerate(dovecot_hosts[:2])]
    return {"site": site, "ids": ids, "instances": dovecot_hosts[:2]}


def post_job(api: Any, body: dict[str, Any], token: str, wait: float | None = None) -> Any:
    path = "/jobs" if wait is None else f"/jobs?wait={wait}"
    return api.request("POST", path, json=body, token=token)


def finished(api: Any, job_id: str, timeout: float = 30) -> dict[str, Any]:
    def final() -> dict[str, Any] | None:
        data = dict(api.request("GET", f"/jobs/{job_id}").json())
        return data if data["status"] not in ("PENDING", "RUNNING") else None
    return wait_until(final, timeout, interval=0.1, what=f"job {job_id} final")


def run(api: Any, body: dict[str, Any], token: str) -> dict[str, Any]:
    answer = post_job(api, body, token, wait=20)
    assert answer.status_code in (200, 202), answer.text
    return finished(api, answer.json()["job_id"])


# ----------------------------------------------------------------- the reproductions


def test_every_reproduction_is_refused_before_any_host_is_contacted(
        local_api: Any, tokens: dict[str, str], fleet: dict[str, Any]) -> None:
    marker = Path(f"/tmp/mf-marker-{uuid.uuid4().hex}")  # where the issue saw it appear
    one = {"hosts": fleet["ids"][:1]}
    tag = {"kind": "dovecot", "tags": {"site": fleet["site"]}}
    operator, admin = tokens["operator"], tokens["admin"]
    cases: list[tuple[str, dict[str, Any], int, str, str]] = [
        # (who, body, status, field, rule)
        (operator, {"action": "backup", "params": {"user": "alice", "destination": [
            "/bin/touch", str(marker)]}, "targets": one}, 422, "action", "dovecot.backup"),
        (operator, {"action": "backup", "params": {"allUsers": True, "destination": [
            "/bin/touch", str(marker)]}, "targets": tag, "dry_run": True}, 422, "action",
         "dovecot.backup"),
        (admin, {"action": "sync", "params": {"user": "alice", "destination": [
            "tcp:127.0.0.1:1"]}, "targets": one}, 422, "action", "dovecot.sync"),
        (operator, {"action": "fsGet", "params": {"fsDriver": "posix", "fsArgs": "",
                                                  "path": "/etc/shadow"}, "targets": one},
         422, "action", "dovecot.fsGet"),
        (admin, {"action": "fsDelete", "params": {"fsDriver": "posix", "fsArgs": "",
                                                  "path": ["/"], "recursive": True},
                 "targets": one, "confirm": "fsDelete@1"}, 422, "action", "dovecot.fsDelete"),
        (operator, {"action": "dictSet", "params": {"dictUri": f"file:{marker}", "key": "k",
                                                    "value": "v"}, "targets": one},
         422, "params.dictUri", "dovecot.param.dictUri"),
        (operator, {"action": "who", "params": {"socketPath": "/run/dovecot/anvil"},
                    "targets": one}, 422, "params.socketPath", "dovecot.param.socketPath"),
        (operator, {"action": "mailboxList", "params": {"userFile": "/etc/shadow"},
                    "targets": one}, 422, "params.userFile", "dovecot.param.userFile"),
        (operator, {"action": "batch", "params": {"user": "alice", "args": ["who"]},
                    "targets": one}, 422, "action", "dovecot.batch"),
        (operator, {"action": "notACommand", "targets": one}, 422, "action",
         "dovecot.unclassified"),
        # Destructive, deliberate: operators cannot stop the fleet or expunge everyone...
        (operator, {"action": "stop", "targets": tag, "confirm": "stop@2"}, 403, "",
         "dovecot.stop"),
        (operator, {"action": "expunge", "params": {"allUsers": True, "query": ["all"]},
                    "targets": tag, "confirm": "expunge@2"}, 403, "",
         "dovecot.param.allUsers"),
        # ...and admins must say what and how many.
        (admin, {"action": "stop", "targets": tag}, 422, "confirm", "dovecot.stop"),
        (admin, {"action": "stop", "targets": tag, "confirm": "stop@1"}, 422, "confirm",
         "dovecot.stop"),
    ]
    for who, body, status, field, rule in cases:
        answer = post_job(local_api, body, who)
        assert answer.status_code == status, (body, answer.text)
        data = answer.json()
        assert data["rule"] == rule, data
        assert rule in data["message"]
        if field:
            assert data["errors"][0]["field"] == field, data
        if field == "confirm":
            assert data["expected_confirm"] == "stop@2"
    assert not marker.exists()
    # Nobody asked the hosts anything, not even their command list...
    for host_id in fleet["ids"]:
        assert "doveadm_commands" not in HostStore().get_item(host_id)
    # ...which the first allowed job does.
    who = run(local_api, {"action": "who", "targets": one}, operator)
    assert who["status"] == "SUCCEEDED", who
    assert "doveadm_commands" in HostStore().get_item(fleet["ids"][0])
    assert not marker.exists()


def test_the_host_reports_each_actions_class_and_least_role(
        local_api: Any, fleet: dict[str, Any]) -> None:
    answer = local_api.request("GET", f"/hosts/{fleet['ids'][0]}/actions").json()
    shown = {a["name"]: a for a in answer["actions"]}
    assert set(shown) == set(RULES)
    assert shown["backup"]["class"] == "never" and shown["backup"]["least_role"] is None
    assert (shown["stop"]["class"], shown["stop"]["least_role"]) == ("destructive", "admin")
    assert (shown["who"]["class"], shown["who"]["least_role"]) == ("read", "operator")
    assert shown["fsGet"]["policy"] == RULES["fsGet"].reason


# ----------------------------------------------------------------- role x action matrix

SAMPLE_PARAMS: dict[str, dict[str, dict[str, Any]]] = {
    "dovecot": {name: {"dictUri": "proxy::kv", "key": "shared/k", "value": "v"}
                if name.startswith("dict") else {} for name in RULES},
    "proxy": {"destinations.reset": {"destination": "legacy"},
              "mapping.get": {"identifier": "a@example.org"},
              "mapping.set": {"identifier": "a@example.org", "destination": "legacy"},
              "mapping.delete": {"identifier": "a@example.org"},
              "connections.kick": {"identifier": "a@example.org"},
              "connections.delay": {"identifier": "a@example.org", "seconds": 5}},
    "appliance": {"update": {"package_uri": "s3://bucket/package"},
                  "settings.set": {"settings": {"network": {"interface": "eth0",
                                                            "hostname": "a.example"}}},
                  "storage.set": {"settings": {"storage": {"type": "local"}}}},
    "pymap": {"user.get": {"user": "demouser"}, "user.delete": {"user": "nobody-x"},
              "user.set": {"user": "nobody-x", "password": "pw-sample"},
              "user.password": {"user": "nobody-x", "new_password": "pw-sample"},
              "append": {"user": "demouser", "message": "Subject: x\n\nx\n"}},
}


def test_role_by_action_matrix_over_every_declared_action(
        local_api: Any, tokens: dict[str, str], fleet: dict[str, Any], tmp_path: Path,
        proxy_double: Callable[..., ProxyDouble],
        appliance_double: Callable[..., ApplianceDouble], pymap_server: PymapServer) -> None:
    cert = make_self_signed(tmp_path, "sample")
    SAMPLE_PARAMS["appliance"]["certs.set"] = {"public": cert.cert_pem,
                                              "private": cert.key_pem}
    hosts = {"dovecot": fleet["ids"][0],
             "proxy": register(local_api, proxy_body(proxy_double(), uid("mx-px"))),
             "appliance": register(local_api, appliance_body(appliance_double(),
                                                             uid("mx-ap"))),
             "pymap": register(local_api, pymap_body(pymap_server, uid("mx-pm")))}
    seen = 0
    for kind, host_id in hosts.items():
        for action, rule in driver_class(kind).policy_rules.items():
            body = {"action": action, "params": SAMPLE_PARAMS[kind].get(action, {}),
                    "targets": {"hosts": [host_id]}, "dry_run": True}
            decision = driver_class(kind).classify(action, body["params"])
            for role in ("viewer", "operator", "admin"):
                answer = post_job(local_api, body, tokens[role])
                where = (kind, action, role, answer.text)
                if role == "viewer":
                    assert answer.status_code == 403, where  # jobs need the operator role
                elif not decision.allowed:
                    assert answer.status_code == 422, where
                    assert answer.json()["rule"] == decision.rule, where
                elif decision.least_role is not None and decision.least_role.value == "admin" \
                        and role == "operator":
                    assert answer.status_code == 403, where
                    assert answer.json()["least_role"] == "admin", where
                else:
                    assert answer.status_code == 200, where
                    policy = answer.json()["policy"]
                    assert policy["class"] == rule.action_class.value, where
                    assert answer.json()["approval"]["required"] is False, where
                    if decision.destructive:
                        assert answer.json()["approval"]["confirm"] == f"{action}@1", where
                seen += 1
    assert seen == 3 * sum(len(driver_class(k).policy_rules) for k in hosts)
    for host_id in hosts.values():  # dry runs: nobody was contacted
        assert "doveadm_commands" not in HostStore().get_item(host_id)


# ----------------------------------------------------------------- approvals


@pytest.fixture
def approval_threshold(function_env: Callable[[dict[str, str]], None]) -> None:
    """Destructive jobs on more than one host wait for an approval."""
    function_env({"APPROVAL_THRESHOLD_HOSTS": "1"})


def _mailboxes(api: Any, fleet: dict[str, Any], token: str) -> list[list[str]]:
    listed = run(api, {"action": "mailboxList", "params": {"user": "alice"},
                       "targets": {"hosts": fleet["ids"]}}, token)
    assert listed["status"] == "SUCCEEDED", listed
    return [[row["mailbox"] for row in r["output"]] for r in listed["results"]]


@pytest.mark.parametrize("path", ["inprocess", "distributed"])
def test_approval_flow_end_to_end(local_api: Any, tokens: dict[str, str],
                                  fleet: dict[str, Any], approval_threshold: None,
                                  function_env: Callable[[dict[str, str]], None],
                                  path: str) -> None:
    if path == "distributed":
        function_env({"INPROCESS_MAX_TARGETS": "1"})
    operator, admin = tokens["operator"], tokens["admin"]
    mailbox = uid("mf-approve")
    targets = {"kind": "dovecot", "tags": {"site": fleet["site"]}}
    made = run(local_api, {"action": "mailboxCreate", "params": {
        "user": "alice", "mailbox": [mailbox]}, "targets": targets}, operator)
    assert made["status"] == "SUCCEEDED", made
    delete = {"action": "mailboxDelete", "params": {"user": "alice", "mailbox": [mailbox]},
              "targets": targets, "confirm": "mailboxDelete@2"}

    # A dry run says what will be needed.
    dry = post_job(local_api, {**delete, "dry_run": True, "confirm": None}, operator).json()
    assert dry["policy"]["class"] == "destructive" and dry["approval"]["required"] is True
    assert dry["approval"]["confirm"] == "mailboxDelete@2"

    answer = post_job(local_api, delete, operator, wait=5)
    assert answer.status_code == 202, answer.text
    job_id = answer.json()["job_id"]
    assert answer.json()["status"] == "AWAITING_APPROVAL"
    assert answer.json()["approval"]["expires_at"]
    waiting = local_api.request("GET", f"/jobs/{job_id}").json()
    assert waiting["status"] == "AWAITING_APPROVAL"
    assert {r["status"] for r in waiting["results"]} == {"PENDING"}
    assert all(mailbox in names for names in _mailboxes(local_api, fleet, operator))

    assert local_api.request("POST", f"/jobs/{job_id}/approve",
                             token=operator).status_code == 403  # admins approve
    approver = mint(local_api, "admin")
    approved = local_api.request("POST", f"/jobs/{job_id}/approve", token=approver["token"])
    assert approved.status_code == 202, approved.text
    done = finished(local_api, job_id)
    assert done["status"] == "SUCCEEDED", done
    assert done["path"] == path
    assert isinstance(done["approval"], dict), repr(done["approval"])
    assert done["approval"]["approved_by"] == f"token:{approver['name']}"
    assert all(mailbox not in names for names in _mailboxes(local_api, fleet, operator))
    again = local_api.request("POST", f"/jobs/{job_id}/approve", token=admin)
    assert again.status_code == 409
    events = local_api.request("GET", "/audit", params={"job_id": job_id}).json()["events"]
    assert {e["action"] for e in events} >= {"job.start", "job.approve", "job.end"}
    assert next(e for e in events if e["action"] == "job.approve")["actor"] == (
        f"token:{approver['name']}")


def test_reject_self_approval_and_expiry(local_api: Any, tokens: dict[str, str],
                                         fleet: dict[str, Any],
                                         approval_threshold: None) -> None:
    operator, admin = tokens["operator"], tokens["admin"]
    body = {"action": "expunge", "params": {"user": "alice", "query": ["mailbox",
                                                                       uid("none"), "all"]},
            "targets": {"hosts": fleet["ids"]}, "confirm": "expunge@2"}
    # The creator turns it down: CANCELLED, nothing ran.
    job_id = post_job(local_api, body, operator).json()["job_id"]
    rejected = local_api.request("POST", f"/jobs/{job_id}/reject", token=operator)
    assert rejected.status_code == 200, rejected.text
    assert rejected.json()["status"] == "CANCELLED"
    assert {r["status"] for r in rejected.json()["results"]} == {"SKIPPED"}
    assert local_api.request("POST", f"/jobs/{job_id}/approve").status_code == 409
    # An admin cannot approve their own job.
    mine = post_job(local_api, body, admin).json()["job_id"]
    refused = local_api.request("POST", f"/jobs/{mine}/approve", token=admin)
    assert refused.status_code == 403 and "another principal" in refused.text
    # Nobody approved within the hour: CANCELLED on the next look.
    job = JobStore().get(mine)
    JobStore().set_fields(mine, approval={**job["approval"], "expires_epoch": 0})
    listed = local_api.request("GET", "/jobs", params={"status": "AWAITING_APPROVAL",
                                                       "limit": 100}).json()["jobs"]
    assert all(j["job_id"] != mine or j["status"] == "CANCELLED" for j in listed)
    expired = local_api.request("GET", f"/jobs/{mine}").json()
    assert expired["status"] == "CANCELLED"
    assert {r["status"] for r in expired["results"]} == {"SKIPPED"}
    events = local_api.request("GET", "/audit", params={"job_id": mine}).json()["events"]
    assert "job.expire" in {e["action"] for e in events}
    late = local_api.request("POST", f"/jobs/{mine}/approve")
    assert late.status_code == 409


# ----------------------------------------------------------------- secrets in outputs

CANARY = "canary-" + uuid.uuid4().hex


def test_no_canary_in_results_audit_or_logs(
        local_api: Any, tokens: dict[str, str], fleet: dict[str, Any],
        appliance_double: Callable[..., ApplianceDouble], pymap_server: PymapServer,
        capfd: pytest.CaptureFixture[str]) -> None:
    admin = tokens["admin"]
    double = appliance_double(
        settings={"network": {"interface": "eth0", "hostname": "a.example"},
                  "app": {"name": "mail", "ldap_bind_pw": CANARY,
                          "smtp": {"relay_auth": CANARY}}},
        storage={"storage": {"type": "iscsi", "target": "iqn.2016-01.com.example:lun1",
                             "ip": "10.0.0.9", "username": "mail", "password": CANARY}})
    appliance = register(local_api, appliance_body(double, uid("sec-ap")))
    pymap = register(local_api, pymap_body(pymap_server, uid("sec-pm")))
    dovecot = fleet["instances"][0]
    secrets = [CANARY, double.token, pymap_server.token, dovecot.api_key, dovecot.password]
    job_ids = []
    # Every appliance action that returns data (logs and backup.download go to the blob
    # store and return its location).
    for action in ("version", "health", "services", "endpoints", "changelog", "build",
                   "update.status", "backup.status", "certs.status", "settings.get",
                   "settings.status", "storage.get", "storage.status", "license.get"):
        job = run(local_api, {"action": action, "targets": {"hosts": [appliance]}}, admin)
        assert job["status"] == "SUCCEEDED", job
        job_ids.append(job["job_id"])
    shown = run(local_api, {"action": "settings.get", "targets": {"hosts": [appliance]}}, admin)
    assert shown["results"][0]["output"]["app"] == {"name": "mail", "ldap_bind_pw": "***",
                                                    "smtp": "***"}
    # Settings written with a secret: the parameters are masked by schema as well.
    job = run(local_api, {"action": "settings.set", "params": {"settings": {
        "network": {"interface": "eth0", "hostname": "b.example"},
        "app": {"name": "mail", "ldap_bind_pw": CANARY}}}, "targets": {"hosts": [appliance]},
        "confirm": "settings.set@1"}, admin)
    assert job["status"] == "SUCCEEDED", job
    assert job["params"]["settings"]["app"]["ldap_bind_pw"] == "***"
    job_ids.append(job["job_id"])
    # pymap: a password set, then read back.
    user = uid("u")
    for body in ({"action": "user.set", "params": {"user": user, "password": CANARY}},
                 {"action": "user.get", "params": {"user": user}}, {"action": "ping"},
                 {"action": "check"}):
        job = run(local_api, {**body, "targets": {"hosts": [pymap]}}, admin)
        assert job["status"] == "SUCCEEDED", job
        job_ids.append(job["job_id"])
    # Dovecot: every read command this instance can answer without extra configuration.
    for action, params in (("who", {}), ("statsDump", {}), ("penalty", {}),
                           ("user", {"userMask": ["alice"]}),
                           ("mailboxList", {"user": "alice"}),
                           ("mailboxStatus", {"user": "alice", "field": ["messages"],
                                              "mailboxMask": ["*"]}),
                           ("search", {"user": "alice", "query": ["all"]}),
                           ("processStatus", {}), ("serviceStatus", {}), ("logErrors", {}),
                           ("instanceList", {}), ("mailboxMutf7", {"name": ["x"]})):
        job = run(local_api, {"action": action, "params": params,
                              "targets": {"hosts": fleet["ids"][:1]}}, admin)
        job_ids.append(job["job_id"])
    texts = [json.dumps(local_api.request("GET", f"/jobs/{j}").json()) for j in job_ids]
    texts.append(json.dumps(local_api.request("GET", "/audit", params={"limit": 1000}).json()))
    texts.append(json.dumps(local_api.request("GET", "/jobs", params={"limit": 200}).json()))
    out, err = capfd.readouterr()
    texts += [out, err]
    for secret in secrets:
        assert all(secret not in text for text in texts), "a secret leaked"


# ----------------------------------------------------------------- credential binding


def test_credentials_stay_bound_to_their_host(local_api: Any, fleet: dict[str, Any]) -> None:
    owner = fleet["ids"][0]
    theirs = HostStore().get_item(owner)["credentials_secret"]
    body = host_body(fleet["instances"][0], uid("harvest"))
    body.pop("credentials")
    answer = local_api.request("POST", "/hosts", json={**body, "credentials_secret": theirs})
    assert answer.status_code == 422, answer.text
    assert answer.json()["errors"][0]["field"] == "credentials_secret"
    assert owner in answer.json()["message"]
    # Outside this stack's host prefix: refused whoever uses it.
    outside = uid("elsewhere/secret")
    aws.client("secretsmanager").create_secret(
        Name=outside, SecretString=json.dumps({"api_key": fleet["instances"][0].api_key}))
    answer = local_api.request("POST", "/hosts", json={**body, "credentials_secret": outside})
    assert answer.status_code == 422 and SecretSettings().host_secrets_prefix in answer.text
    # Shared on purpose, said so, and audited by name.
    shared = local_api.request("POST", "/hosts", json={
        **body, "credentials_secret": theirs, "shares_credentials_with": owner})
    assert shared.status_code == 201, shared.text
    events = local_api.request("GET", "/audit", params={"host": body["id"],
                                                         "action": "host.create"}).json()
    params = events["events"][0]["params"]
    assert params["credentials_secret"] == theirs
    assert params["shares_credentials_with"] == [owner]
    wrong = local_api.request("POST", "/hosts", json={
        **body, "id": uid("harvest"), "credentials_secret": theirs,
        "shares_credentials_with": fleet["ids"][1]})
    assert wrong.status_code == 422
    assert wrong.json()["errors"][0]["field"] == "shares_credentials_with"


# ----------------------------------------------------------------- authority


def test_revoking_a_token_lists_and_cascades_to_what_it_created(
        local_api: Any, fleet: dict[str, Any]) -> None:
    ensure_fleet_routes(local_api)
    boss = mint(local_api, "admin")
    minted = mint(local_api, "operator", token=boss["token"])
    grandchild = mint(local_api, "viewer", token=mint(local_api, "admin",
                                                      token=boss["token"])["token"])
    name = uid("who-hourly")
    created = local_api.request("POST", "/schedules", token=boss["token"], json={
        "name": name, "expression": "rate(1 hour)",
        "job": {"action": "who", "targets": {"kind": "dovecot",
                                             "tags": {"site": fleet["site"]}}}})
    assert created.status_code == 201, created.text
    view = created.json()
    assert view["created_by"] == f"token:{boss['name']}"
    assert view["created_by_token"] == boss["token_id"]
    assert view["run_as"] == f"system:schedule:{name}"
    listed = local_api.request("GET", "/tokens", params={"limit": 1000}).json()["tokens"]
    mine = next(t for t in listed if t["token_id"] == minted["token_id"])
    assert mine["created_by"] == f"token:{boss['name']}"
    assert mine["created_by_token"] == boss["token_id"]

    revoked = local_api.request("DELETE", f"/tokens/{boss['token_id']}",
                                params={"cascade": "revoke"})
    assert revoked.status_code == 200, revoked.text
    answer = revoked.json()
    assert minted["token_id"] in {t["token_id"] for t in answer["created"]["tokens"]}
    assert answer["created"]["schedules"] == [name]
    assert {minted["token_id"], grandchild["token_id"]} <= set(answer["revoked_tokens"])
    assert answer["paused_schedules"] == [name]
    for token in (boss["token"], minted["token"], grandchild["token"]):
        assert local_api.request("GET", "/whoami", token=token).status_code == 401
    assert local_api.request("GET", f"/schedules/{name}").json()["paused"] is True
    events = local_api.request("GET", "/audit", params={"action": "token.revoke"}).json()
    cascaded = [e for e in events["events"]
                if (e["params"] or {}).get("cascade_from") == boss["token_id"]]
    assert {e["target"] for e in cascaded} >= {f"token:{minted['token_id']}"}


def test_a_schedule_runs_as_its_own_principal_with_the_least_role(
        local_api: Any, fleet: dict[str, Any]) -> None:
    from mailfleet.logic.schedules import Schedules

    name = uid("sched")
    outcome = Schedules().run({"schedule": name, "job": {
        "action": "who", "targets": {"hosts": fleet["ids"][:1]}}})
    assert outcome["started"] is True, outcome
    job = finished(local_api, outcome["job_id"])
    assert job["created_by"] == f"system:schedule:{name}" and job["status"] == "SUCCEEDED"
    events = local_api.request("GET", "/audit", params={"job_id": job["job_id"]}).json()
    start = next(e for e in events["events"] if e["action"] == "job.start")
    assert start["actor"] == f"system:schedule:{name}"
    assert start["params"]["role"] == "operator"  # who needs no more, whoever made it


def test_openapi_shows_the_approval_routes_and_confirm(local_api: Any) -> None:
    doc = local_api.request("GET", "/openapi.json").json()
    assert "post" in doc["paths"]["/jobs/{job_id}/approve"]
    assert "post" in doc["paths"]["/jobs/{job_id}/reject"]
    assert "confirm" in doc["components"]["schemas"]["JobRequest"]["properties"]
    delete = doc["paths"]["/tokens/{token_id}"]["delete"]
    assert any(p["name"] == "cascade" for p in delete.get("parameters", []))


def test_an_appliance_operation_starts_its_state_machine_only_once_approved(
        local_api: Any, tokens: dict[str, str], appliance_double: Callable[..., ApplianceDouble]
) -> None:
    # Every destructive job waits.
    with function_environment({"APPROVAL_THRESHOLD_HOSTS": "0"}):
        double = appliance_double()
        host = register(local_api, appliance_body(double, uid("ap-settings")))
        wanted = {"network": {"interface": "eth0", "hostname": "approved.example"}}
        body = {"action": "settings.set", "params": {"settings": wanted},
                "targets": {"hosts": [host]}, "confirm": "settings.set@1"}
        assert post_job(local_api, body, tokens["operator"]).status_code == 403  # admin only
        answer = post_job(local_api, body, tokens["admin"])
        assert answer.status_code == 202 and answer.json()["status"] == "AWAITING_APPROVAL"
        job_id = answer.json()["job_id"]
        assert (double.settings or {}).get("network", {}).get("hostname") != "approved.example"
        approver = mint(local_api, "admin")
        approved = local_api.request("POST", f"/jobs/{job_id}/approve", token=approver["token"])
        assert approved.status_code == 202, approved.text
        assert Jobs().wait(job_id, 90)
        done = local_api.request("GET", f"/jobs/{job_id}").json()
        assert done["status"] == "SUCCEEDED", done["results"]
        assert done["path"] == "appliance-operation"
        assert double.settings["network"]["hostname"] == "approved.example"
