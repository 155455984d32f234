"""The action policy as pure rules: every action of every kind classified, doveadm's 96
commands of 2.3.19 included; parameter rules; redaction by schema and the credential net;
docs/security.md generated from the code."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from mailfleet.drivers import KINDS, driver_class
from mailfleet.drivers.appliance import redact_appliance
from mailfleet.drivers.dovecot import actions_from_commands
from mailfleet.drivers.dovecot_policy import FORBIDDEN_PARAMS, RULES
from mailfleet.drivers.policy import ActionClass
from mailfleet.models.tokens import Role
from mailfleet.redact import REDACTED, mask_values, redact
from mailfleet_local import security_doc
from tests.conftest import DOVEADM_COMMANDS, shared_contract

REPO = Path(__file__).resolve().parents[2]


def test_the_repository_copy_is_the_contracts_command_list(
        doveadm_commands: list[dict[str, Any]]) -> None:
    contract = shared_contract("doveadm-2.3.19-commands.json")
    if contract is not None:
        assert json.loads(contract.read_text()) == doveadm_commands
    assert security_doc.COMMANDS == DOVEADM_COMMANDS  # the docs are made from the same copy
    assert len(doveadm_commands) == 96


def test_every_doveadm_command_of_2_3_19_is_classified(
        doveadm_commands: list[dict[str, Any]]) -> None:
    assert {c["command"] for c in doveadm_commands} == set(RULES)
    specs = actions_from_commands(doveadm_commands)
    for name, spec in specs.items():
        shown = spec.describe()
        assert shown["class"] == RULES[name].action_class.value
        assert shown["least_role"] == (RULES[name].least_role.value
                                       if RULES[name].least_role else None)


@pytest.mark.parametrize("kind", [k.value for k in KINDS if k.value != "dovecot"])
def test_every_static_action_has_exactly_one_rule(kind: str) -> None:
    driver = driver_class(kind)
    assert set(driver.static_actions()) == set(driver.policy_rules)
    for name, spec in driver.static_actions().items():
        assert spec.describe()["class"] == driver.policy_rules[name].action_class.value
        rule = driver.policy_rules[name]
        assert (rule.least_role is None) == (rule.action_class is ActionClass.NEVER)
        assert rule.reason


def test_unknown_commands_are_refused_by_default() -> None:
    decision = driver_class("dovecot").classify("someFutureCommand", {})
    assert not decision.allowed and decision.rule == "dovecot.unclassified"
    assert not driver_class("proxy").classify("nope", {}).allowed


@pytest.mark.parametrize(("action", "params", "rule"), [
    ("backup", {"user": "alice", "destination": ["/bin/touch", "/tmp/marker"]},
     "dovecot.backup"),
    ("sync", {"user": "alice", "destination": ["tcp:127.0.0.1:2425"]}, "dovecot.sync"),
    ("fsGet", {"fsDriver": "posix", "fsArgs": "", "path": "/etc/shadow"}, "dovecot.fsGet"),
    ("fsDelete", {"fsDriver": "posix", "fsArgs": "", "path": ["/"], "recursive": True},
     "dovecot.fsDelete"),
    ("dictSet", {"dictUri": "file:/etc/cron.d/x", "key": "k", "value": "v"},
     "dovecot.param.dictUri"),
    ("dictGet", {"dictUri": "proxy:/run/other.sock:kv", "key": "k"}, "dovecot.param.dictUri"),
    ("who", {"socketPath": "/run/docker.sock"}, "dovecot.param.socketPath"),
    ("expunge", {"userFile": "/etc/shadow", "query": ["all"]}, "dovecot.param.userFile"),
    ("directorMap", {"usersFile": "/etc/shadow"}, "dovecot.param.usersFile"),
    ("batch", {"user": "alice", "args": ["who"]}, "dovecot.batch"),
    ("dsyncServer", {"user": "alice"}, "dovecot.dsyncServer"),
    ("import", {"user": "a", "sourceLocation": "maildir:/root", "destParentMailbox": "x",
                "query": ["all"]}, "dovecot.import"),
])
def test_doveadm_reproductions_are_never_allowed(action: str, params: dict[str, object],
                                                 rule: str) -> None:
    decision = driver_class("dovecot").classify(action, params)
    assert decision.action_class is ActionClass.NEVER and decision.least_role is None
    assert decision.rule == rule


def test_parameters_raise_the_class_never_lower_it() -> None:
    dovecot = driver_class("dovecot")
    one = dovecot.classify("flagsAdd", {"user": "alice", "flag": ["\\Seen"], "query": ["all"]})
    assert (one.action_class, one.least_role) == (ActionClass.CHANGE, Role.OPERATOR)
    every = dovecot.classify("flagsAdd", {"allUsers": True, "flag": ["x"], "query": ["all"]})
    assert (every.action_class, every.least_role) == (ActionClass.DESTRUCTIVE, Role.ADMIN)
    assert every.rule == "dovecot.param.allUsers" and every.field == "allUsers"
    wildcard = dovecot.classify("expunge", {"user": "*", "query": ["all"]})
    assert (wildcard.action_class, wildcard.least_role) == (ActionClass.DESTRUCTIVE, Role.ADMIN)
    reads_all = dovecot.classify("quotaGet", {"allUsers": True})
    assert reads_all.action_class is ActionClass.READ
    assert dovecot.classify("statsDump", {"reset": True}).action_class is ActionClass.CHANGE
    ok_dict = dovecot.classify("dictGet", {"dictUri": "proxy::kv", "key": "shared/x"})
    assert ok_dict.allowed and ok_dict.action_class is ActionClass.READ
    assert driver_class("pymap").classify("user.set", {"user": "u", "password": "p",
                                                       "overwrite": True}).least_role is Role.ADMIN


def test_the_issues_destructive_actions_are_destructive() -> None:
    for kind, action, params in [("dovecot", "stop", {}), ("appliance", "reboot", {}),
                                 ("appliance", "token.rotate", {}),
                                 ("pymap", "user.password", {}),
                                 ("dovecot", "expunge", {"user": "a", "query": ["all"]})]:
        decision = driver_class(kind).classify(action, params)
        assert decision.destructive, (kind, action)


def test_docs_security_md_is_generated_from_the_policy() -> None:
    text = security_doc.DOC.read_text()
    assert security_doc.updated(text, security_doc.render()) == text, (
        "docs/security.md is stale: run .venv/bin/python -m mailfleet_local.security_doc")
    for name, rule in RULES.items():
        role = rule.least_role.value if rule.least_role else "—"
        assert f"| `{name}` | {rule.action_class.value} | {role} |" in text
    for name in FORBIDDEN_PARAMS:
        assert f"| `{name}` |" in text


# -- redaction -----------------------------------------------------------------------------


def test_appliance_settings_and_storage_are_redacted_by_schema() -> None:
    canary = "canary-9f3b1c"
    settings = {"exists": True, "network": {"interface": "eth0", "hostname": "a.example",
                                            "mode": "static"},
                "app": {"name": "mail", "ldap_bind_pw": canary,
                        "smtp": {"relay_auth": canary}, "motd": canary}}
    shown = redact_appliance("settings.get", settings)
    assert canary not in json.dumps(shown)
    assert shown["network"] == settings["network"] and shown["app"]["name"] == "mail"
    assert shown["app"]["ldap_bind_pw"] == REDACTED and shown["app"]["smtp"] == REDACTED
    storage = {"exists": True, "storage": {"type": "iscsi", "target": "iqn.x", "ip": "10.0.0.1",
                                           "username": "u", "password": canary},
               "options": ["local", "iscsi"]}
    shown = redact_appliance("storage.get", storage)
    assert canary not in json.dumps(shown) and shown["storage"]["target"] == "iqn.x"
    params = {"wait": True, "settings": {"storage": storage["storage"]}}
    assert canary not in json.dumps(redact_appliance("storage.set", params))
    status = {"exists": True, "settings": settings}
    assert canary not in json.dumps(redact_appliance("settings.status", status))


def test_the_credential_net_masks_equal_and_embedded_values() -> None:
    secret = "k3y-" + "x" * 20
    output = {"rows": [{"v": secret}, {"line": f"doveadm_api_key = {secret}"}], secret: 1,
              "short": "ab"}
    masked = mask_values(output, [secret, "ab"])
    assert secret not in json.dumps(masked)
    assert masked["rows"][0]["v"] == REDACTED and masked["short"] == REDACTED
    assert masked["rows"][1]["line"] == f"doveadm_api_key = {REDACTED}"


def test_field_names_catch_settings_keys_and_spare_secret_references() -> None:
    shown = redact({"ldap_bind_pw": "a", "relay_auth": "b", "new_password": "c",
                    "credentials_secret": "mailfleet/hosts/x", "pwd": "d", "spwd": "e"})
    assert shown["ldap_bind_pw"] == shown["relay_auth"] == shown["new_password"] == REDACTED
    assert shown["pwd"] == REDACTED and shown["credentials_secret"] == "mailfleet/hosts/x"
