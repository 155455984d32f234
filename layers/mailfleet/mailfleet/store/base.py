"""Helpers shared by the stores: page tokens and DynamoDB number conversion."""

from __future__ import annotations

import base64
import json
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from decimal import Decimal
from queue import SimpleQueue
from typing import Any

from boto3.dynamodb.types import TypeSerializer

from mailfleet import aws


class BadPageToken(ValueError):
    pass


def encode_page(key: dict[str, Any] | None) -> str | None:
    if not key:
        return None
    raw = json.dumps(from_dynamo(key), separators=(",", ":"), sort_keys=True).encode()
    return base64.urlsafe_b64encode(raw).decode().rstrip("=")


def decode_state(token: str) -> Any:
    """A token's JSON as given (a caller that keeps more than a table key in its token,
    e.g. audit verification's running state, checks its shape itself)."""
    try:
        padded = token + "=" * (-len(token) % 4)
        return json.loads(base64.urlsafe_b64decode(padded.encode()))
    except (ValueError, UnicodeDecodeError) as exc:
        raise BadPageToken("next_token is not one this API gave out") from exc


def decode_page(token: str | None) -> dict[str, Any] | None:
    if not token:
        return None
    value = decode_state(token)
    # Our tokens are a table key: a few attributes of plain strings and numbers.
    if (
        not isinstance(value, dict)
        or not 0 < len(value) <= 4
        or not all(
            isinstance(v, str | int | float) and not isinstance(v, bool) and len(str(v)) <= 8192
            for v in value.values()
        )
    ):
        raise BadPageToken("next_token is not one this API gave out")
    return to_dynamo(value)


def from_dynamo(value: Any) -> Any:
    """DynamoDB's Decimals back to int/float, recursively."""
    if isinstance(value, Decimal):
        return int(value) if value == value.to_integral_value() else float(value)
    if isinstance(value, dict):
        return {k: from_dynamo(v) for k, v in value.items()}
    if isinstance(value, list):
        return [from_dynamo(v) for v in value]
    if isinstance(value, set):
        return sorted(from_dynamo(v) for v in value)
    return value


def to_dynamo(value: Any) -> Any:
    """floats to Decimal (DynamoDB refuses floats), recursively; empty strings kept."""
    if isinstance(value, float):
        return Decimal(str(value))
    if isinstance(value, dict):
        return {k: to_dynamo(v) for k, v in value.items()}
    if isinstance(value, list):
        return [to_dynamo(v) for v in value]
    return value


_to_attribute = TypeSerializer().serialize


def batch_put(table: Any, items: list[dict[str, Any]],
              common: dict[str, Any] | None = None) -> int:
    """Put items in BatchWriteItem requests of 25, retrying what DynamoDB leaves
    unprocessed with back-off; returns the number of requests sent. `common`: attributes
    every item gets (a job's key and expiry on its results), converted once.

    The items are turned into DynamoDB attribute values here and sent on a client that
    skips the resource layer's transform and botocore's validation: together ~60% of the
    CPU of recording a job's results (the results are ours, the shape is fixed)."""
    client = aws.wire_client("dynamodb")
    shared = {k: _to_attribute(v) for k, v in to_dynamo(common or {}).items()}
    requests = 0
    for start in range(0, len(items), 25):
        pending = {
            table.name: [
                {"PutRequest": {"Item": {
                    **{k: _to_attribute(v) for k, v in to_dynamo(i).items()}, **shared}}}
                for i in items[start : start + 25]
            ]
        }
        delay = 0.05
        while pending:
            requests += 1
            answer = client.batch_write_item(RequestItems=pending)
            pending = answer.get("UnprocessedItems") or {}
            if pending:
                time.sleep(delay)
                delay = min(delay * 2, 2.0)
    return requests


def batch_get(table: Any, keys: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Consistent reads of many keys, 100 per BatchGetItem, unprocessed keys retried."""
    client = table.meta.client
    found: list[dict[str, Any]] = []
    for start in range(0, len(keys), 100):
        request: dict[str, Any] = {
            table.name: {"Keys": keys[start : start + 100], "ConsistentRead": True}
        }
        delay = 0.05
        while request:
            answer = client.batch_get_item(RequestItems=request)
            found.extend(from_dynamo(i) for i in answer["Responses"].get(table.name, []))
            request = answer.get("UnprocessedKeys") or {}
            if request:
                time.sleep(delay)
                delay = min(delay * 2, 1.0)
    return found


def read_ahead[Chunk, Read](chunks: Sequence[Chunk], read: Callable[[Chunk], Read]
                            ) -> Iterator[Read]:
    """`read(chunk)` for each chunk, yielded in order, the reads done one after another in
    a background thread as fast as they go: the caller works on the first chunk's items
    while the next ones are read (a job's first hosts start after one read, not twenty).
    A failed read is raised where its chunk would have come; a caller that stops early
    stops the reads after the one under way."""
    if len(chunks) <= 1:
        yield from (read(chunk) for chunk in chunks)
        return
    answers: SimpleQueue[tuple[bool, Any]] = SimpleQueue()
    stop = threading.Event()

    def reader() -> None:
        for chunk in chunks:
            if stop.is_set():
                return
            try:
                answers.put((True, read(chunk)))
            except Exception as exc:  # raised in the caller's thread, below
                answers.put((False, exc))
                return

    threading.Thread(target=reader, name="read-ahead", daemon=True).start()
    try:
        for _ in chunks:
            ok, value = answers.get()
            if not ok:
                raise value
            yield value
    finally:
        stop.set()


def query_page(
    table: Any,
    kwargs: dict[str, Any],
    *,
    limit: int | None,
    next_token: str | None,
    clean: Callable[[dict[str, Any]], dict[str, Any]],
) -> tuple[list[dict[str, Any]], str | None]:
    """One page of a Query (up to `limit` items, all when None) from `next_token` on,
    each item passed through `clean`; returns the items and the next page's token."""
    start = decode_page(next_token)
    out: list[dict[str, Any]] = []
    while True:
        if start:
            kwargs["ExclusiveStartKey"] = start
        if limit is not None:
            kwargs["Limit"] = limit - len(out)
        page = table.query(**kwargs)
        out.extend(clean(i) for i in page.get("Items", []))
        start = page.get("LastEvaluatedKey")
        if not start or (limit is not None and len(out) >= limit):
            return out, encode_page(start)


def newest_first(
    table: Any, *, list_pk: str, status: str | None, limit: int, next_token: str | None
) -> tuple[list[dict[str, Any]], str | None]:
    """A page of a table's top-level items (jobs, cutovers), newest first, by the sparse
    `by_created` index or, given a status, the `by_status` index."""
    from boto3.dynamodb.conditions import Key

    if status:
        kwargs: dict[str, Any] = {
            "IndexName": "by_status",
            "KeyConditionExpression": Key("status_pk").eq(status),
        }
    else:
        kwargs = {"IndexName": "by_created", "KeyConditionExpression": Key("list_pk").eq(list_pk)}
    kwargs.update(ScanIndexForward=False, Limit=limit)
    start = decode_page(next_token)
    if start:
        kwargs["ExclusiveStartKey"] = start
    page = table.query(**kwargs)
    return [from_dynamo(i) for i in page.get("Items", [])], encode_page(
        page.get("LastEvaluatedKey")
    )
