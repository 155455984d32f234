"""Migrations, worker side: one step of one account, as the migration state machine calls
them (statemachines/migration.asl.json). The route steps (remember, hold logins, kick,
flip, invalidate, confirm, put the route back) are the cutover's own (CutoverSteps); this
adds the mail: copies with dsync `backup`, and the count check before the flip.

Copies never keep a Lambda waiting: one call starts (or resumes) the copy on the source
and hangs up after COPY_CALL_SECONDS; doveadm goes on with a command whose client left
(seen on 2.3.19). The state machine then Waits and calls again: every copy takes the
user's dsync lock, so a call while the copy still runs fails fast on the lock ("running",
with the counts seen so far on both sides); once it ends, the next call is an incremental
`backup` that answers within the call, and the copy is done. A copy that fails outright
(the destination down) raises RetryableHostError: the state machine retries it with
back-off, then stops the account, which is still on its source.
"""

from __future__ import annotations

import time
from typing import Any

from mailfleet.drivers.base import Deadline, Driver
from mailfleet.drivers.dovecot import DovecotDriver, DsyncOutcome, DsyncTarget
from mailfleet.errors import ErrorType, HostError
from mailfleet.logic.caller import Caller
from mailfleet.logic.cutover_steps import (
    HOST_TIMEOUT_SECONDS,
    CutoverSteps,
    cached_driver,
    perform,
    rollback_cause,
)
from mailfleet.logic.migrations import Migrations
from mailfleet.models.cutovers import AccountStatus, Strategy

# One copy call: the copy goes on on the host after we hang up.
COPY_CALL_SECONDS = 20.0
# How long a call waits for the user's dsync lock: held means a copy is still running.
LOCK_SECONDS = 2
# Waits between polls of a running copy: 5 s, doubling, at most 60 s.
FIRST_WAIT_SECONDS = 5
MAX_WAIT_SECONDS = 60
MIGRATION_COMMANDS = ("backup", "mailboxList", "mailboxStatus", "kick")
DIRECTOR_COMMANDS = ("directorStatus", "directorMove", "directorKick")


class MigrationSteps(CutoverSteps):
    noun = "migration"
    actor = Caller.system("migration").principal
    coordinator = Migrations

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._steps.update({
            "pre_copy": lambda item: self.copy(item, "pre_copy"),
            "hold_logins": self.hold,
            "kick": lambda item: self.kick_sessions(item, "kick"),
            "final_sync": lambda item: self.copy(item, "final_sync"),
            "verify": lambda item: self.verify_counts(item, "verify"),
            "flip": self.flip,
            "kick_again": lambda item: self.kick_sessions(item, "kick_again"),
            "confirm": lambda item: CutoverSteps.verify(self, item, "confirm"),
            "stop_before_flip": self.stop_before_flip,
            # Named apart from the rollback request in the audit trail.
            "rollback": lambda item: CutoverSteps.rollback(self, item, "put_route_back"),
            # A rollback: the mail back to the source first, then the route.
            "copy_back": lambda item: self.copy(item, "copy_back"),
            "kick_back": lambda item: self.kick_sessions(_on_destination(item), "kick_back"),
            "final_copy_back": lambda item: self.copy(item, "final_copy_back"),
            "verify_back": lambda item: self.verify_counts(item, "verify_back"),
            "keep_on_destination": self.keep_on_destination,
        })
        for cutover_only in ("switch", "director_move", "director_kick", "drain"):
            self._steps.pop(cutover_only, None)

    # ------------------------------------------------------------------ the mail
    def copy(self, item: dict[str, Any], step: str) -> dict[str, Any]:
        """One round of a copy: done, or still running (the state machine waits and calls
        again). `backup` from the source to the destination, or back for a rollback."""
        plan, account = item["plan"], item["account"]
        back = step in ("copy_back", "final_copy_back")
        sender, receiver = plan["source_host"], plan["destination_host"]
        if back:
            sender, receiver = receiver, sender
        target = DsyncTarget(**(plan["dsync_back"] if back else plan["dsync"]))
        state = dict(item.get("copy") or {})
        if state.get("step") != step:
            state = {"step": step, "since": time.time(), "rounds": 0}
        state["rounds"] += 1
        seen: dict[str, dict[str, int]] = {}
        said: dict[str, DsyncOutcome] = {}

        def run(host: dict[str, Any], driver: Driver) -> Any:
            if state["rounds"] == 1 and step in ("pre_copy", "copy_back"):
                self._refuse_foreign_mail(account, driver, sender, receiver)
            outcome = said["copy"] = _dovecot(driver).dsync_backup(
                account, target, Deadline.after(COPY_CALL_SECONDS), lock_seconds=LOCK_SECONDS)
            seen.update(self._counts(account, {sender: driver}, receiver))
            if outcome is DsyncOutcome.RUNNING:
                waited = time.time() - state["since"]
                if waited > plan["copy_timeout_seconds"]:
                    raise HostError(ErrorType.TIMEOUT, f"the copy did not finish within "
                                    f"{plan['copy_timeout_seconds']} s")
            return {"copy": outcome.value, "to": target.location}

        def details(outputs: dict[str, Any]) -> dict[str, Any]:
            extra: dict[str, Any] = {}
            if seen:
                extra["mailboxes"] = _side_by_side(seen, sender, receiver, back)
            if sender in outputs and said.get("copy") is DsyncOutcome.RUNNING:
                extra["outcome"] = "running"
            return extra

        self._step(item, step, [sender], run, details=details)
        # The step raised on failure; here it either finished or is still running.
        if said["copy"] is DsyncOutcome.RUNNING:
            state["wait"] = min(MAX_WAIT_SECONDS, FIRST_WAIT_SECONDS * 2 ** (state["rounds"] - 1))
            state["state"] = "running"
        else:
            state["state"] = "done"
        return dict(item, copy=state)

    def verify_counts(self, item: dict[str, Any], step: str) -> dict[str, Any]:
        """The same mailboxes, with the same number of messages each, on both backends;
        else the account stops here, before its route changes (or, for a rollback, stays
        on the destination)."""
        plan, account = item["plan"], item["account"]
        source, destination = plan["source_host"], plan["destination_host"]
        seen: dict[str, dict[str, int]] = {}
        held = time.time() - item["held_at"] if item.get("held_at") else None

        def check(host: dict[str, Any], driver: Driver) -> Any:
            if held is not None and held > plan["delay_seconds"]:
                # Logins went through again before the flip: what they changed after the
                # final sync would stay behind. Safe to stop here; a longer hold helps.
                raise HostError(ErrorType.COMMAND, f"the hold on new logins ended before the "
                                f"flip ({held:.0f} s since it began, delay_seconds "
                                f"{plan['delay_seconds']}): raise delay_seconds")
            seen.update(self._counts(account, {source: driver}, destination))
            differ = sorted(
                name for name in set(seen[source]) | set(seen[destination])
                if seen[source].get(name) != seen[destination].get(name))
            if differ:
                shown = ", ".join(
                    f"{n} ({seen[source].get(n, 'missing')} vs "
                    f"{seen[destination].get(n, 'missing')})" for n in differ[:10])
                raise HostError(ErrorType.COMMAND, "the backends differ (source vs "
                                f"destination, messages): {shown}")
            return {"mailboxes": len(seen[source]),
                    "messages": sum(seen[source].values())}

        self._step(item, step, [source], check,
                   details=lambda _: {"mailboxes": _side_by_side(seen, source, destination,
                                                                 False)} if seen else {})
        return item

    def _counts(self, account: str, known: dict[str, Driver], other: str
                ) -> dict[str, dict[str, int]]:
        """Messages per mailbox on the hosts of `known` (their drivers) and on `other`."""
        return {h: {name: box["messages"] for name, box in boxes.items()}
                for h, boxes in self._mailboxes(account, known, other).items()}

    def _mailboxes(self, account: str, known: dict[str, Driver], other: str
                   ) -> dict[str, dict[str, dict[str, Any]]]:
        drivers = dict(known)
        drivers[other] = cached_driver(self._host_items([other])[other])
        return {h: _dovecot(d).mailboxes(account, Deadline.after(HOST_TIMEOUT_SECONDS))
                for h, d in drivers.items()}

    def _refuse_foreign_mail(self, account: str, driver: Driver, sender: str,
                             receiver: str) -> None:
        """`backup` makes the receiving side identical to the sending one: mail there
        that is not a copy of the sender's would be deleted (a swapped source and
        destination would empty the real mailbox). A mailbox holding messages whose GUID
        the sender does not have stops the account before anything is copied."""
        boxes = self._mailboxes(account, {sender: driver}, receiver)
        ours = {box["guid"] for box in boxes[sender].values()}
        foreign = sorted(name for name, box in boxes[receiver].items()
                         if box["messages"] and box["guid"] not in ours)
        if foreign:
            raise HostError(ErrorType.COMMAND, f"{receiver} already holds other mail for "
                            f"{account} (mailboxes {', '.join(foreign[:10])} are no copies of "
                            f"{sender}'s): a backup would delete it, so nothing was copied")

    # ------------------------------------------------------------------ the route
    def hold(self, item: dict[str, Any]) -> dict[str, Any]:
        """Hold new logins on every proxy, and remember when: the flip must come before
        the hold ends (verify checks it)."""
        self.hold_logins(item)
        if item["plan"]["delay_seconds"] <= 0:
            return item  # no hold asked for
        return dict(item, held_at=time.time())

    def kick_sessions(self, item: dict[str, Any], step: str) -> dict[str, Any]:
        """End the account's sessions on every proxy (director) and on the backend."""
        if item["plan"]["strategy"] == Strategy.DIRECTOR:
            self.director_kick(item, step)
        else:
            self.kick(item, step)
        return item

    def flip(self, item: dict[str, Any]) -> dict[str, Any]:
        if item["plan"]["strategy"] == Strategy.DIRECTOR:
            return self.director_move(item, "flip")
        return self.switch(item, "flip")

    # ------------------------------------------------------------------ stopping
    def stop_before_flip(self, item: dict[str, Any]) -> dict[str, Any]:
        """A step before the flip failed: the route was never changed, the source still
        has every message (copies only ever write to the destination). ROLLED_BACK with
        the cause; nothing to undo on any host."""
        record = self.store.account(item["cutover_id"], item["n"])
        item = dict(item, account=record["account"])
        cause = dict(rollback_cause(item, record) or {}, route="unchanged: still on the source")
        self._settle(item, AccountStatus.ROLLED_BACK, error=cause)
        return {}

    def keep_on_destination(self, item: dict[str, Any]) -> dict[str, Any]:
        """A rollback's copy back or its check failed: the route was not touched, so the
        account stays DONE on the destination, with the error for an operator."""
        record = self.store.account(item["cutover_id"], item["n"])
        item = dict(item, account=record["account"])
        cause = dict(rollback_cause(item, record) or {},
                     route="unchanged: still on the destination")
        self._settle(item, AccountStatus.DONE, error={"rollback": cause})
        return {}

    # ------------------------------------------------------------------ preflight
    def preflight(self, item: dict[str, Any]) -> dict[str, Any]:
        """Every router answers an authenticated request, and every Dovecot host offers
        the commands the migration needs, before any account is touched."""
        plan = item["plan"]
        backends = {plan["source_host"], plan["destination_host"]}

        def check(host: dict[str, Any], driver: Driver) -> Any:
            if not driver.describes_own_actions:
                perform(driver, "stats", {})
                return {"reachable": True}
            commands = driver.fetch_commands(Deadline.after(HOST_TIMEOUT_SECONDS))
            needed = MIGRATION_COMMANDS if host["id"] in backends else DIRECTOR_COMMANDS
            missing = sorted(set(needed) - {c.get("command") for c in commands})
            if missing:
                raise HostError(ErrorType.UNSUPPORTED,
                                f"the host does not offer {', '.join(missing)}")
            return {"commands": len(commands)}

        self._step(item, "preflight", plan["proxies"] + sorted(backends), check,
                   account_item=False)
        return {}


def _dovecot(driver: Driver) -> DovecotDriver:
    if not isinstance(driver, DovecotDriver):
        raise HostError(ErrorType.UNSUPPORTED, f"a {driver.kind} host is no Dovecot backend")
    return driver


def _on_destination(item: dict[str, Any]) -> dict[str, Any]:
    """The item with the destination as the backend whose sessions are kicked."""
    return dict(item, plan=dict(item["plan"], backends=[item["plan"]["destination_host"]]))


def _side_by_side(seen: dict[str, dict[str, int]], sender: str, receiver: str, back: bool
                  ) -> dict[str, dict[str, int | None]]:
    """{mailbox: {"source": n, "destination": m}} (None where a side lacks it)."""
    source, destination = (receiver, sender) if back else (sender, receiver)
    names = sorted(set(seen.get(source, {})) | set(seen.get(destination, {})))
    return {n: {"source": seen.get(source, {}).get(n),
                "destination": seen.get(destination, {}).get(n)} for n in names}

