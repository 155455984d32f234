"""The appliance driver against the ApplianceDouble: every action, and the contract's sharp
edges (E1004, backups, reboot, token rotation, 403, pins, disabled endpoints)."""

from __future__ import annotations

import base64
import gzip
import hashlib
import io
import tarfile
import threading
import time
from collections.abc import Callable
from typing import Any

import pytest
import requests

from mailfleet.drivers.appliance import PREFIX, ApplianceDriver
from mailfleet.drivers.base import Deadline
from mailfleet.errors import ErrorType, HostError, InvalidParams
from mailfleet_local.certs import make_self_signed
from mailfleet_local.peers.appliance import ApplianceDouble, ApplianceTimings
from tests.fixtures.appliance import DictBlobStore, MemoryKeeper
from tests.waiting import wait_until

Double = Callable[..., ApplianceDouble]
MakeDriver = Callable[..., ApplianceDriver]

STATIC = {
    "network": {
        "interface": "eth0",
        "hostname": "test.host",
        "ip_address": "192.168.1.100",
        "netmask": "255.255.255.0",
        "gateway": "192.168.1.1",
        "dns1": "192.168.1.2",
        "ntpserver": "pool.ntp.org",
    },
    "app": {"name": "testapp"},
}
NFS = {
    "storage": {
        "type": "nfs",
        "mount_options": "noacl,sync",
        "ip": "192.168.1.100",
        "share": "/nfs/storage",
    }
}


def run(
    driver: ApplianceDriver,
    action: str,
    params: dict[str, Any] | None = None,
    seconds: float = 10.0,
) -> Any:
    deadline = Deadline.after(seconds)
    return driver.perform(action, driver.validate(action, params or {}), deadline)


def fails(
    driver: ApplianceDriver,
    action: str,
    params: dict[str, Any] | None = None,
    seconds: float = 10.0,
) -> HostError:
    with pytest.raises(HostError) as info:
        run(driver, action, params, seconds)
    return info.value


def package(text: str = "version=2.0.0\npayload") -> dict[str, str]:
    return {"package_base64": base64.b64encode(text.encode()).decode()}


def raw_post(double: ApplianceDouble, endpoint: str, files: dict[str, Any]) -> requests.Response:
    return requests.post(
        double.url(endpoint, method="POST"), files=files, verify=str(double.cert_path), timeout=5
    )


# ---- information and reads ---------------------------------------------------------------


def test_information_actions(appliance: ApplianceDouble, appliance_driver: MakeDriver) -> None:
    driver = appliance_driver(appliance)
    assert run(driver, "version") == {"version": "1.0.0"}
    assert run(driver, "health")["memory"]["percentage"] == 26
    assert {"openssh": "running"} in run(driver, "services")["services"]
    assert run(driver, "build") == {"builddate": "123456789"}
    assert run(driver, "changelog")["changelog"].startswith("# Changelog")
    endpoints = run(driver, "endpoints")["endpoints"]
    assert f"{PREFIX}/backup" in endpoints and f"{PREFIX}/version" in endpoints
    # Hash authentication only: the token never crossed the wire, nor any other field.
    log = appliance.requests_log
    assert len(log) == 6
    assert all(r.auth == "hash" and r.fields == ("hash",) and r.status == 200 for r in log)


def test_reads_of_things_that_do_not_exist_yet(
    appliance_double: Double, appliance_driver: MakeDriver
) -> None:
    double = appliance_double(license=None)
    driver = appliance_driver(double)
    assert run(driver, "settings.get") == {"exists": False}
    assert run(driver, "settings.status") == {"exists": False, "settings": None}
    assert run(driver, "storage.get") == {"exists": False}
    assert run(driver, "storage.status") == {"exists": False, "storage": None}
    assert run(driver, "backup.status") == {"exists": False}
    assert run(driver, "license.get") == {"exists": False}
    # v1.23: a status never written is 200 with nulls, not an error.
    assert run(driver, "update.status") == {"status": None, "log": []}
    assert run(driver, "certs.status") == {"status": None, "log": []}
    # GET /endpoints told "nothing yet" from "disabled", and was asked once.
    assert len(double.requests_to("endpoints")) == 1


def test_license_get(appliance: ApplianceDouble, appliance_driver: MakeDriver) -> None:
    out = run(appliance_driver(appliance), "license.get")
    assert out["exists"] is True and out["app"] == "enterprise" and out["users"] == 20


def test_logs_downloaded_to_the_blob_store(
    appliance: ApplianceDouble, appliance_driver: MakeDriver, blob_store: DictBlobStore
) -> None:
    out = run(appliance_driver(appliance, blobs=blob_store), "logs")
    data = blob_store.get(out["location"])
    assert out["size"] == len(data) > 0
    assert out["sha256"] == hashlib.sha256(data).hexdigest()
    with tarfile.open(fileobj=io.BytesIO(gzip.decompress(data))) as tar:
        assert "logs/system.log" in tar.getnames()


# ---- settings, storage, certs ------------------------------------------------------------


def test_settings_set_is_followed_until_visible(
    appliance: ApplianceDouble, appliance_driver: MakeDriver
) -> None:
    driver = appliance_driver(appliance)
    out = run(driver, "settings.set", {"settings": STATIC})
    assert out["status"] == "success"
    assert out["settings"]["network"]["mode"] == "static"
    assert appliance.settings is not None
    assert appliance.settings["network"]["hostname"] == "test.host"
    got = run(driver, "settings.get")
    assert got["exists"] is True and got["app"] == {"name": "testapp"}
    assert run(driver, "settings.status")["exists"] is True
    (post,) = appliance.requests_to("settings", "POST")
    assert post.fields == ("hash", "settings") and post.status == 202


def test_invalid_settings_never_reach_the_appliance(
    appliance: ApplianceDouble, appliance_driver: MakeDriver
) -> None:
    driver = appliance_driver(appliance)
    bad = {"settings": {"network": {"interface": "eth0", "hostname": "bad host"}}}
    with pytest.raises(InvalidParams):
        run(driver, "settings.set", bad)
    assert appliance.requests_log == []


def test_storage_set_and_get(appliance: ApplianceDouble, appliance_driver: MakeDriver) -> None:
    driver = appliance_driver(appliance)
    out = run(driver, "storage.set", {"settings": NFS})
    assert out["status"] == "success" and out["reboot_required"] is True
    got = run(driver, "storage.get")
    assert got["storage"]["share"] == "/nfs/storage" and "iscsi" in got["options"]
    assert run(driver, "storage.status")["exists"] is True


def test_certs_set_replaces_the_certificate_and_repins(
    appliance: ApplianceDouble, appliance_driver: MakeDriver, tmp_path: Any
) -> None:
    new = make_self_signed(tmp_path, "replacement")
    driver = appliance_driver(appliance)
    out = run(driver, "certs.set", {"public": new.cert_pem, "private": new.key_pem})
    assert out["status"] == "success"
    assert out["pin_sha256"] == new.fingerprint_sha256 and out["repin_required"] is True
    assert any("TLS certificates successful" in line for line in out["log"])
    assert appliance.fingerprint_sha256 == new.fingerprint_sha256
    # The old pin now fails before any request; the new pin works.
    before = len(appliance.requests_log)
    assert fails(appliance_driver(appliance, pin="ab" * 32), "version").type is ErrorType.TLS
    assert len(appliance.requests_log) == before
    repinned = appliance_driver(appliance, pin=new.fingerprint_sha256)
    assert run(repinned, "certs.status")["status"] == "success"
    (post,) = appliance.requests_to("certs", "POST")
    assert post.fields == ("hash", "public", "private")


# ---- update and the E1004 quirk ----------------------------------------------------------


def test_update_followed_to_success(
    appliance: ApplianceDouble, appliance_driver: MakeDriver
) -> None:
    driver = appliance_driver(appliance)
    progress: list[dict[str, Any]] = []
    driver.context.progress = progress.append
    out = run(driver, "update", package())
    assert out["status"] == "success" and out["percentage"] == 100
    assert out["log"][-1].endswith("Updating system successful")
    assert out["version"] == "2.0.0" == appliance.version
    assert progress and progress[-1]["status"] == "success"
    # Checked before posting, posted once with the documented field only.
    methods = [(r.method, r.endpoint) for r in appliance.requests_log]
    assert methods[:2] == [("GET", "/update"), ("POST", "/update")]
    (post,) = appliance.requests_to("update", "POST")
    assert post.fields == ("hash", "update")
    assert run(driver, "update.status")["status"] == "success"


def test_update_package_from_the_blob_store(
    appliance: ApplianceDouble, appliance_driver: MakeDriver, blob_store: DictBlobStore
) -> None:
    uri = blob_store.put("packages/app-3.1.0.enc", b"version=3.1.0\n")
    out = run(appliance_driver(appliance, blobs=blob_store), "update", {"package_uri": uri})
    assert out["status"] == "success" and out["version"] == "3.1.0"


@pytest.mark.parametrize(
    ("inject", "pkg", "code"),
    [
        ({"code": "E1002"}, package(), "E1002"),
        ({"code": "E1005"}, package(), "E1005"),
        (None, {"package_base64": ""}, "E1003"),  # an empty package is "missing"
    ],
)
def test_update_failure_carries_the_appliance_code(
    appliance: ApplianceDouble,
    appliance_driver: MakeDriver,
    inject: dict[str, str] | None,
    pkg: dict[str, str],
    code: str,
) -> None:
    if inject is not None:
        appliance.inject("update", "fail", **inject)
    error = fails(appliance_driver(appliance), "update", pkg)
    assert error.type is ErrorType.COMMAND and error.code == code
    assert error.details["status"] == "failed" and error.details["log"]


def test_update_refused_while_one_runs_without_posting(
    appliance_double: Double, appliance_driver: MakeDriver
) -> None:
    double = appliance_double(
        timings=ApplianceTimings(script_start=0.05, update=2.0, refusal_delay=0.05)
    )
    started = run(appliance_driver(double), "update", {**package(), "wait": False})
    assert started == {"status": "started", "location": f"{PREFIX}/update"}
    wait_until(lambda: double.update_state()["status"] == "running")
    error = fails(appliance_driver(double), "update", package())
    assert error.type is ErrorType.COMMAND and error.code == "E1004"
    assert "no update was posted" in error.message
    assert len(double.requests_to("update", "POST")) == 1  # ours was never sent


def _lingering_e1004(double: ApplianceDouble, driver: ApplianceDriver) -> None:
    """An update, a second POST refused while it runs: GET /update says failed/E1004."""
    run(driver, "update", {**package(), "wait": False})
    assert raw_post(double, "update", {"update": ("x.enc", b"x")}).status_code == 202
    wait_until(lambda: double.update_state().get("error-code") == "E1004")


def test_lingering_e1004_is_not_mistaken_for_our_outcome(
    appliance_double: Double, appliance_driver: MakeDriver
) -> None:
    double = appliance_double(
        timings=ApplianceTimings(script_start=0.25, update=0.3, refusal_delay=0.05)
    )
    _lingering_e1004(double, appliance_driver(double))
    wait_until(lambda: not double.update_running(), 5, interval=0.02,
               what="the first update finished")
    state = double.update_state()
    assert state["status"] == "failed" and state["error-code"] == "E1004"  # ...yet E1004
    double.clear_log()
    driver = appliance_driver(double)
    seen: list[dict[str, Any]] = []
    driver.context.progress = seen.append
    out = run(driver, "update", package("version=4.0.0"))
    assert out["status"] == "success" and out["version"] == "4.0.0"
    # Right after our POST, GET /update still showed that E1004 (the script had not
    # started): those polls were skipped as stale, never reported nor taken as ours.
    polls = [r for r in double.requests_to("update", "GET")][1:]  # after the pre-check
    assert len(polls) > len(seen) >= 1
    assert all(event["status"] != "failed" for event in seen)


def test_a_fresh_refusal_after_a_lingering_one_is_ours(
    appliance_double: Double, appliance_driver: MakeDriver
) -> None:
    # The lingering E1004 hides that the first update still runs: our POST is refused
    # again, with a new log line, and that refusal is reported.
    double = appliance_double(timings=ApplianceTimings(update=3.0, refusal_delay=0.05))
    _lingering_e1004(double, appliance_driver(double))
    error = fails(appliance_driver(double), "update", package())
    assert error.code == "E1004" and "no longer shows" not in error.message
    assert len(double.requests_to("update", "POST")) == 3  # this time we did post


def test_a_foreign_refusal_during_our_update_is_reported_as_hiding_it(
    appliance_double: Double, appliance_driver: MakeDriver
) -> None:
    double = appliance_double(timings=ApplianceTimings(update=1.5, refusal_delay=0.05))
    driver = appliance_driver(double)
    result: dict[str, Any] = {}

    def ours() -> None:
        try:
            run(driver, "update", package())
        except HostError as exc:
            result["error"] = exc

    thread = threading.Thread(target=ours)
    thread.start()
    wait_until(lambda: (double.update_state()["percentage"] or 0) >= 20)
    assert raw_post(double, "update", {"update": ("x.enc", b"x")}).status_code == 202
    thread.join(10)
    error = result["error"]
    assert error.code == "E1004" and "no longer shows" in error.message


# ---- backup ------------------------------------------------------------------------------


def test_backup_followed_to_success_and_downloaded(
    appliance: ApplianceDouble, appliance_driver: MakeDriver, blob_store: DictBlobStore
) -> None:
    driver = appliance_driver(appliance, blobs=blob_store)
    out = run(driver, "backup")
    archive = appliance.backup_archive
    assert archive is not None
    assert out["status"] == "success"
    assert out["sha256"] == hashlib.sha256(archive).hexdigest()
    assert run(driver, "backup.status")["status"] == "success"
    got = run(driver, "backup.download")
    assert got["size"] == len(archive) and got["sha256"] == out["sha256"]
    assert got["verified"] is True
    data = blob_store.get(got["location"])
    assert data == archive
    with tarfile.open(fileobj=io.BytesIO(data)) as tar:
        assert "backup/meta.json" in tar.getnames()
    (post,) = appliance.requests_to("backup", "POST")
    assert post.fields == ("hash", "action")


def test_a_second_backup_is_not_the_first_one(
    appliance_double: Double, appliance_driver: MakeDriver
) -> None:
    # After START, GET /backup shows the previous archive until the script starts.
    double = appliance_double(timings=ApplianceTimings(script_start=0.25, backup=0.1))
    driver = appliance_driver(double)
    first = run(driver, "backup")["sha256"]
    second = run(driver, "backup")["sha256"]
    assert first != second
    archive = double.backup_archive
    assert archive is not None and hashlib.sha256(archive).hexdigest() == second


def test_backup_download_checks_the_sha256(
    appliance: ApplianceDouble, appliance_driver: MakeDriver, blob_store: DictBlobStore
) -> None:
    driver = appliance_driver(appliance, blobs=blob_store)
    run(driver, "backup")
    appliance.inject("backup/download", "corrupt")
    error = fails(driver, "backup.download")
    assert error.type is ErrorType.COMMAND and error.code == "sha256_mismatch"
    assert blob_store.blobs == {}  # nothing stored from a bad download


def test_backup_download_without_a_backup(
    appliance: ApplianceDouble, appliance_driver: MakeDriver
) -> None:
    error = fails(appliance_driver(appliance), "backup.download")
    assert error.type is ErrorType.COMMAND and error.code == 404
    assert appliance.requests_to("backup/download") == []


def test_backup_failure(appliance: ApplianceDouble, appliance_driver: MakeDriver) -> None:
    appliance.inject("backup", "fail")
    error = fails(appliance_driver(appliance), "backup")
    assert error.type is ErrorType.COMMAND and error.code == "failed"


# ---- reboot ------------------------------------------------------------------------------


def test_reboot_waits_for_health(appliance: ApplianceDouble, appliance_driver: MakeDriver) -> None:
    out = run(appliance_driver(appliance), "reboot")
    assert out["status"] == "back"
    # Down for 0.5 s (connection refused): the driver saw it away, then answering.
    assert 0.25 <= out["away_seconds"] <= out["total_seconds"] < 5
    assert appliance.reboots == 1 and appliance.is_up
    health = appliance.requests_to("health")
    assert health and health[-1].status == 200
    assert health[-1].at - appliance.requests_to("reboot")[0].at >= 0.5


def test_a_reboot_followed_step_by_step_is_watched_from_the_request(
    appliance: ApplianceDouble, appliance_driver: MakeDriver
) -> None:
    # The state machine's way: start in one call, look in later ones. Its Start step
    # watches at once, as a look after the reboot is over never sees the appliance away.
    driver = appliance_driver(appliance)
    seen, started = driver.start_operation("reboot", {}, Deadline.after(10))
    assert started == {"status": "rebooting"}
    back = driver.follow_operation(seen, Deadline.after(10), seconds=5)
    assert back.output is not None and back.output["status"] == "back"
    assert back.output["away_seconds"] > 0 and back.seen.away_since is not None
    late, _ = driver.start_operation("reboot", {}, Deadline.after(10))
    wait_until(lambda: appliance.reboots == 2 and appliance.is_up)
    missed = driver.follow_operation(late, Deadline.after(10))  # one look, too late
    assert not missed.done and missed.seen.away_since is None


def test_an_update_followed_step_by_step_keeps_the_e1004_rule(
    appliance_double: Double, appliance_driver: MakeDriver
) -> None:
    double = appliance_double(timings=ApplianceTimings(update=1.5, refusal_delay=0.05))
    driver = appliance_driver(double)
    seen, _ = driver.start_operation("update", package(), Deadline.after(10))
    deadline = Deadline.after(10)
    current = driver.follow_operation(seen, deadline)
    while not current.seen.seen_running and not current.done:  # bounded by the deadline
        current = driver.follow_operation(current.seen, deadline)
    assert raw_post(double, "update", {"update": ("x.enc", b"x")}).status_code == 202
    while not current.done:
        current = driver.follow_operation(current.seen, deadline)
    assert current.error is not None and current.error.code == "E1004"
    assert "no longer shows" in current.error.message


def test_reboot_without_waiting(appliance: ApplianceDouble, appliance_driver: MakeDriver) -> None:
    assert run(appliance_driver(appliance), "reboot", {"wait": False}) == {"status": "rebooting"}
    assert appliance.requests_to("health") == []


# ---- token rotation ----------------------------------------------------------------------


def test_token_rotation(appliance: ApplianceDouble, appliance_driver: MakeDriver) -> None:
    old = appliance.token
    keeper = MemoryKeeper()
    driver = appliance_driver(appliance, keeper=keeper)
    out = run(driver, "token.rotate")
    assert out == {"rotated": True, "confirmed_by": "answer", "length": 48}
    new = keeper.token()
    assert keeper.events == ["stage", "promote"] and keeper.pending is None
    assert new is not None and new != old and appliance.token == new
    assert new not in repr(out)
    (post,) = appliance.requests_to("setup", "POST")
    assert post.fields == ("hash", "newtoken") and post.status == 200
    # The old token is refused now; the new one works, in this driver and a fresh one.
    assert fails(appliance_driver(appliance, token=old), "version").type is ErrorType.AUTH
    assert run(driver, "version") == {"version": "1.0.0"}
    assert run(appliance_driver(appliance, token=new), "version") == {"version": "1.0.0"}


def test_refused_rotation_keeps_the_old_token(
    appliance: ApplianceDouble, appliance_driver: MakeDriver
) -> None:
    old = appliance.token
    keeper = MemoryKeeper()
    driver = appliance_driver(appliance, keeper=keeper)
    appliance.inject("setup", "http", status=400)
    started = time.monotonic()
    error = fails(driver, "token.rotate")
    assert error.type is ErrorType.COMMAND and error.code == 400
    assert time.monotonic() - started >= appliance.timings.failed_setup_pause
    assert keeper.events == ["stage", "discard"] and keeper.token() == old
    assert appliance.token == old and run(driver, "version") == {"version": "1.0.0"}


def test_rotation_dropped_before_it_applied_keeps_the_old_token(
    appliance: ApplianceDouble, appliance_driver: MakeDriver
) -> None:
    old = appliance.token
    keeper = MemoryKeeper()
    driver = appliance_driver(appliance, keeper=keeper)
    appliance.inject("setup", "drop")
    error = fails(driver, "token.rotate")
    assert error.type is ErrorType.CONNECTION
    assert error.details == {"outcome": "not rotated"}
    assert keeper.events == ["stage", "discard"] and appliance.token == old
    # The probe asked with the new token (refused), then with the old one (fine).
    assert [r.status for r in appliance.requests_to("version")] == [403, 200]
    assert run(driver, "version") == {"version": "1.0.0"}


def test_rotation_dropped_after_it_applied_is_confirmed_by_a_probe(
    appliance: ApplianceDouble, appliance_driver: MakeDriver
) -> None:
    keeper = MemoryKeeper()
    driver = appliance_driver(appliance, keeper=keeper)
    appliance.inject("setup", "drop_after_apply")
    out = run(driver, "token.rotate")
    assert out["confirmed_by"] == "probe"
    assert keeper.events == ["stage", "promote"] and appliance.token == keeper.token()
    assert appliance.requests_to("setup")[0].dropped
    assert run(driver, "version") == {"version": "1.0.0"}


def test_rotation_waits_out_the_pause_after_a_failure(
    appliance: ApplianceDouble, appliance_driver: MakeDriver, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(ApplianceDriver, "FAILED_ROTATION_PAUSE", 0.4)
    keeper = MemoryKeeper()
    driver = appliance_driver(appliance, keeper=keeper)
    appliance.inject("setup", "http", status=400)
    fails(driver, "token.rotate")
    run(driver, "token.rotate")
    first, second = appliance.requests_to("setup")
    assert (first.status, second.status) == (400, 200)
    assert second.at - first.at >= 0.4


def test_rotation_without_a_keeper_is_refused(
    appliance: ApplianceDouble, appliance_driver: MakeDriver
) -> None:
    error = fails(appliance_driver(appliance), "token.rotate")
    assert error.type is ErrorType.UNSUPPORTED and "keep" in error.message
    assert appliance.requests_log == []


# ---- failures: auth, TLS, disabled endpoints, dropped connections -----------------------


def test_wrong_token_is_auth_and_never_retried(
    appliance: ApplianceDouble, appliance_driver: MakeDriver
) -> None:
    error = fails(appliance_driver(appliance, token="not-the-token"), "backup")
    assert error.type is ErrorType.AUTH and error.code == 403 and not error.retryable
    assert "not-the-token" not in error.message
    (only,) = appliance.requests_log
    assert only.status == 403


def test_pin_mismatch_is_tls_and_sends_nothing(
    appliance: ApplianceDouble, appliance_driver: MakeDriver
) -> None:
    keeper = MemoryKeeper()
    driver = appliance_driver(appliance, pin="00" * 32, keeper=keeper)
    assert fails(driver, "version").type is ErrorType.TLS
    assert fails(driver, "token.rotate").type is ErrorType.TLS
    assert keeper.events == ["stage", "discard"]
    assert appliance.requests_log == []


def test_disabled_endpoints_are_unsupported(
    appliance_double: Double, appliance_driver: MakeDriver
) -> None:
    double = appliance_double(endpoints=("license",))
    driver = appliance_driver(double)
    for action, params in (
        ("settings.get", {}),
        ("backup", {}),
        ("backup.status", {}),
        ("storage.set", {"settings": NFS}),
    ):
        error = fails(driver, action, params)
        assert error.type is ErrorType.UNSUPPORTED, action
        assert "disabled on this appliance" in error.message
    assert run(driver, "license.get")["exists"] is True


def test_latency_beyond_the_deadline_is_a_timeout(
    appliance_double: Double, appliance_driver: MakeDriver
) -> None:
    double = appliance_double(latency=0.6)
    started = time.monotonic()
    error = fails(appliance_driver(double), "version", seconds=0.3)
    assert error.type is ErrorType.TIMEOUT
    assert time.monotonic() - started < 0.6


def test_a_stopped_double_refuses_connections(appliance_driver: MakeDriver) -> None:
    with ApplianceDouble(token="yourtoken", timings=ApplianceTimings.fast()) as double:
        driver = appliance_driver(double)
        assert run(driver, "version") == {"version": "1.0.0"}
        assert (
            double.sign("GET", "/version")
            == "b714a60732e096ccef06e360eefe0f1ba4fa5d16ef7da726612e2026e5523241"
        )
    error = fails(driver, "version")
    assert error.type is ErrorType.CONNECTION and error.retryable


def test_unknown_field_name_drops_the_connection(
    appliance_double: Double, appliance_driver: MakeDriver
) -> None:
    # An appliance whose config does not allow `action`: POST /backup goes unanswered.
    double = appliance_double(parameters=("public", "private", "ca", "license"))
    error = fails(appliance_driver(double), "backup")
    assert error.type is ErrorType.CONNECTION
    assert double.requests_to("backup", "POST")[0].dropped


def test_double_drops_a_post_without_content_length(appliance: ApplianceDouble) -> None:
    with pytest.raises(requests.ConnectionError):
        requests.post(
            appliance.url("backup", method="POST"),
            data=iter([b"action=START"]),
            verify=str(appliance.cert_path),
            timeout=5,
        )
    (record,) = appliance.requests_log
    assert record.dropped and record.endpoint == "/backup"


def test_wrong_method_and_unknown_method(
    appliance: ApplianceDouble, appliance_driver: MakeDriver
) -> None:
    driver = appliance_driver(appliance)
    verify = str(appliance.cert_path)
    wrong = requests.get(appliance.url("setup"), verify=verify, timeout=5)
    assert wrong.status_code == 400
    assert wrong.json() == {
        "Status": "400 Bad Request",
        "Error-Message": "Invalid authentication method. Expected POST",
    }
    mapped = driver.error_for(wrong, "/setup", Deadline.after(5))
    assert mapped.type is ErrorType.INVALID_PARAMS and mapped.code == 400
    put = requests.put(appliance.url("version"), verify=verify, timeout=5)
    assert put.status_code == 501
    assert driver.error_for(put, "/version", Deadline.after(5)).type is ErrorType.UNSUPPORTED


def test_double_answers_with_the_documents_bodies(appliance: ApplianceDouble) -> None:
    verify = str(appliance.cert_path)
    accepted = raw_post(appliance, "backup", {"action": (None, "START")})
    assert accepted.status_code == 202
    assert accepted.json() == {"Status": "202 Accepted", "Location": f"{PREFIX}/backup"}
    assert accepted.headers["Location"] == f"{PREFIX}/backup"
    by_token = requests.get(appliance.url("version", auth="token"), verify=verify, timeout=5)
    assert by_token.json() == {"version": "1.0.0"}
    denied = requests.get(appliance.url("version", auth="none"), verify=verify, timeout=5)
    assert denied.status_code == 403
    assert denied.json() == {"Status": "403 Forbidden", "Error-Message": "Authentication error"}
    assert [r.auth for r in appliance.requests_log] == ["hash", "token", None]
