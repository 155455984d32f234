"""Shared pytest set-up. Each host kind's peer fixtures live in tests/fixtures/<kind>.py."""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

import pytest

# No real AWS, ever: every client made in the tests talks to moto.
os.environ.setdefault("AWS_DEFAULT_REGION", "us-east-1")
os.environ.setdefault("AWS_ACCESS_KEY_ID", "testing")
os.environ.setdefault("AWS_SECRET_ACCESS_KEY", "testing")
os.environ.setdefault("POWERTOOLS_TRACE_DISABLED", "true")
os.environ.setdefault("POWERTOOLS_METRICS_NAMESPACE", "mailfleet")
os.environ.setdefault("POWERTOOLS_DEV", "false")

pytest_plugins = [
    "tests.fixtures.dovecot",
    "tests.fixtures.proxy",
    "tests.fixtures.appliance",
    "tests.fixtures.pymap",
    "tests.fixtures.stack",
    # Every AWS call a function makes, held to its role as SAM expands it.
    "tests.iam_calls",
]


# doveadm 2.3.19's command list: the repository's copy of ../shared/contracts/..., read when
# a test asks for it, never at import (collecting the tests reads no file).
DOVEADM_COMMANDS = Path(__file__).resolve().parent / "data" / "doveadm-2.3.19-commands.json"


def shared_contract(name: str) -> Path | None:
    """A file of shared/contracts beside the checkout (CI: beside the clone; a worktree:
    further up), or None where there is no shared/ folder."""
    for folder in Path(__file__).resolve().parents[1].parents:
        if (folder / "shared" / "contracts" / name).is_file():
            return folder / "shared" / "contracts" / name
    return None


@pytest.fixture(scope="session")
def doveadm_commands() -> list[dict[str, Any]]:
    return json.loads(DOVEADM_COMMANDS.read_text())
