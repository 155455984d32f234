"""`mailfleet tokens`: API tokens for people and scripts (admin)."""

from __future__ import annotations

from enum import StrEnum
from typing import Annotated, Any

import typer

from mailfleet_cli.output import cell_text, details, emit, note, out, table, when
from mailfleet_cli.parsing import parse_tags
from mailfleet_cli.state import STATE, Limit, NextToken, Output, more

app = typer.Typer(help="API tokens (stored as SHA-256; a new one is shown once).",
                  no_args_is_help=True)


class Role(StrEnum):
    viewer = "viewer"
    operator = "operator"
    admin = "admin"


@app.command("list", epilog="Example: mailfleet tokens list")
def list_(limit: Limit = None, next_token: NextToken = None, output: Output = None) -> None:
    """Tokens, never their values."""
    params = {k: v for k, v in {"limit": limit, "next_token": next_token}.items() if v}

    def render(data: dict[str, Any]) -> None:
        rows = [[t.get("token_id"), t.get("name"), t.get("role"), cell_text(t.get("scope")),
                 when(t.get("expires_at")), t.get("created_by"), when(t.get("created_at"))]
                for t in data.get("tokens") or []]
        out.print(table(["token_id", "name", "role", "scope", "expires", "by", "created"], rows))
        more(data)

    emit(STATE.client().get("/tokens", params=params), STATE.fmt(output), render)


@app.command("create", epilog="Example: mailfleet tokens create --name ci-reader --role viewer "
                              "-o json | jq -r .token")
def create(
    name: Annotated[str, typer.Option("--name", "-n", help="Who or what holds it.")],
    role: Annotated[Role, typer.Option("--role", "-r", help="viewer, operator or admin.")],
    scope_kind: Annotated[str | None, typer.Option(
        "--scope-kind", help="Only hosts of this kind.", show_default=False)] = None,
    scope_tag: Annotated[list[str] | None, typer.Option(
        "--scope-tag", help="Only hosts with this tag key=value; repeat.",
        show_default=False)] = None,
    expires_in_days: Annotated[int | None, typer.Option(
        "--expires-in-days", min=1, help="401 after that.", show_default=False)] = None,
    output: Output = None,
) -> None:
    """Mint a token. Its value is shown this once, on stdout: store it now."""
    body: dict[str, Any] = {"role": role.value, "name": name}
    if scope_kind or scope_tag:
        scope: dict[str, Any] = {}
        if scope_kind:
            scope["kind"] = scope_kind
        if scope_tag:
            scope["tags"] = parse_tags(scope_tag, "--scope-tag")
        body["scope"] = scope
    if expires_in_days:
        body["expires_in_days"] = expires_in_days

    def render(data: dict[str, Any]) -> None:
        out.print(details({k: v for k, v in data.items() if k != "token"}))
        note("[bold]the token, shown this once (store it now):[/]")
        out.print(data.get("token", ""), highlight=False)

    emit(STATE.client().post("/tokens", body), STATE.fmt(output), render)


@app.command("revoke", epilog="Example: mailfleet tokens revoke tok_01JD...")
def revoke(token_id: Annotated[str, typer.Argument(help="token_id (from tokens list).")],
           output: Output = None) -> None:
    """Revoke a token, effective at once (204: nothing on stdout, the exit code says it)."""
    STATE.client().delete(f"/tokens/{token_id}")
    note(f"token {token_id} revoked")
