"""JobStore.write_results: what the engine shaped is what the jobs table keeps and the API
reads back, one BatchWriteItem per 25 results, the job's key and expiry on each."""

from __future__ import annotations

import time
import uuid
from typing import Any

from mailfleet.config import Tables
from mailfleet.errors import ErrorType, HostError
from mailfleet.models.jobs import HostResult
from mailfleet.store.jobs import JobStore


def test_results_are_kept_as_recorded(local_api: Any, aws_client: Any) -> None:
    store = JobStore()
    job_id = uuid.uuid4().hex
    shaped = [
        {"host": f"h{i:03d}", "status": "SUCCEEDED", "attempts": 1,
         "output": [{"user": "a", "load": 0.25, "pids": [1, 2]}] if i % 2 else [],
         "started_at": "2026-11-27T20:43:03.833678Z",
         "finished_at": "2026-11-27T20:43:03.893678Z", "duration_ms": 60}
        for i in range(29)
    ]
    failed = HostResult.failed("h999", HostError(ErrorType.TIMEOUT, "no answer", code=None))
    before = int(time.time())
    assert store.write_results(job_id, [*shaped, failed]) == 2  # 30 results: 25 + 5
    expected = [*shaped, failed.item()]
    assert sorted(store.results(job_id)[0], key=lambda r: r["host"]) == expected
    raw = aws_client("dynamodb").get_item(
        TableName=Tables().jobs_table, Key={"pk": {"S": job_id}, "sk": {"S": "host#h001"}},
        ConsistentRead=True)["Item"]
    assert raw["output"]["L"][0]["M"]["load"] == {"N": "0.25"}
    retention = store._retention_days * 86400
    assert before + retention <= int(raw["expires_at"]["N"]) <= int(time.time()) + retention
