"""The --env-vars file `make run` writes for `sam local invoke` / `start-api` (Docker is
not here to run them): it names every function and variable the template defines, and
each sample event in events/ replays against its handler with exactly those settings."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
from cfnlint.decode import cfn_yaml

from mailfleet_local import lambda_bridge, sam_local

ROOT = Path(__file__).resolve().parents[2]


def template_variables() -> dict[str, set[str]]:
    t = cfn_yaml.load(str(ROOT / "template.yaml"))
    shared = set(t["Globals"]["Function"].get("Environment", {}).get("Variables", {}))
    return {lid: shared | set(r["Properties"].get("Environment", {}).get("Variables", {}))
            for lid, r in t["Resources"].items() if r["Type"] == "AWS::Serverless::Function"}


@pytest.fixture(scope="module")
def env_file(local_api: Any, tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    local_api.ensure_deployed()
    path = tmp_path_factory.mktemp("sam") / "env-vars.json"
    sam_local.write(local_api.deployment, local_api.aws.endpoint_url, path)
    return sam_local.read(path)


def test_it_names_every_function_and_variable(env_file: dict[str, Any], local_api: Any) -> None:
    wanted = template_variables()
    assert set(env_file) == set(wanted)
    for function, names in wanted.items():
        assert names <= set(env_file[function]), f"{function}: {names - set(env_file[function])}"
        values = env_file[function]
        assert values["AWS_ENDPOINT_URL"] == local_api.aws.endpoint_url
        assert all(isinstance(v, str) and "Fn::" not in v for v in values.values()), function


def _events_for(code_uri: str) -> list[Path]:
    return sorted((ROOT / "events" / Path(code_uri).name).glob("*.json"))


def test_each_sample_event_replays_with_exactly_those_settings(
    env_file: dict[str, Any], local_api: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    t = cfn_yaml.load(str(ROOT / "template.yaml"))
    replayed = 0
    for logical_id, values in env_file.items():
        code_uri = t["Resources"][logical_id]["Properties"]["CodeUri"]
        for key, value in values.items():
            monkeypatch.setenv(key, value)
        name = local_api.deployment.functions[logical_id].name
        lambda_bridge.cold_start()  # each handler reads its settings once per cold start
        for event_file in _events_for(code_uri):
            event = json.loads(event_file.read_text())
            try:
                lambda_bridge.invoke_local(name, event)
            except Exception as exc:  # only the authorizer's refusal is an answer
                assert logical_id == "AuthorizerFunction" and "Unauthorized" in str(exc), (
                    f"{event_file.relative_to(ROOT)} on {logical_id}: {exc!r}")
            replayed += 1
    assert replayed >= len(list((ROOT / "events").rglob("*.json")))
