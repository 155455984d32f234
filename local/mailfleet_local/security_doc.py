"""docs/security.md's policy tables, generated from the drivers' action policy.

    .venv/bin/python -m mailfleet_local.security_doc        # rewrite the tables in place
    .venv/bin/python -m mailfleet_local.security_doc --check  # exit 1 if the doc is stale

The tables sit between the BEGIN/END markers; the prose around them is written by hand.
tests/unit/test_action_policy.py checks that the doc and the code agree.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

from mailfleet.drivers import driver_class
from mailfleet.drivers.dovecot_policy import FORBIDDEN_PARAMS, RULES
from mailfleet.drivers.policy import Rule

REPO = Path(__file__).resolve().parents[2]
DOC = REPO / "docs" / "security.md"
# The command list of a real Dovecot 2.3.19 (a copy of
# shared/contracts/doveadm-2.3.19-commands.json kept in the repository).
COMMANDS = REPO / "tests" / "data" / "doveadm-2.3.19-commands.json"
BEGIN = "<!-- BEGIN POLICY TABLES (generated: python -m mailfleet_local.security_doc) -->"
END = "<!-- END POLICY TABLES -->"


def _row(name: str, rule: Rule) -> str:
    role = rule.least_role.value if rule.least_role else "—"
    reason = rule.reason.replace("|", "\\|")
    return f"| `{name}` | {rule.action_class.value} | {role} | {reason} |"


def _table(title: str, rules: list[tuple[str, Rule]]) -> list[str]:
    return [f"### {title}", "", "| action | class | least role | why |",
            "| --- | --- | --- | --- |", *(_row(n, r) for n, r in rules), ""]


def dovecot_order(commands_file: Path | None = None) -> list[str]:
    """Commands in the order Dovecot 2.3.19 lists them, then any the table adds."""
    path = commands_file or COMMANDS
    listed = [c["command"] for c in json.loads(path.read_text())] if path.exists() else []
    return listed + sorted(set(RULES) - set(listed))


def render(commands_file: Path | None = None) -> str:
    counts: dict[str, int] = {}
    for rule in RULES.values():
        counts[rule.action_class.value] = counts.get(rule.action_class.value, 0) + 1
    summary = ", ".join(f"{n} {c}" for c, n in sorted(counts.items()))
    lines = [BEGIN, "",
             *_table(f"dovecot: all {len(RULES)} doveadm commands of 2.3.19 ({summary})",
                     [(n, RULES[n]) for n in dovecot_order(commands_file)]),
             "Parameters refused on every doveadm command that takes them (422, rule "
             "`dovecot.param.<name>`):", "", "| parameter | why |", "| --- | --- |",
             *(f"| `{n}` | {why} |" for n, why in FORBIDDEN_PARAMS.items()),
             "| `dictUri` | anything but `proxy::<name>` (a dict the host's configuration "
             "declares): `file:` and other URIs reach any file, socket or server |",
             "", "Parameters that raise the class: `allUsers: true` or a wildcard `user` on a "
             "change or destructive command makes it destructive with least role admin "
             "(rule `dovecot.param.allUsers` / `dovecot.param.user`); `statsDump` with "
             "`reset: true` is a change.", ""]
    for kind in ("proxy", "appliance", "pymap"):
        rules = driver_class(kind).policy_rules
        lines += _table(kind, list(rules.items()))
    lines += ["pymap `user.set` with `overwrite: true` is destructive, least role admin "
              "(rule `pymap.user.set.overwrite`).", "", END]
    return "\n".join(lines)


def updated(text: str, tables: str) -> str:
    start, end = text.index(BEGIN), text.index(END) + len(END)
    return text[:start] + tables + text[end:]


def main(argv: list[str]) -> int:
    text = DOC.read_text()
    new = updated(text, render())
    if "--check" in argv:
        return 0 if new == text else 1
    DOC.write_text(new)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
