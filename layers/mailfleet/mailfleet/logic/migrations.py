"""Migrations, API side: check a request against the inventory, lock its accounts (the
same locks as cutovers: an account is in one running cutover or migration at most),
start the migration state machine; show migrations; roll a finished one back.

A migration is a cutover that carries the mail first, so it is one: the same table items,
locks, start, rollback and final status (mailfleet.logic.cutovers), under its own name.
The per-account steps run in mailfleet.logic.migration_steps.
"""

from __future__ import annotations

from typing import Any
from urllib.parse import urlsplit

from mailfleet.drivers import driver_class
from mailfleet.drivers.base import HostRole
from mailfleet.drivers.dovecot import DsyncTarget
from mailfleet.logic.caller import Caller
from mailfleet.logic.cutovers import Cutovers, item_view
from mailfleet.logic.problems import invalid
from mailfleet.models.cutovers import Strategy
from mailfleet.models.hosts import HostKind
from mailfleet.models.migrations import DSYNC_PORT, DirectorRouting, MigrationRequest
from mailfleet.store.audit import Change
from mailfleet.store.cutovers import MigrationStore


class Migrations(Cutovers):
    noun = "migration"
    store_class = MigrationStore
    in_progress_advice = ("see its last step: before the flip its route is unchanged and the "
                          "source has all its mail; from the flip on, check its route on "
                          "every director or proxy")

    def state_machine_arn(self) -> str | None:
        return self.settings.migration_state_machine_arn

    def submit(self, request: MigrationRequest, caller: Caller) -> tuple[dict[str, Any], bool]:
        """Create and start a migration. Returns (answer, dry_run)."""
        source = self._backend(request.source, "source", caller)
        destination = self._backend(request.destination, "destination", caller)
        to_destination = _dsync_target(destination, request.dsync_endpoint, DSYNC_PORT,
                                       "dsync_endpoint")
        to_source = _dsync_target(source, request.source_dsync_endpoint, to_destination.port,
                                  "source_dsync_endpoint")
        routing = request.routing
        if isinstance(routing, DirectorRouting):
            selection, field, kind = routing.directors, "routing.directors", HostKind.DOVECOT
            route_to = routing.backend_address
        else:
            selection, field, kind = routing.proxies, "routing.proxies", HostKind.PROXY
            route_to = routing.destination
        routers, left_out = self._resolve(selection, kind, field, caller)
        clash = {request.source, request.destination} & {r["id"] for r in routers}
        if clash:
            raise invalid(field, "the routing layer cannot include the source or destination "
                          "backend: " + ", ".join(sorted(clash)))
        keys, stale = self._claim(request.accounts)
        plan = {
            "kind": self.noun,
            # What the cutover steps read: the route's new target, the routers, the
            # backend whose sessions are kicked.
            "strategy": request.strategy.value,
            "destination": route_to,
            "proxies": [r["id"] for r in routers],
            "backends": [request.source],
            "delay_seconds": request.delay_seconds,
            # The mail's part.
            "source_host": request.source,
            "destination_host": request.destination,
            "dsync": {"host": to_destination.host, "port": to_destination.port},
            "dsync_back": {"host": to_source.host, "port": to_source.port},
            "copy_timeout_seconds": request.copy_timeout_seconds,
        }
        migration = self._new_item(plan, request, caller, left_out)
        migration_id, total = migration["cutover_id"], migration["total"]
        answer: dict[str, Any] = {"migration_id": migration_id, "status": migration["status"],
                                  "total": total}
        if request.dry_run:
            self._record_dry_run(migration, request, caller)
            view = self.public(migration)
            answer.update(
                status=migration["status"], dry_run=True,
                max_concurrency=migration["max_concurrency"],
                source={"host": source["id"], "endpoint": source["endpoint"]},
                destination={"host": destination["id"], "endpoint": destination["endpoint"]},
                dsync_endpoint=view["dsync_endpoint"],
                source_dsync_endpoint=view["source_dsync_endpoint"],
                routing=dict(view["routing"], hosts=[
                    {"host": r["id"], "endpoint": r["endpoint"]} for r in routers]),
                left_out_in_maintenance=left_out,
            )
            return answer, True
        answer["status"] = self._reserve_and_start(migration, keys, stale, request, caller)
        return answer, False

    def _backend(self, host_id: str, field: str, caller: Caller) -> dict[str, Any]:
        host = self.hosts.get_many([host_id]).get(host_id)
        if host is None:
            raise invalid(field, f"unknown host id {host_id}")
        caller.check_acts(host, host_id, field)  # a scoped token: 403 outside its scope
        if HostRole.BACKEND not in driver_class(host["kind"]).roles:
            raise invalid(field, f"must be a dovecot backend; {host_id} is a {host['kind']} host")
        return host

    def public(self, item: dict[str, Any]) -> dict[str, Any]:
        plan = item.get("plan", {})
        strategy = plan.get("strategy")
        routing: dict[str, Any] = {"strategy": strategy}
        if strategy == Strategy.DIRECTOR:
            routing.update(directors=plan.get("proxies", []),
                           backend_address=plan.get("destination"))
        else:
            routing.update(proxies=plan.get("proxies", []), destination=plan.get("destination"))
        return item_view(
            item, ("plan", "execution_arn", "cutover_id", "kind", "drain_previous"),
            migration_id=item["cutover_id"],
            source=plan.get("source_host"),
            destination=plan.get("destination_host"),
            dsync_endpoint=DsyncTarget(**plan["dsync"]).location if plan.get("dsync") else None,
            source_dsync_endpoint=(DsyncTarget(**plan["dsync_back"]).location
                                   if plan.get("dsync_back") else None),
            routing=routing,
            delay_seconds=plan.get("delay_seconds"),
            copy_timeout_seconds=plan.get("copy_timeout_seconds"),
        )

    def _audit_submit(
        self, cutover: dict[str, Any], caller: Caller, request: Any, change: Change
    ) -> None:
        view = self.public(cutover)
        self.audit.record(
            change,
            actor=caller.principal, source_ip=caller.source_ip, request_id=caller.request_id,
            action=f"{self.noun}.dry_run" if request.dry_run else f"{self.noun}.start",
            target=f"{self.noun}:{cutover['cutover_id']}", cutover_id=cutover["cutover_id"],
            outcome="ok",
            params={k: view[k] for k in ("source", "destination", "dsync_endpoint",
                                         "source_dsync_endpoint", "routing", "delay_seconds",
                                         "max_concurrency", "tolerated_failure_percentage",
                                         "copy_timeout_seconds", "total")}
            | {"accounts": request.accounts[:20]},
        )


def _dsync_target(host: dict[str, Any], given: str | None, default_port: int,
                  field: str) -> DsyncTarget:
    """The backend's doveadm listener: its own address from the inventory, with the
    port asked for (or the default). Mail is only ever sent to an inventory backend's
    address, never to one a caller made up."""
    address = urlsplit(host["endpoint"]).hostname or ""
    if given is None:
        try:
            return DsyncTarget(address, default_port)
        except ValueError as exc:
            raise invalid(field, f"cannot build it from {host['id']}'s endpoint: {exc}") from None
    target = DsyncTarget.parse(given)  # checked by the model already
    if target.host.lower() != address.lower():
        raise invalid(field, f"must point at {host['id']}'s own address from the inventory "
                      f"({address}); mail is copied to inventory backends only")
    return target
