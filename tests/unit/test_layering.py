"""The runtime package's layering, read from its source with `ast` (nothing is imported):
no import cycle among `mailfleet` modules, and no module reaching into another module's
private (underscore) names. Both are how the pieces start calling each other's insides;
a failure names the modules and lines to fix.

Counted as imports: every `import`/`from ... import` that runs, at module level or inside a
function (a late import still ties the two modules together); not those under
`if TYPE_CHECKING:`, which never run.

Counted as private use, in a module other than the one defining the name:
- `from mailfleet.x import _name`, or `x._name` on an imported mailfleet module or on a
  class imported from one;
- `something._name` on any other object (`self.jobs._close(...)`, `super()._start(...)`)
  when `_name` is defined only in other mailfleet modules (a method, class attribute or
  `self._name` of theirs): the object is, in all likelihood, one of theirs.
`self._name` and `cls._name` are a class's own business and never counted.
"""

from __future__ import annotations

import ast
import functools
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2] / "layers" / "mailfleet"
PACKAGE = "mailfleet"


@dataclass
class Module:
    name: str
    path: Path
    tree: ast.Module
    is_package: bool
    imports: dict[str, int] = field(default_factory=dict)  # module -> first line
    defines: set[str] = field(default_factory=set)  # private names defined here


def _modules() -> dict[str, Module]:
    out = {}
    for path in sorted((ROOT / PACKAGE).rglob("*.py")):
        parts = list(path.relative_to(ROOT).with_suffix("").parts)
        is_package = parts[-1] == "__init__"
        if is_package:
            parts.pop()
        name = ".".join(parts)
        out[name] = Module(name, path, ast.parse(path.read_text(), str(path)), is_package)
    return out


def _is_type_checking(test: ast.expr) -> bool:
    return (isinstance(test, ast.Name) and test.id == "TYPE_CHECKING") or (
        isinstance(test, ast.Attribute) and test.attr == "TYPE_CHECKING"
    )


def _runtime_nodes(tree: ast.AST) -> Iterator[ast.AST]:
    """Every node that can run (the bodies of `if TYPE_CHECKING:` left out)."""
    stack: list[ast.AST] = [tree]
    while stack:
        node = stack.pop()
        yield node
        if isinstance(node, ast.If) and _is_type_checking(node.test):
            stack.extend(node.orelse)
            continue
        stack.extend(ast.iter_child_nodes(node))


def _absolute(module: Module, node: ast.ImportFrom) -> str:
    if not node.level:
        return node.module or ""
    base = module.name.split(".")
    if not module.is_package:
        base.pop()
    base = base[: len(base) - (node.level - 1)]
    return ".".join(base + ([node.module] if node.module else []))


def _private(name: str) -> bool:
    return name.startswith("_") and not (name.startswith("__") and name.endswith("__"))


@dataclass
class Findings:
    modules: dict[str, Module]
    private_uses: list[str]


@functools.cache
def _read() -> Findings:
    """Every module read once, in one walk of its tree."""
    modules = _modules()
    attributes: dict[str, list[ast.Attribute]] = {}
    bound: dict[str, dict[str, str]] = {}
    private_uses: list[str] = []
    for module in modules.values():
        # Local names bound to a mailfleet module, or to a class/function of one.
        names = bound[module.name] = {}
        found = attributes[module.name] = []
        for node in _runtime_nodes(module.tree):
            _note_private_definition(node, module.defines)
            if isinstance(node, ast.Attribute) and _private(node.attr):
                found.append(node)
            elif isinstance(node, ast.Import):
                for alias in node.names:
                    if alias.name.split(".")[0] != PACKAGE:
                        continue
                    _add_import(module, alias.name, node.lineno, modules)
                    if alias.asname:
                        names[alias.asname] = alias.name
            elif isinstance(node, ast.ImportFrom):
                source = _absolute(module, node)
                if source.split(".")[0] != PACKAGE:
                    continue
                for alias in node.names:
                    child = f"{source}.{alias.name}"
                    target = child if child in modules else source
                    _add_import(module, target, node.lineno, modules)
                    names[alias.asname or alias.name] = target
                    if _private(alias.name) and target != module.name:
                        private_uses.append(
                            f"{module.name}:{node.lineno} imports {alias.name} from {source}"
                        )
    for module in modules.values():
        private_uses.extend(_attribute_uses(module, attributes[module.name],
                                            bound[module.name], modules))
    return Findings(modules, private_uses)


def _add_import(module: Module, target: str, line: int, modules: dict[str, Module]) -> None:
    # Importing a.b.c runs the packages a.b and a too; a package's __init__ that imports
    # its children would close a cycle, so the packages are edges as well.
    parts = target.split(".")
    for end in range(len(parts), 0, -1):
        name = ".".join(parts[:end])
        if name in modules and name != module.name:
            module.imports.setdefault(name, line)


def _note_private_definition(node: ast.AST, defines: set[str]) -> None:
    name = None
    if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef | ast.ClassDef):
        name = node.name
    elif isinstance(node, ast.Name) and isinstance(node.ctx, ast.Store):
        name = node.id
    elif isinstance(node, ast.Attribute) and isinstance(node.ctx, ast.Store):
        name = node.attr
    elif isinstance(node, ast.arg):
        name = node.arg
    elif isinstance(node, ast.keyword):
        name = node.arg  # a dataclass/model built with _field=... is its own
    if name and _private(name):
        defines.add(name)


def _attribute_uses(module: Module, attributes: list[ast.Attribute], bound: dict[str, str],
                    modules: dict[str, Module]) -> Iterator[str]:
    defined_elsewhere: dict[str, str] = {}
    for other in modules.values():
        if other.name != module.name:
            for name in other.defines:
                defined_elsewhere.setdefault(name, other.name)
    for node in attributes:
        owner = node.value
        if isinstance(owner, ast.Name) and owner.id in bound:
            if bound[owner.id] != module.name:
                yield (f"{module.name}:{node.lineno} uses {owner.id}.{node.attr} "
                       f"({bound[owner.id]})")
            continue
        if isinstance(owner, ast.Name) and owner.id in ("self", "cls"):
            continue
        if node.attr in module.defines or node.attr not in defined_elsewhere:
            continue
        yield (f"{module.name}:{node.lineno} uses .{node.attr} "
               f"(defined in {defined_elsewhere[node.attr]})")


def import_cycles(modules: dict[str, Module]) -> list[list[str]]:
    """The strongly connected components of more than one module (Tarjan, iterative)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    on_stack: set[str] = set()
    stack: list[str] = []
    found: list[list[str]] = []
    counter = 0
    for root in modules:
        if root in index:
            continue
        work = [(root, iter(modules[root].imports))]
        index[root] = low[root] = counter
        counter += 1
        stack.append(root)
        on_stack.add(root)
        while work:
            node, children = work[-1]
            for child in children:
                if child not in index:
                    index[child] = low[child] = counter
                    counter += 1
                    stack.append(child)
                    on_stack.add(child)
                    work.append((child, iter(modules[child].imports)))
                    break
                if child in on_stack:
                    low[node] = min(low[node], index[child])
            else:
                work.pop()
                if work:
                    parent = work[-1][0]
                    low[parent] = min(low[parent], low[node])
                if low[node] == index[node]:
                    component = []
                    while True:
                        member = stack.pop()
                        on_stack.discard(member)
                        component.append(member)
                        if member == node:
                            break
                    if len(component) > 1:
                        found.append(sorted(component))
    return found


def _describe(cycle: list[str], modules: dict[str, Module]) -> str:
    members = set(cycle)
    edges = [f"{m} -> {t} (line {line})" for m in cycle
             for t, line in modules[m].imports.items() if t in members]
    return "; ".join(edges)


def test_the_reader_sees_a_cycle_and_a_private_use(tmp_path: Path) -> None:
    """The checks themselves: a planted cycle and a planted private use are found."""
    tree_a = ast.parse("from mailfleet.b import thing\nthing._hidden()\n")
    tree_b = ast.parse("def f():\n    from mailfleet.a import _helper\n")
    tree_c = ast.parse("from typing import TYPE_CHECKING\nif TYPE_CHECKING:\n"
                       "    from mailfleet.a import x\nclass C:\n    def _hidden(self): ...\n")
    modules = {n: Module(n, tmp_path, t, False)
               for n, t in (("mailfleet.a", tree_a), ("mailfleet.b", tree_b),
                            ("mailfleet.c", tree_c))}
    modules["mailfleet.a"].imports = {"mailfleet.b": 1}
    modules["mailfleet.b"].imports = {"mailfleet.a": 2}
    assert import_cycles(modules) == [["mailfleet.a", "mailfleet.b"]]
    attributes: dict[str, list[ast.Attribute]] = {}
    for module in modules.values():
        attributes[module.name] = []
        for node in _runtime_nodes(module.tree):
            _note_private_definition(node, module.defines)
            if isinstance(node, ast.Attribute) and _private(node.attr):
                attributes[module.name].append(node)
    uses = list(_attribute_uses(modules["mailfleet.a"], attributes["mailfleet.a"], {}, modules))
    assert uses == ["mailfleet.a:2 uses ._hidden (defined in mailfleet.c)"]
    nodes = list(_runtime_nodes(tree_c))
    assert not any(isinstance(n, ast.ImportFrom) and n.module == "mailfleet.a" for n in nodes)


def test_no_import_cycle_among_mailfleet_modules() -> None:
    findings = _read()
    cycles = import_cycles(findings.modules)
    assert not cycles, "import cycles:\n" + "\n".join(
        _describe(c, findings.modules) for c in cycles)


def test_no_module_uses_another_modules_private_names() -> None:
    uses = _read().private_uses
    assert not uses, f"{len(uses)} private names used across modules:\n" + "\n".join(uses)
