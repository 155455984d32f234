"""The logic layer refuses in domain terms (mailfleet.logic.problems) and the API function
alone turns them into HTTP statuses: every kind has its status there, and no runtime code
hands a status code to a domain error."""

from __future__ import annotations

import ast
import inspect
from pathlib import Path

from mailfleet.logic import problems

REPO = Path(__file__).resolve().parents[2]
API = REPO / "functions" / "api" / "app.py"
KINDS = {name for name, value in vars(problems).items()
         if inspect.isclass(value) and issubclass(value, problems.Problem)
         and value is not problems.Problem}


def _api_statuses() -> dict[str, int]:
    """HTTP_STATUS in functions/api/app.py, as written (read, not imported)."""
    for node in ast.walk(ast.parse(API.read_text())):
        if isinstance(node, ast.AnnAssign) and getattr(node.target, "id", "") == "HTTP_STATUS":
            assert isinstance(node.value, ast.Dict)
            return {k.id: v.value for k, v in zip(node.value.keys, node.value.values,
                                                  strict=True)
                    if isinstance(k, ast.Name) and isinstance(v, ast.Constant)}
    raise AssertionError("functions/api/app.py has no HTTP_STATUS")


def test_every_kind_of_refusal_has_its_status_in_the_api() -> None:
    assert _api_statuses() == {"Invalid": 422, "Unauthenticated": 401, "Forbidden": 403,
                               "NotFound": 404, "Conflict": 409, "Unavailable": 503}
    assert set(_api_statuses()) == KINDS


def test_a_refusal_carries_no_status_and_keeps_its_body() -> None:
    assert "status" not in problems.Problem.__dataclass_fields__
    refused = problems.invalid("targets.hosts", "unknown host ids: a", rule="x")
    assert isinstance(refused, problems.Invalid)
    assert refused.body() == {"message": "targets.hosts: unknown host ids: a",
                              "errors": [{"field": "targets.hosts",
                                          "reason": "unknown host ids: a"}], "rule": "x"}
    assert problems.not_found("job", "j1").body() == {"message": "job 'j1' not found"}
    assert problems.conflict("busy", status="RUNNING").body() == {"message": "busy",
                                                                   "status": "RUNNING"}


def test_no_runtime_code_gives_a_domain_error_a_status_code() -> None:
    names = KINDS | {"Problem"}
    found = []
    for path in (REPO / "layers" / "mailfleet" / "mailfleet").rglob("*.py"):
        for node in ast.walk(ast.parse(path.read_text())):
            if (isinstance(node, ast.Call) and getattr(node.func, "id", None) in names
                    and any(isinstance(a, ast.Constant) and isinstance(a.value, int)
                            for a in node.args)):
                found.append(f"{path.relative_to(REPO)}:{node.lineno}")
    assert not found, "domain errors built with a status code: " + ", ".join(found)
