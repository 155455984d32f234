"""The mailfleet HTTP API (behind API Gateway and the bearer-token authorizer).

Handlers stay thin: check the caller's role, hand the validated body to the logic
layer, shape the answer. Paths, fields and codes follow shared/API.md.
"""

from __future__ import annotations

from typing import Annotated, Any

import cutover_routes
import fleet_routes
from aws_lambda_powertools import Logger, Tracer
from aws_lambda_powertools.event_handler import APIGatewayRestResolver, Response, content_types
from aws_lambda_powertools.event_handler.openapi.exceptions import RequestValidationError
from aws_lambda_powertools.event_handler.openapi.models import HTTPBearer
from aws_lambda_powertools.event_handler.openapi.params import Header, Query
from aws_lambda_powertools.utilities.typing import LambdaContext
from once import Once

from mailfleet import aws
from mailfleet.logic.appliance_ops import OperationJobs
from mailfleet.logic.auth import mint
from mailfleet.logic.caller import Caller
from mailfleet.logic.hosts import Inventory
from mailfleet.logic.inventory_import import BulkImport
from mailfleet.logic.jobs import Jobs
from mailfleet.logic.problems import Problem, forbidden, invalid, not_found
from mailfleet.models.audit import AuditVerification
from mailfleet.models.hosts import HostCreate, HostKind, HostPatch, ImportOutcome, InventoryImport
from mailfleet.models.jobs import JobAccepted, JobRequest, JobStatus
from mailfleet.models.tokens import Role, TokenCreate, TokenCreated, TokenScope
from mailfleet.store.audit import AuditLog
from mailfleet.store.base import BadPageToken
from mailfleet.store.tokens import TokenNotFound, TokenStore

logger = Logger()
tracer = Tracer()
app = APIGatewayRestResolver(enable_validation=True)
app.enable_swagger(
    path="/swagger",
    title="mailfleet",
    version="1.0.0",
    description="Control plane for fleets of mail hosts: inventory, jobs, cutovers, audit.",
    security_schemes={"bearer": HTTPBearer(description="Authorization: Bearer <token>")},
    security=[{"bearer": []}],
)

MAX_WAIT_SECONDS = 25  # API Gateway gives up at 29 s
AUDIT_SCOPED_PAGES = 10
Limit = Annotated[int, Query(ge=1, le=1000, description="page size")]
NextToken = Annotated[str | None, Query(description="from the previous page")]


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
        raise Problem("missing or unknown bearer token", 401)
    scope = authorizer.get("scope")
    who = Caller(
        principal=principal,
        role=Role(role),
        source_ip=ctx.identity.source_ip,
        request_id=ctx.request_id,
        scope=TokenScope.model_validate_json(scope) if scope else None,
    )
    if not who.role.allows(needed):
        raise forbidden(f"this needs the {needed.value} role; you have {who.role.value}")
    return who


def json_response(status: int, body: Any) -> Response[Any]:
    return Response(status_code=status, content_type=content_types.APPLICATION_JSON, body=body)


@app.exception_handler(Problem)
def _problem(exc: Problem) -> Response[Any]:
    return json_response(exc.status, exc.body())


@app.exception_handler(BadPageToken)
def _bad_page(exc: BadPageToken) -> Response[Any]:
    return _problem(invalid("next_token", str(exc)))


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
app.include_router(cutover_routes.router_for(caller, json_response))
app.include_router(fleet_routes.router_for(caller, json_response))


# Long appliance operations run as their own state machine; other jobs as Jobs starts them.
_submit_job = Once(lambda job, who: OperationJobs().submit(job, who))


# ---------------------------------------------------------------------- meta
@app.get("/health", tags=["meta"], summary="Liveness (no authentication)", security=[])
def health() -> dict[str, str]:
    return {"status": "ok"}


@app.get("/whoami", tags=["meta"], summary="The caller's principal and role")
def whoami() -> dict[str, str]:
    who = caller(Role.VIEWER)
    return {"principal": who.principal, "role": who.role.value}


@app.get(
    "/openapi.json", tags=["meta"], summary="This API's OpenAPI document", include_in_schema=False
)
def openapi() -> Response[dict[str, Any]]:
    caller(Role.VIEWER)
    schema = app.get_openapi_schema(title="mailfleet", version="1.0.0")
    return json_response(200, schema.model_dump(mode="json", by_alias=True, exclude_none=True))


# ---------------------------------------------------------------------- tokens
@app.post("/tokens", tags=["tokens"], summary="Mint a token (shown once)")
def create_token(body: TokenCreate) -> Response[TokenCreated]:
    who = caller(Role.ADMIN)
    if who.scope is not None:
        raise forbidden("a token with a scope cannot mint tokens")
    created: TokenCreated = mint(body, who.principal)
    AuditLog().append(
        actor=who.principal,
        source_ip=who.source_ip,
        request_id=who.request_id,
        action="token.create",
        target=f"token:{created.token_id}",
        outcome="ok",
        params={
            "role": created.role.value,
            "name": created.name,
            "scope": created.scope.model_dump(mode="json") if created.scope else None,
            "expires_at": created.expires_at,
        },
    )
    return json_response(201, created.model_dump(mode="json"))


@app.get("/tokens", tags=["tokens"], summary="List tokens (never their values)")
def list_tokens(limit: Limit = 100, next_token: NextToken = None) -> dict[str, Any]:
    caller(Role.ADMIN)
    items, token = TokenStore().list(limit, next_token)
    tokens = [{k: v for k, v in i.items() if k != "token_sha256"} for i in items]
    return {"tokens": tokens, "next_token": token}


@app.delete("/tokens/<token_id>", tags=["tokens"], summary="Revoke a token at once")
def delete_token(token_id: str) -> Response[None]:
    who = caller(Role.ADMIN)
    if who.scope is not None:
        raise forbidden("a token with a scope cannot revoke tokens")
    try:
        TokenStore().delete(token_id)
    except TokenNotFound:
        raise not_found("token", token_id) from None
    AuditLog().append(
        actor=who.principal,
        source_ip=who.source_ip,
        request_id=who.request_id,
        action="token.revoke",
        target=f"token:{token_id}",
        outcome="ok",
    )
    return Response(status_code=204, body="")


# ---------------------------------------------------------------------- hosts
@app.post("/hosts", tags=["hosts"], summary="Register a host (credentials go to Secrets Manager)")
def create_host(body: HostCreate) -> Response[dict[str, Any]]:
    who = caller(Role.ADMIN)
    return json_response(201, Inventory().register(body, who))


@app.get("/hosts", tags=["hosts"], summary="List hosts by kind and tags")
def list_hosts(
    kind: Annotated[HostKind | None, Query()] = None,
    tag: Annotated[list[str] | None, Query(description="key:value, repeatable (AND)")] = None,
    limit: Limit = 100,
    next_token: NextToken = None,
) -> dict[str, Any]:
    who = caller(Role.VIEWER)
    tags = _tags(tag)
    hosts, token = Inventory().list(
        kind=kind.value if kind else None, tags=tags, limit=limit, next_token=next_token,
        caller=who,
    )
    return {"hosts": hosts, "next_token": token}


@app.get("/hosts/<host_id>", tags=["hosts"], summary="One host with its last health")
def get_host(host_id: str) -> dict[str, Any]:
    return Inventory().get(host_id, caller(Role.VIEWER))


@app.patch("/hosts/<host_id>", tags=["hosts"], summary="Change a host")
def patch_host(host_id: str, body: HostPatch) -> dict[str, Any]:
    who = caller(Role.ADMIN)
    return Inventory().update(host_id, body, who)


@app.delete("/hosts/<host_id>", tags=["hosts"], summary="Remove a host (and its managed secret)")
def delete_host(host_id: str) -> Response[None]:
    who = caller(Role.ADMIN)
    Inventory().delete(host_id, who)
    return Response(status_code=204, body="")


@app.post(
    "/inventory/import",
    tags=["hosts"],
    summary="Register or replace up to 1,000 hosts; each is taken or refused on its own",
)
def import_inventory(body: InventoryImport) -> ImportOutcome:
    who = caller(Role.ADMIN)
    return BulkImport().run(body.hosts, body.on_conflict, who)


@app.get("/hosts/<host_id>/actions", tags=["hosts"], summary="Actions the host accepts")
def host_actions(host_id: str) -> dict[str, Any]:
    return Inventory().actions(host_id, caller(Role.VIEWER))


# ---------------------------------------------------------------------- jobs
@app.post("/jobs", tags=["jobs"], summary="Run one action on many hosts")
def create_job(
    body: JobRequest,
    wait: Annotated[float | None, Query(ge=0, le=MAX_WAIT_SECONDS)] = None,
    idempotency_key: Annotated[str | None, Header(alias="Idempotency-Key", max_length=256)] = None,
) -> Response[dict[str, Any]]:
    who = caller(Role.OPERATOR)
    answer, dry_run = _submit_job(body, who, idempotency_key, app.lambda_context)
    if dry_run:
        return json_response(200, answer)
    jobs = Jobs()
    wait = wait_budget(wait, app.lambda_context)
    if wait and jobs.wait(answer["job_id"], wait):
        return json_response(200, jobs.view(answer["job_id"]))
    return json_response(202, JobAccepted(**answer).model_dump(mode="json", exclude_none=True))


@app.get("/jobs/<job_id>", tags=["jobs"], summary="A job with its per-host results")
def get_job(
    job_id: str,
    results_limit: Annotated[int | None, Query(ge=1, le=10000)] = None,
    next_token: NextToken = None,
) -> dict[str, Any]:
    who = caller(Role.VIEWER)
    return Jobs().view(job_id, results_limit=results_limit, next_token=next_token, caller=who)


@app.get("/jobs", tags=["jobs"], summary="Recent jobs, newest first")
def list_jobs(
    status: Annotated[JobStatus | None, Query()] = None,
    limit: Limit = 50,
    next_token: NextToken = None,
) -> dict[str, Any]:
    who = caller(Role.VIEWER)
    jobs, token = Jobs().list(
        status=status.value if status else None, limit=limit, next_token=next_token, caller=who
    )
    return {"jobs": jobs, "next_token": token}


@app.post("/jobs/<job_id>/cancel", tags=["jobs"], summary="Stop starting hosts; skip the rest")
def cancel_job(job_id: str) -> Response[dict[str, Any]]:
    who = caller(Role.OPERATOR)
    return json_response(202, Jobs().cancel(job_id, who))


# ---------------------------------------------------------------------- audit
@app.get("/audit", tags=["audit"], summary="The audit trail, newest first")
def audit(
    since: Annotated[str | None, Query(description="ISO 8601 UTC")] = None,
    until: Annotated[str | None, Query(description="ISO 8601 UTC")] = None,
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
    visible = Inventory().ids_in_scope(who)
    events: list[Any] = []
    token = next_token
    # A scoped token sees the events about hosts in its scope and its own: other events
    # are skipped, a bounded number of pages at most (then next_token goes on from there).
    for _ in range(1 if visible is None else AUDIT_SCOPED_PAGES):
        page, token = AuditLog().query(
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


@app.get("/audit/verify", tags=["audit"], summary="Check the hash chain")
def audit_verify(
    since: Annotated[str | None, Query()] = None, until: Annotated[str | None, Query()] = None
) -> AuditVerification:
    caller(Role.VIEWER)
    return AuditLog().verify(since=_instant("since", since), until=_instant("until", until))


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
    """ISO 8601 in, the audit table's sortable UTC form out."""
    if value is None:
        return None
    import datetime

    try:
        parsed = datetime.datetime.fromisoformat(value.replace("Z", "+00:00"))
    except ValueError:
        raise invalid(field, "must be an ISO 8601 time, e.g. 2026-11-21T10:00:00Z") from None
    if parsed.tzinfo is None:
        parsed = parsed.replace(tzinfo=datetime.UTC)
    return parsed.astimezone(datetime.UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


@logger.inject_lambda_context(correlation_id_path="requestContext.requestId", clear_state=True)
@tracer.capture_lambda_handler
def lambda_handler(event: dict[str, Any], context: LambdaContext) -> dict[str, Any]:
    return app.resolve(event, context)
