"""Keeps secrets out of audit events, logs, stored job parameters and job outputs."""

from __future__ import annotations

import functools
import re
from collections.abc import Iterable
from typing import Any

REDACTED = "***"
# Field names that carry secrets in any host kind's parameters or our own bodies
# (`ldap_bind_pw`, `relay_auth`, `new_password`, `api_key`, ...).
_SECRET_NAME = re.compile(
    r"(pass(word|wd|phrase)?|secret|token|api_?key|credential|private|newtoken|auth|hash"
    r"|(?<![a-z])pwd?(?![a-z]))",
    re.IGNORECASE,
)
# Names of references to secrets, not secrets: the audit must show which secret a host
# uses (and with whom it shares it), so these are never masked.
REFERENCE_NAMES = frozenset({"credentials_secret", "shares_credentials_with"})
# A credential shorter than this is not searched for inside longer strings (a 3-character
# "secret" would mask half of every output); equal values are masked whatever their length.
MIN_EMBEDDED_SECRET = 6


@functools.lru_cache(maxsize=4096)  # outputs repeat the same few keys on every row
def is_secret_name(name: str) -> bool:
    return name not in REFERENCE_NAMES and bool(_SECRET_NAME.search(name))


def redact(value: Any) -> Any:
    """A copy of `value` with every secret-looking field replaced by ***."""
    if isinstance(value, dict):
        return {
            k: (REDACTED if is_secret_name(str(k)) and v is not None else redact(v))
            for k, v in value.items()
        }
    if isinstance(value, list):
        return [redact(v) for v in value]
    return value


def mask_values(value: Any, secrets: Iterable[str]) -> Any:
    """A copy of `value` where any string equal to one of `secrets`, or containing one, is
    masked: the second net behind redaction by field name or schema."""
    if not value and isinstance(value, list | dict | str):
        return value  # most outputs of a fan-out (reload, kick, who on an idle host)
    known = sorted({s for s in secrets if s}, key=len, reverse=True)
    if not known:
        return value
    embedded = [re.escape(s) for s in known if len(s) >= MIN_EMBEDDED_SECRET]
    pattern = re.compile("|".join(embedded)) if embedded else None
    return _mask(value, set(known), pattern)


def _mask(value: Any, exact: set[str], pattern: re.Pattern[str] | None) -> Any:
    if isinstance(value, str):
        if value in exact:
            return REDACTED
        return pattern.sub(REDACTED, value) if pattern is not None else value
    if isinstance(value, dict):
        return {_mask(k, exact, pattern): _mask(v, exact, pattern) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_mask(v, exact, pattern) for v in value]
    return value
