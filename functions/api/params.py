"""Query and header parameters that several routes take, declared once (app.py and the
route modules): their names, limits and descriptions are part of the OpenAPI document."""

from __future__ import annotations

from typing import Annotated

from aws_lambda_powertools.event_handler.openapi.params import Header, Query

Limit = Annotated[int, Query(ge=1, le=1000, description="page size")]
# Schedules are listed from EventBridge Scheduler, whose pages hold at most 100.
ScheduleLimit = Annotated[int, Query(ge=1, le=100, description="page size")]
NextToken = Annotated[str | None, Query(description="from the previous page")]
IdempotencyKey = Annotated[str | None, Header(alias="Idempotency-Key", max_length=256)]
