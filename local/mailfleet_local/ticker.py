"""The local run's clock: moto stores EventBridge rules and Scheduler schedules but never
fires them, so the ticker does, with the events AWS would send.

Every tick it reads what moto holds now (so schedules the API created, paused, resumed or
deleted count at once, the template's as much as the API's), works out each one's next
run from its rate() or cron() expression (in its time zone), and fires the due ones:

- an EventBridge rule's targets get a "Scheduled Event" (or the target's constant Input);
- a Scheduler schedule's target gets its Input with Scheduler's context attributes
  (<aws.scheduler.scheduled-time> ...) filled in.

A Lambda target is invoked asynchronously (through the in-process bridge), a state
machine target gets an execution. A run missed while the ticker was busy fires once, late,
as Scheduler's flexible window would; runs are never made up in bulk.
"""

from __future__ import annotations

import datetime as dt
import json
import logging
import threading
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from mailfleet.schedule_expressions import ExpressionError, Rate, parse
from mailfleet_local.stack import LocalAws

# Not under `mailfleet`: Powertools' Logger(service=mailfleet) owns that one.
log = logging.getLogger("mailfleet-local.ticker")


@dataclass(frozen=True)
class Timer:
    """One schedule as moto holds it, with the one target it fires."""

    source: str  # "events" (an EventBridge rule) or "scheduler"
    name: str
    arn: str  # the rule's or the schedule's
    expression: str
    timezone: str | None
    enabled: bool
    target_arn: str
    input: str | None
    created: dt.datetime | None = None  # Scheduler's CreationDate: where rates count from
    group: str | None = None

    @property
    def key(self) -> tuple[str, str, str]:
        return (self.source, self.arn, self.target_arn)


@dataclass
class Fired:
    timer: Timer
    scheduled_time: dt.datetime
    payload: dict[str, Any]
    result: dict[str, Any] = field(default_factory=dict)  # what the invoke/start returned


def _iso(when: dt.datetime) -> str:
    return when.astimezone(dt.UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


class Ticker:
    def __init__(self, aws: LocalAws, *, interval: float = 1.0,
                 on_fire: Callable[[Fired], None] | None = None,
                 clock: Callable[[], dt.datetime] | None = None,
                 only: Callable[[Timer], bool] | None = None) -> None:
        """`only` picks the timers this ticker runs (tests share one moto among stacks)."""
        self.aws = aws
        self.interval = interval
        self.on_fire = on_fire
        self.only = only
        self._clock = clock or (lambda: dt.datetime.now(dt.UTC))
        self._next: dict[tuple[str, str, str], tuple[str, dt.datetime | None]] = {}
        self._first_seen: dict[tuple[str, str, str], dt.datetime] = {}
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self.fired: list[Fired] = []

    # ---------------------------------------------------------------- lifecycle
    def start(self) -> Ticker:
        self._stop.clear()
        self._thread = threading.Thread(target=self._loop, name="schedule-ticker", daemon=True)
        self._thread.start()
        return self

    def stop(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=10)
            self._thread = None

    def __enter__(self) -> Ticker:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def _loop(self) -> None:
        while not self._stop.wait(self.interval):
            try:
                self.tick()
            except Exception:  # a broken tick must not stop the clock
                log.exception("ticker: tick failed")

    # ---------------------------------------------------------------- what moto holds
    def timers(self) -> list[Timer]:
        timers = self._rules() + self._schedules()
        return [t for t in timers if self.only(t)] if self.only else timers

    def _rules(self) -> list[Timer]:
        events = self.aws.client("events")
        timers: list[Timer] = []
        for rule in _pages(events.list_rules, "Rules"):
            expression = rule.get("ScheduleExpression")
            if not expression:
                continue  # a pattern rule: fired by events, not by time
            targets = _pages(lambda name=rule["Name"], **kw: events.list_targets_by_rule(
                Rule=name, **kw), "Targets")
            for target in targets:
                timers.append(Timer("events", rule["Name"], rule["Arn"], expression, None,
                                    rule.get("State") == "ENABLED", target["Arn"],
                                    target.get("Input")))
        return timers

    def _schedules(self) -> list[Timer]:
        scheduler = self.aws.client("scheduler")
        timers: list[Timer] = []
        for group in _pages(scheduler.list_schedule_groups, "ScheduleGroups"):
            listed = _pages(lambda name=group["Name"], **kw: scheduler.list_schedules(
                GroupName=name, **kw), "Schedules")
            for summary in listed:
                try:
                    s = scheduler.get_schedule(Name=summary["Name"], GroupName=group["Name"])
                except scheduler.exceptions.ResourceNotFoundException:
                    continue  # deleted meanwhile
                target = s["Target"]
                timers.append(Timer("scheduler", s["Name"], s["Arn"], s["ScheduleExpression"],
                                    s.get("ScheduleExpressionTimezone"),
                                    s.get("State") == "ENABLED", target["Arn"],
                                    target.get("Input"), s.get("CreationDate"), group["Name"]))
        return timers

    # ---------------------------------------------------------------- firing
    def tick(self, now: dt.datetime | None = None) -> list[Fired]:
        """Fire every timer whose run is due; returns what was fired."""
        now = now or self._clock()
        fired: list[Fired] = []
        timers = self.timers()
        with self._lock:
            live = {t.key for t in timers}
            for key in [k for k in self._next if k not in live]:
                del self._next[key]
            due: list[tuple[Timer, dt.datetime]] = []
            for timer in timers:
                when = self._due(timer, now)
                if when is not None:
                    due.append((timer, when))
        for timer, when in due:
            fired.append(self._fire(timer, when))
        return fired

    def fire(self, name: str, *, group: str | None = None) -> Fired:
        """Fire one schedule or rule now, whatever its expression says (tests, demos)."""
        for timer in self.timers():
            if timer.name == name and (group is None or timer.group == group):
                return self._fire(timer, self._clock())
        raise KeyError(f"no schedule or rule named {name!r}")

    def _due(self, timer: Timer, now: dt.datetime) -> dt.datetime | None:
        """The run time if `timer` is due now (and plan its next one), else None."""
        if not timer.enabled:
            self._next.pop(timer.key, None)  # a resumed schedule counts from its resumption
            return None
        planned = self._next.get(timer.key)
        if planned is None or planned[0] != timer.expression:
            self._next[timer.key] = (timer.expression, self._after(timer, now))
            return None
        when = planned[1]
        if when is None or when > now:
            return None
        self._next[timer.key] = (timer.expression, self._after(timer, now))
        return when

    def _after(self, timer: Timer, now: dt.datetime) -> dt.datetime | None:
        try:
            parsed = parse(timer.expression)
        except ExpressionError:
            log.warning("ticker: %s has an expression it cannot read: %s", timer.name,
                        timer.expression)
            return None
        if isinstance(parsed, Rate):
            anchor = timer.created or self._first_seen.setdefault(timer.key, now)
            return parsed.next_after(now, anchor.astimezone(dt.UTC))
        return parsed.next_after(now, timer.timezone)

    def _fire(self, timer: Timer, when: dt.datetime) -> Fired:
        payload = self._payload(timer, when)
        fired = Fired(timer, when, payload)
        try:
            fired.result = self._deliver(timer.target_arn, payload)
        except Exception as exc:  # logged like a failed delivery, the clock goes on
            fired.result = {"error": f"{type(exc).__name__}: {exc}"}
            log.warning("ticker: delivering %s to %s failed: %s", timer.name,
                        timer.target_arn, exc)
        log.info("ticker: fired %s %s (%s) -> %s", timer.source, timer.name,
                 timer.expression, timer.target_arn)
        with self._lock:
            self.fired.append(fired)
        if self.on_fire is not None:
            self.on_fire(fired)
        return fired

    def _payload(self, timer: Timer, when: dt.datetime) -> dict[str, Any]:
        if timer.source == "events":
            if timer.input is not None:
                return json.loads(timer.input)
            return {
                "version": "0",
                "id": str(uuid.uuid4()),
                "detail-type": "Scheduled Event",
                "source": "aws.events",
                "account": self.aws.account_id,
                "time": _iso(when),
                "region": self.aws.region,
                "resources": [timer.arn],
                "detail": {},
            }
        text = timer.input or "{}"
        for placeholder, value in (
            ("<aws.scheduler.schedule-arn>", timer.arn),
            ("<aws.scheduler.scheduled-time>", _iso(when)),
            ("<aws.scheduler.execution-id>", str(uuid.uuid4())),
            ("<aws.scheduler.attempt-number>", "1"),
        ):
            text = text.replace(placeholder, value)
        return json.loads(text)

    def _deliver(self, target_arn: str, payload: dict[str, Any]) -> dict[str, Any]:
        body = json.dumps(payload)
        if ":function:" in target_arn:
            answer = self.aws.client("lambda").invoke(
                FunctionName=target_arn, InvocationType="Event", Payload=body.encode())
            return {"status_code": answer["StatusCode"]}
        if ":stateMachine:" in target_arn:
            answer = self.aws.client("stepfunctions").start_execution(
                stateMachineArn=target_arn, name=uuid.uuid4().hex, input=body)
            return {"execution_arn": answer["executionArn"]}
        raise ValueError(f"the local ticker cannot deliver to {target_arn}")


def _pages(call: Callable[..., dict[str, Any]], key: str) -> list[dict[str, Any]]:
    items: list[dict[str, Any]] = []
    token: str | None = None
    while True:
        answer = call(**({"NextToken": token} if token else {}))
        items.extend(answer.get(key, []))
        token = answer.get("NextToken")
        if not token:
            return items
