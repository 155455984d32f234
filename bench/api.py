"""Jobs through the API on the `make run` stack: moto with template.yaml deployed, the API
front on 127.0.0.1, the functions run in this process by the Lambda bridge and DynamoDB
served from a moto process of its own (as `make run` does), the simulated fleet in a
process of its own. `POST /jobs?wait=25` until the job is
final, as a user would, and in the same run the raw baseline: a plain pool of threads
doing the same requests, nothing recorded (bench/engine.py: raw_pool).

Figures per job: wall time (POST to the final answer), its ratio to the ideal and to the
raw pool, the most requests in flight at once across the fleet, this process's CPU per
host-action (API, moto, Step Functions interpreter and worker together, DynamoDB's
process included), DynamoDB write requests per 20 results, and the path the job took.
"""

from __future__ import annotations

import os
import resource
import time
from dataclasses import dataclass, field
from typing import Any

import requests

from bench.engine import raw_pool
from bench.fleet import FleetProcess
from bench.stack import AwsCalls, BenchStack, summarize

ACTION = "reload"  # as in issue 13's table


@dataclass
class ApiRun:
    label: str
    hosts: int
    ideal_s: float
    raw_s: float
    wall_s: float
    path: str
    status: str
    peak_inflight: int
    cpu_ms_per_host: float
    writes: int
    counts: dict[str, int] = field(default_factory=dict)

    @property
    def results_per_write(self) -> float:
        return self.hosts / max(1, self.writes)


def _cpu() -> float:
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


class Api:
    def __init__(self, stack: BenchStack, port: int = 0) -> None:
        from mailfleet_local.front import ApiFront

        self.front = ApiFront(stack.deployment, port=port, access_log=False).start()
        self.aws = stack.aws
        self.http = requests.Session()
        self.http.trust_env = False
        self.http.headers["Authorization"] = f"Bearer {stack.admin_token}"

    def job(self, ids: list[str], concurrency: int, timeout: float = 600) -> dict[str, Any]:
        body = {"action": ACTION, "targets": {"hosts": ids}, "max_concurrency": concurrency}
        wait = float(os.environ.get("BENCH_API_WAIT", "25"))
        answer = self.http.post(f"{self.front.url}/jobs", params={"wait": wait}, json=body,
                                timeout=60)
        job = answer.json()
        if answer.status_code not in (200, 202):
            raise RuntimeError(f"POST /jobs: {answer.status_code} {answer.text[:300]}")
        end = time.monotonic() + timeout
        while job.get("status") in ("PENDING", "RUNNING") and time.monotonic() < end:
            from mailfleet.store.jobs import JobStore

            while JobStore().status(job["job_id"])[0] in ("PENDING", "RUNNING"):
                time.sleep(0.05)
            job = self.http.get(f"{self.front.url}/jobs/{job['job_id']}", timeout=120).json()
        return job

    def stop(self) -> None:
        self.front.stop()


def run_jobs(api: Api, calls: AwsCalls, fleet: FleetProcess, ids: list[str], *,
             concurrency: int, latency: float, label: str, repeat: int) -> list[ApiRun]:
    """`repeat` jobs on the same hosts, each with its own raw-pool baseline just before."""
    n = len(ids)
    ideal = latency * -(-n // concurrency)
    out = []
    for _ in range(repeat):
        raw = raw_pool(fleet.ports[:n], concurrency)
        fleet.reset()
        # DynamoDB's own process (mailfleet_local.dynamodb_process) counts as this one.
        before, c0 = calls.snapshot(), _cpu() + api.aws.dynamodb_cpu_seconds()
        began = time.monotonic()
        job = api.job(ids, concurrency)
        wall = time.monotonic() - began
        cpu = _cpu() + api.aws.dynamodb_cpu_seconds() - c0
        used = summarize(calls.snapshot() - before)
        out.append(ApiRun(
            label=label, hosts=n, ideal_s=ideal, raw_s=raw.wall_s, wall_s=wall,
            path=str(job.get("path")), status=str(job.get("status")),
            peak_inflight=int(fleet.stats()["peak_inflight"]),
            cpu_ms_per_host=cpu / n * 1000, writes=used["dynamodb_writes"],
            counts=dict(job.get("counts") or {}),
        ))
    return out


def header() -> str:
    return (f"{'path':<24}{'hosts':>7}{'ideal':>8}{'wall':>9}{'x ideal':>9}{'raw pool':>10}"
            f"{'x raw':>7}{'in flight':>10}{'CPU/host':>10}{'res/write':>10}  status")


def line(r: ApiRun) -> str:
    return (f"{r.label:<24}{r.hosts:>7}{r.ideal_s:7.2f}s{r.wall_s:8.2f}s"
            f"{r.wall_s / r.ideal_s:8.2f}x"
            f"{r.raw_s:9.2f}s{r.wall_s / r.raw_s:6.2f}x{r.peak_inflight:>10}"
            f"{r.cpu_ms_per_host:8.2f}ms{r.results_per_write:10.1f}  {r.status} {r.path}")


def api_runs(stack: BenchStack, calls: AwsCalls, fleet: FleetProcess, sizes: list[int], *,
             concurrency: int = 100, latency: float = 0.05, say: Any = print) -> list[ApiRun]:
    """Per size: the stack's first job of that size, the best of three after it, and the
    same job forced onto the Distributed Map (best of two). Above 2,000 hosts one each."""
    api = Api(stack, int(os.environ.get("MAILFLEET_PORT", "0") or 0))
    runs: list[ApiRun] = []
    say(header())
    try:
        for n in sizes:
            ids = stack.ids[:n]
            big = n > 2000
            first = run_jobs(api, calls, fleet, ids, concurrency=concurrency,
                             latency=latency, label="API, first job", repeat=1)[0]
            say(line(first))
            warm = run_jobs(api, calls, fleet, ids, concurrency=concurrency, latency=latency,
                            label="API, warm" if big else "API, best of 3",
                            repeat=1 if big else 3)
            best = min(warm, key=lambda r: r.wall_s)
            say(line(best))
            with _setting("INPROCESS_MAX_TARGETS", "0"):
                forced = run_jobs(api, calls, fleet, ids, concurrency=concurrency,
                                  latency=latency, label="API, Map forced",
                                  repeat=1 if big else 2)
            mapped = min(forced, key=lambda r: r.wall_s)
            say(line(mapped))
            runs += [first, best, mapped]
    finally:
        api.stop()
    return runs


def main(sizes: list[int]) -> list[ApiRun]:
    calls = AwsCalls().install()
    stack = BenchStack().start()
    try:
        with FleetProcess(max(sizes), max_seconds=3600) as fleet:
            stack.register_fleet(fleet, max(sizes))
            return api_runs(stack, calls, fleet, sizes)
    finally:
        stack.stop()


class _setting:
    def __init__(self, name: str, value: str) -> None:
        self.name, self.value = name, value

    def __enter__(self) -> None:
        from mailfleet_local import lambda_bridge

        self.saved = os.environ.get(self.name)
        os.environ[self.name] = self.value
        lambda_bridge.cold_start()  # the handlers read their settings again

    def __exit__(self, *exc: object) -> None:
        from mailfleet_local import lambda_bridge

        if self.saved is None:
            os.environ.pop(self.name, None)
        else:
            os.environ[self.name] = self.saved
        lambda_bridge.cold_start()


if __name__ == "__main__":
    main([100, 1000])
