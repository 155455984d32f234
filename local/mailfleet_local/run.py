"""`python -m mailfleet_local.run` (what `make run` calls): the whole controller locally.

Starts moto on 127.0.0.1, deploys template.yaml into it (the admin token is
MAILFLEET_ADMIN_TOKEN, or a fresh one), serves the API on
http://127.0.0.1:${MAILFLEET_PORT:-3000}, starts the demo fleet unless MAILFLEET_DEMO=0,
and prints the API URL and the admin token. Ctrl-C or SIGTERM stops everything it started.
"""

from __future__ import annotations

import logging
import os
import secrets
import shutil
import signal
import sys
import tempfile
import threading
import time
import traceback
from collections.abc import Callable
from pathlib import Path
from types import FrameType
from typing import Any

import requests

from mailfleet_local import dynamodb_process, lambda_bridge, sam_local
from mailfleet_local.front import ApiFront
from mailfleet_local.stack import LocalAws
from mailfleet_local.ticker import Fired, Ticker

REPO_ROOT = Path(__file__).resolve().parents[2]
ADMIN_SECRET_ID = "AdminTokenSecret"  # noqa: S105 - a logical id in the template, not a secret
READY_TIMEOUT_SECONDS = 30.0

# Not under `mailfleet`: Powertools' Logger(service=mailfleet) owns that one and would
# stamp these lines with whichever function's keys it holds.
log = logging.getLogger("mailfleet-local.run")


def say(message: str) -> None:
    print(message, flush=True)


def wait_until_healthy(url: str, timeout: float) -> int | None:
    """Poll GET /health; the last status seen (200 when ready), None if nothing answered."""
    deadline = time.monotonic() + timeout
    status = None
    session = requests.Session()
    session.trust_env = False  # no proxy between us and 127.0.0.1
    while time.monotonic() < deadline:
        try:
            status = session.get(f"{url}/health", timeout=5).status_code
        except requests.RequestException:
            status = None
        if status == 200:
            return status
        time.sleep(0.2)
    return status


def start_demo(api_url: str, admin_token: str, workdir: Path) -> Any:
    """The lead's demo fleet, if there is one; what was left out is said plainly."""
    try:
        from mailfleet_local import demo
    except ImportError as exc:
        say(f"Demo fleet left out: mailfleet_local.demo cannot be imported ({exc}).")
        return None
    try:
        return demo.start_demo(api_url, admin_token, workdir)
    except Exception as exc:
        traceback.print_exc(file=sys.stderr)
        say(f"Demo fleet left out: start_demo failed ({type(exc).__name__}: {exc}).")
        return None


def _said_fired(fired: Fired) -> None:
    timer = fired.timer
    say(f"Schedule fired: {timer.name} ({timer.expression}) -> {timer.target_arn.split(':')[-1]}")


def main() -> int:
    logging.basicConfig(
        level=os.environ.get("MAILFLEET_LOCAL_LOG_LEVEL", "WARNING"),
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
    )
    port = int(os.environ.get("MAILFLEET_PORT", "3000"))
    template = Path(os.environ.get("MAILFLEET_TEMPLATE") or REPO_ROOT / "template.yaml")
    admin_token = os.environ.get("MAILFLEET_ADMIN_TOKEN") or secrets.token_urlsafe(32)

    stopping = threading.Event()

    def on_signal(signum: int, _frame: FrameType | None) -> None:
        if stopping.is_set():
            say("Stopping right away.")
            os._exit(1)
        stopping.set()

    signal.signal(signal.SIGINT, on_signal)
    signal.signal(signal.SIGTERM, on_signal)

    workdir = Path(tempfile.mkdtemp(prefix="mailfleet-run-"))
    to_stop: list[tuple[str, Callable[[], Any]]] = []
    try:
        started = time.monotonic()
        aws = LocalAws(dynamodb_apart=dynamodb_process.for_a_run()).start()
        to_stop.append(("embedded AWS", aws.stop))
        # The functions log at WARNING here unless asked (MAILFLEET_LOG_LEVEL=INFO shows each call).
        level = os.environ.get("MAILFLEET_LOG_LEVEL", "WARNING").upper()
        deployment = aws.deploy(
            template,
            parameter_overrides={"LogLevel": level},
            secret_values={ADMIN_SECRET_ID: admin_token},
        )
        for skipped in deployment.skipped:
            say(f"Not run locally: {skipped.logical_id} ({skipped.type}): {skipped.reason}")
        if deployment.schedules:
            say(f"{len(deployment.schedules)} schedule(s) deployed; a local ticker fires them.")
        env_file = sam_local.write(deployment, aws.endpoint_url,
                                   REPO_ROOT / sam_local.ENV_VARS_FILE,
                                   dynamodb_url=aws.endpoint_for("dynamodb"))
        say(f"sam local invoke --env-vars {env_file} --docker-network host: every function "
            "pointed at this embedded AWS.")
        lambda_bridge.install()
        try:
            front = ApiFront(deployment, port=port).start()
        except OSError as exc:
            say(f"Cannot serve on 127.0.0.1:{port} ({exc}); set MAILFLEET_PORT to a free port.")
            return 1
        to_stop.append(("API front", front.stop))
        # moto never fires schedules: the ticker does (sweeps, scheduled jobs, backups).
        ticker = Ticker(aws, on_fire=_said_fired).start()
        to_stop.append(("schedule ticker", ticker.stop))
        if os.environ.get("MAILFLEET_DEMO", "1") != "0":
            demo = start_demo(front.url, admin_token, workdir)
            if demo is not None:
                to_stop.append(("demo fleet", demo.stop))
        say(f"mailfleet API: {front.url}")
        say(f"Admin token:   {admin_token}")
        status = wait_until_healthy(front.url, READY_TIMEOUT_SECONDS)
        if status == 200:
            say(f"Ready in {time.monotonic() - started:.1f} s (GET /health is 200). Ctrl-C stops.")
        else:
            say(f"Not ready: GET /health answered {status}; serving anyway. Ctrl-C stops.")
        while not stopping.wait(0.5):
            pass
        say("Stopping...")
        return 0
    finally:
        for what, stop in reversed(to_stop):
            try:
                stop()
            except Exception:
                log.exception("stopping the %s failed", what)
        shutil.rmtree(workdir, ignore_errors=True)


if __name__ == "__main__":
    sys.exit(main())
