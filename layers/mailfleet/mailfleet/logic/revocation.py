"""Revoking a token, and what it created: authority follows its holder.

A token records the token that minted it (`created_by_token`), a schedule the token that
made it. Revoking a token lists both; with `cascade` it also revokes the tokens it minted
(and theirs, in turn) and pauses its schedules (a schedule is paused, never deleted: its
job stays for an admin to look at and resume). Every step is audited.
"""

from __future__ import annotations

from enum import StrEnum
from typing import TYPE_CHECKING, Any

from botocore.exceptions import ClientError

from mailfleet.logic.caller import Caller
from mailfleet.logic.problems import Problem, not_found
from mailfleet.store.audit import AuditLog, ChangeRefused
from mailfleet.store.tokens import TokenStore

if TYPE_CHECKING:
    from mailfleet.logic.schedules import Schedules

# Tokens minted in a chain below the revoked one that a cascade follows, at most.
MAX_CASCADE = 1000


class Cascade(StrEnum):
    NONE = "none"  # revoke only this token; list what it created
    PAUSE = "pause"  # and pause the schedules it (or a token it minted) created
    REVOKE = "revoke"  # and revoke the tokens it minted (recursively), pausing schedules


class Revocation:
    def __init__(self, tokens: TokenStore | None = None, audit: AuditLog | None = None,
                 schedules: Schedules | None = None) -> None:
        self.tokens = tokens or TokenStore()
        self.audit = audit or AuditLog()
        self._schedules = schedules

    @property
    def schedules(self) -> Schedules:
        """Made when a cascade needs them (most revocations do not)."""
        if self._schedules is None:
            from mailfleet.logic.schedules import Schedules  # only a cascade needs them

            self._schedules = Schedules(self.audit)
        return self._schedules

    def revoke(self, token_id: str, caller: Caller, cascade: Cascade = Cascade.NONE
               ) -> dict[str, Any]:
        revoked = self.tokens.get(token_id)
        if revoked is None:
            raise not_found("token", token_id)
        all_tokens = self._all_tokens()
        minted = [t for t in all_tokens if t.get("created_by_token") == token_id]
        schedules = self._schedules_of({token_id})
        created = {"tokens": [_brief(t) for t in minted],
                   "schedules": [s["name"] for s in schedules]}
        try:
            # The delete and its event in one write (docs/audit.md).
            self.audit.record(self.tokens.delete_change(token_id), actor=caller.principal,
                              source_ip=caller.source_ip, request_id=caller.request_id,
                              action="token.revoke", target=f"token:{token_id}", outcome="ok",
                              params={"name": revoked.get("name"), "role": revoked.get("role"),
                                      "created": created, "cascade": cascade.value})
        except ChangeRefused:
            raise not_found("token", token_id) from None  # revoked meanwhile
        answer: dict[str, Any] = {"token_id": token_id, "revoked": True,
                                  "cascade": cascade.value, "created": created,
                                  "revoked_tokens": [], "paused_schedules": []}
        if cascade is Cascade.NONE:
            return answer
        chain = {token_id}
        if cascade is Cascade.REVOKE:
            for item in self._minted_below(token_id, all_tokens):
                try:
                    self.audit.record(
                        self.tokens.delete_change(item["token_id"]), actor=caller.principal,
                        source_ip=caller.source_ip, request_id=caller.request_id,
                        action="token.revoke", target=f"token:{item['token_id']}",
                        outcome="ok", params={"name": item.get("name"),
                                              "role": item.get("role"),
                                              "cascade_from": token_id})
                except ChangeRefused:
                    continue  # revoked meanwhile
                chain.add(item["token_id"])
                answer["revoked_tokens"].append(item["token_id"])
        for schedule in self._schedules_of(chain):
            if not schedule["paused"]:
                self.schedules.set_paused(schedule["name"], True, caller)
            answer["paused_schedules"].append(schedule["name"])
        return answer

    def _all_tokens(self) -> list[dict[str, Any]]:
        out: list[dict[str, Any]] = []
        token: str | None = None
        while True:
            page, token = self.tokens.list(1000, token)
            out.extend(page)
            if not token:
                return out

    @staticmethod
    def _minted_below(token_id: str, tokens: list[dict[str, Any]]) -> list[dict[str, Any]]:
        """Tokens minted by `token_id`, by those, and so on (breadth first, bounded)."""
        by_creator: dict[str, list[dict[str, Any]]] = {}
        for item in tokens:
            if item.get("created_by_token"):
                by_creator.setdefault(item["created_by_token"], []).append(item)
        found: list[dict[str, Any]] = []
        queue = [token_id]
        while queue and len(found) < MAX_CASCADE:
            for item in by_creator.get(queue.pop(0), []):
                if all(item["token_id"] != f["token_id"] for f in found):
                    found.append(item)
                    queue.append(item["token_id"])
        return found[:MAX_CASCADE]

    def _schedules_of(self, token_ids: set[str]) -> list[dict[str, Any]]:
        found: list[dict[str, Any]] = []
        token: str | None = None
        try:
            while True:
                page, token = self.schedules.list(limit=100, next_token=token)
                found.extend(s for s in page if s.get("created_by_token") in token_ids)
                if not token:
                    return found
        except (ClientError, Problem):  # no Scheduler group (yet): nothing to list
            return found


def _brief(item: dict[str, Any]) -> dict[str, Any]:
    return {k: item.get(k) for k in ("token_id", "name", "role", "created_at")}
