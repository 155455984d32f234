"""The local stack's faster moto paths (mailfleet_local.moto_speed) against the pinned
moto itself: every DynamoDB answer byte for byte as moto's own serializer writes it, and
the memoized routing choosing the backend moto's dispatcher chooses."""

from __future__ import annotations

import json
from collections.abc import Iterator
from decimal import Decimal
from typing import Any

import boto3
import pytest
from moto import mock_aws
from moto.core import serialize
from moto.dynamodb import responses
from moto.dynamodb.models import utilities

from mailfleet_local import moto_speed

ITEM: dict[str, Any] = {
    "pk": "job-1", "sk": "host#a", "s": "text", "empty": "", "n": Decimal("12.50"),
    "neg": -3, "b": b"\x00\xffbytes", "t": True, "f": False, "null": None,
    "ss": {"x", "y"}, "ns": {1, 2}, "bs": {b"a", b"\x01"},
    "m": {"inner": {"deep": ["l", 1, {"k": b"v"}], "flag": None}, "tags": {"a": "1"}},
    "l": ["a", 2, True, None, {"x": [b"z"]}, {"set": {"q"}}], "empty_m": {}, "empty_l": [],
}


@pytest.fixture()
def table(monkeypatch: pytest.MonkeyPatch) -> Iterator[Any]:
    # moto in this process, not the DynamoDB process a running LocalAws points clients at.
    monkeypatch.delenv("AWS_ENDPOINT_URL_DYNAMODB", raising=False)
    moto_speed.install()
    with mock_aws():
        resource = boto3.resource("dynamodb", region_name="us-east-1")
        table = resource.create_table(
            TableName="t", BillingMode="PAY_PER_REQUEST",
            KeySchema=[{"AttributeName": "pk", "KeyType": "HASH"},
                       {"AttributeName": "sk", "KeyType": "RANGE"}],
            AttributeDefinitions=[{"AttributeName": "pk", "AttributeType": "S"},
                                  {"AttributeName": "sk", "AttributeType": "S"}])
        for i in range(3):
            table.put_item(Item={**ITEM, "sk": f"host#{i}"})
        yield table


def _bodies(client: Any, call: Any) -> list[bytes]:
    seen: list[bytes] = []

    def keep(response_dict: dict[str, Any], **_: Any) -> None:
        seen.append(response_dict["body"])

    client.meta.events.register("before-parse.dynamodb.*", keep)
    try:
        call()
    finally:
        client.meta.events.unregister("before-parse.dynamodb.*", keep)
    return seen


CALLS = {
    "GetItem": lambda c: c.get_item(TableName="t", Key={"pk": {"S": "job-1"},
                                                        "sk": {"S": "host#1"}}),
    "Query": lambda c: c.query(TableName="t", KeyConditionExpression="pk = :p",
                               ExpressionAttributeValues={":p": {"S": "job-1"}}),
    "Scan": lambda c: c.scan(TableName="t"),
    "BatchGetItem": lambda c: c.batch_get_item(RequestItems={"t": {"Keys": [
        {"pk": {"S": "job-1"}, "sk": {"S": f"host#{i}"}} for i in range(3)]}}),
    "UpdateItem": lambda c: c.update_item(
        TableName="t", Key={"pk": {"S": "job-1"}, "sk": {"S": "host#2"}},
        UpdateExpression="SET s = :s", ExpressionAttributeValues={":s": {"S": "new"}},
        ReturnValues="ALL_OLD"),
    "TransactGetItems": lambda c: c.transact_get_items(TransactItems=[
        {"Get": {"TableName": "t", "Key": {"pk": {"S": "job-1"}, "sk": {"S": "host#0"}}}}]),
    "DescribeTable": lambda c: c.describe_table(TableName="t"),
    "ConditionalCheckFailed": lambda c: c.put_item(
        TableName="t", Item={"pk": {"S": "job-1"}, "sk": {"S": "host#0"}},
        ConditionExpression="attribute_not_exists(pk)",
        ReturnValuesOnConditionCheckFailure="ALL_OLD"),
}


@pytest.mark.parametrize("operation", list(CALLS))
def test_answers_are_what_moto_itself_writes(table: Any, operation: str) -> None:
    client = boto3.client("dynamodb", region_name="us-east-1")  # no resource transforms
    ours = moto_speed.dynamodb_serializer()
    assert serialize.get_serializer_class("dynamodb", "json") is ours
    assert responses.dynamo_to_dict is moto_speed.plain

    def call() -> None:
        try:
            CALLS[operation](client)
        except client.exceptions.ConditionalCheckFailedException:
            pass

    fast = _bodies(client, call)
    del serialize.SERVICE_SPECIFIC_SERIALIZERS["dynamodb"]
    responses.dynamo_to_dict = utilities.dynamo_to_dict
    try:
        table.put_item(Item={**ITEM, "sk": "host#2"})  # what UpdateItem changed
        slow = _bodies(client, call)
    finally:
        serialize.SERVICE_SPECIFIC_SERIALIZERS["dynamodb"] = {"json": ours}
        responses.dynamo_to_dict = moto_speed.plain
    assert fast and len(fast) == len(slow)
    if operation == "DescribeTable":  # only its timestamps may differ (none of ours)
        assert json.loads(fast[0])["Table"]["TableName"] == "t"
        return
    assert fast == slow
    assert b'"B": "AP9ieXRlcw=="' in fast[0] or operation != "GetItem"


def test_attribute_values_moto_does_not_write_plainly_go_to_moto() -> None:
    for odd in ({"S": "a", "N": "1"}, {"S": None}, {"X": 1}, "S"):
        with pytest.raises(moto_speed._NotWireForm):
            moto_speed.attribute_value(odd)


def test_routing_is_moto_s_own_choice() -> None:
    from moto.moto_server.werkzeug_app import DomainDispatcherApplication
    from moto.server import create_backend_app

    moto_speed.install()
    app = DomainDispatcherApplication(create_backend_app)
    hosts = ["dynamodb.us-east-1.amazonaws.com", "states.eu-west-1.amazonaws.com",
             "s3.amazonaws.com", "bucket.s3.amazonaws.com", "lambda.us-east-1.amazonaws.com",
             "moto_api", "dynamodb", None, "nothing.example"]
    original = moto_speed._original_backend_for_host
    for host in hosts:
        assert app.get_backend_for_host(host) == original(app, host), host
        assert app.get_backend_for_host(host) == original(app, host), host
