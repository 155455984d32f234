"""boto3 clients, made lazily (clients made before moto starts would not be mocked) and
reused for the life of the Lambda container."""

from __future__ import annotations

import functools
import os
import threading
from typing import Any

import boto3
from botocore.config import Config


# Functions behind API Gateway (29 s, cold start included) set AWS_CALL_TIMEOUT_SECONDS
# so that one slow AWS call cannot outlast the request; the others wait longer.
def _call_limits() -> tuple[int, float, float]:
    """(attempts, connect timeout, read timeout) for this function."""
    read = float(os.environ.get("AWS_CALL_TIMEOUT_SECONDS") or 20)
    return (5, 5.0, read) if read >= 20 else (2, 1.0, read)


@functools.cache
def _config() -> Config:
    attempts, connect, read = _call_limits()
    return Config(retries={"mode": "standard", "max_attempts": attempts},
                  connect_timeout=connect, read_timeout=read, max_pool_connections=64)


def call_budget_seconds() -> float:
    """The longest one AWS call may take here, retries included; 0 when this function
    sets no AWS_CALL_TIMEOUT_SECONDS (it has no deadline of its own to keep)."""
    if not os.environ.get("AWS_CALL_TIMEOUT_SECONDS"):
        return 0.0
    attempts, connect, read = _call_limits()
    return attempts * (connect + read)


# One session for every client: each new session has a loader of its own, which lists
# botocore's data directories and parses the service and endpoint models again (~0.1-0.3 s
# a client, paid by a container's first job). Sessions are not thread-safe: one client
# is made at a time.
_session_lock = threading.Lock()


@functools.cache
def _session() -> boto3.session.Session:
    return boto3.session.Session()


@functools.cache
def client(service: str) -> Any:
    with _session_lock:
        return _session().client(service, config=_config())


@functools.cache
def wire_client(service: str) -> Any:
    """A client for requests this code builds in the service's own wire format (DynamoDB
    attribute values), without botocore's parameter validation: for a batch of 25 job
    results, validating and transforming the request cost as much CPU as the fan-out of
    those 25 hosts (issue 13's profile). The service still refuses a malformed request."""
    with _session_lock:
        return _session().client(service, config=_config().merge(
            Config(parameter_validation=False)))


@functools.cache
def table(name: str) -> Any:
    with _session_lock:
        return _session().resource("dynamodb", config=_config()).Table(name)


def reset() -> None:
    """Forget cached clients (tests that switch endpoints)."""
    client.cache_clear()
    wire_client.cache_clear()
    table.cache_clear()
    _config.cache_clear()
    _session.cache_clear()
