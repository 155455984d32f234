"""Appliance operations through the HTTP front, with Step Functions' Wait states taking
their real time (the integration tests make them instant): what an operator sees."""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any

from mailfleet_local.peers.appliance import ApplianceDouble
from tests.fixtures.maintenance import appliance_body, register, uid


def finished(api: Any, job_id: str, timeout: float) -> dict[str, Any]:
    end = time.monotonic() + timeout
    while True:
        data = dict(api.request("GET", f"/jobs/{job_id}").json())
        if data["status"] not in ("PENDING", "RUNNING") or time.monotonic() > end:
            return data
        time.sleep(0.1)


def test_a_reboot_shorter_than_the_poll_interval_is_still_seen(
        local_api: Any, appliance_double: Callable[..., ApplianceDouble]) -> None:
    # The test double reboots in about 0.6 s, well within the state machine's 2 s Wait
    # before its first Poll: the reboot is watched from the moment it is asked for, or
    # the appliance is never seen away and the job times out although it rebooted.
    double = appliance_double()
    host = register(local_api, appliance_body(double, uid("e2e-reboot")))
    answer = local_api.request("POST", "/jobs", json={
        "action": "reboot", "targets": {"hosts": [host]}, "confirm": "reboot@1",
        "timeout_seconds": 15})
    assert answer.status_code == 202, answer.text
    job = finished(local_api, answer.json()["job_id"], timeout=60)
    assert job["status"] == "SUCCEEDED", job
    assert job["path"] == "appliance-operation"
    output = job["results"][0]["output"]
    assert output["status"] == "back" and output["away_seconds"] > 0
    assert double.reboots == 1 and double.is_up
