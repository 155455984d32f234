"""Jobs: resolve targets, check the action before any host is contacted, start the work,
and run it (worker side) so that every target ends with a result and the job with a
final status, whatever the hosts do."""

from __future__ import annotations

import json
import time
import uuid
from collections import Counter
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from typing import Any

from mailfleet.config import FanoutSettings, JobSettings
from mailfleet.drivers import driver_class
from mailfleet.drivers.base import Driver, validate_params
from mailfleet.drivers.policy import Decision
from mailfleet.errors import ErrorType, HostError, InvalidParams
from mailfleet.fanout import (
    CachedCheck,
    ErrorBudget,
    LocalErrorBudget,
    Rules,
    Summary,
    run,
    run_async,
)
from mailfleet.logic import connect
from mailfleet.logic.appliance_ops import PATH as APPLIANCE_PATH
from mailfleet.logic.appliance_ops import ApplianceOperations, is_long_operation
from mailfleet.logic.caller import Caller
from mailfleet.logic.distributed import DISTRIBUTED, DistributedJobs, choose_path
from mailfleet.logic.host_actions import HostActions
from mailfleet.logic.job_paths import JobPath, invoke_later, out_of_time_check
from mailfleet.logic.job_records import JobRecords, count_failures
from mailfleet.logic.problems import (
    FieldError,
    Forbidden,
    Invalid,
    conflict,
    forbidden,
    invalid,
    not_found,
)
from mailfleet.models.common import now_iso, resolve_limit
from mailfleet.models.hosts import Host, HostKind
from mailfleet.models.jobs import HostResult, JobRequest, JobStatus, ResultStatus, no_such_job
from mailfleet.models.tokens import Role
from mailfleet.store import secrets
from mailfleet.store.audit import AuditLog, ChangeRefused
from mailfleet.store.hosts import HostStore
from mailfleet.store.jobs import RAN_PREFIX, BatchedResults, JobNotFound, JobStore

# Command lists missing from the cache are fetched from this many hosts at once, each
# within this many seconds, when a job is submitted.
COMMAND_FETCH_PARALLEL = 16
COMMAND_FETCH_TIMEOUT = 5.0
# Parameters live in the job item until the job ends (DynamoDB items stop at 400 KB).
MAX_PARAMS_BYTES = 128 * 1024
# One host's action must fit in one worker invocation, with room to record it.
MAX_HOST_SECONDS = 840


class Jobs:
    def __init__(
        self,
        store: JobStore | None = None,
        hosts: HostStore | None = None,
        audit: AuditLog | None = None,
        settings: JobSettings | None = None,
    ) -> None:
        self.settings = settings or JobSettings()
        tables = self.settings.tables
        self.store = store or JobStore(tables.jobs_table, self.settings.limits.job_retention_days)
        self.hosts = hosts or HostStore(tables.hosts_table)
        self.audit = audit or AuditLog(tables.audit_table)
        self.records = JobRecords(self.store, self.hosts, self.audit)
        # The ids inside a scope, read once per instance (one request).
        self._scope_ids: tuple[Any, set[str]] | None = None

    # ------------------------------------------------------------------ submit
    def submit(self, request: JobRequest, caller: Caller) -> tuple[dict[str, Any], bool]:
        """Create and start a job. Returns (answer, dry_run)."""
        items = self.resolve_targets(request, caller)
        kind = HostKind(items[0]["kind"])
        # The policy first: nothing a host could be asked (not even its command list)
        # before the action and its parameters are known to be allowed for this caller.
        decision = self.check_policy(kind, request, caller, len(items))
        params = self.check_action(kind, request, items)
        self._check_timeout(kind, request, params)
        if len(json.dumps(params)) > MAX_PARAMS_BYTES:
            raise invalid("params", f"larger than {MAX_PARAMS_BYTES // 1024} KiB; pass large "
                          "inputs by reference (e.g. package_uri) instead")
        job_id = uuid.uuid4().hex
        total = len(items)
        approval = self._approval(decision, total)
        path = choose_path(
            total,
            request.timeout_seconds,
            resolve_limit(request.max_concurrency, total, minimum=1) or 1,
            self.settings,
        )
        if is_long_operation(kind.value, request.action, params):
            path = APPLIANCE_PATH  # whatever its size: the answer says where it will run
        job = self._job_item(job_id, request, kind, params, caller, decision, approval, path,
                             total)
        self._record_start(job, [i["id"] for i in items], caller, decision, approval)
        answer: dict[str, Any] = {"job_id": job_id, "status": job["status"], "total": total,
                                  "policy": decision.describe()}
        if request.dry_run:
            answer["dry_run"] = True
            answer["targets"] = [{"host": i["id"], "endpoint": i["endpoint"]} for i in items]
            answer["approval"] = approval
            return answer, True
        if approval["required"]:
            answer["approval"] = approval
            return answer, False  # started by POST /jobs/{id}/approve, or never
        answer["path"] = path
        self.path_for(job).launch(job, [i["id"] for i in items], caller)
        return answer, False

    @staticmethod
    def _job_item(job_id: str, request: JobRequest, kind: HostKind, params: dict[str, Any],
                  caller: Caller, decision: Decision, approval: dict[str, Any], path: str,
                  total: int) -> dict[str, Any]:
        """The job as stored: what was asked, by whom, under which policy and path."""
        shown_params = redact_params(kind, request.action, params)
        job = {
            "job_id": job_id,
            "action": request.action,
            "kind": kind.value,
            "params": shown_params,
            "run_params": json.dumps(params),
            "status": JobStatus.SUCCEEDED.value if request.dry_run
            else JobStatus.AWAITING_APPROVAL.value if approval["required"]
            else JobStatus.PENDING.value,
            "total": total,
            "created_by": caller.principal,
            "created_by_token": caller.token_id,
            "policy": decision.describe(),
            "approval": approval if approval["required"] else None,
            "created_at": now_iso(),
            "max_concurrency": request.max_concurrency,
            "max_errors": request.max_errors,
            "timeout_seconds": request.timeout_seconds,
            "dry_run": request.dry_run,
            "schedule": request.schedule,
            "path": path,
        }
        if request.dry_run:
            job.pop("run_params")
            job["finished_at"] = job["created_at"]
            job["counts"] = {ResultStatus.SKIPPED.value: total}
        return job

    def _record_start(self, job: dict[str, Any], targets: list[str], caller: Caller,
                      decision: Decision, approval: dict[str, Any]) -> None:
        """The job and its event together; its runner is started after (path_for)."""
        self.audit.record(
            self.store.create_change({k: v for k, v in job.items() if v is not None}, targets),
            actor=caller.principal,
            source_ip=caller.source_ip,
            request_id=caller.request_id,
            action="job.dry_run" if job["dry_run"] else "job.start",
            target=f"job:{job['job_id']}",
            job_id=job["job_id"],
            outcome="ok",
            params={
                "action": job["action"],
                "params": job["params"],
                "kind": job["kind"],
                "total": job["total"],
                "schedule": job["schedule"],
                "class": decision.action_class.value,
                "role": caller.role.value,
                "approval_required": approval["required"],
            },
        )

    @staticmethod
    def check_policy(kind: HostKind, request: JobRequest, caller: Caller | None,
                     total: int) -> Decision:
        """The action policy (drivers/policy.py) for this action and its parameters: 422
        when never allowed through a job, 403 when the caller's role is below the action's
        least role, 422 when a destructive action lacks its confirmation. No host is
        contacted; dry runs are checked the same way (without the confirmation)."""
        driver = driver_class(kind)
        static = driver.static_actions()
        if static and request.action not in static:
            known = ", ".join(sorted(static))
            raise invalid("action", f"{kind} hosts have no action {request.action!r}; "
                          f"known: {known}")
        decision = driver.classify(request.action, request.params)
        if not decision.allowed:
            where = f"params.{decision.field}" if decision.field else "action"
            reason = f"refused by policy rule {decision.rule}: {decision.reason}"
            raise Invalid(f"{where}: {reason}", [FieldError(where, reason)],
                          extra={"rule": decision.rule, "class": "never"})
        if caller is not None and decision.least_role is not None and not caller.role.allows(
            decision.least_role
        ):
            raise Forbidden(
                f"{request.action} on {kind} hosts needs the {decision.least_role.value} role "
                f"(policy rule {decision.rule}: {decision.action_class.value}, "
                f"{decision.reason}); you have {caller.role.value}",
                extra={"rule": decision.rule, "class": decision.action_class.value,
                       "least_role": decision.least_role.value})
        if decision.destructive and not request.dry_run:
            expected = f"{request.action}@{total}"
            if request.confirm != expected:
                reason = (f"{request.action} is destructive (policy rule {decision.rule}: "
                          f"{decision.reason}): confirm with \"{expected}\" (the action and "
                          "the number of targets it will hit)")
                raise Invalid(f"confirm: {reason}", [FieldError("confirm", reason)],
                              extra={"rule": decision.rule, "expected_confirm": expected})
        return decision

    def _approval(self, decision: Decision, total: int) -> dict[str, Any]:
        """Whether a second principal must approve the job, and until when."""
        config = self.settings.approval
        needed = decision.destructive and total > config.approval_threshold_hosts
        out: dict[str, Any] = {"required": needed,
                               "threshold_hosts": config.approval_threshold_hosts}
        if decision.destructive:
            out["confirm"] = f"{decision.action}@{total}"
        if needed:
            expires = time.time() + config.approval_expiry_seconds
            out["expires_at"] = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(expires))
            out["expires_epoch"] = int(expires)
        return out

    # ------------------------------------------------------------------ approvals
    def approve(self, job_id: str, caller: Caller) -> dict[str, Any]:
        """A second principal (admin, not the creator) lets an awaiting job start."""
        job = self._awaiting(job_id)
        if caller.principal == job.get("created_by") or (
            caller.token_id and caller.token_id == job.get("created_by_token")
        ):
            raise forbidden("a job must be approved by another principal than its creator")
        approval = dict(job.get("approval") or {}, approved_by=caller.principal,
                        approved_at=now_iso())
        try:
            # The approval and its event in one write; the worker is started after.
            self.audit.record(
                self.store.transition_change(job_id, JobStatus.AWAITING_APPROVAL.value,
                                             JobStatus.PENDING.value, approval=approval),
                actor=caller.principal, source_ip=caller.source_ip,
                request_id=caller.request_id, action="job.approve",
                target=f"job:{job_id}", job_id=job_id, outcome="ok",
                params={"created_by": job.get("created_by"),
                        "action": job["action"], "total": job["total"]})
        except ChangeRefused:
            raise conflict(f"job {job_id} is no longer awaiting approval",
                           status=self.store.status(job_id)[0]) from None
        job = dict(job, status=JobStatus.PENDING.value, approval=approval)
        self.path_for(job).launch(job, job["targets"], caller)
        return {"job_id": job_id, "status": JobStatus.PENDING.value, "total": job["total"],
                "path": job.get("path"), "approval": approval}

    def reject(self, job_id: str, caller: Caller) -> dict[str, Any]:
        """The creator or an admin turns an awaiting job down: CANCELLED, nothing ran."""
        job = self._awaiting(job_id)
        if caller.role is not Role.ADMIN and caller.principal != job.get("created_by"):
            raise forbidden("only an admin or the job's creator may reject it")
        if not self._cancel_awaiting(job, caller, "job.reject",
                                     "rejected by " + caller.principal):
            raise conflict(f"job {job_id} is no longer awaiting approval",
                           status=self.store.status(job_id)[0])
        return self.view(job_id)

    def expire_approvals(self, *, limit: int = 100) -> int:
        """End every awaiting job whose approval time is over (CANCELLED); returns how many."""
        jobs, _ = self.store.list(status=JobStatus.AWAITING_APPROVAL.value, limit=limit,
                                  next_token=None)
        return sum(1 for job in jobs if self._expire_if_due(self.store.get(job["job_id"])))

    def _awaiting(self, job_id: str) -> dict[str, Any]:
        try:
            job = self.store.get(job_id)
        except JobNotFound:
            raise not_found("job", job_id) from None
        if self._expire_if_due(job):
            raise conflict(f"job {job_id} was not approved within the hour: CANCELLED",
                           status=JobStatus.CANCELLED.value)
        if job["status"] != JobStatus.AWAITING_APPROVAL:
            raise conflict(f"job {job_id} is not awaiting approval", status=job["status"])
        return job

    def _expire_if_due(self, job: dict[str, Any]) -> bool:
        approval = job.get("approval") or {}
        if job.get("status") != JobStatus.AWAITING_APPROVAL or time.time() < float(
            approval.get("expires_epoch", float("inf"))
        ):
            return False
        return self._cancel_awaiting(job, Caller.system("approvals"), "job.expire",
                                     "not approved in time")

    def _cancel_awaiting(self, job: dict[str, Any], caller: Caller, event: str,
                         why: str) -> bool:
        job_id = job["job_id"]
        if "targets" not in job:  # a listed item (no target list): read it whole
            job = self.store.get(job_id)
        counts = {ResultStatus.SKIPPED.value: job["total"]}
        try:
            self.audit.record(
                self.store.transition_change(job_id, JobStatus.AWAITING_APPROVAL.value,
                                             JobStatus.CANCELLED.value, counts=counts,
                                             finished_at=now_iso(), note=why),
                actor=caller.principal, source_ip=caller.source_ip,
                request_id=caller.request_id, action=event, target=f"job:{job_id}",
                job_id=job_id, outcome=JobStatus.CANCELLED.value,
                params={"reason": why, "created_by": job.get("created_by")})
        except ChangeRefused:
            return False  # approved, rejected or expired meanwhile
        self.records.skip(job_id, job["targets"], f"not run: {why}")
        return True

    @staticmethod
    def _check_timeout(kind: HostKind, request: JobRequest, params: dict[str, Any]) -> None:
        """One host's action runs inside one worker invocation (15 min at most); a longer
        timeout would hand the host over forever. Long appliance operations are polled by
        their own state machine and may take longer."""
        from mailfleet.logic.appliance_ops import is_long_operation

        if request.timeout_seconds > MAX_HOST_SECONDS and not is_long_operation(
            kind, request.action, params
        ):
            raise invalid(
                "timeout_seconds",
                f"at most {MAX_HOST_SECONDS} s for one host's action (a worker runs 15 min at "
                "most); only long appliance operations may wait longer",
            )

    def resolve_targets(
        self, request: JobRequest, caller: Caller | None = None
    ) -> list[dict[str, Any]]:
        """The target hosts' items; a scoped caller's are only ever hosts in its scope."""
        targets = request.targets
        scope = caller.scope if caller is not None else None
        if targets.hosts is not None:
            found = self.hosts.get_many(targets.hosts)
            missing = [h for h in targets.hosts if h not in found]
            if missing:
                raise invalid("targets.hosts", "unknown host ids: " + ", ".join(missing[:20]))
            items = [found[h] for h in targets.hosts]
            if caller is not None:
                for item in items:
                    caller.check_acts(item, item["id"], "targets.hosts")
            kinds = sorted({i["kind"] for i in items})
            if len(kinds) > 1:
                raise invalid(
                    "targets.hosts",
                    "all targets of a job must be of one kind, got " + ", ".join(kinds),
                )
            return items
        kind, tags = targets.kind, targets.tags or {}
        if scope is not None:
            narrowed = scope.narrow(kind, tags)
            if narrowed is None:
                raise forbidden("targets: this kind and these tags are outside this token's scope")
            kind, tags = narrowed
        items, _ = self.hosts.list(kind=kind, tags=tags, include_maintenance=False)
        if not items:
            raise invalid(
                "targets",
                f"no {targets.kind} host outside maintenance matches tags {targets.tags or {}}",
            )
        return sorted(items, key=lambda i: i["id"])

    def check_action(
        self, kind: HostKind, request: JobRequest, items: list[dict[str, Any]]
    ) -> dict[str, Any]:
        """The action and its parameters, checked before any host is asked to run it."""
        driver = driver_class(kind)
        if not driver.describes_own_actions:
            spec = driver.static_actions().get(request.action)
            if spec is None:
                known = ", ".join(sorted(driver.static_actions()))
                raise invalid(
                    "action", f"{kind} hosts have no action {request.action!r}; known: {known}"
                )
            try:
                return validate_params(spec, request.params)
            except InvalidParams as exc:
                raise _params_problem(exc) from None
        return self._check_against_command_lists(driver, request, items)

    def _check_against_command_lists(self, driver: type[Driver], request: JobRequest,
                                     items: list[dict[str, Any]]) -> dict[str, Any]:
        """Hosts that describe their own actions: checked against each one's list."""
        lists: dict[str, list[dict[str, Any]]] = {}
        missing = []
        for item in items:
            cached = connect.cached_commands(item)
            if cached is not None:
                lists[item["id"]] = cached
            else:
                missing.append(item)
        if missing and not request.dry_run:
            # Ask the hosts we know nothing about yet; a host that can't answer will fail
            # at run time as well, where its result says why.
            def fetch(item: dict[str, Any]) -> tuple[str, list[dict[str, Any]] | None]:
                try:
                    return item["id"], connect.refresh_commands(
                        item, self.hosts, COMMAND_FETCH_TIMEOUT
                    )
                except HostError:
                    return item["id"], None

            with ThreadPoolExecutor(COMMAND_FETCH_PARALLEL) as pool:
                for host_id, commands in pool.map(fetch, missing):
                    if commands is not None:
                        lists[host_id] = commands
        params = dict(request.params)
        problems: dict[tuple[str, str], list[str]] = {}
        for host_id, commands in lists.items():
            try:
                params = driver.validate_against_commands(commands, request.action,
                                                          request.params)
            except HostError as exc:
                field = (
                    "params." + str(exc.code)
                    if isinstance(exc, InvalidParams) and exc.code
                    else ("action" if exc.type == "unsupported" else "params")
                )
                problems.setdefault((field, exc.message), []).append(host_id)
        if problems:
            errors = [
                FieldError(
                    f, f"{m} (hosts: {', '.join(h[:10])}{' and more' if len(h) > 10 else ''})"
                )
                for (f, m), h in problems.items()
            ]
            raise Invalid("the action does not fit the hosts' own command lists", errors)
        return params

    def path_for(self, job: dict[str, Any]) -> JobPath:
        """The path a job runs on: a long appliance operation on its state machine,
        whatever the job's size; else the one chosen when it was submitted."""
        params = json.loads(job.get("run_params") or "{}")
        if is_long_operation(job.get("kind"), job["action"], params):
            return ApplianceOperations(self.records, self.settings.appliance)
        if job.get("path") == DISTRIBUTED:
            return DistributedJobs(self)
        return InProcessPath(self.records, self.settings.fanout)

    # ------------------------------------------------------------------ reads
    def view(
        self,
        job_id: str,
        *,
        results: bool = True,
        results_limit: int | None = None,
        next_token: str | None = None,
        caller: Caller | None = None,
    ) -> dict[str, Any]:
        try:
            job = self.store.get(job_id)
        except JobNotFound:
            raise not_found("job", job_id) from None
        if caller is not None and not self.sees(job, caller):
            raise not_found("job", job_id)
        if self._expire_if_due(job):
            job = self.store.get(job_id)
        out = _public(job)
        if not results:
            return out
        recorded, token = self.store.results(job_id, limit=results_limit, next_token=next_token)
        by_host = {r["host"]: r for r in recorded}
        targets: list[str] = job.get("targets", [])
        if results_limit is None or token is None:
            # Targets with no recorded result yet: pending (or, for a dry run, not contacted).
            if job.get("dry_run"):
                filler: dict[str, Any] = {
                    "status": ResultStatus.SKIPPED.value,
                    "output": {"skipped": "dry run: not contacted"},
                }
            elif job["status"] == JobStatus.AWAITING_APPROVAL:
                filler = {"status": ResultStatus.PENDING.value,
                          "output": {"pending": "awaiting approval"}}
            elif job["status"] in (JobStatus.PENDING, JobStatus.RUNNING):
                filler = {"status": ResultStatus.PENDING.value}
            else:
                filler = {
                    "status": ResultStatus.SKIPPED.value,
                    "output": {"skipped": "no result was recorded"},
                }
            for host in targets:
                if host not in by_host and next_token is None:
                    recorded.append({"host": host, "attempts": 0, **filler})
        out["results"] = recorded
        out["next_token"] = token
        if token is None and next_token is None:
            # Every result is in hand: count them (the job item's counts are written at the end).
            out["counts"] = dict(Counter(r["status"] for r in recorded))
        return out

    def list(
        self,
        *,
        status: str | None,
        limit: int,
        next_token: str | None,
        caller: Caller | None = None,
    ) -> tuple[list[dict[str, Any]], str | None]:
        jobs, token = self.store.list(status=status, limit=limit, next_token=next_token)
        if caller is not None and caller.scope is not None:
            # A page may come back shorter: its jobs outside the scope are left out.
            jobs = [j for j in jobs if self.sees(j, caller)]
        # An approval past its hour shows as what it is: CANCELLED.
        jobs = [self.store.get(j["job_id"]) if self._expire_if_due(j) else j for j in jobs]
        return [_public(j) for j in jobs], token

    def sees(self, job: dict[str, Any], caller: Caller) -> bool:
        """A scoped caller sees a job only if every one of its targets is in its scope
        (a target since removed from the inventory counts as outside)."""
        scope = caller.scope
        if scope is None:
            return True
        if scope.kind is not None and job.get("kind") not in (None, scope.kind.value):
            return False
        targets: list[str] = job.get("targets") or []
        if not targets:
            return job.get("created_by") == caller.principal
        if self._scope_ids is None or self._scope_ids[0] != scope:
            kind = scope.kind.value if scope.kind else None
            items, _ = self.hosts.list(kind=kind, tags=scope.tags)
            self._scope_ids = (scope, {i["id"] for i in items})
        return set(targets) <= self._scope_ids[1]

    def wait(self, job_id: str, seconds: float) -> bool:
        """Poll until the job is final or `seconds` pass; true if it finished."""
        end = time.monotonic() + seconds
        delay = 0.05
        while True:
            status, _ = self.store.status(job_id)
            if JobStatus(status).final:
                return True
            if time.monotonic() >= end:
                return False
            time.sleep(min(delay, max(0.0, end - time.monotonic())))
            # At most 0.1 s late: a job of a thousand hosts takes about a second.
            delay = min(delay * 1.5, 0.1)

    def cancel(self, job_id: str, caller: Caller) -> dict[str, Any]:
        if caller.scope is not None:
            try:
                job = self.store.get(job_id)
            except JobNotFound:
                raise not_found("job", job_id) from None
            if not self.sees(job, caller):
                raise forbidden(f"job {job_id!r} acts on hosts outside this token's scope")
        try:
            status = self.store.status(job_id)[0]
            if status == JobStatus.AWAITING_APPROVAL:
                # Nothing runs yet: cancelling it is turning it down.
                view = self.reject(job_id, caller)
                return {"job_id": job_id, "status": view["status"], "cancel_requested": True}
        except JobNotFound:
            raise not_found("job", job_id) from None
        event = {"actor": caller.principal, "source_ip": caller.source_ip,
                 "request_id": caller.request_id, "action": "job.cancel",
                 "target": f"job:{job_id}", "job_id": job_id}
        if not JobStatus(status).final:
            try:
                self.audit.record(self.store.cancel_change(job_id), outcome="requested", **event)
            except ChangeRefused:  # it ended meanwhile
                status = self.store.status(job_id)[0]
            else:
                self.path_for(self.store.get(job_id)).stop(job_id)
                return {"job_id": job_id, "status": status, "cancel_requested": True}
        self.audit.append(outcome="already_final", **event)
        return {"job_id": job_id, "status": status, "cancel_requested": False}

    # ------------------------------------------------------------------ worker side
    def execute(
        self,
        job_id: str,
        *,
        remaining_ms: Callable[[], int] | None = None,
        continue_later: Callable[[str], None] | None = None,
    ) -> dict[str, Any]:
        """Run a job to its end (or hand the rest over when this worker runs out of time).
        Safe to call twice: hosts with a recorded result are not run again."""
        try:
            job = self.store.get(job_id)
        except JobNotFound:
            # A replayed or stray invocation: nothing to run, nothing to record.
            return no_such_job(job_id=job_id)
        if JobStatus(job["status"]).final:
            return {"job_id": job_id, "status": job["status"], "skipped": "already final"}
        if job["status"] == JobStatus.AWAITING_APPROVAL:
            # Only an approval starts it (a stray or early invocation runs nothing).
            return {"job_id": job_id, "status": job["status"], "skipped": "awaiting approval"}
        path = InProcessPath(self.records, self.settings.fanout)
        targets: list[str] = job["targets"]
        # A resumed job's hosts already done (a job never started has none: no read).
        previous = ([] if job["status"] == JobStatus.PENDING
                    else self.store.results(job_id)[0])
        done = {r["host"] for r in previous}
        todo = [h for h in targets if h not in done]
        if job.get("cancel_requested"):
            self.records.skip(job_id, todo, "the job was cancelled before it started")
            return path.close(job, stopped_by="cancelled")
        self.store.mark_running(job_id, now_iso(), job.get("path", "inprocess"))
        total = len(targets)
        max_errors = resolve_limit(job.get("max_errors"), total)
        summary = self.run_hosts(
            job,
            todo,
            concurrency=resolve_limit(job["max_concurrency"], total, minimum=1) or 1,
            budget=LocalErrorBudget(max_errors, count=count_failures(previous)),
            out_of_time=out_of_time_check(remaining_ms, float(job["timeout_seconds"])),
        )
        if summary.stopped_by == "time" and continue_later is not None:
            continue_later(job_id)
            return {"job_id": job_id, "status": JobStatus.RUNNING.value, "handed_over": True}
        if summary.stopped_by == "time":
            return path.close(job, stopped_by=summary.stopped_by)
        # Every host now has a result, and this worker knows each one's status: the job
        # is closed without reading a thousand results back.
        counts = Counter(r["status"] for r in previous) + summary.counts
        return path.close(job, stopped_by=summary.stopped_by, counts=dict(counts))

    def run_hosts(
        self,
        job: dict[str, Any],
        todo: list[str],
        *,
        concurrency: int,
        budget: ErrorBudget,
        out_of_time: Callable[[], bool] | None = None,
        flush_interval: float = 1.0,
    ) -> Summary:
        """Run the job's action on the hosts `todo` (ids without a result yet), each result
        recorded; shared by the in-process worker and each batch of the Distributed Map."""
        job_id = job["job_id"]
        params = json.loads(job.get("run_params") or "{}")
        sink = BatchedResults(self.store, job_id, interval=flush_interval)
        items: dict[str, dict[str, Any]] = {}  # filled as the hosts are read
        gone: list[str] = []
        actions = HostActions(job_id, job["action"], params, items, self.records,
                              refused=self._refused_at_run(job, params))
        hosts = self._hosts_as_read(todo, items, gone, sink)
        engine = Rules(
            concurrency=concurrency,
            timeout_seconds=float(job["timeout_seconds"]),
            budget=budget,
            out_of_time=out_of_time,
            should_stop=CachedCheck(lambda: self.store.status(job_id)[1]),
        )
        try:
            if driver_class(job["kind"]).has_async_perform:
                summary = run_async(hosts, actions.perform_async, sink, **engine)
            else:
                summary = run(hosts, actions.perform, sink, **engine)
        finally:
            sink.close()
        if gone:  # counted with the hosts that ran
            summary.counts[ResultStatus.FAILED.value] += len(gone)
        return summary

    def _hosts_as_read(self, todo: list[str], items: dict[str, dict[str, Any]],
                       gone: list[str], sink: BatchedResults) -> Iterator[Host]:
        """The hosts `todo`, in order, as the inventory answers (HostStore.read_ahead):
        the first hundred run while the rest are read, with their secrets. Each item goes
        into `items` before its host is yielded; a host no longer in the inventory gets
        its failed result here and is not run."""
        removed = HostError(ErrorType.UNSUPPORTED, "host was removed from the inventory")

        def read_secrets(found: dict[str, dict[str, Any]]) -> None:
            secrets.prefetch(i["credentials_secret"] for i in found.values()
                             if i.get("credentials_secret"))

        for ids, found in self.hosts.read_ahead(todo, also=read_secrets):
            for host_id in ids:
                item = found.get(host_id)
                if item is None:
                    gone.append(host_id)
                    sink.record(HostResult.failed(host_id, removed).item())
                    continue
                items[host_id] = item
                yield Host.model_validate(item)

    @staticmethod
    def _refused_at_run(job: dict[str, Any], params: dict[str, Any]) -> HostError | None:
        """The policy again, worker side (both job paths): a job item that reached a worker
        without passing it (or written before this policy) runs nowhere."""
        kind = job.get("kind")
        if not kind:
            return None
        decision = driver_class(kind).classify(job["action"], params)
        if decision.allowed:
            return None
        return HostError(ErrorType.INVALID_PARAMS, f"refused by policy rule {decision.rule}: "
                         f"{decision.reason}", code=decision.rule)

    def fail_job(self, job_id: str, reason: str) -> bool:
        """Last resort when the worker itself breaks: account for every host and end it.
        False when the job had already ended."""
        job = self.store.get(job_id)
        if JobStatus(job["status"]).final:
            return False
        self.records.fail(job_id, job["targets"], reason)
        self.records.close(job, Caller.system("fanout-worker"), stopped_by=None)
        return True


class InProcessPath(JobPath):
    """One fan-out worker invocation runs every host (Jobs.execute), handing the rest over
    to a fresh invocation when it runs out of time."""

    def __init__(self, records: JobRecords | None = None,
                 settings: FanoutSettings | None = None) -> None:
        super().__init__(records)
        self.settings = settings or FanoutSettings()

    def start(self, job: dict[str, Any], targets: list[str]) -> None:
        invoke_later(self.settings.fanout_function, "FANOUT_FUNCTION",
                     {"job_id": job["job_id"]})


def _public(job: dict[str, Any]) -> dict[str, Any]:
    out = {k: v for k, v in job.items()
           if k not in ("run_params", "targets", "error_count") and not k.startswith(RAN_PREFIX)}
    out.setdefault("counts", {})
    out.setdefault("finished_at", None)
    return out


def redact_params(kind: HostKind | str | None, action: str, params: dict[str, Any]
                  ) -> dict[str, Any]:
    """Parameters as stored, audited and shown: the kind's driver masks what its schema
    says is secret (every driver's rules when the kind is not known yet)."""
    from mailfleet.drivers import KINDS

    kinds = [HostKind(kind)] if kind else list(KINDS)
    out = params
    for each in kinds:
        out = driver_class(each).redact_params(action, out)
    return out


def _params_problem(exc: InvalidParams) -> Invalid:
    where = f"params.{exc.field}" if exc.field else "params"
    return invalid(where, exc.message.split(": ", 1)[-1])
