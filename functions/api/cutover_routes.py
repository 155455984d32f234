"""The cutover routes of the mailfleet API (shared/API.md, "Cutovers").

A Router built by app.py with its own request helpers, so the caller check, the JSON
answers and the idempotency settings stay the same for every route:

    app.include_router(cutover_routes.router_for(caller, json_response))
"""

from __future__ import annotations

from typing import Annotated, Any

from answers import CallerFor, JsonResponse, answers
from aws_lambda_powertools.event_handler import Response
from aws_lambda_powertools.event_handler.api_gateway import Router
from aws_lambda_powertools.event_handler.openapi.params import Query
from changes import Changes
from params import IdempotencyKey, Limit, NextToken

from mailfleet.config import ApiSettings
from mailfleet.logic.cutovers import Cutovers
from mailfleet.models.cutovers import (
    CutoverAccepted,
    CutoverList,
    CutoverPlan,
    CutoverRequest,
    CutoverStatus,
    CutoverView,
)


def router_for(caller: CallerFor, json_response: JsonResponse, settings: ApiSettings) -> Router:
    router = Router()

    cutovers = Changes(caller, json_response,
                       lambda: Cutovers(settings=settings.cutovers, tables=settings.tables),
                       scope="", table_name=settings.tables.idempotency_table)

    @router.post("/cutovers", tags=["cutovers"],
                 summary="Move accounts to a new destination on every proxy (or director)",
                 responses=answers({202: ("started", CutoverAccepted),
                                    200: ("dry run: the plan, nothing contacted", CutoverPlan)},
                                   409),
                 operation_id="submitCutover")
    def create_cutover(
        body: CutoverRequest,
        idempotency_key: IdempotencyKey = None,
    ) -> Response[Any]:
        return cutovers.create(body, idempotency_key, router.lambda_context, CutoverAccepted)

    @router.get("/cutovers/<cutover_id>",
                 responses=answers({200: "the cutover"}, 404), operation_id="getCutover",
                 tags=["cutovers"],
                summary="A cutover with each account's status, remembered mapping and steps")
    def get_cutover(
        cutover_id: str,
        accounts_limit: Annotated[int, Query(ge=1, le=10000)] = 1000,
        next_token: NextToken = None,
    ) -> CutoverView:
        return CutoverView.model_validate(cutovers.view(cutover_id, accounts_limit, next_token))

    @router.get("/cutovers",
                 responses=answers({200: "cutovers"}), operation_id="listCutovers",
                 tags=["cutovers"], summary="Recent cutovers, newest first")
    def list_cutovers(
        status: Annotated[CutoverStatus | None, Query()] = None,
        limit: Limit = 50,
        next_token: NextToken = None,
    ) -> CutoverList:
        found, token = cutovers.list(status, limit, next_token)
        return CutoverList.model_validate({"cutovers": found, "next_token": token})

    @router.post("/cutovers/<cutover_id>/rollback", tags=["cutovers"],
                 summary="Put every DONE account back as it was remembered",
                 responses=answers({202: ("rollback started", CutoverAccepted)}, 404, 409),
                 operation_id="rollbackCutover")
    def rollback_cutover(cutover_id: str) -> Response[Any]:
        return cutovers.rollback(cutover_id)

    return router
