"""`python -m bench.audit`: how fast the audit trail takes events as writers are added.

Each writer is a thread with its own AuditLog (as each Lambda container has its own),
appending events to the audit table of template.yaml deployed into the embedded AWS
(moto server, this process). Printed per writer count: events/s, p50 and p99 of one
append, and how many appends failed. With `--changes`, each append is "a change plus
its event" (a token item and its event in one transaction) where the code has that.
With `--api URL --token T` it measures the same through a running `make run` instead:
POST /tokens (one token item and its event per request), then GET /audit/verify.
Bounded: a fixed number of events per run, loopback only.
"""

from __future__ import annotations

import argparse
import statistics
import threading
import time
import uuid
from collections.abc import Callable
from typing import Any

from bench.stack import BenchStack


def _percentile(values: list[float], fraction: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(fraction * len(ordered)))] if ordered else 0.0


# One writer's work: each step returns None when it went through, or what failed.
Step = Callable[[int, int], object]


def _measure(writers: int, steps: int, step: Step) -> dict[str, Any]:
    """`writers` threads, each taking `steps` steps (step(writer, i)) in turn: the rate and
    the latency of one step; a failed step is counted, not timed."""
    latencies: list[float] = []
    failures: list[object] = []
    lock = threading.Lock()

    def writer(n: int) -> None:
        own: list[float] = []
        for i in range(steps):
            began = time.perf_counter()
            failure = step(n, i)
            if failure is not None:
                with lock:
                    failures.append(failure)
                continue
            own.append(time.perf_counter() - began)
        with lock:
            latencies.extend(own)

    threads = [threading.Thread(target=writer, args=(n,)) for n in range(writers)]
    began = time.perf_counter()
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    elapsed = time.perf_counter() - began
    return {
        "writers": writers,
        "events": len(latencies),
        "failed": len(failures),
        "rate": len(latencies) / elapsed if elapsed else 0.0,
        "p50_ms": statistics.median(latencies) * 1000 if latencies else 0.0,
        "p99_ms": _percentile(latencies, 0.99) * 1000,
        "max_ms": max(latencies) * 1000 if latencies else 0.0,
    }


def run(writers: int, events: int, *, changes: bool) -> dict[str, Any]:
    from mailfleet.config import Tables
    from mailfleet.store import audit as audit_store

    record = getattr(audit_store, "Change", None) if changes else None
    tokens = Tables().tokens_table
    # Each writer its own AuditLog, as each Lambda container has its own.
    logs = {n: audit_store.AuditLog() for n in range(writers)}

    def append(n: int, i: int) -> object:
        log = logs[n]
        fields = dict(actor=f"bench-{n}", action="bench.append", target=f"w{n}",
                      outcome="ok", params={"i": i})
        try:
            if record is not None:
                item = {"token_id": uuid.uuid4().hex, "name": "bench", "role": "viewer"}
                log.record(audit_store.Change.put(tokens, item,
                                                  condition="attribute_not_exists(token_id)"),
                           **fields)
            else:
                log.append(**fields)
        except Exception as exc:  # counted and shown: a lost event is the finding
            return type(exc).__name__
        return None

    return _measure(writers, max(1, events // writers), append)


def run_http(api: str, token: str, clients: int, requests_total: int) -> dict[str, Any]:
    """POST /tokens from `clients` threads, each with its own pooled session."""
    import requests

    sessions = {n: requests.Session() for n in range(clients)}
    for session in sessions.values():
        session.headers["Authorization"] = f"Bearer {token}"

    def post(n: int, i: int) -> object:
        answer = sessions[n].post(f"{api}/tokens", timeout=30,
                                  json={"role": "viewer", "name": f"bench-{n}-{i}"})
        return None if answer.status_code == 201 else answer.status_code

    try:
        return _measure(clients, max(1, requests_total // clients), post)
    finally:
        for session in sessions.values():
            session.close()


def seal_and_verify(events: int) -> None:
    """Write `events` events (8 writers), seal them all, then verify page by page: how
    long sealing and each verification request take (each must stay far below 29 s)."""
    import datetime

    from mailfleet.config import AuditSettings
    from mailfleet.store.audit import AuditLog
    from mailfleet.store.audit_digests import Sealer, Verifier

    run(8, events, changes=False)
    time.sleep(1.1)  # every write of the run is before the cutoff
    began = time.perf_counter()
    now = datetime.datetime.now(datetime.UTC)
    digests = Sealer().seal(now=now + datetime.timedelta(
        seconds=AuditSettings().audit_seal_grace_seconds), max_digests=1000)
    print(f"sealed {sum(d['count'] for d in digests)} events in {len(digests)} digests: "
          f"{time.perf_counter() - began:.1f} s", flush=True)
    verifier, token, pages = Verifier(AuditLog()), None, 0
    while True:
        began = time.perf_counter()
        page = verifier.run(since=None, until=None, next_token=token)
        pages += 1
        print(f"verify page {pages}: {page.checked} events checked so far, ok={page.ok}, "
              f"{time.perf_counter() - began:.1f} s", flush=True)
        token = page.next_token
        if not token or pages >= 100:
            break


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--events", type=int, default=320, help="events per writer count")
    parser.add_argument("--writers", default="1,4,16")
    parser.add_argument("--changes", action="store_true",
                        help="each event with a change in one transaction (new code only)")
    parser.add_argument("--api", help="a running make run's URL (http://127.0.0.1:PORT)")
    parser.add_argument("--token", help="its admin token (with --api)")
    parser.add_argument("--verify", type=int, default=0, metavar="N",
                        help="write N events, seal them, time verification page by page")
    args = parser.parse_args(argv)
    if args.api:
        _table(lambda n: run_http(args.api, args.token, n, args.events), args.writers)
        import requests

        verified = requests.get(f"{args.api}/audit/verify", timeout=30,
                                headers={"Authorization": f"Bearer {args.token}"}).json()
        print("GET /audit/verify:", {k: verified.get(k) for k in (
            "ok", "checked", "unsealed", "sealed_until", "complete")}, flush=True)
        return
    stack = BenchStack().start()
    try:
        if args.verify:
            seal_and_verify(args.verify)
            return
        run(1, 20, changes=args.changes)  # warm-up: clients, tables, imports
        _table(lambda n: run(n, args.events, changes=args.changes), args.writers)
    finally:
        stack.stop()


def _table(measure: Any, writers: str) -> None:
    print(f"{'writers':>8}{'events':>8}{'failed':>8}{'events/s':>10}{'p50 ms':>9}"
          f"{'p99 ms':>9}{'max ms':>9}", flush=True)
    first = None
    for n in (int(w) for w in writers.split(",")):
        r = measure(n)
        first = first or r["rate"] or 1.0
        print(f"{r['writers']:>8}{r['events']:>8}{r['failed']:>8}{r['rate']:>10.1f}"
              f"{r['p50_ms']:>9.1f}{r['p99_ms']:>9.1f}{r['max_ms']:>9.1f}"
              f"   ({r['rate'] / first:.0%} of 1 writer)", flush=True)


if __name__ == "__main__":
    main()
