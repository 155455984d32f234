"""Exit codes a script can trust, and the one-line failures that carry them."""

from __future__ import annotations

from enum import IntEnum
from typing import Any


class Exit(IntEnum):
    OK = 0  # everything asked for succeeded
    FAILED = 1  # the job, cutover or migration failed or was cancelled; audit chain broken
    USAGE = 2  # bad command line, or the API refused the input (400/422)
    PARTIAL = 3  # some hosts or accounts succeeded, some did not
    AUTH = 4  # no or wrong token (401), or a role or scope too low (403)
    NOT_FOUND = 5  # unknown host, job, cutover, ... (404)
    UNREACHABLE = 6  # the API did not answer: refused, timed out, DNS, TLS
    CONFLICT = 7  # already exists, or already running (409)
    SERVER = 8  # the API answered 5xx or something that is not its JSON
    STILL_RUNNING = 9  # --for ran out while watching: the work goes on
    INTERRUPTED = 130  # Ctrl-C while watching: the job goes on


EXIT_CODES_HELP = """Exit codes:
  0 all succeeded
  1 failed (a job, cutover or migration FAILED or CANCELLED; the audit chain is broken)
  2 usage error, or input the API refused (400/422)
  3 partial (some hosts or accounts failed)
  4 auth error: no or wrong token (401), role or scope too low (403)
  5 not found (404)
  6 server unreachable (refused, timed out, DNS, TLS)
  7 conflict (409)
  8 server error (5xx)
  9 still running when --for ran out (the work goes on)
  130 interrupted while watching (the work goes on)"""


class CliError(Exception):
    """A failure shown as one line on stderr, ending the command with `code`."""

    def __init__(self, message: str, code: Exit = Exit.USAGE) -> None:
        super().__init__(message)
        self.message = message
        self.code = code

    def __str__(self) -> str:
        return self.message


class ApiError(CliError):
    """The API answered with an error status; `body` is its JSON answer (or None)."""

    def __init__(self, message: str, code: Exit, status: int, body: Any) -> None:
        super().__init__(message, code)
        self.status = status
        self.body = body

    def field_reasons(self) -> list[tuple[str, str]]:
        errors = self.body.get("errors") if isinstance(self.body, dict) else None
        return [(str(e.get("field", "")), str(e.get("reason", ""))) for e in errors or []
                if isinstance(e, dict)]


# Final statuses of jobs, cutovers and migrations, and what a script sees for each.
STATUS_EXIT = {
    "SUCCEEDED": Exit.OK,
    "PARTIAL": Exit.PARTIAL,
    "FAILED": Exit.FAILED,
    "CANCELLED": Exit.FAILED,
    "ROLLED_BACK": Exit.OK,  # a rollback that put every account back did what was asked
}


def exit_for_status(status: str) -> Exit:
    return STATUS_EXIT.get(status, Exit.OK)
