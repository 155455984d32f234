"""The audit trail: events written independently, each with the change it records.

Writers never wait on each other: an event's place (`seq`) comes from the writer's clock
in microseconds plus three random digits, not from a counter, and its `hash` covers only
its own content. What makes the trail tamper-evident is the sealer
(store/audit_digests.py): it signs digests that list every event of a period and chain
to each other. See docs/audit.md.

`AuditLog.record(change, ..., actor=..., action=...)` is THE way to make a change: the
change's DynamoDB write(s) and the event go in one TransactWriteItems, so either both
happen or neither does.
"""

from __future__ import annotations

import datetime
import hashlib
import json
import random
import secrets
import time
import uuid
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

from boto3.dynamodb.conditions import Attr, Key
from botocore.exceptions import ClientError

from mailfleet import aws
from mailfleet.config import Tables
from mailfleet.models.audit import AuditEvent
from mailfleet.redact import redact
from mailfleet.store.base import BadPageToken, decode_page, encode_page, from_dynamo, to_dynamo

CHAIN = "audit"  # the partition of the events (digests have their own, see audit_digests)
GENESIS = "0" * 64
# Events are no longer linked to each other (that link was the global lock); the field
# stays in the API with this value. The digests carry the chain.
UNCHAINED = GENESIS
# seq = microseconds since the epoch x 1000 + 3 random digits (collisions are retried).
SEQ_PER_SECOND = 1_000_000_000
_HASHED = (
    "event_id",
    "seq",
    "at",
    "actor",
    "source_ip",
    "action",
    "target",
    "params",
    "outcome",
    "job_id",
    "cutover_id",
    "request_id",
    "prev_hash",
)
_ATTEMPTS = 8
_MAX_CHANGES = 99  # DynamoDB takes 100 actions per transaction; one is the event


def event_hash(event: dict[str, Any]) -> str:
    body = {k: event.get(k) for k in _HASHED}
    canonical = json.dumps(body, sort_keys=True, separators=(",", ":"), default=str)
    return hashlib.sha256(canonical.encode()).hexdigest()


def stamp() -> tuple[int, str]:
    """A fresh (seq, at): both from one clock reading, so seq order is time order."""
    micros = time.time_ns() // 1000
    at = _EPOCH + datetime.timedelta(microseconds=micros)
    return micros * 1000 + secrets.randbelow(1000), at.strftime("%Y-%m-%dT%H:%M:%S.%fZ")


def seq_at(instant: str) -> int:
    """The first seq at or after an ISO 8601 UTC time (the API's since/until)."""
    parsed = datetime.datetime.fromisoformat(instant.replace("Z", "+00:00"))
    if parsed.tzinfo is None:
        parsed = parsed.replace(tzinfo=datetime.UTC)
    delta = parsed - _EPOCH
    micros = (delta.days * 86400 + delta.seconds) * 1_000_000 + delta.microseconds
    return max(micros * 1000, 0)  # no event is older than 1970


def time_of(seq: int) -> str:
    """The UTC time a seq stands for (events written before seqs were times map to 1970)."""
    at = _EPOCH + datetime.timedelta(microseconds=seq // 1000)
    return at.strftime("%Y-%m-%dT%H:%M:%S.%fZ")


_EPOCH = datetime.datetime(1970, 1, 1, tzinfo=datetime.UTC)


@dataclass(frozen=True)
class Change:
    """One DynamoDB write that must land together with its audit event (or not at all).
    `table` is a table name; values are plain Python (floats are fine)."""

    action: str  # Put | Update | Delete | ConditionCheck (TransactWriteItems' own words)
    table: str
    request: dict[str, Any] = field(default_factory=dict)

    @classmethod
    def put(cls, table: str, item: dict[str, Any], *, condition: str | None = None,
            names: dict[str, str] | None = None,
            values: dict[str, Any] | None = None) -> Change:
        return cls("Put", table, _expressions({"Item": item}, condition, names, values))

    @classmethod
    def update(cls, table: str, key: dict[str, Any], expression: str, *,
               condition: str | None = None, names: dict[str, str] | None = None,
               values: dict[str, Any] | None = None) -> Change:
        request = {"Key": key, "UpdateExpression": expression}
        return cls("Update", table, _expressions(request, condition, names, values))

    @classmethod
    def delete(cls, table: str, key: dict[str, Any], *, condition: str | None = None,
               names: dict[str, str] | None = None,
               values: dict[str, Any] | None = None) -> Change:
        return cls("Delete", table, _expressions({"Key": key}, condition, names, values))

    @classmethod
    def check(cls, table: str, key: dict[str, Any], condition: str, *,
              names: dict[str, str] | None = None,
              values: dict[str, Any] | None = None) -> Change:
        """Write nothing, but only if `condition` holds on this item."""
        return cls("ConditionCheck", table, _expressions({"Key": key}, condition, names, values))

    def transact_item(self) -> dict[str, Any]:
        return {self.action: dict(to_dynamo(self.request), TableName=self.table)}


def _expressions(request: dict[str, Any], condition: str | None,
                 names: dict[str, str] | None, values: dict[str, Any] | None) -> dict[str, Any]:
    if condition:
        request["ConditionExpression"] = condition
    if names:
        request["ExpressionAttributeNames"] = names
    if values:
        request["ExpressionAttributeValues"] = values
    return request


_UNIQUE = "attribute_not_exists(seq)"  # an event never overwrites another


def _fields(*, actor: str, action: str, outcome: str, target: str | None = None,
            params: dict[str, Any] | None = None, source_ip: str | None = None,
            job_id: str | None = None, cutover_id: str | None = None,
            request_id: str | None = None) -> dict[str, Any]:
    return {
        "event_id": uuid.uuid4().hex,
        "actor": actor,
        "source_ip": source_ip,
        "action": action,
        "target": target,
        "params": redact(params) if params else None,
        "outcome": outcome,
        "job_id": job_id,
        "cutover_id": cutover_id,
        "request_id": request_id,
    }


def _stamped(fields: dict[str, Any]) -> tuple[dict[str, Any], dict[str, Any]]:
    """The event with a fresh seq/at and its hash, and the item to put."""
    seq, at = stamp()
    event = dict(fields, seq=seq, at=at, prev_hash=UNCHAINED)
    # Hash the event as DynamoDB will give it back (1.0 comes back as 1).
    event = from_dynamo(to_dynamo(event))
    event["hash"] = event_hash(event)
    item = to_dynamo(dict({k: v for k, v in event.items() if v is not None}, chain=CHAIN))
    return event, item


class ChangeRefused(Exception):
    """A change's condition did not hold: nothing was written, no event either."""

    def __init__(self, index: int, change: Change) -> None:
        super().__init__(f"{change.action} on {change.table} refused by its condition")
        self.index = index
        self.change = change


class AuditNotWritten(Exception):
    """The event (and so its change) could not be written; nothing was."""


class AuditLog:
    def __init__(self, table_name: str | None = None) -> None:
        self._table = aws.table(table_name or Tables().audit_table)

    @property
    def table_name(self) -> str:
        return str(self._table.name)

    def record(
        self,
        *changes: Change,
        actor: str,
        action: str,
        outcome: str,
        target: str | None = None,
        params: dict[str, Any] | None = None,
        source_ip: str | None = None,
        job_id: str | None = None,
        cutover_id: str | None = None,
        request_id: str | None = None,
    ) -> AuditEvent:
        """Write `changes` and their event in one transaction: both or neither.
        Raises ChangeRefused when a change's condition fails (nothing written)."""
        if len(changes) > _MAX_CHANGES:
            raise ValueError(f"at most {_MAX_CHANGES} changes go with one audit event")
        fields = _fields(actor=actor, action=action, outcome=outcome, target=target,
                         params=params, source_ip=source_ip, job_id=job_id,
                         cutover_id=cutover_id, request_id=request_id)
        for attempt in range(_ATTEMPTS):
            # A fresh stamp each attempt: a retried event is never older than its write
            # by more than one request (what the sealer's grace relies on).
            event, item = _stamped(fields)
            try:
                self._write(changes, item)
            except ClientError as exc:
                if not self._retryable(exc, changes):
                    raise
                time.sleep(random.uniform(0, 0.005 * (attempt + 1)))
                continue
            return AuditEvent.model_validate(event)
        raise AuditNotWritten(f"audit event for {action} not written after {_ATTEMPTS} tries")

    def record_each(
        self, entries: Sequence[tuple[Sequence[Change], dict[str, Any]]]
    ) -> list[AuditEvent | ChangeRefused]:
        """Many changes, each with its own event (e.g. one per host of an import): every
        entry is all-or-nothing on its own, as with record(), but entries share
        transactions of up to 100 actions. Returns, per entry, its event or the
        ChangeRefused that kept it out (nothing of that entry was written)."""
        results: list[AuditEvent | ChangeRefused | None] = [None] * len(entries)
        pending = list(range(len(entries)))
        prepared = [(tuple(changes), _fields(**event)) for changes, event in entries]
        for _ in range(len(entries) + _ATTEMPTS):
            if not pending:
                break
            batch, size = [], 0
            for index in pending:
                size += len(prepared[index][0]) + 1
                if batch and size > _MAX_CHANGES + 1:
                    break
                batch.append(index)
            stamped = {i: _stamped(prepared[i][1]) for i in batch}
            actions = [a for i in batch for a in self._actions(prepared[i][0], stamped[i][1])]
            try:
                self._table.meta.client.transact_write_items(TransactItems=actions)
            except ClientError as exc:
                if exc.response["Error"]["Code"] != "TransactionCanceledException":
                    # e.g. two entries on one item: those entries go one by one
                    for i in batch:
                        results[i] = self._one(prepared[i])
                    pending = [i for i in pending if i not in batch]
                    continue
                reasons = [r.get("Code") for r in exc.response.get("CancellationReasons") or []]
                offset = 0
                for i in batch:
                    changes = prepared[i][0]
                    for n, change in enumerate(changes):
                        if reasons[offset + n:offset + n + 1] == ["ConditionalCheckFailed"]:
                            results[i] = ChangeRefused(n, change)
                    offset += len(changes) + 1
                pending = [i for i in pending if results[i] is None]
                time.sleep(random.uniform(0, 0.005))
                continue
            for i in batch:
                results[i] = AuditEvent.model_validate(stamped[i][0])
            pending = [i for i in pending if i not in batch]
        if pending:
            raise AuditNotWritten(f"{len(pending)} audit events not written")
        return [r for r in results if r is not None]

    def _one(self, entry: tuple[tuple[Change, ...], dict[str, Any]]
             ) -> AuditEvent | ChangeRefused:
        changes, fields = entry
        try:
            return self.record(*changes, **{k: v for k, v in fields.items()
                                            if k != "event_id"})
        except ChangeRefused as refused:
            return refused

    def append(self, **fields: Any) -> AuditEvent:
        """An event with no DynamoDB change of its own (a refusal, an outcome, a call to
        another service made just before)."""
        return self.record(**fields)

    def _write(self, changes: tuple[Change, ...], item: dict[str, Any]) -> None:
        if not changes:  # one item: PutItem is as atomic, and half the cost
            self._table.put_item(Item=item, ConditionExpression=_UNIQUE)
            return
        # botocore fills ClientRequestToken and reuses it on its own retries: a retry of
        # a transaction that did commit is not applied twice.
        self._table.meta.client.transact_write_items(
            TransactItems=self._actions(changes, item))

    def _actions(self, changes: Sequence[Change], item: dict[str, Any]) -> list[dict[str, Any]]:
        event = {"Put": {"TableName": self.table_name, "Item": item,
                         "ConditionExpression": _UNIQUE}}
        return [c.transact_item() for c in changes] + [event]

    @staticmethod
    def _retryable(exc: ClientError, changes: tuple[Change, ...]) -> bool:
        code = exc.response["Error"]["Code"]
        if code == "ConditionalCheckFailedException":
            return True  # (no changes) another event took this seq: a new stamp
        if code != "TransactionCanceledException":
            return False
        reasons = [r.get("Code") for r in exc.response.get("CancellationReasons") or []]
        for index, change in enumerate(changes):
            if index < len(reasons) and reasons[index] == "ConditionalCheckFailed":
                raise ChangeRefused(index, change) from None
        # the event's seq was taken, or another transaction held an item: try again
        return any(r in ("ConditionalCheckFailed", "TransactionConflict") for r in reasons)

    # ------------------------------------------------------------------ reads
    def query(
        self,
        *,
        since: str | None = None,
        until: str | None = None,
        actor: str | None = None,
        host: str | None = None,
        action: str | None = None,
        job_id: str | None = None,
        cutover_id: str | None = None,
        limit: int = 100,
        next_token: str | None = None,
        newest_first: bool = True,
    ) -> tuple[list[AuditEvent], str | None]:
        filters = None
        for name, value in (
            ("actor", actor),
            ("target", host),
            ("action", action),
            ("job_id", job_id),
            ("cutover_id", cutover_id),
        ):
            if value:
                part = Attr(name).eq(value)
                filters = part if filters is None else filters & part
        kwargs: dict[str, Any] = {"ScanIndexForward": not newest_first}
        if since or until:
            kwargs["IndexName"] = "by_time"
            cond = Key("chain").eq(CHAIN)
            if since and until:
                cond = cond & Key("at").between(since, until)
            elif since:
                cond = cond & Key("at").gte(since)
            else:
                cond = cond & Key("at").lte(until)
            kwargs["KeyConditionExpression"] = cond
        else:
            kwargs["KeyConditionExpression"] = Key("chain").eq(CHAIN)
            kwargs["ConsistentRead"] = True
        if filters is not None:
            kwargs["FilterExpression"] = filters
        start = decode_page(next_token)
        if start is not None and (start.get("chain") != CHAIN
                                  or not isinstance(from_dynamo(start.get("seq")), int)):
            raise BadPageToken("next_token is not one this API gave out")
        events: list[AuditEvent] = []
        while True:
            if start:
                kwargs["ExclusiveStartKey"] = start
            kwargs["Limit"] = max(limit - len(events), 1) * (4 if filters is not None else 1)
            page = self._table.query(**kwargs)
            for raw in page.get("Items", []):
                item = from_dynamo(raw)
                events.append(AuditEvent.model_validate(item))
                if len(events) >= limit:
                    last = {"chain": CHAIN, "seq": item["seq"]}
                    if "IndexName" in kwargs:
                        last["at"] = item["at"]
                    return events, encode_page(last)
            start = page.get("LastEvaluatedKey")
            if not start:
                return events, None

    def events_between(self, start_seq: int, end_seq: int, *, limit: int | None = None
                       ) -> list[dict[str, Any]]:
        """Events with start_seq <= seq < end_seq, oldest first (consistent reads)."""
        kwargs: dict[str, Any] = {
            "KeyConditionExpression": Key("chain").eq(CHAIN)
            & Key("seq").between(start_seq, max(start_seq, end_seq - 1)),
            "ConsistentRead": True,
            "ScanIndexForward": True,
        }
        found: list[dict[str, Any]] = []
        while True:
            if limit is not None:
                kwargs["Limit"] = limit - len(found)
            page = self._table.query(**kwargs)
            found.extend(from_dynamo(i) for i in page.get("Items", []))
            if "LastEvaluatedKey" not in page or (limit is not None and len(found) >= limit):
                return [e for e in found if e["seq"] < end_seq]
            kwargs["ExclusiveStartKey"] = page["LastEvaluatedKey"]
