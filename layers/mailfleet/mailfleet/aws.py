"""boto3 clients, made lazily (clients made before moto starts would not be mocked) and
reused for the life of the Lambda container."""

from __future__ import annotations

import functools
import os
from typing import Any

import boto3
from botocore.config import Config

# Functions behind API Gateway (29 s, cold start included) set AWS_CALL_TIMEOUT_SECONDS
# so that one slow AWS call cannot outlast the request; the others wait longer.
_CALL_TIMEOUT = float(os.environ.get("AWS_CALL_TIMEOUT_SECONDS") or 20)
_CONFIG = Config(
    retries={"mode": "standard", "max_attempts": 5 if _CALL_TIMEOUT >= 20 else 2},
    connect_timeout=5 if _CALL_TIMEOUT >= 20 else 1,
    read_timeout=_CALL_TIMEOUT,
    max_pool_connections=64,
)


def call_budget_seconds() -> float:
    """The longest one AWS call may take here, retries included."""
    attempts = _CONFIG.retries["max_attempts"] if _CONFIG.retries else 1
    return attempts * (_CONFIG.connect_timeout + _CONFIG.read_timeout)


@functools.cache
def client(service: str) -> Any:
    return boto3.session.Session().client(service, config=_CONFIG)


@functools.cache
def table(name: str) -> Any:
    return boto3.session.Session().resource("dynamodb", config=_CONFIG).Table(name)


def reset() -> None:
    """Forget cached clients (tests that switch endpoints)."""
    client.cache_clear()
    table.cache_clear()
