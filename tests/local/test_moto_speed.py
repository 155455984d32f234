"""The local stack's faster moto paths (mailfleet_local.moto_speed) against the pinned
moto itself: every DynamoDB answer byte for byte as moto's own code writes it (every
Query option and page), requests parsed as moto parses them, the same item sizes and
size limit, a Query reading only its partition, and the memoized routing choosing the
backend moto's dispatcher chooses."""

from __future__ import annotations

import contextlib
import copy
import functools
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
    with moto_speed.moto_itself():
        assert serialize.get_serializer_class("dynamodb", "json") is not ours
        assert responses.dynamo_to_dict is utilities.dynamo_to_dict
        table.put_item(Item={**ITEM, "sk": "host#2"})  # what UpdateItem changed
        slow = _bodies(client, call)
    assert serialize.get_serializer_class("dynamodb", "json") is ours
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


# --- Query over one partition, request parsing and item sizes, against moto itself -----

KEYS = [{"AttributeName": "pk", "KeyType": "HASH"}, {"AttributeName": "sk", "KeyType": "RANGE"}]


@pytest.fixture()
def client(monkeypatch: pytest.MonkeyPatch) -> Iterator[Any]:
    """Tables of several partitions: `r` (S hash, N range, an index), `h` (N hash only)."""
    monkeypatch.delenv("AWS_ENDPOINT_URL_DYNAMODB", raising=False)
    moto_speed.install()
    with mock_aws():
        client = boto3.client("dynamodb", region_name="us-east-1")
        client.create_table(
            TableName="r", BillingMode="PAY_PER_REQUEST", KeySchema=KEYS,
            AttributeDefinitions=[{"AttributeName": "pk", "AttributeType": "S"},
                                  {"AttributeName": "sk", "AttributeType": "N"},
                                  {"AttributeName": "state", "AttributeType": "S"}],
            GlobalSecondaryIndexes=[{
                "IndexName": "by-state", "Projection": {"ProjectionType": "ALL"},
                "KeySchema": [{"AttributeName": "state", "KeyType": "HASH"},
                              {"AttributeName": "sk", "KeyType": "RANGE"}]}])
        client.create_table(
            TableName="h", BillingMode="PAY_PER_REQUEST",
            KeySchema=[{"AttributeName": "pk", "KeyType": "HASH"}],
            AttributeDefinitions=[{"AttributeName": "pk", "AttributeType": "N"}])
        resource = boto3.resource("dynamodb", region_name="us-east-1")
        with resource.Table("r").batch_writer() as batch:
            # Written out of order, the partitions interleaved; job-big holds ~2.6 MB.
            for sk in (7, 3, 11, 0, 5, 1, 9, 2, 10, 4, 8, 6):
                for pk in ("job-a", "job-b", "job-c"):
                    batch.put_item(Item={**ITEM, "pk": pk, "sk": sk,
                                         "state": "ok" if sk % 3 else "failed",
                                         "tags": {"n": sk, "odd": bool(sk % 2)}})
            for sk in range(260):
                batch.put_item(Item={"pk": "job-big", "sk": sk, "state": "ok",
                                     "blob": "x" * 10_000})
        for pk in ("1", "2.50", "3"):
            client.put_item(TableName="h", Item={"pk": {"N": pk}, "v": {"S": pk}})
        yield client


def _query_pages(client: Any, **request: Any) -> list[bytes]:
    """Every page of a query, as moto wrote it, following LastEvaluatedKey."""
    bodies: list[bytes] = []
    for _ in range(20):
        body = _bodies(client, functools.partial(client.query, **request))[-1]
        bodies.append(body)
        last = json.loads(body).get("LastEvaluatedKey")
        if last is None:
            return bodies
        request = {**request, "ExclusiveStartKey": last}
    raise AssertionError("more than 20 pages")


def _job(value: str = "job-b", **more: Any) -> dict[str, Any]:
    return {"TableName": "r", "KeyConditionExpression": "pk = :p",
            "ExpressionAttributeValues": {":p": {"S": value}}, **more}


def _range(condition: str, *values: int, **more: Any) -> dict[str, Any]:
    names = {f":v{i}": {"N": str(value)} for i, value in enumerate(values)}
    return {"TableName": "r", "KeyConditionExpression": f"pk = :p AND {condition}".format(*names),
            "ExpressionAttributeValues": {":p": {"S": "job-c"}, **names}, **more}


QUERIES: dict[str, dict[str, Any]] = {
    "partition": _job(),
    "other partition": _job("job-a"),
    "no such partition": _job("job-z"),
    "backwards": _job(ScanIndexForward=False),
    "limit": _job(Limit=5),
    "limit backwards": _job(Limit=4, ScanIndexForward=False),
    "start key": _job(ExclusiveStartKey={"pk": {"S": "job-b"}, "sk": {"N": "4"}}),
    "start key backwards": _job(ExclusiveStartKey={"pk": {"S": "job-b"}, "sk": {"N": "4"}},
                                ScanIndexForward=False),
    "sk =": _range("sk = {}", 5),
    "sk <": _range("sk < {}", 5),
    "sk <=": _range("sk <= {}", 5),
    "sk >": _range("sk > {}", 5, ScanIndexForward=False),
    "sk >=": _range("sk >= {}", 5, Limit=3),
    "sk between": _range("sk BETWEEN {} AND {}", 2, 8),
    "filter": _job(FilterExpression="#s = :f", ExpressionAttributeNames={"#s": "state"},
                   ExpressionAttributeValues={":p": {"S": "job-b"}, ":f": {"S": "ok"}}),
    "filter and limit": _job(FilterExpression="tags.odd = :t", Limit=5,
                             ExpressionAttributeValues={":p": {"S": "job-b"},
                                                        ":t": {"BOOL": True}}),
    "projection": _job(ProjectionExpression="sk, m.inner.deep[0], #s, l[4]",
                       ExpressionAttributeNames={"#s": "state"}),
    "count": _job(Select="COUNT"),
    "count filtered": _job(Select="COUNT", FilterExpression="sk > :n",
                           ExpressionAttributeValues={":p": {"S": "job-b"},
                                                      ":n": {"N": "6"}}),
    "consistent": _job(ConsistentRead=True, ReturnConsumedCapacity="TOTAL"),
    "1 MB pages": _job("job-big"),
    "1 MB pages backwards": _job("job-big", ScanIndexForward=False),
    "1 MB pages, limit": _job("job-big", Limit=70),
    "key conditions": {"TableName": "r", "KeyConditions": {
        "pk": {"ComparisonOperator": "EQ", "AttributeValueList": [{"S": "job-a"}]},
        "sk": {"ComparisonOperator": "GT", "AttributeValueList": [{"N": "3"}]}}},
    "key conditions, begins_with none": {"TableName": "r", "KeyConditions": {
        "pk": {"ComparisonOperator": "EQ", "AttributeValueList": [{"S": "job-a"}]}},
        "QueryFilter": {"state": {"ComparisonOperator": "EQ",
                                  "AttributeValueList": [{"S": "failed"}]}}},
    "number key, another spelling": {"TableName": "h", "KeyConditionExpression": "pk = :p",
                                     "ExpressionAttributeValues": {":p": {"N": "2.5"}}},
    "number key, missing": {"TableName": "h", "KeyConditionExpression": "pk = :p",
                            "ExpressionAttributeValues": {":p": {"N": "4"}}},
    **{f"key of another type ({kind})": {
        "TableName": "h", "KeyConditionExpression": "pk = :p",
        "ExpressionAttributeValues": {":p": value}}
       for kind, value in (("S", {"S": "1"}), ("M", {"M": {"x": {"S": "1"}}}),
                           ("L", {"L": [{"N": "1"}]}), ("NS", {"NS": ["1"]}),
                           ("BOOL", {"BOOL": True}), ("NULL", {"NULL": True}))},
    "index (moto's own path)": {"TableName": "r", "IndexName": "by-state",
                                "KeyConditionExpression": "#s = :s", "Limit": 7,
                                "ExpressionAttributeNames": {"#s": "state"},
                                "ExpressionAttributeValues": {":s": {"S": "failed"}}},
}


@pytest.mark.parametrize("name", list(QUERIES))
def test_query_answers_every_page_as_moto_does(client: Any, name: str) -> None:
    fast = _query_pages(client, **QUERIES[name])
    with moto_speed.moto_itself():
        slow = _query_pages(client, **QUERIES[name])
    assert fast == slow
    if name.startswith("1 MB"):  # pages cut by size, not by count
        assert len(fast) >= 3 and all(b'"LastEvaluatedKey"' in page for page in fast[:-1])
    if name in ("partition", "consistent"):
        assert json.loads(fast[0])["Count"] == 12


def test_a_query_on_a_missing_key_adds_no_partition(client: Any) -> None:
    from moto.dynamodb.models import dynamodb_backends

    table = dynamodb_backends["123456789012"]["us-east-1"].tables["r"]
    before = len(table.items)
    client.query(**_job("job-z"))
    assert len(table.items) == before


def test_a_query_reads_only_its_partition(monkeypatch: pytest.MonkeyPatch,
                                          client: Any) -> None:
    """The work of a query on 1,000 results does not grow with the table's other items:
    moto's candidates are the partition, and it compares as many keys either way."""
    from moto.dynamodb.models import dynamodb_backends
    from moto.dynamodb.models.dynamo_type import DynamoType
    from moto.dynamodb.models.table import Table

    table = dynamodb_backends["123456789012"]["us-east-1"].tables["r"]
    resource = boto3.resource("dynamodb", region_name="us-east-1")

    def fill(pk: str, count: int) -> None:
        with resource.Table("r").batch_writer() as batch:
            for sk in range(count):
                batch.put_item(Item={"pk": pk, "sk": sk, "state": "ok"})

    candidates: list[int] = []
    moto_all_items = Table.all_items
    monkeypatch.setattr(Table, "all_items", lambda self: candidates.append(-1)
                        or moto_all_items(self))
    monkeypatch.setattr(moto_speed._OnePartition, "all_items",
                        lambda self: candidates.append(len(self._items)) or self._items)
    comparisons = [0]
    equal = DynamoType.__eq__

    def counted(self: Any, other: Any) -> bool:
        comparisons[0] += 1
        return equal(self, other)

    monkeypatch.setattr(DynamoType, "__eq__", counted)

    def work() -> tuple[list[int], int]:
        candidates.clear()
        comparisons[0] = 0
        pages = _query_pages(client, **_job("job-results"))
        assert sum(json.loads(page)["Count"] for page in pages) == 1000
        return list(candidates), comparisons[0]

    fill("job-results", 1000)
    alone = work()
    for job in range(10):
        fill(f"job-other-{job}", 1000)
    assert len(table.all_items()) > 11_000
    beside_10_000 = work()
    assert alone == beside_10_000
    assert alone[0] == [1000]  # one page, 1,000 candidates, moto's full walk never called
    assert alone[1] <= 1001  # a key comparison per candidate, and the partition's lookup
    with moto_speed.moto_itself():  # moto's own: every item of the table, every time
        walked, compared = work()
    assert walked == [-1] and compared > 11_000


def _parse(parser_cls: type, operation: str, body: dict[str, Any]) -> dict[str, Any]:
    from moto.core.utils import get_service_model

    model = get_service_model("dynamodb").operation_model(operation)
    return parser_cls(model).parse({"body": json.dumps(body).encode(), "method": "POST",
                                    "values": {}, "headers": {}, "url_path": "/",
                                    "url_params": {}})


WIRE_ITEM = {
    "pk": {"S": "job-1"}, "sk": {"N": "1"}, "s": {"S": ""}, "t": {"BOOL": True},
    "f": {"BOOL": False}, "null": {"NULL": True}, "ss": {"SS": ["x", "y"]},
    "ns": {"NS": ["1", "2.5"]}, "b": {"B": "AP9ieXRlcw=="}, "bs": {"BS": ["YQ==", "AQ=="]},
    "m": {"M": {"inner": {"M": {"deep": {"L": [{"S": "l"}, {"N": "1"},
                                               {"M": {"k": {"B": "dg=="}}}]},
                                "flag": {"NULL": True}}},
                "tags": {"M": {"a": {"S": "1"}}}, "empty": {"M": {}}}},
    "l": {"L": [{"S": "a"}, {"N": "2"}, {"L": []}, {"M": {"x": {"SS": ["q"]}}}]},
    # Not plain attribute values: moto's parser decides what they become.
    "two": {"S": "a", "N": "1"}, "unknown": {"X": "1"}, "none": {"S": None},
    "empty": {}, "null_in_map": {"M": {"a": None}}, "not_a_list": {"SS": "abc"},
}


@pytest.mark.parametrize(("operation", "body"), [
    ("PutItem", {"TableName": "r", "Item": WIRE_ITEM,
                 "ExpressionAttributeValues": {":v": {"N": "1"}, ":m": WIRE_ITEM["m"]}}),
    ("BatchWriteItem", {"RequestItems": {"r": [{"PutRequest": {"Item": WIRE_ITEM}},
                                               {"DeleteRequest": {"Key": {"pk": {"S": "a"}}}}]}}),
    ("BatchGetItem", {"RequestItems": {"r": {"Keys": [{"pk": {"S": "a"}, "sk": {"N": "1"}},
                                                      {"pk": {"B": "YQ=="}}]}}}),
    ("Query", {"TableName": "r", "KeyConditions": {"pk": {
        "ComparisonOperator": "EQ", "AttributeValueList": [{"S": "a"}, WIRE_ITEM["l"]]}},
        "ExclusiveStartKey": {"pk": {"S": "a"}, "sk": {"N": "1"}}}),
    ("TransactWriteItems", {"TransactItems": [
        {"Put": {"TableName": "r", "Item": WIRE_ITEM}},
        {"Update": {"TableName": "r", "Key": {"pk": {"S": "a"}}, "UpdateExpression": "SET a = :a",
                    "ExpressionAttributeValues": {":a": WIRE_ITEM["m"]}}}]}),
])
def test_requests_are_parsed_as_moto_parses_them(operation: str, body: dict[str, Any]) -> None:
    from moto.core.parse import JSONParser

    ours = _parse(moto_speed.dynamodb_parser(), operation, body)
    assert ours == _parse(JSONParser, operation, body)
    assert repr(ours) == repr(_parse(JSONParser, operation, body))  # same key order


def test_item_sizes_and_the_size_limit_are_moto_s() -> None:
    from moto.dynamodb.exceptions import ItemSizeTooLarge
    from moto.dynamodb.models.dynamo_type import DynamoType, Item, LimitedSizeDict

    moto_speed.install()
    attrs = {k: v for k, v in WIRE_ITEM.items()
             if k not in ("two", "unknown", "none", "empty", "null_in_map", "not_a_list")}
    attrs["b"] = {"B": b"\x00\xffbytes"}
    attrs["bs"] = {"BS": [b"a", b"\x01"]}
    attrs["ü"] = {"S": "ünïcode"}
    fast = Item(DynamoType(attrs["pk"]), DynamoType(attrs["sk"]), attrs)
    with moto_speed.moto_itself():
        slow = Item(DynamoType(attrs["pk"]), DynamoType(attrs["sk"]), attrs)
        moto_sizes = {k: v.size() for k, v in slow.attrs.items()}
        moto_total = slow.size()
    assert type(fast.attrs) is LimitedSizeDict and fast == slow
    assert list(fast.attrs) == list(slow.attrs)
    assert {k: v.size() for k, v in fast.attrs.items()} == moto_sizes
    assert fast.size() == moto_total > 0

    # The 405,000-byte limit: the same item fits or not, both ways.
    for length in (404_000, 405_000 - 9 - 1 - 2, 405_000 - 9 - 1 - 1, 406_000):
        big = {"pk": {"S": "p"}, "sk": {"N": "1"}, "blob": {"S": "x" * length}}
        outcomes = []
        for own in (False, True):
            with moto_speed.moto_itself() if own else contextlib.nullcontext():
                try:
                    outcomes.append(Item(DynamoType(big["pk"]), None, big).size())
                except ItemSizeTooLarge:
                    outcomes.append(-1)
        assert outcomes[0] == outcomes[1], length


@pytest.mark.parametrize("body", [
    '{"Items": [{"s": {"S": "RequestId"}}]}', "", b'{"a": 1}',
    '{"s": {"S": "<RequestId>x</RequestId>"}}', "<R><RequestId>old</RequestId></R>"])
def test_responses_are_enriched_as_moto_does(body: str | bytes) -> None:
    from moto.core.responses import BaseResponse
    from moto.dynamodb.responses import DynamoHandler

    moto_speed.install()
    ours_headers, ours = DynamoHandler._enrich_response({"status": 200}, body)
    moto_headers, moto = BaseResponse._enrich_response({"status": 200}, body)
    assert ours_headers["status"] == moto_headers["status"] == "200"
    assert ours_headers["x-amzn-requestid"] and moto_headers["x-amzn-requestid"]
    assert ours_headers.keys() == moto_headers.keys()
    if b"<RequestId>" in (body if isinstance(body, bytes) else body.encode()):
        assert ours != body and moto != body  # both took moto's substitution
        assert ours.replace(ours_headers["x-amzn-requestid"], "id") == moto.replace(
            moto_headers["x-amzn-requestid"], "id")
    else:
        assert ours == moto == body


def test_copies_are_moto_s_deep_copies() -> None:
    from moto.dynamodb.models.dynamo_type import DynamoType, Item, LimitedSizeDict

    moto_speed.install()
    attrs = {k: v for k, v in WIRE_ITEM.items()
             if k not in ("two", "unknown", "none", "empty", "null_in_map", "not_a_list")}
    original = Item(DynamoType(attrs["pk"]), DynamoType(attrs["sk"]), attrs)
    shared = DynamoType({"M": {"x": {"L": [{"S": "y"}]}}})
    original.attrs["a1"] = original.attrs["a2"] = shared  # one value in two places
    ours = copy.deepcopy([original, original])
    with moto_speed.moto_itself():
        moto = copy.deepcopy([original, original])
    for copied in (ours, moto):
        assert copied[0] is copied[1]  # the memo: an object copied once per copy
        item = copied[0]
        assert item == original and item is not original
        assert type(item) is Item and type(item.attrs) is LimitedSizeDict
        assert list(item.attrs) == list(original.attrs)
        assert item.attrs["a1"] is item.attrs["a2"] is not shared
        for name, value in item.attrs.items():
            assert value is not original.attrs[name]
            assert repr(value) == repr(original.attrs[name])
    assert repr(ours[0].attrs) == repr(moto[0].attrs)
    # Nothing shared with the stored item: changing the copy leaves the original alone.
    ours[0].attrs["m"].value["inner"].value["deep"].value.append(DynamoType({"S": "new"}))
    ours[0].attrs["ss"].value.append("z")
    assert original == moto[0] and ours[0] != original
    assert original.attrs["ss"].value == ["x", "y"]


def test_the_collector_passes_less_often_while_a_stack_runs_and_as_before_after() -> None:
    import gc

    before = gc.get_threshold()
    saved = moto_speed.collect_less()
    try:
        assert saved == before
        assert gc.get_threshold() == moto_speed.COLLECTOR_THRESHOLDS
        assert gc.get_freeze_count() > 0  # what existed is out of the collector's passes
    finally:
        moto_speed.collect_as_before(saved)
    assert gc.get_threshold() == before and gc.get_freeze_count() == 0
