"""Scheduled jobs on EventBridge Scheduler: one schedule per name in the stack's group,
its target the maintenance function with the job body as input. Scheduler is the only
store: the name, expression, state and job live in the schedule itself.

Each run is an ordinary job (created by `system:schedule:<name>`, `schedule` set on it,
audited like any other). A run whose job cannot start (no host matches its tags any
more, say) is audited as refused and not retried: Scheduler would retry it for a day.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import json
from collections.abc import Iterator
from typing import Any

from botocore.exceptions import ClientError

from mailfleet import aws
from mailfleet.config import JobSettings, ScheduleSettings
from mailfleet.drivers import driver_class
from mailfleet.logic.caller import Caller
from mailfleet.logic.jobs import Jobs, redact_params
from mailfleet.logic.problems import (
    FieldError,
    Forbidden,
    Invalid,
    Problem,
    Unavailable,
    conflict,
    forbidden,
    invalid,
    not_found,
)
from mailfleet.models.common import now_iso
from mailfleet.models.hosts import HostKind
from mailfleet.models.jobs import JobRequest
from mailfleet.models.schedules import ScheduleCreate, ScheduleView
from mailfleet.models.tokens import Role
from mailfleet.redact import redact
from mailfleet.schedule_expressions import next_run
from mailfleet.store.audit import AuditLog
from mailfleet.store.base import decode_page, encode_page, from_dynamo, to_dynamo
from mailfleet.store.hosts import HostStore

TASK = "scheduled-job"
# Scheduler fills these in on every run (its "context attributes").
RUN_CONTEXT = {
    "schedule_arn": "<aws.scheduler.schedule-arn>",
    "scheduled_time": "<aws.scheduler.scheduled-time>",
    "execution_id": "<aws.scheduler.execution-id>",
    "attempt": "<aws.scheduler.attempt-number>",
}
MAX_INPUT_CHARS = 8192  # EventBridge's limit on a target's constant input
# A run that could not be delivered is retried a little, then dropped (not for a day).
RETRY_POLICY = {"MaximumRetryAttempts": 2, "MaximumEventAgeInSeconds": 3600}


class Schedules:
    def __init__(self, audit: AuditLog | None = None, settings: ScheduleSettings | None = None,
                 jobs: JobSettings | None = None) -> None:
        self.settings = settings or ScheduleSettings()
        # The jobs a schedule runs (and checks when it is created).
        self.jobs = jobs or JobSettings()
        self.audit = audit or AuditLog(self.jobs.tables.audit_table)

    @staticmethod
    def _client() -> Any:
        return aws.client("scheduler")

    # ------------------------------------------------------------------ writes
    def create(self, body: ScheduleCreate, caller: Caller) -> dict[str, Any]:
        if caller.scope is not None:
            body = body.model_copy(update={"job": self._within_scope(body.job, caller)})
        kind = self._check_job(body.job, caller)
        config = self.settings
        if not (config.maintenance_function_arn and config.scheduler_role_arn):
            raise Unavailable("schedules are not configured (MAINTENANCE_FUNCTION_ARN, "
                              "SCHEDULER_ROLE_ARN)")
        payload = {"task": TASK, "schedule": body.name,
                   "job": body.job.model_dump(mode="json", exclude_none=True,
                                              exclude={"schedule"}),
                   "created_by": caller.principal, "created_by_token": caller.token_id,
                   "created_at": now_iso(), **RUN_CONTEXT}
        text = json.dumps(payload, separators=(",", ":"))
        if len(text) > MAX_INPUT_CHARS:
            raise invalid("job", f"too large for a schedule ({len(text)} of {MAX_INPUT_CHARS} "
                          "characters); pass large inputs by reference (e.g. package_uri)")
        kwargs: dict[str, Any] = {
            "Name": body.name, "GroupName": config.schedule_group,
            "ScheduleExpression": body.expression,
            "FlexibleTimeWindow": {"Mode": "OFF"},
            "State": "DISABLED" if body.paused else "ENABLED",
            "Target": {"Arn": config.maintenance_function_arn,
                       "RoleArn": config.scheduler_role_arn, "Input": text,
                       "RetryPolicy": RETRY_POLICY},
        }
        if config.failed_invocations_queue_arn:  # an undeliverable run is kept, not lost
            kwargs["Target"]["DeadLetterConfig"] = {"Arn": config.failed_invocations_queue_arn}
        if body.timezone:
            kwargs["ScheduleExpressionTimezone"] = body.timezone
        if body.description:
            kwargs["Description"] = body.description
        if self._exists(body.name):
            raise conflict(f"schedule {body.name!r} already exists")
        params = {"expression": body.expression, "timezone": body.timezone,
                  "paused": body.paused, "job": _shown_job(payload["job"], kind),
                  "run_as": _run_as(body.name, body.job, kind).principal}
        with self._recorded(caller, "schedule.create", body.name, params):
            try:
                self._client().create_schedule(**kwargs)
            except ClientError as exc:
                if exc.response["Error"]["Code"] == "ConflictException":
                    raise conflict(f"schedule {body.name!r} already exists") from None
                raise
        return self.get(body.name)

    def delete(self, name: str, caller: Caller) -> None:
        view = self.get(name)
        self._check_acts(view, caller)
        if view["managed_by"] == "template":
            raise conflict(f"schedule {name!r} belongs to the deployed template: pause it, "
                           "or change the template")
        with self._recorded(caller, "schedule.delete", name, None):
            try:
                self._client().delete_schedule(Name=name, GroupName=self.settings.schedule_group)
            except ClientError as exc:
                if exc.response["Error"]["Code"] == "ResourceNotFoundException":
                    raise not_found("schedule", name) from None
                raise

    def set_paused(self, name: str, paused: bool, caller: Caller) -> dict[str, Any]:
        current = self._describe(name)
        self._check_acts(_view(current), caller)
        kwargs = {k: current[k] for k in ("Name", "GroupName", "ScheduleExpression",
                                          "FlexibleTimeWindow", "Target") if k in current}
        for key in ("ScheduleExpressionTimezone", "Description", "StartDate", "EndDate"):
            if current.get(key):
                kwargs[key] = current[key]
        kwargs["State"] = "DISABLED" if paused else "ENABLED"
        if current.get("State") != kwargs["State"]:
            with self._recorded(caller, "schedule.pause" if paused else "schedule.resume",
                                name, None):
                self._client().update_schedule(**kwargs)
        return self.get(name)

    # ------------------------------------------------------------------ reads
    def get(self, name: str, caller: Caller | None = None) -> dict[str, Any]:
        view = _view(self._describe(name))
        if caller is not None and not self.sees(view, caller):
            raise not_found("schedule", name)
        return view

    def sees(self, view: dict[str, Any], caller: Caller) -> bool:
        """A scoped caller sees a schedule whose job targets only hosts in its scope: by
        tags at least as narrow as the scope, or by ids all inside it."""
        scope = caller.scope
        if scope is None:
            return True
        targets = (view.get("job") or {}).get("targets") or {}
        if targets.get("hosts") is not None:
            found = HostStore(self.jobs.tables.hosts_table).get_many(list(targets["hosts"]))
            return all(h in found and caller.sees(found[h]) for h in targets["hosts"])
        kind, tags = targets.get("kind"), targets.get("tags") or {}
        return scope.narrow(kind, tags) == (kind, tags)

    def _check_acts(self, view: dict[str, Any], caller: Caller) -> None:
        if not self.sees(view, caller):
            raise forbidden(f"schedule {view['name']!r} acts on hosts outside this token's scope")

    def _within_scope(self, job: JobRequest, caller: Caller) -> JobRequest:
        """A scoped caller's schedule: explicit hosts must be in its scope; a tag selection
        is narrowed to it, so every later run stays inside it too."""
        assert caller.scope is not None
        targets = job.targets
        if targets.hosts is not None:
            found = HostStore(self.jobs.tables.hosts_table).get_many(targets.hosts)
            for host_id in targets.hosts:
                if host_id in found:
                    caller.check_acts(found[host_id], host_id, "job.targets.hosts")
            return job
        narrowed = caller.scope.narrow(targets.kind.value if targets.kind else None,
                                       targets.tags)
        if narrowed is None:
            raise forbidden("job.targets: this kind and these tags are outside this token's "
                            "scope")
        kind, tags = narrowed
        return job.model_copy(update={"targets": targets.model_copy(
            update={"kind": HostKind(kind) if kind else None, "tags": tags or None})})

    def list(self, *, limit: int, next_token: str | None, caller: Caller | None = None
             ) -> tuple[list[dict[str, Any]], str | None]:
        kwargs: dict[str, Any] = {"GroupName": self.settings.schedule_group, "MaxResults": limit}
        if next_token:
            # Scheduler's own token, wrapped in ours: a crafted one never reaches it.
            start = decode_page(next_token) or {}
            if not isinstance(start.get("scheduler"), str):
                raise invalid("next_token", "is not one this API gave out")
            kwargs["NextToken"] = start["scheduler"]
        try:
            page = self._client().list_schedules(**kwargs)
        except ClientError as exc:
            if exc.response["Error"]["Code"] in ("ValidationException",
                                                 "InvalidNextTokenException"):
                raise invalid("next_token", "is not one this API gave out") from None
            raise
        views = []
        for summary in sorted(page.get("Schedules", []), key=lambda s: s["Name"]):
            try:
                views.append(self.get(summary["Name"], caller))
            except Problem:
                continue  # deleted between the list and the read, or outside the scope
        more = page.get("NextToken")
        return views, encode_page({"scheduler": more}) if more else None

    def _describe(self, name: str) -> dict[str, Any]:
        try:
            return self._client().get_schedule(Name=name, GroupName=self.settings.schedule_group)
        except ClientError as exc:
            if exc.response["Error"]["Code"] == "ResourceNotFoundException":
                raise not_found("schedule", name) from None
            raise

    # ------------------------------------------------------------------ runs
    def run(self, payload: dict[str, Any]) -> dict[str, Any]:
        """One run, as Scheduler delivers it to the maintenance function."""
        name = str(payload.get("schedule") or "")
        caller = Caller.system(f"schedule:{name}", role=Role.VIEWER)
        try:
            request = JobRequest.model_validate({**(payload.get("job") or {}),
                                                 "schedule": name})
            # Its own principal, with the least role its job needs (never its creator's).
            jobs = Jobs(settings=self.jobs)
            caller = _run_as(name, request, _kind_of(request, jobs))
            answer, _ = jobs.submit(request, caller)
        except (Problem, ValueError) as exc:
            reason = exc.message if isinstance(exc, Problem) else str(exc)[:500]
            self.audit.append(actor=caller.principal, action="schedule.run",
                              target=f"schedule:{name}", outcome="refused",
                              params={"reason": reason,
                                      "scheduled_time": payload.get("scheduled_time")})
            return {"schedule": name, "started": False, "reason": reason}
        return {"schedule": name, "started": True, **answer}

    # ------------------------------------------------------------------ helpers
    def _check_job(self, job: JobRequest, caller: Caller) -> HostKind:
        """The job as POST /jobs would check it (its policy for the creator's role too),
        without contacting any host. A tag selection that matches nothing yet is fine: it
        is resolved at each run. Returns the job's host kind."""
        jobs = Jobs(settings=self.jobs)
        probe = job.model_copy(update={"dry_run": True})
        try:
            try:
                items = jobs.resolve_targets(probe)
            except Problem:
                if job.targets.hosts is not None:
                    raise
                items = []
            kind = HostKind(items[0]["kind"]) if items else job.targets.kind
            assert kind is not None  # Targets: hosts, or a kind
            jobs.check_policy(kind, probe, caller, len(items))
            jobs.check_action(kind, probe, items)
        except Problem as exc:
            errors = [FieldError(f"job.{e.field}", e.reason) for e in exc.errors] or [
                FieldError("job", exc.message)]
            # Refused for the caller's role: still that; anything else: the job is invalid.
            refusal = Forbidden if isinstance(exc, Forbidden) else Invalid
            raise refusal(f"{errors[0].field}: {errors[0].reason}", errors,
                          extra=exc.extra) from None
        return kind

    def _exists(self, name: str) -> bool:
        try:
            self._describe(name)
        except Problem:
            return False
        return True

    @contextlib.contextmanager
    def _recorded(self, caller: Caller, action: str, name: str,
                  params: dict[str, Any] | None) -> Iterator[None]:
        """A schedule lives in EventBridge Scheduler, outside any DynamoDB transaction:
        its event is written first (outcome "requested"), so no schedule changes without
        one; should the change then fail, a second event says so (docs/audit.md)."""
        # In the form DynamoDB gives back (30.0 reads back as 30): the event's hash is
        # recomputed from what is read.
        stored = from_dynamo(to_dynamo(params)) if params else None
        event = {"actor": caller.principal, "source_ip": caller.source_ip,
                 "request_id": caller.request_id, "action": action,
                 "target": f"schedule:{name}"}
        self.audit.append(outcome="requested", params=stored, **event)
        try:
            yield
        except BaseException as exc:
            self.audit.append(outcome="failed", params={"reason": type(exc).__name__
                                                        if not isinstance(exc, Problem)
                                                        else exc.message}, **event)
            raise


def _view(schedule: dict[str, Any]) -> dict[str, Any]:
    try:
        payload = json.loads(schedule.get("Target", {}).get("Input") or "{}")
    except ValueError:
        payload = {}
    timezone = schedule.get("ScheduleExpressionTimezone") or "UTC"
    state = schedule.get("State", "ENABLED")
    next_at = None
    if state == "ENABLED":
        created = schedule.get("CreationDate")
        anchor = created if isinstance(created, dt.datetime) else None
        when = next_run(schedule["ScheduleExpression"], dt.datetime.now(dt.UTC),
                        anchor=anchor, timezone=timezone)
        next_at = when.strftime("%Y-%m-%dT%H:%M:%SZ") if when else None
    return ScheduleView(
        name=schedule["Name"], expression=schedule["ScheduleExpression"], timezone=timezone,
        description=schedule.get("Description"), state=state, paused=state == "DISABLED",
        job=_shown_job(payload.get("job") or {}, None), created_by=payload.get("created_by"),
        created_by_token=payload.get("created_by_token"),
        run_as=f"system:schedule:{schedule['Name']}" if payload.get("managed_by", "api") == "api"
        else None,
        created_at=payload.get("created_at"), managed_by=payload.get("managed_by", "api"),
        next_run=next_at, arn=schedule["Arn"],
    ).model_dump(mode="json")


def _kind_of(job: JobRequest, jobs: Jobs) -> HostKind | None:
    if job.targets.kind is not None:
        return job.targets.kind
    found = jobs.hosts.get_many((job.targets.hosts or [])[:1])
    return HostKind(next(iter(found.values()))["kind"]) if found else None


def _run_as(name: str, job: JobRequest, kind: HostKind | None) -> Caller:
    """A schedule's runs act as `system:schedule:<name>` with the least role its job needs
    (operator when the kind is unknown yet: the run is then checked as any job)."""
    role = Role.OPERATOR
    if kind is not None:
        needed = driver_class(kind).classify(job.action, job.params).least_role
        role = needed or Role.OPERATOR
    return Caller.system(f"schedule:{name}", role=role)


def _shown_job(job: dict[str, Any], kind: HostKind | None) -> dict[str, Any]:
    """A schedule's job as shown and audited: parameters masked by the driver's schema."""
    out = dict(job)
    if isinstance(out.get("params"), dict):
        kind = kind or (job.get("targets") or {}).get("kind")
        out["params"] = redact_params(kind, str(job.get("action", "")), out["params"])
    return redact(out)
