"""The fan-out engine: one action on many hosts with bounded concurrency.

Guarantees, whatever the hosts do: at most `concurrency` hosts in flight; at most a
host's own `max_concurrency` actions on it at once across every job in this process;
no host runs past its deadline (a host that hangs is abandoned and marked TIMED_OUT);
once `max_errors` failures are counted or the job is cancelled no further host is
started and those left are SKIPPED; every host gets exactly one result.

Two engines give them: `run` (a thread per host in flight, reused from host to host) for
drivers that block, and `run_async` (one event loop) for drivers with `perform_async`
(doveadm), which costs a third of the CPU per host-action.
"""

from __future__ import annotations

import asyncio
import itertools
import json
import os
import threading
import time
from collections import Counter
from collections.abc import Awaitable, Callable, Iterable
from dataclasses import dataclass, field
from queue import SimpleQueue
from typing import Any, NotRequired, Protocol, TypedDict, Unpack

from mailfleet.drivers.base import Deadline
from mailfleet.errors import ErrorType, HostError
from mailfleet.models.hosts import Host
from mailfleet.models.jobs import HostResult, ResultStatus

# A host whose driver ignores its deadline gets this much longer before we abandon it.
GRACE_SECONDS = 2.0
MAX_OUTPUT_BYTES = 64 * 1024

Perform = Callable[[Host, Deadline], Any]
PerformAsync = Callable[[Host, Deadline], Awaitable[Any]]
# While another job holds a host's every slot, a host waiting in the event loop looks again
# this often.
SLOT_POLL_SECONDS = 0.01
# How often the event-loop engine asks should_stop / a shared error budget (each caches
# its own reads: CachedCheck, SharedErrorBudget.REFRESH_SECONDS).
WATCH_SECONDS = 0.05


class ResultSink(Protocol):
    def record(self, result: dict[str, Any]) -> None: ...


class ErrorBudget(Protocol):
    """Counts failures; says whether another host may start. Shared across batches on
    the distributed path (a DynamoDB counter), in memory otherwise."""

    def may_start(self) -> bool: ...

    def failed(self) -> None: ...


@dataclass
class LocalErrorBudget:
    limit: int | None
    count: int = 0
    _lock: threading.Lock = field(default_factory=threading.Lock)

    def may_start(self) -> bool:
        with self._lock:
            return self.limit is None or self.count < self.limit

    def failed(self) -> None:
        with self._lock:
            self.count += 1


class HostSlots:
    """Per-host concurrency caps shared by every job running in this process."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._slots: dict[str, tuple[int, threading.BoundedSemaphore]] = {}

    def for_host(self, host: Host) -> threading.BoundedSemaphore:
        with self._lock:
            size, sem = self._slots.get(host.id, (0, None))  # type: ignore[arg-type]
            if sem is None or size != host.max_concurrency:
                sem = threading.BoundedSemaphore(host.max_concurrency)
                self._slots[host.id] = (host.max_concurrency, sem)
            return sem


HOST_SLOTS = HostSlots()


@dataclass
class _Task:
    host: Host
    deadline: Deadline
    started: float
    started_at: str
    claimed: bool = False  # set by whoever records the result first (task or watchdog)


@dataclass
class Summary:
    counts: Counter[str]
    elapsed_s: float
    stopped_by: str | None = None  # "max_errors" | "cancelled" | "time" | None


class Rules(TypedDict):
    """What a job asks of its fan-out (FanOut's keyword arguments)."""

    concurrency: int
    timeout_seconds: float
    budget: NotRequired[ErrorBudget | None]
    should_stop: NotRequired[Callable[[], bool] | None]
    out_of_time: NotRequired[Callable[[], bool] | None]
    slots: NotRequired[HostSlots]


class FanOut:
    """One job's fan-out: what both engines share, one method per rule. Admission and
    the in-flight bound, per-host caps and abandonment are each engine's own (a thread
    blocks, a coroutine awaits); `run` is theirs."""

    def __init__(
        self,
        sink: ResultSink,
        *,
        concurrency: int,
        timeout_seconds: float,
        budget: ErrorBudget | None = None,
        should_stop: Callable[[], bool] | None = None,
        out_of_time: Callable[[], bool] | None = None,
        slots: HostSlots = HOST_SLOTS,
    ) -> None:
        self.sink = sink
        self.concurrency = max(1, concurrency)
        self.timeout_seconds = timeout_seconds
        self.budget = budget or LocalErrorBudget(None)
        self.should_stop = should_stop
        self.out_of_time = out_of_time
        self.slots = slots
        self.counts: Counter[str] = Counter()
        self.stopped_by: str | None = None
        self._counts_lock = threading.Lock()
        self._began = time.monotonic()

    # -- recording: every result goes through here, once per host ----------------------

    def record(self, host: Host, status: ResultStatus, task: _Task | None = None, *,
               counted: bool = False, **fields: Any) -> None:
        """Shape the host's result, count it (a failure against max_errors, unless the
        caller has `counted` it) and hand it to the sink. Callers make sure it is called
        once per host."""
        started, started_at = (task.started, task.started_at) if task else (None, None)
        result = _shape(host, status, started, started_at, **fields)
        if status.failed and not counted:
            self.budget.failed()
        with self._counts_lock:
            self.counts[status.value] += 1
        self.sink.record(result)

    def skip(self, hosts: Iterable[Host], reason: str) -> None:
        """Hosts never started (cancel, max_errors) get SKIPPED and the reason; out of
        time they get nothing: the next worker resumes them."""
        self.stopped_by = reason
        if reason == "time":
            return
        for host in hosts:
            self.record(host, ResultStatus.SKIPPED, output=dict(_SKIP_WHY[reason]))

    # -- cancel, max_errors, the worker's own time: checked before a host starts ---------

    def stop_reason(self) -> str | None:
        return _stop_reason(self.should_stop, self.budget, self.out_of_time)

    # -- how a host's action ended -------------------------------------------------------

    @staticmethod
    def outcome(exc: Exception) -> tuple[ResultStatus, HostError]:
        """A driver's failure as the host's status and error: its own HostError, or (a
        driver bug must not lose the host's result) an internal error."""
        if isinstance(exc, HostError):
            timed_out = exc.type == ErrorType.TIMEOUT
            return (ResultStatus.TIMED_OUT if timed_out else ResultStatus.FAILED), exc
        return ResultStatus.FAILED, HostError(
            ErrorType.COMMAND, f"internal error in the driver: {type(exc).__name__}")

    def abandoned(self) -> HostError:
        return HostError(ErrorType.TIMEOUT, f"no answer within {self.timeout_seconds:g} s; "
                         "the host was abandoned")

    @staticmethod
    def no_host_slot(host: Host) -> HostError:
        return HostError(ErrorType.TIMEOUT, "no free slot on the host before the deadline "
                         f"(host max_concurrency {host.max_concurrency})")

    def new_task(self, host: Host) -> _Task:
        return _Task(host, Deadline.after(self.timeout_seconds), time.monotonic(), _now_iso())

    def summary(self) -> Summary:
        return Summary(self.counts, time.monotonic() - self._began, self.stopped_by)


class ThreadedFanOut(FanOut):
    """Blocking drivers: a thread per host in flight, reused from host to host (starting
    one costs more than a request); a watchdog abandons hosts past their deadline."""

    def __init__(self, sink: ResultSink, **rules: Unpack[Rules]) -> None:
        super().__init__(sink, **rules)
        self._free = threading.BoundedSemaphore(self.concurrency)
        self._inflight: dict[int, _Task] = {}
        self._lock = threading.Lock()  # guards _inflight and every task's `claimed`
        self._all_done = threading.Condition(self._lock)
        self._queue: SimpleQueue[tuple[int, _Task] | None] = SimpleQueue()
        self._workers: list[threading.Thread] = []
        self._stop_watch = threading.Event()

    def run(self, hosts: Iterable[Host], perform: Perform) -> Summary:
        """Admission: a host starts once one of `concurrency` slots is free and nothing
        says stop; returns when every started host has its result."""
        self._perform = perform
        watcher = threading.Thread(target=self._watchdog, name="fanout-watchdog", daemon=True)
        watcher.start()
        pending = iter(hosts)
        try:
            for key, host in enumerate(pending):
                self._free.acquire()
                if reason := self.stop_reason():
                    self._free.release()
                    # Lazily: hosts out of time get no result, so none is read for it.
                    self.skip(itertools.chain([host], pending), reason)
                    break
                self._admit(key, host)
        finally:
            self._drain()
            watcher.join(timeout=1)
        return self.summary()

    def _admit(self, key: int, host: Host) -> None:
        task = self.new_task(host)
        with self._lock:
            self._inflight[key] = task
        self._queue.put((key, task))
        if key < self.concurrency:  # one thread per slot, started as the first hosts go
            self._start_worker()

    def _start_worker(self) -> None:
        thread = threading.Thread(target=self._worker, name="fanout-worker", daemon=True)
        self._workers.append(thread)
        thread.start()

    def _worker(self) -> None:
        # One whose host was abandoned leaves: the watchdog started its replacement.
        while (item := self._queue.get()) is not None:
            if not self._work(*item):
                return

    def _work(self, key: int, task: _Task) -> bool:
        """Per-host cap, then the action; false if the host was abandoned meanwhile."""
        host_slot = self.slots.for_host(task.host)
        try:
            if not host_slot.acquire(timeout=max(0.0, task.deadline.remaining())):
                raise self.no_host_slot(task.host)
            try:
                output = self._perform(task.host, task.deadline)
            finally:
                host_slot.release()
        except Exception as exc:
            status, error = self.outcome(exc)
            return self._finish(key, task, status, error=error.to_dict(),
                                attempts=task.deadline.attempts)
        return self._finish(key, task, ResultStatus.SUCCEEDED, output=output,
                            attempts=max(1, task.deadline.attempts))

    def _claim(self, task: _Task) -> bool:
        """Exactly one result per host: the first of the worker and the watchdog wins."""
        with self._lock:
            if task.claimed:
                return False
            task.claimed = True
            return True

    def _finish(self, key: int, task: _Task, status: ResultStatus, **fields: Any) -> bool:
        if not self._claim(task):
            return False
        # The result is in the sink before the host leaves the in-flight set: run() returns
        # (and its caller closes the sink) only once every result is recorded.
        self.record(task.host, status, task, **fields)
        self._release(key)
        return True

    def _release(self, key: int) -> None:
        with self._lock:
            self._inflight.pop(key, None)
            self._all_done.notify_all()
        self._free.release()

    def _watchdog(self) -> None:
        """Deadlines: a host still running GRACE_SECONDS past its deadline is abandoned
        (TIMED_OUT); its thread is left to it and a new one takes the slot."""
        while True:
            with self._lock:
                if self._stop_watch.is_set() and not self._inflight:
                    return
                now = time.monotonic()
                late = [(key, task) for key, task in self._inflight.items()
                        if now > task.deadline.at + GRACE_SECONDS and not task.claimed]
                for _key, task in late:
                    task.claimed = True
            for key, task in late:
                self.record(task.host, ResultStatus.TIMED_OUT, task,
                            error=self.abandoned().to_dict(), attempts=task.deadline.attempts)
                self._release(key)
                self._start_worker()
            time.sleep(0.05)

    def _drain(self) -> None:
        with self._lock:
            while self._inflight:
                self._all_done.wait(timeout=0.1)
        for _ in self._workers:
            self._queue.put(None)
        self._stop_watch.set()


class EventLoopFanOut(FanOut):
    """Drivers with an asynchronous perform: every host in one event loop on this thread,
    no thread per host (a third of the CPU per host-action). A host past its deadline +
    GRACE_SECONDS is cancelled. `out_of_time` and an in-memory budget are checked before
    each start; `should_stop` and a shared budget (DynamoDB) are read in a thread every
    WATCH_SECONDS and after each failure, so a slow read never holds up the hosts in
    flight."""

    def __init__(self, sink: ResultSink, **rules: Unpack[Rules]) -> None:
        super().__init__(sink, **rules)
        shared = not isinstance(self.budget, LocalErrorBudget)
        # Read in a thread (may be DynamoDB), and checked in the loop before each start.
        self._remote_checks: ErrorBudget = self.budget if shared else LocalErrorBudget(None)
        self._local_checks: ErrorBudget = LocalErrorBudget(None) if shared else self.budget
        self._watched: str | None = None  # why no further host may start, once known

    def run(self, hosts: Iterable[Host], perform: PerformAsync) -> Summary:
        self._perform = perform
        loop = _new_loop()
        try:
            return loop.run_until_complete(self._run(hosts))
        finally:
            loop.run_until_complete(loop.shutdown_default_executor())
            loop.close()

    async def _run(self, hosts: Iterable[Host]) -> Summary:
        """Admission: a host starts once one of `concurrency` slots is free and nothing
        says stop; returns when every started host has its result (the deadline bounds
        how long that takes)."""
        loop = asyncio.get_running_loop()
        self._free = asyncio.Semaphore(self.concurrency)
        running: set[asyncio.Task[None]] = set()
        self._watched = await loop.run_in_executor(None, self._remote_stop_reason)
        watcher = loop.create_task(self._watch())
        pending = iter(hosts)
        try:
            for host in pending:
                await self._free.acquire()
                if reason := self._watched or _stop_reason(None, self._local_checks,
                                                           self.out_of_time):
                    self._free.release()
                    await self._skip_async(itertools.chain([host], pending), reason)
                    break
                task = loop.create_task(self._one(host))
                running.add(task)
                task.add_done_callback(running.discard)
        finally:
            while running:
                await asyncio.wait(set(running))
            self._watched = self._watched or "done"
            watcher.cancel()
        return self.summary()

    async def _one(self, host: Host) -> None:
        """One host: its cap, its deadline (abandoned past it), its one result."""
        task = self.new_task(host)
        timer: asyncio.Timeout | None = None
        try:
            host_slot = await self._host_slot(host, task.deadline)
            try:
                timer = asyncio.timeout(task.deadline.remaining() + GRACE_SECONDS)
                async with timer:
                    output = await self._perform(host, task.deadline)
            finally:
                host_slot.release()
        except Exception as exc:
            if isinstance(exc, TimeoutError) and timer is not None and timer.expired():
                status, error = ResultStatus.TIMED_OUT, self.abandoned()
            else:  # the driver's own error (a TimeoutError not from our timer is a bug)
                status, error = self.outcome(exc)
            await self._record(host, status, task, error=error.to_dict(),
                               attempts=task.deadline.attempts)
        else:
            await self._record(host, ResultStatus.SUCCEEDED, task, output=output,
                               attempts=max(1, task.deadline.attempts))
        finally:
            self._free.release()

    async def _host_slot(self, host: Host, deadline: Deadline) -> threading.BoundedSemaphore:
        """The host's cap (shared with threaded jobs, hence a thread semaphore, polled)."""
        host_slot = self.slots.for_host(host)
        while not host_slot.acquire(blocking=False):
            if deadline.remaining() <= 0:
                raise self.no_host_slot(host)
            await asyncio.sleep(min(SLOT_POLL_SECONDS, deadline.remaining()))
        return host_slot

    async def _record(self, host: Host, status: ResultStatus, task: _Task | None = None,
                      **fields: Any) -> None:
        """`record`, with a shared budget counted in a thread: the slot this host frees
        is not reused before we know whether max_errors is reached."""
        counted = status.failed and self._remote_checks is self.budget
        if counted:
            loop = asyncio.get_running_loop()
            if not await loop.run_in_executor(None, _fail_and_check, self.budget):
                self._watched = self._watched or "max_errors"
        self.record(host, status, task, counted=counted, **fields)

    async def _skip_async(self, hosts: Iterable[Host], reason: str) -> None:
        self.stopped_by = reason
        if reason != "time":
            for host in hosts:
                await self._record(host, ResultStatus.SKIPPED,
                                   output=dict(_SKIP_WHY[reason]))

    def _remote_stop_reason(self) -> str | None:
        return _stop_reason(self.should_stop, self._remote_checks, None)

    async def _watch(self) -> None:
        """Cancel and a shared max_errors, read every WATCH_SECONDS in a thread: a read
        blocking the loop would hold up every host in flight."""
        loop = asyncio.get_running_loop()
        while self._watched is None:
            await asyncio.sleep(WATCH_SECONDS)
            self._watched = self._watched or await loop.run_in_executor(
                None, self._remote_stop_reason)


def run(hosts: Iterable[Host], perform: Perform, sink: ResultSink,
        **rules: Unpack[Rules]) -> Summary:
    """Run `perform` on every host; every host's result goes to `sink` exactly once.

    `should_stop` (cancellation) and `out_of_time` (the worker must hand over) are
    checked before each host starts. Hosts not started because of `out_of_time` get no
    result: the caller resumes them elsewhere.
    """
    return ThreadedFanOut(sink, **rules).run(hosts, perform)


def run_async(hosts: Iterable[Host], perform: PerformAsync, sink: ResultSink,
              **rules: Unpack[Rules]) -> Summary:
    """`run` for drivers with an asynchronous perform (EventLoopFanOut), in a fresh event
    loop on this thread: the same guarantees and the same arguments."""
    return EventLoopFanOut(sink, **rules).run(hosts, perform)


def _new_loop() -> asyncio.AbstractEventLoop:
    """uvloop's loop when installed (a third of asyncio's CPU per connection), else
    asyncio's own."""
    if os.environ.get("MAILFLEET_EVENT_LOOP", "uvloop") == "uvloop":
        try:
            import uvloop
        except ImportError:
            pass
        else:
            return uvloop.new_event_loop()
    return asyncio.new_event_loop()


def _shape(host: Host, status: ResultStatus, started: float | None, started_at: str | None,
           *, output: Any = None, error: dict[str, Any] | None = None, attempts: int = 0,
           ) -> dict[str, Any]:
    """One host's result record (the model built in one go: three assignments to it
    afterwards cost half as much again as building it)."""
    times: dict[str, Any] = {}
    if started_at is not None and started is not None:
        times = {"started_at": started_at, "finished_at": _now_iso(),
                 "duration_ms": int((time.monotonic() - started) * 1000)}
    return HostResult(host=host.id, status=status, attempts=attempts,
                      output=_bounded(output) if output is not None else None, error=error,
                      **times).item()


def _fail_and_check(budget: ErrorBudget) -> bool:
    budget.failed()
    return budget.may_start()


# The current second as now_iso writes it, (epoch second, text): a host's two timestamps
# and its neighbours' mostly fall in the same second.
_second: tuple[int, str] = (-1, "")


def _now_iso() -> str:
    """now_iso's format (the tables sort on it): the date and time formatted once a
    second, the microseconds added (a third of a datetime's CPU, twice per host)."""
    global _second
    seconds, nanos = divmod(time.time_ns(), 1_000_000_000)
    cached = _second
    if cached[0] != seconds:  # a race only formats the same second twice
        cached = _second = (seconds, time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(seconds)))
    return f"{cached[1]}.{nanos // 1000:06d}Z"


def _stop_reason(
    should_stop: Callable[[], bool] | None,
    budget: ErrorBudget,
    out_of_time: Callable[[], bool] | None,
) -> str | None:
    if should_stop is not None and should_stop():
        return "cancelled"
    if not budget.may_start():
        return "max_errors"
    if out_of_time is not None and out_of_time():
        return "time"
    return None


_SKIP_WHY = {
    "cancelled": {"skipped": "the job was cancelled before this host started"},
    "max_errors": {"skipped": "max_errors was reached before this host started"},
}


def _bounded(output: Any) -> Any:
    """Keep results within a DynamoDB item: large outputs are cut, and say so."""
    if not output and isinstance(output, list | dict | str):
        return output  # most answers (reload, kick, who on an idle host): nothing to size
    try:
        text = json.dumps(output, default=str)
    except (TypeError, ValueError):
        return {"unserializable": type(output).__name__}
    if len(text) <= MAX_OUTPUT_BYTES:
        return output
    return {"truncated": True, "bytes": len(text), "preview": text[: MAX_OUTPUT_BYTES - 1024]}


class CachedCheck:
    """Calls an expensive check (a DynamoDB read) at most every `interval` seconds."""

    def __init__(self, check: Callable[[], bool], interval: float = 0.5) -> None:
        self._check = check
        self._interval = interval
        self._last = 0.0
        self._value = False
        self._lock = threading.Lock()

    def __call__(self) -> bool:
        with self._lock:
            if self._value:
                return True
            now = time.monotonic()
            if now - self._last >= self._interval:
                self._last = now
                self._value = bool(self._check())
            return self._value
