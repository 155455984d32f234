"""The cutovers table: a cutover item (`sk = "cutover"`), one item per account
(`sk = "account#00042"`, in submission order) with its remembered mappings and step
history, and one lock item per account held by a running cutover (`pk = "lock#<account>"`).

Locks make "is this account already in a running cutover?" one BatchGetItem per 100
accounts, and taking them one TransactWriteItems per 100, each put conditional on the
slot being free (or held by a cutover known to be over), so two cutovers racing for an
account cannot both win it.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from typing import Any

from boto3.dynamodb.conditions import Attr, Key
from botocore.exceptions import ClientError

from mailfleet import aws
from mailfleet.config import Tables
from mailfleet.models.common import now_iso
from mailfleet.store.audit import Change
from mailfleet.store.base import (
    batch_get,
    from_dynamo,
    newest_first,
    query_page,
    to_dynamo,
)

CUTOVER_SK = "cutover"
ACCOUNT_PREFIX = "account#"
LOCK_PREFIX = "lock#"
LOCK_SK = "lock"
LIST_PK = "CUTOVER"
FINAL_STATUSES = ["SUCCEEDED", "PARTIAL", "FAILED", "CANCELLED", "ROLLED_BACK"]
# DynamoDB's own limits: 100 keys per BatchGetItem, 100 actions per transaction.
BATCH_GET = 100
TRANSACTION = 100


class CutoverNotFound(Exception):
    pass


class LockLost(Exception):
    """Another cutover took an account between the check and the write."""


def account_sk(n: int) -> str:
    return f"{ACCOUNT_PREFIX}{n:05d}"


def lock_pk(key: str) -> str:
    return LOCK_PREFIX + key


def _conditionally(write: Callable[[], Any]) -> Any:
    """A conditional write's answer, or None when its condition did not hold."""
    try:
        return write()
    except ClientError as exc:
        if exc.response["Error"]["Code"] == "ConditionalCheckFailedException":
            return None
        raise


class CutoverStore:
    """Cutovers; MigrationStore keeps migrations in the same table, so both share the
    account locks (an account is in one running cutover or migration at most)."""

    kind = "cutover"
    list_pk = LIST_PK

    def __init__(self, table_name: str | None = None) -> None:
        self._table = aws.table(table_name or Tables().cutovers_table)

    def status_key(self, status: str) -> str:
        """The `by_status` index key: a status, prefixed for any kind but cutovers."""
        return status if self.kind == "cutover" else f"{self.list_pk}#{status}"

    # ------------------------------------------------------------------ changes
    # Written with their audit event (AuditLog.record); ChangeRefused when the
    # condition fails, as the plain writes below return False.
    def create_change(self, cutover: dict[str, Any]) -> Change:
        item = dict(cutover, pk=cutover["cutover_id"], sk=CUTOVER_SK, kind=self.kind,
                    list_pk=self.list_pk, status_pk=self.status_key(cutover["status"]))
        return Change.put(self._table.name, item, condition="attribute_not_exists(pk)")

    def transition_change(self, cutover_id: str, from_statuses: list[str], to_status: str,
                          **fields: Any) -> Change:
        allowed = {f":from{i}": s for i, s in enumerate(from_statuses)}
        return self._update_change(cutover_id, dict(fields, status=to_status,
                                                     status_pk=self.status_key(to_status)),
                                   f"#u_status IN ({', '.join(allowed)})", allowed)

    def finish_change(self, cutover_id: str, status: str, **fields: Any) -> Change:
        finals = {f":final{i}": s for i, s in enumerate(FINAL_STATUSES)}
        return self._update_change(cutover_id, dict(fields, status=status,
                                                     status_pk=self.status_key(status)),
                                   f"attribute_exists(pk) AND NOT (#u_status IN "
                                   f"({', '.join(finals)}))", finals)

    def account_change(self, cutover_id: str, n: int, *, step: dict[str, Any] | None = None,
                       status_is: list[str] | None = None, **fields: Any) -> Change:
        """Set an account's fields and append a step record in one update; with
        `status_is`, only while the account is in one of those statuses."""
        fields["updated_at"] = now_iso()
        names = {f"#u{i}": k for i, k in enumerate(fields)}
        values: dict[str, Any] = {f":u{i}": v for i, v in enumerate(fields.values())}
        sets = [f"#u{i} = :u{i}" for i in range(len(fields))]
        if step is not None:
            names["#steps"] = "steps"
            values.update({":step": [step], ":none": []})
            sets.append("#steps = list_append(if_not_exists(#steps, :none), :step)")
        condition = "attribute_exists(pk)"
        if status_is:
            names["#u_status"] = "status"
            allowed = {f":is{i}": s for i, s in enumerate(status_is)}
            values.update(allowed)
            condition += f" AND #u_status IN ({', '.join(allowed)})"
        return Change.update(self._table.name, {"pk": cutover_id, "sk": account_sk(n)},
                             "SET " + ", ".join(sets), condition=condition, names=names,
                             values=values)

    def _update_change(self, cutover_id: str, fields: dict[str, Any], condition: str,
                       condition_values: dict[str, Any]) -> Change:
        names = {f"#u{i}": k for i, k in enumerate(fields)} | {"#u_status": "status"}
        values = {f":u{i}": v for i, v in enumerate(fields.values())} | condition_values
        sets = ", ".join(f"#u{i} = :u{i}" for i in range(len(fields)))
        return Change.update(self._table.name, {"pk": cutover_id, "sk": CUTOVER_SK},
                             f"SET {sets}", condition=condition, names=names, values=values)

    # ------------------------------------------------------------------ cutover item
    def create(self, cutover: dict[str, Any]) -> None:
        item = dict(
            cutover,
            pk=cutover["cutover_id"],
            sk=CUTOVER_SK,
            kind=self.kind,
            list_pk=self.list_pk,
            status_pk=self.status_key(cutover["status"]),
        )
        self._table.put_item(Item=to_dynamo(item), ConditionExpression=Attr("pk").not_exists())

    def get(self, cutover_id: str, *, consistent: bool = True) -> dict[str, Any]:
        item = self._table.get_item(
            Key={"pk": cutover_id, "sk": CUTOVER_SK}, ConsistentRead=consistent
        ).get("Item")
        if item is None or item.get("kind", "cutover") != self.kind:
            raise CutoverNotFound(cutover_id)
        return _clean(item)

    def get_many(self, cutover_ids: Iterable[str]) -> dict[str, dict[str, Any]]:
        keys = [{"pk": c, "sk": CUTOVER_SK} for c in dict.fromkeys(cutover_ids)]
        return {i["cutover_id"]: _clean(i) for i in batch_get(self._table, keys)}

    def delete(self, cutover_id: str) -> None:
        self._table.delete_item(Key={"pk": cutover_id, "sk": CUTOVER_SK})

    def set_fields(self, cutover_id: str, **fields: Any) -> None:
        self._update(cutover_id, CUTOVER_SK, fields)

    def transition(
        self, cutover_id: str, from_statuses: list[str], to_status: str, **fields: Any
    ) -> bool:
        """Move the cutover to `to_status` only from one of `from_statuses`."""
        return (
            _conditionally(
                lambda: self._update(
                    cutover_id,
                    CUTOVER_SK,
                    dict(fields, status=to_status, status_pk=self.status_key(to_status)),
                    condition=Attr("status").is_in(from_statuses),
                )
            )
            is not None
        )

    def move_count(self, cutover_id: str, from_status: str | None, to_status: str) -> None:
        """Keep the cutover's running counts (recounted exactly when it finishes)."""
        names = {"#c": "counts", "#t": to_status}
        expression = "ADD #c.#t :one"
        if from_status is not None:
            names["#f"] = from_status
            expression += ", #c.#f :minus"
        values: dict[str, Any] = {":one": 1}
        if from_status is not None:
            values[":minus"] = -1
        self._table.update_item(
            Key={"pk": cutover_id, "sk": CUTOVER_SK},
            UpdateExpression=expression,
            ExpressionAttributeNames=names,
            ExpressionAttributeValues=values,
        )

    def halt(self, cutover_id: str, reason: str) -> None:
        """No account starts after this (it is kept once set: the first reason wins)."""
        self._table.update_item(
            Key={"pk": cutover_id, "sk": CUTOVER_SK},
            UpdateExpression="SET halted = if_not_exists(halted, :r)",
            ExpressionAttributeValues={":r": reason},
        )

    def list(
        self, *, status: str | None, limit: int, next_token: str | None
    ) -> tuple[list[dict[str, Any]], str | None]:
        items, token = newest_first(
            self._table, list_pk=self.list_pk, status=self.status_key(status) if status else None,
            limit=limit, next_token=next_token,
        )
        return [_clean(i) for i in items], token

    # ------------------------------------------------------------------ accounts
    def write_accounts(self, cutover_id: str, accounts: list[str]) -> None:
        stamp = now_iso()
        with self._table.batch_writer() as batch:
            for n, account in enumerate(accounts):
                batch.put_item(
                    Item={
                        "pk": cutover_id,
                        "sk": account_sk(n),
                        "n": n,
                        "account": account,
                        "status": "PENDING",
                        "previous": {},
                        "steps": [],
                        "updated_at": stamp,
                    }
                )

    def account(self, cutover_id: str, n: int) -> dict[str, Any]:
        item = self._table.get_item(
            Key={"pk": cutover_id, "sk": account_sk(n)}, ConsistentRead=True
        ).get("Item")
        if item is None:
            raise CutoverNotFound(f"{cutover_id} account {n}")
        return _clean(item)

    def accounts(
        self,
        cutover_id: str,
        *,
        limit: int | None = None,
        next_token: str | None = None,
        status: str | None = None,
        fields: list[str] | None = None,
    ) -> tuple[list[dict[str, Any]], str | None]:
        kwargs: dict[str, Any] = {
            "KeyConditionExpression": Key("pk").eq(cutover_id)
            & Key("sk").begins_with(ACCOUNT_PREFIX),
            "ConsistentRead": True,
        }
        if status:
            kwargs["FilterExpression"] = Attr("status").eq(status)
        if fields:
            names = {f"#p{i}": f for i, f in enumerate(fields)}
            kwargs["ProjectionExpression"] = ", ".join(names)
            kwargs["ExpressionAttributeNames"] = names
        return query_page(
            self._table, kwargs, limit=limit, next_token=next_token, clean=_clean
        )

    def update_account(
        self,
        cutover_id: str,
        n: int,
        *,
        step: dict[str, Any] | None = None,
        from_statuses: list[str] | None = None,
        **fields: Any,
    ) -> bool:
        """Set fields (and append a step record) on an account; with `from_statuses`, only
        if the account is in one of them. False when that condition failed."""
        fields["updated_at"] = now_iso()
        condition = Attr("pk").exists()
        if from_statuses is not None:
            condition = condition & Attr("status").is_in(from_statuses)
        return (
            _conditionally(
                lambda: self._update(
                    cutover_id, account_sk(n), fields, condition=condition, step=step
                )
            )
            is not None
        )

    def remember(self, cutover_id: str, n: int, previous: dict[str, Any]) -> None:
        """Keep the first mapping seen per host: a retried or resumed step must not
        overwrite it with a destination this cutover already set."""
        names = {"#prev": "previous"}
        values: dict[str, Any] = {}
        parts = []
        for i, (host, value) in enumerate(previous.items()):
            names[f"#h{i}"] = host
            values[f":h{i}"] = to_dynamo(value)
            parts.append(f"#prev.#h{i} = if_not_exists(#prev.#h{i}, :h{i})")
        if not parts:
            return
        self._table.update_item(
            Key={"pk": cutover_id, "sk": account_sk(n)},
            UpdateExpression="SET " + ", ".join(parts),
            ExpressionAttributeNames=names,
            ExpressionAttributeValues=values,
        )

    # ------------------------------------------------------------------ locks
    def lock_holders(self, keys: Iterable[str]) -> dict[str, str]:
        """account key -> the cutover id holding its lock, for the keys that are locked."""
        items = batch_get(
            self._table, [{"pk": lock_pk(k), "sk": LOCK_SK} for k in dict.fromkeys(keys)]
        )
        return {i["pk"][len(LOCK_PREFIX) :]: i["cutover_id"] for i in items}

    def take_locks(
        self, cutover_id: str, accounts: dict[str, str], stale: dict[str, str]
    ) -> list[str]:
        """Lock every account key (key -> account) for `cutover_id`; a key whose lock is
        held by a finished cutover (`stale`: key -> that cutover) is taken over. All or
        nothing: on a lost race every lock taken here is released and LockLost raised."""
        client = self._table.meta.client
        taken: list[str] = []
        keys = list(accounts)
        stamp = now_iso()
        for start in range(0, len(keys), TRANSACTION):
            chunk = keys[start : start + TRANSACTION]
            actions = []
            for key in chunk:
                values: dict[str, Any] = {":me": cutover_id}
                condition = "attribute_not_exists(pk) OR cutover_id = :me"
                if key in stale:
                    condition += " OR cutover_id = :old"
                    values[":old"] = stale[key]
                actions.append(
                    {
                        "Put": {
                            "TableName": self._table.name,
                            "Item": {
                                "pk": lock_pk(key),
                                "sk": LOCK_SK,
                                "cutover_id": cutover_id,
                                "account": accounts[key],
                                "at": stamp,
                            },
                            "ConditionExpression": condition,
                            "ExpressionAttributeValues": values,
                        }
                    }
                )
            try:
                client.transact_write_items(TransactItems=actions)
            except ClientError as exc:
                if exc.response["Error"]["Code"] not in (
                    "TransactionCanceledException",
                    "ConditionalCheckFailedException",
                ):
                    raise
                self.release_locks(cutover_id, taken)
                raise LockLost() from None
            taken.extend(chunk)
        return taken

    def release_lock(self, cutover_id: str, key: str) -> bool:
        """Drop the account's lock if this cutover holds it."""
        return (
            _conditionally(
                lambda: self._table.delete_item(
                    Key={"pk": lock_pk(key), "sk": LOCK_SK},
                    ConditionExpression=Attr("cutover_id").eq(cutover_id),
                )
            )
            is not None
        )

    def release_locks(self, cutover_id: str, keys: Iterable[str]) -> None:
        for key in keys:
            self.release_lock(cutover_id, key)

    # ------------------------------------------------------------------ helpers
    def _update(
        self,
        pk: str,
        sk: str,
        fields: dict[str, Any],
        *,
        condition: Any = None,
        step: dict[str, Any] | None = None,
        returns: str | None = None,
    ) -> dict[str, Any]:
        # Not #n0 / :v0: boto3 names a condition object's placeholders that way.
        names = {f"#u{i}": k for i, k in enumerate(fields)}
        values = {f":u{i}": to_dynamo(v) for i, v in enumerate(fields.values())}
        sets = [f"#u{i} = :u{i}" for i in range(len(fields))]
        if step is not None:
            names["#steps"] = "steps"
            values[":step"] = [to_dynamo(step)]
            values[":none"] = []
            sets.append("#steps = list_append(if_not_exists(#steps, :none), :step)")
        kwargs: dict[str, Any] = {
            "Key": {"pk": pk, "sk": sk},
            "UpdateExpression": "SET " + ", ".join(sets),
            "ExpressionAttributeNames": names,
            "ExpressionAttributeValues": values,
        }
        if condition is not None:
            kwargs["ConditionExpression"] = condition
        if returns is not None:
            kwargs["ReturnValues"] = returns
        return self._table.update_item(**kwargs)


def _clean(item: dict[str, Any]) -> dict[str, Any]:
    out = from_dynamo(item)
    for key in ("pk", "sk", "list_pk", "status_pk"):
        out.pop(key, None)
    return out


class MigrationStore(CutoverStore):
    """Migrations: the same items as cutovers (`kind = "migration"`), listed apart."""

    kind = "migration"
    list_pk = "MIGRATION"
