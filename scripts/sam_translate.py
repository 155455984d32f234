"""Expand template.yaml as SAM does at deploy time (policy templates become IAM statements,
each function gets its role) and write the CloudFormation template as JSON.

Runs in the SAM CLI's own virtualenv (`make build`), which has aws-sam-translator:
    .venv-sam/bin/python scripts/sam_translate.py template.yaml .aws-sam/translated.json
Nothing is sent anywhere: managed policies named by ARN stay ARNs.
"""

from __future__ import annotations

import hashlib
import json
import os
import sys
from pathlib import Path

from samcli.yamlhelper import yaml_parse
from samtranslator.translator.transform import transform


class _NoManagedPolicies:
    """The translator asks IAM for managed policy ARNs only when a policy is given by
    name; the template gives none (a name would fail here, which is what we want)."""

    def load(self) -> dict[str, str]:
        return {}


def _packaged(template: dict) -> dict:
    """Local code paths stand for the S3 objects `sam deploy` would upload (as `sam
    validate` does): the translator accepts only S3 URIs."""
    for resource in template.get("Resources", {}).values():
        props = resource.get("Properties") or {}
        for key in ("CodeUri", "ContentUri", "DefinitionUri"):
            if isinstance(props.get(key), str) and not props[key].startswith("s3://"):
                props[key] = f"s3://packaged/{props[key]}"
    return template


def main(source: str, target: str) -> None:
    text = Path(source).read_text()
    os.environ.setdefault("AWS_DEFAULT_REGION", "us-east-1")
    translated = transform(_packaged(yaml_parse(text)), {}, _NoManagedPolicies())
    translated["x-mailfleet-template-sha256"] = hashlib.sha256(text.encode()).hexdigest()
    Path(target).write_text(json.dumps(translated, indent=1, sort_keys=True))


if __name__ == "__main__":
    main(sys.argv[1], sys.argv[2])
