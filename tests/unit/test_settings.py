"""Settings models (mailfleet.config): the environment names the template sets, defaults
written once, and services built with explicit settings instead of the environment."""

from __future__ import annotations

from pathlib import Path

import pytest
from cfnlint.decode import cfn_yaml
from pydantic_settings import BaseSettings

from mailfleet import config
from mailfleet.config import (
    ApprovalSettings,
    FanoutSettings,
    JobLimits,
    JobSettings,
    Tables,
)
from mailfleet.logic import distributed

ROOT = Path(__file__).resolve().parents[2]
# Powertools reads its own variables.
NOT_OURS = ("POWERTOOLS_",)
# mailfleet.aws reads this one as it makes its boto3 clients (kept for the container).
CLIENT_CONFIG = {"AWS_CALL_TIMEOUT_SECONDS"}


def settings_models() -> list[type[BaseSettings]]:
    return [v for v in vars(config).values()
            if isinstance(v, type) and issubclass(v, BaseSettings)
            and not v.__name__.startswith("_") and v.__module__ == config.__name__]


def template_variables() -> set[str]:
    t = cfn_yaml.load(str(ROOT / "template.yaml"))
    names = set(t["Globals"]["Function"].get("Environment", {}).get("Variables", {}))
    for resource in t["Resources"].values():
        if resource["Type"] == "AWS::Serverless::Function":
            names |= set(resource["Properties"].get("Environment", {}).get("Variables", {}))
    return {n for n in names if not n.startswith(NOT_OURS)}


def test_every_variable_the_template_sets_is_read_by_a_settings_model() -> None:
    read = {name.upper() for model in settings_models() for name in model.model_fields}
    missing = template_variables() - read - CLIENT_CONFIG
    assert not missing, f"set by template.yaml, read by no settings model: {sorted(missing)}"


def test_a_variable_means_the_same_in_every_model_that_reads_it() -> None:
    defaults: dict[str, object] = {}
    for model in settings_models():
        for name, field in model.model_fields.items():
            assert defaults.setdefault(name, field.default) == field.default, name


def test_settings_come_from_the_environment_by_their_names(
        monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("HOSTS_TABLE", "stack-hosts")
    monkeypatch.setenv("INPROCESS_MAX_TARGETS", "7")
    monkeypatch.setenv("APPROVAL_THRESHOLD_HOSTS", "")  # empty: the default
    made = JobSettings()
    assert made.tables.hosts_table == "stack-hosts"
    assert made.limits.inprocess_max_targets == 7
    assert made.approval.approval_threshold_hosts == 10
    # Explicit values win over the environment.
    assert Tables(hosts_table="given").hosts_table == "given"


def test_the_job_path_follows_explicit_settings() -> None:
    mapped = FanoutSettings(fanout_state_machine_arn="arn:aws:states:us-east-1:1:stateMachine:m",
                            jobs_bucket="bucket")
    small = JobSettings(fanout=mapped, limits=JobLimits(inprocess_max_targets=10),
                        approval=ApprovalSettings())
    assert distributed.choose_path(10, 1, 10, small) == distributed.INPROCESS
    assert distributed.choose_path(11, 1, 10, small) == distributed.DISTRIBUTED
    unmapped = JobSettings(fanout=FanoutSettings(fanout_state_machine_arn=None),
                           limits=JobLimits(inprocess_max_targets=10))
    assert distributed.choose_path(11, 1, 10, unmapped) == distributed.INPROCESS
