"""The README's examples, checked against the code that answers them: the quick start's demand
push plans on ``config.example.yaml`` with every job fitting a node type, and the slurm.conf
lines it shows for both Slurm modes are the lines ``shoal slurm-conf`` writes for the README's
own Slurm config."""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

import pytest
import yaml
from shoal.daemon.cli import main
from shoal.scaler.planner import WAITING_REASONS

ROOT = Path(__file__).resolve().parent.parent
README = ROOT / "README.md"
EXAMPLE = ROOT / "config.example.yaml"
# What the README's slurm.conf lines say of the config around its "shoal config" block.
SLURM_CLUSTER = {
    "cluster_name": "demo",
    "provider": {"kind": "simulated", "zone": "sim-1a"},
    "node_types": [{"type": "c5.xlarge", "max": 16}, {"type": "r5.large", "max": 8}],
}
BIN_DIR = "/opt/shoal/bin"  # deploy/README.md's virtualenv


def indented_block(text: str, marker: str) -> str:
    """The first markdown code block indented by four spaces after ``marker``, dedented."""
    rest = text[text.index(marker) + len(marker) :]
    match = re.search(r"(?:^    .*\n|^\n)*?((?:^    .*\n)+)", rest, flags=re.M)
    assert match is not None, marker
    return "".join(line[4:] for line in match.group(1).splitlines(keepends=True))


def conf_lines(text: str) -> list[str]:
    """slurm.conf lines without comments (slurm.conf: "#" to the end of the line) or blanks."""
    lines = (re.sub(r"\s*#.*", "", line).strip() for line in text.splitlines())
    return [line for line in lines if line]


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


def readme_slurm_config(text: str, tmp: Path, mode: str) -> Path:
    block = yaml.safe_load(indented_block(text, "### shoal config"))
    assert block["slurm"]["mode"] == "power_save"
    if mode == "external":  # slurm.node_types names power_save's nodes
        block["slurm"] = {**block["slurm"], "mode": "external"}
        del block["slurm"]["node_types"]
    path = tmp / f"{mode}.yaml"
    path.write_text(yaml.safe_dump({**SLURM_CLUSTER, **block}))
    return path


def slurm_conf(capsys: pytest.CaptureFixture[str], config: Path) -> list[str]:
    assert main(["slurm-conf", "-c", str(config), "--bin-dir", BIN_DIR]) == 0
    return conf_lines(capsys.readouterr().out)


@pytest.mark.parametrize(
    ("mode", "marker"),
    [("power_save", "it writes\nthese lines"), ("external", "### slurm.conf (external)")],
)
def test_the_readme_shows_the_slurm_conf_lines_shoal_writes(
    capsys: pytest.CaptureFixture[str], tmp_path: Path, mode: str, marker: str
) -> None:
    text = README.read_text()
    shown = conf_lines(indented_block(text, marker))
    assert shown == slurm_conf(capsys, readme_slurm_config(text, tmp_path, mode))


def test_the_slurm_conf_comparison_sees_a_stale_line(
    capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    text = README.read_text()
    stale = text.replace("RealMemory=6248", "RealMemory=7500", 1)
    assert stale != text
    shown = conf_lines(indented_block(stale, "it writes\nthese lines"))
    assert shown != slurm_conf(capsys, readme_slurm_config(text, tmp_path, "power_save"))
