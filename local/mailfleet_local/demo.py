"""The demo fleet of `make run`: real Dovecot and pymap processes, the proxy and appliance
doubles, all registered through the public API so the README's curl examples work.

What cannot start here (no dovecot binary, not root) is left out and said plainly.
"""

from __future__ import annotations

import logging
import sys
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import requests

log = logging.getLogger("mailfleet-local.demo")

SITE = "demo"
# Accounts the cutover walkthrough moves from `legacy` to `stalwart`.
DEMO_ACCOUNTS = ("alice@example.org", "bob@example.org", "carol@example.org")
DOVECOT_USERS = {"alice": "alicepw", "bob": "bobpw", "carol": "carolpw"}


@dataclass
class DemoFleet:
    hosts: list[dict[str, Any]] = field(default_factory=list)
    left_out: list[str] = field(default_factory=list)
    peers: dict[str, Any] = field(default_factory=dict)
    _stops: list[tuple[str, Callable[[], None]]] = field(default_factory=list)

    def stop(self) -> None:
        for name, stop in reversed(self._stops):
            try:
                stop()
            except Exception as exc:  # keep stopping the others
                log.warning("stopping %s failed: %s", name, exc)
        self._stops.clear()


def start_demo(api_url: str, admin_token: str, workdir: Path) -> DemoFleet:
    fleet = DemoFleet()
    api = requests.Session()
    api.trust_env = False
    api.headers["Authorization"] = f"Bearer {admin_token}"

    def register(body: dict[str, Any]) -> None:
        answer = api.post(f"{api_url}/hosts", json=body, timeout=30)
        if answer.status_code != 201:
            raise RuntimeError(f"registering {body['id']}: {answer.status_code} {answer.text}")
        fleet.hosts.append({"id": body["id"], "kind": body["kind"],
                            "endpoint": body["endpoint"]})

    try:
        _dovecot(fleet, register, workdir)
        _proxies(fleet, register)
        _appliance(fleet, register, workdir)
        _pymap(fleet, register, workdir)
    except Exception:
        fleet.stop()
        raise
    _say(fleet)
    return fleet


def _dovecot(fleet: DemoFleet, register: Callable[[dict[str, Any]], None], workdir: Path
             ) -> None:
    from mailfleet_local.peers.dovecot import DovecotInstance, dovecot_available

    why = dovecot_available()
    if why:
        fleet.left_out.append(f"Dovecot backends ({why})")
        return
    for n in (1, 2):
        inst = DovecotInstance(workdir / f"dovecot-{n}", users=DOVECOT_USERS,
                               name=f"demo{n}").start()
        fleet._stops.append((f"dovecot-{n}", inst.stop))
        fleet.peers[f"dc-{n}"] = inst
        register({
            "id": f"dc-{n}", "kind": "dovecot", "endpoint": inst.endpoint,
            "credentials": {"api_key": inst.api_key},
            "tags": {"site": SITE, "role": "backend"},
        })


def _proxies(fleet: DemoFleet, register: Callable[[dict[str, Any]], None]) -> None:
    from mailfleet_local.peers.proxy import ProxyDouble

    for n in (1, 2):
        proxy = ProxyDouble(destinations=("legacy", "stalwart"), default_destination="legacy",
                            mappings=dict.fromkeys(DEMO_ACCOUNTS[:2], "legacy")).start()
        for account in DEMO_ACCOUNTS:
            proxy.seed_sessions(account, 2)
        fleet._stops.append((f"proxy-{n}", proxy.stop))
        fleet.peers[f"proxy-{n}"] = proxy
        register({
            "id": f"proxy-{n}", "kind": "proxy", "endpoint": proxy.endpoint,
            "credentials": {"token": proxy.token},
            "tls": {"pin_sha256": proxy.fingerprint_sha256},
            "tags": {"site": SITE, "role": "edge"},
        })


def _appliance(fleet: DemoFleet, register: Callable[[dict[str, Any]], None], workdir: Path
               ) -> None:
    from mailfleet_local.peers.appliance import ApplianceDouble

    appliance = ApplianceDouble(directory=workdir / "appliance").start()
    fleet._stops.append(("appliance", appliance.stop))
    fleet.peers["appliance-1"] = appliance
    register({
        "id": "appliance-1", "kind": "appliance", "endpoint": appliance.endpoint,
        "credentials": {"token": appliance.token},
        "tls": {"pin_sha256": appliance.fingerprint_sha256},
        "tags": {"site": SITE, "role": "appliance"},
    })


def _pymap(fleet: DemoFleet, register: Callable[[dict[str, Any]], None], workdir: Path
           ) -> None:
    from mailfleet_local.peers.pymap import PymapServer

    why = PymapServer.available()
    if why:
        fleet.left_out.append(f"pymap server ({why})")
        return
    server = PymapServer(workdir / "pymap").start()
    fleet._stops.append(("pymap", server.stop))
    fleet.peers["pymap-1"] = server
    register({
        "id": "pymap-1", "kind": "pymap", "endpoint": server.endpoint,
        "credentials": {"token": server.token},
        "tls": {"pin_sha256": server.fingerprint_sha256},
        "tags": {"site": SITE, "role": "backend"},
    })


def _say(fleet: DemoFleet) -> None:
    lines = ["Demo fleet (tag site=demo):"]
    for host in fleet.hosts:
        lines.append(f"  {host['id']:<12} {host['kind']:<10} {host['endpoint']}")
    for host_id, peer in fleet.peers.items():
        if host_id.startswith("dc-"):
            lines.append(f"  {host_id}: IMAP on 127.0.0.1:{peer.imap_port}, users "
                         + ", ".join(f"{u}/{p}" for u, p in DOVECOT_USERS.items()))
    for item in fleet.left_out:
        lines.append(f"  left out: {item}")
    print("\n".join(lines), file=sys.stderr, flush=True)
