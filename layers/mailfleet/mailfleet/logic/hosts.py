"""The inventory: registering, changing and removing hosts, and what each host accepts."""

from __future__ import annotations

from typing import Any

from pydantic import ValidationError

from mailfleet.config import SecretSettings, Tables
from mailfleet.drivers import driver_class
from mailfleet.drivers.http import forget_sessions
from mailfleet.errors import HostError
from mailfleet.logic import connect
from mailfleet.logic.caller import Caller
from mailfleet.logic.problems import conflict, invalid, not_found
from mailfleet.models.common import now_iso
from mailfleet.models.hosts import (
    Host,
    HostCreate,
    HostKind,
    HostPatch,
    check_credentials,
    check_endpoint,
)
from mailfleet.store import secrets
from mailfleet.store.audit import AuditLog, ChangeRefused
from mailfleet.store.hosts import HostNotFound, HostStore

# Inventory items keep internal caches the API does not show.
_INTERNAL = ("doveadm_commands",)


class Inventory:
    def __init__(self, hosts: HostStore | None = None, audit: AuditLog | None = None,
                 secret_settings: SecretSettings | None = None, tables: Tables | None = None
                 ) -> None:
        tables = tables or Tables()
        self.hosts = hosts or HostStore(tables.hosts_table)
        self.audit = audit or AuditLog(tables.audit_table)
        # Managed credentials live under this stack's host prefix.
        self.prefix = (secret_settings or SecretSettings()).host_secrets_prefix

    # ------------------------------------------------------------------ reads
    def get(self, host_id: str, caller: Caller | None = None) -> dict[str, Any]:
        return view(self._item(host_id, caller))

    def list(
        self,
        *,
        kind: str | None,
        tags: dict[str, str],
        limit: int,
        next_token: str | None,
        caller: Caller | None = None,
    ) -> tuple[list[dict[str, Any]], str | None]:
        if caller is not None and caller.scope is not None:
            narrowed = caller.scope.narrow(kind, tags)
            if narrowed is None:
                return [], None  # the filter asks for hosts outside the token's scope
            kind, tags = narrowed
        items, token = self.hosts.list(kind=kind, tags=tags, limit=limit, next_token=next_token)
        return [view(i) for i in items], token

    def ids_in_scope(self, caller: Caller) -> set[str] | None:
        """The ids of every host a scoped caller may see (None: unscoped, all of them)."""
        if caller.scope is None:
            return None
        kind = caller.scope.kind.value if caller.scope.kind else None
        items, _ = self.hosts.list(kind=kind, tags=caller.scope.tags)
        return {i["id"] for i in items}

    def actions(self, host_id: str, caller: Caller | None = None) -> dict[str, Any]:
        item = self._item(host_id, caller)
        driver = driver_class(item["kind"])
        if not driver.describes_own_actions:
            specs = driver.static_actions()
            return {
                "host": host_id,
                "kind": item["kind"],
                "source": "driver",
                "actions": [s.describe() for s in specs.values()],
            }
        commands = connect.cached_commands(item)
        source = "cache"
        if commands is None:
            try:
                commands = connect.refresh_commands(item, self.hosts)
                source = "host"
            except HostError as exc:
                return {
                    "host": host_id,
                    "kind": item["kind"],
                    "source": "unavailable",
                    "error": exc.to_dict(),
                    "actions": [],
                }
        specs = driver.actions_from_commands(commands)
        return {
            "host": host_id,
            "kind": item["kind"],
            "source": source,
            "actions": [s.describe() for s in specs.values()],
        }

    # ------------------------------------------------------------------ writes
    def register(self, body: HostCreate, caller: Caller) -> dict[str, Any]:
        caller.check_acts(body.model_dump(mode="json"), body.id)
        secret_name = body.credentials_secret
        sharing = None
        if secret_name is not None:
            secret_name, sharing = self.check_secret_binding(
                body.id, secret_name, body.shares_credentials_with)
            self._check_external_secret(body.kind, secret_name, "credentials_secret")
        stamp = now_iso()
        host = Host(
            id=body.id,
            kind=body.kind,
            endpoint=body.endpoint,
            tls=body.tls,
            tags=body.tags,
            max_concurrency=body.max_concurrency,
            maintenance=body.maintenance,
            credentials_secret=secret_name or secrets.managed_name(body.id, self.prefix),
            created_at=stamp,
            updated_at=stamp,
        )
        event = {
            "actor": caller.principal,
            "source_ip": caller.source_ip,
            "request_id": caller.request_id,
            "target": body.id,
        }
        try:
            # The item and its event first: a conflicting id must never overwrite another
            # host's secret. Then the secret; should that fail, the host goes again, on
            # the record too (docs/audit.md: changes outside DynamoDB).
            self.audit.record(
                self.hosts.create_change(host), action="host.create", outcome="ok",
                params=audit_params(host, credentials_given=body.credentials is not None,
                                    sharing=sharing),
                **event)
        except ChangeRefused:
            raise conflict(f"host {body.id!r} already exists") from None
        if body.credentials is not None:
            try:
                self._check_managed_secret_free(body.id)
                secrets.create_for_host(body.id, body.credentials, self.prefix)
            except Exception as exc:
                self.audit.record(self.hosts.delete_change(body.id), action="host.delete",
                                  outcome="rolled_back",
                                  params={"reason": f"credentials not stored: "
                                          f"{type(exc).__name__}"}, **event)
                raise
        return view(host.model_dump(mode="json", exclude_none=True))

    def update(self, host_id: str, patch: HostPatch, caller: Caller) -> dict[str, Any]:
        item = self._item(host_id)
        caller.check_acts(item, host_id)
        host = Host.model_validate(item)
        changes = patch.model_dump(exclude_unset=True)
        if not changes:
            raise invalid("body", "nothing to change")
        if patch.endpoint is not None:
            try:
                host.endpoint = check_endpoint(host.kind, patch.endpoint)
            except ValueError as exc:
                raise invalid("endpoint", str(exc)) from None
        if patch.credentials is not None and patch.credentials_secret is not None:
            raise invalid("credentials", "give either credentials or credentials_secret")
        sharing = None
        if patch.shares_credentials_with is not None and patch.credentials_secret is None:
            raise invalid("shares_credentials_with", "goes with credentials_secret")
        if patch.credentials_secret is not None:
            host.credentials_secret, sharing = self.check_secret_binding(
                host_id, patch.credentials_secret, patch.shares_credentials_with)
            self._check_external_secret(host.kind, host.credentials_secret, "credentials_secret")
        if patch.credentials is not None:
            try:
                check_credentials(host.kind, patch.credentials)
            except ValueError as exc:
                raise invalid("credentials", str(exc)) from None
            self._check_managed_secret_free(host_id)
            # Written after the item and its event (below): a credentials change is
            # never made without its record.
            host.credentials_secret = secrets.managed_name(host_id, self.prefix)
        for name in ("tls", "tags", "max_concurrency", "maintenance"):
            value = getattr(patch, name)
            if value is not None:
                setattr(host, name, value)
        # A scoped token may not move a host out of its own scope either.
        caller.check_acts(host.model_dump(mode="json"), host_id, "tags")
        host.updated_at = now_iso()
        # The host's own command list stays cached unless where or how we reach it changed.
        keep = {}
        if patch.endpoint is None and patch.tls is None and "doveadm_commands" in item:
            keep["doveadm_commands"] = item["doveadm_commands"]
        changed = sorted(changes)
        try:
            self.audit.record(
                self.hosts.replace_change(host, **keep),
                actor=caller.principal,
                source_ip=caller.source_ip,
                request_id=caller.request_id,
                action="host.update",
                target=host_id,
                outcome="ok",
                params={
                    "changed": changed,
                    **audit_params(host, credentials_given="credentials" in changes,
                                   sharing=sharing),
                },
            )
        except ChangeRefused:
            raise not_found("host", host_id) from None
        if patch.credentials is not None:
            try:
                secrets.create_for_host(host_id, patch.credentials, self.prefix)
            except Exception as exc:
                self.audit.append(actor=caller.principal, source_ip=caller.source_ip,
                                  request_id=caller.request_id, action="host.update",
                                  target=host_id, outcome="failed",
                                  params={"reason": "credentials not stored: "
                                          f"{type(exc).__name__}"})
                raise
        forget_sessions(host_id)
        return view(host.model_dump(mode="json", exclude_none=True))

    def delete(self, host_id: str, caller: Caller) -> None:
        old = self._item(host_id)
        if caller.scope is not None:
            caller.check_acts(old, host_id)
        try:
            self.audit.record(
                self.hosts.delete_change(host_id),
                actor=caller.principal,
                source_ip=caller.source_ip,
                request_id=caller.request_id,
                action="host.delete",
                target=host_id,
                outcome="ok",
                params={"kind": old.get("kind"), "endpoint": old.get("endpoint")},
            )
        except ChangeRefused:
            raise not_found("host", host_id) from None
        # After the record: a secret left behind by a failure here is harmless (nothing
        # refers to it) and is deleted with the next host of that id.
        if old.get("credentials_secret") == secrets.managed_name(host_id, self.prefix):
            secrets.delete_managed(host_id, self.prefix)
        forget_sessions(host_id)

    # ------------------------------------------------------------------ helpers
    def _item(self, host_id: str, caller: Caller | None = None) -> dict[str, Any]:
        try:
            item = self.hosts.get_item(host_id)
        except HostNotFound:
            raise not_found("host", host_id) from None
        if caller is not None:
            caller.check_reads(item, host_id)
        return item

    def check_secret_binding(self, host_id: str, name: str, shares_with: str | None,
                             secret_users: dict[str, str] | None = None
                             ) -> tuple[str, list[str] | None]:
        """A credentials_secret stays bound to its host: it must be under this stack's host
        prefix, and no other host may use it unless the request names the host it is
        shared with. Returns the secret's own name and the hosts it is shared with.
        `secret_users` (host id -> secret) spares a bulk import one table scan per host."""
        prefix = self.prefix
        if not secrets.secret_name(name).startswith(prefix):
            # Checked before any call: this stack may not even read secrets elsewhere.
            raise invalid("credentials_secret", f"must name a secret under this stack's host "
                          f"prefix {prefix!r}")
        try:
            canonical = secrets.canonical_name(name)
        except secrets.SecretProblem as exc:
            raise invalid("credentials_secret", str(exc)) from None
        if not canonical.startswith(prefix):
            raise invalid("credentials_secret", f"must name a secret under this stack's host "
                          f"prefix {prefix!r} (got {canonical!r})")
        if secret_users is None:
            secret_users = self.hosts.secret_users()
        users = sorted(other for other, used in secret_users.items()
                       if other != host_id and secrets.secret_name(used) == canonical)
        if not users:
            if shares_with is not None:
                raise invalid("shares_credentials_with",
                              f"no other host uses {canonical!r}: leave it out")
            return canonical, None
        if shares_with is None:
            raise invalid("credentials_secret",
                          f"{canonical!r} is the credentials of host(s) {', '.join(users[:10])}: "
                          "a host's credentials are its own; to share them on purpose, name "
                          "that host in shares_credentials_with")
        if shares_with not in users:
            raise invalid("shares_credentials_with",
                          f"host {shares_with!r} does not use {canonical!r}")
        return canonical, users

    def _check_managed_secret_free(self, host_id: str) -> None:
        """Writing a host's managed secret must not hand its credentials to another host
        that names that secret (shared on purpose, or registered before this host)."""
        name = secrets.managed_name(host_id, self.prefix)
        users = sorted(other for other, used in self.hosts.secret_users().items()
                       if other != host_id and secrets.secret_name(used) == name)
        if users:
            raise invalid("credentials", f"this host's secret {name!r} is used by host(s) "
                          f"{', '.join(users[:10])}: give those hosts their own credentials "
                          "first")

    @staticmethod
    def _check_external_secret(kind: HostKind, name: str, field: str) -> None:
        try:
            credentials = secrets.load(name, fresh=True)
            check_credentials(kind, credentials)
        except secrets.SecretProblem as exc:
            raise invalid(field, str(exc)) from None
        except (ValueError, ValidationError) as exc:
            raise invalid(field, str(exc)) from None


def view(item: dict[str, Any]) -> dict[str, Any]:
    """A host as the API shows it: no credentials (there are none in the item), no caches."""
    out = {k: v for k, v in item.items() if k not in _INTERNAL}
    out.setdefault("health", None)
    return out


def audit_params(host: Host, *, credentials_given: bool,
                 sharing: list[str] | None = None) -> dict[str, Any]:
    return {
        # The secret's name (never its value): who holds which credentials, and with whom.
        "shares_credentials_with": sharing,
        "kind": host.kind.value,
        "endpoint": host.endpoint,
        "tls": {
            "verify": host.tls.verify,
            "pinned": host.tls.pin_sha256 is not None,
            "ca_given": host.tls.ca_pem is not None,
        },
        "tags": host.tags,
        "max_concurrency": host.max_concurrency,
        "maintenance": host.maintenance,
        "credentials_secret": host.credentials_secret,
        "credentials_written": credentials_given,
    }
