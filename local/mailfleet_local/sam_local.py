"""The `--env-vars` file for the SAM CLI's local invocation (`sam local invoke` and
`sam local start-api`, which need Docker): every function of the template pointed at
`make run`'s embedded AWS. `make run` writes it to .aws-sam/env-vars.json.

    sam local invoke ApiFunction -e events/api/whoami.json \\
        --env-vars .aws-sam/env-vars.json --docker-network host
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from mailfleet_local.stack import FAKE_CREDENTIALS, Deployment

ENV_VARS_FILE = Path(".aws-sam") / "env-vars.json"


def env_vars(deployment: Deployment, endpoint_url: str,
             dynamodb_url: str | None = None) -> dict[str, dict[str, str]]:
    """{function logical id: {variable: value}}: the template's variables with the names
    the local deployment gave, and the embedded AWS as every client's endpoint (DynamoDB's
    own when it runs in a process of its own)."""
    aws = {
        "AWS_ENDPOINT_URL": endpoint_url,
        **({"AWS_ENDPOINT_URL_DYNAMODB": dynamodb_url} if dynamodb_url else {}),
        "AWS_DEFAULT_REGION": deployment.region,
        "AWS_REGION": deployment.region,
        **{key.upper(): value for key, value in FAKE_CREDENTIALS.items()},
    }
    return {logical_id: {**info.environment, **aws}
            for logical_id, info in sorted(deployment.functions.items())}


def write(deployment: Deployment, endpoint_url: str, path: Path = ENV_VARS_FILE,
          dynamodb_url: str | None = None) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    variables = env_vars(deployment, endpoint_url, dynamodb_url)
    path.write_text(json.dumps(variables, indent=2) + "\n")
    return path


def read(path: Path = ENV_VARS_FILE) -> dict[str, Any]:
    return dict(json.loads(path.read_text()))
