"""Small shared types."""

from __future__ import annotations

import datetime
import re
from typing import Annotated

from pydantic import BaseModel, BeforeValidator, ConfigDict


class Model(BaseModel):
    """Every model crossing a boundary: its validator and schema are built on first use,
    not at import, so a cold start pays only for the models its request needs."""

    model_config = ConfigDict(defer_build=True)


def now_iso() -> str:
    """UTC timestamps with microseconds: sortable as strings, as the tables need."""
    return datetime.datetime.now(datetime.UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


_LIMIT = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*%\s*$")


def _count_or_percent(value: object) -> int | str:
    if isinstance(value, bool):
        raise ValueError('must be a whole number or a percentage like "10%"')
    if isinstance(value, int):
        if value < 0:
            raise ValueError("must not be negative")
        return value
    if isinstance(value, str):
        if value.strip().isdigit():
            return int(value)
        match = _LIMIT.match(value)
        if match and 0 < float(match.group(1)) <= 100:
            return f"{float(match.group(1)):g}%"
    raise ValueError('must be a whole number or a percentage like "10%" (0-100%)')


CountOrPercent = Annotated[int | str, BeforeValidator(_count_or_percent)]


def resolve_limit(limit: int | str | None, total: int, *, minimum: int = 0) -> int | None:
    """A count or "N%" of `total` as a count (percentages round up, at least `minimum`)."""
    if limit is None:
        return None
    if isinstance(limit, int):
        return max(limit, minimum)
    pct = float(limit.rstrip("%"))
    return max(minimum, -(-int(total * pct * 100) // 10000))
