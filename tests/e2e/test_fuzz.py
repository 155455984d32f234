"""The whole OpenAPI fuzzed with schemathesis (pinned in requirements-dev.txt), every
check on (tests/schemathesis.toml says which statuses stand for rules JSON schema cannot
say): no server error, no answer that breaks the document, for at least 1,000 generated
requests.

The stack is `make run`'s, in its own process (mailfleet_local.process): the fuzzer mints
tokens, registers hosts and creates schedules at random, which must not leak into the
other tests' stack; and the fuzzer and the stack then use both cores.
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest
import requests

from mailfleet_local.process import StackProcess

CONFIG = Path(__file__).resolve().parents[1] / "schemathesis.toml"
MIN_CASES = 1000
# Examples per operation and phase: with ~30 operations, about 1,400 requests.
MAX_EXAMPLES = int(os.environ.get("MAILFLEET_FUZZ_EXAMPLES", "8"))
SEED = os.environ.get("MAILFLEET_FUZZ_SEED", "1")
# The `st` command, with the modules it imports lazily from its worker threads imported
# first: two threads importing one module at once can break CPython 3.11's compiler
# ("AST constructor recursion depth mismatch").
RUN_SCHEMATHESIS = (
    "import sys, anyio, schemathesis.transport.asgi, schemathesis.transport.wsgi;"
    "from schemathesis.cli import schemathesis;"
    "sys.argv[0] = 'st'; sys.exit(schemathesis())"
)


@pytest.mark.timeout(600)
def test_no_server_error_and_no_schema_break(tmp_path: Path) -> None:
    log = (tmp_path / "stack.log").open("w")
    with StackProcess(log=log) as stack:
        auth = {"Authorization": f"Bearer {stack.admin_token}"}
        schema = requests.get(stack.url + "/openapi.json", headers=auth, timeout=30)
        assert schema.status_code == 200
        schema_file = tmp_path / "openapi.json"
        schema_file.write_text(json.dumps(schema.json()))
        run = subprocess.run(
            [sys.executable, "-c", RUN_SCHEMATHESIS, "--config-file", str(CONFIG), "run",
             str(schema_file),
             "--url", stack.url, "--header", f"Authorization: Bearer {stack.admin_token}",
             "--max-examples", str(MAX_EXAMPLES), "--workers", "2", "--seed", SEED,
             "--request-timeout", "35", "--no-color"],
            capture_output=True, text=True, timeout=540, check=False, cwd=tmp_path,
            env=dict(os.environ, NO_COLOR="1", SCHEMATHESIS_TELEMETRY="false"),
        )
    report = run.stdout[-20000:] + run.stderr[-3000:]
    assert run.returncode == 0, report
    generated = re.search(r"(\d+) generated", run.stdout)
    assert generated is not None, report
    assert int(generated.group(1)) >= MIN_CASES, report
    assert " passed" in run.stdout and "failure" not in run.stdout.split("Test cases:")[-1], report
    print(run.stdout.split("Test cases:")[-1].strip().splitlines()[0])
