"""Starting each long operation (the request the appliance answers with 202) and shaping
its output once it ended; operations.py follows it in between. Both the driver (wait:
true) and the appliance-operation state machine start and finish through here."""

from __future__ import annotations

import base64
import contextlib
import json
import time
from collections.abc import Callable
from typing import Any

from mailfleet.drivers.appliance_admin.auth import PREFIX, pem_fingerprint
from mailfleet.drivers.appliance_admin.operations import OPERATIONS, Seen, summary
from mailfleet.drivers.appliance_admin.parameters import (
    CertsParams,
    RebootParams,
    SettingsSetParams,
    StorageSetParams,
    UpdateParams,
    WaitParams,
)
from mailfleet.drivers.appliance_admin.wire import ApplianceWire
from mailfleet.drivers.base import Deadline
from mailfleet.errors import ErrorType, HostError

Started = tuple[Seen, dict[str, Any]]  # what to follow, and the output of `wait: false`


def _seen(action: str, endpoint: str, **fields: Any) -> Seen:
    return Seen(action=action, endpoint=endpoint, started=time.time(), **fields)


def _refuse_if_running(op: str, before: dict[str, Any] | None, what: str, code: str,
                       after: str = "") -> None:
    if before is not None and before.get("status") == "running":
        # A second POST would still get 202 and only fail later: refuse it ourselves.
        raise HostError(ErrorType.COMMAND, f"{op} failed: {what} is already running on the "
                        f"appliance{after}", code=code, details=summary(before))


def start_update(wire: ApplianceWire, p: UpdateParams, deadline: Deadline) -> Started:
    package = _package(wire, p)
    before = wire.get_json("/update", deadline)
    _refuse_if_running("update", before, "an update", "E1004", "; no update was posted")
    response = wire.call("POST", "/update", deadline, ok=(202,), files={
        "update": ("software_package.enc", package, "application/octet-stream")})
    endpoint = wire.location(response, "/update")
    return (_seen("update", endpoint, baseline=before),
            {"status": "started", "location": PREFIX + endpoint})


def _package(wire: ApplianceWire, p: UpdateParams) -> bytes:
    if p.package_base64 is not None:
        return base64.b64decode(p.package_base64)
    blobs = wire.context.blobs
    if blobs is None:
        raise HostError(ErrorType.INVALID_PARAMS, "package_uri needs a blob store; "
                        "none is configured", code="package_uri")
    try:
        return blobs.get(str(p.package_uri))
    except Exception:
        raise HostError(ErrorType.INVALID_PARAMS, "the update package could not be "
                        "read from the blob store", code="package_uri") from None


def start_backup(wire: ApplianceWire, p: WaitParams, deadline: Deadline) -> Started:
    before = wire.read_optional("/backup", deadline)
    _refuse_if_running("backup", before, "a backup", "busy")
    response = wire.call("POST", "/backup", deadline, ok=(202,),
                         files={"action": (None, "START")})
    endpoint = wire.location(response, "/backup")
    return (_seen("backup", endpoint, baseline=before),
            {"status": "started", "location": PREFIX + endpoint})


def start_certs(wire: ApplianceWire, p: CertsParams, deadline: Deadline) -> Started:
    fingerprint = pem_fingerprint(p.public)
    before = wire.read_optional("/certs", deadline)
    _refuse_if_running("certs", before, "a certificates update", "busy")
    files: dict[str, Any] = {
        "public": ("appliance.pem", p.public.encode(), "application/x-pem-file"),
        "private": ("appliance.key", p.private.encode(), "application/x-pem-file"),
    }
    if p.ca:
        files["ca"] = ("ca.pem", p.ca.encode(), "application/x-pem-file")
    response = wire.call("POST", "/certs", deadline, ok=(202,), files=files)
    endpoint = wire.location(response, "/certs")
    pinned = wire.host.tls.pin_sha256
    repin = bool(pinned) and pinned != fingerprint
    seen = _seen("certs.set", endpoint, baseline=before, pin_sha256=fingerprint,
                 repin_required=repin)
    return seen, {"status": "started", "location": PREFIX + endpoint,
                  "pin_sha256": fingerprint, "repin_required": repin}


def start_settings(wire: ApplianceWire, p: SettingsSetParams | StorageSetParams,
                   deadline: Deadline) -> Started:
    """Settings and storage: no status on the wire, so no baseline (see wanted())."""
    action = "settings.set" if isinstance(p, SettingsSetParams) else "storage.set"
    endpoint = OPERATIONS[action].endpoint
    document = json.dumps(wanted(p)).encode()
    wire.call("POST", endpoint, deadline, ok=(202,),
              files={"settings": ("settings.json", document, "application/json")}).close()
    return _seen(action, endpoint), {"status": "started"}


def start_reboot(wire: ApplianceWire, p: RebootParams, deadline: Deadline) -> Started:
    wire.call("GET", "/reboot", deadline, ok=(202,)).close()
    return _seen("reboot", "/health"), {"status": "rebooting"}


STARTS: dict[str, Callable[[ApplianceWire, Any, Deadline], Started]] = {
    "update": start_update, "backup": start_backup, "certs.set": start_certs,
    "settings.set": start_settings, "storage.set": start_settings, "reboot": start_reboot,
}


def wanted(p: Any) -> dict[str, Any] | None:
    """What GET must show for a read-back operation to have ended (None: not one)."""
    if isinstance(p, SettingsSetParams | StorageSetParams):
        return p.settings.model_dump(mode="json", exclude_none=True)
    return None


def finish(wire: ApplianceWire, seen: Seen, body: dict[str, Any], deadline: Deadline
           ) -> dict[str, Any]:
    """The operation's output once it succeeded (`body`: what its last look returned)."""
    if seen.action == "update":
        out = summary(body)
        with contextlib.suppress(HostError):  # the new version is a bonus, not the outcome
            out["version"] = wire.get_json("/version", deadline, cap=wire.POLL_CAP
                                           ).get("version")
        return out
    if seen.action == "backup":
        return {"status": body.get("status"), "filesize": body.get("filesize"),
                "sha256": body.get("sha256")}
    if seen.action == "certs.set":
        return {**summary(body), "pin_sha256": seen.pin_sha256,
                "repin_required": seen.repin_required}
    if seen.action == "storage.set":
        return {**body, "reboot_required": True}  # storage applies at the next reboot
    return body
