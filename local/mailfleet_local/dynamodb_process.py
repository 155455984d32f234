"""The embedded DynamoDB in a process of its own (moto, on 127.0.0.1), beside the LocalAws
that serves every other service in the caller's process.

Why: in `make run` the API, the fan-out worker and moto share one process, so moto's
DynamoDB work (a job of 1,000 hosts is ~100 requests carrying ~3,000 items) holds the
GIL the worker's event loop needs between two socket calls; profiled, the fan-out that
takes 0.5 s alone took 2-4 s beside it. Nothing else in the local stack reaches into
DynamoDB in-process (the state machines call no DynamoDB integration), so it can live
elsewhere: the functions find it through `AWS_ENDPOINT_URL_DYNAMODB`, as on any SDK.

`make run` and the benchmarks serve DynamoDB apart unless `MAILFLEET_LOCAL_DYNAMODB=thread`
(`for_a_run`); a LocalAws made without saying (the tests) keeps it in its own process
unless `MAILFLEET_LOCAL_DYNAMODB=process`. Measured on this 2-core VM at load ~1-2, 1,000
hosts through the API (`python -m bench api`), with moto's DynamoDB patched
(moto_speed) and its collector tuned: 1.6-1.8 s apart against 2.2-2.5 s in the same
process, the stack process's CPU per job 1.0-1.2 s against 1.9-2.3 s. (At load 12-13
from other sessions, before those patches, it made no difference: the second core was
not free.)

`python -m mailfleet_local.dynamodb_process` prints `{"port": P}` when it serves and stops
when its stdin closes (so it never outlives its parent) or on SIGTERM.
"""

from __future__ import annotations

import json
import logging
import os
import signal
import subprocess
import sys
import threading
from typing import Any

READY_TIMEOUT_SECONDS = 60.0


def main() -> None:
    from moto.server import ThreadedMotoServer

    from mailfleet_local import moto_speed, moto_transactions

    logging.getLogger("werkzeug").setLevel(logging.WARNING)
    moto_transactions.install()
    moto_speed.install()
    server = ThreadedMotoServer(ip_address="127.0.0.1", port=0, verbose=False)
    server.start()
    moto_speed.collect_less()  # until this process ends
    stop = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: stop.set())
    # Ctrl-C in a terminal reaches the whole process group: the parent stops first (its
    # last invocations may still write) and then closes our stdin.
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    threading.Thread(target=lambda: (sys.stdin.read(), stop.set()), daemon=True).start()
    print(json.dumps({"port": int(server.get_host_and_port()[1])}), flush=True)
    stop.wait()
    server.stop()


def for_a_run() -> bool:
    """Whether `make run` and the benchmarks serve DynamoDB from a process of its own."""
    return os.environ.get("MAILFLEET_LOCAL_DYNAMODB", "process") != "thread"


class DynamoDBProcess:
    """Starts and stops `python -m mailfleet_local.dynamodb_process`."""

    def __init__(self) -> None:
        self._process: subprocess.Popen[str] | None = None
        self.url = ""

    def start(self) -> DynamoDBProcess:
        self._process = subprocess.Popen(
            [sys.executable, "-m", "mailfleet_local.dynamodb_process"],
            stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True,
        )
        assert self._process.stdout is not None
        ready: dict[str, Any] = {}
        reader = threading.Thread(
            target=lambda: ready.update(json.loads(self._process.stdout.readline() or "{}")),  # type: ignore[union-attr]
            daemon=True,
        )
        reader.start()
        reader.join(READY_TIMEOUT_SECONDS)
        if "port" not in ready:
            self.stop()
            raise RuntimeError("the embedded DynamoDB process did not start")
        self.url = f"http://127.0.0.1:{ready['port']}"
        return self

    def reset(self) -> None:
        import requests

        with requests.Session() as session:
            session.trust_env = False  # no proxy between us and 127.0.0.1
            session.post(f"{self.url}/moto-api/reset", timeout=10).raise_for_status()

    def cpu_seconds(self) -> float:
        """User + system CPU of the process so far (from /proc; 0 where there is none)."""
        import os

        if self._process is None:
            return 0.0
        try:
            with open(f"/proc/{self._process.pid}/stat") as stat:
                fields = stat.read().rsplit(")", 1)[1].split()
        except OSError:
            return 0.0
        return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")

    def stop(self, timeout: float = 10.0) -> None:
        process, self._process = self._process, None
        if process is None:
            return
        if process.stdin is not None:
            process.stdin.close()
        try:
            process.wait(timeout)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait(timeout)
        if process.stdout is not None:
            process.stdout.close()


if __name__ == "__main__":
    main()
