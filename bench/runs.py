"""The fan-out benchmarks: the in-process path (the real worker in a process of its own),
the Distributed Map path (through moto's Step Functions interpreter), and the sequential
baseline (a shell loop over curl)."""

from __future__ import annotations

import base64
import contextlib
import json
import os
import subprocess
import sys
import time
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

from bench.engine import raw_pool
from bench.fleet import FleetProcess
from bench.stack import FLEET_KEY, REPO, AwsCalls, BenchStack, summarize

ACTION = "who"
WARM_UP_TO = 1000  # job sizes also run a second time in the same (warm) worker


def ideal_seconds(hosts: int, concurrency: int, latency: float) -> float:
    return latency * -(-hosts // concurrency)


@dataclass
class FanoutRun:
    path: str
    hosts: int
    ideal_s: float
    fanout_s: float  # the figure compared with the ideal (see each path's note)
    warm_fanout_s: float | None = None
    whole_s: float | None = None  # the worker (or execution) end to end
    submit_s: float | None = None
    counts: dict[str, int] = field(default_factory=dict)
    aws: dict[str, Any] = field(default_factory=dict)  # calls for this one job
    peak_rss_mib: float | None = None
    note: str = ""
    raw_s: float | None = None  # a plain thread pool doing the same requests, same run
    cpu_ms_per_host: float | None = None  # the worker process's CPU per host-action
    fanout_cpu_ms: float | None = None  # the same while the engine ran (no reads, no close)
    peak_inflight: int | None = None  # the most requests the fleet saw at once

    @property
    def raw_ratio(self) -> float | None:
        return None if not self.raw_s else self.fanout_s / self.raw_s

    @property
    def results_per_write(self) -> float | None:
        writes = self.aws.get("dynamodb_writes") if self.aws else None
        return self.hosts / writes if writes else None

    @property
    def ratio(self) -> float:
        return self.fanout_s / self.ideal_s

    @property
    def warm_ratio(self) -> float | None:
        return None if self.warm_fanout_s is None else self.warm_fanout_s / self.ideal_s


def _submit(ids: list[str], concurrency: int, *, start: bool) -> tuple[str, float]:
    """A job through the same logic as POST /jobs; without `start`, nobody runs it yet."""
    from mailfleet.logic.caller import Caller
    from mailfleet.logic.jobs import Jobs
    from mailfleet.models.jobs import JobRequest

    jobs = Jobs()
    if not start:  # recorded as submitted, its worker never invoked
        path_for = jobs.path_for

        def unstarted(job: dict[str, Any]) -> Any:
            path = path_for(job)
            path.start = lambda *_a, **_k: None  # type: ignore[method-assign]
            return path

        jobs.path_for = unstarted  # type: ignore[method-assign]
    request = JobRequest(action=ACTION, targets={"hosts": ids}, max_concurrency=concurrency,
                         timeout_seconds=30)
    began = time.monotonic()
    answer, _ = jobs.submit(request, Caller.system("bench"))
    return answer["job_id"], time.monotonic() - began


def _job_counts(job_id: str) -> dict[str, int]:
    from mailfleet.logic.jobs import Jobs

    return dict(Jobs().view(job_id)["counts"])


@contextlib.contextmanager
def _setting(name: str, value: str) -> Iterator[None]:
    """An environment setting of the functions (they share this process), for a while."""
    from mailfleet_local import lambda_bridge

    saved = os.environ.get(name)
    os.environ[name] = value
    lambda_bridge.cold_start()  # the handlers read their settings again
    try:
        yield
    finally:
        if saved is None:
            os.environ.pop(name, None)
        else:
            os.environ[name] = saved
        lambda_bridge.cold_start()


def run_worker(events: list[dict[str, Any]], timeout: float = 900) -> dict[str, Any]:
    """bench/worker.py in a fresh process, pointed at this process's moto."""
    path = os.pathsep.join([str(REPO), os.environ.get("PYTHONPATH", "")])
    env = dict(os.environ, PYTHONPATH=path)
    out = subprocess.run(
        [sys.executable, "-m", "bench.worker", *[json.dumps(e) for e in events]],
        env=env, cwd=REPO, capture_output=True, text=True, timeout=timeout, check=False,
    )
    if out.returncode != 0:
        raise RuntimeError(f"the worker failed: {out.stderr[-2000:]}")
    return json.loads(out.stdout.strip().splitlines()[-1])


def inprocess(stack: BenchStack, calls: AwsCalls, hosts: int, concurrency: int,
              latency: float) -> list[FanoutRun]:
    """Two jobs on the same hosts run by one fresh worker process: the first as on a cold
    container (a new connection pool per host), the second warm. The figure compared with
    the ideal is the engine's wall time (first host started to last result recorded,
    driver and result writes included); `whole_s` adds reading the job and the hosts
    from DynamoDB (moto here) and closing the job.

    Then the same fan-out in a second fresh worker with the result writes answered by a
    stand-in that takes DynamoDB's time but none of this machine's CPU (bench/worker.py):
    on two cores, moto storing the results competes with the worker and the fleet."""
    ids = stack.ids[:hosts]
    warm_too = hosts <= WARM_UP_TO  # a second job at 10,000 would add minutes, little news
    fleet = stack.fleet
    assert fleet is not None
    raw = raw_pool(fleet.ports[:hosts], concurrency)
    with _setting("INPROCESS_MAX_TARGETS", str(len(stack.ids))):  # in-process at any size
        before = calls.snapshot()
        cold_job, submit_s = _submit(ids, concurrency, start=False)
        submit_calls = calls.snapshot() - before
        jobs = [cold_job] + ([_submit(ids, concurrency, start=False)[0]] if warm_too else [])
        spare, _ = _submit(ids, concurrency, start=False)  # run with results elsewhere
    fleet.reset()
    worker = run_worker([{"job_id": j} for j in jobs])
    peak = int(fleet.stats()["peak_inflight"])
    cold, warm = worker["runs"][0], (worker["runs"][1] if warm_too else None)
    used = submit_calls + Counter({(svc, op): n for svc, op, n in cold["aws_calls"]})
    used[("lambda", "Invoke")] += 1  # the API's async start of the worker (not made here)
    ideal = ideal_seconds(hosts, concurrency, latency)
    local = FanoutRun(
        path="in-process", hosts=hosts, ideal_s=ideal,
        fanout_s=cold["fanout_s"], warm_fanout_s=warm["fanout_s"] if warm else None,
        whole_s=cold["handler_s"],
        submit_s=submit_s, counts=_job_counts(cold_job), aws=summarize(used),
        peak_rss_mib=worker["peak_rss_mib"], raw_s=raw.wall_s,
        cpu_ms_per_host=cold["cpu_s"] / hosts * 1000, peak_inflight=peak,
        fanout_cpu_ms=(warm or cold)["fanout_cpu_s"] / hosts * 1000,
    )
    elsewhere = run_worker([{"job_id": spare, "results": "stand-in"}] * (2 if warm_too else 1))
    first, second = elsewhere["runs"][0], elsewhere["runs"][-1] if warm_too else None
    offloaded = FanoutRun(
        path="in-process, DDB off", hosts=hosts, ideal_s=ideal,
        fanout_s=first["fanout_s"], warm_fanout_s=second["fanout_s"] if second else None,
        counts=first["outcome"]["counts"], peak_rss_mib=elsewhere["peak_rss_mib"],
        raw_s=raw.wall_s, cpu_ms_per_host=(second or first)["cpu_s"] / hosts * 1000,
        fanout_cpu_ms=(second or first)["fanout_cpu_s"] / hosts * 1000,
    )
    return [local, offloaded]


def distributed(stack: BenchStack, calls: AwsCalls, hosts: int, concurrency: int,
                latency: float, timeout: float = 1800) -> FanoutRun:
    """A job forced onto the Distributed Map, run by moto's Step Functions interpreter
    with the real worker handler (in this process). The figure is the execution's wall
    time: StartExecution to the job closed."""
    import mailfleet.logic.jobs as jobs_module
    from mailfleet.logic.distributed import DistributedJobs
    from mailfleet.store.jobs import JobStore

    fleet = stack.fleet
    assert fleet is not None
    raw = raw_pool(fleet.ports[:hosts], concurrency)
    fleet.reset()
    # Each batch's handler time and its fan-out's: the difference is the batch's own
    # overhead (the job item read, the hosts read, the last writes, the counts update).
    batch_s: list[float] = []
    engine_s: list[float] = []
    original_batch, original_engine = DistributedJobs.run_batch, jobs_module.run_async

    def timed_batch(self: Any, *args: Any, **kwargs: Any) -> Any:
        began = time.monotonic()
        try:
            return original_batch(self, *args, **kwargs)
        finally:
            batch_s.append(time.monotonic() - began)

    def timed_engine(*args: Any, **kwargs: Any) -> Any:
        summary = original_engine(*args, **kwargs)
        engine_s.append(summary.elapsed_s)
        return summary

    DistributedJobs.run_batch = timed_batch  # type: ignore[method-assign]
    jobs_module.run_async = timed_engine  # type: ignore[assignment]
    with _setting("INPROCESS_MAX_TARGETS", "0"):  # the Map at any size
        before = calls.snapshot()
        began = time.monotonic()
        job_id, submit_s = _submit(stack.ids[:hosts], concurrency, start=True)
        store = JobStore()
        end = time.monotonic() + timeout
        while store.status(job_id)[0] in ("PENDING", "RUNNING") and time.monotonic() < end:
            time.sleep(0.05)
        whole = time.monotonic() - began
        used = calls.snapshot() - before
    DistributedJobs.run_batch = original_batch  # type: ignore[method-assign]
    jobs_module.run_async = original_engine  # type: ignore[assignment]
    plan_note = _plan_note(stack.ids[:hosts], concurrency)
    if batch_s and engine_s:
        overhead = (sum(batch_s) - sum(engine_s)) / len(batch_s)
        plan_note += (f"; per batch {sum(batch_s) / len(batch_s):.2f} s, of which "
                      f"{overhead:.2f} s outside the fan-out")
    return FanoutRun(
        path="distributed (moto)", hosts=hosts,
        ideal_s=ideal_seconds(hosts, concurrency, latency),
        fanout_s=whole - submit_s, whole_s=whole, submit_s=submit_s,
        counts=_job_counts(job_id), aws=summarize(used), note=plan_note,
        raw_s=raw.wall_s, peak_inflight=int(fleet.stats()["peak_inflight"]),
    )


def _plan_note(ids: list[str], concurrency: int) -> str:
    from mailfleet.config import JobSettings
    from mailfleet.logic.distributed import plan_batches

    plan = plan_batches(ids, concurrency, 30, JobSettings())
    return (f"{len(plan.batches)} batches of <= {max(len(b) for b in plan.batches)}, "
            f"{plan.parallel_batches} at once x {plan.batch_concurrency} hosts each")


def engine_only(hosts: int, concurrency: int, latency: float) -> FanoutRun:
    """The engine alone: each host's action is a sleep of `latency` (no driver, no
    network, no results written): what the engine itself adds to the ideal."""
    from mailfleet.fanout import HostSlots, run
    from mailfleet.models.hosts import Host

    class Discard:
        def record(self, result: dict[str, Any]) -> None:
            pass

    fleet = [Host(id=f"e{i}", kind="dovecot", endpoint="http://127.0.0.1:1")
             for i in range(hosts)]
    times = []
    for _ in range(2):
        summary = run(fleet, lambda _h, _d: time.sleep(latency), Discard(),
                      concurrency=concurrency, timeout_seconds=30, slots=HostSlots())
        times.append(summary.elapsed_s)
    return FanoutRun(path="engine only (sleep)", hosts=hosts,
                     ideal_s=ideal_seconds(hosts, concurrency, latency),
                     fanout_s=times[0], warm_fanout_s=times[1],
                     counts=dict(summary.counts))


def sequential(fleet: FleetProcess, hosts: int) -> float:
    """One host after another, as an operator's shell loop over curl would."""
    script = r"""
for port in $PORTS; do
  curl -s -o /dev/null -m 30 -H "Authorization: $AUTH" -H "Content-Type: application/json" \
    --data '[["who",{"separateConnections":true},"t1"]]' "http://127.0.0.1:$port/doveadm/v1"
done
"""
    env = dict(os.environ, PORTS=" ".join(str(p) for p in fleet.ports[:hosts]),
               AUTH="X-Dovecot-API " + base64.b64encode(FLEET_KEY.encode()).decode(),
               NO_PROXY="127.0.0.1", no_proxy="127.0.0.1")
    began = time.monotonic()
    subprocess.run(["bash", "-c", script], env=env, check=True, timeout=3600)
    return time.monotonic() - began
