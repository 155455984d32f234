"""Small shared types."""

from __future__ import annotations

import datetime
import re
from typing import Annotated

from pydantic import AfterValidator, BaseModel, BeforeValidator, ConfigDict, WithJsonSchema


class Model(BaseModel):
    """Every model crossing a boundary: its validator and schema are built on first use,
    not at import, so a cold start pays only for the models its request needs."""

    model_config = ConfigDict(defer_build=True)


class Liveness(Model):
    status: str


def now_iso() -> str:
    """UTC timestamps with microseconds: sortable as strings, as the tables need."""
    return datetime.datetime.now(datetime.UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


# A count is at most this (hosts, accounts, errors): larger numbers are typos, and DynamoDB
# refuses numbers of more than 38 digits.
MAX_COUNT = 9_999_999
_LIMIT = re.compile(r"^\s*([0-9]+(?:\.[0-9]+)?)\s*%\s*$")
# The same rule as JSON schema (ECMA regex), so generated clients and fuzzers agree with it.
COUNT_OR_PERCENT_SCHEMA = {
    "anyOf": [
        {"type": "integer", "minimum": 0, "maximum": MAX_COUNT},
        {
            "type": "string",
            "pattern": r"^\s*([0-9]{1,7}|(100(\.0+)?|[1-9][0-9]?(\.[0-9]+)?|0\.[0-9]*[1-9][0-9]*)"
            r"\s*%)\s*$",
        },
    ],
    "description": 'a count, or a percentage like "10%"',
}


def _count_or_percent(value: object) -> int | str:
    if isinstance(value, bool):
        raise ValueError('must be a whole number or a percentage like "10%"')
    if isinstance(value, int):
        if value < 0:
            raise ValueError("must not be negative")
        if value > MAX_COUNT:
            raise ValueError(f"must be at most {MAX_COUNT}")
        return value
    if isinstance(value, str):
        if re.fullmatch(r"\s*[0-9]{1,7}\s*", value):
            return int(value)
        match = _LIMIT.match(value)
        if match and 0 < float(match.group(1)) <= 100:
            return f"{float(match.group(1)):g}%"
    raise ValueError('must be a whole number or a percentage like "10%" (0-100%)')


CountOrPercent = Annotated[
    int | str, BeforeValidator(_count_or_percent), WithJsonSchema(COUNT_OR_PERCENT_SCHEMA)
]


def _not_zero(value: int | str) -> int | str:
    if value == 0:
        raise ValueError("must be at least 1 (or a percentage)")
    return value


# A concurrency: as CountOrPercent, but never 0.
CONCURRENCY_SCHEMA = {
    "anyOf": [
        {"type": "integer", "minimum": 1, "maximum": MAX_COUNT},
        {
            "type": "string",
            "pattern": r"^\s*(0{0,6}[1-9][0-9]{0,6}|(100(\.0+)?|[1-9][0-9]?(\.[0-9]+)?|"
            r"0\.[0-9]*[1-9][0-9]*)\s*%)\s*$",
        },
    ],
    "description": 'a count of at least 1, or a percentage like "10%"',
}
Concurrency = Annotated[
    int | str,
    BeforeValidator(_count_or_percent),
    AfterValidator(_not_zero),
    WithJsonSchema(CONCURRENCY_SCHEMA),
]


def resolve_limit(limit: int | str | None, total: int, *, minimum: int = 0) -> int | None:
    """A count or "N%" of `total` as a count (percentages round up, at least `minimum`)."""
    if limit is None:
        return None
    if isinstance(limit, int):
        return max(limit, minimum)
    pct = float(limit.rstrip("%"))
    return max(minimum, -(-int(total * pct * 100) // 10000))
