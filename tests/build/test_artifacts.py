"""The artifacts `sam build` made (`make build`, run by `make test`), checked as Lambda
would load them: architectures, imports under Python 3.12, what the layer holds."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.build.artifacts import (
    BUILD,
    BUILD_X86,
    BuiltFunction,
    elf_machine,
    functions,
    import_handler,
    layer_dirs,
    require_build,
)

# Packages that only the local run and the tests use: never in what is deployed.
DEV_ONLY = {"mailfleet_local", "moto", "pytest", "_pytest", "cfnlint", "ruff", "werkzeug",
            "flask", "tests", "bench", "pymap", "responses"}


@pytest.fixture(scope="module")
def built() -> list[BuiltFunction]:
    require_build(BUILD)
    return functions(BUILD)


@pytest.fixture(scope="module")
def built_x86() -> list[BuiltFunction]:
    require_build(BUILD_X86)
    return functions(BUILD_X86)


def test_every_binary_matches_its_functions_architecture(built: list[BuiltFunction]) -> None:
    assert built, "no function in the built template"
    binaries = 0
    wrong = []
    for function in built:
        for root in [function.code, *function.layers]:
            for path in root.rglob("*"):
                shared = path.suffix in (".so", "") or ".so." in path.name
                if not (path.is_file() and shared):
                    continue
                machine = elf_machine(path)
                if machine is None:
                    continue
                binaries += 1
                if machine not in function.architectures:
                    wrong.append(f"{function.logical_id} ({function.architectures}): "
                                 f"{path.relative_to(BUILD)} is {machine}")
    assert binaries, "no compiled module found: pydantic_core should be in the layer"
    assert not wrong, "\n".join(wrong[:20]) + f"\n({len(wrong)} in all)"


def test_every_handler_imports_under_python312_from_the_artifact_alone(
    built_x86: list[BuiltFunction],
) -> None:
    for function in built_x86:
        probe = import_handler(function)
        assert probe["version"].startswith("3.12."), probe["version"]
        assert probe["outside"] == [], (
            f"{function.logical_id} loaded modules from outside its artifact: "
            f"{probe['outside'][:5]}")


def test_the_layer_holds_runtime_code_only(built: list[BuiltFunction]) -> None:
    layers = layer_dirs(BUILD)
    assert layers
    for layer_id, root in layers.items():
        site = root / "python"
        top = {p.name.split(".")[0].split("-")[0] for p in site.iterdir()}
        assert not top & DEV_ONLY, f"{layer_id} holds dev-only packages {sorted(top & DEV_ONLY)}"
        for path in (site / "mailfleet").rglob("*.py"):
            text = path.read_text()
            for name in ("mailfleet_local", "moto", "pytest"):
                assert f"import {name}" not in text and f"from {name}" not in text, (
                    f"{path.relative_to(BUILD)} imports {name}")


def test_every_module_is_precompiled_for_python312(built: list[BuiltFunction]) -> None:
    """/var/task and /opt are read-only: without bytecode each cold start compiles."""
    roots = {f.code for f in built} | {p for f in built for p in f.layers}
    missing = []
    for root in roots:
        for source in root.rglob("*.py"):
            pyc = source.parent / "__pycache__" / f"{source.stem}.cpython-312.pyc"
            if not pyc.is_file():
                missing.append(str(source.relative_to(BUILD)))
    assert not missing, f"{len(missing)} modules without 3.12 bytecode, e.g. {missing[:5]}"


def test_built_template_still_names_the_handlers(built: list[BuiltFunction]) -> None:
    for function in built:
        module = function.handler.rpartition(".")[0].replace(".", "/")
        assert Path(function.code, f"{module}.py").is_file(), function.logical_id
