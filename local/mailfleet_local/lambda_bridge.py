"""Run our real Lambda handlers in-process when moto is asked to invoke a function.

moto 5.2.5 (pinned exactly in requirements-dev.txt) with `lambda.use_docker: False` uses
`LambdaSimpleBackend`, whose `invoke` only echoes the payload. `install()` swaps that one
method for one that imports the function's handler from its code directory and calls it,
so an Invoke from boto3, from a handler or from Step Functions' interpreter runs our code.
No public hook exists for this: every moto internal touched here is in this module, and
tests/local/test_lambda_bridge.py pins the behaviour.
"""

from __future__ import annotations

import contextlib
import contextvars
import datetime
import importlib.util
import json
import logging
import os
import re
import sys
import threading
import time
import traceback
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from types import ModuleType, SimpleNamespace
from typing import Any

from mailfleet_local import powertools_threads

# Not under `mailfleet`: Powertools' Logger(service=mailfleet) owns that one and would
# stamp these lines with whichever function's keys it holds.
log = logging.getLogger("mailfleet-local.lambda")

_lock = threading.RLock()
_code_dirs: dict[str, Path] = {}  # function name -> its code directory (CodeUri)
_on_failure: dict[str, dict[str, Any]] = {}  # function name -> EventInvokeConfig OnFailure
_modules: dict[tuple[str, str, str], ModuleType] = {}  # (name, code dir, module) -> module
_async_threads: set[threading.Thread] = set()
_original_invoke: Callable[..., Any] | None = None

# The function whose handler runs in this context: the IAM tests attribute each AWS call
# to it (tests/iam_calls.py), as that function's role would sign it on AWS.
current_function: contextvars.ContextVar[str | None] = contextvars.ContextVar(
    "mailfleet_current_function", default=None
)


class FunctionError(Exception):
    """A failure the Lambda runtime itself reports (import error, bad handler, bad result)."""

    def __init__(self, error_type: str, message: str) -> None:
        super().__init__(message)
        self.error_type = error_type


class LambdaContext:
    """The context object the Python runtime passes (same attributes as awslambdaric's)."""

    def __init__(
        self,
        *,
        function_name: str,
        function_version: str,
        invoked_function_arn: str,
        memory_limit_in_mb: int,
        timeout_seconds: float,
    ) -> None:
        self.function_name = function_name
        self.function_version = function_version
        self.invoked_function_arn = invoked_function_arn
        # The real runtime reads it from the environment, so it is a string there too.
        self.memory_limit_in_mb = str(memory_limit_in_mb)
        self.aws_request_id = str(uuid.uuid4())
        self.log_group_name = f"/aws/lambda/{function_name}"
        today = datetime.datetime.now(datetime.UTC).strftime("%Y/%m/%d")
        self.log_stream_name = f"{today}/[{function_version}]{uuid.uuid4().hex}"
        self.identity = None
        self.client_context = None
        self._deadline = time.monotonic() + timeout_seconds

    def get_remaining_time_in_millis(self) -> int:
        return max(0, int((self._deadline - time.monotonic()) * 1000))


# ---------------------------------------------------------------- registry


def register_function(
    function_name: str, code_dir: str | Path, on_failure: dict[str, Any] | None = None
) -> None:
    """Tell the bridge where a function's code lives (its CodeUri directory), and where
    an async invocation that failed goes (EventInvokeConfig's OnFailure destination)."""
    with _lock:
        _code_dirs[function_name] = Path(code_dir).resolve()
        if on_failure:
            _on_failure[function_name] = on_failure
        else:
            _on_failure.pop(function_name, None)
        for key in [k for k in _modules if k[0] == function_name]:
            del _modules[key]


def cold_start() -> None:
    """Load every handler again on its next invocation, as new containers would after a
    change of the functions' configuration: each reads its settings once per cold start."""
    with _lock:
        _modules.clear()


def unregister_all() -> None:
    with _lock:
        _code_dirs.clear()
        _modules.clear()
        _on_failure.clear()


# ---------------------------------------------------------------- handler loading


def _load_handler(function_name: str, handler: str) -> Callable[[Any, Any], Any]:
    module_path, _, attr = handler.rpartition(".")
    if not module_path or not attr:
        raise FunctionError("Runtime.MalformedHandlerName", f"Bad handler '{handler}'")
    with _lock:
        code_dir = _code_dirs[function_name]
        key = (function_name, str(code_dir), module_path)
        module = _modules.get(key)
        if module is None:
            # Many requests run at once in this process: Powertools' per-request state
            # must be per thread (one container per request, as on Lambda).
            powertools_threads.install()
            module = _import_handler_module(function_name, code_dir, module_path)
            _modules[key] = module
    func = getattr(module, attr, None)
    if not callable(func):
        raise FunctionError(
            "Runtime.HandlerNotFound", f"Handler '{attr}' missing on module '{module_path}'"
        )
    return func


def _import_handler_module(function_name: str, code_dir: Path, module_path: str) -> ModuleType:
    rel = Path(*module_path.split("."))
    path = code_dir / rel.with_suffix(".py")
    if not path.is_file():
        path = code_dir / rel / "__init__.py"
    if not path.is_file():
        raise FunctionError(
            "Runtime.ImportModuleError",
            f"Unable to import module '{module_path}': No module named '{module_path}'",
        )
    # Every function's module is `app.py`: give each its own name in sys.modules.
    safe = re.sub(r"\W", "_", f"{function_name}__{module_path}")
    unique = f"_mailfleet_lambda_{safe}"
    spec = importlib.util.spec_from_file_location(unique, path)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    _evict_other_functions_modules(code_dir, module_path.split(".")[0])
    sys.modules[unique] = module
    sys.path.insert(0, str(code_dir))
    try:
        spec.loader.exec_module(module)
    except Exception as exc:
        sys.modules.pop(unique, None)
        raise FunctionError(
            "Runtime.ImportModuleError", f"Unable to import module '{module_path}': {exc}"
        ) from exc
    finally:
        # Only while importing: sibling modules must be imported at module level.
        sys.path.remove(str(code_dir))
    return module


def _evict_other_functions_modules(code_dir: Path, handler_module: str) -> None:
    """Let a function import its own sibling modules (say `routes.py`), not another's.

    On Lambda each function has its own process; here a sibling module stays in
    sys.modules under its plain name (pydantic and others look it up there), so two
    functions with a same-named sibling cannot both keep theirs: the later one wins.
    """
    siblings = {p.stem for p in code_dir.glob("*.py")}
    siblings |= {p.parent.name for p in code_dir.glob("*/__init__.py")}
    siblings.discard(handler_module)  # loaded under a name of its own
    others = [d for d in set(_code_dirs.values()) if d != code_dir]
    for name in list(sys.modules):
        if name.split(".")[0] not in siblings:
            continue
        file = Path(getattr(sys.modules[name], "__file__", None) or "/")
        owner = next((d for d in others if file.is_relative_to(d)), None)
        if owner is not None:
            log.warning(
                "module %s of %s gives way to %s's own: same-named modules in two "
                "function directories cannot share one process",
                name,
                owner,
                code_dir,
            )
            del sys.modules[name]


# ---------------------------------------------------------------- invocation


def lambda_backend(region: str | None = None, account_id: str | None = None) -> Any:
    """moto's Lambda backend in this process (the no-Docker one once LocalAws runs)."""
    from moto.awslambda.utils import get_backend
    from moto.core import DEFAULT_ACCOUNT_ID

    region = region or os.environ.get("AWS_DEFAULT_REGION") or "us-east-1"
    return get_backend(account_id or DEFAULT_ACCOUNT_ID, region)


def _context_for(fn: Any, qualifier: str | None) -> LambdaContext:
    arn = f"arn:aws:lambda:{fn.region}:{fn.account_id}:function:{fn.function_name}"
    if qualifier:
        arn = f"{arn}:{qualifier}"
    return LambdaContext(
        function_name=fn.function_name,
        function_version=str(fn.version),
        invoked_function_arn=arn,
        memory_limit_in_mb=int(fn.memory_size),
        timeout_seconds=float(fn.timeout),
    )


def _run(fn: Any, event: Any, context: LambdaContext) -> Any:
    token = current_function.set(fn.function_name)
    started = time.monotonic()
    try:
        # Importing runs the handler module's top level: its calls are the function's too.
        handler = _load_handler(fn.function_name, fn.handler)
        return handler(event, context)
    finally:
        current_function.reset(token)
        took = time.monotonic() - started
        # In-process we cannot kill a handler; say so when Lambda would have.
        if took > float(fn.timeout):
            log.warning(
                "%s ran %.1f s, over its %s s Timeout: Lambda would have stopped it",
                fn.function_name,
                took,
                fn.timeout,
            )


def _marshal(result: Any) -> bytes:
    try:
        return json.dumps(result).encode()
    except (TypeError, ValueError) as exc:
        raise FunctionError("Runtime.MarshalError", f"Unable to marshal response: {exc}") from exc


def error_payload(exc: BaseException, request_id: str | None = None) -> dict[str, Any]:
    """The body Lambda returns for an unhandled error (what Retry/Catch match on)."""
    error_type = exc.error_type if isinstance(exc, FunctionError) else type(exc).__name__
    stack = traceback.format_list(traceback.extract_tb(exc.__traceback__))
    body: dict[str, Any] = {"errorMessage": str(exc), "errorType": error_type}
    if request_id:
        body["requestId"] = request_id
    body["stackTrace"] = stack
    return body


def _decode_event(body: Any) -> Any:
    if body is None or body in (b"", ""):
        return {}
    if isinstance(body, bytes):
        body = body.decode()
    return json.loads(body)


def _start_async(fn: Any, event: Any, context: LambdaContext) -> None:
    def target() -> None:
        try:
            _marshal(_run(fn, event, context))
        except Exception as exc:
            # Lambda logs an async failure to CloudWatch; here, to our log.
            log.exception("async invocation of %s failed", fn.function_name)
            _deliver_failure(fn, event, context, exc)
        finally:
            with _lock:
                _async_threads.discard(threading.current_thread())

    thread = threading.Thread(target=target, name=f"lambda-event-{fn.function_name}", daemon=True)
    with _lock:
        _async_threads.add(thread)
    thread.start()


def _deliver_failure(fn: Any, event: Any, context: LambdaContext, exc: Exception) -> None:
    """The OnFailure destination's record, as Lambda sends it once every try failed
    (locally there is one try: the retries would only fail the same way)."""
    destination = _on_failure.get(fn.function_name)
    if not destination:
        return
    record = {
        "version": "1.0",
        "timestamp": datetime.datetime.now(datetime.UTC).isoformat(),
        "requestContext": {"requestId": context.aws_request_id,
                           "functionArn": context.invoked_function_arn,
                           "condition": "RetriesExhausted", "approximateInvokeCount": 1},
        "requestPayload": event,
        "responseContext": {"statusCode": 200, "executedVersion": "$LATEST",
                            "functionError": "Unhandled"},
        "responsePayload": error_payload(exc, context.aws_request_id),
    }
    target = str(destination.get("Destination", ""))
    try:
        if destination.get("Type") == "Lambda":
            target_fn = lambda_backend().get_function(target.split(":function:")[-1])
            _run(target_fn, record, _context_for(target_fn, None))
        elif destination.get("Type") == "SQS":
            import boto3

            sqs = boto3.session.Session().client("sqs")
            url = sqs.get_queue_url(QueueName=target.rsplit(":", 1)[-1])["QueueUrl"]
            sqs.send_message(QueueUrl=url, MessageBody=json.dumps(record, default=str))
    except Exception:
        log.exception("the OnFailure destination %s of %s failed", target, fn.function_name)


def _bridge_invoke(
    self: Any,
    function_name: str,
    qualifier: str | None,
    body: Any,
    headers: Any,
    response_headers: dict[str, str],
) -> bytes | None:
    fn = self.get_function(function_name, qualifier)
    if fn.function_name not in _code_dirs:
        log.warning("no code registered for %s: moto's echo answers", fn.function_name)
        assert _original_invoke is not None
        return _original_invoke(self, function_name, qualifier, body, headers, response_headers)
    invocation_type = (headers or {}).get("X-Amz-Invocation-Type") or "RequestResponse"
    if invocation_type == "DryRun":
        return b""
    context = _context_for(fn, qualifier)
    try:
        event = _decode_event(body)
        if invocation_type == "Event":
            _start_async(fn, event, context)
            return b""  # moto answers 202 with an empty body, as Lambda does
        return _marshal(_run(fn, event, context))
    except Exception as exc:
        response_headers["x-amz-function-error"] = "Unhandled"
        return json.dumps(error_payload(exc, context.aws_request_id)).encode()


def install() -> None:
    """Patch moto's no-Docker Lambda backend (idempotent)."""
    global _original_invoke
    from moto.awslambda_simple.models import LambdaSimpleBackend

    with _lock:
        if _original_invoke is None:
            _original_invoke = LambdaSimpleBackend.invoke
            LambdaSimpleBackend.invoke = _bridge_invoke  # type: ignore[method-assign]


def uninstall() -> None:
    global _original_invoke
    from moto.awslambda_simple.models import LambdaSimpleBackend

    with _lock:
        if _original_invoke is not None:
            LambdaSimpleBackend.invoke = _original_invoke  # type: ignore[method-assign]
            _original_invoke = None


def invoke_local(function_name: str, event: Any) -> Any:
    """Call a deployed function's handler directly (the API front's path).

    The function is looked up in moto (same process) for its handler, timeout and memory,
    and gets the same context object an Invoke would. The handler's exception propagates;
    the result is passed through JSON as Lambda would (a non-JSON result raises
    FunctionError("Runtime.MarshalError")).
    """
    fn = lambda_backend().get_function(function_name)
    result = _run(fn, event, _context_for(fn, None))
    return json.loads(_marshal(result))


def drain(timeout: float | None = None) -> bool:
    """Wait for async (Event) invocations still running; True if none is left."""
    deadline = None if timeout is None else time.monotonic() + timeout
    while True:
        with _lock:
            threads = list(_async_threads)
        if not threads:
            return True
        for thread in threads:
            remaining = None if deadline is None else max(0.0, deadline - time.monotonic())
            thread.join(remaining)
        if deadline is not None and time.monotonic() >= deadline:
            with _lock:
                return not any(t.is_alive() for t in _async_threads)


@contextlib.contextmanager
def instant_waits() -> Iterator[None]:
    """Make Step Functions' Wait states and Retry back-off return at once (tests only)."""
    from moto.stepfunctions.parser.asl.component.common.retry import retrier_decl
    from moto.stepfunctions.parser.asl.component.state.wait.wait_function import (
        wait_function,
    )

    saved_time = retrier_decl.time
    saved_wait = wait_function.WaitFunction._wait_interval
    # A stand-in `time` for that one module: patching time.sleep itself would hit everyone.
    retrier_decl.time = SimpleNamespace(sleep=lambda _s: None)  # type: ignore[assignment]
    wait_function.WaitFunction._wait_interval = lambda self, env, wait_seconds: None  # type: ignore[method-assign]
    try:
        yield
    finally:
        retrier_decl.time = saved_time
        wait_function.WaitFunction._wait_interval = saved_wait  # type: ignore[method-assign]
