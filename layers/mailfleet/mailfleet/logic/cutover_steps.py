"""Cutovers, worker side: one step of one account on every proxy (or director), as the
cutover state machine calls them (statemachines/cutover.asl.json).

A step runs on all hosts of the cutover in parallel, records what each host said in the
account's step history and the audit trail, and on failure raises RetryableHostError or
PermanentHostError: the state machine retries the first (with back-off) and sends the
account to its rollback on the second, or once the retries are spent. Every step is safe
to run again: a retry repeats it on every host.
"""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from typing import Any

from mailfleet import aws
from mailfleet.config import Tables
from mailfleet.drivers.base import Deadline, Driver
from mailfleet.errors import ErrorType, HostError
from mailfleet.logic import connect
from mailfleet.logic.cutovers import SYSTEM, Cutovers
from mailfleet.models.common import now_iso
from mailfleet.models.cutovers import AccountStatus, CutoverStatus, Strategy, account_key
from mailfleet.store.audit import AuditLog, ChangeRefused
from mailfleet.store.cutovers import CutoverStore
from mailfleet.store.hosts import HostStore

ACTOR = SYSTEM.principal
HOST_TIMEOUT_SECONDS = 10.0
# Drivers are kept this long per process (the credentials cache lives as long): a proxy
# driver that saw a 401 or 429 then refuses every later account without a request.
DRIVER_TTL_SECONDS = 60.0
HOST_ITEMS_TTL_SECONDS = 5.0
# doveadm: "temporary failure" while the director moves a user.
TEMPFAIL = 75
DIRECTOR_COMMANDS = ("directorStatus", "directorMove", "directorKick", "directorUpdate",
                     "directorFlush")

_pool = ThreadPoolExecutor(max_workers=32, thread_name_prefix="cutover-host")
_drivers: dict[tuple[str, str], tuple[float, Driver]] = {}
_host_items: dict[tuple[str, ...], tuple[float, dict[str, dict[str, Any]]]] = {}
_audit_logs: dict[int, AuditLog] = {}
_cache_lock = threading.Lock()


class RetryableHostError(Exception):
    """A step failed on some host for a reason that may pass (the state machine retries)."""


class PermanentHostError(Exception):
    """A step failed on some host for a reason a retry cannot fix (the account rolls back)."""


class StepFailed(Exception):
    def __init__(self, step: str, errors: dict[str, HostError]) -> None:
        self.step = step
        self.errors = errors
        first_host, first = next(iter(errors.items()))
        more = f" (and {len(errors) - 1} more hosts)" if len(errors) > 1 else ""
        super().__init__(f"{step} failed on {first_host}: {first.message}{more}")

    @property
    def retryable(self) -> bool:
        return all(e.retryable for e in self.errors.values())

    def to_exception(self) -> Exception:
        cls = RetryableHostError if self.retryable else PermanentHostError
        return cls(str(self))

    def to_dict(self) -> dict[str, Any]:
        return {
            "step": self.step,
            "message": str(self),
            "retryable": self.retryable,
            "hosts": {h: e.to_dict() for h, e in self.errors.items()},
        }


class CutoverSteps:
    # MigrationSteps (mailfleet.logic.migration_steps) reuses these steps for the route
    # part of a migration, under its own name in the audit trail.
    noun = "cutover"
    actor = ACTOR
    coordinator: type[Cutovers] = Cutovers

    def __init__(
        self,
        store: CutoverStore | None = None,
        hosts: HostStore | None = None,
        audit: AuditLog | None = None,
        tables: Tables | None = None,
    ) -> None:
        tables = tables or Tables()
        self.store = store or self.coordinator.store_class(tables.cutovers_table)
        self.hosts = hosts or HostStore(tables.hosts_table)
        self.audit = audit or _audit_log(tables.audit_table)
        self._steps: dict[str, Callable[[dict[str, Any]], dict[str, Any]]] = {
            "begin": self.begin,
            "remember": self.remember,
            "hold_logins": self.hold_logins,
            "switch": self.switch,
            "invalidate": self.invalidate,
            "kick": self.kick,
            "director_move": self.director_move,
            "director_kick": self.director_kick,
            "verify": self.verify,
            "rollback": self.rollback,
            "rollback_failed": self.rollback_failed,
            "drain": self.drain,
            "preflight": self.preflight,
            "finish": self.finish,
        }

    def run(self, step: str, item: dict[str, Any]) -> dict[str, Any]:
        handler = self._steps.get(step)
        if handler is None:
            raise ValueError(f"unknown {self.noun} step {step!r}")
        return handler(item)

    # ------------------------------------------------------------------ begin
    def begin(self, item: dict[str, Any]) -> dict[str, Any]:
        """Load the account; IN_PROGRESS, or SKIPPED when the cutover must not go on."""
        cutover_id, n = item["cutover_id"], item["n"]
        account = self.store.account(cutover_id, n)
        out = {k: item[k] for k in ("cutover_id", "n", "mode", "plan")}
        out["account"] = account["account"]
        if item["mode"] == "rollback":
            if not self.store.update_account(
                cutover_id, n, from_statuses=[AccountStatus.DONE.value],
                status=AccountStatus.IN_PROGRESS.value,
            ):
                # Not DONE (any more): nothing to put back, and not ours to hold.
                self.store.release_lock(cutover_id, account_key(account["account"]))
                return dict(out, go="skip")
            self.store.move_count(cutover_id, AccountStatus.DONE.value,
                                  AccountStatus.IN_PROGRESS.value)
            return dict(out, go="rollback")
        go = "director" if item["plan"]["strategy"] == Strategy.DIRECTOR else "proxy"
        if account["status"] == AccountStatus.IN_PROGRESS.value:
            return dict(out, go=go)  # this account's child execution runs again
        if account["status"] != AccountStatus.PENDING.value:
            return dict(out, go="skip")
        reason = self._why_not_start(cutover_id)
        if reason is not None:
            if self.store.update_account(
                cutover_id, n, from_statuses=[AccountStatus.PENDING.value],
                status=AccountStatus.SKIPPED.value,
                error={"type": self.noun, "message": reason},
            ):
                self.store.move_count(cutover_id, AccountStatus.PENDING.value,
                                      AccountStatus.SKIPPED.value)
                self.store.release_lock(cutover_id, account_key(account["account"]))
            return dict(out, go="skip")
        if self.store.update_account(
            cutover_id, n, from_statuses=[AccountStatus.PENDING.value],
            status=AccountStatus.IN_PROGRESS.value, started_at=now_iso(),
        ):
            self.store.move_count(cutover_id, AccountStatus.PENDING.value,
                                  AccountStatus.IN_PROGRESS.value)
        return dict(out, go=go)

    def _why_not_start(self, cutover_id: str) -> str | None:
        cutover = self.store.get(cutover_id)
        if cutover.get("halted"):
            return f"not started: the {self.noun} was halted ({cutover['halted']})"
        if cutover["status"] != CutoverStatus.RUNNING.value:
            return f"not started: the {self.noun} is {cutover['status']}"
        counts = cutover.get("counts", {})
        failures = counts.get(AccountStatus.ROLLED_BACK.value, 0) + counts.get(
            AccountStatus.FAILED.value, 0)
        tolerated = float(cutover.get("tolerated_failure_percentage", 0))
        if failures and failures * 100.0 > tolerated * cutover["total"]:
            reason = (f"{failures} of {cutover['total']} accounts failed, more than the "
                      f"tolerated {tolerated:g}%")
            self.store.halt(cutover_id, reason)
            return f"not started: {reason}"
        return None

    # ------------------------------------------------------------------ proxy steps
    def remember(self, item: dict[str, Any]) -> dict[str, Any]:
        account = item["account"]
        if _director(item):
            def look(host: dict[str, Any], driver: Driver) -> Any:
                return _director_previous(_director_status(driver, account))
        else:
            def look(host: dict[str, Any], driver: Driver) -> Any:
                mapping = perform(driver, "mapping.get", {"identifier": account})
                return {"destination": mapping.get("destination"),
                        "mapped": not mapping.get("routed_to_default", False)}
        seen = self._step(item, "remember", item["plan"]["proxies"], look)
        self.store.remember(item["cutover_id"], item["n"], seen)
        return item

    def hold_logins(self, item: dict[str, Any]) -> dict[str, Any]:
        params = {"identifier": item["account"], "seconds": item["plan"]["delay_seconds"]}
        self._step(item, "hold_logins", item["plan"]["proxies"],
                   lambda host, driver: perform(driver, "connections.delay", params))
        return item

    def switch(self, item: dict[str, Any], step: str = "switch") -> dict[str, Any]:
        params = {"identifier": item["account"], "destination": item["plan"]["destination"]}
        self._step(item, step, item["plan"]["proxies"],
                   lambda host, driver: perform(driver, "mapping.set", params))
        return item

    def invalidate(self, item: dict[str, Any]) -> dict[str, Any]:
        params = {"identifier": item["account"]}
        self._step(item, "invalidate", item["plan"]["proxies"],
                   lambda host, driver: perform(driver, "cache.invalidate", params))
        return item

    def kick(self, item: dict[str, Any], step: str = "kick") -> dict[str, Any]:
        """End live sessions on every proxy and, when given, on the backends."""
        account = item["account"]

        def kick(host: dict[str, Any], driver: Driver) -> Any:
            return driver.end_sessions(account, Deadline.after(HOST_TIMEOUT_SECONDS))

        self._step(item, step, item["plan"]["proxies"] + item["plan"]["backends"], kick)
        return item

    # ------------------------------------------------------------------ director steps
    def director_move(self, item: dict[str, Any], step: str = "director_move") -> dict[str, Any]:
        account, destination = item["account"], item["plan"]["destination"]
        self._step(item, step, item["plan"]["proxies"],
                   lambda host, driver: _director_move(driver, account, destination))
        return item

    def director_kick(self, item: dict[str, Any], step: str = "director_kick") -> dict[str, Any]:
        account = item["account"]
        directors = set(item["plan"]["proxies"])

        def kick(host: dict[str, Any], driver: Driver) -> Any:
            if host["id"] in directors:
                return perform(driver, "directorKick", {"user": account})
            return driver.end_sessions(account, Deadline.after(HOST_TIMEOUT_SECONDS))

        self._step(item, step, item["plan"]["proxies"] + item["plan"]["backends"], kick)
        return item

    # ------------------------------------------------------------------ verify and done
    def verify(self, item: dict[str, Any], step: str = "verify") -> dict[str, Any]:
        account, destination = item["account"], item["plan"]["destination"]
        director = _director(item)

        def check(host: dict[str, Any], driver: Driver) -> Any:
            if director:
                now = _director_status(driver, account).get("status")
            else:
                now = perform(driver, "mapping.get", {"identifier": account}).get("destination")
            if now != destination:
                # A lagging mapping store may still catch up: retried, then rolled back.
                raise HostError(ErrorType.COMMAND, f"resolves the account to {now!r}, not "
                                f"{destination!r}", retryable=True)
            return {"resolves_to": now}

        self._step(item, step, item["plan"]["proxies"], check,
                   settle=(AccountStatus.DONE, None))
        return {}

    # ------------------------------------------------------------------ rollback
    def rollback(self, item: dict[str, Any], step: str = "rollback") -> dict[str, Any]:
        """Put back on every host what Remember saw there (delete where there was no
        mapping), then invalidate and kick again. Hosts Remember never reached were not
        changed and are left alone; hosts already as remembered are not written."""
        record = self.store.account(item["cutover_id"], item["n"])
        item = dict(item, account=record["account"])
        account = item["account"]
        previous = record.get("previous") or {}
        hosts = [h for h in item["plan"]["proxies"] if h in previous]
        director = _director(item)

        def restore(host: dict[str, Any], driver: Driver) -> Any:
            before = previous[host["id"]]
            if director:
                return _director_restore(driver, account, before["host"])
            return _proxy_restore(driver, account, before)

        cause = None if item["mode"] == "rollback" else rollback_cause(item, record)
        self._step(item, step, hosts, restore,
                   settle=(AccountStatus.ROLLED_BACK, cause))
        return {}

    def rollback_failed(self, item: dict[str, Any]) -> dict[str, Any]:
        """The account could not be put back on every host: FAILED, for an operator."""
        record = self.store.account(item["cutover_id"], item["n"])
        item = dict(item, account=record["account"])
        error = rollback_cause(item, record) or {}
        rollback_error = item.get("rollback_error")
        if rollback_error is not None:
            error = dict(error, rollback=_state_error(rollback_error))
        self._settle(item, AccountStatus.FAILED, error=error,
                     from_statuses=[AccountStatus.IN_PROGRESS.value,
                                    AccountStatus.PENDING.value])
        return {}

    def _settle(
        self,
        item: dict[str, Any],
        status: AccountStatus,
        *,
        error: dict[str, Any] | None,
        from_statuses: list[str] | None = None,
    ) -> dict[str, Any]:
        """An account's final status and its audit event (one write), then its count and
        its lock released."""
        cutover_id, n, account = item["cutover_id"], item["n"], item["account"]
        for _ in range(3):
            before = self._settleable(item, from_statuses)
            if before is None:
                break  # already settled (e.g. by the reconciliation of a stopped execution)
            try:
                self.audit.record(
                    self.store.account_change(cutover_id, n, status_is=[before],
                                              **_final_fields(status, error)),
                    actor=self.actor, action=f"{self.noun}.account.{status.value.lower()}",
                    target=f"account:{account}", cutover_id=cutover_id, outcome=status.value,
                    params={"n": n, "error": error} if error else {"n": n},
                )
            except ChangeRefused:
                continue  # its status moved meanwhile: look again
            self._settled(item, before, status)
            return {"account_status": status.value}
        self.store.release_lock(cutover_id, account_key(account))
        return {"account_status": "unchanged"}

    def _settleable(self, item: dict[str, Any], from_statuses: list[str] | None) -> str | None:
        """The account's status if it may be settled from it, else None."""
        current = self.store.account(item["cutover_id"], item["n"]).get("status")
        return current if current in (from_statuses or [AccountStatus.IN_PROGRESS.value]) \
            else None

    def _settled(self, item: dict[str, Any], before: str, status: AccountStatus) -> None:
        """After a settle is written: the running count and the lock (both recoverable:
        counts are recounted at the end, a finished cutover's locks are stale)."""
        self.store.release_lock(item["cutover_id"], account_key(item["account"]))
        self.store.move_count(item["cutover_id"], before, status.value)

    # ------------------------------------------------------------------ whole cutover
    def drain(self, item: dict[str, Any]) -> dict[str, Any]:
        """Director strategy: no new user is hashed to the drained backend and its users
        are flushed (cutover), or its vhost count is put back (rollback)."""
        cutover_id, backend = item["cutover_id"], item["drain"]
        cutover = self.store.get(cutover_id)
        before = dict(cutover.get("drain_previous") or {})

        def drain(host: dict[str, Any], driver: Driver) -> Any:
            if item["mode"] == "rollback":
                if host["id"] not in before:
                    return {"skipped": "not drained by this cutover"}
                perform(driver, "directorUpdate",
                        {"host": backend, "vhostCount": str(before[host["id"]])})
                return {"vhosts": before[host["id"]]}
            status = perform(driver, "directorStatus", {})
            rows = [r for r in status if r.get("mail server ip") == backend]
            if not rows:
                raise HostError(ErrorType.COMMAND, f"the director has no backend {backend}")
            if host["id"] not in before:
                # Keep the first count seen: a retried drain would see 0.
                before[host["id"]] = rows[0].get("vhosts")
                self.store.set_fields(cutover_id, drain_previous=before)
            perform(driver, "directorUpdate", {"host": backend, "vhostCount": "0"})
            perform(driver, "directorFlush", {"host": backend})
            return {"vhosts_before": before[host["id"]], "flushed": True}

        self._step(item, "drain", item["plan"]["proxies"], drain, account_item=False)
        return {}

    def preflight(self, item: dict[str, Any]) -> dict[str, Any]:
        """Every host answers an authenticated request (and a Dovecot host offers the
        commands the cutover needs) before any account is touched."""
        plan = item["plan"]
        directors = set(plan["proxies"]) if plan["strategy"] == Strategy.DIRECTOR else set()

        def check(host: dict[str, Any], driver: Driver) -> Any:
            if not driver.describes_own_actions:
                return _small(perform(driver, "stats", {}))
            commands = driver.fetch_commands(Deadline.after(HOST_TIMEOUT_SECONDS))
            needed = DIRECTOR_COMMANDS if host["id"] in directors else ("kick",)
            missing = sorted(set(needed) - {c.get("command") for c in commands})
            if missing:
                raise HostError(ErrorType.UNSUPPORTED,
                                f"the host does not offer {', '.join(missing)}")
            return {"commands": len(commands)}

        self._step(item, "preflight", plan["proxies"] + plan["backends"], check,
                   account_item=False)
        return {}

    def finish(self, item: dict[str, Any]) -> dict[str, Any]:
        error = item.get("error")
        return self.coordinator(self.store, self.hosts, self.audit).finish(
            item["cutover_id"],
            mode=item.get("mode", self.noun),
            positions=item.get("positions"),
            error=_state_error(error) if error else None,
        )

    # ------------------------------------------------------------------ the engine
    def _step(
        self,
        item: dict[str, Any],
        step: str,
        host_ids: list[str],
        action: Callable[[dict[str, Any], Driver], Any],
        *,
        account_item: bool = True,
        settle: tuple[AccountStatus, dict[str, Any] | None] | None = None,
        details: Callable[[dict[str, Any]], dict[str, Any]] | None = None,
    ) -> dict[str, Any]:
        """Run `action` on every host at once; record the outcome; raise on failure. On
        success `settle` (status, error) gives the account its final status in the same
        write as the step's record and event. `details` (given the hosts' outputs) adds
        fields to the record and the event, success or not: a migration's per-mailbox
        counts, a copy still running."""
        started = time.monotonic()
        outputs, errors = self._on_hosts(host_ids, action)
        record: dict[str, Any] = {
            "step": step,
            "outcome": "ok",
            "at": now_iso(),
            "duration_ms": int((time.monotonic() - started) * 1000),
            "hosts": {h: {"error": e.to_dict()} for h, e in errors.items()}
            | {h: _small(o) for h, o in outputs.items()},
        }
        failure = StepFailed(step, errors) if errors else None
        if details is not None:
            record.update(details(outputs))
        if failure is not None:
            record["outcome"] = "retrying" if failure.retryable else "failed"
            self._halt_if_hopeless(item["cutover_id"], errors)
        params = {k: v for k, v in record.items() if k not in ("step", "outcome", "at")}
        target = (f"account:{item['account']}" if account_item
                  else f"{self.noun}:{item['cutover_id']}")
        event = {"actor": self.actor, "action": f"{self.noun}.{step}", "target": target,
                 "cutover_id": item["cutover_id"], "outcome": record["outcome"]}
        if not account_item:
            self.audit.append(params=params, **event)
        else:
            # The step's record, the account's final status if this step settles it, and
            # the event: one write.
            fields: dict[str, Any] = {"last_error": failure.to_dict()} if failure else {}
            for _ in range(3):
                before = None
                if failure is None and settle is not None:
                    before = self._settleable(item, None)
                    params["account_status"] = settle[0].value if before else "unchanged"
                settling = _final_fields(*settle) if before and settle else {}
                try:
                    self.audit.record(
                        self.store.account_change(item["cutover_id"], item["n"], step=record,
                                                  status_is=[before] if before else None,
                                                  **fields, **settling),
                        params=params, **event)
                except ChangeRefused:
                    continue  # its status moved meanwhile: look again
                if before and settle:
                    self._settled(item, before, settle[0])
                elif settle and failure is None:
                    self.store.release_lock(item["cutover_id"], account_key(item["account"]))
                break
            else:
                self.audit.append(params=params, **event)  # the account item is gone
        if failure is not None:
            raise failure.to_exception()
        return outputs

    def _host_items(self, host_ids: list[str]) -> dict[str, dict[str, Any]]:
        """The cutover's hosts, read at most every few seconds per process: every step of
        every account asks for the same few."""
        key = tuple(host_ids)
        now = time.monotonic()
        with _cache_lock:
            cached = _host_items.get(key)
        if cached is not None and now - cached[0] < HOST_ITEMS_TTL_SECONDS:
            return cached[1]
        items = self.hosts.get_many(host_ids) if host_ids else {}
        with _cache_lock:
            _host_items[key] = (now, items)
        return items

    def _halt_if_hopeless(self, cutover_id: str, errors: dict[str, HostError]) -> None:
        """Failures every further account would meet too stop the cutover: a read-only
        mapping store, and refused credentials (repeating them locks the controller out)."""
        for host, error in errors.items():
            if error.type in (ErrorType.AUTH, ErrorType.LOCKED_OUT):
                self.store.halt(cutover_id, f"{host} refused our credentials: {error.message}")
            elif error.type == ErrorType.UNSUPPORTED and "read-only" in error.message:
                self.store.halt(cutover_id, f"{host}: {error.message}")

    def _on_hosts(
        self, host_ids: list[str], action: Callable[[dict[str, Any], Driver], Any]
    ) -> tuple[dict[str, Any], dict[str, HostError]]:
        items = self._host_items(host_ids)

        def one(host_id: str) -> tuple[str, Any, HostError | None]:
            host = items.get(host_id)
            if host is None:
                return host_id, None, HostError(
                    ErrorType.UNSUPPORTED, "the host was removed from the inventory")
            try:
                return host_id, action(host, cached_driver(host)), None
            except HostError as exc:
                return host_id, None, exc

        outputs: dict[str, Any] = {}
        errors: dict[str, HostError] = {}
        for host_id, output, error in _pool.map(one, host_ids):
            if error is not None:
                errors[host_id] = error
            else:
                outputs[host_id] = output
        return outputs, errors


# ---------------------------------------------------------------------- host actions
def cached_driver(host: dict[str, Any]) -> Driver:
    key = (host["id"], f"{host.get('updated_at')}|{host['endpoint']}")
    now = time.monotonic()
    with _cache_lock:
        cached = _drivers.get(key)
        if cached is not None and now - cached[0] < DRIVER_TTL_SECONDS:
            return cached[1]
    driver = connect.driver_for(host)
    with _cache_lock:
        _drivers[key] = (now, driver)
    return driver


def _final_fields(status: AccountStatus, error: dict[str, Any] | None) -> dict[str, Any]:
    return {"status": status.value, "finished_at": now_iso(), "error": error}


def _audit_log(name: str) -> AuditLog:
    """One per process (per table client), as a Lambda container keeps it: it remembers
    the chain's head, so an append is one conditional put instead of a query and a put,
    and steps running side by side here queue on its lock instead of racing for a slot.
    Keyed by the client object: new clients (aws.reset) mean a new chain may be there."""
    key = id(aws.table(name))
    with _cache_lock:
        log = _audit_logs.get(key)
        if log is None:
            log = _audit_logs[key] = AuditLog(name)
        return log


def perform(driver: Driver, action: str, params: dict[str, Any]) -> Any:
    deadline = Deadline.after(HOST_TIMEOUT_SECONDS)
    if not driver.describes_own_actions:
        params = driver.validate(action, params, deadline)  # static: asks nobody
    return driver.perform(action, params, deadline)


def _director_status(driver: Driver, account: str) -> dict[str, Any]:
    rows = perform(driver, "directorStatus", {"user": account})
    if not rows or not isinstance(rows, list):
        raise HostError(ErrorType.COMMAND, "directorStatus gave no answer for the user")
    return rows[0]


def _director_previous(status: dict[str, Any]) -> dict[str, Any]:
    """What to move the user back to: its current backend, or the one it hashes to
    when the director has no entry for it ("n/a")."""
    current = status.get("status")
    mapped = current not in (None, "", "n/a")
    return {"host": current if mapped else status.get("hashed"), "mapped": mapped}


def _director_move(driver: Driver, account: str, backend: str) -> Any:
    try:
        return perform(driver, "directorMove", {"user": account, "host": backend})
    except HostError as exc:
        # 75 while a move is still settling: done if it already points where we want.
        if not (exc.type == ErrorType.EXIT_CODE and exc.code == TEMPFAIL):
            raise
        if _director_status(driver, account).get("status") == backend:
            return {"already": backend}
        raise


def _director_restore(driver: Driver, account: str, backend: str) -> Any:
    out: dict[str, Any] = {"restored": backend}
    if _director_status(driver, account).get("status") != backend:
        _director_move(driver, account, backend)
    else:
        out["unchanged"] = True
    perform(driver, "directorKick", {"user": account})
    return out


def _proxy_restore(driver: Driver, account: str, before: dict[str, Any]) -> Any:
    now = perform(driver, "mapping.get", {"identifier": account})
    if before["mapped"]:
        same = not now.get("routed_to_default") and now.get("destination") == before[
            "destination"]
        if not same:
            perform(driver, "mapping.set",
                    {"identifier": account, "destination": before["destination"]})
        out: dict[str, Any] = {"restored": before["destination"], "unchanged": same}
    else:
        same = bool(now.get("routed_to_default"))
        if not same:
            perform(driver, "mapping.delete", {"identifier": account})
        out = {"restored": "default route (mapping deleted)", "unchanged": same}
    perform(driver, "cache.invalidate", {"identifier": account})
    out.update(perform(driver, "connections.kick", {"identifier": account}))
    return out


def _director(item: dict[str, Any]) -> bool:
    return item["plan"]["strategy"] == Strategy.DIRECTOR


def _small(output: Any) -> Any:
    """A host's answer as kept in the step history: small, JSON-able."""
    if isinstance(output, dict):
        return {k: v for k, v in output.items() if isinstance(v, str | int | float | bool)
                or v is None}
    if isinstance(output, list):
        return {"items": len(output)}
    return {"output": str(output)[:200]}


def rollback_cause(item: dict[str, Any], record: dict[str, Any]) -> dict[str, Any] | None:
    """The failure that sent the account to rollback: the failed step's per-host errors
    when a step raised, else what Step Functions reported (a timeout, a crash)."""
    state_error = item.get("error")
    if state_error is None:
        return None
    if state_error.get("Error") in ("RetryableHostError", "PermanentHostError") and record.get(
            "last_error"):
        return record["last_error"]
    return _state_error(state_error)


def _state_error(error: dict[str, Any]) -> dict[str, Any]:
    """Step Functions' {Error, Cause} as {type, message} (no stack trace)."""
    cause = error.get("Cause")
    message = cause
    try:
        parsed = json.loads(cause) if isinstance(cause, str) else None
    except ValueError:
        parsed = None
    if isinstance(parsed, dict):
        message = parsed.get("errorMessage", message)
    return {"type": error.get("Error"), "message": str(message or "")[:1000]}
