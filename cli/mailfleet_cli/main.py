"""The `mailfleet` command: root options, the command groups, and the one place where a
failure becomes one line on stderr and an exit code (never a traceback)."""

from __future__ import annotations

import os
import sys
from typing import Annotated

import typer

# Typer ships its own Click; these are the exceptions its commands raise.
from typer._click.exceptions import ClickException, UsageError

from mailfleet_cli import __version__
from mailfleet_cli.commands import (
    audit,
    cutovers,
    fleet,
    hosts,
    jobs,
    migrations,
    profiles,
    schedules,
    tokens,
)
from mailfleet_cli.errors import EXIT_CODES_HELP, CliError, Exit
from mailfleet_cli.output import details, emit, out
from mailfleet_cli.state import STATE, Output

HELP = f"""The operators' command line for mailfleet: inventory, jobs on many hosts with \
live progress, cutovers, migrations, audit.

Connection: --url/--token, or MAILFLEET_URL/MAILFLEET_TOKEN, or a profile \
(mailfleet profile add). Data goes to stdout (-o json is the API's answer, for jq); \
progress and errors go to stderr.

{EXIT_CODES_HELP}"""

app = typer.Typer(
    name="mailfleet",
    help=HELP,
    no_args_is_help=True,
    rich_markup_mode="rich",
    pretty_exceptions_enable=False,
    context_settings={"help_option_names": ["-h", "--help"], "max_content_width": 100},
    epilog="Example: mailfleet --url http://127.0.0.1:3000 jobs run who --kind dovecot "
           "--tag site=demo --wait",
)


def _version(value: bool) -> None:
    if value:
        print(f"mailfleet {__version__}")
        raise typer.Exit()


@app.callback()
def root(
    url: Annotated[str | None, typer.Option(
        "--url", help="API base URL (or MAILFLEET_URL, or the profile's).", show_default=False,
    )] = None,
    token: Annotated[str | None, typer.Option(
        "--token", help="Bearer token (or MAILFLEET_TOKEN, or the profile's). Never printed.",
        show_default=False,
    )] = None,
    profile: Annotated[str | None, typer.Option(
        "--profile", "-p", help="Named profile (or MAILFLEET_PROFILE; default: the current).",
        show_default=False,
    )] = None,
    ca_bundle: Annotated[str | None, typer.Option(
        "--ca-bundle", help="PEM file of CAs to trust for the API's TLS (verified always).",
        show_default=False,
    )] = None,
    output: Output = None,
    quiet: Annotated[bool, typer.Option(
        "--quiet", "-q", help="No progress or notes on stderr (errors still).")] = False,
    timeout: Annotated[float, typer.Option(
        "--http-timeout", help="Seconds to wait for each API answer.", min=1)] = 35.0,
    version: Annotated[bool | None, typer.Option(
        "--version", callback=_version, is_eager=True, help="Show the version.")] = None,
) -> None:
    STATE.url, STATE.token, STATE.profile, STATE.ca_bundle = url, token, profile, ca_bundle
    STATE.output, STATE.quiet, STATE.timeout = output, quiet, timeout


@app.command(epilog="Example: mailfleet whoami -o json")
def whoami(output: Output = None) -> None:
    """Who the API takes you for: principal and role (and where the URL and token came from)."""
    client = STATE.client()
    answer = client.get("/whoami")
    conn = STATE.connection()

    def render(data: dict[str, str]) -> None:
        shown = {**data, "url": conn.url, "url from": conn.url_from,
                 "token from": conn.token_from}
        out.print(details(shown))

    emit(answer, STATE.fmt(output), render)


app.add_typer(profiles.app, name="profile")
app.add_typer(hosts.app, name="hosts")
app.add_typer(jobs.app, name="jobs")
app.add_typer(cutovers.app, name="cutovers")
app.add_typer(migrations.app, name="migrations")
app.add_typer(audit.app, name="audit")
app.add_typer(fleet.app, name="fleet")
app.add_typer(schedules.app, name="schedules")
app.add_typer(tokens.app, name="tokens")


def main(argv: list[str] | None = None) -> int:
    """Entry point of the `mailfleet` script."""
    try:
        # Not standalone: usage errors come back here to be said in one line.
        code = app(args=argv, prog_name="mailfleet", standalone_mode=False)
        return code if isinstance(code, int) else 0
    except ClickException as exc:
        ctx = getattr(exc, "ctx", None)
        if type(exc).__name__ == "NoArgsIsHelpError" and ctx is not None:
            help_text = ctx.get_help()  # Typer's rich help prints itself and returns ""
            if help_text:
                print(help_text)
            return exc.exit_code
        where = getattr(getattr(exc, "ctx", None), "command_path", None) or "mailfleet"
        hint = f" (see {where} --help)" if isinstance(exc, UsageError) else ""
        message = " ".join(exc.format_message().split())
        print(f"mailfleet: {message}{hint}", file=sys.stderr)
        return exc.exit_code
    except typer.Abort:
        print("mailfleet: aborted", file=sys.stderr)
        return int(Exit.FAILED)
    except CliError as exc:
        print(f"mailfleet: {exc.message}", file=sys.stderr)
        return int(exc.code)
    except KeyboardInterrupt:
        print("mailfleet: interrupted", file=sys.stderr)
        return int(Exit.INTERRUPTED)
    except SystemExit as exc:
        return exc.code if isinstance(exc.code, int) else (0 if exc.code is None else 1)
    except BrokenPipeError:
        # `mailfleet ... | head`: the reader left; say nothing more.
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return 0
    except Exception as exc:  # a bug of ours: still one line, never a traceback
        if os.environ.get("MAILFLEET_DEBUG"):
            raise
        print(f"mailfleet: internal error: {type(exc).__name__}: {exc}", file=sys.stderr)
        return int(Exit.SERVER)
    finally:
        STATE.close()


__all__ = ["app", "main"]
