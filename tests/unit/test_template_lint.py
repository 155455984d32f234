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


def _audit_statements() -> dict[str, list[dict]]:
    """Each function's policy statements that name the audit table or its signing key."""
    resources = cfn_yaml.load(str(TEMPLATE))["Resources"]
    found: dict[str, list[dict]] = {}
    for name, resource in resources.items():
        if resource["Type"] != "AWS::Serverless::Function":
            continue
        for policy in resource["Properties"].get("Policies", []):
            for statement in policy.get("Statement", []) if isinstance(policy, dict) else []:
                if any(k in str(statement.get("Resource")) for k in ("AuditTable",
                                                                     "AuditSigningKey")):
                    found.setdefault(name, []).append(statement)
    return found


def _actions(statement: dict) -> set[str]:
    actions = statement["Action"]
    return set([actions] if isinstance(actions, str) else actions)


def test_audit_writes_are_puts_alone() -> None:
    """Whoever may write the audit table may only put: no update, no delete."""
    for name, statements in _audit_statements().items():
        for statement in statements:
            if "dynamodb:PutItem" in _actions(statement):
                assert _actions(statement) == {"dynamodb:PutItem"}, name


def test_only_the_sealer_may_sign_and_the_key_is_asymmetric() -> None:
    resources = cfn_yaml.load(str(TEMPLATE))["Resources"]
    key = resources["AuditSigningKey"]["Properties"]
    assert (key["KeySpec"], key["KeyUsage"]) == ("ECC_NIST_P256", "SIGN_VERIFY")
    kms = {name: set().union(*(_actions(s) for s in statements if any(
        a.startswith("kms:") for a in _actions(s))))
        for name, statements in _audit_statements().items()}
    signers = [name for name, actions in kms.items() if "kms:Sign" in actions]
    assert signers == ["AuditSealerFunction"]
    assert kms["ApiFunction"] == {"kms:GetPublicKey"}  # verification: the public key only
    assert all(a in ("kms:Sign", "kms:GetPublicKey") for acts in kms.values() for a in acts)
    sealer = resources["AuditSealerFunction"]["Properties"]
    assert sealer["Events"]["AuditSeal"]["Type"] == "Schedule"
    assert "dynamodb:DeleteItem" not in str(sealer["Policies"])


def test_runtime_is_python312_everywhere() -> None:
    template = cfn_yaml.load(str(TEMPLATE))
    assert template["Globals"]["Function"]["Runtime"] == "python3.12"
    for name, resource in template["Resources"].items():
        if resource["Type"] == "AWS::Serverless::Function":
            assert resource["Properties"].get("Runtime", "python3.12") == "python3.12", name
