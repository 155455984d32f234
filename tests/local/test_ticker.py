"""The local ticker's clock, with a fake clock and fake timers (no moto): rate() counts
from the schedule's creation, cron() from the calendar; paused schedules stay silent and
resume counting from their resumption; the events look like AWS's."""

from __future__ import annotations

import datetime as dt
import json
from types import SimpleNamespace
from typing import Any

from mailfleet_local.ticker import Ticker, Timer

T0 = dt.datetime(2026, 11, 21, 10, 0, 0, tzinfo=dt.UTC)
FUNCTION = "arn:aws:lambda:us-east-1:123456789012:function:mailfleet-maintenance"
MACHINE = "arn:aws:states:us-east-1:123456789012:stateMachine:mailfleet-x"


class FakeTicker(Ticker):
    def __init__(self, timers: list[Timer]) -> None:
        super().__init__(SimpleNamespace(account_id="123456789012", region="us-east-1"))  # type: ignore[arg-type]
        self.current = timers
        self.delivered: list[tuple[str, dict[str, Any]]] = []

    def timers(self) -> list[Timer]:
        return list(self.current)

    def _deliver(self, target_arn: str, payload: dict[str, Any]) -> dict[str, Any]:
        self.delivered.append((target_arn, payload))
        return {}


def rule(expression: str, enabled: bool = True, **kw: Any) -> Timer:
    return Timer("events", "sweep", "arn:aws:events:us-east-1:123456789012:rule/sweep",
                 expression, None, enabled, FUNCTION, None, **kw)


def schedule(expression: str, enabled: bool = True, **kw: Any) -> Timer:
    payload = {"task": "scheduled-job", "schedule": "nightly",
               "scheduled_time": "<aws.scheduler.scheduled-time>",
               "execution_id": "<aws.scheduler.execution-id>",
               "schedule_arn": "<aws.scheduler.schedule-arn>",
               "attempt": "<aws.scheduler.attempt-number>"}
    fields = {"timezone": None, "created": T0, "group": "mailfleet-schedules", **kw}
    return Timer("scheduler", "nightly",
                 "arn:aws:scheduler:us-east-1:123456789012:schedule/mailfleet-schedules/nightly",
                 expression, fields.pop("timezone"), enabled, FUNCTION, json.dumps(payload),
                 **fields)


def at(minutes: float) -> dt.datetime:
    return T0 + dt.timedelta(minutes=minutes)


def test_a_rate_rule_fires_every_period_with_a_scheduled_event() -> None:
    ticker = FakeTicker([rule("rate(5 minutes)")])
    assert ticker.tick(at(0)) == []  # first seen: the first run is a period later
    assert ticker.tick(at(4.9)) == []
    fired = ticker.tick(at(5))
    assert len(fired) == 1 and fired[0].scheduled_time == at(5)
    event = ticker.delivered[0][1]
    assert event["detail-type"] == "Scheduled Event" and event["source"] == "aws.events"
    assert event["time"] == "2026-11-21T10:05:00Z" and event["detail"] == {}
    assert event["resources"] == ["arn:aws:events:us-east-1:123456789012:rule/sweep"]
    assert ticker.tick(at(6)) == []
    # A late tick fires the missed run once, not every run it missed.
    assert len(ticker.tick(at(31))) == 1
    assert ticker.tick(at(32)) == []


def test_a_cron_schedule_fires_on_the_calendar_with_schedulers_payload() -> None:
    ticker = FakeTicker([schedule("cron(0 2 * * ? *)")])
    ticker.tick(at(0))
    assert ticker.tick(at(15 * 60 - 1)) == []  # 01:59 next day
    fired = ticker.tick(at(16 * 60))  # 02:00
    assert len(fired) == 1
    payload = ticker.delivered[0][1]
    assert payload["scheduled_time"] == "2026-11-22T02:00:00Z"
    assert payload["schedule_arn"].endswith("schedule/mailfleet-schedules/nightly")
    assert payload["attempt"] == "1" and len(payload["execution_id"]) == 36


def test_cron_in_a_time_zone() -> None:
    ticker = FakeTicker([schedule("cron(0 2 * * ? *)", timezone="Europe/Berlin")])
    ticker.tick(at(0))
    assert len(ticker.tick(at(15 * 60))) == 1  # 01:00 UTC is 02:00 in Berlin


def test_a_paused_schedule_is_silent_and_resumes_from_its_resumption() -> None:
    timer = rule("rate(10 minutes)")
    ticker = FakeTicker([timer])
    ticker.tick(at(0))
    ticker.current = [rule("rate(10 minutes)", enabled=False)]
    assert ticker.tick(at(10)) == [] and ticker.tick(at(30)) == []
    ticker.current = [timer]
    assert ticker.tick(at(31)) == []  # resumed: planned again, nothing owed
    assert len(ticker.tick(at(40))) == 1


def test_deleted_and_changed_schedules() -> None:
    ticker = FakeTicker([rule("rate(5 minutes)")])
    ticker.tick(at(0))
    ticker.current = []
    assert ticker.tick(at(5)) == []
    ticker.current = [rule("rate(1 hour)")]
    ticker.tick(at(6))
    assert ticker.tick(at(20)) == []
    assert len(ticker.tick(at(60))) == 1


def test_a_rule_with_constant_input_sends_it_and_state_machines_get_executions() -> None:
    constant = Timer("events", "x", "arn:aws:events:us-east-1:123456789012:rule/x",
                     "rate(1 minute)", None, True, MACHINE, '{"a": 1}')
    ticker = FakeTicker([constant])
    fired = ticker.fire("x")
    assert fired.payload == {"a": 1} and ticker.delivered == [(MACHINE, {"a": 1})]
