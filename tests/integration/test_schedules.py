"""Scheduled jobs through the API: created on EventBridge Scheduler (moto), fired by the
local ticker with Scheduler's own payload, run as an ordinary audited job; the
expression and job checked before anything is created; pause, resume, delete."""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any

import pytest

from mailfleet_local import lambda_bridge
from mailfleet_local.peers.proxy import ProxyDouble
from mailfleet_local.ticker import Ticker
from tests.fixtures.maintenance import (
    ensure_fleet_routes,
    event,
    invoke,
    proxy_body,
    register,
    scope_sweeps,
    uid,
)
from tests.waiting import wait_until


@pytest.fixture
def api(local_api: Any) -> Any:
    ensure_fleet_routes(local_api)
    return local_api


@pytest.fixture
def proxy_site(api: Any, proxy_double: Callable[..., ProxyDouble]) -> dict[str, Any]:
    site = uid("site")
    host = register(api, proxy_body(proxy_double(), uid("sc-px"), tags={"site": site}))
    return {"site": site, "host": host}


def schedule_body(name: str, site: str, **extra: Any) -> dict[str, Any]:
    return {"name": name, "expression": "rate(1 hour)",
            "job": {"action": "destinations.list",
                    "targets": {"kind": "proxy", "tags": {"site": site}}}, **extra}


def wait_for_scheduled_job(api: Any, name: str, timeout: float = 30) -> dict[str, Any]:
    def finished_job() -> str | None:
        jobs = api.request("GET", "/jobs", params={"limit": 100}).json()["jobs"]
        mine = [j for j in jobs if j.get("schedule") == name]
        done = mine and mine[0]["status"] not in ("PENDING", "RUNNING")
        return mine[0]["job_id"] if done else None
    job_id = wait_until(finished_job, timeout, interval=0.1,
                        what=f"a finished job of schedule {name}")
    return api.request("GET", f"/jobs/{job_id}").json()


def test_a_schedule_created_through_the_api_runs_an_audited_job(
        api: Any, proxy_site: dict[str, Any]) -> None:
    name = uid("px-stats")
    created = api.request("POST", "/schedules", json=schedule_body(name, proxy_site["site"]))
    assert created.status_code == 201, created.text
    view = created.json()
    assert view["name"] == name and view["state"] == "ENABLED" and not view["paused"]
    assert view["expression"] == "rate(1 hour)" and view["timezone"] == "UTC"
    assert view["job"]["action"] == "destinations.list" and view["managed_by"] == "api"
    assert view["created_by"] == "bootstrap-admin" and view["next_run"]

    ticker = Ticker(api.aws)
    fired = ticker.fire(name)
    payload = fired.payload
    assert payload["task"] == "scheduled-job" and payload["schedule"] == name
    assert payload["schedule_arn"] == view["arn"]
    assert not any(str(v).startswith("<aws.scheduler") for v in payload.values())

    job = wait_for_scheduled_job(api, name)
    assert job["status"] == "SUCCEEDED", job
    assert job["created_by"] == f"system:schedule:{name}"
    assert [r["host"] for r in job["results"]] == [proxy_site["host"]]
    events = api.request("GET", "/audit", params={"job_id": job["job_id"]}).json()["events"]
    start = next(e for e in events if e["action"] == "job.start")
    assert start["actor"] == f"system:schedule:{name}"
    assert start["params"]["schedule"] == name
    assert {e["action"] for e in events} == {"job.start", "job.end"}
    made = api.request("GET", "/audit", params={"action": "schedule.create"}).json()["events"]
    assert any(e["target"] == f"schedule:{name}" for e in made)
    assert api.request("GET", "/audit/verify").json()["ok"] is True


def test_the_same_run_delivered_twice_starts_one_job(api: Any,
                                                     proxy_site: dict[str, Any]) -> None:
    payload = event("scheduled-job.json")
    payload["schedule"] = uid("twice")
    payload["job"]["targets"]["tags"] = {"site": proxy_site["site"]}
    payload["execution_id"] = uid("run")
    first = invoke(api, "MaintenanceFunction", payload)
    second = invoke(api, "MaintenanceFunction", payload)
    assert first["started"] is True and first["job_id"] == second["job_id"]


def test_pause_resume_delete(api: Any, proxy_site: dict[str, Any]) -> None:
    name = uid("px-pause")
    assert api.request("POST", "/schedules",
                       json=schedule_body(name, proxy_site["site"])).status_code == 201
    ticker = Ticker(api.aws)

    def timer_enabled() -> bool:
        return next(t for t in ticker.timers() if t.name == name).enabled

    paused = api.request("POST", f"/schedules/{name}/pause")
    assert paused.status_code == 200 and paused.json()["paused"] is True
    assert paused.json()["next_run"] is None and timer_enabled() is False
    resumed = api.request("POST", f"/schedules/{name}/resume")
    assert resumed.json()["state"] == "ENABLED" and timer_enabled() is True
    actions = [e["action"] for e in api.request(
        "GET", "/audit", params={"host": f"schedule:{name}"}).json()["events"]]
    assert actions == ["schedule.resume", "schedule.pause", "schedule.create"]

    listed = api.request("GET", "/schedules").json()["schedules"]
    by_name = {s["name"]: s for s in listed}
    assert name in by_name
    assert by_name["nightly-appliance-backup"]["managed_by"] == "template"
    assert by_name["nightly-appliance-backup"]["job"]["action"] == "backup"

    assert api.request("DELETE", f"/schedules/{name}").status_code == 204
    assert api.request("GET", f"/schedules/{name}").status_code == 404
    assert api.request("DELETE", f"/schedules/{name}").status_code == 404
    assert not any(t.name == name for t in ticker.timers())
    refused = api.request("DELETE", "/schedules/nightly-appliance-backup")
    assert refused.status_code == 409


@pytest.mark.parametrize("change, field, words", [
    ({"expression": "rate(1 hours)"}, "expression", "singular"),
    ({"expression": "cron(0 2 * * *)"}, "expression", "6 fields"),
    ({"expression": "cron(0 2 * * * *)"}, "expression", "day-of-week"),
    ({"expression": "every day"}, "expression", "rate("),
    ({"timezone": "Nowhere/Land"}, "timezone", "IANA"),
    ({"name": "bad name!"}, "name", "pattern"),
    ({"job": {"action": "nope", "targets": {"kind": "proxy"}}}, "job.action", "no action"),
    ({"job": {"action": "connections.delay", "params": {"identifier": "a", "seconds": -1},
              "targets": {"kind": "proxy"}}}, "job.params.seconds", "greater than"),
    ({"job": {"action": "stats", "targets": {"hosts": ["no-such-host"]}}}, "job.targets.hosts",
     "unknown"),
    ({"job": {"action": "stats", "targets": {"kind": "proxy"}, "schedule": "x"}},
     "job", "set by the schedule"),
])
def test_invalid_schedules_are_422_naming_the_field(api: Any, change: dict[str, Any],
                                                    field: str, words: str) -> None:
    body = {**schedule_body(uid("bad"), "nowhere"), **change}
    answer = api.request("POST", "/schedules", json=body)
    assert answer.status_code == 422, answer.text
    errors = answer.json()["errors"]
    assert any(e["field"] == field and words in e["reason"] for e in errors), errors


def test_roles_and_conflicts(api: Any, proxy_site: dict[str, Any]) -> None:
    name = uid("px-dup")
    body = schedule_body(name, proxy_site["site"])
    assert api.request("POST", "/schedules", json=body).status_code == 201
    assert api.request("POST", "/schedules", json=body).status_code == 409
    operator = api.request("POST", "/tokens", json={"role": "operator", "name": uid("op")})
    token = operator.json()["token"]
    assert api.request("POST", "/schedules", json={**body, "name": uid("x")},
                       token=token).status_code == 403
    assert api.request("POST", f"/schedules/{name}/pause", token=token).status_code == 403
    assert api.request("GET", f"/schedules/{name}", token=token).status_code == 200
    assert api.request("GET", "/schedules/no-such-schedule").status_code == 404


def test_the_ticker_fires_the_templates_sweep_rule_on_its_rate(
        api: Any, proxy_site: dict[str, Any], monkeypatch: pytest.MonkeyPatch) -> None:
    import datetime as dt

    scope_sweeps(monkeypatch, {"site": proxy_site["site"]})
    now = dt.datetime.now(dt.UTC)
    if 1 <= now.hour < 3:  # keep the nightly backup's 02:00 out of the window
        now += dt.timedelta(hours=2)
    # This stack's own timers: other tests deploy other stacks into the same moto.
    ours = {s.name for s in api.deployment.schedules}
    ticker = Ticker(api.aws, only=lambda t: t.name in ours)
    assert ticker.tick(now) == []  # first sight: planned, nothing owed
    fired = ticker.tick(now + dt.timedelta(minutes=5, seconds=1))
    rule = next(s.name for s in api.deployment.schedules
                if s.logical_id == "MaintenanceFunctionHealthSweep")
    seal = next(s.name for s in api.deployment.schedules
                if s.logical_id == "AuditSealerFunctionAuditSeal")
    fired = [f for f in fired if f.timer.name != seal]  # same rate; see test_audit_chain
    assert [f.timer.name for f in fired] == [rule]  # the nightly backup is not due
    assert fired[0].payload["detail-type"] == "Scheduled Event"
    assert fired[0].result == {"status_code": 202}
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        health = api.request("GET", f"/hosts/{proxy_site['host']}").json()["health"]
        if health:
            break
        time.sleep(0.2)
    assert health and health["status"] == "up"
    assert lambda_bridge.drain(60)  # the sweep goes on in the background: let it end here


def test_a_scheduler_failure_is_on_the_record_after_its_request(
        api: Any, proxy_site: dict[str, Any], monkeypatch: pytest.MonkeyPatch) -> None:
    """EventBridge Scheduler is outside any DynamoDB transaction: the event comes first
    (requested), so no schedule changes without one; a failed call gets its own event."""
    from botocore.exceptions import ClientError

    from mailfleet.logic.caller import Caller
    from mailfleet.logic.schedules import Schedules
    from mailfleet.models.schedules import ScheduleCreate
    from mailfleet.models.tokens import Role

    real = Schedules._client()

    class Broken:
        def __getattr__(self, name: str) -> Any:
            return getattr(real, name)

        def create_schedule(self, **_: Any) -> Any:
            raise ClientError({"Error": {"Code": "ServiceUnavailable", "Message": "down"}},
                              "CreateSchedule")

    monkeypatch.setattr(Schedules, "_client", staticmethod(lambda: Broken()))
    name = uid("broken")
    body = ScheduleCreate.model_validate(schedule_body(name, proxy_site["site"]))
    with pytest.raises(ClientError):
        Schedules().create(body, Caller(principal="tester", role=Role.ADMIN))
    monkeypatch.undo()
    events = api.request("GET", "/audit", params={"host": f"schedule:{name}",
                                                  "order": "asc"}).json()["events"]
    assert [(e["action"], e["outcome"]) for e in events] == [
        ("schedule.create", "requested"), ("schedule.create", "failed")]
    assert api.request("GET", f"/schedules/{name}").status_code == 404
