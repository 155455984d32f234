"""DynamoDB in a process of its own (mailfleet_local.dynamodb_process): it serves, it is
wiped on reset, it stops with its parent's stdin; with MAILFLEET_LOCAL_DYNAMODB=process a
LocalAws points every client at it, and the deployment's tables live there, not in this
process's moto (run tests/local with that variable set to check that way)."""

from __future__ import annotations

import os

import boto3
import pytest

from mailfleet_local.dynamodb_process import DynamoDBProcess
from mailfleet_local.stack import LocalAws
from tests.fixtures.stack import shared_local_api


def test_it_serves_resets_and_stops() -> None:
    process = DynamoDBProcess().start()
    try:
        ddb = boto3.client("dynamodb", endpoint_url=process.url, region_name="us-east-1",
                           aws_access_key_id="testing", aws_secret_access_key="testing")
        ddb.create_table(TableName="t", BillingMode="PAY_PER_REQUEST",
                         KeySchema=[{"AttributeName": "pk", "KeyType": "HASH"}],
                         AttributeDefinitions=[{"AttributeName": "pk", "AttributeType": "S"}])
        ddb.put_item(TableName="t", Item={"pk": {"S": "a"}, "m": {"M": {"b": {"B": b"\x00"}}}})
        item = ddb.get_item(TableName="t", Key={"pk": {"S": "a"}})["Item"]
        assert item == {"pk": {"S": "a"}, "m": {"M": {"b": {"B": b"\x00"}}}}
        assert process.cpu_seconds() > 0
        process.reset()
        assert ddb.list_tables()["TableNames"] == []
        pid = process._process.pid  # type: ignore[union-attr]
    finally:
        process.stop()
    assert not os.path.exists(f"/proc/{pid}") or "zombie" in open(f"/proc/{pid}/status").read()


def test_a_local_aws_sends_dynamodb_where_it_runs() -> None:
    api = shared_local_api()
    api.ensure_deployed()
    aws: LocalAws = api.aws
    if os.environ.get("MAILFLEET_LOCAL_DYNAMODB") != "process":  # the default
        assert aws.endpoint_for("dynamodb") == aws.endpoint_url
        assert "AWS_ENDPOINT_URL_DYNAMODB" not in os.environ
        assert aws.is_deployed(api.deployment)
        return
    from moto.dynamodb.models import dynamodb_backends

    assert aws.endpoint_for("dynamodb") != aws.endpoint_url
    assert os.environ["AWS_ENDPOINT_URL_DYNAMODB"] == aws.endpoint_for("dynamodb")
    tables = [r.name for r in api.deployment.resources.values()
              if r.type == "AWS::DynamoDB::Table"]
    assert tables and set(tables) <= set(aws.client("dynamodb").list_tables()["TableNames"])
    assert not set(tables) & set(dynamodb_backends[aws.account_id][aws.region].tables)
    assert aws.is_deployed(api.deployment)


def test_make_run_and_the_benchmarks_serve_dynamodb_apart_unless_told_thread(
        monkeypatch: pytest.MonkeyPatch) -> None:
    from mailfleet_local.dynamodb_process import for_a_run

    monkeypatch.delenv("MAILFLEET_LOCAL_DYNAMODB", raising=False)
    assert for_a_run()
    monkeypatch.setenv("MAILFLEET_LOCAL_DYNAMODB", "thread")
    assert not for_a_run()
    monkeypatch.setenv("MAILFLEET_LOCAL_DYNAMODB", "process")
    assert for_a_run()
