"""A Python client generated from the API's own /openapi.json with a common generator
(openapi-python-client, pinned in requirements-codegen.txt and installed in its own venv
by `make codegen-venv`), driving a job on a real Dovecot host through `make run`'s stack:
the client's method names come from the operationIds, and every answer arrives as a
typed (attrs) model, not a dict.

The generator runs offline (it reads the document from a file) in a few seconds; the
client is generated into tmp_path and imported from there.
"""

from __future__ import annotations

import importlib
import os
import subprocess
import sys
import time
import uuid
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest
import requests

from mailfleet_local.peers.dovecot import DovecotInstance
from mailfleet_local.process import StackProcess
from tests.fixtures.dovecot import host_body

REPO = Path(__file__).resolve().parents[2]
GENERATOR = REPO / ".venv-codegen" / "bin" / "openapi-python-client"
PACKAGE = "mailfleet_api_client"


@pytest.fixture(scope="module")
def stack(tmp_path_factory: pytest.TempPathFactory) -> Any:
    log = (tmp_path_factory.mktemp("stack") / "stack.log").open("w")
    with StackProcess(log=log) as running:
        yield running
    log.close()


def _generate(stack: StackProcess, where: Path) -> Any:
    if not GENERATOR.exists():
        if os.environ.get("MAILFLEET_REQUIRE_BUILD"):
            pytest.fail(f"{GENERATOR} is missing: `make codegen-venv` installs it")
        pytest.skip("no client generator: `make codegen-venv` installs it")
    answer = requests.get(stack.url + "/openapi.json", timeout=30,
                          headers={"Authorization": f"Bearer {stack.admin_token}"})
    assert answer.status_code == 200, answer.text
    document = where / "openapi.json"
    document.write_text(answer.text)
    started = time.monotonic()
    # The generator formats its output with ruff: the one beside it in its venv.
    env = dict(os.environ, PATH=f"{GENERATOR.parent}{os.pathsep}{os.environ.get('PATH', '')}")
    run = subprocess.run(
        [str(GENERATOR), "generate", "--path", str(document), "--meta", "none",
         "--output-path", str(where / PACKAGE)],
        capture_output=True, text=True, timeout=120, check=False, cwd=where, env=env)
    assert run.returncode == 0, run.stdout[-3000:] + run.stderr[-3000:]
    # Anything it could not type (an untyped answer, an unreadable schema) is a warning.
    assert "Warning" not in run.stdout + run.stderr, run.stdout + run.stderr
    print(f"client generated in {time.monotonic() - started:.1f} s")
    sys.path.insert(0, str(where))
    try:
        return importlib.import_module(PACKAGE)
    finally:
        sys.path.remove(str(where))


def _modules(package: str, *names: str) -> Any:
    """The generated API modules (one per operation, named after its operationId)."""
    return SimpleNamespace(**{n: importlib.import_module(f"{package}.{n}") for n in names})


@pytest.mark.timeout(300)
def test_a_generated_client_runs_a_job_with_typed_answers(
    stack: StackProcess, tmp_path: Path, request: pytest.FixtureRequest
) -> None:
    client_package = _generate(stack, tmp_path)
    # Asked for once the stack serves (a session fixture would start them first).
    dovecot_hosts: list[DovecotInstance] = request.getfixturevalue("dovecot_hosts")
    hosts_api = _modules(f"{PACKAGE}.api.hosts", "create_host", "delete_host")
    jobs_api = _modules(f"{PACKAGE}.api.jobs", "submit_job", "get_job", "list_jobs",
                        "cancel_job")
    models = importlib.import_module(f"{PACKAGE}.models")
    client = client_package.AuthenticatedClient(
        base_url=stack.url, token=stack.admin_token, timeout=35.0,
        raise_on_unexpected_status=True, httpx_args={"trust_env": False})

    with client as client:
        host_id = f"gen-{uuid.uuid4().hex[:8]}"
        body = models.HostCreate.from_dict(host_body(dovecot_hosts[0], host_id))
        host = hosts_api.create_host.sync(client=client, body=body)
        assert isinstance(host, models.HostView), host
        assert host.id == host_id and host.kind == models.HostKind.DOVECOT

        request = models.JobRequest.from_dict(
            {"action": "who", "targets": {"hosts": [host_id]}})
        answer = jobs_api.submit_job.sync(client=client, body=request, wait=20)
        assert isinstance(answer, models.JobView | models.JobAccepted), answer

        job = jobs_api.get_job.sync(answer.job_id, client=client)
        deadline = time.monotonic() + 30
        while job.status in (models.JobStatus.PENDING, models.JobStatus.RUNNING):
            assert time.monotonic() < deadline, job
            time.sleep(0.2)
            job = jobs_api.get_job.sync(answer.job_id, client=client)
        assert isinstance(job, models.JobView)
        assert job.status == models.JobStatus.SUCCEEDED, job.to_dict()
        assert job.action == "who" and job.counts["SUCCEEDED"] == 1
        (result,) = job.results
        assert isinstance(result, models.HostResult)
        assert result.host == host_id and result.status == models.ResultStatus.SUCCEEDED
        assert isinstance(result.attempts, int) and result.attempts >= 1
        assert isinstance(result.duration_ms, int)

        listed = jobs_api.list_jobs.sync(client=client, limit=10)
        assert isinstance(listed, models.JobList)
        assert answer.job_id in [j.job_id for j in listed.jobs]

        cancelled = jobs_api.cancel_job.sync(answer.job_id, client=client)
        assert isinstance(cancelled, models.CancelAnswer)
        assert cancelled.cancel_requested is False  # it had ended

        # A client error arrives typed too: the problem body, with the status it came with.
        missing = jobs_api.get_job.sync_detailed("no-such-job", client=client)
        assert missing.status_code == 404
        assert isinstance(missing.parsed, models.ProblemBody) and missing.parsed.message

        hosts_api.delete_host.sync_detailed(host_id, client=client)
