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
import datetime
import json
import os
import threading
import time
from collections import Counter
from collections.abc import Awaitable, Callable, Iterable
from dataclasses import dataclass, field
from queue import SimpleQueue
from typing import Any, Protocol

from mailfleet.drivers.base import Deadline
from mailfleet.errors import ErrorType, HostError
from mailfleet.models.common import now_iso
from mailfleet.models.hosts import Host
from mailfleet.models.jobs import ResultStatus

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


def run(
    hosts: Iterable[Host],
    perform: Perform,
    sink: ResultSink,
    *,
    concurrency: int,
    timeout_seconds: float,
    budget: ErrorBudget | None = None,
    should_stop: Callable[[], bool] | None = None,
    out_of_time: Callable[[], bool] | None = None,
    slots: HostSlots = HOST_SLOTS,
) -> Summary:
    """Run `perform` on every host; every host's result goes to `sink` exactly once.

    `should_stop` (cancellation) and `out_of_time` (the worker must hand over) are
    checked before each host starts. Hosts not started because of `out_of_time` get no
    result: the caller resumes them elsewhere.
    """
    budget = budget or LocalErrorBudget(None)
    counts: Counter[str] = Counter()
    counts_lock = threading.Lock()
    free = threading.BoundedSemaphore(max(1, concurrency))
    inflight: dict[int, _Task] = {}
    inflight_lock = threading.Lock()
    all_done = threading.Condition(inflight_lock)
    t0 = time.monotonic()

    def emit(
        task_or_host: _Task | Host,
        status: ResultStatus,
        *,
        output: Any = None,
        error: dict[str, Any] | None = None,
        attempts: int = 0,
    ) -> None:
        if isinstance(task_or_host, _Task):
            host, started_at = task_or_host.host, task_or_host.started_at
            duration = int((time.monotonic() - task_or_host.started) * 1000)
        else:
            host, started_at, duration = task_or_host, None, None
        result: dict[str, Any] = {"host": host.id, "status": status.value, "attempts": attempts}
        if output is not None:
            result["output"] = _bounded(output)
        if error is not None:
            result["error"] = error
        if started_at is not None:
            result.update(started_at=started_at, finished_at=now_iso(), duration_ms=duration)
        if status in (ResultStatus.FAILED, ResultStatus.TIMED_OUT):
            budget.failed()
        with counts_lock:
            counts[status.value] += 1
        sink.record(result)

    def finish(key: int, task: _Task, status: ResultStatus, **kw: Any) -> bool:
        """Record the host's result; false if the watchdog already gave up on it."""
        with inflight_lock:
            if task.claimed:
                return False
            task.claimed = True
        # The result is in the sink before the host leaves the in-flight set: run() returns
        # (and its caller closes the sink) only once every result is recorded.
        emit(task, status, **kw)
        with inflight_lock:
            inflight.pop(key, None)
            all_done.notify_all()
        free.release()
        return True

    def work(key: int, task: _Task) -> bool:
        host_slot = slots.for_host(task.host)
        try:
            if not host_slot.acquire(timeout=max(0.0, task.deadline.remaining())):
                raise HostError(
                    ErrorType.TIMEOUT,
                    "no free slot on the host before the deadline "
                    f"(host max_concurrency {task.host.max_concurrency})",
                )
            try:
                output = perform(task.host, task.deadline)
            finally:
                host_slot.release()
        except HostError as exc:
            status = (
                ResultStatus.TIMED_OUT if exc.type == ErrorType.TIMEOUT else ResultStatus.FAILED
            )
            return finish(key, task, status, error=exc.to_dict(), attempts=task.deadline.attempts)
        except Exception as exc:  # a driver bug must not lose the host's result
            error = HostError(
                ErrorType.COMMAND, f"internal error in the driver: {type(exc).__name__}"
            )
            return finish(
                key,
                task,
                ResultStatus.FAILED,
                error=error.to_dict(),
                attempts=task.deadline.attempts,
            )
        return finish(
            key,
            task,
            ResultStatus.SUCCEEDED,
            output=output,
            attempts=max(1, task.deadline.attempts),
        )

    def worker() -> None:
        # Threads are reused from host to host (starting one costs more than a request);
        # one whose host was abandoned leaves: the watchdog started its replacement.
        while (item := queue.get()) is not None:
            if not work(*item):
                return

    def watchdog() -> None:
        while True:
            with inflight_lock:
                if stop_watch.is_set() and not inflight:
                    return
                now = time.monotonic()
                late = [
                    (k, t)
                    for k, t in inflight.items()
                    if now > t.deadline.at + GRACE_SECONDS and not t.claimed
                ]
                for _key, task in late:
                    task.claimed = True
            for key, task in late:
                error = HostError(
                    ErrorType.TIMEOUT,
                    f"no answer within {timeout_seconds:g} s; the host was abandoned",
                )
                emit(
                    task,
                    ResultStatus.TIMED_OUT,
                    error=error.to_dict(),
                    attempts=task.deadline.attempts,
                )
                with inflight_lock:
                    inflight.pop(key, None)
                free.release()
                start_worker()  # the abandoned host keeps its thread
            if late:
                with inflight_lock:
                    all_done.notify_all()
            time.sleep(0.05)

    workers: list[threading.Thread] = []

    def start_worker() -> None:
        thread = threading.Thread(target=worker, name="fanout-worker", daemon=True)
        workers.append(thread)
        thread.start()

    queue: SimpleQueue[tuple[int, _Task] | None] = SimpleQueue()
    stop_watch = threading.Event()
    watcher = threading.Thread(target=watchdog, name="fanout-watchdog", daemon=True)
    watcher.start()
    stopped_by: str | None = None
    pending = iter(hosts)
    slots_wanted = max(1, concurrency)
    try:
        for key, host in enumerate(pending):
            free.acquire()
            reason = _stop_reason(should_stop, budget, out_of_time)
            if reason:
                free.release()
                stopped_by = reason
                if reason != "time":
                    _skip(emit, [host, *pending], reason)
                break
            task = _Task(host, Deadline.after(timeout_seconds), time.monotonic(), now_iso())
            with inflight_lock:
                inflight[key] = task
            queue.put((key, task))
            if key < slots_wanted:  # one thread per slot, started as the first hosts go
                start_worker()
    finally:
        with inflight_lock:
            while inflight:
                all_done.wait(timeout=0.1)
        for _ in workers:
            queue.put(None)
        stop_watch.set()
        watcher.join(timeout=1)
    return Summary(counts, time.monotonic() - t0, stopped_by)


def run_async(
    hosts: Iterable[Host],
    perform: PerformAsync,
    sink: ResultSink,
    *,
    concurrency: int,
    timeout_seconds: float,
    budget: ErrorBudget | None = None,
    should_stop: Callable[[], bool] | None = None,
    out_of_time: Callable[[], bool] | None = None,
    slots: HostSlots = HOST_SLOTS,
) -> Summary:
    """`run` for drivers with an asynchronous perform: every host in one event loop (in a
    fresh loop on this thread), no thread per host. The same guarantees: at most
    `concurrency` hosts in flight, the per-host caps (shared with threaded jobs), a host
    past its deadline + GRACE_SECONDS is cancelled and TIMED_OUT, max_errors, cancel and
    out_of_time checked before each start, exactly one result per host.

    `out_of_time` and an in-memory budget are checked before each start; `should_stop` and
    a shared budget (DynamoDB) are read in a thread every WATCH_SECONDS and after each
    failure, so a slow read never holds up the hosts in flight."""
    loop = _new_loop()
    try:
        return loop.run_until_complete(_run_async(
            hosts, perform, sink, concurrency=max(1, concurrency),
            timeout_seconds=timeout_seconds, budget=budget or LocalErrorBudget(None),
            should_stop=should_stop, out_of_time=out_of_time, slots=slots))
    finally:
        loop.run_until_complete(loop.shutdown_default_executor())
        loop.close()


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


async def _run_async(
    hosts: Iterable[Host],
    perform: PerformAsync,
    sink: ResultSink,
    *,
    concurrency: int,
    timeout_seconds: float,
    budget: ErrorBudget,
    should_stop: Callable[[], bool] | None,
    out_of_time: Callable[[], bool] | None,
    slots: HostSlots,
) -> Summary:
    loop = asyncio.get_running_loop()
    counts: Counter[str] = Counter()
    free = asyncio.Semaphore(concurrency)
    running: set[asyncio.Task[None]] = set()
    local_budget = isinstance(budget, LocalErrorBudget)
    watched: list[str | None] = [None]  # why no further host may start, once known
    t0 = time.monotonic()

    async def record(host: Host, status: ResultStatus, started: float | None,
                     started_at: str | None, **kw: Any) -> None:
        result = _shape(host, status, started, started_at, **kw)
        if status in (ResultStatus.FAILED, ResultStatus.TIMED_OUT):
            if local_budget:
                budget.failed()
            else:  # a shared counter: DynamoDB, kept out of the loop; the slot this
                # host frees is not reused before we know whether the limit is reached
                if not await loop.run_in_executor(None, _fail_and_check, budget):
                    watched[0] = watched[0] or "max_errors"
        counts[status.value] += 1
        sink.record(result)

    async def one(host: Host) -> None:
        deadline = Deadline.after(timeout_seconds)
        started, started_at = time.monotonic(), _now_iso()
        timer: asyncio.Timeout | None = None
        try:
            try:
                host_slot = slots.for_host(host)
                while not host_slot.acquire(blocking=False):
                    if deadline.remaining() <= 0:
                        raise HostError(
                            ErrorType.TIMEOUT,
                            "no free slot on the host before the deadline "
                            f"(host max_concurrency {host.max_concurrency})",
                        )
                    await asyncio.sleep(min(SLOT_POLL_SECONDS, deadline.remaining()))
                # A driver that overruns its deadline is abandoned (cancelled).
                timer = asyncio.timeout(deadline.remaining() + GRACE_SECONDS)
                try:
                    async with timer:
                        output = await perform(host, deadline)
                finally:
                    host_slot.release()
            except TimeoutError as exc:
                if timer is not None and timer.expired():
                    error = HostError(ErrorType.TIMEOUT,
                                      f"no answer within {timeout_seconds:g} s; the host was "
                                      "abandoned")
                    status = ResultStatus.TIMED_OUT
                else:  # not our timer: a driver bug
                    error = HostError(ErrorType.COMMAND,
                                      f"internal error in the driver: {type(exc).__name__}")
                    status = ResultStatus.FAILED
                await record(host, status, started, started_at,
                             error=error.to_dict(), attempts=deadline.attempts)
            except HostError as exc:
                status = (ResultStatus.TIMED_OUT if exc.type == ErrorType.TIMEOUT
                          else ResultStatus.FAILED)
                await record(host, status, started, started_at, error=exc.to_dict(),
                             attempts=deadline.attempts)
            except Exception as exc:  # a driver bug must not lose the host's result
                error = HostError(
                    ErrorType.COMMAND, f"internal error in the driver: {type(exc).__name__}")
                await record(host, ResultStatus.FAILED, started, started_at,
                             error=error.to_dict(), attempts=deadline.attempts)
            else:
                await record(host, ResultStatus.SUCCEEDED, started, started_at,
                             output=output, attempts=max(1, deadline.attempts))
        finally:
            free.release()

    # Checks that may read DynamoDB (cancel, a job-wide max_errors) run in a thread,
    # every WATCH_SECONDS: a read blocking the loop would hold up every host in flight.
    # An in-memory max_errors and out_of_time are checked before each start.
    remote_budget: ErrorBudget = LocalErrorBudget(None) if local_budget else budget
    local_checks: ErrorBudget = budget if local_budget else LocalErrorBudget(None)

    async def watch() -> None:
        while watched[0] is None:
            watched[0] = await loop.run_in_executor(
                None, _stop_reason, should_stop, remote_budget, None)
            await asyncio.sleep(WATCH_SECONDS)

    watched[0] = await loop.run_in_executor(None, _stop_reason, should_stop, remote_budget, None)
    watcher = loop.create_task(watch())
    stopped_by: str | None = None
    pending = iter(hosts)
    try:
        for host in pending:
            await free.acquire()
            reason = watched[0] or _stop_reason(None, local_checks, out_of_time)
            if reason:
                free.release()
                stopped_by = reason
                if reason != "time":
                    for skipped in [host, *pending]:
                        await record(skipped, ResultStatus.SKIPPED, None, None,
                                     output=dict(_SKIP_WHY[reason]))
                break
            task = loop.create_task(one(host))
            running.add(task)
            task.add_done_callback(running.discard)
    finally:
        # Every host started ends with its result before run returns (the caller then
        # closes the sink): the deadline bounds how long that takes.
        while running:
            await asyncio.wait(set(running))
        watched[0] = watched[0] or "done"
        watcher.cancel()
    return Summary(counts, time.monotonic() - t0, stopped_by)


def _shape(host: Host, status: ResultStatus, started: float | None, started_at: str | None,
           *, output: Any = None, error: dict[str, Any] | None = None, attempts: int = 0,
           ) -> dict[str, Any]:
    """One host's result record."""
    result: dict[str, Any] = {"host": host.id, "status": status.value, "attempts": attempts}
    if output is not None:
        result["output"] = _bounded(output)
    if error is not None:
        result["error"] = error
    if started_at is not None and started is not None:
        result.update(started_at=started_at, finished_at=_now_iso(),
                      duration_ms=int((time.monotonic() - started) * 1000))
    return result


def _fail_and_check(budget: ErrorBudget) -> bool:
    budget.failed()
    return budget.may_start()


def _now_iso() -> str:
    """now_iso's format (the tables sort on it) at a fifth of strftime's CPU."""
    return datetime.datetime.now(datetime.UTC).isoformat(timespec="microseconds")[:-6] + "Z"


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


def _skip(emit: Callable[..., None], hosts: Iterable[Host], reason: str) -> None:
    for host in hosts:
        emit(host, ResultStatus.SKIPPED, output=dict(_SKIP_WHY[reason]))


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
