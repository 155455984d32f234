"""The audit trail: append-only and hash-chained.

Events form one chain ordered by `seq`. Appending reads the head and writes seq+1 with a
condition that the slot is free, so concurrent writers can never fork the chain: the
loser re-reads the head and tries again. Writers need only PutItem and reads.
"""

from __future__ import annotations

import hashlib
import json
import random
import threading
import time
import uuid
from typing import Any

from boto3.dynamodb.conditions import Attr, Key
from botocore.exceptions import ClientError

from mailfleet import aws
from mailfleet.config import settings
from mailfleet.models.audit import AuditEvent, AuditVerification
from mailfleet.models.common import now_iso
from mailfleet.redact import redact
from mailfleet.store.base import decode_page, encode_page, from_dynamo, to_dynamo

CHAIN = "audit"
GENESIS = "0" * 64
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


def event_hash(event: dict[str, Any]) -> str:
    body = {k: event.get(k) for k in _HASHED}
    canonical = json.dumps(body, sort_keys=True, separators=(",", ":"), default=str)
    return hashlib.sha256(canonical.encode()).hexdigest()


class AuditLog:
    def __init__(self, table_name: str | None = None) -> None:
        self._table = aws.table(table_name or settings().audit_table)
        self._head: tuple[int, str] | None = None
        self._lock = threading.Lock()

    def append(
        self,
        *,
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
        fields = {
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
        with self._lock:
            for attempt in range(50):
                seq, prev_hash = self._head or self._read_head()
                event = dict(fields, seq=seq + 1, at=now_iso(), prev_hash=prev_hash)
                # Hash the event as DynamoDB will give it back (1.0 comes back as 1), or a
                # verification would find every event with a float in it "changed".
                event = from_dynamo(to_dynamo(event))
                event["hash"] = event_hash(event)
                item = {k: v for k, v in event.items() if v is not None}
                try:
                    self._table.put_item(
                        Item=to_dynamo(dict(item, chain=CHAIN)),
                        ConditionExpression=Attr("seq").not_exists(),
                    )
                except ClientError as exc:
                    if exc.response["Error"]["Code"] != "ConditionalCheckFailedException":
                        raise
                    self._head = None  # another writer took the slot: re-read the head
                    time.sleep(random.uniform(0, 0.01 * (attempt + 1)))
                    continue
                self._head = (event["seq"], event["hash"])
                return AuditEvent.model_validate(event)
        raise RuntimeError("audit chain is too contended; event not written")

    def _read_head(self) -> tuple[int, str]:
        page = self._table.query(
            KeyConditionExpression=Key("chain").eq(CHAIN),
            ScanIndexForward=False,
            Limit=1,
            ConsistentRead=True,
        )
        items = page.get("Items", [])
        if not items:
            return 0, GENESIS
        head = from_dynamo(items[0])
        return head["seq"], head["hash"]

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

    def verify(self, *, since: str | None = None, until: str | None = None) -> AuditVerification:
        """Recompute every hash in the range and check each link and that no seq is missing."""
        kwargs: dict[str, Any] = {"ScanIndexForward": True, "ConsistentRead": True}
        cond = Key("chain").eq(CHAIN)
        first_seq = self._first_seq_at(since) if since else 1
        if first_seq is None:
            return AuditVerification(ok=True, checked=0)
        cond = cond & Key("seq").gte(first_seq)
        kwargs["KeyConditionExpression"] = cond
        expected_prev = GENESIS
        expected_seq = first_seq
        if first_seq > 1:
            before = self._table.get_item(
                Key={"chain": CHAIN, "seq": first_seq - 1}, ConsistentRead=True
            ).get("Item")
            expected_prev = from_dynamo(before)["hash"] if before else None
        checked = 0
        while True:
            page = self._table.query(**kwargs)
            for raw in page.get("Items", []):
                item = from_dynamo(raw)
                if until and item["at"] > until:
                    return AuditVerification(ok=True, checked=checked)
                checked += 1
                problem = None
                if item["seq"] != expected_seq:
                    problem = f"events {expected_seq}..{item['seq'] - 1} are missing"
                elif expected_prev is not None and item.get("prev_hash") != expected_prev:
                    problem = "prev_hash does not match the previous event"
                elif event_hash(item) != item.get("hash"):
                    problem = "content does not match its hash"
                if problem:
                    return AuditVerification(
                        ok=False, checked=checked, first_bad=item["event_id"], reason=problem
                    )
                expected_prev = item["hash"]
                expected_seq = item["seq"] + 1
            if "LastEvaluatedKey" not in page:
                return AuditVerification(ok=True, checked=checked)
            kwargs["ExclusiveStartKey"] = page["LastEvaluatedKey"]

    def _first_seq_at(self, since: str) -> int | None:
        page = self._table.query(
            IndexName="by_time",
            KeyConditionExpression=Key("chain").eq(CHAIN) & Key("at").gte(since),
            ScanIndexForward=True,
            Limit=1,
        )
        items = page.get("Items", [])
        return int(items[0]["seq"]) if items else None
