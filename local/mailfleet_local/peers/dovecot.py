"""A real Dovecot 2.3 on loopback, one per folder, for the tests and the local demo fleet.

Follows /work/shared/contracts/doveadm.md, "Running one for tests": everything the
instance writes (config, sockets, state, logs, mail) lives in its own folder, it listens
on one loopback address only (127.0.0.1 unless told), on free ports, and it is stopped by
pid, never by name.

    with DovecotInstance(users={"alice": "alicepw"}) as dc:
        dc.endpoint            # http://127.0.0.1:PORT (the doveadm HTTP API)
        dc.imap_port           # plain IMAP on 127.0.0.1
        dc.call("who", {"separateConnections": True})

Two flavours: a mail backend (passwd-file users, quota, a stats metric, dicts) and a
director (`director=True`): a one-node director ring that proxies IMAP logins to
`director_backends` (IPs) on `director_backend_port`.

Backends behind a director, or copied between with dsync, each get their own address
(`address="127.0.0.2"`, ...: the director tells backends apart by IP, so they share one
IMAP port, `imap_port=`), a doveadm TCP listener for dsync (`dsync=True`, port
`dsync_port`) and one `doveadm_password` (the dsync client authenticates with its own):

    port = free_port_on("127.0.0.2", "127.0.0.3")
    a = DovecotInstance(address="127.0.0.2", imap_port=port, dsync=True, doveadm_password=pw)
"""

from __future__ import annotations

import atexit
import base64
import contextlib
import grp
import http.client
import imaplib
import json
import os
import pwd
import secrets
import shutil
import signal
import socket
import subprocess
import tempfile
import threading
import time
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path
from types import TracebackType
from typing import Any

DOVECOT_BIN = "dovecot"
MAIL_USER = "vmail"  # Dovecot refuses to run mail processes as root
INTERNAL_USER = "dovecot"  # runs the dict, stats and director services
PORT_IN_USE = 89  # the master's exit status when a listener cannot bind
DEFAULT_USERS: Mapping[str, str] = {"alice": "alicepw", "bob": "bobpw", "carol": "carolpw"}

# Ports handed out by this process and not yet released: parallel starts in one process
# never pick the same free port twice; other processes are caught by the exit-89 retry.
_reserved: set[int] = set()
_reserved_lock = threading.Lock()


# Instances still running when the interpreter exits are stopped then, so an aborted test
# run or demo leaves no masters behind.
_running: set[DovecotInstance] = set()


@atexit.register
def _stop_leftovers() -> None:
    leftovers = list(_running)
    for inst in leftovers:
        inst.terminate()
    for inst in leftovers:
        inst.wait(5.0)


class DovecotError(RuntimeError):
    """The instance could not be started or answered a helper call with a failure."""


def dovecot_available() -> str | None:
    """Why Dovecot instances cannot run here, or None when they can."""
    if shutil.which(DOVECOT_BIN) is None:
        return "the dovecot binary is not installed (make deps installs dovecot-core)"
    try:
        pwd.getpwnam(MAIL_USER)
    except KeyError:
        return f"system user {MAIL_USER!r} is missing (make deps creates it)"
    try:
        pwd.getpwnam(INTERNAL_USER)
    except KeyError:
        return f"system user {INTERNAL_USER!r} is missing (dovecot-core creates it)"
    if os.geteuid() != 0:
        return "Dovecot test instances need root (mail runs as vmail)"
    return None


def _free_ports(count: int, address: str = "127.0.0.1") -> list[int]:
    sockets: list[socket.socket] = []
    ports: list[int] = []
    try:
        while len(ports) < count:
            s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
            sockets.append(s)
            s.bind((address, 0))
            port = s.getsockname()[1]
            with _reserved_lock:
                if port in _reserved:
                    continue
                _reserved.add(port)
            ports.append(port)
    finally:
        for s in sockets:
            s.close()
    return ports


def free_port_on(*addresses: str, tries: int = 50) -> int:
    """A port free on every one of `addresses` (loopback), for instances that must share
    one: backends behind a director all take logins on the same IMAP port. Reserved in
    this process like the others; an instance started with it releases it when stopped."""
    for _ in range(tries):
        port = _free_ports(1, addresses[0])[0]
        free = True
        for address in addresses[1:]:
            with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
                try:
                    s.bind((address, port))
                except OSError:
                    free = False
                    break
        if free:
            return port
        _release_ports([port])
    raise DovecotError(f"no port free on all of {', '.join(addresses)}")


def _release_ports(ports: Iterable[int]) -> None:
    with _reserved_lock:
        _reserved.difference_update(ports)


def _open_up(path: Path) -> None:
    """a+x on the folder and every folder above it: the mail and dovecot users must be
    able to traverse to it, or IMAP logins fail with "Temporary authentication failure"."""
    for p in [path, *path.parents]:
        with contextlib.suppress(OSError):
            mode = p.stat().st_mode
            if mode & 0o111 != 0o111:
                p.chmod(mode | 0o111)


def _children_of(pid: int) -> list[int]:
    out: list[int] = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            stat = (entry / "stat").read_text()
        except OSError:
            continue
        # Field 4 (ppid) follows the parenthesised command name, which may hold spaces.
        fields = stat.rsplit(")", 1)[-1].split()
        if len(fields) > 1 and int(fields[1]) == pid:
            out.append(int(entry.name))
    return out


def _rss_kib(pid: int) -> int:
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    except OSError:
        pass
    return 0


def _alive(pid: int) -> bool:
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[-1].split()[0]
    except OSError:
        return False
    return state != "Z"


class DovecotInstance:
    """One Dovecot master with its own folder, ports and credentials.

    Options:
      users: name -> password (passwd-file); default alice, bob and carol.
      api_key, doveadm_password: the doveadm HTTP credentials (random when not given;
        pass "" to leave one unconfigured).
      quota: load the quota plugin (`count` backend) so quotaGet answers.
      quota_limit: the storage limit per user, e.g. "10M".
      allowed_commands: doveadm_allowed_commands (others answer `unAuthorized`).
      director: run as a director instead of a mail backend.
      director_backends: the backend IPs (director_mail_servers); they are only names to
        the director until a login is proxied to IP:director_backend_port.
      director_backend_port: the IMAP port of the backends logins are proxied to.
      folder: where to live; a fresh temp folder (removed on stop) when not given.
      address: the loopback address every listener binds (default 127.0.0.1).
      imap_port, dsync_port: fixed ports (free ones are picked when not given).
      dsync: also listen for the doveadm protocol (dsync's `tcp:<address>:<dsync_port>`).
    """

    def __init__(
        self,
        folder: str | Path | None = None,
        *,
        users: Mapping[str, str] | None = None,
        api_key: str | None = None,
        doveadm_password: str | None = None,
        quota: bool = True,
        quota_limit: str = "100M",
        allowed_commands: Sequence[str] | None = None,
        director: bool = False,
        director_backends: Sequence[str] = ("127.0.0.1",),
        director_backend_port: int = 143,
        name: str | None = None,
        address: str = "127.0.0.1",
        imap_port: int | None = None,
        dsync: bool = False,
        dsync_port: int | None = None,
    ) -> None:
        if not address.startswith("127."):
            raise ValueError("test instances listen on loopback addresses only (127.0.0.0/8)")
        self._own_folder = folder is None
        self.folder = Path(
            tempfile.mkdtemp(prefix="mailfleet-dovecot-") if folder is None else folder
        ).resolve()
        self.name = name or f"mf-{secrets.token_hex(4)}"
        self._users = dict(DEFAULT_USERS if users is None else users)
        self._api_key = secrets.token_urlsafe(18) if api_key is None else api_key
        self._password = secrets.token_urlsafe(18) if doveadm_password is None else doveadm_password
        self.quota = quota
        self.quota_limit = quota_limit
        self.allowed_commands = list(allowed_commands) if allowed_commands is not None else None
        self.director = director
        self.director_backends = list(director_backends)
        self.director_backend_port = director_backend_port
        self.address = address
        self._fixed_ports = {"imap": imap_port, "dsync": dsync_port if dsync else None}
        self.dsync = dsync or dsync_port is not None
        self._proc: subprocess.Popen[bytes] | None = None
        self._ports: dict[str, int] = {}
        self._pids_at_stop: list[int] = []
        self.start_seconds: float | None = None
        self.stop_seconds: float | None = None

    # -- what tests and drivers need -------------------------------------------------

    @property
    def endpoint(self) -> str:
        return f"http://{self.address}:{self._port('doveadm')}"

    @property
    def dsync_port(self) -> int:
        """The doveadm TCP listener (dsync=True only)."""
        return self._port("dsync")

    @property
    def dsync_endpoint(self) -> str:
        """Where another Dovecot's dsync reaches this one: `tcp:<address>:<port>`."""
        return f"tcp:{self.address}:{self.dsync_port}"

    @property
    def doveadm_port(self) -> int:
        return self._port("doveadm")

    @property
    def imap_port(self) -> int:
        return self._port("imap")

    @property
    def director_port(self) -> int:
        """The director ring listener (director mode only)."""
        return self._port("director")

    @property
    def api_key(self) -> str:
        return self._api_key

    @property
    def password(self) -> str:
        """doveadm_password: Basic auth as user `doveadm`."""
        return self._password

    @property
    def users(self) -> dict[str, str]:
        return dict(self._users)

    @property
    def pid(self) -> int | None:
        return self._proc.pid if self._proc is not None else None

    @property
    def running(self) -> bool:
        return self._proc is not None and self._proc.poll() is None

    @property
    def log_path(self) -> Path:
        return self.folder / "dovecot.log"

    @property
    def config_path(self) -> Path:
        return self.folder / "dovecot.conf"

    def _port(self, which: str) -> int:
        if which not in self._ports:
            raise DovecotError("the instance has not been started")
        return self._ports[which]

    def auth_header(self, mode: str = "api_key") -> str:
        """The Authorization value for `api_key` (X-Dovecot-API) or `password` (Basic)."""
        if mode == "api_key":
            return "X-Dovecot-API " + base64.b64encode(self._api_key.encode()).decode()
        token = base64.b64encode(f"doveadm:{self._password}".encode()).decode()
        return "Basic " + token

    def rss_bytes(self) -> int:
        """Resident memory of the master and all its children."""
        if not self.running or self.pid is None:
            return 0
        return 1024 * sum(_rss_kib(p) for p in [self.pid, *_children_of(self.pid)])

    def child_pids(self) -> list[int]:
        return _children_of(self.pid) if self.running and self.pid is not None else []

    # -- lifecycle ---------------------------------------------------------------------

    def start(self, timeout: float = 15.0) -> DovecotInstance:
        reason = dovecot_available()
        if reason:
            raise DovecotError(reason)
        if self.running:
            return self
        began = time.monotonic()
        self._prepare_folder()
        for _ in range(8):
            names = ["imap", "doveadm"] + (["director"] if self.director else [])
            names += ["dsync"] if self.dsync else []
            picked = iter(_free_ports(len(names), self.address))
            self._ports = {n: self._fixed_ports.get(n) or next(picked) for n in names}
            self.config_path.write_text(self._config())
            # A fresh base_dir each try: a reused one also exits with 89.
            run = self.folder / "run"
            shutil.rmtree(run, ignore_errors=True)
            run.mkdir()
            out = (self.folder / "stdout.log").open("ab")
            try:
                # -F: we stay the parent, so the exit status tells a port clash (89) apart,
                # and no stray daemon survives an unreaped fork. The master keeps stdout
                # and stderr open, hence a file, never a pipe.
                self._proc = subprocess.Popen(
                    [DOVECOT_BIN, "-F", "-c", str(self.config_path)],
                    stdin=subprocess.DEVNULL, stdout=out, stderr=out,
                    start_new_session=True, close_fds=True,
                )
            finally:
                out.close()
            status = self._wait_ready(began + timeout)
            if status is None:
                self.start_seconds = time.monotonic() - began
                _running.add(self)
                return self
            _release_ports(self._ports.values())
            if status != PORT_IN_USE:
                raise DovecotError(f"dovecot exited with status {status}: {self._tail()}")
        raise DovecotError("no free ports after several tries")

    def _wait_ready(self, until: float) -> int | None:
        """None once the doveadm API answers 200; the exit status if the master died."""
        assert self._proc is not None
        while True:
            status = self._proc.poll()
            if status is not None:
                return status
            if self._doveadm_ready():
                return None
            if time.monotonic() > until:
                tail = self._tail()
                self.stop()
                raise DovecotError(f"dovecot did not become ready: {tail}")
            time.sleep(0.01)

    def _doveadm_ready(self) -> bool:
        try:
            status, _ = self._request("GET", None, timeout=1.0)
        except (OSError, http.client.HTTPException):
            return False
        if not (self._api_key or self._password):
            return True  # nothing configured: every request is a 500, but it answers
        if status != 200:
            return False
        if self.director:
            # The director answers only once its ring is up; asking earlier crashes the
            # doveadm worker (contract: directorStatus with no director running).
            try:
                return self.call("directorRingStatus") is not None
            except (OSError, http.client.HTTPException, DovecotError):
                return False
        return True

    def stop(self, timeout: float = 10.0) -> None:
        """SIGTERM to the master, then SIGKILL to whatever of its children (collected
        before stopping) outlived it: a worker stuck on a bad request can."""
        self.terminate()
        self.wait(timeout)

    def terminate(self) -> None:
        """Ask the master to stop without waiting (stop many instances in parallel)."""
        if self._proc is None or self._proc.poll() is not None:
            return
        self._stop_began = time.monotonic()
        self._pids_at_stop = _children_of(self._proc.pid)
        with contextlib.suppress(ProcessLookupError):
            self._proc.send_signal(signal.SIGTERM)

    def wait(self, timeout: float = 10.0) -> None:
        if self._proc is None:
            return
        try:
            self._proc.wait(timeout)
        except subprocess.TimeoutExpired:
            self._proc.kill()
            self._proc.wait()
        for pid in self._pids_at_stop:
            if _alive(pid) and self._is_ours(pid):
                with contextlib.suppress(ProcessLookupError):
                    os.kill(pid, signal.SIGKILL)
        if hasattr(self, "_stop_began"):
            self.stop_seconds = time.monotonic() - self._stop_began
            del self._stop_began
        self._pids_at_stop = []
        self._proc = None
        _running.discard(self)
        _release_ports(self._ports.values())
        if self._own_folder:
            shutil.rmtree(self.folder, ignore_errors=True)

    def _is_ours(self, pid: int) -> bool:
        """Still one of this instance's processes (titled dovecot-<name>/<service>), not
        an unrelated process that reused the pid."""
        try:
            title = Path(f"/proc/{pid}/cmdline").read_bytes()
        except OSError:
            return False
        return f"dovecot-{self.name}/".encode() in title

    def __enter__(self) -> DovecotInstance:
        return self.start()

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()

    # -- helpers for tests -------------------------------------------------------------

    def call(self, command: str, params: Mapping[str, Any] | None = None,
             timeout: float = 10.0) -> Any:
        """Run one doveadm command over HTTP; the `doveadmResponse` payload, or
        DovecotError with the error object."""
        body = json.dumps([[command, dict(params or {}), "t"]]).encode()
        status, data = self._request("POST", body, timeout=timeout)
        if status != 200:
            raise DovecotError(f"{command}: HTTP {status}: {data[:200]!r}")
        reply = json.loads(data)
        kind, payload = reply[0][0], reply[0][1]
        if kind != "doveadmResponse":
            raise DovecotError(f"{command}: {json.dumps(payload)}")
        return payload

    def imap(self, user: str, password: str | None = None) -> imaplib.IMAP4:
        """A logged-in IMAP connection for `user` (the caller logs out or closes it)."""
        conn = imaplib.IMAP4(self.address, self.imap_port, timeout=10)
        conn.login(user, self._users[user] if password is None else password)
        return conn

    def set_user(self, user: str, password: str) -> None:
        """Add a user or change a password; passwd-file is re-read on change."""
        self._users[user] = password
        self._write_users()

    def log_text(self) -> str:
        try:
            return self.log_path.read_text(errors="replace")
        except OSError:
            return ""

    def _request(self, method: str, body: bytes | None, timeout: float) -> tuple[int, bytes]:
        conn = http.client.HTTPConnection(self.address, self._port("doveadm"), timeout=timeout)
        try:
            # No "Connection: close" header: http.client only adds it when asked.
            headers = {"Authorization": self.auth_header("api_key" if self._api_key
                                                         else "password")}
            if body is not None:
                headers["Content-Type"] = "application/json"
            conn.request(method, "/doveadm/v1", body=body, headers=headers)
            resp = conn.getresponse()
            return resp.status, resp.read()
        finally:
            conn.close()

    def _tail(self, lines: int = 8) -> str:
        text = self.log_text() or ""
        with contextlib.suppress(OSError):
            text += (self.folder / "stdout.log").read_text(errors="replace")
        return " | ".join(text.strip().splitlines()[-lines:])

    # -- configuration -----------------------------------------------------------------

    def _prepare_folder(self) -> None:
        self.folder.mkdir(parents=True, exist_ok=True)
        _open_up(self.folder)
        for sub in ("state", "mail", "dict", "dict-locked"):
            (self.folder / sub).mkdir(exist_ok=True)
        vmail = pwd.getpwnam(MAIL_USER)
        internal = pwd.getpwnam(INTERNAL_USER)
        os.chown(self.folder / "mail", vmail.pw_uid, vmail.pw_gid)
        os.chown(self.folder / "dict", internal.pw_uid, internal.pw_gid)
        # Deliberately not writable by `dovecot`: writes to the `locked` dict fail with
        # exitCode 75 (temporary failure), which tests use to see retries.
        (self.folder / "dict-locked").chmod(0o755)
        self._write_users()

    def _write_users(self) -> None:
        path = self.folder / "users"
        tmp = path.with_suffix(".tmp")
        tmp.write_text("".join(f"{u}:{{PLAIN}}{p}::::::\n" for u, p in self._users.items()))
        # Readable by root (auth) and the dovecot group only: it holds test passwords.
        os.chown(tmp, 0, grp.getgrnam(INTERNAL_USER).gr_gid)
        tmp.chmod(0o640)
        tmp.replace(path)

    def _config(self) -> str:
        f = self.folder
        lines = [
            f"instance_name = {self.name}",
            f"base_dir = {f}/run",
            f"state_dir = {f}/state",
            f"log_path = {f}/dovecot.log",
            "protocols = imap",
            f"listen = {self.address}",
            "ssl = no",
            "disable_plaintext_auth = no",
            "auth_mechanisms = plain login",
            f"mail_uid = {MAIL_USER}",
            f"mail_gid = {MAIL_USER}",
            "first_valid_uid = 100",
            "mail_location = maildir:~/Maildir",
            # Tests log in as the same user from one IP many times in a row.
            "mail_max_userip_connections = 100",
            "auth_failure_delay = 0",
            "",
            "service imap-login {",
            "  inet_listener imap {",
            f"    address = {self.address}",
            f"    port = {self._ports['imap']}",
            "  }",
            "  inet_listener imaps {",
            "    port = 0",
            "  }",
            "}",
            "service doveadm {",
            "  inet_listener http {",
            f"    address = {self.address}",
            f"    port = {self._ports['doveadm']}",
            "  }",
            *([
                # The doveadm protocol itself: what another Dovecot's dsync connects to.
                "  inet_listener {",
                f"    address = {self.address}",
                f"    port = {self._ports['dsync']}",
                "  }",
            ] if self.dsync else []),
            "}",
        ]
        if self._password:
            lines.append(f"doveadm_password = {self._password}")
        if self._api_key:
            lines.append(f"doveadm_api_key = {self._api_key}")
        if self.allowed_commands is not None:
            lines.append(f"doveadm_allowed_commands = {','.join(self.allowed_commands)}")
        lines += self._director_config() if self.director else self._backend_config()
        return "\n".join(lines) + "\n"

    def _backend_config(self) -> list[str]:
        f = self.folder
        lines = [
            "passdb {",
            "  driver = passwd-file",
            f"  args = {f}/users",
            "}",
            "userdb {",
            "  driver = passwd-file",
            f"  args = {f}/users",
            f"  default_fields = home={f}/mail/%u",
            "}",
            # Something for statsDump to show once a client ran IMAP commands.
            "metric imap_command {",
            "  filter = event=imap_command_finished",
            "  group_by = cmd_name",
            "}",
            # dict* commands: `kv` works; `locked` cannot write (exitCode 75).
            "dict {",
            f"  kv = file:{f}/dict/kv.db",
            f"  locked = file:{f}/dict-locked/locked.db",
            "}",
        ]
        if self.quota:
            lines += [
                "mail_plugins = $mail_plugins quota",
                "plugin {",
                "  quota = count:User quota",
                f"  quota_rule = *:storage={self.quota_limit}",
                "  quota_vsizes = yes",
                "}",
            ]
        return lines

    def _director_config(self) -> list[str]:
        f = self.folder
        return [
            f"director_servers = {self.address}:{self._ports['director']}",
            f"director_mail_servers = {' '.join(self.director_backends)}",
            "service director {",
            "  unix_listener login/director {",
            "    mode = 0666",
            "  }",
            "  fifo_listener login/proxy-notify {",
            "    mode = 0666",
            "  }",
            "  unix_listener director-userdb {",
            "    mode = 0600",
            "  }",
            "  inet_listener {",
            f"    address = {self.address}",
            f"    port = {self._ports['director']}",
            "  }",
            "}",
            "service imap-login {",
            "  executable = imap-login director",
            "}",
            # The director only routes: any password is passed on for the backend to check.
            "passdb {",
            "  driver = static",
            f"  args = proxy=y nopassword=y port={self.director_backend_port}",
            "}",
            # An iterable userdb, so directorMap can list users.
            "userdb {",
            "  driver = passwd-file",
            f"  args = {f}/users",
            f"  default_fields = home={f}/mail/%u",
            "}",
        ]
