"""What makes the in-process engine fast, and its safeguards: one thread per concurrency
slot, reused from host to host (starting a thread per host cost more than the request
itself at a thousand hosts), a fresh one for each slot whose host was abandoned, and a
bound on the per-host connection pools a warm worker keeps. tests/unit/test_fanout.py
covers the rest of the engine."""

from __future__ import annotations

import threading
import time
from typing import Any

import pytest

from mailfleet import fanout
from mailfleet.drivers.base import Deadline
from mailfleet.fanout import HostSlots, run
from mailfleet.models.hosts import Host
from tests.unit.test_fanout import ListSink, hosts


def test_threads_are_reused_across_hosts() -> None:
    seen: set[int] = set()
    lock = threading.Lock()

    def perform(host: Host, deadline: Deadline) -> Any:
        with lock:
            seen.add(threading.get_ident())
        time.sleep(0.001)
        return "ok"

    sink = ListSink()
    summary = run(hosts(300), perform, sink, concurrency=5, timeout_seconds=5, slots=HostSlots())
    assert summary.counts == {"SUCCEEDED": 300}
    assert len(seen) <= 5


def test_a_hung_host_gives_its_slot_to_a_new_thread(monkeypatch: pytest.MonkeyPatch) -> None:
    # One slot, and its first host hangs: without a replacement thread the other hosts
    # would wait for ever behind it.
    monkeypatch.setattr(fanout, "GRACE_SECONDS", 0.1)
    release = threading.Event()
    ran_on: dict[str, int] = {}
    hung: list[threading.Thread] = []

    def perform(host: Host, deadline: Deadline) -> Any:
        ran_on[host.id] = threading.get_ident()
        if host.id == "h0000":
            hung.append(threading.current_thread())
            release.wait(30)
        return "ok"

    sink = ListSink()
    t0 = time.monotonic()
    summary = run(hosts(6), perform, sink, concurrency=1, timeout_seconds=0.3, slots=HostSlots())
    elapsed = time.monotonic() - t0
    assert summary.counts == {"TIMED_OUT": 1, "SUCCEEDED": 5}
    assert elapsed < 2.0
    # The hung thread never took another host; the rest ran on its replacement.
    assert ran_on["h0000"] not in {ran_on[f"h{i:04d}"] for i in range(1, 6)}
    release.set()
    hung[0].join(10)  # the hung thread returns now: its late answer is not recorded again
    assert not hung[0].is_alive()
    assert len(sink.results) == 6


def test_idle_host_pools_are_let_go_past_the_bound(monkeypatch: pytest.MonkeyPatch) -> None:
    from mailfleet.drivers import http

    monkeypatch.setattr(http, "MAX_POOLED_HOSTS", 3)
    http.forget_sessions()
    first = Host(id="pool-0", kind="dovecot", endpoint="http://127.0.0.1:1")
    pool, _ = http._pool_for(first)
    for i in range(1, 5):
        http._pool_for(Host(id=f"pool-{i}", kind="dovecot", endpoint=f"http://127.0.0.1:{i}"))
    assert len(http._pools) == 3
    assert pool.pool is None  # closed: its idle sockets are gone
    assert http._pool_for(first)[0] is not pool  # made again when needed
    http.forget_sessions()
