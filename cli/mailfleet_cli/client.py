"""The HTTP client: one pooled requests Session, explicit timeouts, API errors as one line.

The token only ever goes into the Authorization header; no message built here contains it.
"""

from __future__ import annotations

import re
from typing import Any

import requests
from requests.adapters import HTTPAdapter
from urllib3.util.retry import Retry

from mailfleet_cli import __version__
from mailfleet_cli.config import Connection
from mailfleet_cli.errors import ApiError, CliError, Exit

CONNECT_TIMEOUT = 5.0
# API Gateway gives up at 29 s; ?wait=N asks for at most 25 s of it.
READ_TIMEOUT = 35.0

_STATUS_EXIT = {
    400: Exit.USAGE,
    401: Exit.AUTH,
    403: Exit.AUTH,
    404: Exit.NOT_FOUND,
    409: Exit.CONFLICT,
    413: Exit.USAGE,
    422: Exit.USAGE,
}


class Client:
    def __init__(self, connection: Connection, read_timeout: float = READ_TIMEOUT) -> None:
        self.url = connection.url
        self.timeout = (CONNECT_TIMEOUT, read_timeout)
        self.session = requests.Session()
        if connection.ca_bundle:
            self.session.verify = connection.ca_bundle
        # Only a connection that never reached the server is tried again (safe for POSTs too);
        # nothing is retried on an answer, least of all a 401.
        retry = Retry(total=1, connect=1, read=0, status=0, redirect=0, backoff_factor=0.2)
        adapter = HTTPAdapter(pool_connections=2, pool_maxsize=4, max_retries=retry)
        self.session.mount("http://", adapter)
        self.session.mount("https://", adapter)
        self.session.headers["User-Agent"] = f"mailfleet-cli/{__version__}"
        self.session.headers["Accept"] = "application/json"
        self._has_token = bool(connection.token)
        if connection.token:
            self.session.headers["Authorization"] = f"Bearer {connection.token}"

    def close(self) -> None:
        self.session.close()

    # ------------------------------------------------------------------ verbs
    def get(self, path: str, params: Any = None) -> Any:
        return self.request("GET", path, params=params)

    def post(self, path: str, body: Any = None, params: Any = None,
             headers: dict[str, str] | None = None) -> Any:
        return self.request("POST", path, json=body, params=params, headers=headers)

    def patch(self, path: str, body: Any) -> Any:
        return self.request("PATCH", path, json=body)

    def delete(self, path: str) -> Any:
        return self.request("DELETE", path)

    def request(self, method: str, path: str, *, json: Any = None, params: Any = None,
                headers: dict[str, str] | None = None, timeout: float | None = None) -> Any:
        answer = self.send(method, path, json=json, params=params, headers=headers,
                           timeout=timeout)
        return self.parse(method, path, answer)

    def send(self, method: str, path: str, *, json: Any = None, params: Any = None,
             headers: dict[str, str] | None = None, timeout: float | None = None
             ) -> requests.Response:
        wait = self.timeout if timeout is None else (CONNECT_TIMEOUT, timeout)
        try:
            return self.session.request(method, self.url + path, json=json, params=params,
                                        headers=headers, timeout=wait)
        except requests.exceptions.SSLError as exc:
            raise CliError(f"cannot reach {self.url}: TLS: {_reason(exc)}",
                           Exit.UNREACHABLE) from None
        except requests.exceptions.ConnectTimeout:
            raise CliError(f"cannot reach {self.url}: no connection within "
                           f"{CONNECT_TIMEOUT:g} s", Exit.UNREACHABLE) from None
        except requests.exceptions.ReadTimeout:
            raise CliError(f"{method} {path}: no answer from {self.url} within "
                           f"{wait[1]:g} s", Exit.UNREACHABLE) from None
        except requests.exceptions.ConnectionError as exc:
            raise CliError(f"cannot reach {self.url}: {_reason(exc)}",
                           Exit.UNREACHABLE) from None
        except requests.exceptions.RequestException as exc:
            raise CliError(f"{method} {path}: {type(exc).__name__}", Exit.UNREACHABLE) from None

    def parse(self, method: str, path: str, answer: requests.Response) -> Any:
        body: Any = None
        if answer.content:
            try:
                body = answer.json()
            except ValueError:
                body = None
        if answer.status_code < 400:
            if answer.content and body is None:
                raise CliError(f"{method} {path}: the answer is not JSON "
                               f"(HTTP {answer.status_code})", Exit.SERVER)
            return body
        raise self.error(method, path, answer.status_code, body)

    def error(self, method: str, path: str, status: int, body: Any) -> ApiError:
        code = _STATUS_EXIT.get(status, Exit.SERVER if status >= 500 else Exit.USAGE)
        message = _message(body)
        if status == 401:
            where = ("no token given: use --token, MAILFLEET_TOKEN or a profile"
                     if not self._has_token else
                     "the token was refused (unknown, revoked or expired)")
            text = f"unauthorized: {where}"
        elif status == 404 and message.lower() in ("", "not found"):
            # API Gateway's own 404: no such route (an older API, or a wrong --url path).
            text = f"{method} {path}: not found"
        elif status >= 500:
            text = f"{method} {path}: server error" + (f": {message}" if message else "")
        else:
            text = message or f"{method} {path} was refused"
        return ApiError(f"{text} (HTTP {status})", code, status, body)


def _message(body: Any) -> str:
    """The API's field and reason (every field, if it listed several), or its message."""
    if not isinstance(body, dict):
        return ""
    errors = body.get("errors")
    if isinstance(errors, list) and errors:
        parts = []
        for err in errors:
            if isinstance(err, dict):
                field, reason = err.get("field"), err.get("reason") or err.get("message")
                parts.append(f"{field}: {reason}" if field else str(reason))
        if parts:
            return "; ".join(parts)
    message = body.get("message") or body.get("error") or ""
    return str(message).replace("\n", " ")


def _reason(exc: Exception) -> str:
    """The useful end of a requests/urllib3 error chain, on one line."""
    text = str(exc)
    found = re.findall(r"\[Errno -?\d+\] ([^'\")\]]+)", text)
    if found:
        return found[-1].strip().lower()
    for marker in ("certificate verify failed", "Name or service not known", "timed out",
                   "Connection refused", "Connection reset"):
        if marker.lower() in text.lower():
            return marker.lower()
    return type(exc).__name__
