"""The appliance-operation state machine under moto's real ASL interpreter (Wait states
made instant): a backup that succeeds and lands in S3 with its sha256 checked, a backup
the appliance fails, one that outlives its timeout, and the nightly backup schedule."""

from __future__ import annotations

import base64
import hashlib
import json
from collections.abc import Callable, Iterator
from typing import Any

import pytest

from mailfleet import aws
from mailfleet.config import ApplianceSettings
from mailfleet.logic.appliance_ops import is_long_operation
from mailfleet.logic.caller import Caller
from mailfleet.logic.jobs import Jobs
from mailfleet.models.jobs import JobRequest
from mailfleet.store.blobs import parse_uri
from mailfleet_local import lambda_bridge
from mailfleet_local.certs import make_self_signed
from mailfleet_local.peers.appliance import ApplianceDouble, ApplianceTimings
from tests.fixtures.maintenance import appliance_body, event, invoke, register, uid


@pytest.fixture(autouse=True)
def instant_waits(local_api: Any) -> Iterator[None]:
    local_api.ensure_deployed()
    with lambda_bridge.instant_waits():
        yield


def run_backup(host_ids: list[str], timeout_seconds: float = 30) -> dict[str, Any]:
    request = JobRequest.model_validate({"action": "backup", "targets": {"hosts": host_ids},
                                         "timeout_seconds": timeout_seconds})
    answer, _ = Jobs().submit(request, Caller.system("test"))
    assert answer["path"] == "appliance-operation", answer  # where it runs, from the start
    jobs = Jobs()
    assert jobs.wait(answer["job_id"], 60), "the state machine did not finish the job"
    return jobs.view(answer["job_id"])


def s3_object(uri: str) -> tuple[bytes, dict[str, Any]]:
    bucket, key = parse_uri(uri)
    got = aws.client("s3").get_object(Bucket=bucket, Key=key)
    return got["Body"].read(), got


def test_routing() -> None:
    assert is_long_operation("appliance", "backup", {})
    assert not is_long_operation("appliance", "backup", {"wait": False})
    assert not is_long_operation("appliance", "version", {})
    assert not is_long_operation("proxy", "backup", {})


def test_backup_lands_in_s3_with_its_sha256_checked(
        local_api: Any, appliance_double: Callable[..., ApplianceDouble]) -> None:
    double = appliance_double(backup_size=256 << 10)
    host = register(local_api, appliance_body(double, uid("op-ok")))
    job = run_backup([host])
    assert job["status"] == "SUCCEEDED", job
    assert job["path"] == "appliance-operation" and job["execution_arn"]
    result = job["results"][0]
    assert result["status"] == "SUCCEEDED" and result["duration_ms"] >= 0
    output = result["output"]
    announced = output["sha256"]  # what GET /backup said when it finished
    download = output["download"]
    assert download["verified"] is True and download["sha256"] == announced
    assert download["location"].startswith(f"s3://{ApplianceSettings().backups_bucket}/appliances/{host}/")
    body, got = s3_object(download["location"])
    assert hashlib.sha256(body).hexdigest() == announced
    assert body == double.backup_archive and download["size"] == len(body)
    # (moto neither keeps nor checks the ChecksumSHA256 sent along; S3 does both.)
    assert got["Metadata"]["sha256"] == announced
    # The execution's history holds statuses, never the job's parameters.
    sfn = aws.client("stepfunctions")
    assert sfn.describe_execution(executionArn=job["execution_arn"])["status"] == "SUCCEEDED"
    actions = [e["action"] for e in local_api.request(
        "GET", "/audit", params={"job_id": job["job_id"]}).json()["events"]]
    assert sorted(actions) == ["job.end", "job.start"]


def test_a_failed_backup_is_the_hosts_failure_and_nothing_is_stored(
        local_api: Any, appliance_double: Callable[..., ApplianceDouble]) -> None:
    ok = appliance_double()
    failing = appliance_double()
    failing.inject("backup", "fail")
    ids = [register(local_api, appliance_body(ok, uid("op-ok"))),
           register(local_api, appliance_body(failing, uid("op-fail")))]
    job = run_backup(ids)
    assert job["status"] == "PARTIAL", job
    by_host = {r["host"]: r for r in job["results"]}
    assert by_host[ids[0]]["status"] == "SUCCEEDED"
    failed = by_host[ids[1]]
    assert failed["status"] == "FAILED"
    assert failed["error"]["type"] == "command" and "backup failed" in failed["error"]["message"]
    stored = aws.client("s3").list_objects_v2(Bucket=ApplianceSettings().backups_bucket,
                                              Prefix=f"appliances/{ids[1]}/")
    assert stored.get("KeyCount", 0) == 0


def test_a_backup_that_outlives_its_timeout_times_out(
        local_api: Any, appliance_double: Callable[..., ApplianceDouble]) -> None:
    slow = appliance_double(timings=ApplianceTimings(script_start=0.05, backup=30.0))
    host = register(local_api, appliance_body(slow, uid("op-slow")))
    job = run_backup([host], timeout_seconds=1)
    assert job["status"] == "FAILED", job
    result = job["results"][0]
    assert result["status"] == "TIMED_OUT", result
    assert result["error"]["type"] == "timeout"
    assert "did not finish within 1 s (last status: running)" in result["error"]["message"]


def test_a_corrupted_download_is_refused(
        local_api: Any, appliance_double: Callable[..., ApplianceDouble]) -> None:
    double = appliance_double()
    double.inject("/backup/download", "corrupt")
    host = register(local_api, appliance_body(double, uid("op-bad")))
    result = run_backup([host])["results"][0]
    assert result["status"] == "FAILED"
    assert result["error"]["code"] == "sha256_mismatch"


def test_nightly_backup_schedule_backs_up_the_tagged_appliances(
        local_api: Any, appliance_double: Callable[..., ApplianceDouble]) -> None:
    site = uid("site")
    tagged = register(local_api, appliance_body(appliance_double(), uid("nb"),
                                                tags={"site": site}))
    register(local_api, appliance_body(appliance_double(), uid("nb-other"),
                                       tags={"site": uid("else")}))
    payload = event("nightly-appliance-backup.json")
    payload["job"]["targets"]["tags"] = {"site": site}
    payload["execution_id"] = uid("night")
    started = invoke(local_api, "MaintenanceFunction", payload)
    assert started["started"] is True and started["total"] == 1, started
    jobs = Jobs()
    assert jobs.wait(started["job_id"], 60)
    job = jobs.view(started["job_id"])
    assert job["status"] == "SUCCEEDED" and job["schedule"] == "nightly-appliance-backup"
    assert job["created_by"] == "system:schedule:nightly-appliance-backup"
    assert [r["host"] for r in job["results"]] == [tagged]
    assert job["results"][0]["output"]["download"]["location"].startswith("s3://")


def test_a_schedule_whose_tags_match_nothing_is_refused_not_retried(local_api: Any) -> None:
    payload = event("nightly-appliance-backup.json")
    payload["execution_id"] = uid("night")
    payload["job"]["targets"]["tags"] = {"site": uid("empty")}
    outcome = invoke(local_api, "MaintenanceFunction", payload)
    assert outcome["started"] is False and "no appliance host" in outcome["reason"]
    refused = local_api.request("GET", "/audit", params={"action": "schedule.run"}).json()
    assert any(json.dumps(e["params"]).find("no appliance host") >= 0
               for e in refused["events"])


def run_operation(action: str, params: dict[str, Any], host_ids: list[str]) -> dict[str, Any]:
    # Destructive actions (settings.set, reboot) are confirmed as the policy asks.
    request = JobRequest.model_validate({"action": action, "params": params,
                                         "targets": {"hosts": host_ids}, "timeout_seconds": 30,
                                         "confirm": f"{action}@{len(host_ids)}"})
    answer, _ = Jobs().submit(request, Caller.system("test"))
    assert answer["path"] == "appliance-operation", answer  # where it runs, from the start
    jobs = Jobs()
    assert jobs.wait(answer["job_id"], 60), "the state machine did not finish the job"
    return jobs.view(answer["job_id"])


def test_settings_are_followed_until_the_appliance_shows_them(
        local_api: Any, appliance_double: Callable[..., ApplianceDouble]) -> None:
    double = appliance_double()
    host = register(local_api, appliance_body(double, uid("op-set")))
    wanted = {"network": {"interface": "eth0", "hostname": "mail-appliance.example"}}
    job = run_operation("settings.set", {"settings": wanted}, [host])
    assert job["status"] == "SUCCEEDED", job
    assert job["path"] == "appliance-operation"
    assert double.settings["network"]["hostname"] == "mail-appliance.example"


def test_reboot_is_seen_going_away_and_coming_back(
        local_api: Any, appliance_double: Callable[..., ApplianceDouble]) -> None:
    double = appliance_double()
    host = register(local_api, appliance_body(double, uid("op-reboot")))
    job = run_operation("reboot", {}, [host])
    assert job["status"] == "SUCCEEDED", job
    output = job["results"][0]["output"]
    assert output["status"] == "back" and output["away_seconds"] > 0
    assert double.reboots == 1


def test_an_update_through_the_state_machine_reports_its_version(
        local_api: Any, appliance_double: Callable[..., ApplianceDouble]) -> None:
    double = appliance_double()
    host = register(local_api, appliance_body(double, uid("op-update")))
    package = base64.b64encode(b"version=5.0.0\npayload").decode()
    job = run_operation("update", {"package_base64": package}, [host])
    assert job["status"] == "SUCCEEDED", job
    output = job["results"][0]["output"]
    assert output["status"] == "success" and output["version"] == "5.0.0" == double.version


def test_a_failed_update_through_the_state_machine_carries_its_code(
        local_api: Any, appliance_double: Callable[..., ApplianceDouble]) -> None:
    double = appliance_double()
    double.inject("update", "fail", code="E1005")
    host = register(local_api, appliance_body(double, uid("op-update-fail")))
    package = base64.b64encode(b"version=5.0.0\npayload").decode()
    result = run_operation("update", {"package_base64": package}, [host])["results"][0]
    assert result["status"] == "FAILED" and result["error"]["code"] == "E1005"
    assert "couldn't be decrypted" in result["error"]["message"]


def test_storage_through_the_state_machine_says_a_reboot_applies_it(
        local_api: Any, appliance_double: Callable[..., ApplianceDouble]) -> None:
    double = appliance_double()
    host = register(local_api, appliance_body(double, uid("op-storage")))
    job = run_operation("storage.set", {"settings": {"storage": {"type": "local"}}}, [host])
    assert job["status"] == "SUCCEEDED", job
    output = job["results"][0]["output"]
    assert output["status"] == "success" and output["reboot_required"] is True


def test_certs_through_the_state_machine_repin_the_host(
        local_api: Any, appliance_double: Callable[..., ApplianceDouble], tmp_path: Any) -> None:
    double = appliance_double()
    host = register(local_api, appliance_body(double, uid("op-certs")))
    new = make_self_signed(tmp_path, "replacement")
    job = run_operation("certs.set", {"public": new.cert_pem, "private": new.key_pem}, [host])
    assert job["status"] == "SUCCEEDED", job
    output = job["results"][0]["output"]
    assert output["repin_required"] is True and output["pin_sha256"] == new.fingerprint_sha256
    shown = local_api.request("GET", f"/hosts/{host}").json()
    assert shown["tls"]["pin_sha256"] == new.fingerprint_sha256
