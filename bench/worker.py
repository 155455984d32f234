"""One fan-out worker in a process of its own, as a Lambda container would be: it imports
the real handler (functions/fanout_worker/app.py), runs the jobs or batch events it is
given one after another (the first on a cold container, the next on a warm one), and
prints one JSON line: per run the handler's wall time and the engine's fan-out time, the
AWS calls made, and the process's peak RSS.

`python -m bench.worker EVENT_JSON [EVENT_JSON ...]`; AWS_ENDPOINT_URL and the tables come
from the environment (the bench's embedded moto).
"""

from __future__ import annotations

import importlib.util
import json
import os
import sys
import time
from typing import Any

from bench.stack import REPO, AwsCalls, quiet, summarize


def peak_rss_mib() -> float:
    """This process's own high-water RSS (VmHWM). Not getrusage's ru_maxrss: Linux carries
    that over from the parent across fork and exec, and the bench process holds moto."""
    with open("/proc/self/status") as status:
        for line in status:
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 1024
    return 0.0


# A BatchWriteItem of 25 from Lambda to DynamoDB in its region: about this long, spent
# waiting, not computing.
DYNAMODB_WRITE_SECONDS = 0.010


_written = {"requests": 0}


def results_elsewhere(_store: Any, _job_id: str, results: list[dict[str, Any]]) -> int:
    """Stands in for JobStore.write_results: the time a write takes, none of the CPU.
    moto, in the bench process, spends ~2 ms of CPU per result item it stores, on the
    same two cores as the worker and the fleet; on AWS that work is DynamoDB's."""
    chunks = -(-len(results) // 25)
    _written["requests"] += chunks
    time.sleep(DYNAMODB_WRITE_SECONDS * chunks)
    return chunks


def run_with_results_elsewhere(job_id: str) -> dict[str, Any]:
    """The worker's fan-out (Jobs.run_hosts: the same engine, driver and result batching)
    on a job's hosts, with the result writes answered by results_elsewhere. The job is
    left as it was: only the fan-out is measured."""
    from mailfleet.fanout import LocalErrorBudget
    from mailfleet.logic.jobs import Jobs
    from mailfleet.models.common import resolve_limit
    from mailfleet.store.jobs import JobStore

    jobs = Jobs()
    job = jobs.store.get(job_id)
    original = JobStore.write_results
    JobStore.write_results = results_elsewhere  # type: ignore[method-assign]
    try:
        summary = jobs.run_hosts(
            job, job["targets"],
            concurrency=resolve_limit(job["max_concurrency"], len(job["targets"]), minimum=1) or 1,
            budget=LocalErrorBudget(None),
        )
    finally:
        JobStore.write_results = original  # type: ignore[method-assign]
    return {"status": "not closed", "counts": dict(summary.counts),
            "result_writes": _written["requests"]}


def main(argv: list[str]) -> None:
    quiet()
    calls = AwsCalls().install()
    began = time.perf_counter()
    handler_file = REPO / "functions" / "fanout_worker" / "app.py"
    spec = importlib.util.spec_from_file_location("fanout_worker_app", handler_file)
    assert spec is not None and spec.loader is not None
    app = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(app)
    import_s = time.perf_counter() - began

    import mailfleet.logic.jobs as jobs_module
    from mailfleet_local.lambda_bridge import LambdaContext

    engine_runs: list[float] = []
    engine_cpu: list[float] = []  # the process's CPU while the engine ran (every thread)

    def timed(original: Any) -> Any:
        def timed_run(*args: Any, **kwargs: Any) -> Any:
            began = time.process_time()
            summary = original(*args, **kwargs)
            engine_cpu.append(time.process_time() - began)
            engine_runs.append(summary.elapsed_s)
            return summary
        return timed_run

    # Both engines: threads (most kinds) and the event loop (doveadm).
    jobs_module.run = timed(jobs_module.run)  # type: ignore[assignment]
    jobs_module.run_async = timed(jobs_module.run_async)  # type: ignore[assignment]
    rss_before = peak_rss_mib()
    runs = []
    for raw in argv:
        event = json.loads(raw)
        context = LambdaContext(
            function_name="mailfleet-fanout-worker", function_version="$LATEST",
            invoked_function_arn="arn:aws:lambda:us-east-1:123456789012:function:bench",
            memory_limit_in_mb=1024, timeout_seconds=900,
        )
        before = calls.snapshot()
        engine_runs.clear()
        engine_cpu.clear()
        t0, cpu0 = time.perf_counter(), time.process_time()
        profiler: Any = None
        if os.environ.get("BENCH_WORKER_PROFILE"):  # cProfile of each run, to that path
            import cProfile

            # The main thread's CPU time, not wall time: on a loaded machine wall time
            # charges every preemption to whatever happened to be running.
            profiler = cProfile.Profile(time.thread_time)
            profiler.enable()
        sampler: Any = None
        if os.environ.get("BENCH_WORKER_PYINSTRUMENT"):  # pyinstrument text of each run
            from pyinstrument import Profiler

            sampler = Profiler(interval=0.0005)
            sampler.start()
        if event.get("results") == "stand-in":
            outcome = run_with_results_elsewhere(event["job_id"])
        else:
            outcome = app.lambda_handler(event, context)
        if profiler is not None:
            profiler.disable()
            profiler.dump_stats(f"{os.environ['BENCH_WORKER_PROFILE']}.{len(runs)}")
        if sampler is not None:
            sampler.stop()
            with open(f"{os.environ['BENCH_WORKER_PYINSTRUMENT']}.{len(runs)}", "w") as out:
                out.write(sampler.output_text(unicode=False, show_all=False))
        runs.append({
            "handler_s": time.perf_counter() - t0,
            "cpu_s": time.process_time() - cpu0,
            "fanout_s": sum(engine_runs),
            # connections, result shaping and recording (the flusher's writes): the CPU a
            # host-action costs, without reading the job and its hosts or closing it
            "fanout_cpu_s": sum(engine_cpu),
            "outcome": {k: outcome.get(k) for k in ("status", "counts", "batch")},
            "aws": summarize(calls.snapshot() - before),
            "aws_calls": [[svc, op, n] for (svc, op), n in (calls.snapshot() - before).items()],
        })
    print(json.dumps({
        "import_s": import_s,
        "runs": runs,
        "peak_rss_mib": peak_rss_mib(),
        "rss_before_runs_mib": rss_before,
    }))


if __name__ == "__main__":
    main(sys.argv[1:])
