"""Following a long appliance operation once the appliance accepted it (202): every rule
in one place, used by the driver when it waits (`wait: true`, one call) and by the
appliance-operation state machine (one look per Poll step, `Seen` kept in between).

The rules (from the contract, ../shared/contracts/appliance.md):
- status operations (update, backup, certs.set): a status read right after our POST may
  still be the one from before it (the script has not started; a refused update's
  `failed`/E1004 lingers): a status is ours only once it differs from the baseline read
  before posting, or, for a backup, once `grace` seconds have passed. Then `running` and
  null poll again, `success` ends, `failed` fails with its `error-code` (or `error_code`,
  as the driver's summaries name it). E1004 after we saw our update running answered
  someone else's POST, and it hides our outcome: said so.
- read-back operations (settings.set, storage.set) have no status: done once GET shows
  what was posted (the server adds fields); 404 means not written yet.
- a reboot is done once /health was seen unreachable and then answering again; it is
  watched from the moment it is asked for, as a short reboot fits in any pause.
- unreachable or slow (services restart) polls again; a TLS failure after our own
  certs.set trusts the new certificate, once; anything else fails the operation.
- a timeout names the last status seen (a reboot: whether it went away at all).
"""

from __future__ import annotations

import contextlib
import json
import time
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass
from enum import StrEnum
from typing import Any

from mailfleet.drivers.appliance_admin.wire import ApplianceWire
from mailfleet.drivers.base import Deadline
from mailfleet.errors import ErrorType, HostError
from mailfleet.models.common import Model

UPDATE_ERRORS = {
    "E1000": "scripting error in the update script",
    "E1001": "version error in the update package",
    "E1002": "error during the update process",
    "E1003": "the update package was missing",
    "E1004": "an update was already running",
    "E1005": "the update package could not be decrypted or extracted",
}
# Seconds between looks: quick at first (short operations), then steady.
POLL_SCHEDULE = (0.05, 0.1, 0.2, 0.5, 1.0, 2.0)
REBOOT_POLL_CAP = 0.5  # short enough never to miss a reboot's absence
STALE_GRACE = 10.0  # backup: an identical status is accepted after it


class Follow(StrEnum):
    STATUS = "status"  # a status document: running / success / failed / null
    READBACK = "readback"  # no status on the wire: GET shows what was posted
    REBOOT = "reboot"  # /health goes away, then answers again


@dataclass(frozen=True)
class Operation:
    """One long action: where its state is read, how, and what runs after success."""

    action: str
    follow: Follow
    endpoint: str
    then: str | None = None
    poll_seconds: int | None = None  # state machine Wait; None: the configured default
    grace: float | None = None  # an unchanged status counts as ours after this long


OPERATIONS: dict[str, Operation] = {op.action: op for op in (
    Operation("backup", Follow.STATUS, "/backup", then="backup.download",
              grace=STALE_GRACE),
    Operation("update", Follow.STATUS, "/update"),
    Operation("certs.set", Follow.STATUS, "/certs"),
    Operation("settings.set", Follow.READBACK, "/settings"),
    Operation("storage.set", Follow.READBACK, "/storage"),
    Operation("reboot", Follow.REBOOT, "/health", poll_seconds=2),
)}


class Seen(Model):
    """What has been seen of one operation so far. Only statuses, never the operation's
    parameters: the state machine keeps it in its history between polls."""

    action: str
    endpoint: str
    started: float  # time.time() when the appliance was asked
    baseline: dict[str, Any] | None = None  # the status read before posting
    ours: bool = False
    seen_running: bool = False
    last: dict[str, Any] | None = None
    away_since: float | None = None  # reboot: when /health stopped answering
    pin_sha256: str | None = None  # certs.set: the new certificate's pin
    repin_required: bool = False  # ... which differs from the one we trusted
    repinned: bool = False


@dataclass(frozen=True)
class Look:
    """One look's outcome: still going (neither set), `output` (done) or `error`."""

    seen: Seen
    output: dict[str, Any] | None = None
    error: HostError | None = None

    @property
    def done(self) -> bool:
        return self.output is not None or self.error is not None


# ---- the rules, one observation at a time (pure) -------------------------------------


def is_stale(baseline: Mapping[str, Any] | None, observed: Mapping[str, Any]) -> bool:
    """Whether a status read after our POST is still exactly the one read before it: any
    run of the script rewrites the status or appends to the log tail."""
    if baseline is None:
        return False
    return json.dumps(baseline, sort_keys=True) == json.dumps(observed, sort_keys=True)


def observe_status(op: Operation, seen: Seen, body: dict[str, Any], now: float,
                   clean: Callable[[str], str] = str) -> Look:
    """`clean` keeps credentials out of the server's text in a failure's message."""
    if not seen.ours:
        within_grace = op.grace is None or now - seen.started < op.grace
        if is_stale(seen.baseline, body) and within_grace:
            return Look(seen)  # still the status from before we posted
    status = body.get("status")
    seen = seen.model_copy(update={"ours": True, "last": body,
                                   "seen_running": seen.seen_running or status == "running"})
    if status == "success":
        return Look(seen, output=body)
    if status == "failed":
        return Look(seen, error=failure(op.action, body, seen.seen_running, clean))
    return Look(seen)  # running, or null (v1.23: nothing written yet)


def failure(action: str, body: Mapping[str, Any], seen_running: bool,
            clean: Callable[[str], str] = str) -> HostError:
    code = str(body.get("error-code") or body.get("error_code") or "failed")
    reason = (body.get("error-message") or body.get("error_message")
              or UPDATE_ERRORS.get(code) or "failed")
    if action == "update" and code == "E1004" and seen_running:
        # Our update was running, so this refusal answered someone else's POST, and its
        # status now hides how our update ends.
        reason = ("another update request was refused while this update ran; the "
                  "appliance's status no longer shows this update's outcome")
    return HostError(ErrorType.COMMAND, f"{action} failed: {clean(str(reason))}", code=code,
                     details=summary(body))


def observe_read_back(op: Operation, seen: Seen, body: dict[str, Any] | None,
                      wanted: Mapping[str, Any]) -> Look:
    if body is None:
        return Look(seen)  # nothing written yet
    seen = seen.model_copy(update={"last": body})
    if contains(body, wanted):
        key = "settings" if op.action == "settings.set" else "storage"
        return Look(seen, output={"status": "success", key: body})
    return Look(seen)


def observe_health(seen: Seen, answers: bool, now: float) -> Look:
    if not answers and seen.away_since is None:
        return Look(seen.model_copy(update={"away_since": now}))
    if answers and seen.away_since is not None:
        return Look(seen, output={"status": "back",
                                  "away_seconds": round(now - seen.away_since, 3),
                                  "total_seconds": round(now - seen.started, 3)})
    return Look(seen)


def timed_out(op: Operation, seen: Seen, seconds: float) -> HostError:
    if op.follow is Follow.REBOOT:
        where = "went away" if seen.away_since is None else "came back"
        return HostError(ErrorType.TIMEOUT, f"the appliance accepted the reboot but never "
                         f"{where} within {seconds:g} s")
    state = seen.last.get("status") if seen.last else None
    return HostError(ErrorType.TIMEOUT, f"{op.action} did not finish within {seconds:g} s"
                     + (f" (last status: {state})" if state else ""),
                     details={"last": summary(seen.last)} if seen.last else None)


def contains(have: Any, want: Any) -> bool:
    """Whether `have` holds every key and value of `want` (recursively, extras allowed)."""
    if isinstance(want, Mapping):
        return isinstance(have, Mapping) and all(
            k in have and contains(have[k], v) for k, v in want.items())
    return bool(have == want)


def log_lines(log: Any) -> list[str]:
    """The log tail as lines (the server may send real newlines or literal backslash-n)."""
    if not isinstance(log, str) or not log:
        return []
    return log.replace("\\n", "\n").splitlines()


def summary(body: Mapping[str, Any] | None) -> dict[str, Any]:
    """A status body as output: the log tail as lines, error fields with plain names."""
    if not body:
        return {}
    out: dict[str, Any] = {"status": body.get("status")}
    for source, target in (("percentage", "percentage"), ("filesize", "filesize"),
                           ("sha256", "sha256"), ("error-code", "error_code"),
                           ("error-message", "error_message")):
        if body.get(source) is not None:
            out[target] = body[source]
    if "log" in body:
        out["log"] = log_lines(body.get("log"))
    return out


# ---- looking at the appliance ----------------------------------------------------------


def look(wire: ApplianceWire, op: Operation, seen: Seen, deadline: Deadline,
         wanted: Mapping[str, Any] | None = None) -> Look:
    """One read of the operation's state on the appliance, and the rules applied to it."""
    if seen.repinned and seen.pin_sha256 and not wire.trusts_new_pin:
        wire.trust_pin(seen.pin_sha256)
    try:
        if op.follow is Follow.REBOOT:
            return observe_health(seen, wire.health_answers(deadline), time.time())
        body = wire.read_optional(seen.endpoint, deadline, cap=wire.POLL_CAP)
    except HostError as exc:
        if exc.type is ErrorType.TLS and seen.repin_required and not seen.repinned:
            # The appliance now presents the certificate we uploaded: follow it, once.
            return Look(seen.model_copy(update={"repinned": True}))
        if exc.type in (ErrorType.CONNECTION, ErrorType.TIMEOUT):
            return Look(seen)  # services restart during an update: look again
        raise
    if op.follow is Follow.READBACK:
        return observe_read_back(op, seen, body, wanted or {})
    if body is None:
        return Look(seen)  # the status file is not written yet
    current = observe_status(op, seen, body, time.time(), wire.scrub)
    if current.seen.ours:
        report(wire, op.action, body)
    return current


def watch(wire: ApplianceWire, op: Operation, seen: Seen, deadline: Deadline, *,
          seconds: float | None = None, wanted: Mapping[str, Any] | None = None,
          timeout: float | None = None) -> Look:
    """Look again and again until the operation ends, `seconds` pass (then it is still
    going), or the deadline does (a timeout error naming `timeout` seconds, by default
    the deadline's)."""
    until = time.monotonic() + seconds if seconds is not None else None
    current = Look(seen)
    for interval in intervals(REBOOT_POLL_CAP if op.follow is Follow.REBOOT else None):
        deadline.sleep(interval)
        if deadline.expired():
            return Look(current.seen, error=timed_out(op, current.seen,
                                                           timeout or deadline.seconds))
        current = look(wire, op, current.seen, deadline, wanted)
        if current.done or (until is not None and time.monotonic() >= until):
            return current
    raise AssertionError("unreachable")  # pragma: no cover


def intervals(cap: float | None = None) -> Iterator[float]:
    for seconds in POLL_SCHEDULE:
        yield min(seconds, cap) if cap else seconds
    while True:
        yield min(POLL_SCHEDULE[-1], cap) if cap else POLL_SCHEDULE[-1]


def report(wire: ApplianceWire, action: str, body: Mapping[str, Any]) -> None:
    progress = wire.context.progress
    if progress is None:
        return
    with contextlib.suppress(Exception):  # a progress hook never fails the action
        progress({"host": wire.host.id, "action": action, "status": body.get("status"),
                  "percentage": body.get("percentage")})
