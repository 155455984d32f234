"""What the template's own rules need, shared by the creators: SAM's Globals, stable
names, tags, environment values, and what is deliberately not run locally."""

from __future__ import annotations

import base64
import hashlib
import io
import zipfile
from collections.abc import Mapping
from typing import Any

from mailfleet_local.stack.intrinsics import as_text, is_intrinsic
from mailfleet_local.stack.model import DeployError

SERVERLESS_TRANSFORM = "AWS::Serverless-2016-10-31"
# Variables one function sets for itself that would hold for every function here, where
# they share one process: left out of the shared environment (listed with the reason).
PER_FUNCTION_ONLY = {
    "AWS_CALL_TIMEOUT_SECONDS": "short AWS call timeouts of the functions behind API "
    "Gateway; here every function would get them, against a busy embedded AWS",
}
# Types deliberately left out locally, each with the reason (listed in Deployment.skipped).
NOT_EMULATED = {
    "AWS::S3::BucketPolicy": "TLS-only bucket policy: the embedded AWS is plain HTTP on loopback",
    "AWS::Logs::LogGroup": "log retention: the functions log to this process's output",
    "AWS::SQS::QueuePolicy": "who may send to the queue: nothing is enforced locally",
    "AWS::IAM::ManagedPolicy": "IAM: every function runs under one local role here (the "
    "tests hold each function's calls to its template role instead)",
}
SHARED_ROLE = "__shared_role__"  # not in the template: the one role functions run as
TRIGGER_EVENTS = ("Schedule", "ScheduleV2", "EventBridgeRule", "CloudWatchEvent")


def suffix(stack: str, logical_id: str, length: int = 12) -> str:
    # CloudFormation adds a random suffix; a stable one keeps local names repeatable.
    digest = hashlib.sha256(f"{stack}/{logical_id}".encode()).digest()
    return base64.b32encode(digest).decode()[:length]


def dummy_zip() -> bytes:
    # moto stores the code; the bridge runs the real files from CodeUri instead.
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w") as zf:
        zf.writestr("LOCAL.txt", "mailfleet local stack: code runs from CodeUri in-process\n")
    return buf.getvalue()


def tags(tags: Any) -> dict[str, str]:
    if isinstance(tags, list):
        return {str(t["Key"]): str(t["Value"]) for t in tags}
    return {str(k): str(v) for k, v in (tags or {}).items()}


def merge_globals(global_props: Mapping[str, Any], own: Mapping[str, Any]) -> dict[str, Any]:
    """SAM's Globals rule: maps merge, lists add up (globals first), scalars: own wins."""
    merged = dict(global_props)
    for key, value in own.items():
        base = merged.get(key)
        if isinstance(base, dict) and isinstance(value, dict) and not is_intrinsic(value):
            merged[key] = merge_globals(base, value)
        elif isinstance(base, list) and isinstance(value, list):
            merged[key] = base + value
        else:
            merged[key] = value
    return merged


def env_value(value: Any) -> str:
    if isinstance(value, (dict, list)):
        raise DeployError(f"environment value left unresolved: {value!r}")
    return as_text(value)
