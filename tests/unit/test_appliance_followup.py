"""The follow-up of a long appliance operation, rule by rule (drivers/appliance_admin/
operations.py): pure observations, and one look through a small fake wire for the edges
the appliance double cannot produce on demand (a TLS change mid-poll, a 5xx)."""

from __future__ import annotations

from typing import Any, cast

import pytest

from mailfleet.drivers.appliance import OPERATIONS, Seen
from mailfleet.drivers.appliance_admin.operations import (
    STALE_GRACE,
    Follow,
    contains,
    failure,
    look,
    observe_health,
    observe_read_back,
    observe_status,
    timed_out,
    watch,
)
from mailfleet.drivers.appliance_admin.wire import ApplianceWire
from mailfleet.drivers.base import Deadline, DriverContext
from mailfleet.errors import ErrorType, HostError

UPDATE, BACKUP, CERTS = OPERATIONS["update"], OPERATIONS["backup"], OPERATIONS["certs.set"]
SETTINGS, REBOOT = OPERATIONS["settings.set"], OPERATIONS["reboot"]
LINGERING = {"status": "failed", "percentage": 0, "log": "refused", "error-code": "E1004"}


def seen(action: str = "update", **fields: Any) -> Seen:
    endpoint = OPERATIONS[action].endpoint
    return Seen(action=action, endpoint=endpoint, started=1000.0, **fields)


# ---- status operations -------------------------------------------------------------------


def test_a_status_equal_to_the_baseline_is_the_old_one() -> None:
    first = observe_status(UPDATE, seen(baseline=LINGERING), dict(LINGERING), 1001.0)
    assert not first.done and not first.seen.ours and first.seen.last is None
    running = {"status": "running", "percentage": 10, "log": "started"}
    second = observe_status(UPDATE, first.seen, running, 1002.0)
    assert second.seen.ours and second.seen.seen_running and not second.done
    # Once a status was ours, a later one equal to the baseline is ours too.
    third = observe_status(UPDATE, second.seen, dict(LINGERING), 1003.0)
    assert third.error is not None and third.error.code == "E1004"


def test_no_baseline_means_the_first_status_is_ours() -> None:
    done = observe_status(BACKUP, seen("backup"), {"status": "success", "sha256": "ab"}, 1.0)
    assert done.output == {"status": "success", "sha256": "ab"}


def test_a_backup_identical_to_the_last_one_counts_after_the_grace() -> None:
    old = {"status": "success", "filesize": "1K", "sha256": "ab"}
    within = observe_status(BACKUP, seen("backup", baseline=old), dict(old), 1000.0 + 1)
    assert not within.done
    after = observe_status(BACKUP, seen("backup", baseline=old), dict(old),
                           1000.0 + STALE_GRACE + 1)
    assert after.output == old
    # Other operations have no grace: an unchanged status is never theirs.
    assert not observe_status(UPDATE, seen(baseline=LINGERING), dict(LINGERING), 9e9).done


@pytest.mark.parametrize("body", [{"status": None, "percentage": None, "log": None},
                                  {"status": "running", "percentage": 50}])
def test_null_and_running_poll_again(body: dict[str, Any]) -> None:
    current = observe_status(UPDATE, seen(), body, 1.0)
    assert not current.done and current.seen.last == body


@pytest.mark.parametrize("key", ["error-code", "error_code"])
def test_the_failure_code_under_either_name(key: str) -> None:
    body = {"status": "failed", key: "E1002", "log": "a\\nb"}
    error = observe_status(UPDATE, seen(), body, 1.0).error
    assert error is not None and error.type is ErrorType.COMMAND and error.code == "E1002"
    assert error.message == "update failed: error during the update process"


@pytest.mark.parametrize("key", ["error-message", "error_message"])
def test_the_appliance_message_wins_over_the_code_table(key: str) -> None:
    error = failure("update", {"status": "failed", "error-code": "E1003",
                               key: "Missing update package"}, False)
    assert error.message == "update failed: Missing update package"
    assert error.details == {"status": "failed", "error_code": "E1003",
                             **({"error_message": "Missing update package"}
                                if key == "error-message" else {})}


def test_a_failure_without_code_or_message() -> None:
    error = failure("backup", {"status": "failed"}, False)
    assert error.code == "failed" and error.message == "backup failed: failed"


def test_e1004_after_our_update_ran_says_it_hides_our_outcome() -> None:
    running = observe_status(UPDATE, seen(), {"status": "running", "percentage": 20}, 1.0)
    refused = observe_status(UPDATE, running.seen, dict(LINGERING), 2.0).error
    assert refused is not None and refused.code == "E1004"
    assert "no longer shows this update's outcome" in refused.message
    # Without having seen ours run, E1004 is the refusal of our own POST.
    fresh = observe_status(UPDATE, seen(), dict(LINGERING), 1.0).error
    assert fresh is not None and fresh.message == "update failed: an update was already running"
    # ...and the rule is the update's only.
    other = failure("certs.set", dict(LINGERING), True)
    assert "no longer shows" not in other.message


def test_the_servers_text_is_cleaned_before_it_reaches_a_message() -> None:
    body = {"status": "failed", "error-message": "bad token s3cret"}
    error = observe_status(UPDATE, seen(), body, 1.0,
                           clean=lambda text: text.replace("s3cret", "[redacted]")).error
    assert error is not None and "s3cret" not in error.message


# ---- read-back and reboot ----------------------------------------------------------------


def test_a_read_back_ends_once_get_shows_what_was_posted() -> None:
    wanted = {"network": {"interface": "eth0", "hostname": "a.example"}}
    assert not observe_read_back(SETTINGS, seen("settings.set"), None, wanted).done
    older = {"network": {"interface": "eth0", "hostname": "old.example"}}
    assert not observe_read_back(SETTINGS, seen("settings.set"), older, wanted).done
    shown = {"network": {"interface": "eth0", "hostname": "a.example", "mode": "dhcp"},
             "app": {"name": "x"}}
    done = observe_read_back(SETTINGS, seen("settings.set"), shown, wanted)
    assert done.output == {"status": "success", "settings": shown}
    storage = observe_read_back(OPERATIONS["storage.set"], seen("storage.set"),
                                {"storage": {"type": "local"}}, {"storage": {"type": "local"}})
    assert storage.output == {"status": "success", "storage": {"storage": {"type": "local"}}}


def test_contains_is_recursive_and_allows_extras() -> None:
    assert contains({"a": {"b": 1, "c": 2}, "d": 3}, {"a": {"b": 1}})
    assert not contains({"a": {"b": 2}}, {"a": {"b": 1}})
    assert not contains({"a": 1}, {"a": {"b": 1}})


def test_a_reboot_is_done_once_health_went_away_and_answers_again() -> None:
    still_up = observe_health(seen("reboot"), True, 1001.0)
    assert not still_up.done and still_up.seen.away_since is None
    away = observe_health(still_up.seen, False, 1002.0)
    assert not away.done and away.seen.away_since == 1002.0
    still_away = observe_health(away.seen, False, 1003.0)
    assert still_away.seen.away_since == 1002.0
    back = observe_health(still_away.seen, True, 1004.5)
    assert back.output == {"status": "back", "away_seconds": 2.5, "total_seconds": 4.5}


def test_timeouts_name_what_was_last_seen() -> None:
    plain = timed_out(UPDATE, seen(), 30)
    assert plain.type is ErrorType.TIMEOUT and plain.message == "update did not finish within 30 s"
    running = timed_out(BACKUP, seen("backup", last={"status": "running"}), 1)
    assert running.message == "backup did not finish within 1 s (last status: running)"
    assert running.details == {"last": {"status": "running"}}
    never_away = timed_out(REBOOT, seen("reboot"), 5)
    assert "never went away within 5 s" in never_away.message
    never_back = timed_out(REBOOT, seen("reboot", away_since=1.0), 5)
    assert "never came back within 5 s" in never_back.message


def test_seen_survives_the_state_machines_json() -> None:
    state = seen("certs.set", baseline={"status": None}, ours=True, pin_sha256="ab" * 32,
                 repin_required=True)
    assert Seen.model_validate(state.model_dump(mode="json")) == state


# ---- one look, through a fake wire --------------------------------------------------------


class FakeWire:
    """Answers of a wire, one per look: a dict/None body, a bool (health) or an error."""

    POLL_CAP = 1.0

    def __init__(self, *answers: Any) -> None:
        self.answers = list(answers)
        self.trusted: str | None = None
        self.context = DriverContext()
        self.host = type("H", (), {"id": "fake"})()

    @property
    def trusts_new_pin(self) -> bool:
        return self.trusted is not None

    def trust_pin(self, pin: str) -> None:
        self.trusted = pin

    def scrub(self, text: str) -> str:
        return text

    def _next(self) -> Any:
        answer = self.answers.pop(0)
        if isinstance(answer, HostError):
            raise answer
        return answer

    def read_optional(self, endpoint: str, deadline: Deadline, *, cap: float | None = None
                      ) -> Any:
        return self._next()

    def health_answers(self, deadline: Deadline) -> Any:
        return self._next()


def wire(*answers: Any) -> ApplianceWire:
    return cast(ApplianceWire, FakeWire(*answers))


@pytest.mark.parametrize("kind", [ErrorType.CONNECTION, ErrorType.TIMEOUT])
def test_unreachable_or_slow_is_looked_at_again(kind: ErrorType) -> None:
    current = look(wire(HostError(kind, "restarting")), UPDATE, seen(), Deadline.after(5))
    assert not current.done and current.seen == seen()


def test_any_other_error_fails_the_operation() -> None:
    with pytest.raises(HostError) as info:
        look(wire(HostError(ErrorType.COMMAND, "/update answered 500", code=500)), UPDATE,
             seen(), Deadline.after(5))
    assert info.value.code == 500


def test_nothing_written_yet_is_looked_at_again() -> None:
    assert not look(wire(None), BACKUP, seen("backup"), Deadline.after(5)).done


def test_a_tls_change_after_our_certs_set_is_followed_once() -> None:
    tls = HostError(ErrorType.TLS, "certificate does not match the pin")
    ours = seen("certs.set", pin_sha256="cd" * 32, repin_required=True)
    fake = wire(tls, {"status": "success", "log": "ok"}, tls)
    first = look(fake, CERTS, ours, Deadline.after(5))
    assert first.seen.repinned and not first.done
    second = look(fake, CERTS, first.seen, Deadline.after(5))
    assert cast(FakeWire, fake).trusted == "cd" * 32 and second.output is not None
    with pytest.raises(HostError):  # a second TLS failure is not ours to follow
        look(fake, CERTS, second.seen, Deadline.after(5))
    # Without a new certificate of ours, a TLS failure fails at once.
    with pytest.raises(HostError):
        look(wire(tls), CERTS, seen("certs.set", pin_sha256="cd" * 32), Deadline.after(5))


def test_watch_stops_after_one_look_or_at_the_deadline() -> None:
    fake = wire({"status": "running"}, {"status": "running"})
    once = watch(fake, UPDATE, seen(), Deadline.after(5), seconds=0)
    assert not once.done and len(cast(FakeWire, fake).answers) == 1
    ended = watch(wire(*[True] * 100), REBOOT, seen("reboot"), Deadline.after(0.2),
                  timeout=30)
    assert ended.error is not None and ended.error.type is ErrorType.TIMEOUT
    assert "never went away within 30 s" in ended.error.message
    assert OPERATIONS["reboot"].follow is Follow.REBOOT
