"""The appliance's wire: one signed request per connection, its answer mapped to the
shared error taxonomy (403 auth, never retried; 400 wrong method or refused; 404 disabled
or not there yet; 501), JSON bodies and streamed downloads, all within the deadline."""

from __future__ import annotations

import contextlib
import hashlib
import time
from typing import Any, ClassVar

import requests
from pydantic import SecretStr

from mailfleet.drivers.appliance_admin.auth import PREFIX, request_hash, scrub
from mailfleet.drivers.base import Deadline, Driver, DriverContext
from mailfleet.drivers.http import CONNECT_TIMEOUT, session_for, transport_error
from mailfleet.errors import ErrorType, HostError
from mailfleet.models.hosts import Credentials, Host

OPTIONAL_ENDPOINTS = frozenset({"settings", "certs", "license", "storage", "backup"})


class Missing(HostError):
    """A 404 on an enabled endpoint: nothing exists there yet (reads turn it into output)."""

    def __init__(self, endpoint: str) -> None:
        super().__init__(ErrorType.COMMAND, f"nothing at {endpoint} on the appliance (404)",
                         code=404)


class ApplianceWire(Driver):
    """Requests to one appliance; ApplianceDriver adds the actions on top.

    Over 80 lines as a class, not as a unit of reading: a dozen short methods, one per
    wire concern (tokens, send, errors, the 404 triage, reads, the streamed download)."""

    REQUEST_CAP: ClassVar[float] = 60.0  # per request, within the deadline
    POLL_CAP: ClassVar[float] = 10.0
    HEALTH_CAP: ClassVar[float] = 3.0  # a rebooting appliance may swallow packets
    # The appliance pauses 2 s after a failed token rotation; we never try again sooner.
    FAILED_ROTATION_PAUSE: ClassVar[float] = 2.0

    def __init__(self, host: Host, credentials: Credentials,
                 context: DriverContext | None = None) -> None:
        super().__init__(host, credentials, context)
        self._enabled: set[str] | None = None  # first-level endpoints from GET /endpoints
        self._enabled_asked = False
        self._tls_host: Host | None = None  # the host re-pinned after our own POST /certs
        self._secrets: set[str] = set()  # every token this driver held: kept out of text

    def credential_values(self) -> list[str]:
        # Every token this driver held (a rotation's new one too).
        return sorted({*super().credential_values(), *self._secrets})

    def trust_pin(self, pin_sha256: str) -> None:
        """Trust the certificate we uploaded ourselves (certs.set): its pin from now on."""
        tls = self.host.tls.model_copy(update={"pin_sha256": pin_sha256})
        self._tls_host = self.host.model_copy(update={"tls": tls})

    @property
    def trusts_new_pin(self) -> bool:
        return self._tls_host is not None

    def token(self) -> str:
        token = self.credentials.token
        if token is None:
            raise HostError(ErrorType.CREDENTIALS, "the host's secret has no token")
        value = token.get_secret_value()
        self._secrets.add(value)
        return value

    def hold(self, token: str) -> None:
        """A token this driver may send from now on: kept out of every text."""
        self._secrets.add(token)

    def use_token(self, token: str) -> None:
        self.hold(token)
        self.credentials = self.credentials.model_copy(update={"token": SecretStr(token)})

    def scrub(self, text: str) -> str:
        return scrub(text, self._secrets)

    def send(self, method: str, endpoint: str, deadline: Deadline, *,
              files: dict[str, Any] | None = None, cap: float | None = None,
              stream: bool = False, token: str | None = None, raw_errors: bool = False
              ) -> requests.Response:
        """One request, signed with `?hash=` (the only query field the driver sends)."""
        signing = token if token is not None else self.token()
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

    def call(self, method: str, endpoint: str, deadline: Deadline, *,
              ok: tuple[int, ...] = (200,), **kwargs: Any) -> requests.Response:
        response = self.send(method, endpoint, deadline, **kwargs)
        if response.status_code in ok:
            return response
        try:
            raise self.error_for(response, endpoint, deadline)
        finally:
            response.close()

    def get_json(self, endpoint: str, deadline: Deadline, *, cap: float | None = None
                  ) -> dict[str, Any]:
        return self._json(self.call("GET", endpoint, deadline, cap=cap), endpoint)

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

    def _server_message(self, response: requests.Response) -> str:
        message = response.headers.get("Error-Message", "")
        if not message:
            with contextlib.suppress(ValueError, AttributeError):
                body = response.json()
                message = str(body.get("Error-Message") or body.get("Status") or "")
        return self.scrub(message)

    def error_for(self, response: requests.Response, endpoint: str, deadline: Deadline
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
        return Missing(endpoint)

    def _listed(self, first: str, deadline: Deadline) -> bool | None:
        if not self._enabled_asked:
            self._enabled_asked = True
            with contextlib.suppress(HostError):
                body = self.get_json("/endpoints", deadline, cap=self.POLL_CAP)
                names = body.get("endpoints")
                if isinstance(names, list):
                    self._enabled = {
                        str(n).removeprefix(PREFIX).strip("/").split("/")[0] for n in names}
        if self._enabled is None:
            return None
        return first in self._enabled

    def read_optional(self, endpoint: str, deadline: Deadline, *, cap: float | None = None
                      ) -> dict[str, Any] | None:
        """GET `endpoint` as JSON; None when nothing exists there yet (v1.23's 404)."""
        try:
            return self.get_json(endpoint, deadline, cap=cap)
        except Missing:
            return None

    def health_answers(self, deadline: Deadline) -> bool:
        """Whether the appliance answers HTTP now; unreachable is expected mid-reboot."""
        try:
            response = self.send("GET", "/health", deadline, cap=self.HEALTH_CAP)
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

    @staticmethod
    def location(response: requests.Response, default: str) -> str:
        """The status endpoint named by a 202's Location (only ever under the prefix)."""
        location = response.headers.get("Location", "")
        response.close()
        if location.startswith(PREFIX + "/") and "?" not in location:
            return location[len(PREFIX):]
        return default

    def download(self, endpoint: str, deadline: Deadline, name: str, content_type: str,
                  expected: str = "") -> tuple[int, str, str | None]:
        """Stream a binary download into the blob store (when there is one), the sha256
        computed on the way: its size, sha256 and location. Nothing is kept whole in
        memory, and nothing is kept at all when it does not match `expected`."""
        upload = None
        if self.context.blobs is not None:
            stamp = time.strftime("%Y%m%dT%H%M%SZ", time.gmtime())
            upload = self.context.blobs.upload(f"appliances/{self.host.id}/{stamp}-{name}",
                                               content_type, sha256=expected or None)
        response = self.call("GET", endpoint, deadline, stream=True)
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

