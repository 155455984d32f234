"""The action policy: what class each action of a host kind is in, and the least role that
may run it through a job.

Every driver declares a rule for every action it offers; an action without a rule is
never run (a host may list commands a newer version added: unknown means refused). A
rule may look at the parameters too (a dovecot `socketPath` reaches any UNIX socket on
the host, `allUsers` turns a change into one for every user), so the class is decided
per request, before any host is contacted, and again by the worker before it sends.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from enum import StrEnum
from typing import Any

from mailfleet.models.tokens import Role


class ActionClass(StrEnum):
    READ = "read"  # shows state, changes nothing
    SESSION = "session"  # ends or holds live sessions; no stored data changes
    CHANGE = "change"  # changes state that can be changed back
    DESTRUCTIVE = "destructive"  # loses data, availability or credentials: confirm (+ approval)
    NEVER = "never"  # not allowed through jobs at all

    @property
    def rank(self) -> int:
        return list(ActionClass).index(self)


@dataclass(frozen=True)
class Rule:
    """One action's class, least role and why, as docs/security.md shows it."""

    action_class: ActionClass
    least_role: Role | None  # None: never through a job
    reason: str


def read(reason: str, role: Role = Role.OPERATOR) -> Rule:
    return Rule(ActionClass.READ, role, reason)


def session(reason: str, role: Role = Role.OPERATOR) -> Rule:
    return Rule(ActionClass.SESSION, role, reason)


def change(reason: str, role: Role = Role.OPERATOR) -> Rule:
    return Rule(ActionClass.CHANGE, role, reason)


def destructive(reason: str, role: Role = Role.ADMIN) -> Rule:
    return Rule(ActionClass.DESTRUCTIVE, role, reason)


def never(reason: str) -> Rule:
    return Rule(ActionClass.NEVER, None, reason)


@dataclass(frozen=True)
class Decision:
    """The policy's answer for one action with its parameters."""

    kind: str
    action: str
    action_class: ActionClass
    least_role: Role | None
    reason: str
    # The rule that decided, e.g. "dovecot.backup" or "dovecot.param.socketPath".
    rule: str
    field: str | None = None  # the parameter at fault, when a parameter decided

    @property
    def allowed(self) -> bool:
        return self.action_class is not ActionClass.NEVER

    @property
    def destructive(self) -> bool:
        return self.action_class is ActionClass.DESTRUCTIVE

    def describe(self) -> dict[str, Any]:
        return {
            "class": self.action_class.value,
            "least_role": self.least_role.value if self.least_role else None,
            "rule": self.rule,
            "reason": self.reason,
        }


def decide(kind: str, rules: Mapping[str, Rule], action: str) -> Decision:
    """The table's decision for `action`; refused when the table does not know it."""
    rule = rules.get(action)
    if rule is None:
        return Decision(kind, action, ActionClass.NEVER, None,
                        f"{action!r} is not in the {kind} action policy: unknown actions "
                        "are refused", rule=f"{kind}.unclassified")
    return Decision(kind, action, rule.action_class, rule.least_role, rule.reason,
                    rule=f"{kind}.{action}")


def raise_to(decision: Decision, action_class: ActionClass, role: Role, reason: str,
             rule: str, field: str | None = None) -> Decision:
    """The decision made stricter (never looser) by a parameter."""
    if decision.action_class.rank >= action_class.rank and (
        decision.least_role is None or decision.least_role.rank >= role.rank
    ):
        return decision
    new_class = max(decision.action_class, action_class, key=lambda c: c.rank)
    new_role = role if decision.least_role is None or role.rank > decision.least_role.rank \
        else decision.least_role
    return Decision(decision.kind, decision.action, new_class, new_role,
                    f"{decision.reason}; {reason}", rule=rule, field=field)


def refuse(decision: Decision, reason: str, rule: str, field: str | None = None) -> Decision:
    return Decision(decision.kind, decision.action, ActionClass.NEVER, None, reason,
                    rule=rule, field=field)
