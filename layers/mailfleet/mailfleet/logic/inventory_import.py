"""Bulk inventory (POST /inventory/import): up to 1,000 hosts from a CMDB or a spreadsheet.

Each host is taken or refused on its own. Existing ids are read in batches of 100, each
item is written with its one audit event (as POST /hosts would write it) in shared
transactions (AuditLog.record_each), and credentials go to Secrets Manager from a bounded
pool of threads.
"""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor
from typing import Any

from pydantic import ValidationError

from mailfleet.config import SecretSettings, Tables
from mailfleet.drivers.http import forget_sessions
from mailfleet.logic.caller import Caller
from mailfleet.logic.hosts import Inventory, audit_params
from mailfleet.logic.problems import Problem
from mailfleet.models.common import now_iso
from mailfleet.models.hosts import (
    Host,
    HostCreate,
    ImportFailure,
    ImportOutcome,
    OnConflict,
    check_credentials,
)
from mailfleet.store import secrets
from mailfleet.store.audit import AuditLog, Change, ChangeRefused
from mailfleet.store.hosts import HostStore

# Secrets Manager calls in flight at once (its API allows far more a second; this bounds
# our threads and connections).
SECRET_WORKERS = 8


class _Entry:
    """One host of the import on its way through: its body, index and fate."""

    def __init__(self, index: int, body: HostCreate) -> None:
        self.index = index
        self.body = body
        self.host: Host | None = None
        self.old: dict[str, Any] | None = None


class BulkImport:
    def __init__(self, hosts: HostStore | None = None, audit: AuditLog | None = None,
                 secret_settings: SecretSettings | None = None, tables: Tables | None = None
                 ) -> None:
        # The same stores and secret prefix as POST /hosts: the import writes through them.
        self.inventory = Inventory(hosts=hosts, audit=audit, secret_settings=secret_settings,
                                   tables=tables)
        self.hosts = self.inventory.hosts
        self.audit = self.inventory.audit
        self.prefix = self.inventory.prefix

    def run(self, raw: list[dict[str, Any]], on_conflict: OnConflict, caller: Caller
            ) -> ImportOutcome:
        outcome = ImportOutcome()

        def fail(index: int, host_id: Any, field: str, reason: str) -> None:
            ident = host_id if isinstance(host_id, str) else None
            outcome.failed.append(ImportFailure(id=ident, index=index, field=field, reason=reason))

        entries = self._parse(raw, caller, fail)
        entries = self._check_secrets(entries, fail)
        existing = self.hosts.get_many([e.body.id for e in entries])
        stamp = now_iso()
        creates: list[_Entry] = []
        replaces: list[_Entry] = []
        for entry in entries:
            old = existing.get(entry.body.id)
            if old is None:
                entry.host = _host(entry.body, stamp, stamp, self.prefix)
                creates.append(entry)
            elif on_conflict == OnConflict.SKIP:
                outcome.skipped.append(entry.body.id)
            elif on_conflict == OnConflict.REPLACE:
                if not caller.sees(old):
                    fail(entry.index, entry.body.id, "id",
                         "a host with this id exists outside this token's scope")
                    continue
                entry.old = old
                entry.host = _host(entry.body, old.get("created_at") or stamp, stamp, self.prefix)
                replaces.append(entry)
            else:
                fail(entry.index, entry.body.id, "id",
                     "a host with this id already exists (on_conflict is fail)")
        written = self._write(creates + replaces, fail, caller)
        for entry in written:
            if entry.old is not None:
                forget_sessions(entry.body.id)
        outcome.created = [e.body.id for e in written if e.old is None]
        outcome.replaced = [e.body.id for e in written if e.old is not None]
        outcome.failed.sort(key=lambda f: f.index)
        return outcome

    # ------------------------------------------------------------------ steps
    @staticmethod
    def _parse(raw: list[dict[str, Any]], caller: Caller, fail: Any) -> list[_Entry]:
        entries: list[_Entry] = []
        seen: set[str] = set()
        for index, item in enumerate(raw):
            host_id = item.get("id")
            try:
                body = HostCreate.model_validate(item)
            except ValidationError as exc:
                # Field and reason only: never the input (it may hold credentials).
                error = exc.errors()[0]
                field = ".".join(str(p) for p in error.get("loc", ())) or "host"
                fail(index, host_id, field, error.get("msg", "invalid"))
                continue
            if body.id in seen:
                fail(index, body.id, "id", "appears more than once in this import")
                continue
            seen.add(body.id)
            if not caller.sees(body.model_dump(mode="json")):
                fail(index, body.id, "scope", "outside this token's scope (kind or tags)")
                continue
            entries.append(_Entry(index, body))
        return entries

    def _check_secrets(self, entries: list[_Entry], fail: Any) -> list[_Entry]:
        """Hosts naming an existing secret: it stays bound to its host (as for POST /hosts)
        and must hold the fields their kind needs."""
        external = [e for e in entries if e.body.credentials_secret is not None]
        if not external:
            return entries
        inventory = self.inventory
        users = self.hosts.secret_users()
        bound = []
        for entry in external:
            try:
                name, _ = inventory.check_secret_binding(
                    entry.body.id, entry.body.credentials_secret or "",
                    entry.body.shares_credentials_with, users)
            except Problem as problem:
                error = problem.errors[0] if problem.errors else None
                fail(entry.index, entry.body.id, error.field if error else "credentials_secret",
                     error.reason if error else problem.message)
                continue
            entry.body.credentials_secret = name
            users[entry.body.id] = name  # a second host of this import naming it shares it
            bound.append(entry)
        refused = {id(e) for e in external} - {id(e) for e in bound}
        entries = [e for e in entries if id(e) not in refused]
        external = bound

        def check(entry: _Entry) -> str | None:
            try:
                check_credentials(
                    entry.body.kind, secrets.load(entry.body.credentials_secret or "", fresh=True)
                )
            except (secrets.SecretProblem, ValueError, ValidationError) as exc:
                return str(exc)
            return None

        with ThreadPoolExecutor(SECRET_WORKERS) as pool:
            problems = dict(zip([id(e) for e in external], pool.map(check, external), strict=True))
        kept = []
        for entry in entries:
            problem = problems.get(id(entry))
            if problem:
                fail(entry.index, entry.body.id, "credentials_secret", problem)
            else:
                kept.append(entry)
        return kept

    def _write(self, entries: list[_Entry], fail: Any, caller: Caller) -> list[_Entry]:
        """Each host item with its own audit event (AuditLog.record_each: entries share
        transactions, each all-or-nothing), then each managed secret from a bounded pool.

        A create is conditional on the id being free and a replace on the host still
        existing: a host registered or removed by another request since the read of
        existing ids is refused here, never overwritten. A host whose secret could not
        be stored is put back as it was (removed, or its previous item restored), on the
        record too (docs/audit.md: changes outside DynamoDB), and listed as failed."""
        entries = [e for e in entries if e.host is not None]
        event = {"actor": caller.principal, "source_ip": caller.source_ip,
                 "request_id": caller.request_id}
        results = self.audit.record_each([
            ([self._change(e)], dict(
                event, action="host.create" if e.old is None else "host.replace",
                target=e.body.id, outcome="ok",
                params={"via": "inventory.import", **audit_params(
                    e.host, credentials_given=e.body.credentials is not None)}))
            for e in entries if e.host is not None
        ])
        recorded = []
        for entry, result in zip(entries, results, strict=True):
            if isinstance(result, ChangeRefused):
                fail(entry.index, entry.body.id, "id",
                     "a host with this id was registered meanwhile" if entry.old is None
                     else "the host was removed meanwhile")
            else:
                recorded.append(entry)

        def store(entry: _Entry) -> bool:
            if entry.body.credentials is None:
                return True
            try:
                secrets.create_for_host(entry.body.id, entry.body.credentials,
                                        self.prefix)
            except Exception as exc:
                undo = (self.hosts.delete_change(entry.body.id) if entry.old is None
                        else self.hosts.restore_change(entry.old))
                try:
                    self.audit.record(
                        undo, **event, target=entry.body.id, outcome="rolled_back",
                        action="host.delete" if entry.old is None else "host.replace",
                        params={"via": "inventory.import",
                                "reason": f"credentials not stored: {type(exc).__name__}"})
                except ChangeRefused:
                    pass  # removed by another request meanwhile: nothing left to undo
                return False
            return True

        with ThreadPoolExecutor(SECRET_WORKERS) as pool:
            stored = list(pool.map(store, recorded))
        written = []
        for entry, ok in zip(recorded, stored, strict=True):
            if ok:
                written.append(entry)
            else:
                fail(entry.index, entry.body.id, "credentials",
                     "could not be stored in Secrets Manager; the host was left as it was")
        return written

    def _change(self, entry: _Entry) -> Change:
        assert entry.host is not None
        if entry.old is None:
            return self.hosts.create_change(entry.host)
        return self.hosts.replace_change(entry.host, **_kept_caches(entry.body, entry.old))


def _host(body: HostCreate, created_at: str, updated_at: str, prefix: str) -> Host:
    return Host(
        id=body.id,
        kind=body.kind,
        endpoint=body.endpoint,
        tls=body.tls,
        tags=body.tags,
        max_concurrency=body.max_concurrency,
        maintenance=body.maintenance,
        credentials_secret=body.credentials_secret or secrets.managed_name(body.id, prefix),
        created_at=created_at,
        updated_at=updated_at,
    )


def _kept_caches(body: HostCreate, old: dict[str, Any]) -> dict[str, Any]:
    """A replaced host keeps its cached command list while it is reached the same way."""
    same = (old.get("kind") == body.kind.value and old.get("endpoint") == body.endpoint
            and old.get("tls") == body.tls.model_dump(mode="json", exclude_none=True))
    return {"doveadm_commands": old["doveadm_commands"]} if same and "doveadm_commands" in old \
        else {}
