"""Every state machine definition (statemachines/*.asl.json) is checked before it runs:
neither `sam validate` nor cfn-lint looks inside a DefinitionUri file, and moto accepts
a `Next` to a missing state. So each definition, with its DefinitionSubstitutions filled
in, must pass cfn-lint's state-machine schema (E3601, by inlining it into a plain
AWS::StepFunctions::StateMachine), name only real states in every Next/Default/StartAt
(inside Map and Parallel too), and parse with moto's ASL parser."""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

import pytest
from cfnlint.api import ManualArgs, lint
from cfnlint.decode import cfn_yaml

REPO = Path(__file__).resolve().parents[2]
DEFINITIONS = sorted((REPO / "statemachines").glob("*.asl.json"))
PLACEHOLDER = re.compile(r"\$\{([^}]+)\}")
ACCOUNT = "123456789012"


def _substitutions() -> dict[str, dict[str, str]]:
    """DefinitionUri (relative path) -> {substitution: a stand-in value of the right kind}."""
    template = cfn_yaml.load(str(REPO / "template.yaml"))
    resources = template["Resources"]
    out: dict[str, dict[str, str]] = {}
    for resource in resources.values():
        if resource["Type"] != "AWS::Serverless::StateMachine":
            continue
        props = resource["Properties"]
        uri = props.get("DefinitionUri")
        if isinstance(uri, str):
            out[str(Path(uri))] = {
                key: _stand_in(key, value, resources)
                for key, value in props.get("DefinitionSubstitutions", {}).items()
            }
    return out


def _stand_in(key: str, value: Any, resources: dict[str, Any]) -> str:
    """What the substitution will be once deployed, made up from what it refers to."""
    target = None
    if isinstance(value, dict) and len(value) == 1:
        (fn, arg), = value.items()
        if fn in ("Ref", "Fn::GetAtt"):
            target = str(arg[0] if isinstance(arg, list) else arg).split(".")[0]
    kind = resources.get(target, {}).get("Type", "")
    name = f"mailfleet-{target or key}"
    if kind in ("AWS::Serverless::Function", "AWS::Lambda::Function"):
        return f"arn:aws:lambda:us-east-1:{ACCOUNT}:function:{name}"
    if kind in ("AWS::Serverless::StateMachine", "AWS::StepFunctions::StateMachine"):
        return f"arn:aws:states:us-east-1:{ACCOUNT}:stateMachine:{name}"
    if kind == "AWS::DynamoDB::Table" and isinstance(value, dict) and "Ref" in value:
        return name
    if kind == "AWS::S3::Bucket" and isinstance(value, dict) and "Ref" in value:
        return name.lower()
    return value if isinstance(value, str) else name


def _filled(path: Path) -> str:
    values = _substitutions().get(str(path.relative_to(REPO)), {})
    return PLACEHOLDER.sub(lambda m: values.get(m.group(1), m.group(0)), path.read_text())


def _lint(definition: dict[str, Any]) -> list[str]:
    template = {
        "AWSTemplateFormatVersion": "2010-09-09",
        "Resources": {
            "StateMachine": {
                "Type": "AWS::StepFunctions::StateMachine",
                "Properties": {
                    "Definition": definition,
                    "RoleArn": f"arn:aws:iam::{ACCOUNT}:role/states",
                },
            }
        },
    }
    matches = lint(json.dumps(template), config=ManualArgs(regions=["us-east-1"]))
    return [f"{m.rule.id}: {m.message}" for m in matches]


def _dangling(states_block: dict[str, Any], where: str = "") -> list[str]:
    """Every StartAt/Next/Default of this block (and of nested Map/Parallel blocks) that
    names no state of the block it belongs to."""
    states = states_block.get("States", {})
    problems = []
    start = states_block.get("StartAt")
    if start not in states:
        problems.append(f"{where}StartAt -> {start!r}")
    for name, state in states.items():
        targets = [("Next", state.get("Next")), ("Default", state.get("Default"))]
        targets += [("Catch.Next", c.get("Next")) for c in state.get("Catch", [])]
        targets += [("Choices.Next", c.get("Next")) for c in state.get("Choices", [])]
        for label, target in targets:
            if target is not None and target not in states:
                problems.append(f"{where}{name}.{label} -> {target!r}")
        if state["Type"] not in ("Choice", "Succeed", "Fail") and not (
            state.get("End") or state.get("Next")
        ):
            problems.append(f"{where}{name}: neither Next nor End")
        for key in ("ItemProcessor", "Iterator"):
            if key in state:
                problems += _dangling(state[key], f"{where}{name}.{key}.")
        for i, branch in enumerate(state.get("Branches", [])):
            problems += _dangling(branch, f"{where}{name}.Branches[{i}].")
    return problems


def test_there_are_definitions() -> None:
    assert DEFINITIONS, "statemachines/*.asl.json"


@pytest.mark.parametrize("path", DEFINITIONS, ids=lambda p: p.name)
def test_substitutions_match_the_template(path: Path) -> None:
    wanted = set(PLACEHOLDER.findall(path.read_text()))
    given = _substitutions().get(str(path.relative_to(REPO)))
    assert given is not None, f"no AWS::Serverless::StateMachine has DefinitionUri {path.name}"
    assert wanted == set(given), f"placeholders {sorted(wanted)} vs substitutions {sorted(given)}"


@pytest.mark.parametrize("path", DEFINITIONS, ids=lambda p: p.name)
def test_cfn_lint_state_machine_schema(path: Path) -> None:
    assert _lint(json.loads(_filled(path))) == []


def test_cfn_lint_check_is_not_vacuous() -> None:
    broken = json.loads(_filled(DEFINITIONS[0]))
    first = broken["StartAt"]
    broken["States"][first]["Type"] = "Taskk"
    assert any(p.startswith("E3601") for p in _lint(broken))


@pytest.mark.parametrize("path", DEFINITIONS, ids=lambda p: p.name)
def test_every_transition_names_a_real_state(path: Path) -> None:
    assert _dangling(json.loads(_filled(path))) == []


def test_dangling_check_sees_nested_states() -> None:
    definition = json.loads(_filled(DEFINITIONS[0]))
    for state in definition["States"].values():
        if "ItemProcessor" in state:
            inner = state["ItemProcessor"]["States"]
            next(s for s in inner.values() if "Next" in s)["Next"] = "Nowhere"
            break
    else:
        pytest.skip("no Map state to break")
    assert any("Nowhere" in p for p in _dangling(definition))


@pytest.mark.parametrize("path", DEFINITIONS, ids=lambda p: p.name)
def test_moto_parses_it(path: Path) -> None:
    from moto.stepfunctions.parser.asl.parse.asl_parser import AmazonStateLanguageParser

    program, _ = AmazonStateLanguageParser.parse(_filled(path))
    assert program is not None
