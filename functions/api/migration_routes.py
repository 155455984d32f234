"""The migration routes of the mailfleet API (shared/API.md, "Migrations"), built like
cutover_routes: app.include_router(migration_routes.router_for(caller, json_response))."""

from __future__ import annotations

from typing import Annotated, Any

from answers import CallerFor, JsonResponse, answers
from aws_lambda_powertools.event_handler import Response
from aws_lambda_powertools.event_handler.api_gateway import Router
from aws_lambda_powertools.event_handler.openapi.params import Query
from changes import Changes
from params import IdempotencyKey, Limit, NextToken

from mailfleet.config import ApiSettings
from mailfleet.logic.migrations import Migrations
from mailfleet.models.cutovers import CutoverStatus
from mailfleet.models.migrations import (
    MigrationAccepted,
    MigrationList,
    MigrationPlan,
    MigrationRequest,
    MigrationView,
)


def router_for(caller: CallerFor, json_response: JsonResponse, settings: ApiSettings) -> Router:
    router = Router()

    migrations = Changes(caller, json_response,
                         lambda: Migrations(settings=settings.cutovers, tables=settings.tables),
                         scope="migrations", table_name=settings.tables.idempotency_table)

    @router.post("/migrations", tags=["migrations"],
                 summary="Move accounts with their mail to another Dovecot backend, then flip "
                         "their route on every director or proxy",
                 responses=answers({202: ("started", MigrationAccepted),
                                    200: ("dry run: the plan, nothing contacted",
                                          MigrationPlan)}, 409),
                 operation_id="submitMigration")
    def create_migration(
        body: MigrationRequest,
        idempotency_key: IdempotencyKey = None,
    ) -> Response[Any]:
        return migrations.create(body, idempotency_key, router.lambda_context,
                                 MigrationAccepted)

    @router.get("/migrations/<migration_id>", tags=["migrations"],
                responses=answers({200: "the migration"}, 404), operation_id="getMigration",
                summary="A migration with each account's status, steps and mailbox counts")
    def get_migration(
        migration_id: str,
        accounts_limit: Annotated[int, Query(ge=1, le=10000)] = 1000,
        next_token: NextToken = None,
    ) -> MigrationView:
        return MigrationView.model_validate(
            migrations.view(migration_id, accounts_limit, next_token))

    @router.get("/migrations", tags=["migrations"], responses=answers({200: "migrations"}),
                operation_id="listMigrations",
                summary="Recent migrations, newest first")
    def list_migrations(
        status: Annotated[CutoverStatus | None, Query()] = None,
        limit: Limit = 50,
        next_token: NextToken = None,
    ) -> MigrationList:
        found, token = migrations.list(status, limit, next_token)
        return MigrationList.model_validate({"migrations": found, "next_token": token})

    @router.post("/migrations/<migration_id>/rollback", tags=["migrations"],
                 summary="Per DONE account: copy back what arrived since the flip, then put "
                         "the route back",
                 responses=answers({202: ("rollback started", MigrationAccepted)}, 404, 409),
                 operation_id="rollbackMigration")
    def rollback_migration(migration_id: str) -> Response[Any]:
        return migrations.rollback(migration_id)

    return router
