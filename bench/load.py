"""The control plane under load: N concurrent clients against `make run`'s stack.

Each client mixes what operators and scripts do at once: reads (whoami, hosts, jobs,
audit), host registrations, token changes (mint, then revoke) and small jobs (two
unreachable hosts, a 2 s timeout). Every change is remembered; afterwards the audit
trail must hold exactly one event for each, and GET /audit/verify must be ok. Then bulk
inventory: 1,000 hosts through POST /inventory/import, and hosts one POST /hosts at a
time from 1 client and from 16.

Loopback only; every loop is bounded in time and count. Figures are printed, never
asserted (no timed tests).
"""

from __future__ import annotations

import argparse
import random
import statistics
import threading
import time
import uuid
from collections import Counter
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import requests

from mailfleet_local.process import StackProcess

LEVELS = (1, 4, 16, 64)
# The mix, by weight: what a client does next.
MIX = (("read", 50), ("host", 20), ("token", 20), ("job", 10))
# Hosts a small job targets: nothing listens there, so each fails fast.
JOB_HOSTS = ("load-job-a", "load-job-b")
WRITES = frozenset({"host", "token.create", "token.revoke", "job"})


def say(text: str = "") -> None:
    print(text, flush=True)


@dataclass
class Call:
    kind: str
    ms: float
    status: int


@dataclass
class Client:
    """One operator's session: a pooled connection, its own admin token."""

    url: str
    token: str
    session: requests.Session = field(default_factory=requests.Session)

    def __post_init__(self) -> None:
        self.session.trust_env = False  # no proxy between us and 127.0.0.1
        self.session.headers["Authorization"] = f"Bearer {self.token}"

    def send(self, method: str, path: str, **kwargs: Any) -> tuple[requests.Response, float]:
        """The answer and its milliseconds; a connection reset or refused is status 0."""
        began = time.perf_counter()
        try:
            answer = self.session.request(method, self.url + path, timeout=60, **kwargs)
        except requests.RequestException:
            answer = requests.Response()
            answer.status_code = 0
        return answer, (time.perf_counter() - began) * 1000


@dataclass
class Ledger:
    """Every change the load made, as the audit trail should show it: (action, target)."""

    changes: Counter[tuple[str, str]] = field(default_factory=Counter)
    lock: threading.Lock = field(default_factory=threading.Lock)

    def add(self, action: str, target: str) -> None:
        with self.lock:
            self.changes[(action, target)] += 1


def host_body(host_id: str, port: int = 9) -> dict[str, Any]:
    return {"id": host_id, "kind": "dovecot", "endpoint": f"http://127.0.0.1:{port}",
            "credentials": {"api_key": "load-bench-key"}, "tags": {"bench": "load"}}


def one_op(client: Client, kind: str, ledger: Ledger, rng: random.Random) -> list[Call]:
    if kind == "read":
        path = rng.choice(["/whoami", "/hosts?limit=20&tag=bench:load", "/jobs?limit=10",
                           "/audit?limit=20"])
        answer, ms = client.send("GET", path)
        return [Call("read", ms, answer.status_code)]
    if kind == "host":
        host_id = f"load-{uuid.uuid4().hex[:12]}"
        answer, ms = client.send("POST", "/hosts", json=host_body(host_id))
        if answer.status_code == 201:
            ledger.add("host.create", host_id)
        return [Call("host", ms, answer.status_code)]
    if kind == "token":
        answer, ms = client.send("POST", "/tokens", json={"role": "viewer", "name": "load"})
        calls = [Call("token.create", ms, answer.status_code)]
        if answer.status_code == 201:
            token_id = answer.json()["token_id"]
            ledger.add("token.create", f"token:{token_id}")
            gone, ms = client.send("DELETE", f"/tokens/{token_id}")
            calls.append(Call("token.revoke", ms, gone.status_code))
            if gone.status_code == 204:
                ledger.add("token.revoke", f"token:{token_id}")
        return calls
    answer, ms = client.send("POST", "/jobs", json={
        "action": "who", "targets": {"hosts": list(JOB_HOSTS)}, "timeout_seconds": 2})
    if answer.status_code == 202:
        ledger.add("job.start", f"job:{answer.json()['job_id']}")
    return [Call("job", ms, answer.status_code)]


@dataclass
class Level:
    clients: int
    seconds: float
    calls: list[Call]

    def pick(self, kinds: Callable[[str], bool]) -> list[Call]:
        return [c for c in self.calls if kinds(c.kind)]


def run_level(url: str, token: str, clients: int, seconds: float, max_ops: int,
              ledger: Ledger) -> Level:
    weights = [w for _, w in MIX]
    kinds = [k for k, _ in MIX]
    calls: list[Call] = []
    lock = threading.Lock()
    start = threading.Barrier(clients)

    def work(n: int) -> None:
        client = Client(url, token)
        rng = random.Random(n)
        mine: list[Call] = []
        start.wait()
        deadline = time.monotonic() + seconds
        done = 0
        while time.monotonic() < deadline and done < max_ops:
            mine += one_op(client, rng.choices(kinds, weights)[0], ledger, rng)
            done += 1
        client.session.close()
        with lock:
            calls.extend(mine)

    began = time.monotonic()
    with ThreadPoolExecutor(clients) as pool:
        list(pool.map(work, range(clients)))
    return Level(clients, time.monotonic() - began, calls)


def pct(values: list[float], p: float) -> float:
    if not values:
        return float("nan")
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(p / 100 * (len(ordered) - 1)))]


def describe(level: Level) -> str:
    everything = level.calls
    writes = level.pick(lambda k: k in WRITES)
    ms = [c.ms for c in everything]
    wms = [c.ms for c in writes]
    errors = sum(1 for c in everything if c.status >= 500)
    refused = sum(1 for c in everything if 400 <= c.status < 500)
    resets = sum(1 for c in everything if c.status == 0)
    return (f"{level.clients:>7}{len(everything) / level.seconds:9.1f}/s"
            f"{statistics.median(ms) if ms else float('nan'):8.0f}ms{pct(ms, 99):8.0f}ms"
            f"{len(writes) / level.seconds:10.1f}/s"
            f"{statistics.median(wms) if wms else float('nan'):8.0f}ms{pct(wms, 99):8.0f}ms"
            f"{pct(wms, 100):8.0f}ms{errors:6d}{refused:6d}{resets:7d}{len(everything):7d}")


def check_audit(client: Client, ledger: Ledger) -> tuple[str, bool]:
    """Every change made has exactly one event (and none twice), and the trail verifies."""
    seen: Counter[tuple[str, str]] = Counter()
    token = None
    for _ in range(10_000):  # pages of 1,000 events: bounded
        params: dict[str, Any] = {"limit": 1000, "order": "asc"}
        if token:
            params["next_token"] = token
        answer, _ = client.send("GET", "/audit", params=params)
        if answer.status_code != 200:
            return f"GET /audit answered {answer.status_code}", False
        body = answer.json()
        for event in body["events"]:
            key = (event["action"], event.get("target") or "")
            if key in ledger.changes:
                seen[key] += 1
        token = body.get("next_token")
        if not token:
            break
    missing = [k for k in ledger.changes if seen[k] == 0]
    doubled = [k for k, n in seen.items() if n > ledger.changes[k]]
    verify, took = client.send("GET", "/audit/verify")
    verdict = verify.json() if verify.status_code == 200 else {"status": verify.status_code}
    ok = not missing and not doubled and verdict.get("ok") is True
    text = (f"{sum(ledger.changes.values())} changes: {len(missing)} without their audit "
            f"event, {len(doubled)} with more than one; GET /audit/verify -> "
            f"ok={verdict.get('ok')} checked={verdict.get('checked')} "
            f"({took / 1000:.1f} s)"
            + (f"; missing e.g. {missing[:3]}" if missing else ""))
    return text, ok


def bulk(client: Client, count: int) -> float:
    hosts = [host_body(f"imp-{uuid.uuid4().hex[:12]}") for _ in range(count)]
    began = time.monotonic()
    answer, _ = client.send("POST", "/inventory/import", json={"hosts": hosts})
    took = time.monotonic() - began
    if answer.status_code != 200:
        say(f"  POST /inventory/import answered {answer.status_code} after {took:.1f} s: "
            f"{answer.text[:200]}")
        return float("nan")
    created = len(answer.json().get("created", []))
    if created != count:
        say(f"  only {created} of {count} created: {answer.json().get('failed', [])[:3]}")
    return took


def singles(url: str, token: str, count: int, clients: int) -> tuple[float, int]:
    """`count` hosts through POST /hosts from `clients` clients; (seconds, 5xx count)."""
    ids = [f"one-{uuid.uuid4().hex[:12]}" for _ in range(count)]
    chunks = [ids[i::clients] for i in range(clients)]
    errors = Counter[int]()

    def work(mine: list[str]) -> None:
        client = Client(url, token)
        for host_id in mine:
            answer, _ = client.send("POST", "/hosts", json=host_body(host_id))
            if answer.status_code != 201:
                errors[answer.status_code] += 1
        client.session.close()

    began = time.monotonic()
    with ThreadPoolExecutor(clients) as pool:
        list(pool.map(work, chunks))
    return time.monotonic() - began, sum(n for s, n in errors.items() if s >= 500 or s == 0)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--levels", default=",".join(map(str, LEVELS)))
    parser.add_argument("--seconds", type=float, default=10.0, help="per level")
    parser.add_argument("--max-ops", type=int, default=2000, help="per client and level")
    parser.add_argument("--import-hosts", type=int, default=1000)
    parser.add_argument("--single-hosts", type=int, default=300,
                        help="hosts through single POST /hosts, at 1 and at 16 clients")
    parser.add_argument("--repo", type=Path, default=None,
                        help="run another checkout's stack (e.g. main's, for 'before')")
    parser.add_argument("--url", default=None,
                        help="a running stack (make run) instead of starting one")
    parser.add_argument("--token", default=None, help="its admin token (with --url)")
    args = parser.parse_args(argv)
    levels = [int(n) for n in args.levels.split(",") if n]

    stack = None
    if args.url:
        url, token = args.url.rstrip("/"), args.token or ""
    else:
        stack = StackProcess(repo=args.repo).start()
        url, token = stack.url, stack.admin_token
    try:
        admin = Client(url, token)
        for host_id in JOB_HOSTS:
            admin.send("POST", "/hosts", json=host_body(host_id))
        code = f"the code of {args.repo}" if args.repo else "this tree's code"
        say(f"== Load: mixed clients against {url} ({code})")
        say("   mix: " + ", ".join(f"{k} {w}%" for k, w in MIX) + "; token = mint + revoke; "
            "job = `who` on 2 unreachable hosts")
        say(f"{'clients':>7}{'all ops':>11}{'p50':>10}{'p99':>10}{'writes':>12}{'p50':>10}"
            f"{'p99':>10}{'max':>10}{'5xx':>6}{'4xx':>6}{'reset':>7}{'calls':>7}")
        ledger = Ledger()
        results = []
        for n in levels:
            level = run_level(url, token, n, args.seconds, args.max_ops, ledger)
            results.append(level)
            say(describe(level))
        say("   writes = calls that change something and leave one audit event "
            "(host registration, token mint, token revoke, job start)")
        text, ok = check_audit(admin, ledger)
        say(f"   audit: {text} -> {'OK' if ok else 'NOT OK'}")
        by_clients = {r.clients: r for r in results}
        if 1 in by_clients and 16 in by_clients:
            one = len(by_clients[1].pick(lambda k: k in WRITES)) / by_clients[1].seconds
            sixteen_calls = by_clients[16].pick(lambda k: k in WRITES)
            sixteen = len(sixteen_calls) / by_clients[16].seconds
            p99 = pct([c.ms for c in sixteen_calls], 99)
            say(f"   target, writes at 16 clients >= 80% of 1 client and p99 < 500 ms: "
                f"{sixteen:.1f}/s vs {one:.1f}/s ({sixteen / one * 100:.0f}%), p99 {p99:.0f} ms"
                f" -> {'met' if sixteen >= 0.8 * one and p99 < 500 else 'MISSED'}")
        say()
        say("== Registering hosts")
        if args.import_hosts:
            took = bulk(admin, args.import_hosts)
            verdict = ""
            if args.import_hosts == 1000:
                verdict = f" -> target < 10 s {'met' if took < 10 else 'MISSED'}"
            say(f"{args.import_hosts} hosts via POST /inventory/import: {took:.1f} s "
                f"({args.import_hosts / took:.0f} hosts/s){verdict}")
        rates = {}
        for clients in (1, 16):
            took, errors = singles(url, token, args.single_hosts, clients)
            rates[clients] = args.single_hosts / took
            say(f"{args.single_hosts} hosts via single POST /hosts, {clients:>2} client(s): "
                f"{took:.1f} s ({rates[clients]:.1f} hosts/s, {errors} 5xx or reset; 1,000 at this "
                f"rate: {1000 / rates[clients]:.0f} s)")
        say(f"   target, 16 clients at least the 1-client rate: "
            f"{'met' if rates[16] >= rates[1] else 'MISSED'}")
        admin.session.close()
    finally:
        if stack is not None:
            stack.stop()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
