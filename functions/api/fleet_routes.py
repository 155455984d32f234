"""The fleet health and schedule routes of the mailfleet API (shared/API.md, "Fleet health
and schedules").

A Router built by app.py with its own request helpers, so the caller check and the JSON
answers stay the same for every route:

    app.include_router(fleet_routes.router_for(caller, json_response))
"""

from __future__ import annotations

from typing import Annotated, Any

from answers import CallerFor, JsonResponse, answers, shown
from aws_lambda_powertools.event_handler import Response
from aws_lambda_powertools.event_handler.api_gateway import Router
from aws_lambda_powertools.event_handler.openapi.params import Body
from params import NextToken, ScheduleLimit

from mailfleet.config import ApiSettings
from mailfleet.logic.health import FleetHealth
from mailfleet.logic.jobs import Jobs
from mailfleet.logic.schedules import Schedules
from mailfleet.models.jobs import JobAccepted
from mailfleet.models.schedules import (
    FleetHealthView,
    ScheduleCreate,
    ScheduleList,
    ScheduleView,
    SweepRequest,
)
from mailfleet.models.tokens import Role
from mailfleet.store.audit import AuditLog


# One function holding the fleet and schedule routes as a table of short handlers (each a
# few lines): its length is the number of routes, not logic.
def router_for(caller: CallerFor, json_response: JsonResponse, settings: ApiSettings) -> Router:
    router = Router()

    def health_service() -> FleetHealth:
        return FleetHealth(records=Jobs(settings=settings.jobs).records,
                           settings=settings.health)

    def schedule_service() -> Schedules:
        return Schedules(AuditLog(settings.tables.audit_table), settings=settings.schedules,
                         jobs=settings.jobs)

    @router.get("/fleet/health",
                 responses=answers({200: ("the fleet's health", FleetHealthView)}),
                operation_id="getFleetHealth",
                 tags=["fleet"],
                summary="Up, down and unknown hosts per kind, from the last health sweep")
    def fleet_health() -> dict[str, Any]:
        return shown(FleetHealthView, health_service().fleet(caller(Role.VIEWER)))

    @router.post("/fleet/sweep", tags=["fleet"],
                 summary="Probe every host now, or those of a kind and tags (followed as a "
                         "job, action health.sweep)",
                 responses=answers({202: ("the sweep job was started", JobAccepted)}),
                 operation_id="sweepFleet")
    def fleet_sweep(body: Annotated[SweepRequest | None, Body()] = None) -> Response[Any]:
        who = caller(Role.OPERATOR)
        scope = body or SweepRequest()
        kind = scope.kind.value if scope.kind else None
        answer = health_service().submit(who, kind, scope.tags)
        return json_response(202, shown(JobAccepted, answer))

    @router.post("/schedules", tags=["schedules"],
                 summary="Run a job on an EventBridge schedule (rate or cron)",
                 responses=answers({201: ("created", ScheduleView)}, 409),
                 operation_id="createSchedule")
    def create_schedule(body: ScheduleCreate) -> Response[Any]:
        who = caller(Role.ADMIN)
        return json_response(201, schedule_service().create(body, who))

    @router.get("/schedules",
                 responses=answers({200: ("schedules", ScheduleList)}),
                 operation_id="listSchedules",
                 tags=["schedules"], summary="Every schedule, by name")
    def list_schedules(limit: ScheduleLimit = 50, next_token: NextToken = None) -> dict[str, Any]:
        who = caller(Role.VIEWER)
        schedules, token = schedule_service().list(limit=limit, next_token=next_token, caller=who)
        return {"schedules": schedules, "next_token": token}

    @router.get("/schedules/<name>",
                 responses=answers({200: "the schedule"}, 404), operation_id="getSchedule",
                 tags=["schedules"],
                summary="One schedule with its job and next run")
    def get_schedule(name: str) -> ScheduleView:
        return ScheduleView.model_validate(schedule_service().get(name, caller(Role.VIEWER)))

    @router.delete("/schedules/<name>",
                 responses=answers({204: "removed"}, 404, 409), operation_id="deleteSchedule",
                 tags=["schedules"], summary="Remove a schedule")
    def delete_schedule(name: str) -> Response[None]:
        who = caller(Role.ADMIN)
        schedule_service().delete(name, who)
        return Response(status_code=204, body="")

    @router.post("/schedules/<name>/pause",
                 responses=answers({200: "paused"}, 404), operation_id="pauseSchedule",
                 tags=["schedules"],
                 summary="Stop a schedule's runs until it is resumed")
    def pause_schedule(name: str) -> ScheduleView:
        who = caller(Role.ADMIN)
        return ScheduleView.model_validate(schedule_service().set_paused(name, True, who))

    @router.post("/schedules/<name>/resume",
                 responses=answers({200: "running again"}, 404), operation_id="resumeSchedule",
                 tags=["schedules"],
                 summary="Start a paused schedule's runs again")
    def resume_schedule(name: str) -> ScheduleView:
        who = caller(Role.ADMIN)
        return ScheduleView.model_validate(schedule_service().set_paused(name, False, who))

    return router
