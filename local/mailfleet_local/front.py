"""An HTTP front on 127.0.0.1 that behaves as API Gateway (REST, Lambda proxy integration).

It matches a request against the deployment's routes, runs the route's TOKEN authorizer
(the authorizer function, in-process), builds the payload v1 proxy event API Gateway
would send, calls the function in-process and turns its proxy response into the HTTP
answer. Gateway errors (401, 403, 413, 502, 504) have API Gateway's bodies, or the
template's GatewayResponses where it defines them.
"""

from __future__ import annotations

import base64
import datetime
import fnmatch
import hashlib
import json
import logging
import re
import socket
import sys
import threading
import time
import traceback
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import unquote, urlsplit

from mailfleet_local import lambda_bridge
from mailfleet_local.stack import ApiInfo, AuthorizerInfo, Deployment, GatewayResponse, Route

# Not under `mailfleet`: Powertools' Logger(service=mailfleet) owns that one and would
# stamp these lines with whichever function's keys it holds.
log = logging.getLogger("mailfleet-local.front")

# The methods API Gateway (REST) knows; `ANY` stands for these, anything else has no route.
GATEWAY_METHODS = frozenset({"DELETE", "GET", "HEAD", "OPTIONS", "PATCH", "POST", "PUT"})
MAX_BODY_BYTES = 10 * 1024 * 1024  # API Gateway's payload limit
INTEGRATION_TIMEOUT_SECONDS = 29.0  # API Gateway's default integration timeout

# API Gateway's own answers: (status, x-amzn-ErrorType, default message).
_GATEWAY_DEFAULTS: dict[str, tuple[int, str, str | None]] = {
    "UNAUTHORIZED": (401, "UnauthorizedException", "Unauthorized"),
    "ACCESS_DENIED": (
        403,
        "AccessDeniedException",
        "User is not authorized to access this resource",
    ),
    "MISSING_AUTHENTICATION_TOKEN": (
        403,
        "MissingAuthenticationTokenException",
        "Missing Authentication Token",
    ),
    "AUTHORIZER_FAILURE": (500, "AuthorizerFailureException", None),
    "AUTHORIZER_CONFIGURATION_ERROR": (500, "AuthorizerConfigurationException", None),
    "REQUEST_TOO_LARGE": (413, "RequestTooLargeException", "Request Too Long"),
    "INTEGRATION_TIMEOUT": (504, "IntegrationTimeoutException", "Endpoint request timed out"),
    "INTEGRATION_FAILURE": (502, "InternalServerErrorException", "Internal server error"),
}
_EXPLICIT_DENY = "User is not authorized to access this resource with an explicit deny"


@dataclass
class HttpRequest:
    method: str
    target: str  # path and query string as sent
    headers: list[tuple[str, str]]
    body: bytes
    client_ip: str


@dataclass
class HttpResponse:
    status: int
    headers: list[tuple[str, str]] = field(default_factory=list)
    body: bytes = b""


class _GatewayError(Exception):
    def __init__(self, response_type: str, message: str | None = None) -> None:
        super().__init__(response_type)
        self.response_type = response_type
        self.message = message


def _segments(path: str) -> list[str]:
    # "/health/" reaches the /health resource, as on API Gateway.
    return [s for s in path.strip("/").split("/")] if path.strip("/") else []


def match_route(routes: list[Route], method: str, path: str) -> tuple[Route, dict[str, str]] | None:
    """The route API Gateway would pick: the most specific resource, then its method.

    Resources are ranked segment by segment (literal, then {param}, then {proxy+}); a
    resource that matches but lacks the method (and ANY) answers like no route at all.
    """
    parts = _segments(path)
    best: tuple[tuple[int, ...], str, dict[str, str]] | None = None
    for resource in {r.path for r in routes}:
        params = _match_resource(_segments(resource), parts)
        if params is None:
            continue
        rank = tuple(
            2 if s.endswith("+}") else 1 if s.startswith("{") else 0 for s in _segments(resource)
        )
        if best is None or rank < best[0]:
            best = (rank, resource, params)
    if best is None:
        return None
    _, resource, params = best
    candidates = [r for r in routes if r.path == resource]
    if method not in GATEWAY_METHODS:
        return None  # e.g. TRACE: API Gateway has no such method, ANY does not cover it
    for wanted in (method, "ANY"):
        for route in candidates:
            if route.method == wanted:
                return route, params
    return None


def _match_resource(template: list[str], parts: list[str]) -> dict[str, str] | None:
    params: dict[str, str] = {}
    for i, segment in enumerate(template):
        if segment.startswith("{") and segment.endswith("+}"):
            rest = parts[i:]
            if not rest or i != len(template) - 1:
                return None
            params[segment[1:-2]] = "/".join(rest)
            return params
        if i >= len(parts):
            return None
        if segment.startswith("{") and segment.endswith("}"):
            if not parts[i]:
                return None
            params[segment[1:-1]] = parts[i]
        elif segment != parts[i]:
            return None
    return params if len(parts) == len(template) else None


def _iam_match(pattern: str, value: str, ignore_case: bool = False) -> bool:
    # IAM wildcards: * any run of characters (slashes too), ? one character.
    regex = "".join(".*" if c == "*" else "." if c == "?" else re.escape(c) for c in pattern)
    return re.fullmatch(regex, value, re.IGNORECASE if ignore_case else 0) is not None


def evaluate_policy(policy: Any, method_arn: str) -> str:
    """ "Allow", "Deny" (explicit) or "None" for execute-api:Invoke on method_arn."""
    statements = policy.get("Statement", [])
    if isinstance(statements, dict):
        statements = [statements]
    allowed = False
    for statement in statements:
        actions = statement.get("Action", [])
        actions = [actions] if isinstance(actions, str) else actions
        resources = statement.get("Resource", [])
        resources = [resources] if isinstance(resources, str) else resources
        if not any(_iam_match(a, "execute-api:Invoke", ignore_case=True) for a in actions):
            continue
        if not any(_iam_match(r, method_arn) for r in resources):
            continue
        effect = str(statement.get("Effect", "")).lower()
        if effect == "deny":
            return "Deny"
        if effect == "allow":
            allowed = True
    return "Allow" if allowed else "None"


def _stringify(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    return str(value)


def _stable_id(*parts: str, length: int = 6) -> str:
    return hashlib.sha256("/".join(parts).encode()).hexdigest()[:length]


def _single_and_multi(pairs: list[tuple[str, str]]) -> tuple[dict[str, str], dict[str, list[str]]]:
    """API Gateway's two views of repeated keys: the last value, and every value."""
    single: dict[str, str] = {}
    multi: dict[str, list[str]] = {}
    for key, value in pairs:
        single[key] = value
        multi.setdefault(key, []).append(value)
    return single, multi


def _identity(request: HttpRequest) -> dict[str, Any]:
    """requestContext.identity of an unauthenticated (IAM-less) REST API call."""
    user_agent = next((v for k, v in request.headers if k.lower() == "user-agent"), None)
    return {
        "cognitoIdentityPoolId": None,
        "accountId": None,
        "cognitoIdentityId": None,
        "caller": None,
        "sourceIp": request.client_ip,
        "principalOrgId": None,
        "accessKey": None,
        "cognitoAuthenticationType": None,
        "cognitoAuthenticationProvider": None,
        "userArn": None,
        "userAgent": user_agent,
        "user": None,
    }


def _split_query(query: str) -> list[tuple[str, str]]:
    pairs = []
    for item in query.split("&"):
        if not item:
            continue
        key, _, value = item.partition("=")
        pairs.append((unquote(key), unquote(value)))
    return pairs


class ApiFront:
    """API Gateway (REST, proxy integration) for one API of a deployment, on 127.0.0.1."""

    def __init__(
        self,
        deployment: Deployment,
        api_logical_id: str | None = None,
        port: int = 0,
        invoke: Callable[[str, Any], Any] = lambda_bridge.invoke_local,
        access_log: bool = True,
    ) -> None:
        self.deployment = deployment
        self.api_logical_id = deployment.api(api_logical_id).logical_id
        self._invoke = invoke
        self._access_log = access_log
        self._requested_port = port
        self._server: ThreadingHTTPServer | None = None
        self._thread: threading.Thread | None = None
        self._auth_cache: dict[tuple[str, str], tuple[float, dict[str, Any]]] = {}
        self._auth_cache_lock = threading.Lock()

    # -------------------------------------------------------------- lifecycle

    @property
    def port(self) -> int:
        if self._server is None:
            raise RuntimeError("ApiFront is not started")
        return int(self._server.server_address[1])

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def api(self) -> ApiInfo:
        # Read through the deployment each time: a redeploy may swap it.
        return self.deployment.apis[self.api_logical_id]

    def start(self) -> ApiFront:
        server = _Server(("127.0.0.1", self._requested_port), _Handler)
        server.front = self
        self._server = server
        self._thread = threading.Thread(target=server.serve_forever, name="api-front", daemon=True)
        self._thread.start()
        return self

    def stop(self) -> None:
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()
            self._server = None
        if self._thread is not None:
            self._thread.join(5)
            self._thread = None

    def __enter__(self) -> ApiFront:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    # -------------------------------------------------------------- the gateway

    def handle(self, request: HttpRequest) -> HttpResponse:
        request_id = str(uuid.uuid4())
        try:
            return self._handle(request, request_id)
        except _GatewayError as err:
            return self.gateway_response(err.response_type, request_id, err.message)

    def _handle(self, request: HttpRequest, request_id: str) -> HttpResponse:
        api = self.api
        split = urlsplit(request.target)
        path = unquote(split.path) or "/"
        routes = [r for r in self.deployment.routes if r.api_logical_id == api.logical_id]
        matched = match_route(routes, request.method, path)
        if matched is None:
            raise _GatewayError("MISSING_AUTHENTICATION_TOKEN")
        route, path_params = matched
        if len(request.body) > MAX_BODY_BYTES:
            raise _GatewayError("REQUEST_TOO_LARGE")
        authorizer_context = None
        if route.authorizer is not None:
            authorizer_context = self._authorize(route.authorizer, api, request, path)
        event = self.build_event(
            route, api, request, path, split.query, path_params, authorizer_context, request_id
        )
        result = self._call_function(route.function_name, event)
        return self._proxy_response(route.function_name, result, request_id)

    def _authorize(
        self, authorizer: AuthorizerInfo, api: ApiInfo, request: HttpRequest, path: str
    ) -> dict[str, Any]:
        if authorizer.type != "TOKEN" or authorizer.function_name is None:
            log.error("authorizer %s: type %s is not run locally", authorizer.name, authorizer.type)
            raise _GatewayError("AUTHORIZER_CONFIGURATION_ERROR")
        wanted = authorizer.identity_header.lower()
        token = next((v for k, v in request.headers if k.lower() == wanted), "")
        if not token:
            raise _GatewayError("UNAUTHORIZED")  # the authorizer is not even called
        if authorizer.validation_expression and not re.fullmatch(
            authorizer.validation_expression, token
        ):
            raise _GatewayError("UNAUTHORIZED")
        d = self.deployment
        method_arn = (
            f"arn:aws:execute-api:{d.region}:{d.account_id}:{api.api_id}/{api.stage}/"
            f"{request.method}/{path.lstrip('/')}"
        )
        started = time.monotonic()
        output = self._cached_authorizer_output(authorizer, token)
        if output is None:
            event = {"type": "TOKEN", "authorizationToken": token, "methodArn": method_arn}
            try:
                output = self._invoke(authorizer.function_name, event)
            except Exception as exc:
                if str(exc) == "Unauthorized":
                    raise _GatewayError("UNAUTHORIZED") from None
                log.exception("authorizer %s failed", authorizer.function_name)
                raise _GatewayError("AUTHORIZER_FAILURE") from None
            self._check_authorizer_output(authorizer, output)
            if authorizer.reauthorize_every > 0:
                with self._auth_cache_lock:
                    expires = time.monotonic() + authorizer.reauthorize_every
                    self._auth_cache[(authorizer.name, token)] = (expires, output)
        decision = evaluate_policy(output["policyDocument"], method_arn)
        if decision == "Deny":
            raise _GatewayError("ACCESS_DENIED", _EXPLICIT_DENY)
        if decision != "Allow":
            raise _GatewayError("ACCESS_DENIED")
        # API Gateway hands the context on with every value as a string.
        context: dict[str, Any] = {
            k: _stringify(v) for k, v in (output.get("context") or {}).items()
        }
        context["principalId"] = str(output["principalId"])
        context["integrationLatency"] = int((time.monotonic() - started) * 1000)
        return context

    def _cached_authorizer_output(
        self, authorizer: AuthorizerInfo, token: str
    ) -> dict[str, Any] | None:
        if authorizer.reauthorize_every <= 0:
            return None
        with self._auth_cache_lock:
            entry = self._auth_cache.get((authorizer.name, token))
        if entry and entry[0] > time.monotonic():
            return entry[1]
        return None

    @staticmethod
    def _check_authorizer_output(authorizer: AuthorizerInfo, output: Any) -> None:
        problem = None
        if not isinstance(output, dict):
            problem = "the output is not an object"
        elif "principalId" not in output or not isinstance(output.get("policyDocument"), dict):
            problem = "principalId or policyDocument missing"
        elif not isinstance(output.get("context") or {}, dict) or any(
            isinstance(v, (dict, list)) for v in (output.get("context") or {}).values()
        ):
            problem = "context values must be strings, numbers or booleans"
        if problem:
            log.error("authorizer %s: %s", authorizer.function_name, problem)
            raise _GatewayError("AUTHORIZER_CONFIGURATION_ERROR")

    def _call_function(self, function_name: str, event: dict[str, Any]) -> Any:
        outcome: dict[str, Any] = {}

        def run() -> None:
            try:
                outcome["result"] = self._invoke(function_name, event)
            except BaseException as exc:
                outcome["error"] = exc

        worker = threading.Thread(target=run, name=f"invoke-{function_name}", daemon=True)
        worker.start()
        worker.join(INTEGRATION_TIMEOUT_SECONDS)
        if worker.is_alive():
            log.error("%s did not answer within %.0f s", function_name, INTEGRATION_TIMEOUT_SECONDS)
            raise _GatewayError("INTEGRATION_TIMEOUT")
        if "error" in outcome:
            exc = outcome["error"]
            trace = "".join(traceback.format_exception(exc))
            log.error("%s failed (API Gateway answers 502):\n%s", function_name, trace)
            raise _GatewayError("INTEGRATION_FAILURE")
        return outcome.get("result")

    def _proxy_response(self, function_name: str, result: Any, request_id: str) -> HttpResponse:
        try:
            status = int(result["statusCode"])
            headers = result.get("headers") or {}
            multi = result.get("multiValueHeaders") or {}
            body = result.get("body")
            if body is not None and not isinstance(body, str):
                raise TypeError("body must be a string")
            raw = base64.b64decode(body) if result.get("isBase64Encoded") else (body or "").encode()
            if not isinstance(headers, dict) or not isinstance(multi, dict):
                raise TypeError("headers must be objects")
        except (KeyError, TypeError, ValueError) as exc:
            log.error("%s: malformed Lambda proxy response (%s)", function_name, exc)
            raise _GatewayError("INTEGRATION_FAILURE") from None
        out: list[tuple[str, str]] = []
        multi_keys = {k.lower() for k in multi}
        for key, values in multi.items():
            out.extend((str(key), str(v)) for v in values)
        out.extend((str(k), str(v)) for k, v in headers.items() if k.lower() not in multi_keys)
        names = {k.lower() for k, _ in out}
        if "content-type" not in names:
            out.append(("Content-Type", "application/json"))
        out.append(("x-amzn-RequestId", request_id))
        return HttpResponse(status, out, raw)

    def gateway_response(
        self, response_type: str, request_id: str, message: str | None = None
    ) -> HttpResponse:
        status, error_type, default_message = _GATEWAY_DEFAULTS[response_type]
        message = message if message is not None else default_message
        custom = self._custom_gateway_response(response_type, status)
        if custom is not None and custom.status_code is not None:
            status = custom.status_code
        if custom is not None and custom.body is not None:
            body = (
                custom.body.replace("$context.error.messageString", json.dumps(message))
                .replace("$context.error.message", message or "")
                .replace("$context.requestId", request_id)
            )
        else:
            body = json.dumps({"message": message})
        headers = [
            ("Content-Type", "application/json"),
            ("x-amzn-RequestId", request_id),
            ("x-amzn-ErrorType", error_type),
        ]
        if custom is not None:
            headers.extend(custom.headers.items())
        return HttpResponse(status, headers, body.encode())

    def _custom_gateway_response(self, response_type: str, status: int) -> GatewayResponse | None:
        responses = self.api.gateway_responses
        if response_type in responses:
            return responses[response_type]
        return responses.get("DEFAULT_4XX" if status < 500 else "DEFAULT_5XX")

    # -------------------------------------------------------------- the event

    def build_event(
        self,
        route: Route,
        api: ApiInfo,
        request: HttpRequest,
        path: str,
        query: str,
        path_params: dict[str, str],
        authorizer_context: dict[str, Any] | None,
        request_id: str,
    ) -> dict[str, Any]:
        """The REST API (payload v1) proxy event, key for key as API Gateway sends it."""
        now = datetime.datetime.now(datetime.UTC)
        headers, multi_headers = _single_and_multi(self._headers_in(request, now))
        qs, multi_qs = _single_and_multi(_split_query(query))
        body, is_base64 = self._event_body(api, request)
        context = self._request_context(route, api, request, path, request_id, now)
        if authorizer_context is not None:
            context["authorizer"] = authorizer_context
        return {
            "resource": route.path,
            "path": path,
            "httpMethod": request.method,
            "headers": headers or None,
            "multiValueHeaders": multi_headers or None,
            "queryStringParameters": qs or None,
            "multiValueQueryStringParameters": multi_qs or None,
            "pathParameters": path_params or None,
            "stageVariables": None,
            "requestContext": context,
            "body": body,
            "isBase64Encoded": is_base64,
        }

    def _headers_in(self, request: HttpRequest, now: datetime.datetime) -> list[tuple[str, str]]:
        """The client's headers and what API Gateway adds (forwarding, trace id)."""
        headers = list(request.headers)
        forwarded = next((v for k, v in headers if k.lower() == "x-forwarded-for"), None)
        headers = [(k, v) for k, v in headers if k.lower() != "x-forwarded-for"]
        chain = f"{forwarded}, {request.client_ip}" if forwarded else request.client_ip
        headers.append(("X-Forwarded-For", chain))
        headers.append(("X-Forwarded-Proto", "http"))
        headers.append(("X-Forwarded-Port", str(self.port if self._server else 80)))
        trace = f"Root=1-{int(now.timestamp()):08x}-{uuid.uuid4().hex[:24]}"
        headers.append(("X-Amzn-Trace-Id", trace))
        return headers

    def _request_context(self, route: Route, api: ApiInfo, request: HttpRequest, path: str,
                         request_id: str, now: datetime.datetime) -> dict[str, Any]:
        d = self.deployment
        return {
            "resourceId": _stable_id(api.api_id, route.path),
            "resourcePath": route.path,
            "httpMethod": request.method,
            "extendedRequestId": base64.b32encode(uuid.uuid4().bytes).decode()[:16],
            "requestTime": now.strftime("%d/%b/%Y:%H:%M:%S +0000"),
            "path": f"/{api.stage}{path}",
            "accountId": d.account_id,
            "protocol": "HTTP/1.1",
            "stage": api.stage,
            "domainPrefix": api.api_id,
            "requestTimeEpoch": int(now.timestamp() * 1000),
            "requestId": request_id,
            "identity": _identity(request),
            "domainName": f"{api.api_id}.execute-api.{d.region}.amazonaws.com",
            "deploymentId": _stable_id(api.api_id, "deployment"),
            "apiId": api.api_id,
        }

    @staticmethod
    def _event_body(api: ApiInfo, request: HttpRequest) -> tuple[str | None, bool]:
        if not request.body:
            return None, False
        content_type = (
            next((v for k, v in request.headers if k.lower() == "content-type"), "")
            .split(";")[0]
            .strip()
            .lower()
        )
        binary = any(fnmatch.fnmatch(content_type, t.lower()) for t in api.binary_media_types)
        if not binary:
            try:
                return request.body.decode("utf-8"), False
            except UnicodeDecodeError:
                # API Gateway would mangle these bytes; base64 keeps them intact.
                binary = True
        return base64.b64encode(request.body).decode(), True


# ---------------------------------------------------------------- HTTP plumbing


class _Server(ThreadingHTTPServer):
    daemon_threads = True
    allow_reuse_address = True
    # listen() backlog: Python's default of 5 resets connections when a few dozen clients
    # connect at once (API Gateway never refuses a connection for that).
    request_queue_size = 1024
    front: ApiFront


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"  # keep-alive: clients reuse the connection
    server: _Server

    def setup(self) -> None:
        super().setup()
        # Headers and body leave in two writes: without this, Nagle and delayed ACKs add
        # 40 ms to every keep-alive round trip.
        self.connection.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)

    def version_string(self) -> str:
        return "mailfleet-local"

    def _serve(self) -> None:
        started = time.monotonic()
        front = self.server.front
        response = self._read_and_handle(front)
        self.send_response(response.status)
        for key, value in response.headers:
            if key.lower() not in ("content-length", "connection", "transfer-encoding"):
                self.send_header(key, value)
        self.send_header("Content-Length", str(len(response.body)))
        if self.close_connection:
            self.send_header("Connection", "close")
        self.end_headers()
        if self.command != "HEAD":
            self.wfile.write(response.body)
        if front._access_log:
            # Method, path, status and time only: headers and queries may hold tokens.
            took = (time.monotonic() - started) * 1000
            path = urlsplit(self.path).path
            sys.stderr.write(f"{self.command} {path} {response.status} {took:.0f}ms\n")

    def _read_and_handle(self, front: ApiFront) -> HttpResponse:
        request_id = str(uuid.uuid4())
        try:
            body = self._read_body()
        except _GatewayError as err:
            self.close_connection = True  # the rest of the body is never read
            return front.gateway_response(err.response_type, request_id)
        except (ValueError, ConnectionError):
            self.close_connection = True
            return HttpResponse(
                400, [("Content-Type", "application/json")], b'{"message":"Bad Request"}'
            )
        request = HttpRequest(
            method=self.command,
            target=self.path,
            headers=list(self.headers.items()),
            body=body,
            client_ip=self.client_address[0],
        )
        try:
            return front.handle(request)
        except Exception:
            log.exception("front failed on %s %s", self.command, urlsplit(self.path).path)
            return front.gateway_response("INTEGRATION_FAILURE", request_id)

    def _read_body(self) -> bytes:
        if "chunked" in self.headers.get("Transfer-Encoding", "").lower():
            chunks, total = [], 0
            while True:
                size = int(self.rfile.readline().split(b";")[0].strip() or b"0", 16)
                if size == 0:
                    while self.rfile.readline() not in (b"\r\n", b"\n", b""):
                        pass  # trailers
                    return b"".join(chunks)
                total += size
                if total > MAX_BODY_BYTES:
                    raise _GatewayError("REQUEST_TOO_LARGE")
                chunks.append(self.rfile.read(size))
                self.rfile.readline()
        length = int(self.headers.get("Content-Length") or 0)
        if length > MAX_BODY_BYTES:
            raise _GatewayError("REQUEST_TOO_LARGE")
        return self.rfile.read(length) if length > 0 else b""

    do_GET = do_POST = do_PUT = do_PATCH = do_DELETE = do_HEAD = do_OPTIONS = _serve

    def __getattr__(self, name: str) -> Any:
        # Any other method (TRACE, CONNECT, PROPFIND...) gets API Gateway's answer for a
        # method it has no route for, not http.server's HTML 501.
        if name.startswith("do_"):
            return self._serve
        raise AttributeError(name)

    def log_message(self, format: str, *args: Any) -> None:
        pass  # http.server's own lines carry the query string: see _serve's log line
