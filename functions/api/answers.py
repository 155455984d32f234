"""What each route may answer, for the OpenAPI document (Powertools' `responses=`): its
success, and the client errors it can give, all with the same problem body."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from aws_lambda_powertools.event_handler import Response
from pydantic import BaseModel, ConfigDict

from mailfleet.logic.caller import Caller
from mailfleet.models.tokens import Role

# What app.py hands every route module's router_for: the caller check for a role, and the
# JSON answer for a status and body.
type CallerFor = Callable[[Role], Caller]
type JsonResponse = Callable[[int, Any], Response]

ERROR_MEANING = {
    400: "the request could not be read",
    401: "no, unknown or expired bearer token",
    403: "the role is too low, or the host is outside the token's scope",
    404: "no such id (or outside the token's scope)",
    409: "conflict: it exists already, or is busy or in another state",
    405: "the path has no such method (the Allow header lists those it has)",
    413: "the body is larger than 10 MB",
    415: "the body is not application/json",
    422: "invalid input: each offending field is named with the reason",
}


class FieldProblem(BaseModel):
    field: str
    reason: str


class ProblemBody(BaseModel):
    """Every error answer: a message, and for invalid input each field with its reason
    (API Gateway's own 401 and 403 carry the message only)."""

    model_config = ConfigDict(extra="allow")

    message: str
    errors: list[FieldProblem] | None = None


def answers(
    ok: dict[int, str | tuple[str, Any]], *errors: int
) -> dict[int, dict[str, Any]]:
    """responses= for a route: `ok` maps each success code to its description (with the
    model of its body, if it is not the handler's return type); `errors` lists the client
    errors it may answer besides 401, 403 and 422, which every authenticated route can."""
    out: dict[int, dict[str, Any]] = {}
    for code, meaning in ok.items():
        if isinstance(meaning, tuple):
            description, model = meaning
            out[code] = {"description": description,
                         "content": {"application/json": {"model": model}}}
        elif code == 204:
            out[code] = {"description": meaning, "content": {}}
        else:
            out[code] = {"description": meaning}
    for code in sorted({400, 401, 403, 413, 415, 422, *errors}):
        out[code] = {"description": ERROR_MEANING[code],
                     "content": {"application/json": {"model": ProblemBody}}}
    return out


def shown(model: type[BaseModel], data: dict[str, Any]) -> dict[str, Any]:
    """`data` checked against the model its route declares, and answered as it came: only
    the fields it has (no defaults added), typed values in their JSON form."""
    return model.model_validate(data).model_dump(mode="json", exclude_unset=True)
