"""The worker's fan-out against the simulated fleet, without the embedded AWS: the raw
baseline (a plain pool of threads doing the same requests, nothing recorded) and the
engine with the real doveadm driver and result batching, timed in the same run, in this
process, with the fleet in a process of its own so the worker's CPU is measured apart.

`python -m bench engine [--hosts N] [--profile FILE]`: the figures per size; with
`--profile`, a pyinstrument profile of the engine's run (text) written to FILE.
"""

from __future__ import annotations

import argparse
import base64
import http.client
import json
import resource
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any

from bench.fleet import DEFAULT_API_KEY, FleetProcess


@dataclass
class Timing:
    wall_s: float
    cpu_s: float  # this process's CPU (user + system) over the run
    hosts: int
    ok: int
    peak_inflight: int = 0
    user_s: float = 0.0  # the user-mode part of cpu_s (the rest is the kernel's TCP work)

    @property
    def cpu_ms_per_host(self) -> float:
        return self.cpu_s / max(1, self.hosts) * 1000


def _cpu() -> float:
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


def _user() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_utime


class InFlight:
    """Counts requests in flight in the client, and the most seen at once."""

    def __init__(self) -> None:
        self.now = 0
        self.peak = 0
        self._lock = threading.Lock()

    def __enter__(self) -> None:
        with self._lock:
            self.now += 1
            self.peak = max(self.peak, self.now)

    def __exit__(self, *exc: object) -> None:
        with self._lock:
            self.now -= 1


def raw_pool(ports: list[int], concurrency: int, timeout: float = 30) -> Timing:
    """The floor: a ThreadPoolExecutor of `concurrency` doing one doveadm POST per host
    with http.client, a new connection each (the host closes it), nothing recorded."""
    auth = "X-Dovecot-API " + base64.b64encode(DEFAULT_API_KEY.encode()).decode()
    body = json.dumps([["who", {"separateConnections": True}, "t1"]]).encode()
    headers = {"Authorization": auth, "Content-Type": "application/json"}
    gauge = InFlight()

    def one(port: int) -> bool:
        with gauge:
            conn = http.client.HTTPConnection("127.0.0.1", port, timeout=timeout)
            try:
                conn.request("POST", "/doveadm/v1", body=body, headers=headers)
                resp = conn.getresponse()
                data = resp.read()
                return resp.status == 200 and data.startswith(b"[[")
            finally:
                conn.close()

    with ThreadPoolExecutor(concurrency) as pool:
        list(pool.map(one, ports[:concurrency]))  # threads started before the clock
        t0, c0, u0 = time.perf_counter(), _cpu(), _user()
        ok = sum(pool.map(one, ports))
        wall, cpu = time.perf_counter() - t0, _cpu() - c0
    return Timing(wall, cpu, len(ports), ok, gauge.peak, _user() - u0)


def engine(ports: list[int], concurrency: int, *, runs: int = 1, threads: bool = False
           ) -> list[Timing]:
    """fanout.run with DovecotDriver.perform and a BatchedResults-like sink (results kept
    in memory, flushed in 25s), as Jobs.run_hosts drives it, minus DynamoDB."""
    from mailfleet import fanout
    from mailfleet.drivers.base import DriverContext
    from mailfleet.drivers.dovecot import DovecotDriver
    from mailfleet.models.hosts import Credentials, Host

    credentials = Credentials(api_key=DEFAULT_API_KEY)
    hosts = [Host(id=f"e{i:05d}", kind="dovecot", endpoint=f"http://127.0.0.1:{p}",
                  max_concurrency=4) for i, p in enumerate(ports)]
    commands = [{"command": "who", "parameters": [
        {"name": "separateConnections", "type": "boolean"}]}]
    context = DriverContext(extras={"doveadm_commands": commands,
                                    "doveadm_commands_checked": True})
    gauge = InFlight()

    def perform(host: Host, deadline: Any) -> Any:
        with gauge:
            driver = DovecotDriver(host, credentials, context)
            checked = driver.validate("who", {}, deadline)
            return driver.perform("who", checked, deadline)

    async def perform_async(host: Host, deadline: Any) -> Any:
        with gauge:
            driver = DovecotDriver(host, credentials, context)
            return await driver.perform_async("who", {}, deadline)

    class Sink:
        def __init__(self) -> None:
            self.results: list[dict[str, Any]] = []
            self.writes = 0

        def record(self, result: dict[str, Any]) -> None:
            self.results.append(result)
            if len(self.results) % 25 == 0:
                self.writes += 1

    out = []
    for _ in range(runs):
        gauge.peak = 0
        sink = Sink()
        t0, c0, u0 = time.perf_counter(), _cpu(), _user()
        if threads:
            summary = fanout.run(hosts, perform, sink, concurrency=concurrency,
                                 timeout_seconds=30, slots=fanout.HostSlots())
        else:
            summary = fanout.run_async(hosts, perform_async, sink, concurrency=concurrency,
                                       timeout_seconds=30, slots=fanout.HostSlots())
        wall, cpu = time.perf_counter() - t0, _cpu() - c0
        out.append(Timing(wall, cpu, len(hosts), summary.counts.get("SUCCEEDED", 0),
                          gauge.peak, _user() - u0))
    return out


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--hosts", default="100,1000")
    parser.add_argument("--concurrency", type=int, default=100)
    parser.add_argument("--latency", type=float, default=0.05)
    parser.add_argument("--profile", default="")
    args = parser.parse_args(argv)
    sizes = [int(s) for s in args.hosts.split(",")]
    with FleetProcess(max(sizes), latency=args.latency) as fleet:
        for n in sizes:
            ideal = args.latency * -(-n // args.concurrency)
            raw = raw_pool(fleet.ports[:n], args.concurrency)
            if args.profile:
                from pyinstrument import Profiler

                profiler = Profiler(interval=0.0005)
                profiler.start()
            runs = engine(fleet.ports[:n], args.concurrency, runs=2)
            threaded = engine(fleet.ports[:n], args.concurrency, runs=1, threads=True)
            if args.profile:
                profiler.stop()
                with open(args.profile, "w") as fh:
                    fh.write(profiler.output_text(unicode=False, show_all=False))
            for label, t in [("raw pool", raw), ("engine cold", runs[0]),
                             ("engine warm", runs[1]), ("threads", threaded[0])]:
                print(f"{n:>6} {label:<12} {t.wall_s:6.3f}s {t.wall_s / ideal:5.2f}x ideal "
                      f"{t.wall_s / raw.wall_s:5.2f}x raw  cpu {t.cpu_ms_per_host:.3f} ms/host "
                      f"(user {t.user_s / n * 1000:.3f}) "
                      f"peak in flight {t.peak_inflight}  ok {t.ok}", flush=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
