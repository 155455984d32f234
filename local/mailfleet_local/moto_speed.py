"""Two hot spots of moto 5.2.5's server, made cheap for the local run (nothing changes in
what a client receives).

A profile of `make run` under a 1,000-host job (py-spy on the running stack, the API,
moto and the worker in one process) showed moto's own overhead, not DynamoDB's logic, as
the largest cost of a job through the API:

- **Responses**: moto turns every DynamoDB answer into JSON by walking botocore's output
  shape, and for each attribute value it tries the 10 members of `AttributeValue` (S, N,
  B, ..., M, L) through a chain of alias providers (generators, `hasattr`, `xform_name`).
  That was half of moto's CPU: a BatchGetItem of 100 host items (~25 attributes each,
  the tags and TLS settings as maps) cost ~0.3-1 s, a Query of 1,000 results ~1.5-4 s.
  An `AttributeValue` in moto's result is already in wire form (one key, its value), so
  `DynamoDBSerializer` writes it out directly; every other shape still goes through
  moto's serializer, and anything that is not a plain one-key attribute value falls back
  to it as well. moto offers this hook: `SERVICE_SPECIFIC_SERIALIZERS` (the one S3 and
  SQS use).
- **Routing**: for every request, under one global lock, moto's dispatcher lists its own
  package directory (`list_of_moto_modules`: an `os.listdir` and ~200 `isdir` calls) and
  then tries up to ~1,000 URL patterns, to map the host name to a service. The answer
  depends only on the host name: `install` memoizes it.
- **Results to plain values**: before writing an answer, moto converts its result
  (`dynamo_to_dict`) by asking every value, down to each string, `isinstance` twice and
  `hasattr(.., "to_json")`, and imports a module on every call: a Query of 1,000 results
  spent more time there than in the query. `plain` does the same conversion, checking
  the builtin types first.

moto is pinned exactly (requirements-dev.txt); tests/local/test_moto_speed.py checks both
against moto's own code on every kind of attribute value.
"""

from __future__ import annotations

import functools
from datetime import datetime
from typing import Any

_installed = False
_original_backend_for_host: Any = None

# The members of DynamoDB's AttributeValue, by how moto's JSON serializer writes them.
_AS_IS = frozenset({"BOOL", "NULL"})
_STRINGS = frozenset({"SS", "NS"})


def install() -> None:
    """Patch moto's server (idempotent; local runs and tests only)."""
    global _installed
    if _installed:
        return
    from moto.core import serialize
    from moto.dynamodb import responses
    from moto.moto_server.werkzeug_app import DomainDispatcherApplication

    responses.dynamo_to_dict = plain  # what DynamoResult calls
    serialize.SERVICE_SPECIFIC_SERIALIZERS.setdefault("dynamodb", {})["json"] = (
        dynamodb_serializer()
    )
    global _original_backend_for_host
    original = _original_backend_for_host = DomainDispatcherApplication.get_backend_for_host
    known: dict[str | None, Any] = {}

    def get_backend_for_host(self: Any, host: str | None) -> Any:
        # moto calls this under its dispatcher's lock: the dict needs no lock of its own.
        if host not in known:
            known[host] = original(self, host)
        return known[host]

    DomainDispatcherApplication.get_backend_for_host = get_backend_for_host  # type: ignore[method-assign]
    _installed = True


_LEAVES = frozenset({str, int, float, bool, type(None)})


def plain(obj: Any) -> Any:
    """moto's `dynamo_to_dict`, with the builtin types (nearly every value) checked first."""
    kind = type(obj)
    if kind in _LEAVES:
        return obj
    if kind is dict:
        return {key: plain(value) for key, value in obj.items()}
    if kind is list:
        return [plain(item) for item in obj]
    from moto.dynamodb.models.dynamo_type import DynamoType
    from moto.dynamodb.models.utilities import dynamo_to_dict

    if kind is DynamoType and obj.type not in ("B", "BS"):
        return {obj.type: plain(obj.value)}
    if kind is not DynamoType and hasattr(obj, "to_json") and not isinstance(obj, datetime):
        return plain(obj.to_json())
    return dynamo_to_dict(obj)  # binary values, datetimes, subclasses: moto's own


class _NotWireForm(Exception):
    """An attribute value this module does not write itself: moto's serializer does."""


def _base64(value: str | bytes) -> str:
    import base64

    raw = value.encode("utf-8") if isinstance(value, str) else value
    return base64.b64encode(raw).strip().decode("utf-8")


def _string(value: Any) -> Any:
    # As moto's JSON serializer writes a string shape.
    return str(value) if value not in [None, {}, []] else value


def attribute_value(value: Any) -> dict[str, Any]:
    """One AttributeValue from moto's result, written as moto's serializer would."""
    if not isinstance(value, dict) or len(value) != 1:
        raise _NotWireForm
    ((kind, inner),) = value.items()
    if inner is None:
        raise _NotWireForm
    if kind in ("S", "N"):
        return {kind: _string(inner)}
    if kind in _AS_IS:
        return {kind: inner}
    if kind == "M":
        return {kind: attribute_map(inner)}
    if kind == "L":
        return {kind: [attribute_value(item) for item in inner]}
    if kind == "B":
        return {kind: _base64(inner)}
    if kind in _STRINGS:
        return {kind: [_string(item) for item in inner]}
    if kind == "BS":
        return {kind: [_base64(item) for item in inner]}
    raise _NotWireForm


def attribute_map(value: Any) -> dict[str, Any]:
    if not isinstance(value, dict):
        raise _NotWireForm
    return {str(name): attribute_value(item) for name, item in value.items()}


@functools.cache
def dynamodb_serializer() -> type:
    """moto's JSON serializer, writing attribute values (and maps of them) directly."""
    from moto.core.serialize import JSONSerializer

    class DynamoDBSerializer(JSONSerializer):
        def _serialize_type_structure(self, serialized: Any, value: Any, shape: Any,
                                      key: str) -> None:
            if key and shape.name == "AttributeValue":
                try:
                    serialized[self.get_serialized_name(shape, key)] = attribute_value(value)
                    return
                except _NotWireForm:
                    pass
            super()._serialize_type_structure(serialized, value, shape, key)

        def _serialize_type_map(self, serialized: Any, value: Any, shape: Any,
                                key: str) -> None:
            if getattr(shape.value, "name", None) == "AttributeValue":
                try:
                    serialized[self.get_serialized_name(shape, key)] = attribute_map(value)
                    return
                except _NotWireForm:
                    pass
            super()._serialize_type_map(serialized, value, shape, key)

    return DynamoDBSerializer
