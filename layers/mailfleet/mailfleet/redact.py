"""Keeps secrets out of audit events, logs and stored job parameters."""

from __future__ import annotations

import re
from typing import Any

REDACTED = "***"
# Field names that carry secrets in any host kind's parameters or our own bodies.
_SECRET_NAME = re.compile(
    r"(pass(word)?|secret|token|api_?key|credential|private|newtoken|authorization|hash)",
    re.IGNORECASE,
)


def redact(value: Any) -> Any:
    """A copy of `value` with every secret-looking field replaced by ***."""
    if isinstance(value, dict):
        return {
            k: (REDACTED if _SECRET_NAME.search(str(k)) and v is not None else redact(v))
            for k, v in value.items()
        }
    if isinstance(value, list):
        return [redact(v) for v in value]
    return value
