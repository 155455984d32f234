"""Powertools' REST resolver keeps the request it is answering in shared state (the class
attributes BaseRouter.current_event and lambda_context, the resolver's `context` dict):
right on Lambda, where a container answers one event at a time, but here every function
runs in-process and the front answers many clients at once, so two requests would read
each other's event (another caller's role, another route's arguments). This makes that
state per thread, as if each request had its own container. Local only."""

from __future__ import annotations

import threading
from collections.abc import Callable
from typing import Any

_local = threading.local()


class _PerThread:
    """A data descriptor holding one value per thread (and, for instance state, per object)."""

    def __init__(self, name: str, default: Callable[[], Any], per_object: bool) -> None:
        self.name = name
        self.default = default
        self.per_object = per_object

    def _store(self) -> dict[Any, Any]:
        store = getattr(_local, "values", None)
        if store is None:
            store = _local.values = {}
        return store

    def _key(self, obj: Any) -> Any:
        return (self.name, id(obj)) if self.per_object else self.name

    def __get__(self, obj: Any, owner: Any = None) -> Any:
        store, key = self._store(), self._key(obj)
        if key not in store:
            store[key] = self.default()
        return store[key]

    def __set__(self, obj: Any, value: Any) -> None:
        self._store()[self._key(obj)] = value


def install() -> None:
    """Idempotent; call before the handlers' resolvers answer anything."""
    from aws_lambda_powertools.event_handler import api_gateway

    base = api_gateway.BaseRouter
    if getattr(base, "_mailfleet_per_thread", False):
        return
    shared = {name: _PerThread(name, lambda: None, per_object=False)
              for name in ("current_event", "lambda_context")}

    # Class-level writes (BaseRouter.current_event = ...) go through the metaclass.
    meta = type("PerThreadRouterMeta", (type(base),), dict(shared))
    for name, descriptor in shared.items():
        type.__setattr__(base, name, descriptor)  # instance-level reads and writes
    base.__class__ = meta
    type.__setattr__(api_gateway.ApiGatewayResolver, "context",
                     _PerThread("context", dict, per_object=True))
    type.__setattr__(base, "_mailfleet_per_thread", True)
