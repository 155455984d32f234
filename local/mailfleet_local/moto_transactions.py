"""DynamoDB TransactWriteItems in moto, as DynamoDB does it: all or nothing, isolated from
concurrent writes, at a cost that does not grow with the table.

moto 5.2.5 backs a transaction up by deep-copying every table it touches and, on failure,
puts the copies back. On the local stack that makes each audited change O(size of the
audit table), it breaks when another thread writes the table during the copy ("dictionary
changed size during iteration" -> HTTP 500), and a rollback would also undo other
writers' items written meanwhile. mailfleet writes every change with its audit event in
one transaction (docs/audit.md), so the local run needs the real behaviour: this
replaces the one method with a version that

- holds one lock for the transaction, and makes moto's single-item writes take it too
  (DynamoDB serialises a transaction against other writes to its items), and its reads
  that copy items (GetItem, Query, Scan: moto updates an item in place, and a read that
  projects it meanwhile failed with "dictionary changed size during iteration", a 500);
- checks and applies each action as moto does, remembering only the items it changes,
  and on any failure restores just those items.

No public hook exists: moto is pinned exactly (requirements-dev.txt) and
tests/local/test_moto_transactions.py checks this module against it.
"""

from __future__ import annotations

import copy
import functools
import threading
from typing import Any

_LOCK = threading.RLock()
_installed = False


def install() -> None:
    """Patch moto's DynamoDB backend (idempotent; local runs and tests only)."""
    global _installed
    if _installed:
        return
    from moto.dynamodb.models import DynamoDBBackend

    for name in ("put_item", "update_item", "delete_item", "get_item", "query", "scan"):
        setattr(DynamoDBBackend, name, _locked(getattr(DynamoDBBackend, name)))
    DynamoDBBackend.transact_write_items = _transact_write_items  # type: ignore[method-assign]
    _installed = True


def _locked(method: Any) -> Any:
    @functools.wraps(method)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        with _LOCK:
            return method(*args, **kwargs)

    return wrapper


def _transact_write_items(self: Any, transact_items: list[dict[str, Any]]) -> None:
    from moto.dynamodb.exceptions import (
        ConditionalCheckFailed,
        MockValidationException,
        MultipleTransactionsException,
        TooManyTransactionsException,
        TransactionCanceledException,
        TransactWriteSingleOpException,
    )

    if len(transact_items) > 100:
        raise TooManyTransactionsException()
    with _LOCK:
        undo: list[tuple[str, dict[str, Any], dict[str, Any] | None]] = []
        seen: set[tuple[str, str]] = set()
        errors: list[tuple[Any, Any, Any]] = []
        try:
            for item in transact_items:
                if len(item) > 1:
                    raise TransactWriteSingleOpException
                errors.append(_apply(self, item, seen, undo, ConditionalCheckFailed,
                                     MultipleTransactionsException))
        except (MultipleTransactionsException, MockValidationException,
                TransactWriteSingleOpException):
            _restore(self, undo)
            raise
        if any(code is not None for code, _, _ in errors):
            _restore(self, undo)
            raise TransactionCanceledException(errors)


def _apply(backend: Any, item: dict[str, Any], seen: set[tuple[str, str]],
           undo: list[tuple[str, dict[str, Any], dict[str, Any] | None]],
           condition_failed: type[Exception], duplicate: type[Exception]) -> tuple[Any, Any, Any]:
    """One action, as moto's own loop does it; returns its (code, message, item)."""
    from moto.dynamodb.comparisons import get_filter_expression
    from moto.dynamodb.exceptions import MockValidationException

    original_item = None
    try:
        op_type, op = next(iter(item.items()))
        if op_type not in {"ConditionCheck", "Put", "Delete", "Update"}:
            raise ValueError("Unsupported transaction operation")
        table_name = op["TableName"]
        condition = op.get("ConditionExpression")
        names = op.get("ExpressionAttributeNames")
        values = op.get("ExpressionAttributeValues")
        if op_type == "Put":
            attrs = op["Item"]
            table = backend.get_table(table_name)
            key = {table.hash_key_attr: attrs[table.hash_key_attr]}
            if table.range_key_attr is not None:
                key[table.range_key_attr] = attrs[table.range_key_attr]
        else:
            key = op["Key"]
        marker = (str(table_name), str(dict(sorted(key.items()))))
        if marker in seen:
            raise duplicate()
        seen.add(marker)
        current = backend.get_item(table_name, key)
        if condition is not None:
            if not get_filter_expression(condition, names, values).expr(current):
                if op.get("ReturnValuesOnConditionCheckFailure") == "ALL_OLD" and current:
                    original_item = current.to_json()["Attributes"]
                raise condition_failed(item=original_item)
        if op_type == "ConditionCheck":
            return (None, None, None)
        undo.append((table_name, key,
                     copy.deepcopy(current.to_json()["Attributes"]) if current else None))
        # The condition held and the lock keeps it so: a plain condition is not parsed and
        # checked again (one with names/values is passed on: moto validates their use).
        again = condition if (names or values) else None
        if op_type == "Put":
            backend.put_item(table_name, op["Item"], condition_expression=again,
                             expression_attribute_names=names,
                             expression_attribute_values=values)
        elif op_type == "Delete":
            backend.delete_item(table_name, key, condition_expression=again,
                                expression_attribute_names=names,
                                expression_attribute_values=values)
        else:
            backend.update_item(table_name, key, update_expression=op["UpdateExpression"],
                                condition_expression=again,
                                expression_attribute_names=names,
                                expression_attribute_values=values)
        return (None, None, None)
    except duplicate:
        raise
    except MockValidationException:
        raise
    except condition_failed as exc:
        return ("ConditionalCheckFailed", str(exc.message), original_item)  # type: ignore[attr-defined]
    except Exception as exc:  # as moto does: the reason, not a 500
        return (type(exc).__name__, str(exc), original_item)


def _restore(backend: Any, undo: list[tuple[str, dict[str, Any], dict[str, Any] | None]]
             ) -> None:
    """Put back exactly the items this transaction changed, newest change first."""
    for table_name, key, old in reversed(undo):
        if old is None:
            backend.delete_item(table_name, key)
        else:
            backend.put_item(table_name, old)
