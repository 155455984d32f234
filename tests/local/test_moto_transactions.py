"""The local stack's TransactWriteItems (mailfleet_local.moto_transactions) against the
pinned moto: all or nothing, the reasons DynamoDB gives, isolation from concurrent
writers, and no copy of the whole table."""

from __future__ import annotations

import copy
import threading
from collections.abc import Iterator
from typing import Any

import boto3
import pytest
from moto import mock_aws

from mailfleet_local import moto_transactions


@pytest.fixture()
def table(monkeypatch: pytest.MonkeyPatch) -> Iterator[Any]:
    # moto in this process, not the DynamoDB process a running LocalAws points clients at.
    monkeypatch.delenv("AWS_ENDPOINT_URL_DYNAMODB", raising=False)
    moto_transactions.install()
    with mock_aws():
        resource = boto3.resource("dynamodb", region_name="us-east-1")
        yield resource.create_table(
            TableName="t", BillingMode="PAY_PER_REQUEST",
            KeySchema=[{"AttributeName": "pk", "KeyType": "HASH"},
                       {"AttributeName": "sk", "KeyType": "RANGE"}],
            AttributeDefinitions=[{"AttributeName": "pk", "AttributeType": "S"},
                                  {"AttributeName": "sk", "AttributeType": "N"}])


def _put(pk: str, sk: int, condition: str | None = None, **extra: Any) -> dict[str, Any]:
    put: dict[str, Any] = {"TableName": "t", "Item": {"pk": pk, "sk": sk, **extra}}
    if condition:
        put["ConditionExpression"] = condition
    return {"Put": put}


def _count(table: Any) -> int:
    return len(table.scan()["Items"])


def test_all_or_nothing_with_the_reasons(table: Any) -> None:
    client = table.meta.client
    table.put_item(Item={"pk": "a", "sk": 1, "v": "old"})
    client.transact_write_items(TransactItems=[
        _put("a", 1, v="new"), _put("b", 1, "attribute_not_exists(sk)"),
        {"Update": {"TableName": "t", "Key": {"pk": "a", "sk": 2}, "UpdateExpression":
                    "SET v = :v", "ExpressionAttributeValues": {":v": "u"}}}])
    assert _count(table) == 3
    with pytest.raises(client.exceptions.TransactionCanceledException) as refused:
        client.transact_write_items(TransactItems=[
            _put("a", 1, v="newer"),
            {"Delete": {"TableName": "t", "Key": {"pk": "a", "sk": 2}}},
            _put("c", 1),
            _put("b", 1, "attribute_not_exists(sk)")])
    reasons = [r["Code"] for r in refused.value.response["CancellationReasons"]]
    assert reasons == ["None", "None", "None", "ConditionalCheckFailed"]
    # nothing of it happened: "a" kept its value, the deleted item is back, "c" is not there
    assert table.get_item(Key={"pk": "a", "sk": 1})["Item"]["v"] == "new"
    assert "Item" in table.get_item(Key={"pk": "a", "sk": 2})
    assert "Item" not in table.get_item(Key={"pk": "c", "sk": 1})
    with pytest.raises(client.exceptions.TransactionCanceledException):
        client.transact_write_items(TransactItems=[
            _put("d", 1), {"ConditionCheck": {"TableName": "t", "Key": {"pk": "zz", "sk": 0},
                                              "ConditionExpression": "attribute_exists(sk)"}}])
    assert "Item" not in table.get_item(Key={"pk": "d", "sk": 1})


def test_a_validation_error_undoes_the_earlier_actions(table: Any) -> None:
    client = table.meta.client
    with pytest.raises(client.exceptions.ClientError):
        client.transact_write_items(TransactItems=[_put("e", 1), _put("e", 2, blob="x" * 420_000)])
    assert _count(table) == 0


def test_concurrent_transactions_and_puts_lose_nothing(table: Any) -> None:
    """The case moto's own version broke: other writers during a transaction."""
    client = table.meta.client
    errors: list[BaseException] = []

    def transactions(n: int) -> None:
        try:
            for i in range(25):
                client.transact_write_items(TransactItems=[
                    _put(f"tx{n}", i, "attribute_not_exists(sk)"), _put(f"ev{n}", i)])
        except BaseException as exc:
            errors.append(exc)

    def puts(n: int) -> None:
        try:
            for i in range(25):
                table.put_item(Item={"pk": f"p{n}", "sk": i})
        except BaseException as exc:
            errors.append(exc)

    threads = [threading.Thread(target=f, args=(n,)) for n in range(4)
               for f in (transactions, puts)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not errors
    assert _count(table) == 4 * 25 * 3


def test_no_table_is_copied(table: Any, monkeypatch: pytest.MonkeyPatch) -> None:
    from moto.dynamodb.models.table import Table

    copied: list[str] = []
    real = copy.deepcopy

    def watching(value: Any, *args: Any, **kwargs: Any) -> Any:
        if isinstance(value, Table):
            copied.append(value.name)
        return real(value, *args, **kwargs)

    monkeypatch.setattr(copy, "deepcopy", watching)
    table.meta.client.transact_write_items(TransactItems=[_put("f", 1), _put("f", 2)])
    assert copied == []


def test_reads_that_project_items_wait_for_writes(table: Any,
                                                  monkeypatch: pytest.MonkeyPatch) -> None:
    """A read copying an item while an UpdateItem changes it in place answered 500
    ("dictionary changed size during iteration"): GetItem, Query and Scan hold the lock."""
    from moto.dynamodb.models.table import Table

    held: dict[str, bool] = {}

    def other_thread_can_lock() -> bool:
        got: list[bool] = []

        def attempt() -> None:
            got.append(moto_transactions._LOCK.acquire(blocking=False))
            if got[0]:
                moto_transactions._LOCK.release()  # an RLock: by the thread that holds it

        thread = threading.Thread(target=attempt)
        thread.start()
        thread.join()
        return got[0]

    for name in ("get_item", "query", "scan"):
        real = getattr(Table, name)

        def watching(*args: Any, _real: Any = real, _name: str = name, **kwargs: Any) -> Any:
            held[_name] = not other_thread_can_lock()
            return _real(*args, **kwargs)

        monkeypatch.setattr(Table, name, watching)
    table.put_item(Item={"pk": "r", "sk": 1, "v": "x"})
    table.get_item(Key={"pk": "r", "sk": 1}, ProjectionExpression="v")
    table.query(KeyConditionExpression="pk = :p", ExpressionAttributeValues={":p": "r"})
    table.scan()
    assert held == {"get_item": True, "query": True, "scan": True}
