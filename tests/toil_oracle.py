"""Run code in Toil 9.6's own virtualenv (bench/.toil-venv): the behavioural oracle.

Toil is never imported into shoal's environment. Callers send JSON on stdin to a
small script run by the Toil venv's Python and read JSON back. When the venv is
missing (``make toil`` builds it), ``require_toil()`` skips the test and names it.
"""

from __future__ import annotations

import json
import subprocess
from pathlib import Path
from typing import Any

import pytest

__all__ = ["TOIL_PYTHON", "require_toil", "run_in_toil", "toil_binpack"]

ROOT = Path(__file__).resolve().parents[1]
TOIL_PYTHON = ROOT / "bench" / ".toil-venv" / "bin" / "python"

BINPACK_SCRIPT = r"""
import json, sys, time
from toil.provisioners.abstractProvisioner import Shape
from toil.provisioners.clusterScaler import binPacking

def shape(d):
    return Shape(d[0], d[1], d[2], d[3], d[4])

out = []
for case in json.load(sys.stdin):
    nodes = [shape(n) for n in case["nodes"]]
    jobs = [shape(j) for j in case["jobs"]]
    started = time.perf_counter()
    counts, failed = binPacking(nodes, jobs, case["target_time"])
    seconds = time.perf_counter() - started
    out.append({"total": sum(counts.values()), "seconds": seconds,
                "counts": [[[s.wallTime, s.memory, s.cores, s.disk, s.preemptible], n]
                           for s, n in counts.items()],
                "unschedulable": len(failed)})
json.dump(out, sys.stdout)
"""


def require_toil() -> None:
    if not TOIL_PYTHON.exists():
        pytest.skip(f"Toil oracle missing: {TOIL_PYTHON} (build it with `make toil`)")
    probe = subprocess.run(
        [str(TOIL_PYTHON), "-c", "import toil.provisioners.clusterScaler"],
        capture_output=True,
        text=True,
        check=False,
    )
    if probe.returncode != 0:
        pytest.skip(f"Toil oracle does not import in {TOIL_PYTHON}: {probe.stderr[-200:]}")


def run_in_toil(script: str, payload: Any, timeout: float = 300) -> Any:
    """Run ``script`` with the Toil venv's Python, ``payload`` as JSON on stdin; return its JSON."""
    done = subprocess.run(
        [str(TOIL_PYTHON), "-c", script],
        input=json.dumps(payload),
        capture_output=True,
        text=True,
        timeout=timeout,
        check=False,
    )
    if done.returncode != 0:
        raise RuntimeError(f"Toil oracle failed: {done.stderr[-2000:]}")
    return json.loads(done.stdout)


def toil_binpack(cases: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Toil's binPacking per case: {"nodes": [[w, m, c, d, p]...], "jobs": [...], "target_time"}"""
    return run_in_toil(BINPACK_SCRIPT, cases)
