"""The fan-out engine on its own: caps, deadlines, hangs, cancellation, max_errors."""

from __future__ import annotations

import threading
import time
from typing import Any

import pytest

from mailfleet import fanout
from mailfleet.drivers.base import Deadline
from mailfleet.errors import ErrorType, HostError
from mailfleet.fanout import HostSlots, LocalErrorBudget, run
from mailfleet.models.hosts import Host


class ListSink:
    def __init__(self) -> None:
        self.results: list[dict[str, Any]] = []
        self._lock = threading.Lock()

    def record(self, result: dict[str, Any]) -> None:
        with self._lock:
            self.results.append(result)

    def by_host(self) -> dict[str, dict[str, Any]]:
        return {r["host"]: r for r in self.results}


def hosts(n: int, max_concurrency: int = 4, prefix: str = "h") -> list[Host]:
    return [
        Host(
            id=f"{prefix}{i:04d}",
            kind="dovecot",
            endpoint="http://127.0.0.1:1",
            max_concurrency=max_concurrency,
        )
        for i in range(n)
    ]


class Gauge:
    """Counts how many calls are inside at once."""

    def __init__(self) -> None:
        self.now = 0
        self.peak = 0
        self.lock = threading.Lock()

    def __enter__(self) -> None:
        with self.lock:
            self.now += 1
            self.peak = max(self.peak, self.now)

    def __exit__(self, *exc: object) -> None:
        with self.lock:
            self.now -= 1


def test_every_host_gets_one_result_and_concurrency_is_capped() -> None:
    gauge = Gauge()

    def perform(host: Host, deadline: Deadline) -> Any:
        deadline.attempt()
        with gauge:
            time.sleep(0.02)
        return {"host": host.id}

    sink = ListSink()
    summary = run(hosts(60), perform, sink, concurrency=7, timeout_seconds=5, slots=HostSlots())
    assert len(sink.results) == 60
    assert len(sink.by_host()) == 60
    assert summary.counts["SUCCEEDED"] == 60
    assert gauge.peak == 7
    first = sink.by_host()["h0000"]
    assert first["output"] == {"host": "h0000"}
    assert first["attempts"] == 1 and first["duration_ms"] >= 20


def test_per_host_cap_holds_across_concurrent_jobs() -> None:
    # Two jobs on the same host at once: the host's own max_concurrency (2) still holds.
    shared = hosts(1, max_concurrency=2)[0]
    gauge = Gauge()
    slots = HostSlots()

    def perform(host: Host, deadline: Deadline) -> Any:
        with gauge:
            time.sleep(0.1)
        return "ok"

    sinks = [ListSink() for _ in range(5)]
    threads = [
        threading.Thread(
            target=run,
            args=([shared], perform, sink),
            kwargs={"concurrency": 5, "timeout_seconds": 5, "slots": slots},
        )
        for sink in sinks
    ]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert gauge.peak == 2
    assert all(s.results[0]["status"] == "SUCCEEDED" for s in sinks)


def test_a_hanging_host_is_abandoned_at_its_deadline(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(fanout, "GRACE_SECONDS", 0.2)
    release = threading.Event()

    def perform(host: Host, deadline: Deadline) -> Any:
        if host.id == "h0001":
            release.wait(30)  # ignores its deadline, like a wedged socket
        return "ok"

    sink = ListSink()
    t0 = time.monotonic()
    summary = run(hosts(3), perform, sink, concurrency=3, timeout_seconds=0.5, slots=HostSlots())
    elapsed = time.monotonic() - t0
    release.set()
    results = sink.by_host()
    assert results["h0001"]["status"] == "TIMED_OUT"
    assert results["h0001"]["error"]["type"] == "timeout"
    assert results["h0000"]["status"] == results["h0002"]["status"] == "SUCCEEDED"
    assert summary.counts == {"SUCCEEDED": 2, "TIMED_OUT": 1}
    assert elapsed < 2.0


def test_a_driver_timeout_is_timed_out_and_other_errors_failed() -> None:
    def perform(host: Host, deadline: Deadline) -> Any:
        if host.id == "h0000":
            raise HostError(ErrorType.TIMEOUT, "slow")
        if host.id == "h0001":
            raise HostError(ErrorType.EXIT_CODE, "no such user", code=67)
        raise ZeroDivisionError  # a driver bug

    sink = ListSink()
    run(hosts(3), perform, sink, concurrency=3, timeout_seconds=5, slots=HostSlots())
    results = sink.by_host()
    assert results["h0000"]["status"] == "TIMED_OUT"
    assert results["h0001"]["error"] == {
        "type": "exitCode",
        "code": 67,
        "message": "no such user",
        "retryable": False,
    }
    assert results["h0002"]["status"] == "FAILED"
    assert "ZeroDivisionError" in results["h0002"]["error"]["message"]


def test_max_errors_stops_starting_hosts_and_skips_the_rest() -> None:
    def perform(host: Host, deadline: Deadline) -> Any:
        raise HostError(ErrorType.CONNECTION, "refused")

    sink = ListSink()
    summary = run(
        hosts(20),
        perform,
        sink,
        concurrency=1,
        timeout_seconds=5,
        budget=LocalErrorBudget(3),
        slots=HostSlots(),
    )
    assert summary.stopped_by == "max_errors"
    assert summary.counts == {"FAILED": 3, "SKIPPED": 17}
    skipped = [r for r in sink.results if r["status"] == "SKIPPED"]
    assert "max_errors" in skipped[0]["output"]["skipped"]


def test_cancellation_skips_hosts_not_yet_started() -> None:
    cancelled = threading.Event()
    started: list[str] = []

    def perform(host: Host, deadline: Deadline) -> Any:
        started.append(host.id)
        if len(started) == 4:
            cancelled.set()
        time.sleep(0.01)
        return "ok"

    sink = ListSink()
    summary = run(
        hosts(50),
        perform,
        sink,
        concurrency=2,
        timeout_seconds=5,
        should_stop=cancelled.is_set,
        slots=HostSlots(),
    )
    assert summary.stopped_by == "cancelled"
    assert len(sink.results) == 50
    assert summary.counts["SKIPPED"] >= 40
    assert summary.counts["SUCCEEDED"] == len(started)


def test_out_of_time_leaves_unstarted_hosts_for_a_resume() -> None:
    calls = {"n": 0}

    def out_of_time() -> bool:
        calls["n"] += 1
        return calls["n"] > 5

    sink = ListSink()
    summary = run(
        hosts(10),
        lambda h, d: "ok",
        sink,
        concurrency=1,
        timeout_seconds=5,
        out_of_time=out_of_time,
        slots=HostSlots(),
    )
    assert summary.stopped_by == "time"
    assert len(sink.results) == 5  # the other five get their result from the next worker


@pytest.mark.parametrize("engine", ["threads", "event loop"])
def test_out_of_time_reads_no_further_host(engine: str) -> None:
    """The hosts come from the inventory as they are read (Jobs.run_hosts): a worker out
    of time stops there, without reading the rest (they are the next worker's)."""
    taken: list[str] = []

    def as_read() -> Any:
        for host in hosts(50):
            taken.append(host.id)
            yield host

    calls = {"n": 0}

    def out_of_time() -> bool:
        calls["n"] += 1
        return calls["n"] > 5

    async def perform_async(host: Host, deadline: Deadline) -> str:
        return "ok"

    sink = ListSink()
    rules: dict[str, Any] = {"concurrency": 1, "timeout_seconds": 5,
                             "out_of_time": out_of_time, "slots": HostSlots()}
    if engine == "threads":
        summary = run(as_read(), lambda h, d: "ok", sink, **rules)
    else:
        summary = fanout.run_async(as_read(), perform_async, sink, **rules)
    assert summary.stopped_by == "time"
    assert len(sink.results) == 5
    assert len(taken) == 6  # the five that ran, and the one that found the time up


def test_large_outputs_are_cut_and_say_so() -> None:
    sink = ListSink()
    run(
        hosts(1),
        lambda h, d: "x" * 200_000,
        sink,
        concurrency=1,
        timeout_seconds=5,
        slots=HostSlots(),
    )
    output = sink.results[0]["output"]
    assert output["truncated"] is True and output["bytes"] > 200_000


def test_every_result_is_in_the_sink_when_run_returns() -> None:
    # A slow sink: run() must not return while a result is still on its way to it.
    class SlowSink(ListSink):
        def record(self, result: dict[str, Any]) -> None:
            time.sleep(0.05)
            super().record(result)

    for _ in range(5):
        sink = SlowSink()
        run(hosts(8), lambda h, d: "ok", sink, concurrency=8, timeout_seconds=5,
            slots=HostSlots())
        assert len(sink.results) == 8


@pytest.mark.parametrize("nanos", [
    0, 999, 1_000, 1_700_000_000_123_456_789, 1_700_000_000_999_999_999,
    1_700_000_001_000_000_000, 1_704_067_199_999_999_000, 1_704_067_200_000_001_000,
])
def test_result_timestamps_are_now_iso_to_the_microsecond(
        nanos: int, monkeypatch: pytest.MonkeyPatch) -> None:
    """The engine's own clock text (a second's text reused) is what now_iso writes for
    the same instant, across second, day and year boundaries."""
    import datetime

    monkeypatch.setattr(fanout.time, "time_ns", lambda: nanos)
    instant = (datetime.datetime(1970, 1, 1, tzinfo=datetime.UTC)
               + datetime.timedelta(microseconds=nanos // 1000))
    assert fanout._now_iso() == instant.strftime("%Y-%m-%dT%H:%M:%S.%fZ")
