"""The event-loop engine (fanout.run_async) keeps every guarantee of the threaded one:
caps, per-host caps shared with threaded jobs, abandonment at the deadline, max_errors,
cancel, out_of_time, exactly one result per host, all in the sink when it returns."""

from __future__ import annotations

import asyncio
import threading
import time
from typing import Any

import pytest

from mailfleet import fanout
from mailfleet.drivers.base import Deadline
from mailfleet.errors import ErrorType, HostError
from mailfleet.fanout import HostSlots, LocalErrorBudget, run, run_async
from mailfleet.models.hosts import Host
from tests.unit.test_fanout import Gauge, ListSink, hosts


def test_every_host_gets_one_result_and_concurrency_is_exactly_the_cap() -> None:
    gauge = Gauge()

    async def perform(host: Host, deadline: Deadline) -> Any:
        deadline.attempt()
        with gauge:
            await asyncio.sleep(0.02)
        return {"host": host.id}

    sink = ListSink()
    summary = run_async(hosts(300), perform, sink, concurrency=100, timeout_seconds=5,
                        slots=HostSlots())
    assert len(sink.results) == 300 and len(sink.by_host()) == 300
    assert summary.counts == {"SUCCEEDED": 300}
    assert gauge.peak == 100  # honest: as many in flight as asked, never more
    first = sink.by_host()["h0000"]
    assert first["output"] == {"host": "h0000"} and first["attempts"] == 1
    assert first["duration_ms"] >= 15 and first["finished_at"] >= first["started_at"]


def test_per_host_cap_holds_across_a_threaded_and_an_async_job() -> None:
    shared = hosts(1, max_concurrency=1)[0]
    slots = HostSlots()
    gauge = Gauge()

    def blocking(host: Host, deadline: Deadline) -> Any:
        with gauge:
            time.sleep(0.2)
        return "threads"

    async def perform(host: Host, deadline: Deadline) -> Any:
        with gauge:
            await asyncio.sleep(0.2)
        return "loop"

    threaded = ListSink()
    other = threading.Thread(target=run, args=([shared], blocking, threaded),
                             kwargs={"concurrency": 1, "timeout_seconds": 5, "slots": slots})
    other.start()
    time.sleep(0.05)
    sink = ListSink()
    run_async([shared], perform, sink, concurrency=1, timeout_seconds=5, slots=slots)
    other.join()
    assert gauge.peak == 1
    assert threaded.results[0]["status"] == sink.results[0]["status"] == "SUCCEEDED"


def test_no_free_host_slot_before_the_deadline_is_a_timeout() -> None:
    shared = hosts(1, max_concurrency=1)[0]
    slots = HostSlots()
    slots.for_host(shared).acquire()  # another job holds the host's only slot
    sink = ListSink()
    run_async([shared], lambda h, d: asyncio.sleep(0), sink, concurrency=1,
              timeout_seconds=0.2, slots=slots)
    assert sink.results[0]["status"] == "TIMED_OUT"
    assert "no free slot" in sink.results[0]["error"]["message"]


def test_a_hanging_host_is_abandoned_at_its_deadline(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(fanout, "GRACE_SECONDS", 0.2)
    cancelled: list[str] = []

    async def perform(host: Host, deadline: Deadline) -> Any:
        if host.id == "h0001":
            try:
                await asyncio.sleep(30)  # ignores its deadline
            except asyncio.CancelledError:
                cancelled.append(host.id)
                raise
        return "ok"

    sink = ListSink()
    t0 = time.monotonic()
    summary = run_async(hosts(3), perform, sink, concurrency=3, timeout_seconds=0.5,
                        slots=HostSlots())
    assert time.monotonic() - t0 < 2.0
    results = sink.by_host()
    assert results["h0001"]["status"] == "TIMED_OUT"
    assert "abandoned" in results["h0001"]["error"]["message"]
    assert summary.counts == {"SUCCEEDED": 2, "TIMED_OUT": 1}
    assert cancelled == ["h0001"]  # its request is really stopped, not left running


def test_driver_timeouts_errors_and_bugs() -> None:
    async def perform(host: Host, deadline: Deadline) -> Any:
        if host.id == "h0000":
            raise HostError(ErrorType.TIMEOUT, "slow")
        if host.id == "h0001":
            raise HostError(ErrorType.EXIT_CODE, "no such user", code=67)
        if host.id == "h0002":
            raise TimeoutError  # not the engine's timer: a driver bug
        raise ZeroDivisionError

    sink = ListSink()
    run_async(hosts(4), perform, sink, concurrency=4, timeout_seconds=5, slots=HostSlots())
    results = sink.by_host()
    assert results["h0000"]["status"] == "TIMED_OUT"
    assert results["h0001"]["error"]["code"] == 67
    assert results["h0002"]["status"] == results["h0003"]["status"] == "FAILED"
    assert "ZeroDivisionError" in results["h0003"]["error"]["message"]


class SlowSharedBudget:
    """Like the Distributed Map's counter: failed() blocks (a DynamoDB write)."""

    def __init__(self, limit: int) -> None:
        self.inner = LocalErrorBudget(limit)
        self.threads: set[str] = set()

    def may_start(self) -> bool:
        return self.inner.may_start()

    def failed(self) -> None:
        self.threads.add(threading.current_thread().name)
        time.sleep(0.01)
        self.inner.failed()


def test_max_errors_stops_starting_hosts_and_skips_the_rest() -> None:
    async def perform(host: Host, deadline: Deadline) -> Any:
        raise HostError(ErrorType.CONNECTION, "refused")

    budget = SlowSharedBudget(3)
    sink = ListSink()
    summary = run_async(hosts(20), perform, sink, concurrency=1, timeout_seconds=5,
                        budget=budget, slots=HostSlots())
    assert summary.stopped_by == "max_errors"
    assert summary.counts == {"FAILED": 3, "SKIPPED": 17}
    assert len(sink.by_host()) == 20
    assert threading.current_thread().name not in budget.threads  # kept off the loop


def test_cancellation_skips_hosts_not_yet_started() -> None:
    started: list[str] = []

    async def perform(host: Host, deadline: Deadline) -> Any:
        started.append(host.id)
        await asyncio.sleep(0.05)
        return "ok"

    sink = ListSink()
    # The cancel is read in a thread every WATCH_SECONDS (0.05 s): a few more hosts may
    # start after it is set, never the rest.
    summary = run_async(hosts(50), perform, sink, concurrency=2, timeout_seconds=5,
                        should_stop=lambda: len(started) >= 4, slots=HostSlots())
    assert summary.stopped_by == "cancelled"
    assert len(sink.by_host()) == 50
    assert summary.counts["SUCCEEDED"] == len(started) and summary.counts["SKIPPED"] >= 36
    skipped = [r for r in sink.results if r["status"] == "SKIPPED"]
    assert "cancelled" in skipped[0]["output"]["skipped"]


def test_out_of_time_leaves_unstarted_hosts_for_a_resume() -> None:
    calls = {"n": 0}

    def out_of_time() -> bool:
        calls["n"] += 1
        return calls["n"] > 5

    async def perform(host: Host, deadline: Deadline) -> Any:
        return "ok"

    sink = ListSink()
    summary = run_async(hosts(10), perform, sink, concurrency=1, timeout_seconds=5,
                        out_of_time=out_of_time, slots=HostSlots())
    assert summary.stopped_by == "time"
    assert len(sink.results) == 5


def test_every_result_is_in_the_sink_when_run_returns_and_outputs_are_bounded() -> None:
    async def perform(host: Host, deadline: Deadline) -> Any:
        await asyncio.sleep(0.01)
        return "x" * 200_000 if host.id == "h0000" else []

    sink = ListSink()
    run_async(hosts(8), perform, sink, concurrency=8, timeout_seconds=5, slots=HostSlots())
    assert len(sink.results) == 8
    assert sink.by_host()["h0000"]["output"]["truncated"] is True
    assert sink.by_host()["h0001"]["output"] == []
