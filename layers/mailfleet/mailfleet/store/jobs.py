"""The jobs table: a job item (`sk = "job"`) and one item per host result (`sk = "host#id"`).

Results are written in BatchWriteItem requests of 25; the job item is touched only when
the job starts, finishes or is cancelled, so a job costs about one write per 25 hosts.
"""

from __future__ import annotations

import gzip
import json
import threading
import time
from collections.abc import Sequence
from typing import Any

from boto3.dynamodb.conditions import Attr, Key
from botocore.exceptions import ClientError

from mailfleet import aws
from mailfleet.config import JobLimits, Tables
from mailfleet.models.jobs import HostResult, JobStatus
from mailfleet.store.audit import Change
from mailfleet.store.base import (
    batch_put,
    from_dynamo,
    newest_first,
    query_page,
    to_dynamo,
)

JOB_SK = "job"
RESULT_PREFIX = "host#"
LIST_PK = "JOB"
FINAL_STATUSES = [s.value for s in JobStatus if s.final]
# Result counts added up by the batches of a Distributed Map job (`ran_SUCCEEDED`, ...).
RAN_PREFIX = "ran_"
# Target lists are kept gzipped in the job item; this many ids stay well under 400 KB.
MAX_TARGETS_INLINE = 100_000
# What running a part of a job needs from the job item (all but the target list).
RUN_FIELDS = (
    "job_id",
    "action",
    "kind",
    "run_params",
    "status",
    "total",
    "max_concurrency",
    "max_errors",
    "timeout_seconds",
    "cancel_requested",
    "path",
    "created_by",
)


class JobNotFound(Exception):
    pass


class JobStore:
    def __init__(self, table_name: str | None = None, retention_days: int | None = None
                 ) -> None:
        self._table = aws.table(table_name or Tables().jobs_table)
        # How long a job and its results stay in the table (TTL).
        self._retention_days = retention_days or JobLimits().job_retention_days

    # ------------------------------------------------------------------ job item
    # Changes to write with their audit event (AuditLog.record).
    def create_change(self, job: dict[str, Any], targets: list[str]) -> Change:
        item = dict(job, pk=job["job_id"], sk=JOB_SK, list_pk=LIST_PK, status_pk=job["status"])
        item["targets_gz"] = gzip.compress(json.dumps(targets).encode())
        item["expires_at"] = int(time.time()) + self._retention_days * 86400
        return Change.put(self._table.name, item, condition="attribute_not_exists(pk)")

    def finish_change(self, job_id: str, status: str, counts: dict[str, int],
                      finished_at: str, note: str | None = None) -> Change:
        """The final state, once: refused (ChangeRefused) if the job is already final."""
        values: dict[str, Any] = {":s": status, ":c": counts, ":f": finished_at}
        sets = "#s = :s, status_pk = :s, #c = :c, finished_at = :f"
        if note:
            sets += ", note = :n"
            values[":n"] = note
        finals = {f":final{i}": s for i, s in enumerate(FINAL_STATUSES)}
        return Change.update(
            self._table.name, {"pk": job_id, "sk": JOB_SK}, f"SET {sets} REMOVE run_params",
            condition=f"NOT (#s IN ({', '.join(finals)}))",
            names={"#s": "status", "#c": "counts"}, values=values | finals)

    def cancel_change(self, job_id: str) -> Change:
        """Flag a PENDING or RUNNING job for cancellation (refused otherwise)."""
        return Change.update(
            self._table.name, {"pk": job_id, "sk": JOB_SK}, "SET cancel_requested = :t",
            condition="attribute_exists(pk) AND #s IN (:p, :r)",
            names={"#s": "status"}, values={":t": True, ":p": JobStatus.PENDING.value,
                                          ":r": JobStatus.RUNNING.value})

    def transition_change(self, job_id: str, old: str, new: str, **fields: Any) -> Change:
        """Move a job from status `old` to `new` (with `fields`) only if it is still in
        `old`: an approval, a rejection and an expiry can race; one of them wins (the
        others are refused: ChangeRefused)."""
        names = {"#st": "status", **{f"#fld{i}": k for i, k in enumerate(fields)}}
        values = {":old": old, ":new": new,
                  **{f":val{i}": v for i, v in enumerate(fields.values())}}
        sets = ", ".join(["#st = :new", "status_pk = :new",
                          *(f"#fld{i} = :val{i}" for i in range(len(fields)))])
        return Change.update(self._table.name, {"pk": job_id, "sk": JOB_SK}, f"SET {sets}",
                             condition="#st = :old", names=names, values=values)

    def create(self, job: dict[str, Any], targets: list[str]) -> None:
        change = self.create_change(job, targets)
        self._table.put_item(Item=to_dynamo(change.request["Item"]),
                             ConditionExpression=Attr("pk").not_exists())

    def get(self, job_id: str, *, consistent: bool = True) -> dict[str, Any]:
        item = self._table.get_item(
            Key={"pk": job_id, "sk": JOB_SK}, ConsistentRead=consistent
        ).get("Item")
        if item is None:
            raise JobNotFound(job_id)
        return _job_from_item(item)

    def get_for_run(self, job_id: str) -> dict[str, Any]:
        """The job item without its target list, which can be hundreds of KB: what each
        batch of a Distributed Map reads."""
        names = {f"#a{i}": name for i, name in enumerate(RUN_FIELDS)}
        item = self._table.get_item(
            Key={"pk": job_id, "sk": JOB_SK},
            ConsistentRead=True,
            ProjectionExpression=", ".join(names),
            ExpressionAttributeNames=names,
        ).get("Item")
        if item is None:
            raise JobNotFound(job_id)
        return _job_from_item(item)

    def status(self, job_id: str) -> tuple[str, bool]:
        """(status, cancel_requested), read cheaply for polling."""
        item = self._table.get_item(
            Key={"pk": job_id, "sk": JOB_SK},
            ConsistentRead=True,
            ProjectionExpression="#s, cancel_requested",
            ExpressionAttributeNames={"#s": "status"},
        ).get("Item")
        if item is None:
            raise JobNotFound(job_id)
        return item["status"], bool(item.get("cancel_requested"))

    def mark_running(self, job_id: str, started_at: str, path: str) -> bool:
        """PENDING → RUNNING; also true when already RUNNING (a resumed worker)."""
        try:
            self._table.update_item(
                Key={"pk": job_id, "sk": JOB_SK},
                UpdateExpression="SET #s = :r, status_pk = :r, started_at = if_not_exists("
                "started_at, :t), #p = :p",
                ConditionExpression=Attr("status").is_in([JobStatus.PENDING.value,
                                                          JobStatus.RUNNING.value]),
                ExpressionAttributeNames={"#s": "status", "#p": "path"},
                ExpressionAttributeValues={":r": JobStatus.RUNNING.value, ":t": started_at,
                                           ":p": path},
            )
        except ClientError as exc:
            if exc.response["Error"]["Code"] == "ConditionalCheckFailedException":
                return False
            raise
        return True

    def set_fields(self, job_id: str, **fields: Any) -> None:
        names = {f"#f{i}": k for i, k in enumerate(fields)}
        values = {f":v{i}": to_dynamo(v) for i, v in enumerate(fields.values())}
        self._table.update_item(
            Key={"pk": job_id, "sk": JOB_SK},
            UpdateExpression="SET " + ", ".join(f"#f{i} = :v{i}" for i in range(len(fields))),
            ExpressionAttributeNames=names,
            ExpressionAttributeValues=values,
        )

    def add_failure(self, job_id: str, limit: int) -> bool:
        """Count one failure against a job-wide max_errors; false once the limit is reached."""
        try:
            self._table.update_item(
                Key={"pk": job_id, "sk": JOB_SK},
                UpdateExpression="ADD error_count :one",
                ConditionExpression=Attr("error_count").not_exists()
                | Attr("error_count").lt(limit),
                ExpressionAttributeValues={":one": 1},
            )
        except ClientError as exc:
            if exc.response["Error"]["Code"] == "ConditionalCheckFailedException":
                return False
            raise
        return True

    def add_counts(self, job_id: str, counts: dict[str, int]) -> None:
        """Add one batch's result counts to the job item (`ran_<STATUS>`), so the job can
        be closed without reading every result back: one write per batch."""
        counts = {k: n for k, n in counts.items() if n}
        if not counts:
            return
        names = {f"#c{i}": RAN_PREFIX + k for i, k in enumerate(counts)}
        values = {f":c{i}": n for i, n in enumerate(counts.values())}
        self._table.update_item(
            Key={"pk": job_id, "sk": JOB_SK},
            UpdateExpression="ADD " + ", ".join(f"#c{i} :c{i}" for i in range(len(counts))),
            ExpressionAttributeNames=names,
            ExpressionAttributeValues=values,
        )

    def error_count(self, job_id: str) -> int:
        item = (
            self._table.get_item(
                Key={"pk": job_id, "sk": JOB_SK},
                ConsistentRead=True,
                ProjectionExpression="error_count",
            ).get("Item")
            or {}
        )
        return int(item.get("error_count", 0))

    def list(
        self, *, status: str | None, limit: int, next_token: str | None
    ) -> tuple[list[dict[str, Any]], str | None]:
        items, token = newest_first(
            self._table, list_pk=LIST_PK, status=status, limit=limit, next_token=next_token
        )
        return [_job_from_item(i) for i in items], token

    # ------------------------------------------------------------------ results
    def write_results(self, job_id: str, results: Sequence[HostResult | dict[str, Any]]
                      ) -> int:
        """Write results in batches of 25; returns the number of BatchWriteItem requests.
        A result is a HostResult, or the record one made (the engine's, already shaped)."""
        expires = int(time.time()) + self._retention_days * 86400
        records = [r.item() if isinstance(r, HostResult) else r for r in results]
        # batch_put converts each item (floats to Decimal, attribute values) once.
        items = [dict(r, sk=RESULT_PREFIX + r["host"]) for r in records]
        return batch_put(self._table, items, common={"pk": job_id, "expires_at": expires})

    def results(
        self, job_id: str, *, limit: int | None = None, next_token: str | None = None
    ) -> tuple[list[dict[str, Any]], str | None]:
        kwargs: dict[str, Any] = {
            "KeyConditionExpression": Key("pk").eq(job_id) & Key("sk").begins_with(RESULT_PREFIX),
            "ConsistentRead": True,
        }
        return query_page(
            self._table, kwargs, limit=limit, next_token=next_token, clean=_result_from_item
        )


def _result_from_item(item: dict[str, Any]) -> dict[str, Any]:
    out = from_dynamo(item)
    for key in ("pk", "sk", "expires_at"):
        out.pop(key, None)
    return out


def _job_from_item(item: dict[str, Any]) -> dict[str, Any]:
    job = from_dynamo(item)
    raw = job.pop("targets_gz", None)
    if raw is not None:
        job["targets"] = json.loads(gzip.decompress(bytes(getattr(raw, "value", raw))))
    for key in ("pk", "sk", "list_pk", "status_pk", "expires_at"):
        job.pop(key, None)
    return job


class BatchedResults:
    """A ResultSink that writes host results in batches of 25 from a background flusher,
    so threads never wait on DynamoDB and a slow job still shows progress every second."""

    def __init__(self, store: JobStore, job_id: str, *, interval: float = 1.0) -> None:
        self._store = store
        self._job_id = job_id
        self._interval = interval
        self._buffer: list[dict[str, Any]] = []
        self._lock = threading.Lock()
        self._wake = threading.Event()
        self._closed = False
        self.requests = 0
        self.written = 0
        self._thread = threading.Thread(target=self._loop, name="results-flusher", daemon=True)
        self._thread.start()

    def record(self, result: dict[str, Any]) -> None:
        with self._lock:
            self._buffer.append(result)
            if len(self._buffer) >= 25:
                self._wake.set()

    def _take(self, full_only: bool) -> list[dict[str, Any]]:
        with self._lock:
            if full_only:
                n = len(self._buffer) - len(self._buffer) % 25
            else:
                n = len(self._buffer)
            batch, self._buffer = self._buffer[:n], self._buffer[n:]
            return batch

    def _loop(self) -> None:
        last = time.monotonic()
        while not self._closed:
            self._wake.wait(timeout=self._interval)
            self._wake.clear()
            due = time.monotonic() - last >= self._interval
            batch = self._take(full_only=not due)
            if batch:
                self._write(batch)
            if due:
                last = time.monotonic()

    def _write(self, batch: list[dict[str, Any]]) -> None:
        self.requests += self._store.write_results(self._job_id, batch)
        self.written += len(batch)

    def close(self) -> None:
        """Stop the flusher and write what is left."""
        self._closed = True
        self._wake.set()
        self._thread.join(timeout=30)
        batch = self._take(full_only=False)
        if batch:
            self._write(batch)
