"""The appliance's HMAC hash (the document's worked example) and the driver's pure rules."""

from __future__ import annotations

import hashlib

import pytest

from mailfleet.drivers.appliance import (
    OPERATIONS,
    TOKEN_ALPHABET,
    ApplianceDriver,
    hash_key,
    is_stale,
    log_lines,
    new_token,
    pem_fingerprint,
    request_hash,
)
from mailfleet.drivers.appliance_admin.starts import STARTS
from mailfleet.drivers.base import validate_params
from mailfleet.errors import InvalidParams
from mailfleet_local.certs import make_self_signed

# From the document, section "HMAC hash authentication".
DOC_KEY = "13e2ff941bbc8692cad141c8d293dda2c4f1c1a3c51b93d54f1a1693e1206107"
DOC_HASH = "b714a60732e096ccef06e360eefe0f1ba4fa5d16ef7da726612e2026e5523241"


def test_worked_example_key() -> None:
    assert hash_key("yourtoken") == DOC_KEY


def test_worked_example_hash() -> None:
    assert request_hash("yourtoken", "GET", "/version") == DOC_HASH
    assert request_hash("yourtoken", "get", "/version") == DOC_HASH  # method is uppercased


def test_hash_binds_method_and_path() -> None:
    hashes = {
        request_hash("yourtoken", "POST", "/version"),
        request_hash("yourtoken", "GET", "/build"),
        request_hash("othertoken", "GET", "/version"),
    }
    assert DOC_HASH not in hashes and len(hashes) == 3


def test_key_is_the_hex_string_not_the_digest() -> None:
    import hmac

    raw_key = hashlib.sha256(b"yourtoken").digest()
    wrong = hmac.new(raw_key, b"GET/api/v1/admin/version", hashlib.sha256).hexdigest()
    assert wrong != DOC_HASH


def test_new_token_is_long_and_printable() -> None:
    tokens = {new_token() for _ in range(20)}
    assert len(tokens) == 20
    for token in tokens:
        assert len(token) == 48
        assert all(33 <= ord(c) <= 126 for c in token)
    assert set(TOKEN_ALPHABET) == {chr(c) for c in range(33, 127)}


def test_stale_rule_ignores_the_status_seen_before_posting() -> None:
    lingering = {
        "status": "failed",
        "percentage": 0,
        "log": "[1][SYSTEM] Update already running",
        "error-code": "E1004",
        "error-message": "Update already running",
    }
    assert is_stale(lingering, dict(lingering))  # unchanged: an old refusal, not ours
    fresh = {**lingering, "log": lingering["log"] + "\n[2][SYSTEM] Update already running"}
    assert not is_stale(lingering, fresh)  # a new log line: this refusal answered our POST
    assert not is_stale(lingering, {"status": "running", "percentage": 0, "log": "x"})
    assert not is_stale(None, lingering)  # nothing before: the first status is ours


def test_log_lines_accepts_both_newline_styles() -> None:
    assert log_lines("a\nb") == ["a", "b"]
    assert log_lines("a\\nb") == ["a", "b"]
    assert log_lines(None) == []


def test_pem_fingerprint_matches_the_certificate(tmp_path) -> None:
    cert = make_self_signed(tmp_path)
    assert pem_fingerprint(cert.cert_pem) == cert.fingerprint_sha256


def test_every_action_has_a_handler() -> None:
    actions = ApplianceDriver.static_actions()
    assert set(actions) >= {
        "version",
        "health",
        "services",
        "endpoints",
        "changelog",
        "build",
        "reboot",
        "update",
        "backup",
        "backup.download",
        "settings.get",
        "settings.set",
        "storage.get",
        "storage.set",
        "license.get",
        "certs.set",
        "token.rotate",
        "logs",
        "update.status",
        "backup.status",
        "settings.status",
        "certs.status",
        "storage.status",
    }
    for name in actions:  # a long operation starts in starts.py, any other is a method
        assert name in STARTS or callable(getattr(ApplianceDriver,
                                                  "_do_" + name.replace(".", "_")))
    assert set(STARTS) == set(OPERATIONS)


@pytest.mark.parametrize(
    ("action", "params", "field"),
    [
        ("update", {}, None),
        ("update", {"package_base64": "AA==", "package_uri": "mem://x"}, None),
        ("update", {"package_base64": "not base64!"}, "package_base64"),
        (
            "settings.set",
            {"settings": {"network": {"interface": "eth0", "hostname": "a"}}},
            "settings.network.hostname",
        ),
        (
            "settings.set",
            {
                "settings": {
                    "network": {
                        "interface": "eth0",
                        "hostname": "box.lan",
                        "ip_address": "10.0.0.2",
                    }
                }
            },
            "settings.network",
        ),
        (
            "storage.set",
            {"settings": {"storage": {"type": "nfs", "ip": "10.0.0.9"}}},
            "settings.storage",
        ),
        (
            "storage.set",
            {"settings": {"storage": {"type": "local", "ip": "10.0.0.9"}}},
            "settings.storage",
        ),
        ("certs.set", {"public": "nope", "private": "-----BEGIN PRIVATE KEY-----"}, "public"),
        ("token.rotate", {"length": 8}, "length"),
        ("version", {"extra": 1}, "extra"),
    ],
)
def test_params_are_checked_before_any_request(
    action: str, params: dict, field: str | None
) -> None:
    spec = ApplianceDriver.static_actions()[action]
    with pytest.raises(InvalidParams) as info:
        validate_params(spec, params)
    if field is not None:
        assert info.value.field == field


def test_valid_params_normalize() -> None:
    spec = ApplianceDriver.static_actions()["storage.set"]
    out = validate_params(
        spec,
        {
            "settings": {
                "storage": {
                    "type": "nfs",
                    "mount_options": "noacl,sync",
                    "ip": "192.168.1.100",
                    "share": "/nfs/storage",
                }
            }
        },
    )
    assert out == {
        "wait": True,
        "settings": {
            "storage": {
                "type": "nfs",
                "mount_options": "noacl,sync",
                "ip": "192.168.1.100",
                "share": "/nfs/storage",
            }
        },
    }
