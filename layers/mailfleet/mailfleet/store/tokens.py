"""The tokens table: a token's SHA-256 and role, keyed by its public id."""

from __future__ import annotations

from typing import Any

from mailfleet import aws
from mailfleet.config import Tables
from mailfleet.store.audit import Change
from mailfleet.store.base import decode_page, encode_page, from_dynamo


class TokenNotFound(Exception):
    pass


class TokenStore:
    def __init__(self, table_name: str | None = None) -> None:
        self._table = aws.table(table_name or Tables().tokens_table)

    # Changes to write with their audit event (AuditLog.record).
    def put_change(self, item: dict[str, Any]) -> Change:
        return Change.put(self._table.name, item, condition="attribute_not_exists(token_id)")

    def delete_change(self, token_id: str) -> Change:
        """Refused (ChangeRefused) when there is no such token."""
        return Change.delete(self._table.name, {"token_id": token_id},
                             condition="attribute_exists(token_id)")

    def get(self, token_id: str) -> dict[str, Any] | None:
        item = self._table.get_item(Key={"token_id": token_id}, ConsistentRead=True).get("Item")
        return from_dynamo(item) if item else None

    def list(self, limit: int, next_token: str | None) -> tuple[list[dict[str, Any]], str | None]:
        kwargs: dict[str, Any] = {"Limit": limit}
        start = decode_page(next_token)
        if start:
            kwargs["ExclusiveStartKey"] = start
        page = self._table.scan(**kwargs)
        return [from_dynamo(i) for i in page.get("Items", [])], encode_page(
            page.get("LastEvaluatedKey")
        )
