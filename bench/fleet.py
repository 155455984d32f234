"""A simulated fleet of doveadm-speaking hosts: one process, one asyncio loop, one
listening port per host on 127.0.0.1.

Each host answers `GET /doveadm/v1` (the command list of a real 2.3.19) and
`POST /doveadm/v1` (one command per request) as Dovecot does: X-Dovecot-API or Basic
auth, 401 with an empty body for a wrong key, a command failure as HTTP 200 with
`["error", {"type": "exitCode", ...}, tag]`, and `Connection: close` on every response
(what 2.3.19 sends; `--keep-alive` keeps connections open instead). Every request waits
`latency` seconds before it is answered; a `failure_rate` share of hosts (chosen by a
seeded draw, so a run is repeatable) fails every command with `fail_code`.

A control port answers `GET /stats` (requests, peak concurrency per host) and
`POST /config` / `POST /reset`. Run as `python -m bench.fleet --hosts N`: it prints one
JSON line `{"ports": [...], "control": P}` when ready, and stops when its stdin closes,
on SIGTERM, or after `--max-seconds`. `FleetProcess` does all of that from Python.
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import json
import os
import random
import resource
import signal
import subprocess
import sys
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import requests

COMMANDS_FILE = (
    Path(__file__).resolve().parents[1] / "tests" / "data" / "doveadm-2.3.19-commands.json"
)
DEFAULT_API_KEY = "bench-doveadm-key"
# Keep-alive connections idle this long are closed, so 10,000 hosts never hold 10,000
# sockets each side at once.
IDLE_CLOSE_SECONDS = 2.0
MAX_HEADER_BYTES = 64 * 1024

# What a few commands answer; any other command answers [].
CANNED: dict[str, Any] = {
    "who": [],
    "reload": [],
    "penalty": [],
    "statsDump": [
        {"metric_name": "imap_command", "field": "duration", "count": "0", "sum": "0",
         "min": "0", "max": "0", "avg": "0.00", "median": "0", "stddev": "0.00", "%95": "0"}
    ],
    "kick": [],
}


@dataclass
class FleetConfig:
    latency: float = 0.05
    failure_rate: float = 0.0
    fail_code: int = 68
    seed: int = 7
    keep_alive: bool = False
    api_key: str = DEFAULT_API_KEY


@dataclass
class HostState:
    index: int
    failing: bool = False
    inflight: int = 0
    peak: int = 0
    requests: int = 0
    posts: int = 0


@dataclass
class Fleet:
    """The hosts of one process; `serve()` runs them on the current asyncio loop."""

    count: int
    config: FleetConfig = field(default_factory=FleetConfig)
    hosts: list[HostState] = field(default_factory=list)
    ports: list[int] = field(default_factory=list)
    commands_body: bytes = b""
    inflight: int = 0  # requests being answered across the fleet, and the most at once
    peak_inflight: int = 0

    def __post_init__(self) -> None:
        self.commands_body = json.dumps(json.loads(COMMANDS_FILE.read_text())).encode()
        self.hosts = [HostState(i) for i in range(self.count)]
        self.reseed()

    def reseed(self) -> None:
        draw = random.Random(self.config.seed)
        for host in self.hosts:
            host.failing = draw.random() < self.config.failure_rate

    def stats(self) -> dict[str, Any]:
        return {
            "hosts": self.count,
            "requests": sum(h.requests for h in self.hosts),
            "posts": sum(h.posts for h in self.hosts),
            "peak_per_host": max((h.peak for h in self.hosts), default=0),
            "peak_inflight": self.peak_inflight,
            "hosts_contacted": sum(1 for h in self.hosts if h.posts),
            "posts_per_host_max": max((h.posts for h in self.hosts), default=0),
            "failing": [h.index for h in self.hosts if h.failing],
            "config": self.config.__dict__,
        }

    def reset(self) -> None:
        for host in self.hosts:
            host.inflight = host.peak = host.requests = host.posts = 0
        self.inflight = self.peak_inflight = 0

    async def serve(self) -> int:
        """Open every host's port (and the control port); returns the control port."""
        loop = asyncio.get_running_loop()
        for host in self.hosts:
            server = await loop.create_server(
                lambda h=host: _HostProtocol(self, h), "127.0.0.1", 0, backlog=128
            )
            self.ports.append(server.sockets[0].getsockname()[1])
        control = await loop.create_server(
            lambda: _ControlProtocol(self), "127.0.0.1", 0, backlog=16
        )
        return control.sockets[0].getsockname()[1]

    # ---------------------------------------------------------------- answers
    def authorized(self, header: str) -> bool:
        key = self.config.api_key
        return header in (
            "X-Dovecot-API " + base64.b64encode(key.encode()).decode(),
            "Basic " + base64.b64encode(f"doveadm:{key}".encode()).decode(),
        )

    def answer_post(self, host: HostState, body: bytes) -> tuple[int, bytes]:
        try:
            request = json.loads(body)
            command, _params, tag = request[0]
        except (ValueError, TypeError, IndexError, KeyError):
            return 400, b"Request must be a JSON array"
        if host.failing:
            error = {"type": "exitCode", "exitCode": self.config.fail_code}
            return 200, json.dumps([["error", error, tag]]).encode()
        payload = CANNED.get(command, [])
        return 200, json.dumps([["doveadmResponse", payload, tag]]).encode()


class _HttpProtocol(asyncio.Protocol):
    """Just enough HTTP/1.1: one request at a time per connection, Content-Length bodies.
    Callbacks, not tasks: the simulator must stay cheap next to the client it measures."""

    keep_alive = False

    def __init__(self) -> None:
        self.transport: asyncio.Transport | None = None
        self.buffer = b""
        self.busy = False
        self.idle: asyncio.TimerHandle | None = None
        self.loop = asyncio.get_running_loop()

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]
        if self.keep_alive:
            self.idle = self.loop.call_later(IDLE_CLOSE_SECONDS, self._close)

    def connection_lost(self, exc: Exception | None) -> None:
        if self.idle is not None:
            self.idle.cancel()
        self.transport = None

    def _close(self) -> None:
        if self.transport is not None:
            self.transport.close()

    def data_received(self, data: bytes) -> None:
        self.buffer += data
        if len(self.buffer) > MAX_HEADER_BYTES and b"\r\n\r\n" not in self.buffer:
            self._close()
            return
        self._next()

    def _next(self) -> None:
        if self.busy:
            return
        head, sep, rest = self.buffer.partition(b"\r\n\r\n")
        if not sep:
            return
        lines = head.decode("latin-1").split("\r\n")
        try:
            method, path, _version = lines[0].split(" ", 2)
        except ValueError:
            self._close()
            return
        headers = {}
        for line in lines[1:]:
            name, _, value = line.partition(":")
            headers[name.strip().lower()] = value.strip()
        length = int(headers.get("content-length") or 0)
        if len(rest) < length:
            return
        body, self.buffer = rest[:length], rest[length:]
        self.busy = True
        if self.idle is not None:
            self.idle.cancel()
        self.handle(method, path, headers, body)

    def respond(self, status: int, ctype: str, data: bytes, extra: tuple[str, ...] = ()) -> None:
        if self.transport is None:
            return
        reason = {200: "OK", 400: "Bad Request", 401: "Unauthorized", 404: "Not Found"}
        head = [f"HTTP/1.1 {status} {reason.get(status, 'OK')}", f"Content-Length: {len(data)}"]
        if data:
            head.append(f"Content-Type: {ctype}")
        head += extra
        head.append("Connection: keep-alive" if self.keep_alive else "Connection: close")
        self.transport.write(("\r\n".join(head) + "\r\n\r\n").encode() + data)
        if not self.keep_alive:
            self.transport.close()
            return
        self.busy = False
        self.idle = self.loop.call_later(IDLE_CLOSE_SECONDS, self._close)
        self._next()

    def handle(self, method: str, path: str, headers: dict[str, str], body: bytes) -> None:
        raise NotImplementedError


_UNAUTHORIZED = ("WWW-Authenticate: X-Dovecot-API", 'WWW-Authenticate: Basic Realm="doveadm"')


class _HostProtocol(_HttpProtocol):
    def __init__(self, fleet: Fleet, host: HostState) -> None:
        super().__init__()
        self.fleet = fleet
        self.host = host
        self.keep_alive = fleet.config.keep_alive

    def handle(self, method: str, path: str, headers: dict[str, str], body: bytes) -> None:
        host = self.host
        host.requests += 1
        host.inflight += 1
        host.peak = max(host.peak, host.inflight)
        self.fleet.inflight += 1
        self.fleet.peak_inflight = max(self.fleet.peak_inflight, self.fleet.inflight)
        self.loop.call_later(self.fleet.config.latency, self._answer, method, path, headers, body)

    def _answer(self, method: str, path: str, headers: dict[str, str], body: bytes) -> None:
        host, fleet = self.host, self.fleet
        host.inflight -= 1
        fleet.inflight -= 1
        if path.split("?")[0] != "/doveadm/v1" or method not in ("GET", "POST"):
            self.respond(404, "text/plain", b"Path Not Found")
        elif not fleet.authorized(headers.get("authorization", "")):
            self.respond(401, "text/plain", b"", _UNAUTHORIZED)
        elif method == "GET":
            self.respond(200, "application/json", fleet.commands_body)
        else:
            host.posts += 1
            status, data = fleet.answer_post(host, body)
            self.respond(status, "application/json" if status == 200 else "text/plain", data)


class _ControlProtocol(_HttpProtocol):
    def __init__(self, fleet: Fleet) -> None:
        super().__init__()
        self.fleet = fleet

    def handle(self, method: str, path: str, headers: dict[str, str], body: bytes) -> None:
        fleet = self.fleet
        if method == "GET" and path == "/stats":
            self.respond(200, "application/json", json.dumps(fleet.stats()).encode())
        elif method == "POST" and path == "/reset":
            fleet.reset()
            self.respond(200, "application/json", b"{}")
        elif method == "POST" and path == "/config":
            changes = json.loads(body or b"{}")
            for key, value in changes.items():
                if hasattr(fleet.config, key):
                    setattr(fleet.config, key, value)
            if {"failure_rate", "seed"} & set(changes):
                fleet.reseed()
            self.respond(200, "application/json", json.dumps(fleet.stats()).encode())
        else:
            self.respond(404, "text/plain", b"Path Not Found")


def raise_fd_limit(wanted: int) -> int:
    """Raise the soft open-files limit towards `wanted` (never past the hard limit)."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    target = wanted if hard == resource.RLIM_INFINITY else min(wanted, hard)
    if soft != resource.RLIM_INFINITY and soft < target:
        resource.setrlimit(resource.RLIMIT_NOFILE, (target, hard))
        soft = target
    return soft


async def _main(args: argparse.Namespace) -> None:
    config = FleetConfig(
        latency=args.latency,
        failure_rate=args.failure_rate,
        fail_code=args.fail_code,
        seed=args.seed,
        keep_alive=args.keep_alive,
        api_key=args.api_key,
    )
    # One listener per host plus the connections in flight, with room to spare.
    limit = raise_fd_limit(args.hosts * 2 + 1024)
    if limit < args.hosts + 256:
        raise SystemExit(f"open-files limit {limit} is too low for {args.hosts} hosts")
    fleet = Fleet(args.hosts, config)
    control = await fleet.serve()
    print(json.dumps({"ports": fleet.ports, "control": control, "pid": os.getpid()}), flush=True)
    loop = asyncio.get_running_loop()
    stop = asyncio.Event()
    loop.add_signal_handler(signal.SIGTERM, stop.set)
    loop.add_signal_handler(signal.SIGINT, stop.set)
    # Stop with the parent: its end of our stdin closes when it exits, however it exits.
    threading.Thread(target=lambda: (sys.stdin.read(), loop.call_soon_threadsafe(stop.set)),
                     daemon=True).start()
    try:
        await asyncio.wait_for(stop.wait(), timeout=args.max_seconds)
    except TimeoutError:
        pass


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--hosts", type=int, default=100)
    parser.add_argument("--latency", type=float, default=0.05, help="seconds per request")
    parser.add_argument("--failure-rate", type=float, default=0.0, help="share of hosts failing")
    parser.add_argument("--fail-code", type=int, default=68, help="doveadm exitCode of a failure")
    parser.add_argument("--seed", type=int, default=7)
    parser.add_argument("--keep-alive", action="store_true", help="keep connections open")
    parser.add_argument("--api-key", default=DEFAULT_API_KEY)
    parser.add_argument("--max-seconds", type=float, default=1800.0, help="stop after this long")
    asyncio.run(_main(parser.parse_args(argv)))


class FleetProcess:
    """`python -m bench.fleet` as a child process, stopped on exit (and with us)."""

    def __init__(self, hosts: int, *, max_seconds: float = 1800.0, **config: Any) -> None:
        self.count = hosts
        self.max_seconds = max_seconds
        self.config = FleetConfig(**config)
        self.ports: list[int] = []
        self.control: int | None = None
        self._proc: subprocess.Popen[str] | None = None
        self._http = requests.Session()
        self._http.trust_env = False  # nothing between us and 127.0.0.1

    def __enter__(self) -> FleetProcess:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def start(self, timeout: float = 120.0) -> FleetProcess:
        c = self.config
        argv = [
            sys.executable, "-m", "bench.fleet", "--hosts", str(self.count),
            "--latency", str(c.latency), "--failure-rate", str(c.failure_rate),
            "--fail-code", str(c.fail_code), "--seed", str(c.seed), "--api-key", c.api_key,
            "--max-seconds", str(self.max_seconds),
        ]
        if c.keep_alive:
            argv.append("--keep-alive")
        root = str(Path(__file__).resolve().parents[1])
        env = dict(os.environ, PYTHONPATH=os.pathsep.join([root, os.environ.get("PYTHONPATH", "")]))
        self._proc = subprocess.Popen(
            argv, stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True, env=env, cwd=root
        )
        assert self._proc.stdout is not None
        deadline = time.monotonic() + timeout
        line = ""
        while not line and time.monotonic() < deadline and self._proc.poll() is None:
            line = self._proc.stdout.readline()
        if not line:
            self.stop()
            raise RuntimeError("the simulated fleet did not start")
        ready = json.loads(line)
        self.ports, self.control = ready["ports"], ready["control"]
        return self

    @property
    def pid(self) -> int | None:
        return self._proc.pid if self._proc else None

    def endpoint(self, index: int) -> str:
        return f"http://127.0.0.1:{self.ports[index]}"

    def stats(self) -> dict[str, Any]:
        return self._http.get(f"http://127.0.0.1:{self.control}/stats", timeout=10).json()

    def reset(self) -> None:
        self._http.post(f"http://127.0.0.1:{self.control}/reset", timeout=10)

    def configure(self, **changes: Any) -> dict[str, Any]:
        answer = self._http.post(f"http://127.0.0.1:{self.control}/config", json=changes,
                                 timeout=10)
        return answer.json()

    def stop(self) -> None:
        self._http.close()
        proc, self._proc = self._proc, None
        if proc is None:
            return
        if proc.stdin is not None:
            proc.stdin.close()  # the fleet stops when its stdin closes
        try:
            proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            proc.terminate()
            proc.wait(timeout=10)
        if proc.stdout is not None:
            proc.stdout.close()


if __name__ == "__main__":
    main()
