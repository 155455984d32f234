"""Driver for on-premises appliances: the admin API under `/api/v1/admin` (v1.24.0).

Every request authenticates with `?hash=`, the HMAC of the method and path keyed by the
token's SHA-256 hex, so the token itself never crosses the wire. Writes are multipart
forms carrying only the documented field names: the server drops the connection on any
other name. Asynchronous operations (update, backup, settings, certs, storage) answer 202
and are followed by polling their GET to the end, within the deadline.
"""

from __future__ import annotations

import base64
import binascii
import contextlib
import hashlib
import hmac
import http.client
import json
import re
import secrets
import ssl
import threading
import time
from collections.abc import Callable, Iterator, Mapping
from dataclasses import replace
from typing import Any, ClassVar, Literal

import requests
from pydantic import ConfigDict, Field, SecretStr, field_validator, model_validator

from mailfleet.drivers.base import (
    ActionSpec,
    Deadline,
    Driver,
    DriverContext,
    NoParams,
    validate_params,
)
from mailfleet.drivers.http import CONNECT_TIMEOUT, session_for, transport_error
from mailfleet.drivers.policy import Rule, change, destructive, read
from mailfleet.errors import ErrorType, HostError, Unsupported
from mailfleet.models.common import Model
from mailfleet.models.hosts import Credentials, Host
from mailfleet.redact import REDACTED, redact

PREFIX = "/api/v1/admin"
OPTIONAL_ENDPOINTS = frozenset({"settings", "certs", "license", "storage", "backup"})
TOKEN_ALPHABET = "".join(chr(c) for c in range(33, 127))  # printable ASCII, 33-126

UPDATE_ERRORS = {
    "E1000": "scripting error in the update script",
    "E1001": "version error in the update package",
    "E1002": "error during the update process",
    "E1003": "the update package was missing",
    "E1004": "an update was already running",
    "E1005": "the update package could not be decrypted or extracted",
}


# ---- authentication -------------------------------------------------------------------


def hash_key(token: str) -> str:
    """The HMAC key: the token's SHA-256 as 64 hex characters (used as ASCII, not bytes)."""
    return hashlib.sha256(token.encode()).hexdigest()


def request_hash(token: str, method: str, endpoint: str) -> str:
    """`?hash=` for one request: HMAC-SHA256(hash_key(token), METHOD + PREFIX + endpoint),
    e.g. endpoint "/version" signs the message "GET/api/v1/admin/version"."""
    message = f"{method.upper()}{PREFIX}{endpoint}"
    return hmac.new(hash_key(token).encode("ascii"), message.encode(), hashlib.sha256
                    ).hexdigest()


def new_token(length: int = 48) -> str:
    """A strong token in the appliance's alphabet (~6.5 bits per character)."""
    return "".join(secrets.choice(TOKEN_ALPHABET) for _ in range(length))


def pem_fingerprint(pem: str) -> str:
    """SHA-256 of the first certificate in `pem` (DER), as a pin: 64 lowercase hex."""
    match = re.search(r"-----BEGIN CERTIFICATE-----.+?-----END CERTIFICATE-----", pem, re.S)
    if match is None:
        raise ValueError("no PEM certificate found")
    return hashlib.sha256(ssl.PEM_cert_to_DER_cert(match.group(0))).hexdigest()


def is_stale(baseline: Mapping[str, Any] | None, observed: Mapping[str, Any]) -> bool:
    """Whether a status read after our POST is still exactly the one read before it.

    The appliance answers 202 before its script writes anything, and a refused update
    leaves `failed`/E1004 behind that lingers after the other update finished. So a
    status is only ours once it differs from the one seen before we posted: any run of
    the update script rewrites the status or appends to the log tail. An unchanged status
    is the old one, whatever it says, and polling goes on."""
    if baseline is None:
        return False
    return json.dumps(baseline, sort_keys=True) == json.dumps(observed, sort_keys=True)


def log_lines(log: Any) -> list[str]:
    """The log tail as lines (the server may send real newlines or literal backslash-n)."""
    if not isinstance(log, str) or not log:
        return []
    return log.replace("\\n", "\n").splitlines()


# ---- parameters -------------------------------------------------------------------------

_IP = r"^[0-9A-Fa-f.:]{3,45}$"
_FQDN = r"^[A-Za-z0-9.\-]{3,255}$"
_PATH = r"^[A-Za-z0-9.\-_/]{3,255}$"
_PRINTABLE = r"^[!-~]{3,255}$"


class _Params(Model):
    model_config = ConfigDict(extra="forbid")


class WaitParams(_Params):
    wait: bool = Field(True, description="follow the operation to its end (else return "
                                         "once the appliance accepted it)")


class NetworkSettings(_Params):
    interface: str = Field(pattern=r"^[A-Za-z0-9]{3,14}$")
    hostname: str = Field(pattern=_FQDN)
    ip_address: str | None = Field(None, pattern=_IP)
    netmask: str | None = Field(None, pattern=r"^[0-9A-Fa-f.:/]{2,45}$")
    gateway: str | None = Field(None, pattern=_IP)
    dns1: str | None = Field(None, pattern=_IP)
    dns2: str | None = Field(None, pattern=_IP)
    ntpserver: str | None = Field(None, pattern=r"^[A-Za-z0-9.\-:]{3,255}$")

    @model_validator(mode="after")
    def _static_or_dhcp(self) -> NetworkSettings:
        # The appliance goes DHCP unless all three are given: a partial set is a mistake.
        given = [self.ip_address, self.netmask, self.gateway]
        if any(given) and not all(given):
            raise ValueError("static addressing needs ip_address, netmask and gateway "
                             "together (omit all three for DHCP)")
        return self


class SettingsDocument(_Params):
    network: NetworkSettings
    app: dict[str, Any] = Field(default_factory=dict)


class SettingsSetParams(WaitParams):
    settings: SettingsDocument


_STORAGE_FIELDS: dict[str, tuple[str, ...]] = {
    "local": (),
    "nfs": ("mount_options", "ip", "share"),
    "aoe": ("device",),
    "iscsi": ("target", "ip", "username", "password"),
    "nbd": ("export_name", "ip", "port"),
}


class StorageSettings(_Params):
    type: Literal["local", "nfs", "aoe", "iscsi", "nbd"]
    mount_options: str | None = Field(None, pattern=r"^[A-Za-z0-9.\-=,]{3,255}$")
    ip: str | None = Field(None, pattern=_IP)
    share: str | None = Field(None, pattern=_PATH)
    device: str | None = Field(None, pattern=_FQDN)
    target: str | None = Field(None, pattern=r"^[A-Za-z0-9.\-_:]{3,255}$")
    username: str | None = Field(None, pattern=_PRINTABLE)
    password: str | None = Field(None, pattern=_PRINTABLE)
    export_name: str | None = Field(None, pattern=_PATH)
    port: str | None = Field(None, pattern=r"^[0-9.\-_/]{1,5}$")

    @model_validator(mode="after")
    def _fields_of_type(self) -> StorageSettings:
        wanted = _STORAGE_FIELDS[self.type]
        missing = [n for n in wanted if getattr(self, n) is None]
        if missing:
            raise ValueError(f"storage type {self.type} needs {', '.join(missing)}")
        extra = [n for n in type(self).model_fields
                 if n != "type" and n not in wanted and getattr(self, n) is not None]
        if extra:
            raise ValueError(f"storage type {self.type} takes no {', '.join(sorted(extra))}")
        return self


class StorageDocument(_Params):
    storage: StorageSettings


class StorageSetParams(WaitParams):
    settings: StorageDocument


class UpdateParams(WaitParams):
    package_base64: str | None = Field(None, description="the encrypted update package")
    package_uri: str | None = Field(None, min_length=1, max_length=2048,
                                    description="where the blob store holds the package")

    @field_validator("package_base64")
    @classmethod
    def _base64(cls, value: str | None) -> str | None:
        if value is not None:
            try:
                base64.b64decode(value, validate=True)
            except (binascii.Error, ValueError):
                raise ValueError("must be base64") from None
        return value

    @model_validator(mode="after")
    def _one_source(self) -> UpdateParams:
        if (self.package_base64 is None) == (self.package_uri is None):
            raise ValueError("give exactly one of package_base64 and package_uri")
        return self


class CertsParams(WaitParams):
    public: str = Field(max_length=65536, description="certificate (PEM)")
    private: str = Field(max_length=65536, description="unencrypted private key (PEM)")
    ca: str | None = Field(None, max_length=65536, description="intermediate/root (PEM)")

    @field_validator("public", "ca")
    @classmethod
    def _certificate(cls, value: str | None) -> str | None:
        if value is not None:
            try:
                pem_fingerprint(value)
            except ValueError:
                raise ValueError("must be a PEM certificate") from None
        return value

    @field_validator("private")
    @classmethod
    def _key(cls, value: str) -> str:
        if not re.search(r"-----BEGIN [A-Z ]*PRIVATE KEY-----", value) \
                or "ENCRYPTED" in value:
            raise ValueError("must be an unencrypted PEM private key")
        return value


class TokenRotateParams(_Params):
    length: int = Field(48, ge=24, le=255, description="characters in the new token")


class RebootParams(_Params):
    wait: bool = Field(True, description="wait until the appliance answers again")


_ACTIONS: dict[str, ActionSpec] = {spec.name: spec for spec in (
    ActionSpec("version", "GET /version: the system's version"),
    ActionSpec("health", "GET /health: disk, memory and cpu"),
    ActionSpec("services", "GET /services: the state of system services"),
    ActionSpec("endpoints", "GET /endpoints: the API endpoints enabled on this appliance"),
    ActionSpec("changelog", "GET /changelog: the changelog since the last update"),
    ActionSpec("build", "GET /build: build information"),
    ActionSpec("reboot", "GET /reboot, then wait for GET /health to answer again",
               RebootParams, mutating=True),
    ActionSpec("update", "POST /update with an encrypted package, followed to its end",
               UpdateParams, mutating=True),
    ActionSpec("update.status", "GET /update once: status, percentage, log tail"),
    ActionSpec("backup", "POST /backup START, followed until the archive is ready",
               WaitParams, mutating=True),
    ActionSpec("backup.status", "GET /backup once: status, filesize, sha256"),
    ActionSpec("backup.download", "GET /backup/download, checked against its sha256 and "
                                  "stored in the blob store"),
    ActionSpec("settings.get", "GET /settings: network and application settings"),
    ActionSpec("settings.set", "POST /settings, followed until GET /settings shows them",
               SettingsSetParams, mutating=True),
    ActionSpec("settings.status", "GET /settings once: whether settings exist, and them"),
    ActionSpec("storage.get", "GET /storage: persistent storage settings and options"),
    ActionSpec("storage.set", "POST /storage, followed until GET /storage shows it "
                              "(applied at the next reboot)", StorageSetParams, mutating=True),
    ActionSpec("storage.status", "GET /storage once: whether storage settings exist"),
    ActionSpec("license.get", "GET /license: the license details"),
    ActionSpec("certs.set", "POST /certs (replace the TLS certificate), followed to its end",
               CertsParams, mutating=True),
    ActionSpec("certs.status", "GET /certs once: status and log tail"),
    ActionSpec("token.rotate", "POST /setup with a new random token, kept by the "
                               "credential keeper before the appliance is told",
               TokenRotateParams, mutating=True),
    ActionSpec("logs", "GET /logs (logs.tar.gz), stored in the blob store"),
)}


# The action policy (drivers/policy.py): class and least role of every action.
POLICY: dict[str, Rule] = {
    "version": read("the system's version"),
    "health": read("disk, memory and cpu"),
    "services": read("the state of system services"),
    "endpoints": read("the API endpoints enabled"),
    "changelog": read("the changelog since the last update"),
    "build": read("build information"),
    "update.status": read("the update's status"),
    "backup.status": read("the backup's status"),
    "certs.status": read("the certificate change's status"),
    "settings.get": read("network and application settings (application values masked "
                         "unless known to be public)"),
    "settings.status": read("whether settings exist, and them (masked as settings.get)"),
    "storage.get": read("persistent storage settings (its password masked)"),
    "storage.status": read("whether storage settings exist (masked as storage.get)"),
    "license.get": read("the license details"),
    # Archives go to the blob store (S3), never through the API: the job shows where.
    "logs": read("the appliance's logs, to the blob store (the job shows its location)"),
    "backup.download": read("the backup archive, to the blob store (its location and sha256)"),
    "backup": change("makes a backup archive, downloaded to the blob store"),
    "settings.set": destructive("replaces network and application settings: a wrong "
                                "address takes the appliance off the network"),
    "storage.set": destructive("replaces persistent storage (applied at the next reboot)"),
    "certs.set": destructive("replaces the TLS certificate (and our pin)"),
    "update": destructive("installs an update package: services restart"),
    "reboot": destructive("reboots the appliance: it is unreachable for a while"),
    "token.rotate": destructive("replaces the appliance's admin token (a credential)"),
}
# Settings documents the appliance returns: only these fields are known to be public; every
# other value (free-form `app` keys such as `ldap_bind_pw`, `smtp.relay_auth`) is masked.
PUBLIC_NETWORK = frozenset(NetworkSettings.model_fields) | {"mode"}
PUBLIC_APP = frozenset({"name"})
PUBLIC_STORAGE = frozenset(StorageSettings.model_fields) - {"password"}


def _mask_unknown(document: Any, public: frozenset[str]) -> Any:
    """Only `public` scalar fields in clear; any other value (nested ones too) masked."""
    if not isinstance(document, dict):
        return document if document is None else REDACTED
    return {k: v if v is None or (k in public and not isinstance(v, dict | list))
            else REDACTED for k, v in document.items()}


def _mask_settings(value: Any) -> Any:
    """Every settings document (a dict with `network` or `app`) within `value`, masked."""
    if isinstance(value, list):
        return [_mask_settings(v) for v in value]
    if not isinstance(value, dict):
        return value
    out = {k: _mask_settings(v) for k, v in value.items() if k not in ("network", "app")}
    if "network" in value:
        out["network"] = _mask_unknown(value["network"], PUBLIC_NETWORK)
    if "app" in value:
        out["app"] = _mask_unknown(value["app"], PUBLIC_APP)
    return out


def _mask_storage(value: Any) -> Any:
    """Every storage document (the dict under a `storage` key) within `value`, masked."""
    if isinstance(value, list):
        return [_mask_storage(v) for v in value]
    if not isinstance(value, dict):
        return value
    return {k: _mask_unknown(v, PUBLIC_STORAGE)
            if k == "storage" and isinstance(v, dict) and "storage" not in v
            else _mask_storage(v) for k, v in value.items()}


def redact_appliance(action: str, value: Any) -> Any:
    """Outputs and parameters by schema: settings and storage documents keep only their
    known public fields in clear (whatever the action: fail closed); then by field name."""
    return redact(_mask_storage(_mask_settings(value)))


class _Missing(HostError):
    """A 404 on an enabled endpoint: nothing exists there yet (reads turn it into output)."""

    def __init__(self, endpoint: str) -> None:
        super().__init__(ErrorType.COMMAND, f"nothing at {endpoint} on the appliance (404)",
                         code=404)


# ---- the driver ------------------------------------------------------------------------


class ApplianceDriver(Driver):
    kind = "appliance"

    # Seconds between status polls: quick at first (short operations), then steady.
    POLL_SCHEDULE: ClassVar[tuple[float, ...]] = (0.05, 0.1, 0.2, 0.5, 1.0, 2.0)
    REBOOT_POLL_CAP: ClassVar[float] = 1.0  # short enough never to miss the reboot window
    REQUEST_CAP: ClassVar[float] = 60.0  # per request, within the deadline
    POLL_CAP: ClassVar[float] = 10.0
    HEALTH_CAP: ClassVar[float] = 3.0  # a rebooting appliance may swallow packets
    STALE_GRACE: ClassVar[float] = 10.0  # backup: an identical status is accepted after it
    # The appliance pauses 2 s after a failed rotation; we never try again sooner.
    FAILED_ROTATION_PAUSE: ClassVar[float] = 2.0
    _failed_rotations: ClassVar[dict[str, float]] = {}
    _failed_rotations_lock: ClassVar[threading.Lock] = threading.Lock()

    def __init__(self, host: Host, credentials: Credentials,
                 context: DriverContext | None = None) -> None:
        super().__init__(host, credentials, context)
        self._enabled: set[str] | None = None  # first-level endpoints from GET /endpoints
        self._enabled_asked = False
        self._tls_host: Host | None = None  # the host re-pinned after our own POST /certs
        self._secrets: set[str] = set()  # every token this driver held: kept out of text

    policy_rules = POLICY

    @classmethod
    def static_actions(cls) -> dict[str, ActionSpec]:
        return {name: replace(spec, rule=POLICY.get(name)) for name, spec in _ACTIONS.items()}

    @classmethod
    def redact_params(cls, action: str, params: dict[str, Any]) -> dict[str, Any]:
        out: dict[str, Any] = redact_appliance(action, params)
        return out

    @classmethod
    def redact_output(cls, action: str, output: Any) -> Any:
        return redact_appliance(action, output)

    def credential_values(self) -> list[str]:
        # Every token this driver held (a rotation's new one too).
        return sorted({*super().credential_values(), *self._secrets})

    def perform(self, action: str, params: dict[str, Any], deadline: Deadline) -> Any:
        spec = _ACTIONS.get(action)
        if spec is None:
            raise Unsupported(f"appliance host {self.host.id} has no action {action!r}")
        model = spec.params.model_validate(validate_params(spec, params))
        handler: Callable[[Any, Deadline], Any] = getattr(
            self, "_do_" + action.replace(".", "_"))
        return handler(model, deadline)

    # ---- wire ------------------------------------------------------------------------

    def _token(self) -> str:
        token = self.credentials.token
        if token is None:
            raise HostError(ErrorType.CREDENTIALS, "the host's secret has no token")
        value = token.get_secret_value()
        self._secrets.add(value)
        return value

    def _send(self, method: str, endpoint: str, deadline: Deadline, *,
              files: dict[str, Any] | None = None, cap: float | None = None,
              stream: bool = False, token: str | None = None, raw_errors: bool = False
              ) -> requests.Response:
        """One request, signed with `?hash=` (the only query field the driver sends)."""
        signing = token if token is not None else self._token()
        wait = deadline.timeout(cap if cap is not None else self.REQUEST_CAP)
        session = session_for(self._tls_host or self.host)
        deadline.attempt()
        try:
            return session.request(
                method, f"{self.host.endpoint}{PREFIX}{endpoint}",
                params={"hash": request_hash(signing, method, endpoint)},
                files=files, stream=stream, allow_redirects=False,
                # the appliance serves one request per connection: never reuse one
                headers={"Connection": "close"},
                timeout=(min(CONNECT_TIMEOUT, wait), wait),
            )
        except requests.RequestException as exc:
            if raw_errors:
                raise
            raise transport_error(exc) from None

    def _call(self, method: str, endpoint: str, deadline: Deadline, *,
              ok: tuple[int, ...] = (200,), **kwargs: Any) -> requests.Response:
        response = self._send(method, endpoint, deadline, **kwargs)
        if response.status_code in ok:
            return response
        try:
            raise self._error(response, endpoint, deadline)
        finally:
            response.close()

    def _get_json(self, endpoint: str, deadline: Deadline, *, cap: float | None = None
                  ) -> dict[str, Any]:
        return self._json(self._call("GET", endpoint, deadline, cap=cap), endpoint)

    def _json(self, response: requests.Response, endpoint: str) -> dict[str, Any]:
        try:
            value = response.json()
        except ValueError:
            raise HostError(ErrorType.COMMAND, f"{endpoint} answered something other than "
                            "JSON") from None
        if not isinstance(value, dict):
            raise HostError(ErrorType.COMMAND, f"{endpoint} answered JSON that is not an "
                            "object")
        return value

    def _scrub(self, text: str) -> str:
        """Server text goes into messages: keep any token out of it, just in case."""
        for value in sorted(self._secrets, key=len, reverse=True):
            text = text.replace(value, "[redacted]")
        return text[:300]

    def _server_message(self, response: requests.Response) -> str:
        message = response.headers.get("Error-Message", "")
        if not message:
            with contextlib.suppress(ValueError, AttributeError):
                body = response.json()
                message = str(body.get("Error-Message") or body.get("Status") or "")
        return self._scrub(message)

    def _error(self, response: requests.Response, endpoint: str, deadline: Deadline
               ) -> HostError:
        status = response.status_code
        message = self._server_message(response)
        if status == 403:
            return HostError(ErrorType.AUTH, "the appliance refused the credentials (403)",
                             code=403)
        if status == 400:
            if "Expected GET" in message or "Expected POST" in message:
                return HostError(ErrorType.INVALID_PARAMS,
                                 f"wrong method for {endpoint}: {message}", code=400)
            return HostError(ErrorType.COMMAND, f"the appliance rejected {endpoint}: "
                             f"{message or 'Bad Request'}", code=400)
        if status == 404:
            return self._not_found(endpoint, deadline)
        if status == 501:
            return HostError(ErrorType.UNSUPPORTED,
                             f"the appliance does not implement this method on {endpoint}",
                             code=501)
        return HostError(ErrorType.COMMAND, f"{endpoint} answered {status}"
                         + (f": {message}" if message else ""), code=status,
                         retryable=status in (502, 503, 504))

    def _not_found(self, endpoint: str, deadline: Deadline) -> HostError:
        """A 404 means either "endpoint disabled" or "nothing there yet" (v1.23): GET
        /endpoints, which lists the enabled ones, tells them apart."""
        first = endpoint.strip("/").split("/")[0]
        if first == "endpoints":
            return HostError(ErrorType.UNSUPPORTED, "this appliance has no /endpoints "
                             "(its API is older than v1.18)", code=404)
        listed = self._listed(first, deadline)
        if listed is False or (listed is None and first in OPTIONAL_ENDPOINTS):
            return HostError(ErrorType.UNSUPPORTED,
                             f"endpoint /{first} disabled on this appliance", code=404)
        return _Missing(endpoint)

    def _listed(self, first: str, deadline: Deadline) -> bool | None:
        if not self._enabled_asked:
            self._enabled_asked = True
            with contextlib.suppress(HostError):
                body = self._get_json("/endpoints", deadline, cap=self.POLL_CAP)
                names = body.get("endpoints")
                if isinstance(names, list):
                    self._enabled = {
                        str(n).removeprefix(PREFIX).strip("/").split("/")[0] for n in names}
        if self._enabled is None:
            return None
        return first in self._enabled

    def _intervals(self, cap: float | None = None) -> Iterator[float]:
        for seconds in self.POLL_SCHEDULE:
            yield min(seconds, cap) if cap else seconds
        while True:
            yield min(self.POLL_SCHEDULE[-1], cap) if cap else self.POLL_SCHEDULE[-1]

    def _report(self, action: str, body: Mapping[str, Any]) -> None:
        if self.context.progress is None:
            return
        with contextlib.suppress(Exception):  # a progress hook never fails the action
            self.context.progress({"host": self.host.id, "action": action,
                                   "status": body.get("status"),
                                   "percentage": body.get("percentage")})

    def _download(self, endpoint: str, deadline: Deadline, name: str, content_type: str,
                  expected: str = "") -> tuple[int, str, str | None]:
        """Stream a binary download into the blob store (when there is one), the sha256
        computed on the way: its size, sha256 and location. Nothing is kept whole in
        memory, and nothing is kept at all when it does not match `expected`."""
        upload = None
        if self.context.blobs is not None:
            stamp = time.strftime("%Y%m%dT%H%M%SZ", time.gmtime())
            upload = self.context.blobs.upload(f"appliances/{self.host.id}/{stamp}-{name}",
                                               content_type, sha256=expected or None)
        response = self._call("GET", endpoint, deadline, stream=True)
        digest = hashlib.sha256()
        size = 0
        try:
            for chunk in response.iter_content(64 << 10):
                digest.update(chunk)
                size += len(chunk)
                if upload is not None:
                    upload.write(chunk)
                deadline.timeout()  # a slow download still ends with the deadline
            if expected and digest.hexdigest() != expected:
                raise HostError(ErrorType.COMMAND, "the downloaded backup does not match the "
                                "sha256 the appliance announced", code="sha256_mismatch",
                                details={"expected": expected, "actual": digest.hexdigest(),
                                         "size": size})
            location = upload.finish() if upload is not None else None
        except requests.RequestException as exc:
            if upload is not None:
                upload.abort()
            raise transport_error(exc) from None
        except BaseException:
            if upload is not None:
                upload.abort()
            raise
        finally:
            response.close()
        return size, digest.hexdigest(), location

    # ---- information -----------------------------------------------------------------

    def _do_version(self, p: NoParams, deadline: Deadline) -> dict[str, Any]:
        return self._get_json("/version", deadline)

    def _do_health(self, p: NoParams, deadline: Deadline) -> dict[str, Any]:
        return self._get_json("/health", deadline)

    def _do_services(self, p: NoParams, deadline: Deadline) -> dict[str, Any]:
        return self._get_json("/services", deadline)

    def _do_endpoints(self, p: NoParams, deadline: Deadline) -> dict[str, Any]:
        return self._get_json("/endpoints", deadline)

    def _do_build(self, p: NoParams, deadline: Deadline) -> dict[str, Any]:
        return self._get_json("/build", deadline)

    def _do_changelog(self, p: NoParams, deadline: Deadline) -> dict[str, Any]:
        response = self._call("GET", "/changelog", deadline)
        return {"changelog": response.content.decode("utf-8", "replace")}

    def _do_license_get(self, p: NoParams, deadline: Deadline) -> dict[str, Any]:
        try:
            return {"exists": True, **self._get_json("/license", deadline)}
        except _Missing:
            return {"exists": False}

    def _do_logs(self, p: NoParams, deadline: Deadline) -> dict[str, Any]:
        size, digest, location = self._download("/logs", deadline, "logs.tar.gz",
                                                "application/gzip")
        return {"size": size, "sha256": digest, "location": location}

    # ---- settings and storage --------------------------------------------------------

    def _read_optional(self, endpoint: str, deadline: Deadline) -> dict[str, Any] | None:
        try:
            return self._get_json(endpoint, deadline)
        except _Missing:
            return None

    def _do_settings_get(self, p: NoParams, deadline: Deadline) -> dict[str, Any]:
        body = self._read_optional("/settings", deadline)
        return {"exists": False} if body is None else {"exists": True, **body}

    def _do_settings_status(self, p: NoParams, deadline: Deadline) -> dict[str, Any]:
        body = self._read_optional("/settings", deadline)
        return {"exists": body is not None, "settings": body}

    def _do_storage_get(self, p: NoParams, deadline: Deadline) -> dict[str, Any]:
        body = self._read_optional("/storage", deadline)
        return {"exists": False} if body is None else {"exists": True, **body}

    def _do_storage_status(self, p: NoParams, deadline: Deadline) -> dict[str, Any]:
        body = self._read_optional("/storage", deadline)
        return {"exists": body is not None, "storage": body}

    def _do_settings_set(self, p: SettingsSetParams, deadline: Deadline) -> dict[str, Any]:
        wanted = p.settings.model_dump(mode="json", exclude_none=True)
        return self._post_and_read_back("settings", "/settings", wanted, p.wait, deadline)

    def _do_storage_set(self, p: StorageSetParams, deadline: Deadline) -> dict[str, Any]:
        wanted = p.settings.model_dump(mode="json", exclude_none=True)
        out = self._post_and_read_back("storage", "/storage", wanted, p.wait, deadline)
        return {**out, "reboot_required": True}  # storage applies at the next reboot

    def _post_and_read_back(self, op: str, endpoint: str, wanted: dict[str, Any],
                            wait: bool, deadline: Deadline) -> dict[str, Any]:
        """Settings and storage have no status on the wire: the operation has ended when
        GET shows what we posted (the server adds fields such as network.mode)."""
        document = json.dumps(wanted).encode()
        self._call("POST", endpoint, deadline, ok=(202,),
                   files={"settings": ("settings.json", document, "application/json")}
                   ).close()
        if not wait:
            return {"status": "started"}
        last: dict[str, Any] | None = None
        for interval in self._intervals():
            self._pause(interval, deadline, op, last)
            try:
                body = self._get_json(endpoint, deadline, cap=self.POLL_CAP)
            except _Missing:
                continue
            except HostError as exc:
                if exc.type in (ErrorType.CONNECTION, ErrorType.TIMEOUT):
                    continue
                raise
            last = body
            if _contains(body, wanted):
                return {"status": "success", "settings" if op == "settings" else op: body}
        raise AssertionError("unreachable")  # pragma: no cover

    def _pause(self, seconds: float, deadline: Deadline, op: str,
               last: Mapping[str, Any] | None) -> None:
        deadline.sleep(seconds)
        if deadline.expired():
            state = last.get("status") if isinstance(last, Mapping) else None
            raise HostError(ErrorType.TIMEOUT, f"{op} did not finish within "
                            f"{deadline.seconds:g} s" + (f" (last status: {state})"
                                                         if state else ""),
                            details={"last": _summary(last)} if last else None)

    # ---- asynchronous operations with a status ---------------------------------------

    def _status_or_none(self, endpoint: str, deadline: Deadline) -> dict[str, Any] | None:
        try:
            return self._get_json(endpoint, deadline)
        except _Missing:
            return None

    def _follow(self, op: str, endpoint: str, baseline: dict[str, Any] | None,
                deadline: Deadline, *, grace: float | None = None,
                on_tls: Callable[[], bool] | None = None) -> dict[str, Any]:
        """Poll `endpoint` until the operation we started ends; return its last status."""
        started = time.monotonic()
        ours = False
        seen_running = False
        last: dict[str, Any] | None = None
        for interval in self._intervals():
            self._pause(interval, deadline, op, last)
            try:
                body = self._get_json(endpoint, deadline, cap=self.POLL_CAP)
            except _Missing:
                continue  # the status file is not written yet
            except HostError as exc:
                if exc.type is ErrorType.TLS and on_tls is not None and on_tls():
                    continue
                if exc.type in (ErrorType.CONNECTION, ErrorType.TIMEOUT):
                    continue  # services restart during an update: keep polling
                raise
            last = body
            if not ours:
                within_grace = grace is None or time.monotonic() - started < grace
                if is_stale(baseline, body) and within_grace:
                    continue
                ours = True
            self._report(op, body)
            status = body.get("status")
            if status == "running":
                seen_running = True
            elif status == "success":
                return body
            elif status == "failed":
                raise self._failed(op, body, seen_running)
            # null (v1.23: nothing written yet) or running: poll again
        raise AssertionError("unreachable")  # pragma: no cover

    def _failed(self, op: str, body: Mapping[str, Any], seen_running: bool) -> HostError:
        code = body.get("error-code") or "failed"
        reason = body.get("error-message") or UPDATE_ERRORS.get(str(code)) or "failed"
        if op == "update" and code == "E1004" and seen_running:
            # Our update was running, so this refusal answered someone else's POST, and
            # its status now hides how our update ends.
            reason = ("another update request was refused while this update ran; the "
                      "appliance's status no longer shows this update's outcome")
        return HostError(ErrorType.COMMAND, f"{op} failed: {self._scrub(str(reason))}",
                         code=str(code), details=_summary(body))

    def _location(self, response: requests.Response, default: str) -> str:
        """The status endpoint named by a 202's Location (only ever under the prefix)."""
        location = response.headers.get("Location", "")
        response.close()
        if location.startswith(PREFIX + "/") and "?" not in location:
            return location[len(PREFIX):]
        return default

    def _do_update_status(self, p: NoParams, deadline: Deadline) -> dict[str, Any]:
        return _summary(self._get_json("/update", deadline))

    def _do_update(self, p: UpdateParams, deadline: Deadline) -> dict[str, Any]:
        package = self._package(p)
        before = self._get_json("/update", deadline)
        if before.get("status") == "running":
            # A second POST would still get 202 and only fail later: refuse it ourselves.
            raise HostError(ErrorType.COMMAND, "update failed: an update is already running "
                            "on the appliance; no update was posted", code="E1004",
                            details=_summary(before))
        response = self._call("POST", "/update", deadline, ok=(202,), files={
            "update": ("software_package.enc", package, "application/octet-stream")})
        status_endpoint = self._location(response, "/update")
        if not p.wait:
            return {"status": "started", "location": PREFIX + status_endpoint}
        body = self._follow("update", status_endpoint, before, deadline)
        out = _summary(body)
        with contextlib.suppress(HostError):  # the new version is a bonus, not the outcome
            out["version"] = self._get_json("/version", deadline, cap=self.POLL_CAP
                                            ).get("version")
        return out

    def _package(self, p: UpdateParams) -> bytes:
        if p.package_base64 is not None:
            return base64.b64decode(p.package_base64)
        blobs = self.context.blobs
        if blobs is None:
            raise HostError(ErrorType.INVALID_PARAMS, "package_uri needs a blob store; "
                            "none is configured", code="package_uri")
        try:
            return blobs.get(str(p.package_uri))
        except Exception:
            raise HostError(ErrorType.INVALID_PARAMS, "the update package could not be "
                            "read from the blob store", code="package_uri") from None

    def _do_backup_status(self, p: NoParams, deadline: Deadline) -> dict[str, Any]:
        body = self._status_or_none("/backup", deadline)
        return {"exists": False} if body is None else {"exists": True, **body}

    def _do_backup(self, p: WaitParams, deadline: Deadline) -> dict[str, Any]:
        before = self._status_or_none("/backup", deadline)
        if before is not None and before.get("status") == "running":
            raise HostError(ErrorType.COMMAND, "backup failed: a backup is already running "
                            "on the appliance", code="busy", details=_summary(before))
        response = self._call("POST", "/backup", deadline, ok=(202,),
                              files={"action": (None, "START")})
        status_endpoint = self._location(response, "/backup")
        if not p.wait:
            return {"status": "started", "location": PREFIX + status_endpoint}
        # A new archive has a new sha256; an identical status is only accepted after the
        # grace period (an archive can, rarely, come out byte for byte the same).
        body = self._follow("backup", status_endpoint, before, deadline,
                            grace=self.STALE_GRACE)
        return {"status": body.get("status"), "filesize": body.get("filesize"),
                "sha256": body.get("sha256")}

    def _do_backup_download(self, p: NoParams, deadline: Deadline) -> dict[str, Any]:
        status = self._status_or_none("/backup", deadline)
        if status is None:
            raise HostError(ErrorType.COMMAND, "there is no backup on the appliance; run "
                            "backup first", code=404)
        if status.get("status") != "success":
            raise HostError(ErrorType.COMMAND, f"the appliance's backup is "
                            f"{status.get('status')}, not ready to download",
                            code=str(status.get("status")))
        expected = str(status.get("sha256") or "").lower()
        size, digest, location = self._download("/backup/download", deadline, "backup.tar",
                                                "application/x-tar", expected)
        return {"size": size, "sha256": digest, "location": location,
                "verified": bool(expected), "filesize": status.get("filesize")}

    def _do_certs_status(self, p: NoParams, deadline: Deadline) -> dict[str, Any]:
        body = self._status_or_none("/certs", deadline)
        return {"exists": False} if body is None else _summary(body)

    def _do_certs_set(self, p: CertsParams, deadline: Deadline) -> dict[str, Any]:
        fingerprint = pem_fingerprint(p.public)
        before = self._status_or_none("/certs", deadline)
        if before is not None and before.get("status") == "running":
            raise HostError(ErrorType.COMMAND, "certs failed: a certificates update is "
                            "already running on the appliance", code="busy",
                            details=_summary(before))
        files: dict[str, Any] = {
            "public": ("appliance.pem", p.public.encode(), "application/x-pem-file"),
            "private": ("appliance.key", p.private.encode(), "application/x-pem-file"),
        }
        if p.ca:
            files["ca"] = ("ca.pem", p.ca.encode(), "application/x-pem-file")
        response = self._call("POST", "/certs", deadline, ok=(202,), files=files)
        status_endpoint = self._location(response, "/certs")
        pinned = self.host.tls.pin_sha256
        repin = bool(pinned) and pinned != fingerprint
        out: dict[str, Any] = {"pin_sha256": fingerprint, "repin_required": repin}
        if not p.wait:
            return {"status": "started", "location": PREFIX + status_endpoint, **out}

        def follow_new_certificate() -> bool:
            # The appliance now presents the certificate we just uploaded, so the old
            # pin fails: trust the new one (ours), once.
            if not repin or self._tls_host is not None:
                return False
            tls = self.host.tls.model_copy(update={"pin_sha256": fingerprint})
            self._tls_host = self.host.model_copy(update={"tls": tls})
            return True

        body = self._follow("certs", status_endpoint, before, deadline,
                            on_tls=follow_new_certificate)
        return {**_summary(body), **out}

    # ---- reboot ----------------------------------------------------------------------

    def _health_answers(self, deadline: Deadline) -> bool:
        """Whether the appliance answers HTTP now; unreachable is expected mid-reboot."""
        try:
            response = self._send("GET", "/health", deadline, cap=self.HEALTH_CAP)
        except HostError as exc:
            if exc.type in (ErrorType.CONNECTION, ErrorType.TIMEOUT) and not \
                    deadline.expired():
                return False
            raise
        response.close()
        if response.status_code == 403:
            raise HostError(ErrorType.AUTH, "the appliance refused the credentials (403)",
                            code=403)
        return True

    def _do_reboot(self, p: RebootParams, deadline: Deadline) -> dict[str, Any]:
        self._call("GET", "/reboot", deadline, ok=(202,)).close()
        asked = time.monotonic()
        if not p.wait:
            return {"status": "rebooting"}
        # The appliance backs up before going down, so it first keeps answering: wait to
        # see it away, then for /health to answer again.
        away_since: float | None = None
        for interval in self._intervals(cap=self.REBOOT_POLL_CAP):
            deadline.sleep(interval)
            if deadline.expired():
                where = "went away" if away_since is None else "came back"
                raise HostError(ErrorType.TIMEOUT, f"the appliance accepted the reboot but "
                                f"never {where} within {deadline.seconds:g} s")
            answers = self._health_answers(deadline)
            now = time.monotonic()
            if away_since is None and not answers:
                away_since = now
            elif away_since is not None and answers:
                return {"status": "back", "away_seconds": round(now - away_since, 3),
                        "total_seconds": round(now - asked, 3)}
        raise AssertionError("unreachable")  # pragma: no cover

    # ---- token rotation --------------------------------------------------------------

    def _do_token_rotate(self, p: TokenRotateParams, deadline: Deadline) -> dict[str, Any]:
        keeper = self.context.keeper
        if keeper is None:
            raise Unsupported("token.rotate needs a credential keeper: there would be "
                              "nowhere to keep the new token")
        old = self._token()
        self._respect_failed_rotation_pause(deadline)
        new = new_token(p.length)
        self._secrets.add(new)
        # The new token is safe before the appliance hears of it: whatever happens next,
        # one of the two kept values works.
        try:
            keeper.stage_pending(
                self.credentials.model_copy(update={"token": SecretStr(new)}))
        except Exception:
            raise HostError(ErrorType.CREDENTIALS, "could not stage the new token in the "
                            "secret store; nothing was sent") from None
        try:
            response = self._send("POST", "/setup", deadline, raw_errors=True,
                                  cap=self.REQUEST_CAP + self.FAILED_ROTATION_PAUSE,
                                  files={"newtoken": (None, new)})
        except requests.RequestException as exc:
            if _nothing_sent(exc):
                keeper.discard_pending()
                raise transport_error(exc) from None
            return self._settle_rotation(old, new, deadline)
        except HostError:  # the deadline ran out before sending
            keeper.discard_pending()
            raise
        response.close()
        if response.status_code == 200:
            return self._promote(new, "answer")
        # A clear refusal (after the appliance's pause): the old token still works.
        error = self._error(response, "/setup", deadline)
        keeper.discard_pending()
        self._note_failed_rotation()
        raise error

    def _settle_rotation(self, old: str, new: str, deadline: Deadline) -> dict[str, Any]:
        """The connection died after the request went out: ask the appliance which token
        it accepts now. Unknown stays pending, so a later check can still settle it."""
        keeper = self.context.keeper
        assert keeper is not None
        unknown = HostError(ErrorType.CONNECTION, "the connection dropped during the token "
                            "rotation and the appliance could not be asked which token it "
                            "accepts; the new token is kept pending",
                            details={"outcome": "unknown"})
        if self._probe(new, deadline) == 200:
            return self._promote(new, "probe")
        probe_old = self._probe(old, deadline)
        if probe_old == 200:
            keeper.discard_pending()
            self._note_failed_rotation()
            raise HostError(ErrorType.CONNECTION, "the connection dropped during the token "
                            "rotation; the appliance kept the old token, which still works",
                            retryable=True, details={"outcome": "not rotated"})
        if probe_old == 403:
            raise HostError(ErrorType.AUTH, "after an interrupted rotation the appliance "
                            "accepts neither the new nor the old token; the new token is "
                            "kept pending", code=403, details={"outcome": "unknown"})
        raise unknown

    def _promote(self, new: str, confirmed_by: str) -> dict[str, Any]:
        keeper = self.context.keeper
        assert keeper is not None
        self._use_token(new)  # the appliance accepts only the new token from now on
        try:
            keeper.promote_pending()
        except Exception:
            raise HostError(ErrorType.CREDENTIALS, "the appliance accepted the new token "
                            "but promoting it in the secret store failed; it stays pending "
                            "there") from None
        return {"rotated": True, "confirmed_by": confirmed_by, "length": len(new)}

    def _probe(self, token: str, deadline: Deadline) -> int | None:
        """Status of an authenticated GET /version with `token`; None if unreachable."""
        try:
            response = self._send("GET", "/version", deadline, token=token,
                                  cap=self.POLL_CAP)
        except HostError:
            return None
        response.close()
        return response.status_code

    def _use_token(self, token: str) -> None:
        self.credentials = self.credentials.model_copy(update={"token": SecretStr(token)})

    def _respect_failed_rotation_pause(self, deadline: Deadline) -> None:
        with self._failed_rotations_lock:
            failed_at = self._failed_rotations.get(self.host.id)
        if failed_at is not None:
            left = failed_at + self.FAILED_ROTATION_PAUSE - time.monotonic()
            if left > 0:
                deadline.sleep(left)
                deadline.timeout()

    def _note_failed_rotation(self) -> None:
        with self._failed_rotations_lock:
            self._failed_rotations[self.host.id] = time.monotonic()


def _nothing_sent(exc: requests.RequestException) -> bool:
    """Failures that happen before the request leaves: TLS, refused, connect timeout."""
    if isinstance(exc, requests.exceptions.SSLError | requests.exceptions.ConnectTimeout):
        return True
    current: BaseException | None = exc
    for _ in range(10):
        if current is None:
            break
        if isinstance(current, ConnectionRefusedError):
            return True
        if isinstance(current, http.client.RemoteDisconnected | ConnectionResetError):
            return False
        inner = [a for a in getattr(current, "args", ()) if isinstance(a, BaseException)]
        current = current.__cause__ or current.__context__ or (inner[-1] if inner else None)
    return False


def _contains(have: Any, want: Any) -> bool:
    """Whether `have` holds every key and value of `want` (recursively, extras allowed)."""
    if isinstance(want, Mapping):
        return isinstance(have, Mapping) and all(
            k in have and _contains(have[k], v) for k, v in want.items())
    return bool(have == want)


contains = _contains  # public: the logic layer's read-back follows settings with it too


def _summary(body: Mapping[str, Any] | None) -> dict[str, Any]:
    """A status body as output: the log tail as lines, error fields with plain names."""
    if not body:
        return {}
    out: dict[str, Any] = {"status": body.get("status")}
    for source, target in (("percentage", "percentage"), ("filesize", "filesize"),
                           ("sha256", "sha256"), ("error-code", "error_code"),
                           ("error-message", "error_message")):
        if body.get(source) is not None:
            out[target] = body[source]
    if "log" in body:
        out["log"] = log_lines(body.get("log"))
    return out
