"""Shared pytest set-up. Each host kind's peer fixtures live in tests/fixtures/<kind>.py."""

from __future__ import annotations

import os

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
