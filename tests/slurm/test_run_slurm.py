"""``make run-slurm``: the demo starts a cluster, shoal and its hooks, and stops all of it."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

import pytest
from slurm.cluster import missing_requirements

pytestmark = pytest.mark.slurm
SCRIPT = Path(__file__).resolve().parents[2] / "scripts" / "run_slurm.py"


def processes_mentioning(text: bytes) -> list[int]:
    """Live processes whose environment or command line mentions ``text``."""
    found = []
    for proc in Path("/proc").iterdir():
        if not proc.name.isdigit():
            continue
        try:
            seen = (proc / "environ").read_bytes() + (proc / "cmdline").read_bytes()
            state = (proc / "stat").read_text().rsplit(")", 1)[1].split()[0]
        except OSError:
            continue
        if state != "Z" and text in seen:
            found.append(int(proc.name))
    return found


def test_the_demo_runs_a_job_on_nodes_shoal_starts_then_stops_everything() -> None:
    reason = missing_requirements()
    if reason:
        pytest.skip(reason)
    result = subprocess.run(
        [sys.executable, str(SCRIPT), "--smoke", "--nodes", "2"],
        capture_output=True,
        text=True,
        timeout=180,
    )
    assert result.returncode == 0, result.stdout + result.stderr
    match = re.search(r"run-slurm: directory (\S+)", result.stdout)
    assert match is not None, result.stdout
    hosts = [line for line in result.stdout.splitlines() if not line.startswith("run-slurm:")]
    assert len(hosts) == 2, result.stdout
    assert "stopped shoal, 2 slurmd(s), slurmctld and munged" in result.stdout
    assert processes_mentioning(match.group(1).encode()) == []
    assert not Path(match.group(1)).exists()
