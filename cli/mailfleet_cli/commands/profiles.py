"""`mailfleet profile`: named connections (URL and token) in the user's config folder."""

from __future__ import annotations

import sys
from typing import Annotated

import typer

from mailfleet_cli.config import Profile, ProfileStore
from mailfleet_cli.errors import CliError
from mailfleet_cli.output import emit, note, out, table
from mailfleet_cli.state import STATE, Output

app = typer.Typer(help="Named connections: URL and token, kept in a 0600 file "
                       "(MAILFLEET_CONFIG names another).", no_args_is_help=True)


@app.command("add", epilog="Example: mailfleet profile add local --url http://127.0.0.1:3000 "
                           "--use   (asks for the token, hidden)")
def add(
    name: Annotated[str, typer.Argument(help="Profile name.")],
    url: Annotated[str, typer.Option("--url", help="API base URL.")],
    token: Annotated[str | None, typer.Option(
        "--token", help="Bearer token; asked for (hidden) when left out and stdin is a "
                        "terminal, read from stdin with --token-stdin.", show_default=False,
    )] = None,
    token_stdin: Annotated[bool, typer.Option(
        "--token-stdin", help="Read the token from stdin (keeps it out of shell history).",
    )] = False,
    ca_bundle: Annotated[str | None, typer.Option("--ca-bundle", help="PEM CA file.")] = None,
    use: Annotated[bool, typer.Option("--use", help="Make it the current profile.")] = False,
    output: Output = None,
) -> None:
    """Add (or replace) a profile; -o json shows it without its token."""
    if not url.startswith(("http://", "https://")):
        raise CliError(f"--url: {url!r} must start with http:// or https://")
    if token_stdin:
        token = sys.stdin.readline().strip() or None
    elif token is None and sys.stdin.isatty():
        token = typer.prompt("Token (hidden, empty for none)", default="", hide_input=True,
                             show_default=False) or None
    store = ProfileStore()
    store.put(Profile(name=name, url=url.rstrip("/"), token=token, ca_bundle=ca_bundle))
    if use or not store.current:
        store.use(name)
    store.save()
    current = " (current)" if store.current == name else ""
    shown = {"name": name, "url": url.rstrip("/"), "token": "set" if token else "",
             "current": store.current == name, "file": str(store.path)}
    emit(shown, STATE.fmt(output),
         lambda _: note(f"profile {name}{current} saved in {store.path}"))


@app.command("list", epilog="Example: mailfleet profile list -o json")
def list_(output: Output = None) -> None:
    """The profiles, their URLs and whether a token is set (never the token)."""
    store = ProfileStore()
    rows = []
    for name in store.names():
        profile = store.get(name)
        rows.append({"name": name, "url": profile.url, "token": "set" if profile.token else "",
                     "current": name == store.current})

    def render(data: list[dict[str, object]]) -> None:
        if not data:
            note("no profiles yet: mailfleet profile add NAME --url URL")
            return
        out.print(table(["", "name", "url", "token"],
                        [["*" if p["current"] else "", p["name"], p["url"], p["token"]]
                         for p in data]))

    emit(rows, STATE.fmt(output), render)


@app.command("use", epilog="Example: mailfleet profile use prod")
def use(name: Annotated[str, typer.Argument(help="Profile name.")],
        output: Output = None) -> None:
    """Make a profile the current one."""
    store = ProfileStore()
    store.use(name)
    store.save()
    emit({"current": name}, STATE.fmt(output), lambda _: note(f"current profile: {name}"))


@app.command("remove", epilog="Example: mailfleet profile remove old-lab")
def remove(name: Annotated[str, typer.Argument(help="Profile name.")],
           output: Output = None) -> None:
    """Forget a profile (and its token)."""
    store = ProfileStore()
    store.remove(name)
    store.save()
    note(f"profile {name} removed")
