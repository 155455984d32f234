"""One driver per host kind. Drivers are imported lazily so a function only pays for
the kinds it uses (pymap pulls in grpclib and protobuf)."""

from __future__ import annotations

import functools
import importlib
from typing import TYPE_CHECKING

from mailfleet.models.hosts import HostKind

if TYPE_CHECKING:
    from mailfleet.drivers.base import Driver, HostRole

_MODULES: dict[HostKind, tuple[str, str]] = {
    HostKind.DOVECOT: ("mailfleet.drivers.dovecot", "DovecotDriver"),
    HostKind.PROXY: ("mailfleet.drivers.proxy", "ProxyDriver"),
    HostKind.APPLIANCE: ("mailfleet.drivers.appliance", "ApplianceDriver"),
    HostKind.PYMAP: ("mailfleet.drivers.pymap", "PymapDriver"),
}


KINDS: tuple[HostKind, ...] = tuple(_MODULES)


@functools.cache  # asked once per host of a fan-out: the import machinery each time was 2 us
def driver_class(kind: HostKind | str) -> type[Driver]:
    module_name, class_name = _MODULES[HostKind(kind)]
    return getattr(importlib.import_module(module_name), class_name)


def kind_for(role: HostRole) -> HostKind:
    """The one host kind whose driver plays `role` in cutovers and migrations."""
    kinds = [kind for kind in KINDS if role in driver_class(kind).roles]
    if len(kinds) != 1:
        raise LookupError(f"{len(kinds)} host kinds play the {role} role; one was expected")
    return kinds[0]
