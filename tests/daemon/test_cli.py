from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
from shoal.daemon.cli import main
from shoal.scaler.model import GiB
from shoal.scaler.shape import Shape

ROOT = Path(__file__).resolve().parents[2]
EXAMPLE = ROOT / "config.example.yaml"

TEST_CATALOGUE = {
    "instance_types": {
        "c5.xlarge": {"cores": 4, "memory_gib": 8, "on_demand_price": 0.17, "spot_price": 0.06},
        "c5a.xlarge": {"cores": 4, "memory_gib": 8, "on_demand_price": 0.154, "spot_price": 0.05},
        "r5.large": {"cores": 2, "memory_gib": 16, "on_demand_price": 0.126, "spot_price": 0.04},
    }
}


@pytest.fixture
def catalogue(tmp_path: Path) -> Path:
    path = tmp_path / "catalogue.json"
    path.write_text(json.dumps(TEST_CATALOGUE))
    return path


def test_config_schema(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["config-schema"]) == 0
    schema = json.loads(capsys.readouterr().out)
    assert schema["type"] == "object"
    assert schema["additionalProperties"] is False
    assert {"cluster_name", "provider", "node_types", "scaler", "api"} <= set(schema["properties"])
    assert "discriminator" in json.dumps(schema["properties"]["provider"])
    defs = schema["$defs"]
    assert defs["ScalerConfig"]["additionalProperties"] is False
    assert defs["ScalerConfig"]["properties"]["beta_inertia"]["exclusiveMaximum"] == 1


def test_version_and_python_m() -> None:
    res = subprocess.run(
        [sys.executable, "-m", "shoal.daemon", "--version"],
        capture_output=True,
        text=True,
        cwd=ROOT,
    )
    assert res.returncode == 0 and res.stdout.startswith("shoal ")
    res = subprocess.run(
        [sys.executable, "-m", "shoal.daemon", "check-config", str(EXAMPLE)],
        capture_output=True,
        text=True,
        cwd=ROOT,
    )
    assert (res.returncode, res.stdout.strip()) == (0, "OK")


def test_a_reader_that_leaves_early_gets_no_traceback() -> None:
    """``shoal config-schema | head -1``: the pipe closes under the writer; before, Python's
    BrokenPipeError traceback followed the line head printed. The reader here is gone
    before the command starts, so its first write meets the closed pipe every time."""
    read, write = os.pipe()
    os.close(read)
    try:
        res = subprocess.run(
            [sys.executable, "-m", "shoal.daemon", "config-schema"],
            stdout=write,
            stderr=subprocess.PIPE,
            cwd=ROOT,
            timeout=60,
        )
    finally:
        os.close(write)
    assert (res.returncode, res.stderr) == (1, b"")


def test_no_command_is_usage_error(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as info:
        main([])
    assert info.value.code == 2


async def test_policy_from_a_catalogue_as_the_daemon_builds_it(catalogue: Path) -> None:
    """`shoal plan` and the daemon build the policy one way (service.build_policy): storage
    for EBS-only types from node_storage and its overrides, spot entries at spot prices."""
    from shoal.daemon.config import load_config
    from shoal.daemon.service import build_policy
    from shoal.providers.simulated import SimulatedProvisioner, load_catalogue

    config = load_config(EXAMPLE)
    provider = SimulatedProvisioner(
        zone="sim-1a",
        nodeStorage=50,
        nodeStorageOverrides=["r5.large:100"],
        catalogue=load_catalogue(catalogue),
    )
    types = {t.name: t for t in (await build_policy(config, provider)).node_types}
    c5, r5 = types["c5.xlarge/c5a.xlarge"], types["r5.large:0.05"]
    assert c5.shape == Shape(3600, 8 * GiB, 4, 50 * GiB, False)
    assert r5.shape == Shape(3600, 16 * GiB, 2, 100 * GiB, True)
    assert c5.price_per_hour == 0.17
    assert r5.price_per_hour == 0.04  # the spot price, not the on-demand 0.126


def test_plan_help_says_catalogue(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit):
        main(["plan", "--help"])
    assert "catalogue" in capsys.readouterr().out


def test_plan_bad_demand_exit_2(
    tmp_path: Path, catalogue: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    demand = tmp_path / "d.json"
    demand.write_text('{"jobs": [{"cores": -1, "memory": 1}]}')
    code = main(
        ["plan", "-c", str(EXAMPLE), "--demand", str(demand), "--catalogue", str(catalogue)]
    )
    assert code == 2
    assert "jobs[0].cores" in capsys.readouterr().err


def test_plan_prints_json_plan(
    tmp_path: Path,
    catalogue: Path,
    capsys: pytest.CaptureFixture[str],
    caplog: pytest.LogCaptureFixture,
) -> None:
    demand = tmp_path / "d.yaml"
    demand.write_text(
        "jobs:\n"
        "  - {cores: 1, memory: 2GiB, disk: 1GiB, wall_time: 50m, count: 12}\n"
        "  - {cores: 64, memory: 1GiB}\n"
    )
    nodes = tmp_path / "nodes.json"
    nodes.write_text(
        json.dumps([{"id": "i-old", "node_type": "c5.xlarge/c5a.xlarge", "age": 4000}])
    )
    code = main(
        [
            "plan",
            "-c",
            str(EXAMPLE),
            "--demand",
            str(demand),
            "--nodes",
            str(nodes),
            "--catalogue",
            str(catalogue),
            "--now",
            "1700000000",
        ]
    )
    out = capsys.readouterr().out
    # a one-shot command keeps no state: not the daemon's warning that a restart forgets it
    assert "state_in_memory" not in caplog.text
    assert code == 0, out
    # By hand: a c5.xlarge (8 GiB) keeps 1.9 GiB for the OS and agents as Toil does, leaving
    # 3 slots of 2 GiB; 50-minute jobs must start within the 30-minute target time, so each
    # slot runs one: 3 jobs a node, 4 nodes for 12, 1 is there already. Every type is priced:
    # cost packing (auto).
    assert json.loads(out) == {
        "launches": [
            {
                "node_type": "c5.xlarge/c5a.xlarge",
                "count": 3,
                "cause": "demand",
                "reason": "12 queued jobs need 4 x c5.xlarge/c5a.xlarge; "
                "cost packing: solver (HiGHS), 0.0% above the LP bound; "
                "1 present or booting, launching 3",
            }
        ],
        "drains": [],
        "undrains": [],
        "terminations": [],
        "withheld": [],
        "targets": {"c5.xlarge/c5a.xlarge": 4, "r5.large:0.05": 0},
        "unschedulable": [
            {
                "shape": {
                    "wall_time": 3600.0,
                    "memory": GiB,
                    "cores": 64.0,
                    "disk": 0,
                    "preemptible": False,
                },
                "count": 1,
                "reasons": ["cores"],
            }
        ],
        "cost_per_hour": 0.68,
    }


def test_shipped_catalogue_has_the_example_types() -> None:
    from shoal.providers.simulated import load_catalogue

    shipped = load_catalogue()
    for name in ("c5.xlarge", "c5a.xlarge", "r5.large"):
        assert shipped[name].cores > 0 and shipped[name].memory_gib > 1
        assert 0 < shipped[name].spot_price < shipped[name].on_demand_price


def test_run_hands_the_config_to_the_service_and_returns_its_exit_code(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    from shoal.daemon import service

    calls = []

    def fake_run(config: object, path: Path, secrets: object = None) -> int:
        calls.append((config, path))
        return 3

    monkeypatch.setattr(service, "run", fake_run)
    assert main(["run", "-c", str(EXAMPLE)]) == 3
    assert [path for _, path in calls] == [EXAMPLE]
    assert calls[0][0].cluster_name == "demo"


def test_plan_shows_a_gang_launch_and_a_gang_that_fits_nowhere(
    tmp_path: Path, catalogue: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    gang = {"cores": 4, "memory": "4GiB", "wall_time": "2h", "node_count": 3}
    too_wide = {"cores": 64, "memory": "1GiB", "node_count": 2}
    (demand := tmp_path / "d.json").write_text(json.dumps({"jobs": [gang, too_wide]}))
    args = ["plan", "-c", str(EXAMPLE), "--demand", str(demand), "--catalogue", str(catalogue)]
    assert main([*args, "--now", "1700000000"]) == 0
    out = json.loads(capsys.readouterr().out)
    # 4 cores and 4 GiB fill a c5.xlarge (4 cores, 8 GiB): the 3 nodes come as one gang
    assert [(a["node_type"], a["count"], a["gangs"]) for a in out["launches"]] == [
        ("c5.xlarge/c5a.xlarge", 3, [3])
    ]
    assert (
        "a 3-node job of 4 cores, 4 GiB each needs 3 x c5.xlarge" in (out["launches"][0]["reason"])
    )
    assert [(u["node_count"], u["reasons"]) for u in out["unschedulable"]] == [(2, ["cores"])]
