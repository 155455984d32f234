"""Cold import time of each function's handler module, in fresh interpreters: first what
a handler with nothing but boto3 and Powertools imports (Logger, Metrics and Tracer
made, as every function does), then the function's own module on top, in the same
interpreter. Timing both in one process keeps the share each function adds steady on a
machine whose speed drifts from run to run."""

from __future__ import annotations

import json
import os
import statistics
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
FUNCTIONS = REPO / "functions"

BASELINE = (
    "import boto3\n"
    "from aws_lambda_powertools import Logger, Metrics, Tracer\n"
    "Logger(); Metrics(); Tracer()\n"
)
_PROBE = """
import json, sys, time
sys.path.insert(0, {code_dir!r})
t0 = time.perf_counter()
{baseline}
t1 = time.perf_counter()
import pydantic
from pydantic import BaseModel, Field
t2 = time.perf_counter()
import app
t3 = time.perf_counter()
print(json.dumps([t1 - t0, t2 - t1, t3 - t2]))
"""


@dataclass
class ImportTime:
    name: str
    baseline_s: float  # boto3 + Powertools, median over the runs
    pydantic_s: float  # pydantic on top (every function's models use it)
    own_s: float  # the function's module on top of both, median
    share: float  # (pydantic + own) / baseline, median over the runs

    @property
    def total_s(self) -> float:
        return self.baseline_s + self.pydantic_s + self.own_s


def _env() -> dict[str, str]:
    env = dict(os.environ)
    env.update(
        AWS_DEFAULT_REGION=env.get("AWS_DEFAULT_REGION", "us-east-1"),
        POWERTOOLS_TRACE_DISABLED="true",
        POWERTOOLS_METRICS_NAMESPACE="mailfleet",
        POWERTOOLS_SERVICE_NAME="mailfleet",
    )
    return env


def measure(code_dir: Path, runs: int) -> ImportTime:
    probe = _PROBE.format(code_dir=str(code_dir), baseline=BASELINE)
    samples = []
    for _ in range(runs + 1):  # the first run compiles bytecode, as a deployment would
        out = subprocess.run(
            [sys.executable, "-c", probe], cwd=code_dir, env=_env(), check=True,
            capture_output=True, text=True, timeout=120,
        )
        samples.append(json.loads(out.stdout.strip().splitlines()[-1]))
    samples = samples[1:]
    base, pyd, own = (statistics.median(s[i] for s in samples) for i in range(3))
    share = statistics.median((s[1] + s[2]) / s[0] for s in samples)
    return ImportTime(code_dir.name, base, pyd, own, share)


def function_dirs() -> list[Path]:
    return sorted(p for p in FUNCTIONS.iterdir() if (p / "app.py").is_file())


def run(runs: int = 7) -> list[ImportTime]:
    return [measure(code_dir, runs) for code_dir in function_dirs()]


@dataclass
class ArtifactImport:
    name: str
    baseline_s: float  # boto3 + Powertools from the artifact, median
    own_s: float  # the handler module on top, median
    baseline_cpu_s: float  # the same in CPU time (steadier on a shared machine)
    own_cpu_s: float

    @property
    def total_s(self) -> float:
        return self.baseline_s + self.own_s


def artifact_run(runs: int = 5) -> list[ArtifactImport]:
    """Each handler imported as Lambda would (Python 3.12, -I -S, the built x86_64 copy of
    the template: function folder + layer + runtime boto3, with the shipped bytecode)."""
    from tests.build.artifacts import BUILD_X86, functions, import_handler

    if not (BUILD_X86 / "template.yaml").is_file():
        return []
    found = []
    for function in functions(BUILD_X86):
        samples = [import_handler(function) for _ in range(runs + 1)][1:]
        found.append(ArtifactImport(
            function.logical_id,
            statistics.median(s["baseline_s"] for s in samples),
            statistics.median(s["own_s"] for s in samples),
            statistics.median(s["baseline_cpu_s"] for s in samples),
            statistics.median(s["own_cpu_s"] for s in samples)))
    return found


def layer_sizes() -> list[tuple[str, int, int]]:
    """(layer or function, bytes, files) of the arm64 build as deployed, uncompressed."""
    from tests.build.artifacts import BUILD, functions, layer_dirs, tree_size

    if not (BUILD / "template.yaml").is_file():
        return []
    rows = [(name, *tree_size(path)) for name, path in layer_dirs(BUILD).items()]
    rows += [(f.logical_id, *tree_size(f.code)) for f in functions(BUILD)]
    return rows
