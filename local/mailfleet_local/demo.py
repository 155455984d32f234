"""The demo fleet of `make run`: real Dovecot and pymap processes, the proxy and appliance
doubles, all registered through the public API so the README's curl examples work.

What cannot start here (no dovecot binary, not root) is left out and said plainly.
"""

from __future__ import annotations

import logging
import secrets
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
# The two Dovecot backends behind the demo director, one loopback address each (the
# director tells backends apart by IP): they share one IMAP port and a dsync port.
BACKEND_ADDRESSES = ("127.0.0.2", "127.0.0.3")
DSYNC_PORT = 2425  # Dovecot's usual doveadm port: migrations default to it


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
    """dc-1 (127.0.0.2) and dc-2 (127.0.0.3) behind director-1 (127.0.0.1): alice, bob
    and carol are directed to dc-1, where alice has a little mail to migrate."""
    from mailfleet_local.peers.dovecot import DovecotInstance, dovecot_available, free_port_on

    why = dovecot_available()
    if why:
        fleet.left_out.append(f"Dovecot backends and director ({why})")
        return
    imap_port = free_port_on(*BACKEND_ADDRESSES)
    dsync_port = DSYNC_PORT if _free_on(DSYNC_PORT, BACKEND_ADDRESSES) else free_port_on(
        *BACKEND_ADDRESSES)
    # dsync's client authenticates with its own doveadm_password: one for both.
    password = secrets.token_urlsafe(18)
    for n, address in enumerate(BACKEND_ADDRESSES, start=1):
        inst = DovecotInstance(workdir / f"dovecot-{n}", users=DOVECOT_USERS, name=f"demo{n}",
                               address=address, imap_port=imap_port, dsync=True,
                               dsync_port=dsync_port, doveadm_password=password).start()
        fleet._stops.append((f"dovecot-{n}", inst.stop))
        fleet.peers[f"dc-{n}"] = inst
        register({
            "id": f"dc-{n}", "kind": "dovecot", "endpoint": inst.endpoint,
            "credentials": {"api_key": inst.api_key},
            "tags": {"site": SITE, "role": "backend"},
        })
    director = DovecotInstance(workdir / "director-1", users=DOVECOT_USERS, name="demodir",
                               director=True, director_backends=list(BACKEND_ADDRESSES),
                               director_backend_port=imap_port).start()
    fleet._stops.append(("director-1", director.stop))
    fleet.peers["director-1"] = director
    register({
        "id": "director-1", "kind": "dovecot", "endpoint": director.endpoint,
        "credentials": {"api_key": director.api_key},
        "tags": {"site": SITE, "role": "director"},
    })
    for user in DOVECOT_USERS:
        director.call("directorMove", {"user": user, "host": BACKEND_ADDRESSES[0]})
    # Some mail for alice, through the director (so on dc-1): an INBOX and an archive.
    imap = director.imap("alice")
    try:
        imap.create("Archive")
        for n in range(1, 11):
            box = "Archive" if n > 7 else "INBOX"
            body = f"From: bob@example.org\r\nSubject: demo message {n}\r\n\r\nhello {n}\r\n"
            imap.append(box, None, None, body.encode())
    finally:
        imap.logout()


def _free_on(port: int, addresses: tuple[str, ...]) -> bool:
    import socket

    for address in addresses:
        with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
            try:
                probe.bind((address, port))
            except OSError:
                return False
    return True


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
            lines.append(f"  {host_id}: IMAP on {peer.address}:{peer.imap_port}, dsync on "
                         f"{peer.dsync_endpoint}, users "
                         + ", ".join(f"{u}/{p}" for u, p in DOVECOT_USERS.items()))
        elif host_id.startswith("director-"):
            lines.append(f"  {host_id}: IMAP on {peer.address}:{peer.imap_port}, logins go to "
                         f"the user's backend ({' or '.join(peer.director_backends)})")
    for item in fleet.left_out:
        lines.append(f"  left out: {item}")
    print("\n".join(lines), file=sys.stderr, flush=True)
