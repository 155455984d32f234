"""`python -m bench` (what `make bench` runs): every benchmark, figures printed.

Everything runs on this machine: the embedded AWS (moto) with template.yaml deployed,
a simulated fleet of doveadm hosts on 127.0.0.1 (bench/fleet.py), the real fan-out
worker. Loopback only; every load is bounded in hosts and time and stops by itself.
"""

from __future__ import annotations

import argparse
import datetime
import os
import platform
import sys
import time
from typing import Any

from bench import api, engine, imports, load, runs
from bench.fleet import FleetProcess
from bench.stack import AwsCalls, BenchStack

TARGET_RATIO = 1.5  # in-process at 1,000 hosts, against the ideal
TARGET_SPEEDUP = 50.0  # against the sequential baseline at 1,000 hosts
TARGET_RESULTS_PER_WRITE = 20.0
TARGET_IMPORT_SHARE = 0.20
TARGET_RAW_RATIO = 1.3  # through the API at 1,000 hosts, against the raw thread pool
TARGET_CPU_MS = 0.3  # worker CPU per host-action
PARTS = ("engine", "inprocess", "distributed", "api", "sequential", "imports", "load")


def machine() -> str:
    cpu = "unknown CPU"
    try:
        with open("/proc/cpuinfo") as info:
            names = [line.split(":", 1)[1].strip() for line in info
                     if line.startswith("model name")]
        cpu = names[0] if names else cpu
    except OSError:
        pass
    load = ", ".join(f"{x:.2f}" for x in os.getloadavg())
    return (f"{platform.system()} {platform.machine()}, {os.cpu_count()} CPUs ({cpu}), "
            f"Python {platform.python_version()}; load average at start {load}")


def cpu_speed_ms() -> float:
    """A fixed pure-Python loop: how fast this machine's CPU is right now (a shared VM's
    speed varies; compare runs by it)."""
    began = time.process_time()
    total = 0
    for i in range(3_000_000):
        total += i * i
    return (time.process_time() - began) * 1000


def say(text: str = "") -> None:
    print(text, flush=True)


def fanout_table(results: list[runs.FanoutRun]) -> None:
    say(f"{'path':<20}{'hosts':>7}{'ideal':>8}{'fan-out':>9}{'x ideal':>8}{'warm':>8}"
        f"{'x ideal':>8}{'raw pool':>9}{'x raw':>7}{'CPU/host':>10}{'fan-out':>9}"
        f"{'res/write':>10}"
        f"{'inflight':>9}{'peak MiB':>9}{'worker':>8}  counts")
    for r in results:
        def opt(value: float | None, fmt: str, width: int) -> str:
            return f"{value:{width}{fmt}}" if value is not None else f"{'-':>{width}}"
        say(f"{r.path:<20}{r.hosts:>7}{r.ideal_s:7.2f}s{r.fanout_s:8.2f}s{r.ratio:7.2f}x"
            f"{opt(r.warm_fanout_s, '.2f', 7)}s{opt(r.warm_ratio, '.2f', 7)}x"
            f"{opt(r.raw_s, '.2f', 8)}s{opt(r.raw_ratio, '.2f', 6)}x"
            f"{opt(r.cpu_ms_per_host, '.3f', 8)}ms{opt(r.fanout_cpu_ms, '.3f', 7)}ms"
            f"{opt(r.results_per_write, '.1f', 10)}"
            f"{opt(r.peak_inflight, 'd', 9)}{opt(r.peak_rss_mib, '.0f', 9)}"
            f"{opt(r.whole_s, '.1f', 7)}s  {r.counts}"
            + (f"  [{r.note}]" if r.note else ""))


def per_thousand(r: runs.FanoutRun) -> str:
    k = 1000 / r.hosts
    writes, reads = r.aws["dynamodb_writes"], r.aws["dynamodb_reads"]
    return (f"{r.path} at {r.hosts} hosts: DynamoDB {writes * k:.0f} write requests "
            f"(one per {r.hosts / max(writes, 1):.1f} host results), {reads * k:.0f} read "
            f"requests; {r.aws['lambda_invokes'] * k:.1f} Lambda invocations "
            f"(+ the API's own and its authorizer's: 2 per job) — by operation "
            f"{dict(sorted(r.aws['dynamodb'].items()))}")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--sizes", default="100,1000,10000", help="in-process job sizes")
    parser.add_argument("--distributed-sizes", default="100,1000,10000",
                        help="Distributed Map job sizes")
    parser.add_argument("--sequential-hosts", type=int, default=300,
                        help="hosts in the sequential loop (scaled to 1,000: it is linear)")
    parser.add_argument("--latency", type=float, default=0.05, help="seconds per request")
    parser.add_argument("--concurrency", type=int, default=100)
    parser.add_argument("--import-runs", type=int, default=7)
    parser.add_argument("--keep-alive", action="store_true",
                        help="also run 1,000 hosts with a fleet that keeps connections open")
    parser.add_argument("--quick", action="store_true",
                        help="100 and 1,000 hosts only, a shorter sequential baseline")
    parser.add_argument("--api-sizes", default="100,1000,10000",
                        help="job sizes through the API (above 2,000: the Map, one job each)")
    parser.add_argument("parts", nargs="*", choices=[*PARTS, "profile", []],
                        help=f"run only these parts (default: all of {', '.join(PARTS)}); "
                        "`profile` profiles the event-loop engine (pyinstrument)")
    args = parser.parse_args(argv)
    parts = set(args.parts or PARTS)
    if "profile" in parts:
        return profile(args.concurrency, args.latency)
    if parts == {"load"}:
        return load.main([])  # its own stack: `python -m bench.load --help` has its options
    if args.quick:
        args.sizes, args.distributed_sizes, args.sequential_hosts = "100,1000", "100", 100
        args.api_sizes = "100,1000"
        args.import_runs = 3
    sizes = [int(s) for s in args.sizes.split(",") if s] if "inprocess" in parts else []
    dist_sizes = ([int(s) for s in args.distributed_sizes.split(",") if s]
                  if "distributed" in parts else [])
    api_sizes = [int(s) for s in args.api_sizes.split(",") if s] if "api" in parts else []
    seq_hosts = args.sequential_hosts if "sequential" in parts else 0
    largest = max(sizes + dist_sizes + api_sizes + [seq_hosts, 1000])
    started = time.monotonic()

    say(f"mailfleet bench, {datetime.datetime.now(datetime.UTC):%Y-%m-%d %H:%M} UTC")
    say(f"machine: {machine()}; calibration loop {cpu_speed_ms():.0f} ms of CPU")
    say(f"fleet: {largest} simulated doveadm hosts in one process on 127.0.0.1, "
        f"{args.latency * 1000:.0f} ms a request, Connection: close after each answer "
        "(as Dovecot 2.3.19); action `who`")
    calls = AwsCalls().install()
    stack = BenchStack().start()
    results: list[runs.FanoutRun] = []
    api_results: list[api.ApiRun] = []
    try:
        with FleetProcess(largest, latency=args.latency, max_seconds=3600) as fleet:
            took = stack.register_fleet(fleet, largest)
            say(f"{largest} hosts registered in the inventory in {took:.1f} s "
                "(straight into the table, each with its packed command list)")
            say()
            say(f"== Fan-out wall time, max_concurrency {args.concurrency}: ideal = "
                f"{args.latency * 1000:.0f} ms x ceil(N / {args.concurrency})")
            if "engine" in parts:
                engine = runs.engine_only(1000, args.concurrency, args.latency)
                fanout_table([engine])
                say()
                say("== The worker's fan-out alone (bench/engine.py, no AWS): the event-loop "
                    "engine and the doveadm driver in this process, the fleet in its own")
                for n in (100, 1000):  # 10,000: the in-process worker below
                    for row in engine_rows(fleet, n, args.concurrency, args.latency):
                        say(row)
                say()
            for n in sizes:
                results += runs.inprocess(stack, calls, n, args.concurrency, args.latency)
                fanout_table(results[-2:])
            if args.keep_alive:
                fleet.configure(keep_alive=True)
                more = runs.inprocess(stack, calls, 1000, args.concurrency, args.latency)
                for run in more:
                    run.path = run.path.replace("in-process", "keep-alive")
                results += more
                fanout_table(results[-2:])
                fleet.configure(keep_alive=False)
            for n in dist_sizes:
                results.append(runs.distributed(stack, calls, n, args.concurrency, args.latency))
                fanout_table(results[-1:])
            say("engine only: the engine with a 50 ms sleep for each host's action, no "
                "driver, network or results; what the engine itself adds.")
            say("in-process: `fan-out` is the engine's wall time in a fresh worker process "
                "(first host started to last result written, the real doveadm driver and "
                "the DynamoDB result writes to moto included); `warm` is a second job in "
                "the same worker; `worker` is the whole cold invocation, reading the job "
                "and its hosts from moto's DynamoDB and closing the job included.")
            say("in-process, DDB off: the same fan-out (Jobs.run_hosts) in another fresh "
                "worker, result writes answered in 10 ms by a stand-in instead of moto, "
                "whose ~2 ms of CPU per stored result shares the two cores with the worker "
                "and the fleet here; on AWS that work is DynamoDB's, not the worker's.")
            say("distributed (moto): StartExecution to the job closed, run by moto's Step "
                "Functions interpreter with the real worker handler in the bench process "
                "(moto, its interpreter and every batch share one Python process, two "
                "cores and the GIL): it shows the path works at this size and what the "
                "local stack costs, not AWS's speed. See docs/scaling.md for AWS.")
            say("raw pool: a ThreadPoolExecutor of max_concurrency doing the same POSTs with "
                "http.client, nothing recorded, timed in the same run just before; CPU/host: "
                "the worker process's CPU (user + system) per host-action over the whole "
                "invocation (job and host reads, fan-out, result writes, close; DDB off: "
                "without the writes and the close); fan-out: the same CPU while the engine ran "
                "(connections, result shaping, recording; the warm run where there is one); "
                "res/write: host results per DynamoDB write request; inflight: the most "
                "requests the fleet saw at once.")
            if api_sizes:
                say()
                say(f"== Through the API on the make-run stack: POST /jobs?wait=25, action "
                    f"`{api.ACTION}`, max_concurrency {args.concurrency} (as in `make run`: "
                    "the API, Step Functions and the worker in this process, DynamoDB in a "
                    "moto process of its own)")
                api_results = api.api_runs(stack, calls, fleet, api_sizes,
                                           concurrency=args.concurrency,
                                           latency=args.latency, say=say)
                say("CPU/host here is this process and DynamoDB's together (API, moto, "
                    "worker) per host-action.")
            seq_1000 = None
            if seq_hosts:
                say()
                say(f"== Sequential baseline: {seq_hosts} hosts, one after another "
                    "(bash loop over curl)")
                seq = runs.sequential(fleet, seq_hosts)
                seq_1000 = seq * 1000 / seq_hosts
                per_host_ms = seq / seq_hosts * 1000
                say(f"{seq_hosts} hosts in {seq:.1f} s ({per_host_ms:.0f} ms a host)"
                    + ("" if seq_hosts == 1000 else
                       f"; at 1,000 hosts: {seq_1000:.1f} s (scaled)"))
        say()
        say("== AWS requests per 1,000 host-actions (counted on every botocore client call)")
        for r in results:
            if r.hosts >= 1000 and r.aws:
                say(per_thousand(r))
        say()
        say("== Peak memory of one worker (high-water RSS of the worker process)")
        for r in results:
            if r.peak_rss_mib is not None:
                say(f"{r.path} worker, {r.hosts} hosts: {r.peak_rss_mib:.0f} MiB")
    finally:
        stack.stop()
    functions: list[imports.ImportTime] = []
    if "imports" in parts:
        functions = import_table(args.import_runs)
    say()
    report_targets(results, api_results, seq_1000, functions)
    if "load" in parts:
        say()
        load.main([])
    say(f"\n(bench took {time.monotonic() - started:.0f} s; calibration loop at the end "
        f"{cpu_speed_ms():.0f} ms of CPU, load average {os.getloadavg()[0]:.2f})")
    return 0


def engine_rows(fleet: FleetProcess, n: int, concurrency: int, latency: float) -> list[str]:
    ideal = latency * -(-n // concurrency)
    raw = engine.raw_pool(fleet.ports[:n], concurrency)
    loop_runs = engine.engine(fleet.ports[:n], concurrency, runs=2)
    threaded = engine.engine(fleet.ports[:n], concurrency, threads=True)[0]
    rows = []
    for label, t in [("raw thread pool", raw), ("event loop, first", loop_runs[0]),
                     ("event loop, again", loop_runs[1]), ("threads (before)", threaded)]:
        rows.append(f"{label:<20}{n:>7}{ideal:7.2f}s{t.wall_s:8.2f}s{t.wall_s / ideal:7.2f}x"
                    f"  x raw {t.wall_s / raw.wall_s:5.2f}  CPU/host {t.cpu_ms_per_host:.3f} ms"
                    f" (user {t.user_s / n * 1000:.3f})  in flight {t.peak_inflight}")
    return rows


def profile(concurrency: int, latency: float, hosts: int = 1000) -> int:
    """pyinstrument over the event-loop engine's fan-out (it runs in the main thread); for
    the threaded engine use py-spy, which sees every thread:
    `py-spy record -f raw -o out.txt -- python -m bench engine`."""
    from pyinstrument import Profiler

    with FleetProcess(hosts, latency=latency) as fleet:
        engine.engine(fleet.ports, concurrency)  # warm: imports, first connections
        profiler = Profiler(interval=0.0005)
        profiler.start()
        [t] = engine.engine(fleet.ports, concurrency)
        profiler.stop()
    say(f"{hosts} hosts: {t.wall_s:.2f} s, CPU {t.cpu_ms_per_host:.3f} ms a host-action")
    say(profiler.output_text(unicode=False, show_all=False))
    return 0


def import_table(import_runs: int) -> list[imports.ImportTime]:
    say()
    say(f"== Cold import time of each function (fresh interpreters, median of "
        f"{import_runs}): boto3 + Powertools first, then pydantic, then the function's "
        "own module, in the same interpreter")
    functions = imports.run(import_runs)
    say(f"{'function':<16}{'boto3+Powertools':>18}{'pydantic':>10}{'own module':>12}"
        f"{'total':>8}  added")
    for f in functions:
        say(f"{f.name:<16}{f.baseline_s * 1000:15.0f} ms{f.pydantic_s * 1000:7.0f} ms"
            f"{f.own_s * 1000:9.0f} ms{f.total_s * 1000:6.0f} ms  {f.share * 100:+.0f}% "
            f"({f.own_s / f.baseline_s * 100:+.0f}% without pydantic)")
    say()
    say("== Built artifacts (make build; arm64 as deployed, uncompressed)")
    for name, size, files in imports.layer_sizes():
        say(f"{name:<24}{size / 2**20:8.1f} MiB {files:7d} files")
    say()
    say("== Cold import from the built artifact under Python 3.12 (function folder + layer "
        "+ the runtime's boto3, bytecode as shipped), median of 5")
    say(f"{'function':<24}{'boto3+Powertools':>18}{'handler':>10}{'total':>9}"
        f"   CPU: {'boto3+Powertools':>16}{'handler':>10}")
    for f in imports.artifact_run(5):
        say(f"{f.name:<24}{f.baseline_s * 1000:15.0f} ms{f.own_s * 1000:7.0f} ms"
            f"{f.total_s * 1000:6.0f} ms        {f.baseline_cpu_s * 1000:13.0f} ms"
            f"{f.own_cpu_s * 1000:7.0f} ms")
    say()
    return functions


def report_targets(results: list[runs.FanoutRun], api_results: list[api.ApiRun],
                   seq_1000: float | None, functions: list[imports.ImportTime]) -> None:
    say("== Targets")

    def verdict(ok: bool) -> str:
        return "met" if ok else "MISSED"

    for r in api_results:
        if r.hosts != 1000 or r.label == "API, Map forced":
            continue
        say(f"{r.label}, 1,000 hosts through the API within {TARGET_RATIO}x of ideal: "
            f"{r.wall_s / r.ideal_s:.2f}x -> {verdict(r.wall_s / r.ideal_s <= TARGET_RATIO)}; "
            f"within {TARGET_RAW_RATIO}x of the raw pool: {r.wall_s / r.raw_s:.2f}x -> "
            f"{verdict(r.wall_s / r.raw_s <= TARGET_RAW_RATIO)}")
        if seq_1000:
            speedup = seq_1000 / r.wall_s
            say(f"{r.label}, >= {TARGET_SPEEDUP:.0f}x faster than sequential at 1,000: "
                f"{speedup:.0f}x -> {verdict(speedup >= TARGET_SPEEDUP)}")
    for r in api_results:
        if r.hosts == 1000 and r.label == "API, Map forced":
            say(f"Map path through the API, 1,000 hosts within 3x of ideal: "
                f"{r.wall_s / r.ideal_s:.2f}x -> {verdict(r.wall_s / r.ideal_s <= 3)}")
    for r in results:
        if r.path.startswith("distributed") and r.hosts == 1000:
            say(f"Map job under the local stack (StartExecution to closed), 1,000 hosts within "
                f"3x of ideal: {r.ratio:.2f}x -> {verdict(r.ratio <= 3)}")
    for r in results:
        if not (r.path.startswith("in-process") and r.hosts == 1000):
            continue
        warm = f", {r.warm_ratio:.2f}x warm" if r.warm_ratio is not None else ""
        say(f"{r.path} worker, 1,000 hosts within {TARGET_RATIO}x of ideal: {r.ratio:.2f}x "
            f"cold{warm} -> {verdict(r.ratio <= TARGET_RATIO)}")
        if seq_1000:
            speedup = seq_1000 / r.fanout_s
            say(f"{r.path} worker, >= {TARGET_SPEEDUP:.0f}x faster than sequential at 1,000: "
                f"{speedup:.0f}x cold -> {verdict(speedup >= TARGET_SPEEDUP)}")
        if r.fanout_cpu_ms is not None:
            say(f"{r.path} worker CPU per host-action (fan-out: connections, result shaping, "
                f"recording) < {TARGET_CPU_MS} ms: {r.fanout_cpu_ms:.3f} ms -> "
                f"{verdict(r.fanout_cpu_ms < TARGET_CPU_MS)}; whole invocation (reading the "
                f"job and its hosts, closing it) {r.cpu_ms_per_host:.3f} ms")
    for r in results:
        if r.hosts >= 1000 and r.aws.get("dynamodb_writes"):
            per = r.hosts / r.aws["dynamodb_writes"]
            say(f"<= 1 DynamoDB write per {TARGET_RESULTS_PER_WRITE:.0f} results, {r.path} at "
                f"{r.hosts}: one per {per:.1f} -> {verdict(per >= TARGET_RESULTS_PER_WRITE)}")
    if functions:
        over = [f"{f.name} {f.share * 100:+.0f}%" for f in functions
                if f.share > TARGET_IMPORT_SHARE]
        say(f"no function's own code > {TARGET_IMPORT_SHARE:.0%} over boto3 + Powertools: "
            + ("met" if not over else f"MISSED by {', '.join(over)}"))


def _main() -> Any:
    sys.exit(main())


if __name__ == "__main__":
    _main()
