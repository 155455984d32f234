"""template.yaml passes cfn-lint, and keeps the promises the design makes about it."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

from cfnlint.decode import cfn_yaml

ROOT = Path(__file__).resolve().parents[2]
TEMPLATE = ROOT / "template.yaml"


def test_cfn_lint_passes() -> None:
    lint = Path(sys.executable).with_name("cfn-lint")
    done = subprocess.run([str(lint), str(TEMPLATE)], capture_output=True, text=True,
                          timeout=120, check=False)
    assert done.returncode == 0, done.stdout + done.stderr


def test_tables_are_on_demand_and_the_audit_trail_is_append_only() -> None:
    template = cfn_yaml.load(str(TEMPLATE))
    resources = template["Resources"]
    tables = {k: v for k, v in resources.items() if v["Type"] == "AWS::DynamoDB::Table"}
    assert {"HostsTable", "JobsTable", "AuditTable", "TokensTable", "IdempotencyTable"} <= set(
        tables
    )
    for name, table in tables.items():
        assert table["Properties"]["BillingMode"] == "PAY_PER_REQUEST", name
    assert resources["AuditTable"]["Properties"]["PointInTimeRecoverySpecification"][
        "PointInTimeRecoveryEnabled"
    ]
    # No function may update or delete audit events: PutItem and reads only.
    audit_actions: set[str] = set()
    for resource in resources.values():
        if resource["Type"] != "AWS::Serverless::Function":
            continue
        for policy in resource["Properties"].get("Policies", []):
            if not isinstance(policy, dict):
                continue
            if any("AuditTable" in str(v) for v in policy.values() if not isinstance(v, list)):
                raise AssertionError("a SAM policy template grants access to the audit table")
            for statement in policy.get("Statement", []):
                if "AuditTable" in str(statement.get("Resource")):
                    actions = statement["Action"]
                    audit_actions |= set([actions] if isinstance(actions, str) else actions)
    assert audit_actions, "no function can write the audit trail"
    assert audit_actions <= {"dynamodb:PutItem", "dynamodb:GetItem", "dynamodb:Query"}


def test_runtime_is_python312_everywhere() -> None:
    template = cfn_yaml.load(str(TEMPLATE))
    assert template["Globals"]["Function"]["Runtime"] == "python3.12"
    for name, resource in template["Resources"].items():
        if resource["Type"] == "AWS::Serverless::Function":
            assert resource["Properties"].get("Runtime", "python3.12") == "python3.12", name
