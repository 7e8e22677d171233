"""The README's examples, checked against the code that answers them: the quick start's demand
push plans on ``config.example.yaml`` with every job fitting a node type."""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

import pytest
from shoal.daemon.cli import main
from shoal.scaler.planner import WAITING_REASONS

ROOT = Path(__file__).resolve().parent.parent
README = ROOT / "README.md"
EXAMPLE = ROOT / "config.example.yaml"


def quick_start_body(text: str) -> dict[str, Any]:
    section = text[text.index("## Quick start") : text.index("## Other commands")]
    match = re.search(r"-X PUT \S+/v1/demand \\\n\s*-d '(.*?)'", section, flags=re.S)
    assert match is not None
    return json.loads(match.group(1))


def plan(capsys: pytest.CaptureFixture[str], config: Path, body: dict, tmp: Path) -> dict:
    demand = tmp / "demand.json"
    demand.write_text(json.dumps(body))
    assert main(["plan", "-c", str(config), "--demand", str(demand), "--now", "0"]) == 0
    return json.loads(capsys.readouterr().out)


def never_fit(planned: dict) -> list[dict]:
    """The plan's jobs that no node type can hold (shoal_jobs_unschedulable), as opposed to
    those waiting for a type's max, the cost ceiling or capacity."""
    return [u for u in planned["unschedulable"] if set(u["reasons"]) - set(WAITING_REASONS)]


def test_the_quick_start_push_fits_the_example_config(
    capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    body = quick_start_body(README.read_text())
    gangs = [job for job in body["jobs"] if job.get("node_count", 1) > 1]
    assert gangs, "the quick start shows a multi-node job"
    planned = plan(capsys, EXAMPLE, body, tmp_path)
    assert never_fit(planned) == []
    assert any(launch.get("gangs") for launch in planned["launches"])


def test_the_fit_check_sees_a_job_no_node_type_holds(
    capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    body = quick_start_body(README.read_text())
    body["jobs"].append({"cores": 4, "memory": "64GiB", "node_count": 2})
    assert [u["reasons"] for u in never_fit(plan(capsys, EXAMPLE, body, tmp_path))] == [["memory"]]
