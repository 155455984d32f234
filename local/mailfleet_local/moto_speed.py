"""moto 5.2.5's DynamoDB server, made cheap for the local run (nothing changes in what a
client receives: tests/local/test_moto_speed.py compares every patch with moto's own
code, answers byte for byte).

A profile of `make run` under a 1,000-host job (py-spy on the running stack, the API,
moto and the worker in one process) showed moto's own overhead, not DynamoDB's logic, as
the largest cost of a job through the API. One job sends moto ~40 BatchWriteItem (1,000
results), 20 BatchGetItem (2 x 1,000 host items), ~20 GetItem, 2 Query of its 1,000
results, 2 TransactWriteItems and 1 UpdateItem.

- **Responses**: moto turns every DynamoDB answer into JSON by walking botocore's output
  shape, and for each attribute value it tries the 10 members of `AttributeValue` (S, N,
  B, ..., M, L) through a chain of alias providers (generators, `hasattr`, `xform_name`).
  That was half of moto's CPU: a BatchGetItem of 100 host items (~25 attributes each,
  the tags and TLS settings as maps) cost ~0.3-1 s, a Query of 1,000 results ~1.5-4 s.
  An `AttributeValue` in moto's result is already in wire form (one key, its value), so
  `DynamoDBSerializer` writes it out directly, and a list of items in one pass; every
  other shape still goes through moto's serializer, and anything that is not a plain
  one-key attribute value falls back to it as well. moto offers this hook:
  `SERVICE_SPECIFIC_SERIALIZERS` (the one S3 and SQS use).
- **Requests**, the mirror image: moto's JSON parser walks each attribute value of a
  request through the 10 members of its shape, a handler looked up by name for each.
  `DynamoDBParser` parses plain attribute values (and maps of them) directly: the same
  dicts and lists, the same strings; binary values, several or unknown members and
  nulls go to moto's parser.
- **Routing**: for every request, under one global lock, moto's dispatcher lists its own
  package directory (`list_of_moto_modules`: an `os.listdir` and ~200 `isdir` calls) and
  then tries up to ~1,000 URL patterns, to map the host name to a service. The answer
  depends only on the host name: `install` memoizes it.
- **Results to plain values**: before writing an answer, moto converts its result
  (`dynamo_to_dict`) by asking every value, down to each string, `isinstance` twice and
  `hasattr(.., "to_json")`, and imports a module on every call: a Query of 1,000 results
  spent more time there than in the query. `plain` does the same conversion, checking
  the builtin types first. And for every answer moto runs a look-behind regex over the
  whole body (a 1 MB page too) to put a request id into XML: `enrich_response` skips a
  body without `<RequestId>`, which the regex would leave as it is.
- **Query**: moto's `Table.query` walks `all_items()`, every item of the table sorted,
  to keep one hash key's: the results table grows by 1,000 items a job, so each job's
  two Queries got slower all session long. `query` runs moto's own query on the one
  partition (`self.items[hash_key]`), whatever else the table holds; a query on an index
  keeps moto's path.
- **Items**: building an item (every write) checked its 400 KB limit by summing every
  attribute already added at each addition (quadratic: ~0.7 ms for a host item), and an
  item's size (Query and BatchGetItem ask it twice per item, for the 1 MB and 16 MB
  limits) wrapped each map member in a new DynamoType, copying its subtree, to ask its
  size. `item_init` keeps the running total (the same check at the same point: 10x
  faster), `attribute_size` computes the same number without copies (2x). Query's copy
  of its page (needed: moto updates items in place, and the answer is written outside
  moto_transactions' lock) is made node by node without `copy.deepcopy` for each value
  (43 ms -> 24 ms for 1,000 results). GetItem and BatchGetItem copy nothing already.

Figures (2-core VM, shared, load ~2):
- `python -m mailfleet_local.moto_speed`, moto's time (inside its dispatch, GC paused)
  for one 1,000-host job's requests beside 10,000 other results: moto 6.7-7.8 s; with
  only the answers written directly (this module before the Query, request and item
  patches) 0.8-1.0 s; with this module 0.50-0.58 s. The Query of a job's 1,000 results
  (all pages, the client's time included) beside 10,000 others: 0.30 s -> 0.12-0.18 s
  (moto's own: 1.9-2.1 s).
- The window profile (bench stack, 3 warm jobs of 1,000 hosts through the API after 2
  warm-ups, py-spy --gil; 4 runs each way, the machine's load moved them a lot): moto's
  `BaseResponse.dispatch` 40-50% of GIL time before, 25-39% after; the GIL time of the
  3 jobs 1,870-2,080 samples before, 1,470-1,680 after; a job's wall time, best of 3,
  3.1-3.8 s before, 2.5-3.2 s after. What is left is led by the garbage collector, which
  py-spy charges to whichever line allocates (0.5-0.9 s of samples on one line of
  DynamoType.__init__ or the parser): a full collection of the process's ~750,000
  objects (moto's stored items among them) took ~0.5 s, in every other job.

moto is pinned exactly (requirements-dev.txt); tests/local/test_moto_speed.py checks each
patch against moto's own code."""

from __future__ import annotations

import contextlib
import copy
import functools
from collections.abc import Iterator
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
    for owner, name, fast in _patches():
        _ORIGINALS[(owner, name)] = _own_attribute(owner, name)
        setattr(owner, name, fast)
    _installed = True


# The young generation's size between two collections, and how many young collections
# make an older one, while a local stack runs (Python's defaults: 700, 10, 10).
COLLECTOR_THRESHOLDS = (50_000, 20, 100)


def collect_less() -> tuple[int, ...]:
    """For a local stack's life (call `collect_as_before` with the answer at its end):
    moto keeps every stored item as Python objects in this process (~30,000 more per
    1,000-host job), and the collector's full pass over all of them (~750,000 objects
    after a few jobs: ~0.5 s) came every other job. What exists once the stack is up
    (imports, moto) is frozen out of the collector's passes, and the young generation is
    collected every 50,000 allocations instead of 700, so older passes come ~140 times
    less often; most of moto's garbage (answers, parsed requests: no cycles) is freed by
    reference counting anyway."""
    import gc

    saved = gc.get_threshold()
    gc.collect()
    gc.freeze()
    gc.set_threshold(*COLLECTOR_THRESHOLDS)
    return saved


def collect_as_before(saved: tuple[int, ...]) -> None:
    import gc

    gc.set_threshold(*saved)
    gc.unfreeze()


def _own_attribute(owner: type, name: str) -> Any:
    """The attribute as its class holds it (a staticmethod stays one)."""
    for cls in owner.__mro__:
        if name in cls.__dict__:
            return cls.__dict__[name]
    raise AttributeError(name)


_ORIGINALS: dict[tuple[type, str], Any] = {}
_DynamoType: Any = None  # moto's, once installed


def _patches() -> list[tuple[type, str, Any]]:
    from moto.dynamodb.models.dynamo_type import DynamoType, Item
    from moto.dynamodb.models.table import Table
    from moto.dynamodb.responses import DynamoHandler

    global _DynamoType
    _DynamoType = DynamoType
    return [(DynamoHandler, "parse_parameters", parse_parameters),
            (DynamoHandler, "_enrich_response", staticmethod(enrich_response)),
            (Table, "query", query),
            (DynamoType, "size", attribute_size),
            (Item, "size", item_size),
            (Item, "__init__", item_init),
            (Item, "__deepcopy__", item_deepcopy),
            (DynamoType, "__deepcopy__", attribute_deepcopy)]


@contextlib.contextmanager
def moto_itself(*, answers: bool = True) -> Iterator[None]:
    """moto's own code in place of every patch of this module but the routing memo, and
    but the writing of answers if not `answers` (tests and `main` compare them; not
    thread-safe)."""
    from moto.core import serialize
    from moto.dynamodb import responses
    from moto.dynamodb.models import utilities

    install()
    for (owner, name), original in _ORIGINALS.items():
        setattr(owner, name, original)
    ours = serialize.SERVICE_SPECIFIC_SERIALIZERS["dynamodb"]
    if answers:
        del serialize.SERVICE_SPECIFIC_SERIALIZERS["dynamodb"]
        responses.dynamo_to_dict = utilities.dynamo_to_dict
    try:
        yield
    finally:
        for owner, name, fast in _patches():
            setattr(owner, name, fast)
        serialize.SERVICE_SPECIFIC_SERIALIZERS["dynamodb"] = ours
        responses.dynamo_to_dict = plain


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

        def _serialize_type_list(self, serialized: Any, value: Any, shape: Any,
                                 key: str) -> None:
            # A list of items (Query, Scan, BatchGetItem): moto serializes each item in a
            # wrapper under the member's name, then takes it out again.
            member = shape.member
            if (member.type_name == "map"
                    and getattr(member.value, "name", None) == "AttributeValue"
                    and self.get_serialized_name(member, member.name) == member.name):
                try:
                    items = [attribute_map(item) for item in value]
                except _NotWireForm:
                    pass
                else:
                    self._default_serialize(serialized, items, shape, key)
                    return
            super()._serialize_type_list(serialized, value, shape, key)

    return DynamoDBSerializer


# --- Requests: the AttributeValues of a request, parsed as moto's JSON parser does ----


def parse_parameters(self: Any, request: Any) -> None:
    """moto's `BaseResponse.parse_parameters`, with `DynamoDBParser` for JSON requests."""
    from moto.core.parse import PROTOCOL_PARSERS
    from moto.core.request import determine_request_protocol
    from moto.core.utils import get_service_model

    service_model = get_service_model(self.boto3_service_name)
    operation_model = service_model.operation_model(self._get_action())
    protocol = determine_request_protocol(service_model, request.content_type)
    parser_cls = dynamodb_parser() if protocol == "json" else PROTOCOL_PARSERS[protocol]
    parser = parser_cls(operation_model, map_type=self.PROTOCOL_PARSER_MAP_TYPE)
    self.params = parser.parse({
        "method": request.method,
        "values": request.values,
        "headers": request.headers,
        "body": request.data,
        "url_path": request.path,
        "url_params": self.uri_match,
    })


_AS_SENT = frozenset({"S", "N", "BOOL", "NULL"})  # string and boolean shapes: kept as sent


def parsed_value(value: Any) -> dict[str, Any]:
    """One AttributeValue of a request, as moto's JSON parser returns it (new containers,
    the same strings); anything else (binary values, several or unknown members, nulls)
    is left to moto's parser."""
    if type(value) is not dict or len(value) != 1:
        raise _NotWireForm
    ((kind, inner),) = value.items()
    if inner is None:
        raise _NotWireForm
    if kind in _AS_SENT:
        return {kind: inner}
    if kind == "M":
        return {kind: parsed_map(inner)}
    if kind == "L" and type(inner) is list:
        return {kind: [parsed_value(item) for item in inner]}
    if kind in _STRINGS and type(inner) is list:
        return {kind: list(inner)}
    raise _NotWireForm


def parsed_map(value: Any) -> dict[str, Any]:
    if type(value) is not dict:
        raise _NotWireForm
    return {name: parsed_value(item) for name, item in value.items()}


@functools.cache
def dynamodb_parser() -> type:
    """moto's JSON request parser, parsing attribute values (and maps of them) directly.

    moto walks each AttributeValue through the 10 members of its shape (a handler looked
    up by name for each), which was the largest single cost of moto in a job."""
    from moto.core.parse import JSONParser

    class DynamoDBParser(JSONParser):
        def _parse_structure(self, shape: Any, value: Any) -> Any:
            if shape.name == "AttributeValue":
                try:
                    return parsed_value(value)
                except _NotWireForm:
                    pass
            return super()._parse_structure(shape, value)

        def _parse_map(self, shape: Any, value: Any) -> Any:
            if getattr(shape.value, "name", None) == "AttributeValue":
                try:
                    return parsed_map(value)
                except _NotWireForm:
                    pass
            return super()._parse_map(shape, value)

    return DynamoDBParser


# --- Query: a table's own partition, not every item of the table ----------------------


class _OnePartition:
    """A table seen through one partition: moto's `Table.query` runs unchanged on it."""

    def __init__(self, table: Any, items: list[Any]) -> None:
        self._table = table
        self._items = items

    def __getattr__(self, name: str) -> Any:
        return getattr(self._table, name)

    def all_items(self) -> list[Any]:
        return self._items


def query(self: Any, hash_key: Any, *args: Any, **kwargs: Any) -> Any:
    """moto's `Table.query`; on the table's own key (no index), over that key's partition.

    moto collects its candidates from `all_items()`: every item of the table, sorted, then
    kept if `item.hash_key == hash_key`, then sorted by range key. The items of that hash
    key are exactly the partition `self.items[hash_key]` (DynamoType's hash agrees with
    its equality), and their range keys are distinct and of the table's one type, so
    moto's own sort by range key puts them in the same order whatever order they come
    in: moto's query runs unchanged with `all_items()` answering that partition, and
    everything after it (order, pages, limits, filters, projection, copies) is its own.
    A key of another type than the table's (no item can match: a map or set is not even
    hashable) or a number moto cannot read takes moto's own path, errors included."""
    from moto.dynamodb.models.table import Table

    original = _ORIGINALS[(Table, "query")]
    index_name = kwargs.get("index_name", args[6] if len(args) > 6 else None)
    if index_name or hash_key is None or hash_key.type != self.hash_key_type:
        return original(self, hash_key, *args, **kwargs)  # (no item can match a key type)
    try:
        # .get: `items` is a defaultdict, and a query must not add an empty partition.
        partition = self.items.get(hash_key)
    except Exception:  # a number moto cannot read: its own path decides
        return original(self, hash_key, *args, **kwargs)
    if partition is None:
        found: list[Any] = []
    elif self.range_key_attr:
        found = list(partition.values())
    else:
        found = [partition]
    return original(_OnePartition(self, found), hash_key, *args, **kwargs)


# --- Responses: the request id written into an XML body, not searched for in JSON ------


def enrich_response(headers: dict[str, str], body: Any) -> tuple[dict[str, str], Any]:
    """moto's `BaseResponse._enrich_response`: it runs a look-behind regex over the whole
    body (a 1 MB Query page included) to put the request id in `<RequestId>`; a body
    without that tag is what the substitution would return unchanged."""
    from moto.core.responses import BaseResponse
    from moto.utilities.aws_headers import gen_amzn_requestid_long

    if isinstance(body, str) and "<RequestId>" not in body:
        if "status" in headers:
            headers["status"] = str(headers["status"])
        gen_amzn_requestid_long(headers)
        return headers, body
    return BaseResponse._enrich_response(headers, body)


# --- Item sizes: the same numbers, without copying every map on the way ---------------


def attribute_size(self: Any) -> int:
    """moto's `DynamoType.size`: it wraps each member of a map in a new DynamoType (which
    copies its whole subtree) just to ask its size. Strings, the commonest, come first."""
    kind, value = self.type, self.value
    if kind == "S" and type(value) is str:
        return len(value.encode("utf-8"))
    if kind == "N":
        return len(str(value))
    if kind == "M":
        total = 0
        for name, member in value.items():
            total += _bytesize(name) + (attribute_size(member) if type(member) is _DynamoType
                                        else _DynamoType(member).size())
        return total
    if kind == "L":
        return sum(member.size() for member in value)
    if kind == "NS":
        return sum(len(str(member)) for member in value)
    if kind in ("SS", "BS"):
        return sum(1 if isinstance(member, bool) else _bytesize(member) for member in value)
    if isinstance(value, bool):
        return 1
    return _bytesize(value)


def _bytesize(value: str | bytes) -> int:
    return len(value if isinstance(value, bytes) else value.encode("utf-8"))


def item_size(self: Any) -> int:
    total = 0
    for name, value in self.attrs.items():
        total += _bytesize(name) + value.size()
    return total


def item_init(self: Any, hash_key: Any, range_key: Any, attrs: dict[str, Any]) -> None:
    """moto's `Item.__init__`, keeping the running size of the item.

    moto adds each attribute through `LimitedSizeDict.__setitem__`, which sums the size of
    every attribute already there: quadratic in the number of attributes. The keys of
    `attrs` are distinct, so the sum it computes is the running total kept here, and the
    same 405,000-byte check is made at the same point."""
    from moto.dynamodb.exceptions import ItemSizeTooLarge
    from moto.dynamodb.models.dynamo_type import DynamoType, LimitedSizeDict

    self.hash_key = hash_key
    self.range_key = range_key
    self.attrs = LimitedSizeDict()
    total = 0
    for key, value in attrs.items():
        attribute = DynamoType(value)
        size = _bytesize(str(key)) + attribute.size()
        if total + size > 405000:
            raise ItemSizeTooLarge
        dict.__setitem__(self.attrs, key, attribute)
        total += size


# --- Copies: moto's deep copies, each node copied directly -----------------------------


def attribute_deepcopy(self: Any, memo: dict[int, Any]) -> Any:
    """moto's `DynamoType.__deepcopy__`, copying the members of lists and maps itself
    rather than through `copy.deepcopy` for each (which finds its way back here)."""
    if id(self) in memo:
        return memo[id(self)]
    kind, value = self.type, self.value
    result = self.__class__.__new__(self.__class__)
    memo[id(self)] = result
    result.type = kind
    if kind == "L":
        result.value = [_copied(member, memo) for member in value]
    elif kind == "M":
        result.value = {name: _copied(member, memo) for name, member in value.items()}
    elif kind in ("SS", "NS", "BS"):
        result.value = list(value)
    else:
        result.value = value
    return result


def _copied(value: Any, memo: dict[int, Any]) -> Any:
    """`copy.deepcopy(value, memo)` for a DynamoType: one already copied in this copy is
    shared, as the memo makes it (the originals stay referenced by what is copied)."""
    if type(value) is not _DynamoType:
        return copy.deepcopy(value, memo)
    return attribute_deepcopy(value, memo)


def item_deepcopy(self: Any, memo: dict[int, Any]) -> Any:
    """moto's `Item.__deepcopy__` (which Query applies to every item of a page)."""
    from moto.dynamodb.models.dynamo_type import LimitedSizeDict

    if id(self) in memo:
        return memo[id(self)]
    result = self.__class__.__new__(self.__class__)
    memo[id(self)] = result
    result.hash_key = _copied(self.hash_key, memo)
    result.range_key = _copied(self.range_key, memo)
    attrs = LimitedSizeDict.__new__(LimitedSizeDict)
    dict.__init__(attrs)
    for key, value in self.attrs.items():
        dict.__setitem__(attrs, key, _copied(value, memo))
    result.attrs = attrs
    return result


# --- `python -m mailfleet_local.moto_speed`: moto's time for a job's requests ----------


def main() -> None:
    """Print moto's own time (inside its request dispatch, the GC paused) for the DynamoDB
    requests of one 1,000-host job, as the worker and the API send them: 40 BatchWriteItem
    of 25 results, 20 BatchGetItem of 100 host items, and twice the Query of the job's
    1,000 results (all pages), beside the results of 10 earlier jobs; with moto's own
    code and with this module's. In-process moto: the same handler path as its server."""
    import gc
    import os
    import time

    import boto3
    from moto import mock_aws
    from moto.core.responses import BaseResponse

    os.environ.pop("AWS_ENDPOINT_URL_DYNAMODB", None)
    install()
    spent = [0.0]
    dispatch = BaseResponse.__dict__["dispatch"]  # a classmethod

    def timed(cls: Any, *args: Any, **kwargs: Any) -> Any:
        started = time.perf_counter()
        try:
            return dispatch.__func__(cls, *args, **kwargs)
        finally:
            spent[0] += time.perf_counter() - started

    BaseResponse.dispatch = classmethod(timed)  # type: ignore[method-assign,assignment]
    with mock_aws():
        client = boto3.client("dynamodb", region_name="us-east-1")
        for name, keys in (("jobs", ("pk", "sk")), ("hosts", ("id",))):
            client.create_table(
                TableName=name, BillingMode="PAY_PER_REQUEST",
                KeySchema=[{"AttributeName": key, "KeyType": kind}
                           for key, kind in zip(keys, ("HASH", "RANGE"), strict=False)],
                AttributeDefinitions=[{"AttributeName": key, "AttributeType": "S"}
                                      for key in keys])
        resource = boto3.resource("dynamodb", region_name="us-east-1")
        with resource.Table("hosts").batch_writer() as batch:
            for host in range(1000):  # as bench/stack.py registers a fleet
                batch.put_item(Item={
                    "id": f"bench-{host:05d}", "kind": "dovecot",
                    "endpoint": f"http://127.0.0.1:{20000 + host}/doveadm/v1",
                    "tls": {"verify": True}, "tags": {"bench": "fleet"},
                    "max_concurrency": 4, "maintenance": False,
                    "credentials_secret": "mailfleet/hosts/fleet",
                    "doveadm_commands": {"fetched_at": 1_800_000_000,
                                         "commands_gz": os.urandom(1750)}})

        def result(job: int, host: int) -> dict[str, Any]:
            return {"PutRequest": {"Item": {
                "pk": {"S": f"job-{job}"}, "sk": {"S": f"result#bench-{host:05d}"},
                "host": {"S": f"bench-{host:05d}"}, "status": {"S": "succeeded"},
                "output": {"M": {"reloaded": {"BOOL": True}}}, "attempts": {"N": "1"},
                "duration_ms": {"N": "52"},
                "started_at": {"S": "2026-11-27T20:00:00.000000Z"},
                "finished_at": {"S": "2026-11-27T20:00:00.052000Z"},
                "expires_at": {"N": "1800000000"}}}}

        def job(number: int) -> float:
            gc.collect()
            gc.disable()
            spent[0] = 0.0
            try:
                for first in range(0, 1000, 100):
                    keys = [{"id": {"S": f"bench-{host:05d}"}}
                            for host in range(first, first + 100)]
                    for _ in range(2):
                        client.batch_get_item(RequestItems={"hosts": {
                            "Keys": keys, "ConsistentRead": True}})
                for first in range(0, 1000, 25):
                    client.batch_write_item(RequestItems={"jobs": [
                        result(number, host) for host in range(first, first + 25)]})
                for _ in range(2):
                    request: dict[str, Any] = {
                        "TableName": "jobs", "ConsistentRead": True,
                        "KeyConditionExpression": "pk = :p AND begins_with(sk, :r)",
                        "ExpressionAttributeValues": {":p": {"S": f"job-{number}"},
                                                      ":r": {"S": "result#"}}}
                    for _ in range(10):
                        page = client.query(**request)
                        if "LastEvaluatedKey" not in page:
                            break
                        request["ExclusiveStartKey"] = page["LastEvaluatedKey"]
                return spent[0]
            finally:
                gc.enable()
                if number >= 10:  # each timed job beside the same 10 others
                    with resource.Table("jobs").batch_writer() as batch:
                        for host in range(1000):
                            batch.delete_item(Key={"pk": f"job-{number}",
                                                   "sk": f"result#bench-{host:05d}"})

        for number in range(10):
            job(number)
        ours = min(job(number) for number in range(10, 13))
        with moto_itself(answers=False):
            answers_only = min(job(number) for number in range(13, 16))
        with moto_itself():
            moto = min(job(number) for number in range(16, 19))
    BaseResponse.dispatch = dispatch  # type: ignore[method-assign]
    print(f"moto's time for one 1,000-host job's DynamoDB requests, beside 10,000 "
          f"results (best of 3): moto {moto * 1000:.0f} ms, with only the answers "
          f"written directly {answers_only * 1000:.0f} ms, with moto_speed "
          f"{ours * 1000:.0f} ms")


if __name__ == "__main__":
    main()
