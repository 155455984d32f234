"""Jobs: one action fanned out to many hosts."""

from __future__ import annotations

from enum import StrEnum
from typing import Any

from pydantic import ConfigDict, Field, model_validator

from mailfleet.errors import ErrorType, HostError
from mailfleet.models.common import Concurrency, CountOrPercent, Model
from mailfleet.models.hosts import HostId, HostKind, TagKey, TagValue


class JobStatus(StrEnum):
    AWAITING_APPROVAL = "AWAITING_APPROVAL"  # destructive, above the approval threshold
    PENDING = "PENDING"
    RUNNING = "RUNNING"
    SUCCEEDED = "SUCCEEDED"
    PARTIAL = "PARTIAL"
    FAILED = "FAILED"
    CANCELLED = "CANCELLED"

    @property
    def final(self) -> bool:
        return self not in (JobStatus.PENDING, JobStatus.RUNNING, JobStatus.AWAITING_APPROVAL)


class ResultStatus(StrEnum):
    PENDING = "PENDING"
    RUNNING = "RUNNING"
    SUCCEEDED = "SUCCEEDED"
    FAILED = "FAILED"
    TIMED_OUT = "TIMED_OUT"
    SKIPPED = "SKIPPED"

    @property
    def failed(self) -> bool:
        """Counts against a job's max_errors (and its final status)."""
        return self in (ResultStatus.FAILED, ResultStatus.TIMED_OUT)


# A worker's answer for a job id with no job (a replayed or stray invocation): not a job
# status, as no job has it.
NO_SUCH_JOB = "UNKNOWN"


def no_such_job(**ids: Any) -> dict[str, Any]:
    """What a worker (in-process, a Map batch, the Map's close) answers for a missing job."""
    return {**ids, "status": NO_SUCH_JOB, "skipped": "no such job"}


class Targets(Model):
    """Either explicit host ids, or a kind and tags (hosts in maintenance are left out)."""

    model_config = ConfigDict(extra="forbid")

    hosts: list[HostId] | None = Field(default=None, min_length=1, max_length=100_000)
    kind: HostKind | None = None
    tags: dict[TagKey, TagValue] | None = None

    @model_validator(mode="after")
    def _one_way(self) -> Targets:
        if self.hosts is not None and (self.kind is not None or self.tags is not None):
            raise ValueError("give either hosts, or kind and tags, not both")
        if self.hosts is None and self.kind is None:
            raise ValueError("give hosts, or a kind (with optional tags)")
        if self.hosts is not None:
            # Each host once: a job runs its action once per host.
            self.hosts = list(dict.fromkeys(self.hosts))
        return self


class JobRequest(Model):
    model_config = ConfigDict(extra="forbid")

    action: str = Field(min_length=1, max_length=128)
    params: dict[str, Any] = Field(default_factory=dict)
    targets: Targets
    max_concurrency: Concurrency = 50
    max_errors: CountOrPercent | None = None
    # At least a millisecond: DynamoDB cannot store numbers below 1e-130 anyway.
    timeout_seconds: float = Field(default=30, ge=0.001, le=3600, strict=True)
    dry_run: bool = False
    # Set by the scheduler for scheduled runs; shown on the job.
    schedule: str | None = Field(default=None, max_length=64)
    # Destructive actions: "<action>@<number of targets>", e.g. "stop@12".
    confirm: str | None = Field(default=None, max_length=200)


class PolicyView(Model):
    """What the action policy said of the job's action and parameters."""

    model_config = ConfigDict(extra="allow", populate_by_name=True, serialize_by_alias=True,
                              defer_build=True)

    action_class: str = Field(alias="class", description="read, session, change, destructive")
    least_role: str | None = Field(default=None, description="the least role that may run it")
    rule: str | None = None
    reason: str | None = None


class ApprovalView(Model):
    """Whether a second principal must approve a destructive job, and what became of it."""

    model_config = ConfigDict(extra="allow", defer_build=True)

    required: bool
    threshold_hosts: int
    confirm: str | None = Field(default=None, description='"<action>@<number of targets>"')
    expires_at: str | None = None
    expires_epoch: int | None = None
    approved_by: str | None = None
    approved_at: str | None = None


class TargetView(Model):
    """A host a dry run would reach."""

    model_config = ConfigDict(extra="allow", defer_build=True)

    host: str
    endpoint: str


class JobAccepted(Model):
    job_id: str
    status: JobStatus
    total: int
    path: str | None = None
    dry_run: bool = False
    targets: list[TargetView] | None = None
    policy: PolicyView | None = None
    approval: ApprovalView | None = None


# The views below are what the jobs table holds, as the API shows it: a field they do not
# name (written by an older version, or a path's own note) is shown as it is.
SHOWN_AS_STORED = ConfigDict(extra="allow", defer_build=True)


class HostErrorView(Model):
    """One host's failure as results carry it (the shared taxonomy of mailfleet.errors)."""

    model_config = SHOWN_AS_STORED

    type: ErrorType
    code: int | str | None = None
    message: str
    retryable: bool = False
    details: dict[str, Any] | None = None

    @classmethod
    def of(cls, error: HostError) -> HostErrorView:
        return cls(type=error.type, code=error.code, message=error.message,
                   retryable=error.retryable, details=error.details or None)

    def item(self) -> dict[str, Any]:
        """As stored and shown: `code` always present (null when the host gave none)."""
        out: dict[str, Any] = {"type": self.type.value, "code": self.code,
                               "message": self.message, "retryable": self.retryable}
        if self.details:
            out["details"] = self.details
        return out


class HostResult(Model):
    """One host's result in a job: every target gets exactly one."""

    model_config = SHOWN_AS_STORED

    host: str
    status: ResultStatus
    output: Any = None
    error: HostErrorView | None = None
    attempts: int = 0
    duration_ms: int | None = None
    started_at: str | None = None
    finished_at: str | None = None

    @classmethod
    def skipped(cls, host: str, why: str) -> HostResult:
        """Never contacted (max_errors reached, cancelled, not started, dry run...)."""
        return cls(host=host, status=ResultStatus.SKIPPED, output={"skipped": why})

    @classmethod
    def failed(cls, host: str, error: HostError | HostErrorView) -> HostResult:
        """Failed without a call made (or the worker running it broke)."""
        if isinstance(error, HostError):
            error = HostErrorView.of(error)
        return cls(host=host, status=ResultStatus.FAILED, error=error)

    def item(self) -> dict[str, Any]:
        """The record as the jobs table keeps it and the API shows it: unset fields left
        out, the output as the driver gave it."""
        out: dict[str, Any] = {"host": self.host, "status": self.status.value,
                               "attempts": self.attempts}
        if self.output is not None:
            out["output"] = self.output
        if self.error is not None:
            out["error"] = self.error.item()
        for name in ("started_at", "finished_at", "duration_ms"):
            value = getattr(self, name)
            if value is not None:
                out[name] = value
        return out


class JobView(Model):
    model_config = SHOWN_AS_STORED

    job_id: str
    action: str
    kind: HostKind | None = None
    params: dict[str, Any]
    status: JobStatus
    counts: dict[str, int]
    total: int
    created_by: str
    created_by_token: str | None = None
    created_at: str
    started_at: str | None = None
    finished_at: str | None = None
    dry_run: bool = False
    max_concurrency: int | str
    max_errors: int | str | None = None
    timeout_seconds: int | float  # as given: 30 stays 30
    path: str = "inprocess"
    schedule: str | None = None
    cancel_requested: bool = False
    policy: PolicyView | None = None
    approval: ApprovalView | None = None
    results: list[HostResult] | None = None
    next_token: str | None = None


class JobList(Model):
    jobs: list[JobView]
    next_token: str | None = None


class CancelAnswer(Model):
    job_id: str
    status: JobStatus
    cancel_requested: bool = Field(description="false: the job had already ended")
