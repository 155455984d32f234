"""The mailfleet HTTP API (behind API Gateway and the bearer-token authorizer).

Handlers stay thin: check the caller's role, hand the validated body to the logic
layer, shape the answer. Paths, fields and codes follow shared/API.md.
"""

from __future__ import annotations

import base64
import json
import re
from typing import Annotated, Any

import cutover_routes
import fleet_routes
import migration_routes
from answers import answers, shown
from aws_lambda_powertools import Logger, Tracer
from aws_lambda_powertools.event_handler import APIGatewayRestResolver, Response, content_types
from aws_lambda_powertools.event_handler.openapi.exceptions import RequestValidationError
from aws_lambda_powertools.event_handler.openapi.models import HTTPBearer
from aws_lambda_powertools.event_handler.openapi.params import Query
from aws_lambda_powertools.utilities.typing import LambdaContext
from botocore.exceptions import ClientError
from once import Once
from params import IdempotencyKey, Limit, NextToken
from pydantic import StringConstraints

from mailfleet import aws
from mailfleet.config import ApiSettings
from mailfleet.logic.auth import mint
from mailfleet.logic.caller import Caller
from mailfleet.logic.hosts import Inventory
from mailfleet.logic.inventory_import import BulkImport
from mailfleet.logic.jobs import Jobs
from mailfleet.logic.problems import (
    Conflict,
    Forbidden,
    Invalid,
    NotFound,
    Problem,
    Unauthenticated,
    Unavailable,
    forbidden,
    invalid,
)
from mailfleet.logic.revocation import Cascade, Revocation
from mailfleet.logic.schedules import Schedules
from mailfleet.models.audit import AuditPage, AuditVerification
from mailfleet.models.common import Liveness
from mailfleet.models.hosts import (
    HostActions,
    HostCreate,
    HostKind,
    HostList,
    HostPatch,
    HostView,
    ImportOutcome,
    InventoryImport,
)
from mailfleet.models.jobs import (
    CancelAnswer,
    JobAccepted,
    JobList,
    JobRequest,
    JobStatus,
    JobView,
)
from mailfleet.models.tokens import (
    Principal,
    Revoked,
    Role,
    TokenCreate,
    TokenCreated,
    TokenList,
    TokenScope,
)
from mailfleet.store.audit import AuditLog
from mailfleet.store.audit_digests import Verifier
from mailfleet.store.base import BadPageToken
from mailfleet.store.tokens import TokenStore

logger = Logger()
tracer = Tracer()
app = APIGatewayRestResolver(enable_validation=True)
OPENAPI = {
    "title": "mailfleet",
    "version": "1.0.0",
    "description": (
        "Control plane for fleets of mail hosts: inventory, jobs, cutovers, migrations, audit."
    ),
    "security_schemes": {"bearer": HTTPBearer(description="Authorization: Bearer <token>")},
    "security": [{"bearer": []}],
}
app.enable_swagger(path="/swagger", **OPENAPI)  # type: ignore[arg-type]

# Settings, read once per cold start and handed to the services each request makes.
SETTINGS = ApiSettings()
TABLES, JOBS, SECRETS = SETTINGS.tables, SETTINGS.jobs, SETTINGS.secrets

MAX_WAIT_SECONDS = 25  # API Gateway gives up at 29 s
AUDIT_SCOPED_PAGES = 10
TagFilter = Annotated[str, StringConstraints(pattern=r"^[^:]+:[\s\S]*$")]
DateTime = Annotated[
    str | None,
    Query(
        description="RFC 3339, e.g. 2026-11-21T10:00:00Z",
        json_schema_extra={"format": "date-time"},
    ),
]


# ---------------------------------------------------------------------- plumbing
def wait_budget(requested: float | None, context: LambdaContext | None) -> float:
    """?wait cut to what this invocation has left, less the AWS calls still to make
    (the final read of the job): API Gateway answers 504 at 29 s whatever we do."""
    if not requested:
        return 0.0
    if context is None:
        return requested
    left = context.get_remaining_time_in_millis() / 1000 - aws.call_budget_seconds()
    return max(0.0, min(requested, left))


def caller(needed: Role) -> Caller:
    """The authenticated caller (from the authorizer's context), if their role suffices."""
    ctx = app.current_event.request_context
    authorizer = ctx.authorizer.raw_event if ctx.authorizer else {}
    role = authorizer.get("role")
    principal = authorizer.get("principal") or authorizer.get("principalId")
    if not role or not principal:
        raise Unauthenticated("missing or unknown bearer token")
    scope = authorizer.get("scope")
    who = Caller(
        principal=principal,
        role=Role(role),
        source_ip=ctx.identity.source_ip,
        request_id=ctx.request_id,
        scope=TokenScope.model_validate_json(scope) if scope else None,
        token_id=authorizer.get("token_id") or None,
    )
    if not who.role.allows(needed):
        raise forbidden(f"this needs the {needed.value} role; you have {who.role.value}")
    return who


def json_response(status: int, body: Any) -> Response[Any]:
    return Response(status_code=status, content_type=content_types.APPLICATION_JSON, body=body)


# The one place where the logic layer's refusals (mailfleet.logic.problems) become HTTP
# answers: the status by kind, the body as the problem gives it.
HTTP_STATUS: dict[type[Problem], int] = {
    Invalid: 422,
    Unauthenticated: 401,
    Forbidden: 403,
    NotFound: 404,
    Conflict: 409,
    Unavailable: 503,
}


def http_status(problem: Problem) -> int:
    return next((code for kind, code in HTTP_STATUS.items() if isinstance(problem, kind)), 400)


@app.exception_handler(Problem)
def _problem(exc: Problem) -> Response[Any]:
    return json_response(http_status(exc), exc.body())


@app.exception_handler(BadPageToken)
def _bad_page(exc: BadPageToken) -> Response[Any]:
    return _problem(invalid("next_token", str(exc)))


@app.not_found
def _no_route(_: Exception) -> Response[Any]:
    # A known path asked with another method: 405 naming the methods it has (Powertools'
    # own answer is a 404). The routes are read from the resolver (no public accessor).
    path = app.current_event.path
    routes = app._static_routes + app._dynamic_routes
    allowed = sorted({r.method for r in routes if r.rule.match(path)})
    if allowed:
        return Response(
            status_code=405,
            content_type=content_types.APPLICATION_JSON,
            body={"message": f"{app.current_event.http_method} is not allowed here"},
            headers={"Allow": ", ".join(allowed)},
        )
    return json_response(404, {"message": "Not found"})


@app.exception_handler(ClientError)
def _aws_refused(exc: ClientError) -> Response[Any]:
    # DynamoDB refuses a start key that is not one of the table's: a crafted next_token.
    query = app.current_event.query_string_parameters or {}
    if query.get("next_token") and exc.response.get("Error", {}).get("Code") in (
        "ValidationException",
        "SerializationException",
    ):
        return _problem(invalid("next_token", "is not one this API gave out"))
    raise exc


@app.exception_handler(RequestValidationError)
def _invalid(exc: RequestValidationError) -> Response[Any]:
    # Field and reason only: never echo the input (it may hold credentials).
    errors = []
    for error in exc.errors():
        loc = [str(p) for p in error.get("loc", ()) if p not in ("body",)]
        field = ".".join(loc) or "body"
        errors.append({"field": field, "reason": error.get("msg", error.get("type", "invalid"))})
    first = errors[0] if errors else {"field": "body", "reason": "invalid"}
    return json_response(422, {"message": f"{first['field']}: {first['reason']}", "errors": errors})


# Routes that live in their own modules (imported here: the function directory is on
# sys.path only while this module is imported).
app.include_router(cutover_routes.router_for(caller, json_response, SETTINGS))
app.include_router(migration_routes.router_for(caller, json_response, SETTINGS))
app.include_router(fleet_routes.router_for(caller, json_response, SETTINGS))


# Long appliance operations run as their own state machine; other jobs as Jobs starts them.
_submit_job = Once(lambda job, who: Jobs(settings=JOBS).submit(job, who),
                   table_name=TABLES.idempotency_table)


# ---------------------------------------------------------------------- meta
@app.get(
    "/health",
    tags=["meta"],
    summary="Liveness (no authentication)",
    # security=[] alone is dropped from the document: say "no authentication" explicitly.
    openapi_extensions={"security": []},
    responses={200: {"description": "alive",
                     "content": {"application/json": {"model": Liveness}}}},
    operation_id="getHealth",
)
def health() -> dict[str, str]:
    return {"status": "ok"}


@app.get(
    "/whoami",
    responses=answers({200: ("who you are", Principal)}),
    operation_id="whoami",
    tags=["meta"],
    summary="The caller's principal and role",
)
def whoami() -> dict[str, str]:
    who = caller(Role.VIEWER)
    return {"principal": who.principal, "role": who.role.value}


@app.get(
    "/openapi.json", tags=["meta"], summary="This API's OpenAPI document", include_in_schema=False
)
def openapi() -> Response[dict[str, Any]]:
    caller(Role.VIEWER)
    schema = app.get_openapi_schema(**OPENAPI)  # type: ignore[arg-type]
    return json_response(200, schema.model_dump(mode="json", by_alias=True, exclude_none=True))


# ---------------------------------------------------------------------- tokens
@app.post(
    "/tokens",
    responses=answers({201: ("created; the token is shown this once", TokenCreated)}),
    operation_id="createToken",
    tags=["tokens"],
    summary="Mint a token (shown once)",
)
def create_token(body: TokenCreate) -> Response[TokenCreated]:
    who = caller(Role.ADMIN)
    if who.scope is not None:
        raise forbidden("a token with a scope cannot mint tokens")
    created: TokenCreated = mint(body, who.principal, TokenStore(TABLES.tokens_table),
                                 caller=who, audit=AuditLog(TABLES.audit_table),
                                 created_by_token=who.token_id)
    return json_response(201, created.model_dump(mode="json"))


@app.get(
    "/tokens",
    responses=answers({200: ("tokens, never their values", TokenList)}),
    operation_id="listTokens",
    tags=["tokens"],
    summary="List tokens (never their values)",
)
def list_tokens(limit: Limit = 100, next_token: NextToken = None) -> dict[str, Any]:
    caller(Role.ADMIN)
    items, token = TokenStore(TABLES.tokens_table).list(limit, next_token)
    tokens = [{k: v for k, v in i.items() if k != "token_sha256"} for i in items]
    return {"tokens": tokens, "next_token": token}


@app.delete(
    "/tokens/<token_id>",
    responses=answers({204: "revoked",
                       200: ("revoked, with what it created (?cascade=...)", Revoked)}, 404),
    operation_id="revokeToken",
    tags=["tokens"],
    summary="Revoke a token at once (?cascade=none|pause|revoke: what it created)",
)
def delete_token(
    token_id: str,
    cascade: Annotated[Cascade | None, Query(
        description="list what the token created (none), pause its schedules (pause), or "
                    "also revoke the tokens it minted (revoke); without it: 204")] = None,
) -> Response[Any]:
    who = caller(Role.ADMIN)
    if who.scope is not None:
        raise forbidden("a token with a scope cannot revoke tokens")
    audit = AuditLog(TABLES.audit_table)
    schedules = Schedules(audit, settings=SETTINGS.schedules, jobs=JOBS)
    answer = Revocation(TokenStore(TABLES.tokens_table), audit, schedules).revoke(
        token_id, who, cascade or Cascade.NONE)
    if cascade is None:
        return Response(status_code=204, body="")  # the audit event lists what it created
    return json_response(200, answer)


# ---------------------------------------------------------------------- hosts
@app.post(
    "/hosts",
    responses=answers({201: ("registered", HostView)}, 409),
    operation_id="createHost",
    tags=["hosts"],
    summary="Register a host (credentials go to Secrets Manager)",
)
def create_host(body: HostCreate) -> Response[dict[str, Any]]:
    who = caller(Role.ADMIN)
    return json_response(201, Inventory(secret_settings=SECRETS, tables=TABLES).register(body, who))


@app.get(
    "/hosts",
    responses=answers({200: ("hosts", HostList)}),
    operation_id="listHosts",
    tags=["hosts"],
    summary="List hosts by kind and tags",
)
def list_hosts(
    kind: Annotated[HostKind | None, Query()] = None,
    tag: Annotated[list[TagFilter] | None, Query(description="key:value, repeatable (AND)")] = None,
    limit: Limit = 100,
    next_token: NextToken = None,
) -> dict[str, Any]:
    who = caller(Role.VIEWER)
    tags = _tags(tag)
    hosts, token = Inventory(secret_settings=SECRETS, tables=TABLES).list(
        kind=kind.value if kind else None,
        tags=tags,
        limit=limit,
        next_token=next_token,
        caller=who,
    )
    return {"hosts": hosts, "next_token": token}


@app.get(
    "/hosts/<host_id>",
    responses=answers({200: ("the host", HostView)}, 404),
    operation_id="getHost",
    tags=["hosts"],
    summary="One host with its last health",
)
def get_host(host_id: str) -> dict[str, Any]:
    return Inventory(secret_settings=SECRETS, tables=TABLES).get(host_id, caller(Role.VIEWER))


@app.patch(
    "/hosts/<host_id>",
    responses=answers({200: ("the host as changed", HostView)}, 404),
    operation_id="updateHost",
    tags=["hosts"],
    summary="Change a host",
)
def patch_host(host_id: str, body: HostPatch) -> dict[str, Any]:
    who = caller(Role.ADMIN)
    return Inventory(secret_settings=SECRETS, tables=TABLES).update(host_id, body, who)


@app.delete(
    "/hosts/<host_id>",
    responses=answers({204: "removed"}, 404),
    operation_id="deleteHost",
    tags=["hosts"],
    summary="Remove a host (and its managed secret)",
)
def delete_host(host_id: str) -> Response[None]:
    who = caller(Role.ADMIN)
    Inventory(secret_settings=SECRETS, tables=TABLES).delete(host_id, who)
    return Response(status_code=204, body="")


@app.post(
    "/inventory/import",
    responses=answers({200: "each host's outcome"}),
    operation_id="importInventory",
    tags=["hosts"],
    summary="Register or replace up to 1,000 hosts; each is taken or refused on its own",
)
def import_inventory(body: InventoryImport) -> ImportOutcome:
    who = caller(Role.ADMIN)
    return BulkImport(secret_settings=SECRETS, tables=TABLES).run(body.hosts, body.on_conflict, who)


@app.get(
    "/hosts/<host_id>/actions",
    responses=answers({200: ("the actions", HostActions)}, 404),
    operation_id="listHostActions",
    tags=["hosts"],
    summary="Actions the host accepts",
)
def host_actions(host_id: str) -> dict[str, Any]:
    return Inventory(secret_settings=SECRETS, tables=TABLES).actions(host_id, caller(Role.VIEWER))


# ---------------------------------------------------------------------- jobs
@app.post(
    "/jobs",
    responses=answers(
        {202: ("started", JobAccepted),
         200: ("finished within ?wait (the job), or a dry run (the plan)",
               JobView | JobAccepted)}, 409
    ),
    operation_id="submitJob",
    tags=["jobs"],
    summary="Run one action on many hosts",
)
def create_job(
    body: JobRequest,
    wait: Annotated[float | None, Query(ge=0, le=MAX_WAIT_SECONDS)] = None,
    idempotency_key: IdempotencyKey = None,
) -> Response[dict[str, Any]]:
    who = caller(Role.OPERATOR)
    answer, dry_run = _submit_job(body, who, idempotency_key, app.lambda_context)
    if dry_run:
        return json_response(200, answer)
    if answer["status"] == JobStatus.AWAITING_APPROVAL:
        return json_response(202, shown(JobAccepted, answer))
    jobs = Jobs(settings=JOBS)
    wait = wait_budget(wait, app.lambda_context)
    if wait and jobs.wait(answer["job_id"], wait):
        return json_response(200, shown(JobView, jobs.view(answer["job_id"])))
    return json_response(202, shown(JobAccepted, answer))


@app.get(
    "/jobs/<job_id>",
    responses=answers({200: ("the job", JobView)}, 404),
    operation_id="getJob",
    tags=["jobs"],
    summary="A job with its per-host results",
)
def get_job(
    job_id: str,
    results_limit: Annotated[int | None, Query(ge=1, le=10000)] = None,
    next_token: NextToken = None,
) -> dict[str, Any]:
    who = caller(Role.VIEWER)
    view = Jobs(settings=JOBS).view(job_id, results_limit=results_limit,
                                    next_token=next_token, caller=who)
    return shown(JobView, view)


@app.get(
    "/jobs", responses=answers({200: ("jobs", JobList)}), tags=["jobs"],
    summary="Recent jobs, newest first", operation_id="listJobs",
)
def list_jobs(
    status: Annotated[JobStatus | None, Query()] = None,
    limit: Limit = 50,
    next_token: NextToken = None,
) -> dict[str, Any]:
    who = caller(Role.VIEWER)
    jobs, token = Jobs(settings=JOBS).list(
        status=status.value if status else None, limit=limit, next_token=next_token, caller=who
    )
    return shown(JobList, {"jobs": jobs, "next_token": token})


@app.post(
    "/jobs/<job_id>/cancel",
    responses=answers({202: ("cancel requested", CancelAnswer)}, 404, 409),
    operation_id="cancelJob",
    tags=["jobs"],
    summary="Stop starting hosts; skip the rest",
)
def cancel_job(job_id: str) -> Response[dict[str, Any]]:
    who = caller(Role.OPERATOR)
    return json_response(202, shown(CancelAnswer, Jobs(settings=JOBS).cancel(job_id, who)))


@app.post("/jobs/<job_id>/approve", tags=["jobs"],
          responses=answers({202: ("approved: the job starts", JobAccepted)}, 404, 409),
          operation_id="approveJob",
          summary="Let a destructive job awaiting approval start (admin, not its creator)")
def approve_job(job_id: str) -> Response[dict[str, Any]]:
    who = caller(Role.ADMIN)
    return json_response(202, shown(JobAccepted, Jobs(settings=JOBS).approve(job_id, who)))


@app.post("/jobs/<job_id>/reject", tags=["jobs"],
          responses=answers({200: ("rejected: CANCELLED", JobView)}, 404, 409),
          operation_id="rejectJob",
          summary="Turn down a job awaiting approval (its creator or an admin): CANCELLED")
def reject_job(job_id: str) -> Response[dict[str, Any]]:
    who = caller(Role.OPERATOR)
    return json_response(200, shown(JobView, Jobs(settings=JOBS).reject(job_id, who)))


# ---------------------------------------------------------------------- audit
@app.get(
    "/audit",
    responses=answers({200: ("events", AuditPage)}),
    operation_id="listAuditEvents",
    tags=["audit"],
    summary="The audit trail, newest first",
)
def audit(
    since: DateTime = None,
    until: DateTime = None,
    actor: Annotated[str | None, Query()] = None,
    host: Annotated[str | None, Query()] = None,
    action: Annotated[str | None, Query()] = None,
    job_id: Annotated[str | None, Query()] = None,
    cutover_id: Annotated[str | None, Query()] = None,
    order: Annotated[str, Query(pattern="^(asc|desc)$")] = "desc",
    limit: Limit = 100,
    next_token: NextToken = None,
) -> dict[str, Any]:
    who = caller(Role.VIEWER)
    visible = Inventory(secret_settings=SECRETS, tables=TABLES).ids_in_scope(who)
    events: list[Any] = []
    token = next_token
    # A scoped token sees the events about hosts in its scope and its own: other events
    # are skipped, a bounded number of pages at most (then next_token goes on from there).
    for _ in range(1 if visible is None else AUDIT_SCOPED_PAGES):
        page, token = AuditLog(TABLES.audit_table).query(
            since=_instant("since", since),
            until=_instant("until", until),
            actor=actor,
            host=host,
            action=action,
            job_id=job_id,
            cutover_id=cutover_id,
            limit=limit - len(events),
            next_token=token,
            newest_first=order == "desc",
        )
        events += [
            e for e in page if visible is None or e.target in visible or e.actor == who.principal
        ]
        if token is None or len(events) >= limit:
            break
    return {
        "events": [e.model_dump(mode="json", exclude={"seq"}) | {"seq": e.seq} for e in events],
        "next_token": token,
    }


@app.get(
    "/audit/verify",
    responses=answers({200: "the verification"}),
    operation_id="verifyAudit",
    tags=["audit"],
    summary="Check the events against the signed digests (paged: follow next_token)",
)
def audit_verify(
    since: DateTime = None, until: DateTime = None, next_token: NextToken = None
) -> AuditVerification:
    caller(Role.VIEWER)
    verifier = Verifier(AuditLog(TABLES.audit_table), settings=SETTINGS.audit)
    return verifier.run(since=_instant("since", since), until=_instant("until", until),
                        next_token=next_token)


# ---------------------------------------------------------------------- helpers
def _tags(raw: list[str] | None) -> dict[str, str]:
    tags: dict[str, str] = {}
    for item in raw or []:
        key, sep, value = item.partition(":")
        if not sep or not key:
            raise invalid("tag", f"{item!r} is not key:value")
        tags[key] = value
    return tags


def _instant(field: str, value: str | None) -> str | None:
    """An RFC 3339 date-time (as the OpenAPI declares) in, the audit table's sortable UTC
    form out."""
    if value is None:
        return None
    import datetime

    reason = "must be an RFC 3339 date-time, e.g. 2026-11-21T10:00:00Z"
    match = _DATE_TIME.fullmatch(value)
    if match is None:
        raise invalid(field, reason)
    # A leap second (:60) is a valid date-time; Python has no such second.
    text = match.expand(r"\1:" + min(match.group(2), "59") + r"\3").upper()
    try:
        parsed = datetime.datetime.fromisoformat(text.replace("Z", "+00:00"))
    except ValueError:
        raise invalid(field, reason) from None
    try:
        # isoformat pads the year to 4 digits (strftime's %Y gives "132" for year 132).
        utc = parsed.astimezone(datetime.UTC).replace(tzinfo=None)
        return utc.isoformat(timespec="microseconds") + "Z"
    except OverflowError:
        raise invalid(field, "is out of range") from None


_DATE_TIME = re.compile(
    r"([0-9]{4}-[0-9]{2}-[0-9]{2}[Tt][0-9]{2}:[0-9]{2}):([0-9]{2})((?:\.[0-9]+)?(?:[Zz]|[+-][0-9]{2}:[0-9]{2}))"
)


# ---------------------------------------------------------------------- the gate
# The least role each family of writes needs, checked before the body is even read (the
# routes check their own, exact role again): a viewer never gets a body parsed on an
# admin route. Never stricter than a route's own check.
_WRITE_ROLES = (
    ("/tokens", Role.ADMIN),
    ("/hosts", Role.ADMIN),
    ("/inventory", Role.ADMIN),
    ("/schedules", Role.ADMIN),
    ("/", Role.OPERATOR),
)
MAX_BODY_DEPTH = 32  # no API body nests deeper than this


def _gate(event: dict[str, Any]) -> dict[str, Any] | None:
    """A 403 for a role too low, or a 422 for a body that is not a JSON document of sane
    depth, before Powertools reads it; None to go on."""
    method = str(event.get("httpMethod") or "GET").upper()
    if method in ("GET", "HEAD", "OPTIONS"):
        return None
    authorizer = (event.get("requestContext") or {}).get("authorizer") or {}
    path = str(event.get("path") or "/")
    needed = next(role for prefix, role in _WRITE_ROLES if path.startswith(prefix))
    try:
        role = Role(authorizer.get("role"))
    except ValueError:
        role = None
    if role is not None and not role.allows(needed):
        problem = forbidden(f"this needs the {needed.value} role; you have {role.value}")
        return _proxy_answer(http_status(problem), problem.body())
    body = event.get("body")
    if not body:
        return None
    headers = {str(k).lower(): str(v) for k, v in (event.get("headers") or {}).items()}
    content_type = headers.get("content-type", "").split(";")[0].strip().lower()
    if content_type and content_type != "application/json" and not content_type.endswith("+json"):
        return _proxy_answer(415, {"message": "Content-Type: bodies are application/json"})
    try:
        text = base64.b64decode(body).decode() if event.get("isBase64Encoded") else body
        document = json.loads(text)
    except (ValueError, RecursionError):
        problem = invalid("body", "is not a JSON document (UTF-8)")
        return _proxy_answer(http_status(problem), problem.body())
    if _depth(document) > MAX_BODY_DEPTH:
        problem = invalid("body", f"nests deeper than {MAX_BODY_DEPTH} levels")
        return _proxy_answer(http_status(problem), problem.body())
    return None


def _depth(value: Any) -> int:
    """How deep a JSON value nests, without recursion (a crafted body may nest 100,000)."""
    deepest, stack = 0, [(value, 1)]
    while stack:
        item, level = stack.pop()
        deepest = max(deepest, level)
        if level > MAX_BODY_DEPTH:
            return level
        if isinstance(item, dict):
            stack.extend((v, level + 1) for v in item.values())
        elif isinstance(item, list):
            stack.extend((v, level + 1) for v in item)
    return deepest


def _proxy_answer(status: int, body: dict[str, Any]) -> dict[str, Any]:
    return {
        "statusCode": status,
        "headers": {"Content-Type": content_types.APPLICATION_JSON},
        "body": json.dumps(body),
        "isBase64Encoded": False,
    }


@logger.inject_lambda_context(correlation_id_path="requestContext.requestId", clear_state=True)
@tracer.capture_lambda_handler
def lambda_handler(event: dict[str, Any], context: LambdaContext) -> dict[str, Any]:
    refused = _gate(event)
    if refused is not None:
        return refused
    return app.resolve(event, context)
