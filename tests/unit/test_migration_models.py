"""The migration request as the API takes it: what is refused, and why (named field)."""

from __future__ import annotations

from typing import Any

import pytest
from pydantic import ValidationError

from mailfleet.drivers.dovecot import DsyncTarget
from mailfleet.models.migrations import MigrationRequest


def body(**extra: Any) -> dict[str, Any]:
    return {
        "accounts": ["alice"], "source": "dc-1", "destination": "dc-2",
        "routing": {"strategy": "director", "directors": {"hosts": ["director-1"]},
                    "backend_address": "127.0.0.3"},
        **extra,
    }


def refused(**extra: Any) -> str:
    with pytest.raises(ValidationError) as caught:
        MigrationRequest.model_validate(body(**extra))
    return str(caught.value)


def test_a_good_request_and_its_defaults() -> None:
    request = MigrationRequest.model_validate(body())
    assert request.strategy == "director"
    assert request.dsync_endpoint is None and request.delay_seconds == 10
    assert request.max_concurrency == 4 and request.copy_timeout_seconds == 6 * 3600
    proxy = MigrationRequest.model_validate(body(routing={
        "strategy": "proxy", "proxies": {"tags": {"site": "demo"}}, "destination": "dc2"}))
    assert proxy.strategy == "proxy"


@pytest.mark.parametrize("endpoint", [
    "127.0.0.3:2425", "tcp:127.0.0.3", "tcp:127.0.0.3:0", "tcp:127.0.0.3:99999",
    "tcp:host name:2425", "unix:/run/doveadm", "tcp:127.0.0.3:2425; rm", "tcp:-x:1",
])
def test_dsync_endpoints_must_be_tcp_host_port(endpoint: str) -> None:
    assert "dsync_endpoint" in refused(dsync_endpoint=endpoint)


def test_dsync_targets() -> None:
    assert DsyncTarget.parse("tcp:127.0.0.3:2425").location == "tcp:127.0.0.3:2425"
    assert DsyncTarget.parse("tcp:mail-2.example.org:24").host == "mail-2.example.org"
    assert DsyncTarget.parse("tcp:[::1]:2425").location == "tcp:[::1]:2425"


@pytest.mark.parametrize(("extra", "field"), [
    ({"accounts": ["a*"]}, "accounts"),
    ({"accounts": ["alice", "ALICE"]}, "accounts"),
    ({"accounts": ["al ice"]}, "accounts"),
    ({"destination": "dc-1"}, "destination"),
    ({"delay_seconds": -1}, "delay_seconds"),
    ({"copy_timeout_seconds": 5}, "copy_timeout_seconds"),
    ({"routing": {"strategy": "director", "directors": {"hosts": ["d"]},
                  "backend_address": "dc-2"}}, "backend_address"),
    ({"routing": {"strategy": "carrier-pigeon"}}, "routing"),
])
def test_bad_fields_are_named(extra: dict[str, Any], field: str) -> None:
    assert field in refused(**extra)
