"""What the benchmarks share: the embedded AWS with template.yaml deployed, a simulated
fleet registered in the inventory, and a count of every AWS API call made in a process."""

from __future__ import annotations

import json
import logging
import os
import secrets
import sys
import threading
import time
import warnings
from collections import Counter
from pathlib import Path
from typing import Any

from bench.fleet import COMMANDS_FILE, DEFAULT_API_KEY, FleetProcess

REPO = Path(__file__).resolve().parents[1]
TEMPLATE = REPO / "template.yaml"
# The simulated fleet's one doveadm API key, and the secret (its name) that holds it.
FLEET_SECRET_NAME = "bench-fleet"  # noqa: S105 - a name, not a value
FLEET_KEY = DEFAULT_API_KEY

# DynamoDB operations that write (each one request, whatever it carries).
DYNAMODB_WRITES = frozenset(
    {"PutItem", "UpdateItem", "DeleteItem", "BatchWriteItem", "TransactWriteItems"}
)


class _WithoutMetricLines:
    """stdout without Powertools' EMF lines: with metrics disabled it still prints one when
    a metric reaches 100 values, which a long Distributed Map run in this process does."""

    def __init__(self, stream: Any) -> None:
        self._stream = stream

    def write(self, text: str) -> int:
        if text.startswith('{"_aws"'):
            return len(text)
        return self._stream.write(text)

    def __getattr__(self, name: str) -> Any:
        return getattr(self._stream, name)


def quiet() -> None:
    """Keep the report readable: no EMF metric lines, no INFO logs from the functions."""
    if not isinstance(sys.stdout, _WithoutMetricLines):
        sys.stdout = _WithoutMetricLines(sys.stdout)  # type: ignore[assignment]
    os.environ["POWERTOOLS_METRICS_DISABLED"] = "true"
    os.environ["POWERTOOLS_TRACE_DISABLED"] = "true"
    os.environ["POWERTOOLS_LOG_LEVEL"] = "WARNING"
    warnings.filterwarnings("ignore", message="No application metrics to publish")
    for name in ("moto", "werkzeug", "mailfleet-local", "botocore", "urllib3"):
        logging.getLogger(name).setLevel(logging.ERROR)


class AwsCalls:
    """Every AWS API call made in this process, by (service, operation): a hook on the one
    method every botocore client call goes through, so clients made anywhere (ours,
    Powertools', moto's Step Functions interpreter) are all counted."""

    def __init__(self) -> None:
        self.counts: Counter[tuple[str, str]] = Counter()
        self._lock = threading.Lock()
        self._original: Any = None

    def install(self) -> AwsCalls:
        from botocore.client import BaseClient

        original = BaseClient._make_api_call
        calls = self

        def counted(client: Any, operation: str, params: Any) -> Any:
            with calls._lock:
                calls.counts[(client.meta.service_model.service_name, operation)] += 1
            return original(client, operation, params)

        self._original = original
        BaseClient._make_api_call = counted  # type: ignore[method-assign]
        return self

    def snapshot(self) -> Counter[tuple[str, str]]:
        with self._lock:
            return Counter(self.counts)


def summarize(calls: Counter[tuple[str, str]]) -> dict[str, Any]:
    dynamo = {op: n for (service, op), n in calls.items() if service == "dynamodb"}
    return {
        "dynamodb_writes": sum(n for op, n in dynamo.items() if op in DYNAMODB_WRITES),
        "dynamodb_reads": sum(n for op, n in dynamo.items() if op not in DYNAMODB_WRITES),
        "dynamodb": dynamo,
        "lambda_invokes": calls.get(("lambda", "Invoke"), 0),
        "other": {f"{s}:{op}": n for (s, op), n in calls.items() if s not in ("dynamodb",)},
    }


class BenchStack:
    """template.yaml deployed into moto in this process, and a fleet in the inventory."""

    def __init__(self) -> None:
        self.aws: Any = None
        self.deployment: Any = None
        self.fleet: FleetProcess | None = None
        self.ids: list[str] = []
        self.admin_token = ""

    def start(self) -> BenchStack:
        from mailfleet_local import dynamodb_process
        from mailfleet_local.stack import LocalAws

        quiet()
        self.aws = LocalAws(dynamodb_apart=dynamodb_process.for_a_run()).start()
        self.admin_token = secrets.token_urlsafe(32)
        self.deployment = self.aws.deploy(
            TEMPLATE,
            parameter_overrides={"LogLevel": "WARNING"},
            secret_values={"AdminTokenSecret": self.admin_token},
        )
        quiet()  # the deploy applied the functions' environment
        self.forget_caches()
        return self

    @staticmethod
    def forget_caches() -> None:
        import mailfleet.aws

        mailfleet.aws.reset()

    def register_fleet(self, fleet: FleetProcess, count: int) -> float:
        """`count` hosts written straight into the inventory table; returns the seconds."""
        from mailfleet import aws
        from mailfleet.config import SecretSettings, Tables
        from mailfleet.logic.connect import pack_commands

        began = time.monotonic()
        self.fleet = fleet
        name = f"{SecretSettings().host_secrets_prefix}{FLEET_SECRET_NAME}"
        aws.client("secretsmanager").create_secret(
            Name=name, SecretString=json.dumps({"api_key": FLEET_KEY})
        )
        # As a first job would leave them: each host's command list cached in its item.
        commands = {"fetched_at": int(time.time()),
                    "commands_gz": pack_commands(json.loads(COMMANDS_FILE.read_text()))}
        self.ids = [f"bench-{i:05d}" for i in range(count)]
        with aws.table(Tables().hosts_table).batch_writer() as batch:
            for i, host_id in enumerate(self.ids):
                batch.put_item(Item={
                    "id": host_id, "kind": "dovecot", "endpoint": fleet.endpoint(i),
                    "tls": {"verify": True}, "tags": {"bench": "fleet"},
                    "max_concurrency": 4, "maintenance": False, "credentials_secret": name,
                    "doveadm_commands": commands,
                })
        return time.monotonic() - began

    def stop(self) -> None:
        if self.aws is not None:
            self.aws.stop()
            self.aws = None
