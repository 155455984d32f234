"""`make run`'s stack in a child process (embedded AWS, the template deployed, the API
front), for the fuzz test and the load benchmark: they drive it over HTTP only, and it
shares no state (moto's is per process) with anything else in the caller."""

from __future__ import annotations

import os
import secrets
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path
from typing import IO, Any

import requests

REPO = Path(__file__).resolve().parents[2]


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


class StackProcess:
    """`python -m mailfleet_local.run` with no demo fleet on a free loopback port."""

    def __init__(self, *, port: int | None = None, log: IO[Any] | None = None,
                 env: dict[str, str] | None = None, repo: Path | None = None) -> None:
        """`repo`: run another checkout's code (its local/ and layers/ go first on the
        path; e.g. main's, to measure before and after)."""
        self.repo = repo or REPO
        self.port = port or free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.admin_token = secrets.token_urlsafe(32)
        self._log = log
        self._env = env or {}
        self._process: subprocess.Popen[bytes] | None = None

    def start(self, timeout: float = 120) -> StackProcess:
        env = dict(os.environ, MAILFLEET_PORT=str(self.port), MAILFLEET_DEMO="0",
                   MAILFLEET_ADMIN_TOKEN=self.admin_token, **self._env)
        if self.repo != REPO:
            paths = [str(self.repo / "local"), str(self.repo / "layers" / "mailfleet")]
            env["PYTHONPATH"] = os.pathsep.join([*paths, env.get("PYTHONPATH", "")]).rstrip(
                os.pathsep)
        self._process = subprocess.Popen(
            [sys.executable, "-m", "mailfleet_local.run"], cwd=self.repo, env=env,
            stdin=subprocess.DEVNULL, stdout=self._log or subprocess.DEVNULL,
            stderr=self._log or subprocess.DEVNULL)
        deadline = time.monotonic() + timeout
        with requests.Session() as session:
            session.trust_env = False
            while time.monotonic() < deadline:
                if self._process.poll() is not None:
                    raise RuntimeError(f"the stack exited with {self._process.returncode}")
                try:
                    if session.get(self.url + "/health", timeout=2).status_code == 200:
                        return self
                except requests.RequestException:
                    pass
                time.sleep(0.2)
        self.stop()
        raise RuntimeError(f"the stack did not answer /health within {timeout:.0f} s")

    def stop(self) -> None:
        if self._process is None:
            return
        if self._process.poll() is None:
            self._process.send_signal(signal.SIGTERM)
            try:
                self._process.wait(20)
            except subprocess.TimeoutExpired:
                self._process.kill()
                self._process.wait(5)
        self._process = None

    def __enter__(self) -> StackProcess:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()
