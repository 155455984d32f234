"""The OpenAPI document the API function generates: a valid OpenAPI 3 document, every
operation with a stable operationId, a typed success answer and the client errors it can
give (shared/API.md). Built in a child process: the API function's modules (app,
answers, the route modules) are imported from its own directory, as Lambda does, and
must not meet the other functions' `app` modules in this process."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
from openapi_spec_validator import validate

API_DIR = Path(__file__).resolve().parents[2] / "functions" / "api"
BUILD = (
    "import json, sys; sys.path.insert(0, sys.argv[1]); import app;"
    "doc = app.app.get_openapi_schema(**app.OPENAPI);"
    "print(json.dumps(doc.model_dump(mode='json', by_alias=True, exclude_none=True)))"
)
OPERATION_ID = re.compile(r"^[a-z][A-Za-z]+$")  # camelCase: get_job in a generated client
SUCCESS = ("200", "201", "202")


@pytest.fixture(scope="module")
def document() -> dict[str, Any]:
    env = dict(os.environ, POWERTOOLS_TRACE_DISABLED="true", AWS_DEFAULT_REGION="us-east-1")
    run = subprocess.run([sys.executable, "-c", BUILD, str(API_DIR)], capture_output=True,
                         text=True, timeout=60, check=False, env=env)
    assert run.returncode == 0, run.stderr[-3000:]
    return json.loads(run.stdout)


def _operations(document: dict[str, Any]) -> list[tuple[str, str, dict[str, Any]]]:
    return [(method.upper(), path, op) for path, ops in document["paths"].items()
            for method, op in ops.items()]


def test_the_document_is_valid_openapi_3(document: dict[str, Any]) -> None:
    assert document["openapi"].startswith("3.")
    validate(document)  # raises on the first error, naming it


def test_every_operation_has_a_unique_readable_operation_id(document: dict[str, Any]) -> None:
    ids = [op.get("operationId") for _, _, op in _operations(document)]
    assert all(isinstance(i, str) and OPERATION_ID.match(i) for i in ids), ids
    assert len(ids) == len(set(ids)), sorted(ids)
    # The names a generated client gets for the job routes (the README names them).
    assert {"submitJob", "getJob", "listJobs", "cancelJob"} <= set(ids)


def _typed(schema: dict[str, Any] | None, components: dict[str, Any]) -> bool:
    """A model (or a choice of models), not a bare object with any properties."""
    if not schema:
        return False
    if "$ref" in schema:
        return True
    if "anyOf" in schema:
        return all(_typed(s, components) for s in schema["anyOf"])
    return schema.get("type") == "object" and bool(schema.get("properties"))


def test_every_success_answer_is_typed(document: dict[str, Any]) -> None:
    components = document["components"]["schemas"]
    untyped = []
    for method, path, op in _operations(document):
        answers = {c: r for c, r in op["responses"].items() if c in SUCCESS}
        assert answers or "204" in op["responses"], f"{method} {path}: no success answer"
        for code, answer in answers.items():
            schema = answer.get("content", {}).get("application/json", {}).get("schema")
            if not _typed(schema, components):
                untyped.append(f"{method} {path} {code}")
    assert not untyped, untyped


def test_every_operation_declares_its_client_errors(document: dict[str, Any]) -> None:
    for method, path, op in _operations(document):
        codes = set(op["responses"])
        if op.get("security") == []:  # /health: no token, nothing to refuse but a bad query
            assert any(c.startswith("4") for c in codes), f"{method} {path}"
            continue
        assert {"401", "403", "422"} <= codes, f"{method} {path}: {sorted(codes)}"
        if "{" in path:  # an id in the path: unknown ids are 404
            assert "404" in codes, f"{method} {path}: {sorted(codes)}"
        for code in codes - set(SUCCESS) - {"204"}:
            body = op["responses"][code].get("content", {}).get("application/json", {})
            assert body.get("schema") == {"$ref": "#/components/schemas/ProblemBody"}, (
                f"{method} {path} {code}")


def test_every_drivers_actions_fit_the_declared_answer() -> None:
    """GET /hosts/{id}/actions declares HostActions: what each driver describes fits it,
    and reads back unchanged (Dovecot's from a real 2.3.19 command list)."""
    from mailfleet.drivers import KINDS, driver_class
    from mailfleet.drivers.dovecot import actions_from_commands
    from mailfleet.models.hosts import HostActions, HostKind

    commands = json.loads((API_DIR.parents[1] / "tests" / "data" /
                           "doveadm-2.3.19-commands.json").read_text())
    for kind in KINDS:
        specs = (actions_from_commands(commands) if HostKind(kind) is HostKind.DOVECOT
                 else driver_class(kind).static_actions())
        answer = {"host": "h1", "kind": str(kind), "source": "driver",
                  "actions": [spec.describe() for spec in specs.values()]}
        typed = HostActions.model_validate(answer)
        assert typed.actions, kind
        assert typed.model_dump(mode="json", by_alias=True, exclude_unset=True) == answer
