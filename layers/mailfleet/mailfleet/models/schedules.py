"""Scheduled jobs (a name, an EventBridge schedule expression and a POST /jobs body), and
the scope of a health sweep asked for with POST /fleet/sweep."""

from __future__ import annotations

from typing import Annotated, Any

from pydantic import ConfigDict, Field, StringConstraints, field_validator

from mailfleet.models.common import Model
from mailfleet.models.hosts import HostKind, TagKey, TagValue
from mailfleet.models.jobs import JobRequest
from mailfleet.schedule_expressions import ExpressionError, check_timezone, parse

# EventBridge Scheduler's own rule for names, within JobRequest.schedule's 64 characters.
ScheduleName = Annotated[str, StringConstraints(pattern=r"^[A-Za-z0-9][A-Za-z0-9._-]{0,63}$")]


class ScheduleCreate(Model):
    model_config = ConfigDict(extra="forbid")

    name: ScheduleName
    expression: str = Field(max_length=256, description="rate(5 minutes), cron(0 3 * * ? *)")
    timezone: str | None = Field(default=None, max_length=64,
                                 description="IANA zone for cron (default UTC)")
    description: str | None = Field(default=None, max_length=256)
    paused: bool = False
    job: JobRequest

    @field_validator("expression")
    @classmethod
    def _expression(cls, value: str) -> str:
        try:
            parse(value)
        except ExpressionError as exc:
            raise ValueError(str(exc)) from None
        return value.strip()

    @field_validator("timezone")
    @classmethod
    def _timezone(cls, value: str | None) -> str | None:
        if value is None:
            return None
        try:
            return check_timezone(value)
        except ExpressionError as exc:
            raise ValueError(str(exc)) from None

    @field_validator("job")
    @classmethod
    def _job(cls, value: JobRequest) -> JobRequest:
        if value.schedule is not None:
            raise ValueError("schedule is set by the schedule itself; leave it out")
        return value


class ScheduleView(Model):
    name: str
    expression: str
    timezone: str
    description: str | None = None
    state: str  # ENABLED or DISABLED, as EventBridge Scheduler says
    paused: bool
    job: dict[str, Any]  # as given, secrets redacted
    created_by: str | None = None
    created_by_token: str | None = None  # the token that made it (revoking it can pause it)
    run_as: str | None = None  # the principal and role its runs act as
    created_at: str | None = None
    managed_by: str = "api"  # "template" for the stack's own default schedules
    next_run: str | None = None
    arn: str


class ScheduleList(Model):
    schedules: list[ScheduleView]
    next_token: str | None = None


class SweepRequest(Model):
    """POST /fleet/sweep's optional body: without it, every host not in maintenance."""

    model_config = ConfigDict(extra="forbid")

    kind: HostKind | None = None
    tags: dict[TagKey, TagValue] | None = None


class KindHealth(Model):
    up: int
    down: int
    unknown: int


class DestinationDown(Model):
    host: str
    destination: str


class FleetHealthView(Model):
    """GET /fleet/health: the last sweep's view (hosts in maintenance or never swept are
    unknown)."""

    counts: dict[str, KindHealth] = Field(description="per host kind")
    down: list[str]
    destinations_down: list[DestinationDown]
    maintenance: list[str] = Field(default_factory=list)
    swept_at: str | None = None
