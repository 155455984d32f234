"""The one way dsync `backup`/`sync` run (DovecotDriver.dsync_to_host): the destination is
an inventory Dovecot host, the `tcp:` address built from its endpoint; no caller-chosen
string reaches dsync. Real Dovecot 2.3."""

from __future__ import annotations

import socket

import pytest

from mailfleet.drivers.base import Deadline
from mailfleet.errors import ErrorType, HostError, InvalidParams
from mailfleet.models.hosts import Host
from mailfleet_local.peers.dovecot import DovecotInstance
from tests.fixtures.dovecot import driver_for, host_for

pytestmark = pytest.mark.dovecot


def closed_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def test_dsync_to_host_refuses_anything_but_one_user_to_a_dovecot_host(
        dovecot_hosts: list[DovecotInstance]) -> None:
    driver = driver_for(dovecot_hosts[0])
    proxy = Host(id="px", kind="proxy", endpoint="https://127.0.0.1:1")
    destination, _ = host_for(dovecot_hosts[1])
    for user, target, field in (("alice", proxy, "destination"),
                                ("*", destination, "user"), ("a b", destination, "user")):
        with pytest.raises(InvalidParams) as refused:
            driver.dsync_to_host(user, target, Deadline.after(5))
        assert refused.value.field == field


def test_dsync_to_host_sends_a_tcp_destination_built_from_the_inventory(
        dovecot_hosts: list[DovecotInstance]) -> None:
    driver = driver_for(dovecot_hosts[0])
    destination, _ = host_for(dovecot_hosts[1])
    # No doveadm TCP listener there: the call reaches the host as a `tcp:` backup, and
    # dsync fails to connect (2.3.19 drops the HTTP connection when it does).
    with pytest.raises(HostError) as failed:
        driver.dsync_to_host("alice", destination, Deadline.after(20), port=closed_port())
    assert not isinstance(failed.value, InvalidParams)
    assert failed.value.type in (ErrorType.EXIT_CODE, ErrorType.CONNECTION), failed.value
    # The host is unharmed and answers the next command.
    assert isinstance(driver.perform("who", {}, Deadline.after(10)), list)
