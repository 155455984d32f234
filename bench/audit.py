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
from typing import Any

from bench.stack import BenchStack


def _percentile(values: list[float], fraction: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(fraction * len(ordered)))] if ordered else 0.0


def run(writers: int, events: int, *, changes: bool) -> dict[str, Any]:
    from mailfleet.config import settings
    from mailfleet.store import audit as audit_store

    per_writer = max(1, events // writers)
    latencies: list[float] = []
    failures: list[str] = []
    lock = threading.Lock()
    record = getattr(audit_store, "Change", None) if changes else None
    tokens = settings().tokens_table

    def writer(n: int) -> None:
        log = audit_store.AuditLog()
        own: list[float] = []
        for i in range(per_writer):
            began = time.perf_counter()
            try:
                fields = dict(actor=f"bench-{n}", action="bench.append", target=f"w{n}",
                              outcome="ok", params={"i": i})
                if record is not None:
                    item = {"token_id": uuid.uuid4().hex, "name": "bench", "role": "viewer"}
                    log.record(audit_store.Change.put(tokens, item,
                                                      condition="attribute_not_exists(token_id)"),
                               **fields)
                else:
                    log.append(**fields)
            except Exception as exc:  # counted and shown: a lost event is the finding
                with lock:
                    failures.append(type(exc).__name__)
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


def run_http(api: str, token: str, clients: int, requests_total: int) -> dict[str, Any]:
    """POST /tokens from `clients` threads, each with its own pooled session."""
    import requests

    per_client = max(1, requests_total // clients)
    latencies: list[float] = []
    failures: list[int] = []
    lock = threading.Lock()

    def client(n: int) -> None:
        own: list[float] = []
        with requests.Session() as session:
            session.headers["Authorization"] = f"Bearer {token}"
            for i in range(per_client):
                began = time.perf_counter()
                answer = session.post(f"{api}/tokens", json={"role": "viewer",
                                                             "name": f"bench-{n}-{i}"}, timeout=30)
                if answer.status_code != 201:
                    with lock:
                        failures.append(answer.status_code)
                    continue
                own.append(time.perf_counter() - began)
        with lock:
            latencies.extend(own)

    threads = [threading.Thread(target=client, args=(n,)) for n in range(clients)]
    began = time.perf_counter()
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    elapsed = time.perf_counter() - began
    return {
        "writers": clients, "events": len(latencies), "failed": len(failures),
        "rate": len(latencies) / elapsed if elapsed else 0.0,
        "p50_ms": statistics.median(latencies) * 1000 if latencies else 0.0,
        "p99_ms": _percentile(latencies, 0.99) * 1000,
        "max_ms": max(latencies) * 1000 if latencies else 0.0,
    }


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--events", type=int, default=320, help="events per writer count")
    parser.add_argument("--writers", default="1,4,16")
    parser.add_argument("--changes", action="store_true",
                        help="each event with a change in one transaction (new code only)")
    parser.add_argument("--api", help="a running make run's URL (http://127.0.0.1:PORT)")
    parser.add_argument("--token", help="its admin token (with --api)")
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
