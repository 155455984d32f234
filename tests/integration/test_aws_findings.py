"""The paths a real deployment denied (issue 9), run end to end in the local stack. The
IAM check (tests/iam_calls.py) holds every AWS call of each function to its role as
SAM expands it: without the template's fix each of these is answered AccessDenied, as
on AWS, and the run fails naming function, action and resource."""

from __future__ import annotations

import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from mailfleet import aws
from mailfleet.config import Tables
from mailfleet.logic import distributed
from mailfleet.store.jobs import JobStore
from mailfleet_local.certs import make_self_signed
from mailfleet_local.peers.appliance import ApplianceDouble
from mailfleet_local.peers.proxy import ProxyDouble
from tests.fixtures.maintenance import (
    appliance_body,
    ensure_fleet_routes,
    event,
    invoke,
    proxy_body,
    register,
    uid,
)
from tests.fixtures.stack import function_environment
from tests.waiting import wait_until


@pytest.fixture
def api(local_api: Any) -> Any:
    ensure_fleet_routes(local_api)
    return local_api


def wait_final(job_id: str, timeout: float = 60) -> str:
    def final() -> str | None:
        status, _ = JobStore().status(job_id)
        return str(status) if status not in ("PENDING", "RUNNING") else None
    return wait_until(final, timeout, interval=0.2, what=f"job {job_id} final")


def test_a_host_deleted_and_registered_again_within_the_recovery_window(
        api: Any, proxy_double: Callable[..., ProxyDouble]) -> None:
    """Its managed secret is scheduled for deletion: registering again restores it."""
    double = proxy_double()
    body = proxy_body(double, uid("again-px"))
    register(api, body)
    assert api.request("DELETE", f"/hosts/{body['id']}").status_code == 204
    again = api.request("POST", "/hosts", json=body)
    assert again.status_code == 201, again.text
    job = api.request("POST", "/jobs?wait=15", json={
        "action": "destinations.list", "targets": {"hosts": [body["id"]]}})
    assert job.status_code == 200 and job.json()["status"] == "SUCCEEDED", job.text


def test_the_nightly_backup_schedule_can_be_paused_and_resumed(api: Any) -> None:
    name = "nightly-appliance-backup"
    paused = api.request("POST", f"/schedules/{name}/pause")
    assert paused.status_code == 200, paused.text
    try:
        assert api.request("GET", f"/schedules/{name}").json()["state"] == "DISABLED"
    finally:
        resumed = api.request("POST", f"/schedules/{name}/resume")
        assert resumed.status_code == 200, resumed.text
    assert api.request("GET", f"/schedules/{name}").json()["state"] == "ENABLED"


@pytest.fixture
def tiny_inprocess_limit() -> Iterator[None]:
    """Every job is 'large': the maintenance function takes the Distributed Map path."""
    with function_environment({"INPROCESS_MAX_TARGETS": "0"}):
        yield


def test_a_large_scheduled_job_runs_on_the_distributed_map(
        api: Any, proxy_double: Callable[..., ProxyDouble], tiny_inprocess_limit: None) -> None:
    site = uid("big")
    host = register(api, proxy_body(proxy_double(), uid("big-px"), tags={"site": site}))
    fired = event("scheduled-job.json")
    fired["schedule"] = uid("big-schedule")
    fired["execution_id"] = str(uuid.uuid4())
    fired["job"] = {"action": "destinations.list",
                    "targets": {"kind": "proxy", "tags": {"site": site}}}
    answer = invoke(api, "MaintenanceFunction", fired)
    job_id = answer["job_id"]
    assert JobStore().get(job_id).get("path") == distributed.DISTRIBUTED
    assert wait_final(job_id) == "SUCCEEDED"
    view = api.request("GET", f"/jobs/{job_id}").json()
    assert [r["host"] for r in view["results"]] == [host]


def test_the_fanout_worker_keeps_a_new_pin_after_certs_set(
        api: Any, appliance_double: Callable[..., ApplianceDouble], tmp_path: Path) -> None:
    double = appliance_double()
    host_id = register(api, appliance_body(double, uid("pin-ap")))
    new = make_self_signed(tmp_path, "replacement")
    job = api.request("POST", "/jobs?wait=20", json={
        "action": "certs.set", "targets": {"hosts": [host_id]}, "confirm": "certs.set@1",
        "params": {"public": new.cert_pem, "private": new.key_pem, "wait": False}})
    assert job.status_code == 200 and job.json()["status"] == "SUCCEEDED", job.text
    stored = aws.table(Tables().hosts_table).get_item(Key={"id": host_id})["Item"]
    # (with wait: false the appliance swaps certificates a moment later: the driver tests
    # show the new pin then works and the old one fails)
    assert stored["tls"]["pin_sha256"] == new.fingerprint_sha256


def test_a_job_whose_worker_fails_every_try_is_closed_failed(
        api: Any, proxy_double: Callable[..., ProxyDouble],
        monkeypatch: pytest.MonkeyPatch) -> None:
    """The worker's OnFailure destination (the maintenance function) closes the job, as
    when Lambda stopped the worker at its timeout, before it could clean up."""
    from mailfleet.logic.jobs import Jobs
    from mailfleet_local import lambda_bridge

    def in_worker() -> bool:
        return str(lambda_bridge.current_function.get()).endswith("-fanout-worker")

    real_fail = Jobs.fail_job

    def killed(self: Jobs, *args: Any, **kwargs: Any) -> Any:
        raise TimeoutError("Task timed out")

    def fail_job(self: Jobs, job_id: str, reason: str) -> bool:
        if in_worker():
            raise TimeoutError("Task timed out")
        return real_fail(self, job_id, reason)

    monkeypatch.setattr(Jobs, "execute", killed)
    monkeypatch.setattr(Jobs, "fail_job", fail_job)
    host = register(api, proxy_body(proxy_double(), uid("dead-px")))
    job = api.request("POST", "/jobs", json={"action": "destinations.list",
                                             "targets": {"hosts": [host]}})
    assert job.status_code == 202, job.text
    assert wait_final(job.json()["job_id"], timeout=30) == "FAILED"
    view = api.request("GET", f"/jobs/{job.json()['job_id']}").json()
    (result,) = view["results"]
    assert result["status"] == "FAILED" and "every try" in result["error"]["message"]
