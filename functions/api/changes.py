"""What the cutover and migration routes do once their own handler has read the request
(shared/API.md, "Cutovers" and "Migrations"): a migration is a cutover that carries the
mail first, so both answer the same way. Each route module keeps its own handlers, whose
signatures give the public OpenAPI its own path parameter, models and operationIds.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from aws_lambda_powertools.event_handler import Response
from once import Once
from pydantic import BaseModel

from mailfleet.logic.caller import Caller
from mailfleet.logic.cutovers import Cutovers
from mailfleet.models.cutovers import CutoverStatus
from mailfleet.models.tokens import Role


class Changes:
    """The steps behind one kind's routes: who may ask, which service answers, how."""

    def __init__(self, caller: Callable[[Role], Caller],
                 json_response: Callable[[int, Any], Response],
                 service: Callable[[], Cutovers], *, scope: str, table_name: str) -> None:
        self.caller = caller
        self.json_response = json_response
        self.service = service
        # Each kind its own Once (its own persistence layer and scope: once.py says why).
        self.submit: Once[Any] = Once(lambda body, who: service().submit(body, who),
                                      scope=scope, table_name=table_name)

    def create(self, body: Any, idempotency_key: str | None, lambda_context: Any,
               accepted: type[BaseModel]) -> Response[Any]:
        """Start one (202), or answer a dry run's plan (200), once per idempotency key."""
        who = self.caller(Role.OPERATOR)
        answer, dry_run = self.submit(body, who, idempotency_key, lambda_context)
        if dry_run:
            return self.json_response(200, answer)
        return self.json_response(
            202, accepted(**answer).model_dump(mode="json", exclude_defaults=True))

    def view(self, item_id: str, accounts_limit: int, next_token: str | None) -> dict[str, Any]:
        return self.service().view(item_id, accounts_limit=accounts_limit,
                                   next_token=next_token, caller=self.caller(Role.VIEWER))

    def list(self, status: CutoverStatus | None, limit: int,
             next_token: str | None) -> tuple[list[dict[str, Any]], str | None]:
        return self.service().list(status=status.value if status else None, limit=limit,
                                   next_token=next_token, caller=self.caller(Role.VIEWER))

    def rollback(self, item_id: str) -> Response[Any]:
        who = self.caller(Role.OPERATOR)
        return self.json_response(202, self.service().rollback(item_id, who))
