"""The hosts table: one item per host, never a credential (a secret reference instead)."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import Any

from boto3.dynamodb.conditions import Attr
from botocore.exceptions import ClientError

from mailfleet import aws
from mailfleet.config import Tables
from mailfleet.models.hosts import Host
from mailfleet.store.audit import Change
from mailfleet.store.base import (
    batch_get,
    decode_page,
    encode_page,
    from_dynamo,
    read_ahead,
    to_dynamo,
)


class HostNotFound(Exception):
    pass


class HostStore:
    def __init__(self, table_name: str | None = None) -> None:
        self._table = aws.table(table_name or Tables().hosts_table)

    # Changes to write with their audit event (AuditLog.record); a refused condition
    # means: create - the id exists; replace, set, delete - the host is gone.
    def create_change(self, host: Host) -> Change:
        return Change.put(self._table.name, host.model_dump(mode="json", exclude_none=True),
                          condition="attribute_not_exists(id)")

    def replace_change(self, host: Host, **internal: Any) -> Change:
        item = dict(host.model_dump(mode="json", exclude_none=True), **internal)
        return Change.put(self._table.name, item, condition="attribute_exists(id)")

    def set_fields_change(self, host_id: str, **fields: Any) -> Change:
        names = {f"#f{i}": k for i, k in enumerate(fields)}
        values = {f":v{i}": v for i, v in enumerate(fields.values())}
        sets = ", ".join(f"#f{i} = :v{i}" for i in range(len(fields)))
        return Change.update(self._table.name, {"id": host_id}, f"SET {sets}",
                             condition="attribute_exists(id)", names=names, values=values)

    def restore_change(self, item: dict[str, Any]) -> Change:
        """Put a host item back exactly as it was read (undoing a replace)."""
        return Change.put(self._table.name, item)

    def delete_change(self, host_id: str) -> Change:
        return Change.delete(self._table.name, {"id": host_id},
                             condition="attribute_exists(id)")

    # Reads give the stored item: the Host's fields and the internal ones kept beside them
    # (health, a driver's cached command list), which a Host model would drop.
    def get_item(self, host_id: str) -> dict[str, Any]:
        item = self._table.get_item(Key={"id": host_id}, ConsistentRead=True).get("Item")
        if item is None:
            raise HostNotFound(host_id)
        return from_dynamo(item)

    def get_many(self, host_ids: list[str]) -> dict[str, dict[str, Any]]:
        """Items by id (missing ids are absent), 100 keys per BatchGetItem."""
        items = batch_get(self._table, [{"id": h} for h in host_ids])
        return {item["id"]: item for item in items}

    def read_ahead(
        self, host_ids: list[str], also: Callable[[dict[str, dict[str, Any]]], None] | None = None
    ) -> Iterator[tuple[list[str], dict[str, dict[str, Any]]]]:
        """get_many, 100 ids at a time in order, each chunk's (ids, items found) yielded as
        soon as it is read while the next ones are read in the background (store.base
        .read_ahead); `also(items)` runs in that reader after each read (e.g. reading
        their secrets)."""
        def read(ids: list[str]) -> tuple[list[str], dict[str, dict[str, Any]]]:
            found = self.get_many(ids)
            if also is not None:
                also(found)
            return ids, found

        chunks = [host_ids[start : start + 100] for start in range(0, len(host_ids), 100)]
        return read_ahead(chunks, read)

    def set_fields(self, host_id: str, **fields: Any) -> None:
        """Update a few attributes of an existing host (health, cached command lists)."""
        names = {f"#f{i}": k for i, k in enumerate(fields)}
        values = {f":v{i}": to_dynamo(v) for i, v in enumerate(fields.values())}
        sets = ", ".join(f"#f{i} = :v{i}" for i in range(len(fields)))
        try:
            self._table.update_item(
                Key={"id": host_id},
                UpdateExpression=f"SET {sets}",
                ConditionExpression="attribute_exists(id)",
                ExpressionAttributeNames=names,
                ExpressionAttributeValues=values,
            )
        except ClientError as exc:
            if exc.response["Error"]["Code"] == "ConditionalCheckFailedException":
                raise HostNotFound(host_id) from None
            raise

    def list(
        self,
        *,
        kind: str | None = None,
        tags: dict[str, str] | None = None,
        include_maintenance: bool = True,
        limit: int | None = None,
        next_token: str | None = None,
    ) -> tuple[list[dict[str, Any]], str | None]:
        """Hosts matching kind and every tag, in pages of `limit` (None: all of them)."""
        condition = None
        if kind:
            condition = Attr("kind").eq(kind)
        for key, value in (tags or {}).items():
            part = Attr(f"tags.{key}").eq(value) if _plain(key) else None
            if part is None:
                continue  # odd tag keys are matched in Python below
            condition = part if condition is None else condition & part
        if not include_maintenance:
            part = Attr("maintenance").ne(True)
            condition = part if condition is None else condition & part
        kwargs: dict[str, Any] = {"ConsistentRead": True}
        if condition is not None:
            kwargs["FilterExpression"] = condition
        start = decode_page(next_token)
        items: list[dict[str, Any]] = []
        while True:
            if start:
                kwargs["ExclusiveStartKey"] = start
            if limit is not None:
                kwargs["Limit"] = max(limit - len(items), 1) * 4
            page = self._table.scan(**kwargs)
            for item in page.get("Items", []):
                item = from_dynamo(item)
                if all(item.get("tags", {}).get(k) == v for k, v in (tags or {}).items()):
                    items.append(item)
                    if limit is not None and len(items) >= limit:
                        return items, encode_page({"id": item["id"]})
            start = page.get("LastEvaluatedKey")
            if not start:
                return items, None

    def secret_users(self) -> dict[str, str]:
        """Every host's credentials_secret, by host id (a projection scan: ids and names)."""
        kwargs: dict[str, Any] = {"ConsistentRead": True,
                                  "ProjectionExpression": "id, credentials_secret"}
        out: dict[str, str] = {}
        while True:
            page = self._table.scan(**kwargs)
            for item in page.get("Items", []):
                if item.get("credentials_secret"):
                    out[str(item["id"])] = str(item["credentials_secret"])
            if not page.get("LastEvaluatedKey"):
                return out
            kwargs["ExclusiveStartKey"] = page["LastEvaluatedKey"]


def _plain(key: str) -> bool:
    return key.replace("_", "").isalnum()
