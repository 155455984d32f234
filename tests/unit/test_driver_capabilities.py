"""Host-kind knowledge lives in the drivers: the logic layer asks a driver what it can do
(drivers/base.py, "capabilities") and never compares a host's kind to a kind of its own."""

from __future__ import annotations

import ast
from pathlib import Path

from mailfleet.models.hosts import HostKind

LOGIC = Path(__file__).resolve().parents[2] / "layers" / "mailfleet" / "mailfleet" / "logic"
KIND_NAMES = {k.value for k in HostKind}


def _names_a_kind(node: ast.AST) -> bool:
    """`HostKind.DOVECOT`, `"dovecot"`, or a tuple/list/set holding one."""
    if isinstance(node, ast.Attribute) and isinstance(node.value, ast.Name):
        return node.value.id == "HostKind"
    if isinstance(node, ast.Constant):
        return node.value in KIND_NAMES
    if isinstance(node, ast.Tuple | ast.List | ast.Set):
        return any(_names_a_kind(e) for e in node.elts)
    return False


def kind_comparisons(source: str) -> list[int]:
    """Lines where a comparison has a host kind on one side."""
    lines = []
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.Compare):
            if any(_names_a_kind(side) for side in (node.left, *node.comparators)):
                lines.append(node.lineno)
    return lines


def test_the_check_sees_kind_comparisons() -> None:
    seen = kind_comparisons(
        "if host['kind'] == HostKind.DOVECOT: pass\n"
        "if driver.kind != 'proxy': pass\n"
        "if kind in (HostKind.PROXY, HostKind.APPLIANCE): pass\n"
        "if kind is HostKind.PYMAP: pass\n"
        "if driver.describes_own_actions: pass\n"
    )
    assert seen == [1, 2, 3, 4]


def test_logic_never_compares_a_host_kind() -> None:
    found = {
        f"{path.name}:{line}"
        for path in sorted(LOGIC.rglob("*.py"))
        for line in kind_comparisons(path.read_text())
    }
    assert not found, f"ask the driver's capabilities instead of checking kind: {sorted(found)}"


def test_every_kind_declares_its_capabilities() -> None:
    from mailfleet.drivers import KINDS, driver_class, kind_for
    from mailfleet.drivers.base import HostRole

    for kind in KINDS:
        driver = driver_class(kind)
        probe = driver.health_probe
        # A static kind's probe is one of its own actions (a doveadm host lists its own).
        assert driver.describes_own_actions or probe.action in driver.static_actions(), kind
        assert driver.long_operations <= set(driver.static_actions()), kind
    assert kind_for(HostRole.PROXY) == HostKind.PROXY
    assert kind_for(HostRole.DIRECTOR) == kind_for(HostRole.BACKEND) == HostKind.DOVECOT


def test_one_walker_over_an_exceptions_causes() -> None:
    from mailfleet.drivers.http import causes, root_cause

    refused = ConnectionRefusedError("refused")
    try:
        try:
            raise refused
        except OSError as exc:
            raise RuntimeError("wrapped", exc) from None  # only as an argument
    except RuntimeError as wrapper:
        outer = ValueError("outer")
        outer.__cause__ = wrapper
        side = TimeoutError("beside the chain")
        outer.__context__ = side
        assert root_cause(outer) is refused
        assert list(causes(outer)) == [outer, wrapper, refused, side]
    loop = ValueError("loop")
    loop.__context__ = loop
    assert list(causes(loop)) == [loop]
