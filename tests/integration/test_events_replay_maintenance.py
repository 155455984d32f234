"""The samples in events/maintenance/ replayed against the maintenance function, in the
deployed local stack: the sweep's Scheduled Event, a Scheduler run of an API schedule,
and the template's nightly appliance backup."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import Any

import pytest

from mailfleet.logic.jobs import Jobs
from mailfleet_local import lambda_bridge
from mailfleet_local.peers.appliance import ApplianceDouble
from mailfleet_local.peers.proxy import ProxyDouble
from tests.fixtures.maintenance import (
    appliance_body,
    event,
    invoke,
    proxy_body,
    register,
    scope_sweeps,
    uid,
)

SITE = "events-example"  # the tag the samples select


@pytest.fixture(autouse=True)
def instant_waits(local_api: Any) -> Iterator[None]:
    local_api.ensure_deployed()
    with lambda_bridge.instant_waits():
        yield


def test_health_sweep_scheduled_event(local_api: Any, monkeypatch: pytest.MonkeyPatch,
                                      proxy_double: Callable[..., ProxyDouble]) -> None:
    tags = {"site": uid("site")}
    scope_sweeps(monkeypatch, tags)
    host = register(local_api, proxy_body(proxy_double(), uid("ev-px"), tags=tags))
    summary = invoke(local_api, "MaintenanceFunction",
                     event("health-sweep-scheduled-event.json"))
    assert summary["hosts"] == 1 and summary["job_id"] is None
    assert host not in summary["down"]
    health = local_api.request("GET", f"/hosts/{host}").json()["health"]
    assert health["status"] == "up" and health["swept_at"] == summary["swept_at"]


def test_scheduled_job_event(local_api: Any, proxy_double: Callable[..., ProxyDouble]) -> None:
    host = register(local_api, proxy_body(proxy_double(), uid("ev-px"), tags={"site": SITE}))
    payload = event("scheduled-job.json")
    payload["execution_id"] = uid("run")  # a fresh run: the sample's own id is remembered
    outcome = invoke(local_api, "MaintenanceFunction", payload)
    assert outcome["started"] is True and outcome["schedule"] == "events-example-stats"
    jobs = Jobs()
    assert jobs.wait(outcome["job_id"], 30)
    job = jobs.view(outcome["job_id"])
    assert job["action"] == "stats" and job["schedule"] == "events-example-stats"
    assert host in [r["host"] for r in job["results"]]


def test_nightly_appliance_backup_event(
        local_api: Any, appliance_double: Callable[..., ApplianceDouble]) -> None:
    host = register(local_api, appliance_body(appliance_double(), uid("ev-ap"),
                                              tags={"site": SITE}))
    payload = event("nightly-appliance-backup.json")
    payload["execution_id"] = uid("night")
    outcome = invoke(local_api, "MaintenanceFunction", payload)
    assert outcome["started"] is True, outcome
    jobs = Jobs()
    assert jobs.wait(outcome["job_id"], 60)
    job = jobs.view(outcome["job_id"])
    assert job["schedule"] == "nightly-appliance-backup" and job["path"] == "appliance-operation"
    by_host = {r["host"]: r for r in job["results"]}
    assert by_host[host]["status"] == "SUCCEEDED"


def test_a_step_event_for_an_unknown_step_fails_loudly(local_api: Any) -> None:
    with pytest.raises(ValueError, match="unknown step"):
        invoke(local_api, "MaintenanceFunction", {"step": "nope", "state": {}})
    with pytest.raises(ValueError, match="not a maintenance event"):
        invoke(local_api, "MaintenanceFunction", {"hello": "world"})
