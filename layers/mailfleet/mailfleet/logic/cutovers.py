"""Cutovers, API side: check a request, lock its accounts, start the state machine;
show cutovers; roll a finished one back; and write the final status, from the state
machine's Finish step or, when the execution failed or was stopped, from whoever notices
first (GET, the execution-ended event, a later submit meeting its locks).

The per-account steps run in mailfleet.logic.cutover_steps.
"""

from __future__ import annotations

import contextlib
import datetime
import json
import time
import uuid
from collections import Counter
from enum import StrEnum
from typing import Any, ClassVar

from mailfleet import aws
from mailfleet.config import CutoverSettings, Tables
from mailfleet.drivers import kind_for
from mailfleet.drivers.base import HostRole
from mailfleet.logic.caller import Caller
from mailfleet.logic.problems import Conflict, Unavailable, conflict, forbidden, invalid, not_found
from mailfleet.models.common import now_iso, resolve_limit
from mailfleet.models.cutovers import (
    AccountStatus,
    CutoverRequest,
    CutoverStatus,
    HostSelection,
    Strategy,
    account_key,
)
from mailfleet.models.hosts import HostKind
from mailfleet.store.audit import AuditLog, Change, ChangeRefused
from mailfleet.store.cutovers import CutoverNotFound, CutoverStore, LockLost
from mailfleet.store.hosts import HostStore

SYSTEM = Caller.system("cutover")
# A PENDING cutover whose execution never started (the API died in between) stops
# holding its accounts after this long.
PENDING_GRACE_SECONDS = 300
CONFLICTS_SHOWN = 100
ACCOUNTS_PAGE = 1000
_LIVE = (CutoverStatus.PENDING.value, CutoverStatus.RUNNING.value)


class ExecutionStatus(StrEnum):
    """Step Functions' own statuses of an execution (DescribeExecution, EventBridge)."""

    RUNNING = "RUNNING"
    SUCCEEDED = "SUCCEEDED"
    FAILED = "FAILED"
    TIMED_OUT = "TIMED_OUT"
    ABORTED = "ABORTED"
    PENDING_REDRIVE = "PENDING_REDRIVE"


# What an ended execution says about the cutover, when our Finish step could not say it.
_EXECUTION_ENDED = {ExecutionStatus.ABORTED: "stopped", ExecutionStatus.FAILED: "failed",
                    ExecutionStatus.TIMED_OUT: "timed out"}


class Cutovers:
    # Migrations (mailfleet.logic.migrations) are cutovers that carry the mail first: the
    # same items, locks, start, rollback and finish, under their own name.
    noun = "cutover"
    store_class: type[CutoverStore] = CutoverStore
    # What an operator should check on an account a stopped execution left half-done.
    in_progress_advice = "its mappings may differ between proxies; check it and roll it back"
    # Each kind's coordinator by its noun, registered as it is defined: an account's lock
    # may be held by the other kind, whose own rules then say if it is still live.
    by_noun: ClassVar[dict[str, type[Cutovers]]] = {}

    def __init_subclass__(cls, **kwargs: Any) -> None:
        super().__init_subclass__(**kwargs)
        Cutovers.by_noun[cls.noun] = cls

    def __init__(
        self,
        store: CutoverStore | None = None,
        hosts: HostStore | None = None,
        audit: AuditLog | None = None,
        settings: CutoverSettings | None = None,
        tables: Tables | None = None,
    ) -> None:
        self.settings = settings or CutoverSettings()
        tables = tables or Tables()
        self.store = store or self.store_class(tables.cutovers_table)
        self.hosts = hosts or HostStore(tables.hosts_table)
        self.audit = audit or AuditLog(tables.audit_table)
        # The ids inside a scope, read once per instance (one request).
        self._scope_ids: tuple[Any, set[str]] | None = None

    # ------------------------------------------------------------------ submit
    def submit(self, request: CutoverRequest, caller: Caller) -> tuple[dict[str, Any], bool]:
        """Create and start a cutover. Returns (answer, dry_run)."""
        director = request.strategy == Strategy.DIRECTOR
        kind = kind_for(HostRole.DIRECTOR if director else HostRole.PROXY)
        proxies, left_out = self._resolve(request.proxies, kind, "proxies", caller)
        backends: list[dict[str, Any]] = []
        if request.backends is not None:
            backends, _ = self._resolve(request.backends, kind_for(HostRole.BACKEND), "backends",
                                        caller)
        keys, stale = self._claim(request.accounts)
        plan = {
            "strategy": request.strategy.value,
            "destination": request.destination,
            "proxies": [p["id"] for p in proxies],
            "backends": [b["id"] for b in backends],
            "delay_seconds": request.delay_seconds,
        }
        if request.drain:
            plan["drain"] = request.drain
        cutover = self._new_item(plan, request, caller, left_out)
        cutover_id, total = cutover["cutover_id"], cutover["total"]
        answer: dict[str, Any] = {
            "cutover_id": cutover_id,
            "status": cutover["status"],
            "total": total,
        }
        if request.dry_run:
            self._record_dry_run(cutover, request, caller)
            answer.update(
                status=cutover["status"],
                dry_run=True,
                max_concurrency=cutover["max_concurrency"],
                proxies=[_endpoint(p) for p in proxies],
                backends=[_endpoint(b) for b in backends],
                left_out_in_maintenance=left_out,
            )
            return answer, True
        answer["status"] = self._reserve_and_start(cutover, keys, stale, request, caller)
        return answer, False

    def _claim(self, accounts: list[str]) -> tuple[dict[str, str], Any]:
        """The accounts by lock key and the stale locks to take over; refuses the request
        when an account is busy in a live cutover or migration."""
        keys = {account_key(a): a for a in accounts}
        busy, stale = self._conflicts(keys)
        if busy:
            raise busy_accounts(busy)
        return keys, stale

    def _new_item(self, plan: dict[str, Any], request: Any, caller: Caller,
                  left_out: list[str]) -> dict[str, Any]:
        """A new PENDING cutover or migration item for the request's accounts (shared by
        both: the same table item under its own phase)."""
        total = len(request.accounts)
        item: dict[str, Any] = {
            "cutover_id": uuid.uuid4().hex,
            "status": CutoverStatus.PENDING.value,
            "phase": self.noun,
            "total": total,
            "plan": plan,
            "max_concurrency": min(resolve_limit(request.max_concurrency, total, minimum=1)
                                   or 1, total),
            "tolerated_failure_percentage": request.tolerated_failure_percentage,
            "counts": {AccountStatus.PENDING.value: total},
            "created_by": caller.principal,
            "created_at": now_iso(),
            "dry_run": request.dry_run,
        }
        if left_out:
            item["left_out_in_maintenance"] = left_out
        return item

    def _record_dry_run(self, item: dict[str, Any], request: Any, caller: Caller) -> None:
        """A dry run ends at once, every account skipped, with its audit record."""
        item.update(status=CutoverStatus.SUCCEEDED.value,
                    counts={AccountStatus.SKIPPED.value: item["total"]},
                    finished_at=item["created_at"])
        self._audit_submit(item, caller, request, self.store.create_change(item))

    def _reserve_and_start(self, item: dict[str, Any], keys: dict[str, str],
                           stale: Any, request: Any, caller: Caller) -> str:
        """Record the item, lock its accounts, write them, submit it with its event, and
        start its state machine (shared by cutovers and migrations). Returns the status."""
        item_id = item["cutover_id"]
        self.store.create(item)
        try:
            self.store.take_locks(item_id, keys, stale)
        except LockLost:
            self.store.delete(item_id)
            busy, _ = self._conflicts(keys)
            raise busy_accounts(busy) from None
        self.store.write_accounts(item_id, request.accounts)
        # The item so far was a reservation (its locks are not stale while it is PENDING):
        # it becomes submitted with its event, before anything runs.
        self._audit_submit(item, caller, request, self.store.transition_change(
            item_id, [CutoverStatus.PENDING.value], CutoverStatus.PENDING.value,
            submitted_at=now_iso()))
        return self._start(item, list(range(len(request.accounts))), keys, caller)

    def _resolve(
        self, selection: HostSelection, kind: HostKind, field: str, caller: Caller | None = None
    ) -> tuple[list[dict[str, Any]], list[str]]:
        """The hosts selected, all of `kind`, and the tag-matched ones left out for
        maintenance (every proxy must be switched: the caller is told which were not).
        A scoped caller selects only hosts in its scope (others: 403)."""
        scope = caller.scope if caller is not None else None
        if selection.hosts is not None:
            found = self.hosts.get_many(selection.hosts)
            missing = [h for h in selection.hosts if h not in found]
            if missing:
                raise invalid(f"{field}.hosts", "unknown host ids: " + ", ".join(missing[:20]))
            wrong = [h for h in selection.hosts if found[h]["kind"] != kind]
            if wrong:
                raise invalid(
                    f"{field}.hosts", f"must all be {kind} hosts; not: " + ", ".join(wrong[:20])
                )
            if caller is not None:
                for h in selection.hosts:
                    caller.check_acts(found[h], h, f"{field}.hosts")
            return [found[h] for h in selection.hosts], []
        kind_name: str | None = kind.value
        tags = selection.tags or {}
        if scope is not None:
            narrowed = scope.narrow(kind_name, tags)
            if narrowed is None:
                raise forbidden(f"{field}: {kind} hosts with these tags are outside this "
                                "token's scope")
            kind_name, tags = narrowed
        items, _ = self.hosts.list(kind=kind_name, tags=tags)
        chosen = sorted((i for i in items if not i.get("maintenance")), key=lambda i: i["id"])
        left_out = sorted(i["id"] for i in items if i.get("maintenance"))
        if not chosen:
            raise invalid(
                f"{field}.tags", f"no {kind} host outside maintenance matches {selection.tags}"
            )
        return chosen, left_out

    def _conflicts(
        self, keys: dict[str, str], own: str | None = None
    ) -> tuple[list[dict[str, str]], dict[str, str]]:
        """(accounts held by a live cutover, {key: finished holder} whose locks are stale)."""
        holders = {k: c for k, c in self.store.lock_holders(keys).items() if c != own}
        if not holders:
            return [], {}
        cutovers = self.store.get_many(holders.values())
        live = {c for c, item in cutovers.items() if self._still_live(item)}
        busy = [
            {"account": keys[k], f"{cutovers[c].get('kind', 'cutover')}_id": c}
            for k, c in holders.items() if c in live
        ]
        stale = {k: c for k, c in holders.items() if c not in live}
        return busy, stale

    def _still_live(self, item: dict[str, Any]) -> bool:
        if item["status"] not in _LIVE:
            return False
        if item["status"] == CutoverStatus.PENDING.value and not item.get("execution_arn"):
            return _age_seconds(item["created_at"]) < PENDING_GRACE_SECONDS
        # Its execution may have ended without a word (stopped, failed): find out now, by
        # the rules of its own kind (a migration may hold a cutover's account and back).
        holder = self if item.get("kind", "cutover") == self.noun else _other_kind(item, self)
        return holder.reconcile(item)["status"] in _LIVE

    def state_machine_arn(self) -> str | None:
        return self.settings.cutover_state_machine_arn

    def _start(
        self, cutover: dict[str, Any], positions: list[int], keys: dict[str, str],
        caller: Caller, name: str | None = None,
    ) -> str:
        cutover_id = cutover["cutover_id"]
        arn = self.state_machine_arn()
        execution_input = {
            "cutover_id": cutover_id,
            "mode": cutover["phase"],
            "plan": cutover["plan"],
            "positions": positions,
            "max_concurrency": min(cutover["max_concurrency"], max(len(positions), 1)),
            # Always there (null: no drain), so the Choice never looks at a missing path.
            "drain": None,
        }
        drained = cutover["phase"] == "cutover" or cutover.get("drain_previous")
        if cutover["plan"].get("drain") and drained:
            execution_input["drain"] = cutover["plan"]["drain"]
        try:
            if not arn:
                raise RuntimeError(f"the {self.noun} state machine ARN is not configured")
            started = aws.client("stepfunctions").start_execution(
                stateMachineArn=arn,
                # Named: a unique name per run, and a retried start cannot run twice.
                name=name or cutover_id,
                input=json.dumps(execution_input),
            )
        except Exception as exc:
            reason = f"could not start the {self.noun}'s state machine: {type(exc).__name__}"
            self.store.release_locks(cutover_id, keys)
            with contextlib.suppress(ChangeRefused):  # already final: recorded then
                self.audit.record(
                    self.store.finish_change(cutover_id, CutoverStatus.FAILED.value,
                                             finished_at=now_iso(),
                                             error={"type": "start", "message": reason}),
                    actor=caller.principal, action=f"{self.noun}.end",
                    target=f"{self.noun}:{cutover_id}", cutover_id=cutover_id,
                    outcome=CutoverStatus.FAILED.value, params={"reason": reason},
                )
            raise Unavailable(
                f"the {self.noun} was recorded but could not be started; it is marked FAILED",
                extra={f"{self.noun}_id": cutover_id},
            ) from None
        self.store.transition(
            cutover_id,
            [CutoverStatus.PENDING.value, CutoverStatus.RUNNING.value],
            CutoverStatus.RUNNING.value,
            execution_arn=started["executionArn"],
            started_at=now_iso(),
        )
        return CutoverStatus.RUNNING.value

    def _audit_submit(
        self, cutover: dict[str, Any], caller: Caller, request: Any, change: Change
    ) -> None:
        self.audit.record(
            change,
            actor=caller.principal,
            source_ip=caller.source_ip,
            request_id=caller.request_id,
            action=f"{self.noun}.dry_run" if request.dry_run else f"{self.noun}.start",
            target=f"{self.noun}:{cutover['cutover_id']}",
            cutover_id=cutover["cutover_id"],
            outcome="ok",
            params={
                **cutover["plan"],
                "total": cutover["total"],
                "accounts": request.accounts[:20],
                "max_concurrency": cutover["max_concurrency"],
                "tolerated_failure_percentage": cutover["tolerated_failure_percentage"],
            },
        )

    # ------------------------------------------------------------------ rollback
    def rollback(self, cutover_id: str, caller: Caller) -> dict[str, Any]:
        """Put every DONE account back as remembered, in a new execution."""
        cutover = self._item(cutover_id)
        if not self.sees(cutover, caller):
            raise forbidden(f"cutover {cutover_id!r} acts on hosts outside this token's scope")
        cutover = self.reconcile(cutover)
        if cutover.get("dry_run"):
            raise conflict("a dry run changed nothing; there is nothing to roll back")
        if not CutoverStatus(cutover["status"]).final:
            raise conflict(
                f"the {self.noun} is still running; roll it back once it has finished",
                status=cutover["status"],
            )
        done, _ = self.store.accounts(
            cutover_id, status=AccountStatus.DONE.value, fields=["n", "account"]
        )
        if not done:
            raise conflict(
                f"no account of this {self.noun} is DONE; there is nothing to roll back")
        keys = {account_key(a["account"]): a["account"] for a in done}
        busy, stale = self._conflicts(keys, own=cutover_id)
        if busy:
            raise busy_accounts(busy)
        rollbacks = int(cutover.get("rollbacks", 0)) + 1
        if not self.store.transition(
            cutover_id,
            [cutover["status"]],
            CutoverStatus.RUNNING.value,
            phase="rollback",
            rollbacks=rollbacks,
            status_before_rollback=cutover["status"],
            rollback_requested_by=caller.principal,
            rollback_requested_at=now_iso(),
        ):
            raise conflict(f"the {self.noun} changed meanwhile; try again")
        try:
            self.store.take_locks(cutover_id, keys, stale)
        except LockLost:
            self.store.transition(
                cutover_id, [CutoverStatus.RUNNING.value], cutover["status"], phase=self.noun
            )
            busy, _ = self._conflicts(keys, own=cutover_id)
            raise busy_accounts(busy) from None
        # With its locks held the rollback is on: on the record with that fact.
        self.audit.record(
            self.store.transition_change(cutover_id, [CutoverStatus.RUNNING.value],
                                         CutoverStatus.RUNNING.value, rollback_locked_at=now_iso()),
            actor=caller.principal,
            source_ip=caller.source_ip,
            request_id=caller.request_id,
            action=f"{self.noun}.rollback",
            target=f"{self.noun}:{cutover_id}",
            cutover_id=cutover_id,
            outcome="ok",
            params={"accounts": len(done)},
        )
        cutover.update(phase="rollback")
        status = self._start(
            cutover,
            [a["n"] for a in done],
            keys,
            caller,
            name=f"{cutover_id}-rollback-{rollbacks}",
        )
        return {f"{self.noun}_id": cutover_id, "status": status, "total": len(done)}

    # ------------------------------------------------------------------ reads
    def view(
        self,
        cutover_id: str,
        *,
        accounts_limit: int | None = ACCOUNTS_PAGE,
        next_token: str | None = None,
        caller: Caller | None = None,
    ) -> dict[str, Any]:
        item = self._item(cutover_id)
        if caller is not None and not self.sees(item, caller):
            raise not_found(self.noun, cutover_id)
        cutover = self.reconcile(item)
        out = self.public(cutover)
        accounts, token = self.store.accounts(
            cutover_id, limit=accounts_limit, next_token=next_token
        )
        out["accounts"] = [_account_view(a) for a in accounts]
        out["next_token"] = token
        return out

    def list(
        self, *, status: str | None, limit: int, next_token: str | None,
        caller: Caller | None = None,
    ) -> tuple[list[dict[str, Any]], str | None]:
        items, token = self.store.list(status=status, limit=limit, next_token=next_token)
        if caller is not None:
            # A page may come back shorter: cutovers outside the caller's scope are left out.
            items = [i for i in items if self.sees(i, caller)]
        return [self.public(self.reconcile(i)) for i in items], token

    def public(self, item: dict[str, Any]) -> dict[str, Any]:
        """The item as the API shows it."""
        return _public(item)

    def sees(self, cutover: dict[str, Any], caller: Caller) -> bool:
        """A scoped caller sees a cutover only if all its proxies and backends are in scope."""
        scope = caller.scope
        if scope is None:
            return True
        plan = cutover.get("plan", {})
        hosts = set(plan.get("proxies", [])) | set(plan.get("backends", []))
        # A migration also acts on its destination backend.
        hosts |= {plan[k] for k in ("source_host", "destination_host") if plan.get(k)}
        if self._scope_ids is None or self._scope_ids[0] != scope:
            kind = scope.kind.value if scope.kind else None
            items, _ = self.hosts.list(kind=kind, tags=scope.tags)
            self._scope_ids = (scope, {i["id"] for i in items})
        return hosts <= self._scope_ids[1]

    def _item(self, cutover_id: str) -> dict[str, Any]:
        try:
            return self.store.get(cutover_id)
        except CutoverNotFound:
            raise not_found(self.noun, cutover_id) from None

    # ------------------------------------------------------------------ the end
    def reconcile(self, cutover: dict[str, Any]) -> dict[str, Any]:
        """A live cutover whose execution is over (failed, stopped, timed out) gets its
        final status now. Cheap for the rest: no call unless the item says RUNNING."""
        if cutover["status"] != CutoverStatus.RUNNING.value or not cutover.get("execution_arn"):
            return cutover
        try:
            execution = aws.client("stepfunctions").describe_execution(
                executionArn=cutover["execution_arn"]
            )
        except Exception:
            return cutover  # unknown: leave it as it is, the next look tries again
        if execution["status"] in (ExecutionStatus.RUNNING, ExecutionStatus.SUCCEEDED,
                                   ExecutionStatus.PENDING_REDRIVE):
            return cutover  # SUCCEEDED: our Finish step wrote (or is writing) the status
        self.execution_ended(
            {
                "executionArn": execution["executionArn"],
                "status": execution["status"],
                "input": execution.get("input"),
                "error": execution.get("error"),
                "cause": execution.get("cause"),
            }
        )
        return self.store.get(cutover["cutover_id"])

    def execution_ended(self, detail: dict[str, Any]) -> dict[str, Any] | None:
        """An execution that did not reach our Finish step (an EventBridge "Step Functions
        Execution Status Change" detail, or DescribeExecution's answer)."""
        status = detail.get("status")
        if status not in _EXECUTION_ENDED:
            return None
        try:
            execution_input = json.loads(detail.get("input") or "{}")
        except ValueError:
            execution_input = {}
        cutover_id = execution_input.get("cutover_id")
        if not cutover_id:
            return None
        try:
            cutover = self.store.get(cutover_id)
        except CutoverNotFound:
            return None
        if cutover.get("execution_arn") != detail.get("executionArn"):
            return None  # an older execution of this cutover (a rollback started since)
        message = f"the {self.noun}'s execution {_EXECUTION_ENDED[status]}"
        if detail.get("error"):
            message += f": {str(detail['error'])[:200]}"
        return self.finish(
            cutover_id,
            mode=execution_input.get("mode", cutover.get("phase", self.noun)),
            positions=execution_input.get("positions"),
            error={"type": "execution", "code": status, "message": message},
            stopped=status == ExecutionStatus.ABORTED,
        )

    def finish(
        self,
        cutover_id: str,
        *,
        mode: str,
        positions: list[int] | None = None,
        error: dict[str, Any] | None = None,
        stopped: bool = False,
    ) -> dict[str, Any]:
        """Account for every account and write the cutover's final status (once)."""
        cutover = self.store.get(cutover_id)
        if CutoverStatus(cutover["status"]).final:
            return {"cutover_id": cutover_id, "status": cutover["status"], "already": True}
        accounts, _ = self.store.accounts(cutover_id, fields=["n", "account", "status"])
        why = "stopped" if stopped else "ended"
        for account in accounts:
            if account["status"] == AccountStatus.PENDING.value:
                self._force(cutover_id, account, AccountStatus.SKIPPED,
                            f"the {self.noun} {why} before this account started")
            elif account["status"] == AccountStatus.IN_PROGRESS.value:
                self._force(cutover_id, account, AccountStatus.FAILED,
                            f"the {self.noun} {why} while this account was in progress: "
                            f"{self.in_progress_advice}")
        counts = dict(Counter(a["status"] for a in accounts))
        if stopped:
            status = CutoverStatus.CANCELLED
        elif mode == "rollback":
            targets = set(positions) if positions is not None else None
            statuses = [a["status"] for a in accounts if targets is None or a["n"] in targets]
            undone = all(s == AccountStatus.ROLLED_BACK.value for s in statuses)
            status = CutoverStatus.ROLLED_BACK if undone and not error else CutoverStatus.FAILED
        else:
            status = cutover_status(counts, len(accounts), failed=error is not None)
        fields: dict[str, Any] = {"counts": counts, "finished_at": now_iso()}
        if error is not None:
            fields["error"] = error
        with contextlib.suppress(ChangeRefused):  # already final: recorded then
            self.audit.record(
                self.store.finish_change(cutover_id, status.value, **fields),
                actor=Caller.system(self.noun).principal,
                action=f"{self.noun}.end",
                target=f"{self.noun}:{cutover_id}",
                cutover_id=cutover_id,
                outcome=status.value,
                params={"phase": mode, "counts": counts, "error": error},
            )
        return {f"{self.noun}_id": cutover_id, "status": status.value, "counts": counts}

    def _force(
        self, cutover_id: str, account: dict[str, Any], status: AccountStatus, reason: str
    ) -> None:
        changed = self.store.update_account(
            cutover_id,
            account["n"],
            from_statuses=[account["status"]],
            status=status.value,
            error={"type": self.noun, "message": reason},
        )
        if changed:
            account["status"] = status.value
            self.store.release_lock(cutover_id, account_key(account["account"]))


def cutover_status(counts: dict[str, int], total: int, *, failed: bool) -> CutoverStatus:
    done = counts.get(AccountStatus.DONE.value, 0)
    if total and done == total and not failed:
        return CutoverStatus.SUCCEEDED
    if done == 0:
        return CutoverStatus.FAILED
    return CutoverStatus.PARTIAL


Cutovers.by_noun[Cutovers.noun] = Cutovers


def busy_accounts(busy: list[dict[str, str]]) -> Conflict:
    """Some accounts are already in a running cutover or migration (which, the first few)."""
    return conflict(
        f"{len(busy)} of these accounts are already in a running cutover or migration",
        conflicts=busy[:CONFLICTS_SHOWN],
    )


def _other_kind(item: dict[str, Any], me: Cutovers) -> Cutovers:
    """The coordinator of a lock holder of the other kind, sharing my stores (a migration
    is registered as soon as mailfleet.logic.migrations is imported, which any code that
    starts one has done)."""
    kind = Cutovers.by_noun.get(str(item.get("kind")), Cutovers)
    return kind(hosts=me.hosts, audit=me.audit, settings=me.settings)


def _endpoint(item: dict[str, Any]) -> dict[str, str]:
    return {"host": item["id"], "endpoint": item["endpoint"]}


def _age_seconds(stamp: str) -> float:
    then = datetime.datetime.strptime(stamp, "%Y-%m-%dT%H:%M:%S.%fZ").replace(
        tzinfo=datetime.UTC
    )
    return time.time() - then.timestamp()


def _public(cutover: dict[str, Any]) -> dict[str, Any]:
    plan = cutover.get("plan", {})
    return item_view(
        cutover, ("plan", "execution_arn"),
        destination=plan.get("destination"),
        strategy=plan.get("strategy"),
        proxies=plan.get("proxies", []),
        backends=plan.get("backends", []),
        delay_seconds=plan.get("delay_seconds"),
        drain=plan.get("drain"),
    )


def item_view(item: dict[str, Any], internal: tuple[str, ...], **shown: Any) -> dict[str, Any]:
    """A cutover or migration item as the API shows it: without its internal fields, with
    what its kind shows from the plan, and the fields every view has even before the end."""
    out = {k: v for k, v in item.items() if k not in internal}
    out.update(shown)
    out.setdefault("counts", {})
    out.setdefault("finished_at", None)
    out.setdefault("error", None)
    return out


def _account_view(item: dict[str, Any]) -> dict[str, Any]:
    return {
        "account": item["account"],
        "status": item["status"],
        "previous": item.get("previous") or None,
        "error": item.get("error"),
        "steps": item.get("steps", []),
        "started_at": item.get("started_at"),
        "finished_at": item.get("finished_at"),
    }
