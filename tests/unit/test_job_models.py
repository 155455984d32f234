"""The typed job domain: one model builds every host result in the shape the jobs table
keeps and the API shows (shared/API.md), and a stored job read back through JobView is
answered exactly as stored."""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any

from mailfleet.errors import ErrorType, HostError
from mailfleet.models.jobs import (
    HostErrorView,
    HostResult,
    JobStatus,
    JobView,
    ResultStatus,
    no_such_job,
)


def test_a_skipped_host_is_recorded_with_its_reason_and_no_attempt() -> None:
    assert HostResult.skipped("h1", "not started").item() == {
        "host": "h1", "status": "SKIPPED", "attempts": 0, "output": {"skipped": "not started"}}


def test_a_failed_host_carries_the_error_with_its_code_even_when_null() -> None:
    error = HostError(ErrorType.UNSUPPORTED, "host was removed from the inventory")
    assert HostResult.failed("h1", error).item() == {
        "host": "h1", "status": "FAILED", "attempts": 0,
        "error": {"type": "unsupported", "code": None, "retryable": False,
                  "message": "host was removed from the inventory"}}


def test_an_error_view_is_the_errors_own_dict() -> None:
    error = HostError(ErrorType.EXIT_CODE, "doveadm failed", code=68,
                      details={"command": "kick"})
    assert HostErrorView.of(error).item() == error.to_dict()
    assert HostErrorView.model_validate(error.to_dict()).item() == error.to_dict()


def test_a_timed_result_keeps_its_times_and_the_output_as_given() -> None:
    result = HostResult(host="h1", status=ResultStatus.SUCCEEDED, attempts=1,
                        output=[{"user": "a"}], started_at="t0", finished_at="t1",
                        duration_ms=12)
    assert result.item() == {"host": "h1", "status": "SUCCEEDED", "attempts": 1,
                             "output": [{"user": "a"}], "started_at": "t0",
                             "finished_at": "t1", "duration_ms": 12}


def test_only_failed_and_timed_out_count_as_failures() -> None:
    assert {s for s in ResultStatus if s.failed} == {ResultStatus.FAILED,
                                                      ResultStatus.TIMED_OUT}


def test_final_job_statuses() -> None:
    assert {s for s in JobStatus if s.final} == {
        JobStatus.SUCCEEDED, JobStatus.PARTIAL, JobStatus.FAILED, JobStatus.CANCELLED}


def test_a_worker_answers_a_missing_job_without_a_job_status() -> None:
    answer = no_such_job(batch=3)
    assert answer == {"batch": 3, "status": "UNKNOWN", "skipped": "no such job"}
    assert answer["status"] not in set(JobStatus)


def _shown() -> Any:
    """The API function's own helper (its directory is not a package: imported as Lambda
    does, then forgotten so the API function's modules load as usual elsewhere)."""
    sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "functions" / "api"))
    try:
        from answers import shown
    finally:
        sys.path.pop(0)
        sys.modules.pop("answers", None)
    return shown


def test_a_job_is_answered_exactly_as_stored() -> None:
    stored = {
        "job_id": "j1", "action": "who", "kind": "dovecot", "params": {}, "status": "PARTIAL",
        "counts": {"SUCCEEDED": 1, "FAILED": 1}, "total": 2, "created_by": "admin",
        "created_at": "2026-11-27T10:00:00.000000Z", "finished_at": None,
        "max_concurrency": "50%", "max_errors": 3, "timeout_seconds": 30, "dry_run": False,
        "path": "inprocess", "note": "a field JobView does not name",
        "results": [
            {"host": "h1", "status": "SUCCEEDED", "attempts": 1, "output": {"n": 1.5},
             "duration_ms": 3},
            {"host": "h2", "status": "FAILED", "attempts": 2,
             "error": {"type": "exitCode", "code": 68, "message": "m", "retryable": False}},
        ],
        "next_token": None,
    }
    answered = _shown()(JobView, stored)
    assert json.dumps(answered, sort_keys=True) == json.dumps(stored, sort_keys=True)


def test_a_started_job_answers_its_policy_and_approval_typed_and_as_recorded() -> None:
    from mailfleet.models.jobs import JobAccepted

    answer = {"job_id": "j1", "status": "PENDING", "total": 3, "path": "inprocess",
              "policy": {"class": "read", "least_role": None, "rule": "dovecot.who",
                         "reason": "reads"},
              "approval": {"required": False, "threshold_hosts": 10}}
    accepted = JobAccepted.model_validate(answer)
    assert accepted.policy is not None and accepted.policy.action_class == "read"
    assert accepted.approval is not None and accepted.approval.required is False
    # What POST /jobs sends (answers.shown): the same JSON, least_role null included.
    assert accepted.model_dump(mode="json", exclude_unset=True) == answer
    schema = JobAccepted.model_json_schema(mode="serialization")
    assert {"PolicyView", "ApprovalView", "TargetView"} <= set(schema["$defs"])
    assert "class" in schema["$defs"]["PolicyView"]["properties"]
