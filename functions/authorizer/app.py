"""API Gateway TOKEN authorizer: who holds this bearer token, and with which role.

Unknown tokens raise "Unauthorized" (API Gateway answers 401). Known tokens get an Allow
for the whole API with the principal and role in the context; the API function checks
the role each route needs (403 there). Decisions are never cached (ReauthorizeEvery 0).
"""

from __future__ import annotations

from typing import Any

from aws_lambda_powertools import Logger
from aws_lambda_powertools.utilities.data_classes import event_source
from aws_lambda_powertools.utilities.data_classes.api_gateway_authorizer_event import (
    APIGatewayAuthorizerResponse,
    APIGatewayAuthorizerTokenEvent,
)
from aws_lambda_powertools.utilities.typing import LambdaContext

from mailfleet.config import SecretSettings, Tables
from mailfleet.logic.auth import Authenticator
from mailfleet.store.tokens import TokenStore

logger = Logger()
_authenticator: Authenticator | None = None


def authenticator() -> Authenticator:
    global _authenticator
    if _authenticator is None:
        _authenticator = Authenticator(TokenStore(Tables().tokens_table), SecretSettings())
    return _authenticator


@logger.inject_lambda_context(clear_state=True)
@event_source(data_class=APIGatewayAuthorizerTokenEvent)
def lambda_handler(event: APIGatewayAuthorizerTokenEvent, context: LambdaContext) -> dict[str, Any]:
    principal = authenticator().principal(event.authorization_token)
    if principal is None:
        logger.info("token refused")  # never the token itself
        raise Exception("Unauthorized")  # the exact message API Gateway maps to 401
    arn = event.parsed_arn
    policy = APIGatewayAuthorizerResponse(
        principal_id=principal.principal,
        region=arn.region,
        aws_account_id=arn.aws_account_id,
        api_id=arn.api_id,
        stage=arn.stage,
        context={
            "principal": principal.principal,
            "role": principal.role.value,
            "token_id": principal.token_id or "",
            # Context values are strings: the scope travels as JSON ("" when unscoped).
            "scope": principal.scope.model_dump_json(exclude_none=True) if principal.scope else "",
        },
    )
    policy.allow_all_routes()
    logger.info(
        "token accepted", extra={"principal": principal.principal, "role": principal.role.value}
    )
    return policy.asdict()
