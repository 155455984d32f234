"""Idempotency-Key on the POSTs that start work (jobs, cutovers): the same key and body
from the same caller within 24 h return the first answer and start nothing new. Built
on Powertools idempotency; the same key with another body is a 409."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from aws_lambda_powertools.utilities.idempotency import (
    DynamoDBPersistenceLayer,
    IdempotencyConfig,
    idempotent_function,
)
from aws_lambda_powertools.utilities.idempotency.exceptions import (
    IdempotencyAlreadyInProgressError,
    IdempotencyValidationError,
)
from aws_lambda_powertools.utilities.typing import LambdaContext
from pydantic import BaseModel

from mailfleet.config import Tables
from mailfleet.logic.caller import Caller
from mailfleet.logic.problems import conflict

# What a submit returns: (the answer, whether it was a dry run).
type Submit[Body: BaseModel] = Callable[[Body, Caller], tuple[dict[str, Any], bool]]


class Once[Body: BaseModel]:
    """Wraps one submit function. Each instance has its own persistence layer: one shared
    between differently configured decorators broke (shared/local-aws.md)."""

    def __init__(self, submit: Submit[Body], scope: str = "", table_name: str | None = None
                 ) -> None:
        self._submit = submit
        # Keys of different routes apart (the remembered function is the same for all).
        self._scope = scope
        self._config = IdempotencyConfig(
            event_key_jmespath="[principal, key]",
            payload_validation_jmespath="body",
            expires_after_seconds=24 * 3600,
            raise_on_no_idempotency_key=True,
        )
        persistence = DynamoDBPersistenceLayer(
            table_name=table_name or Tables().idempotency_table)

        @idempotent_function(
            data_keyword_argument="request", persistence_store=persistence, config=self._config
        )
        def remembered(request: dict[str, Any], body: Body, who: Caller) -> dict[str, Any]:
            answer, dry_run = submit(body, who)
            return {"answer": answer, "dry_run": dry_run}

        self._remembered = remembered

    def __call__(
        self, body: Body, who: Caller, key: str | None, context: LambdaContext | None
    ) -> tuple[dict[str, Any], bool]:
        if not key:
            return self._submit(body, who)
        if context is not None:
            self._config.register_lambda_context(context)
        scoped = f"{self._scope}:{key}" if self._scope else key
        request = {"principal": who.principal, "key": scoped,
                   "body": body.model_dump(mode="json")}
        try:
            once = self._remembered(request=request, body=body, who=who)
        except IdempotencyValidationError:
            raise conflict("Idempotency-Key was already used with a different body") from None
        except IdempotencyAlreadyInProgressError:
            raise conflict("a request with this Idempotency-Key is still being processed") from None
        return once["answer"], once["dry_run"]
