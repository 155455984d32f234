"""What `make build` produced in .aws-sam/, read as Lambda would: the functions of the
built template, each with its code folder, its layers' folders and its architectures.
Shared by tests/build and bench/imports."""

from __future__ import annotations

import json
import os
import subprocess
from dataclasses import dataclass
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[2]
BUILD = REPO / ".aws-sam" / "build"
BUILD_X86 = REPO / ".aws-sam" / "build-x86_64"
RUNTIME_BOTO3 = REPO / ".aws-sam" / "runtime-boto3"
ELF_MACHINES = {0x3E: "x86_64", 0xB7: "arm64"}
_FUNCTION = "AWS::Serverless::Function"
_LAYERS = ("AWS::Serverless::LayerVersion", "AWS::Lambda::LayerVersion")


@dataclass
class BuiltFunction:
    logical_id: str
    handler: str
    code: Path
    layers: list[Path]  # each layer's root (its `python/` is on sys.path)
    architectures: list[str]
    environment: dict[str, Any]


def load_template(build_dir: Path) -> dict[str, Any]:
    from cfnlint.decode import cfn_yaml

    return dict(cfn_yaml.load(str(build_dir / "template.yaml")))


def functions(build_dir: Path) -> list[BuiltFunction]:
    template = load_template(build_dir)
    glob = template.get("Globals", {}).get("Function", {})
    resources = template["Resources"]
    found = []
    for logical_id, resource in resources.items():
        if resource["Type"] != _FUNCTION:
            continue
        props = {**glob, **resource.get("Properties", {})}
        layers = []
        for ref in props.get("Layers", []):
            layer_id = ref.get("Ref") if isinstance(ref, dict) else None
            if layer_id in resources and resources[layer_id]["Type"] in _LAYERS:
                layer_props = resources[layer_id]["Properties"]
                uri = layer_props.get("ContentUri") or layer_props.get("Content")
                layers.append(build_dir / str(uri))
        env = {**glob.get("Environment", {}).get("Variables", {}),
               **resource.get("Properties", {}).get("Environment", {}).get("Variables", {})}
        params = template.get("Parameters", {})
        for key, value in env.items():  # a parameter's default stands for its reference
            ref = value.get("Ref") if isinstance(value, dict) else None
            if ref in params and "Default" in params[ref]:
                env[key] = str(params[ref]["Default"])
        found.append(BuiltFunction(
            logical_id, props["Handler"], build_dir / str(props["CodeUri"]), layers,
            list(props.get("Architectures", ["x86_64"])), env))
    return sorted(found, key=lambda f: f.logical_id)


def layer_dirs(build_dir: Path) -> dict[str, Path]:
    template = load_template(build_dir)
    return {lid: build_dir / str(r["Properties"].get("ContentUri"))
            for lid, r in template["Resources"].items() if r["Type"] in _LAYERS}


def elf_machine(path: Path) -> str | None:
    """The architecture an ELF file is built for (None if it is not ELF)."""
    with path.open("rb") as f:
        head = f.read(20)
    if len(head) < 20 or head[:4] != b"\x7fELF":
        return None
    little = head[5] == 1
    machine = int.from_bytes(head[18:20], "little" if little else "big")
    return ELF_MACHINES.get(machine, hex(machine))


def python312() -> str:
    """Lambda's runtime version on this machine: pyenv's 3.12, or python3.12 on PATH."""
    try:
        root = subprocess.run(["pyenv", "root"], capture_output=True, text=True,
                              check=True, timeout=30).stdout.strip()
        candidates = sorted(Path(root, "versions").glob("3.12*/bin/python3.12"))
        if candidates:
            return str(candidates[-1])
    except (OSError, subprocess.SubprocessError):
        pass
    return "python3.12"


def runtime_env(function: BuiltFunction) -> dict[str, str]:
    """The variables Lambda sets, plus the function's own (placeholders for references):
    nothing from this shell (no PYTHONPATH, no venv, no user site)."""
    env = {
        "PATH": "/usr/bin:/bin", "LANG": "C.UTF-8", "PYTHONNOUSERSITE": "1",
        "AWS_REGION": "us-east-1", "AWS_DEFAULT_REGION": "us-east-1",
        "AWS_LAMBDA_FUNCTION_NAME": function.logical_id,
        "AWS_LAMBDA_FUNCTION_MEMORY_SIZE": "512", "LAMBDA_TASK_ROOT": str(function.code),
        "AWS_ACCESS_KEY_ID": "testing", "AWS_SECRET_ACCESS_KEY": "testing",
        "POWERTOOLS_TRACE_DISABLED": "true", "POWERTOOLS_METRICS_DISABLED": "true",
    }
    for key, value in function.environment.items():
        env[key] = value if isinstance(value, str | int | float) and not isinstance(
            value, bool) else f"placeholder-{key.lower()}"
        env[key] = str(env[key])
    return env


# Runs in a bare 3.12 (-I -S: no site-packages, no PYTHON* variables). The import roots
# come in argv; afterwards every loaded module must come from them or the stdlib.
IMPORT_PROBE = r"""
import json, sys, sysconfig, time, importlib
roots = json.loads(sys.argv[1]); handler = sys.argv[2]
sys.path[:0] = roots
t0, c0 = time.perf_counter(), time.process_time()
import boto3
from aws_lambda_powertools import Logger, Metrics, Tracer
Logger(); Metrics(); Tracer()
t1, c1 = time.perf_counter(), time.process_time()
module, _, attr = handler.rpartition(".")
func = getattr(importlib.import_module(module), attr)
t2, c2 = time.perf_counter(), time.process_time()
assert callable(func), handler
stdlib = {sysconfig.get_paths()[k] for k in ("stdlib", "platstdlib")}
outside = sorted({getattr(m, "__file__", None) or "" for m in list(sys.modules.values())
                  if getattr(m, "__file__", None)
                  and not any(m.__file__.startswith(p) for p in [*roots, *stdlib])})
# CPU seconds too: on a busy machine they vary far less than the wall clock.
print(json.dumps({"baseline_s": t1 - t0, "own_s": t2 - t1, "outside": outside,
                  "baseline_cpu_s": c1 - c0, "own_cpu_s": c2 - c1,
                  "version": sys.version.split()[0]}))
"""


def import_handler(function: BuiltFunction, python: str | None = None) -> dict[str, Any]:
    roots = [str(function.code), *(str(p / "python") for p in function.layers),
             str(RUNTIME_BOTO3)]
    done = subprocess.run(
        [python or python312(), "-I", "-S", "-c", IMPORT_PROBE, json.dumps(roots),
         function.handler],
        cwd=function.code, env=runtime_env(function), capture_output=True, text=True,
        timeout=120, check=False,
    )
    if done.returncode != 0:
        raise AssertionError(f"{function.logical_id} ({function.handler}) does not import "
                             f"under 3.12 from the artifact:\n{done.stderr[-3000:]}")
    return dict(json.loads(done.stdout.strip().splitlines()[-1]))


def tree_size(root: Path) -> tuple[int, int]:
    """Bytes and files under a folder (what the zip would hold, uncompressed)."""
    size = count = 0
    for dirpath, _dirs, files in os.walk(root):
        for name in files:
            size += (Path(dirpath) / name).stat().st_size
            count += 1
    return size, count


def require_build(build_dir: Path) -> None:
    """Fail under `make test` (it builds first); skip with a reason otherwise."""
    import pytest

    if (build_dir / "template.yaml").is_file():
        return
    message = f"{build_dir.relative_to(REPO)} is missing: `make build` (make test does it)"
    if os.environ.get("MAILFLEET_REQUIRE_BUILD"):
        pytest.fail(message)
    pytest.skip(message)

