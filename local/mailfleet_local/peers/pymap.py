"""A real pymap server on 127.0.0.1 for the tests and the local run.

Dict backend with the demo data (`demouser`/`demopass`), IMAP and the admin service on
free loopback ports, the admin service also on a UNIX socket, a self-signed certificate
(SAN IP:127.0.0.1) for the admin port's TLS and IMAP's STARTTLS. Everything the process
writes (socket, token, pid file, log) lives in its own folder: pymap puts files in
TMPDIR, so two servers sharing one would clash.
"""

from __future__ import annotations

import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from types import TracebackType

from mailfleet_local.certs import make_self_signed

DEMO_USER = "demouser"
DEMO_PASSWORD = "demopass"  # noqa: S105 - pymap's public demo default (`--demo-data`)
# Environment that would change what pymap does (its own token or socket, certs, systemd).
_DROP_ENV = ("CERT_FILE", "KEY_FILE", "NOTIFY_SOCKET")
_POLL = 0.02


class PymapUnavailable(RuntimeError):
    """pymap can't run here (not installed, or the process dies at start)."""


class PymapServer:
    """Start with `start()` or `with PymapServer() as server:`; stop with `stop()`.

    `directory` defaults to a private temp folder, removed at stop. The admin token is
    fresh at every start and only valid for this process.
    """

    def __init__(self, directory: Path | None = None, *, start_timeout: float = 20.0) -> None:
        self._own_directory = directory is None
        self.directory = Path(directory) if directory else None
        self.start_timeout = start_timeout
        self.imap_port = 0
        self.admin_port = 0
        self.token = ""
        self.cert_pem = ""
        self.fingerprint_sha256 = ""
        self.started_in: float | None = None  # seconds from spawn to answering a Ping
        self.stopped_in: float | None = None  # seconds from SIGTERM to exit
        self._process: subprocess.Popen[bytes] | None = None

    # -- what clients need

    @property
    def endpoint(self) -> str:
        return f"https://127.0.0.1:{self.admin_port}"

    @property
    def socket_path(self) -> Path:
        return self._dir / "admin.sock"

    @property
    def socket_endpoint(self) -> str:
        return f"unix://{self.socket_path}"

    @property
    def cert_path(self) -> Path:
        return self._dir / "pymap.crt"

    @property
    def pid(self) -> int | None:
        return self._process.pid if self._process else None

    @property
    def running(self) -> bool:
        return self._process is not None and self._process.poll() is None

    @property
    def log_path(self) -> Path:
        return self._dir / "pymap.log"

    @staticmethod
    def available() -> str | None:
        """None if pymap with its admin service and tokens is importable; else why not."""
        import importlib.util

        for module, extra in (("pymap", "pymap"), ("pymapadmin", "pymap[admin]"),
                              ("grpclib", "pymap[admin]"), ("pymacaroons", "pymap[macaroon]")):
            if importlib.util.find_spec(module) is None:
                return f"{extra} is not installed ({module} missing)"
        return None

    # -- life cycle

    def start(self) -> PymapServer:
        if self.running:
            return self
        reason = self.available()
        if reason:
            raise PymapUnavailable(reason)
        if self.directory is None:
            self.directory = Path(tempfile.mkdtemp(prefix="mailfleet-pymap-"))
        self._dir.mkdir(parents=True, exist_ok=True)
        self._dir.chmod(0o700)
        certs = make_self_signed(self._dir, "pymap")
        self.cert_pem, self.fingerprint_sha256 = certs.cert_pem, certs.fingerprint_sha256
        began = time.monotonic()
        try:
            # A port picked free may be taken before pymap binds it: retry with new ones.
            for attempt in range(3):
                self._spawn(certs.cert_path, certs.key_path)
                try:
                    self._wait_ready(began + self.start_timeout)
                    break
                except PymapUnavailable:
                    if "Address already in use" not in self._log_tail() or attempt == 2:
                        raise
                    self._terminate(2.0)
        except BaseException:
            self.stop(2.0)  # no process or folder left behind by a failed start
            raise
        self.started_in = time.monotonic() - began
        return self

    def stop(self, timeout: float = 5.0) -> None:
        """SIGTERM, then SIGKILL after `timeout`; removes the socket pymap leaves behind
        (and the folder, if this server made it)."""
        if self._process is not None:
            began = time.monotonic()
            self._terminate(timeout)
            self.stopped_in = time.monotonic() - began
        if self.directory is None:
            return
        self.socket_path.unlink(missing_ok=True)
        if self._own_directory:
            shutil.rmtree(self._dir, ignore_errors=True)

    def __enter__(self) -> PymapServer:
        return self.start()

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        self.stop()

    def rss_bytes(self) -> int | None:
        """The process's resident memory (Linux), for budgets."""
        try:
            status = Path(f"/proc/{self.pid}/status").read_text()
        except (OSError, TypeError):
            return None
        match = re.search(r"^VmRSS:\s+(\d+) kB", status, re.M)
        return int(match.group(1)) * 1024 if match else None

    # -- internals

    @property
    def _dir(self) -> Path:
        if self.directory is None:
            raise RuntimeError("the server was never started")
        return self.directory

    @property
    def _token_path(self) -> Path:
        return self._dir / "admin.token"

    def _spawn(self, cert: Path, key: Path) -> None:
        self.imap_port, self.admin_port = _free_ports(2)
        for leftover in (self._token_path, self.socket_path):
            leftover.unlink(missing_ok=True)
        env = {k: v for k, v in os.environ.items()
               if not k.startswith("PYMAP_") and k not in _DROP_ENV}
        # FQDN: pymap's greeting would otherwise ask DNS for our name on every connection.
        env.update(TMPDIR=str(self._dir), FQDN="localhost")
        command = [
            sys.executable, "-c", "import sys; from pymap.main import main; sys.exit(main())",
            "--host", "127.0.0.1", "--port", str(self.imap_port),
            "--admin-host", "127.0.0.1", "--admin-port", str(self.admin_port),
            "--admin-path", str(self.socket_path), "--admin-token-file", str(self._token_path),
            "--cert", str(cert), "--key", str(key),
            "dict", "--demo-data",
        ]
        # The log also holds the PYMAP_ADMIN_TOKEN line: it stays in the private folder.
        with open(self.log_path, "ab") as log:
            self._process = subprocess.Popen(
                command, stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT,
                env=env, cwd=self._dir, start_new_session=True)

    def _wait_ready(self, until: float) -> None:
        """Ready = the token is written (before the listeners start), IMAP accepts, and the
        admin port answers a Ping through the pymap driver over pinned TLS."""
        while not (self._token_path.exists() and self._token_path.stat().st_size):
            self._check_alive(until)
            time.sleep(_POLL)
        self.token = self._token_path.read_text().strip()
        while not _accepts(self.imap_port):
            self._check_alive(until)
            time.sleep(_POLL)
        self._ping_until(until)

    def _ping_until(self, until: float) -> None:
        from mailfleet.drivers.base import Deadline
        from mailfleet.drivers.pymap import PymapDriver
        from mailfleet.errors import ErrorType, HostError
        from mailfleet.models.hosts import Credentials, Host, TlsOptions

        host = Host(id="pymap-peer", kind="pymap", endpoint=self.endpoint,
                    tls=TlsOptions(pin_sha256=self.fingerprint_sha256))
        driver = PymapDriver(host, Credentials(token=self.token))
        try:
            while True:
                self._check_alive(until)
                try:
                    driver.perform("ping", {}, Deadline.after(max(0.1, until - time.monotonic())))
                    return
                except HostError as exc:
                    if exc.type is not ErrorType.CONNECTION:
                        raise
                time.sleep(_POLL)
        finally:
            driver.close()

    def _check_alive(self, until: float) -> None:
        assert self._process is not None
        if self._process.poll() is not None:
            raise PymapUnavailable(f"pymap exited with {self._process.returncode} at start: "
                                   f"{self._log_tail()}")
        if time.monotonic() > until:
            raise PymapUnavailable(f"pymap not ready within {self.start_timeout:g} s: "
                                   f"{self._log_tail()}")

    def _log_tail(self, lines: int = 5) -> str:
        try:
            text = self.log_path.read_text(errors="replace")
        except OSError:
            return "(no log)"
        text = re.sub(r"PYMAP_ADMIN_TOKEN=\S+", "PYMAP_ADMIN_TOKEN=<redacted>", text)
        return " | ".join(text.strip().splitlines()[-lines:]) or "(empty log)"

    def _terminate(self, timeout: float) -> None:
        process, self._process = self._process, None
        if process is None:
            return
        if process.poll() is None:
            process.send_signal(signal.SIGTERM)
            try:
                process.wait(timeout)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait(timeout)


def _free_ports(count: int) -> list[int]:
    """Ports the kernel just handed out on loopback (held together so they differ)."""
    sockets = []
    try:
        for _ in range(count):
            sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
            sock.bind(("127.0.0.1", 0))
            sockets.append(sock)
        return [s.getsockname()[1] for s in sockets]
    finally:
        for sock in sockets:
            sock.close()


def _accepts(port: int) -> bool:
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=0.5):
            return True
    except OSError:
        return False
