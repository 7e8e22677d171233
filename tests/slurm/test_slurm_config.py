"""The slurm section, demand.slurm and the local provider in the config file."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path
from typing import Any

import configs
import pytest
import yaml
from shoal.daemon.config import (
    ConfigError,
    LocalProviderConfig,
    SlurmConfig,
    load_config,
    parse_config,
)
from slurm.shoal_proc import free_port

ROOT = Path(__file__).resolve().parents[2]

BASE: dict[str, Any] = configs.config(
    cluster_name="c",
    provider={
        "kind": "local",
        "state_dir": "/var/lib/shoal/local",
        "instance_types": {
            "small": {"cores": 2, "memory": "1000MiB"},
            "big": {"cores": 4, "memory": "2GiB", "price": 0.2},
        },
    },
    node_types=[{"type": "small"}, {"type": "big"}],
    state_dir="/var/lib/shoal/state",
    demand={"api": False, "slurm": True},
    slurm={"node_types": {"cloud[1-4]": "small", "big": "big"}},
)


def config(**changes: Any) -> dict[str, Any]:
    """BASE with dotted keys changed (value None deletes the key)."""
    return configs.changed(BASE, **changes)


def test_a_power_saving_config_loads_with_its_defaults() -> None:
    loaded = parse_config(config())
    slurm = loaded.slurm
    assert isinstance(slurm, SlurmConfig) and slurm.mode == "power_save"
    assert (slurm.squeue, slurm.sinfo, slurm.scontrol) == ("squeue", "sinfo", "scontrol")
    assert slurm.poll_interval == 10.0
    assert slurm.demand_max_age() == 3 * 10.0 + 30.0
    assert loaded.demand.sources() == ["slurm"] and loaded.demand.reports_running()
    assert isinstance(loaded.provider, LocalProviderConfig)
    assert loaded.provider.cluster_type == "slurm" and loaded.provider.launch_zones == ("local",)
    assert loaded.node_type_of("small") == "small"


def test_external_mode_needs_neither_node_names_nor_a_state_file() -> None:
    loaded = parse_config(
        config(
            **{
                "slurm.mode": "external",
                "slurm.node_types": None,
                "state_dir": None,
                "slurm.features": {"small": ["dyn"]},
                "slurm.partitions": ["dyn"],
            }
        )
    )
    assert loaded.slurm is not None and loaded.slurm.features == {"small": ("dyn",)}


def test_power_save_without_node_names_derives_them_from_the_node_types(tmp_path: Path) -> None:
    from shoal.daemon.slurm.integration import slurm_node_types

    loaded = parse_config(config(**{"slurm.node_types": None}))
    assert loaded.slurm is not None and loaded.slurm.node_types == {}
    types = slurm_node_types(loaded)  # what the hooks' requests meet
    names = ("small-1", "small-10", "small-11", "big-10", "cloud1")
    assert [types.node_type(n) for n in names] == ["small", "small", None, "big", None]


def test_a_node_type_may_be_named_by_one_of_its_instance_types() -> None:
    data = config(**{"slurm.node_types": {"cloud": "c5.xlarge"}})
    data["provider"] = {"kind": "simulated", "zone": "z"}
    data["node_types"] = [{"type": "c5.xlarge/c5a.xlarge"}, {"type": "r5.large"}]
    loaded = parse_config(data)
    assert loaded.node_type_of("c5a.xlarge") == "c5.xlarge/c5a.xlarge"


@pytest.mark.parametrize(
    ("changes", "message"),
    [
        pytest.param({"slurm": None}, "demand.slurm needs a slurm section", id="no-section"),
        pytest.param({"demand.slurm": False}, "needs demand.slurm: true", id="section-unused"),
        pytest.param({"demand.api": True}, "turn api off", id="api-too"),
        pytest.param({"demand.demo": True}, "turn demo off", id="demo-too"),
        pytest.param(
            {"slurm.node_types": {"cloud": "huge"}}, "'huge', which is no node type", id="bad-type"
        ),
        pytest.param(
            {"slurm.features": {"tiny": ["x"]}}, "'tiny', which is no node type", id="bad-feature"
        ),
        pytest.param({"state_dir": None}, "power_save needs state_dir", id="no-state"),
        pytest.param(
            {"slurm.state_file": "/var/lib/shoal/s.json"},
            "set the top-level state_dir instead",
            id="state-file-removed",
        ),
        pytest.param({"slurm.mode": "magic"}, "power_save", id="bad-mode"),
        pytest.param({"slurm.poll_interval": "0s"}, "greater than 0", id="zero-poll"),
        pytest.param({"slurm.colour": "blue"}, "unknown key", id="unknown-key"),
        pytest.param(
            {"provider.capacity": {"medium": 1}}, "capacity names medium", id="capacity-type"
        ),
        pytest.param(
            {"provider.never_join": ["medium"]}, "never_join names medium", id="never-join-type"
        ),
        pytest.param({"provider.instance_types": {}}, "at least 1", id="no-local-types"),
        pytest.param(
            {"provider.instance_types.small.cores": 0}, "greater than or equal to 1", id="no-cores"
        ),
        pytest.param({"provider.cluster_type": "mesos"}, "'slurm'", id="local-is-slurm-only"),
    ],
)
def test_invalid_slurm_configs_name_the_problem(changes: dict[str, Any], message: str) -> None:
    with pytest.raises(ConfigError) as caught:
        parse_config(config(**changes))
    text = str(caught.value)
    assert message in text, text


def test_relative_paths_are_taken_from_the_config_file(tmp_path: Path) -> None:
    data = config(**{"state_dir": "state", "provider.state_dir": "local"})
    data["slurm"]["slurm_conf"] = "etc/slurm.conf"
    path = tmp_path / "shoal.yaml"
    path.write_text(yaml.safe_dump(data))
    loaded = load_config(path)
    assert loaded.slurm is not None and isinstance(loaded.provider, LocalProviderConfig)
    assert loaded.state_dir == tmp_path / "state"
    assert loaded.slurm.slurm_conf == tmp_path / "etc" / "slurm.conf"
    assert loaded.provider.state_dir == tmp_path / "local"


def test_check_config_accepts_a_slurm_config_and_prices_local_types(tmp_path: Path) -> None:
    path = tmp_path / "shoal.yaml"
    path.write_text(yaml.safe_dump(config()))
    run = [sys.executable, "-m", "shoal.daemon", "check-config", str(path)]
    ok = subprocess.run(run, capture_output=True, text=True, timeout=60)
    assert (ok.returncode, ok.stdout.strip()) == (0, "OK"), ok.stderr
    path.write_text(yaml.safe_dump(config(**{"scaler.packing": "cost"})))
    unpriced = subprocess.run(run, capture_output=True, text=True, timeout=60)
    assert unpriced.returncode == 2 and "none for small" in unpriced.stderr, unpriced.stderr


def test_the_example_slurm_section_uncommented_is_valid() -> None:
    lines = (ROOT / "config.example.yaml").read_text().splitlines()
    start = lines.index("# slurm:")
    block = [line[2:] for line in lines[start:] if line.startswith("# ")]
    data = yaml.safe_load((ROOT / "config.example.yaml").read_text())
    data["slurm"] = yaml.safe_load("\n".join(block))["slurm"]
    data["demand"] = {"api": False, "demo": False, "slurm": True}
    data["state_dir"] = "/var/lib/shoal"  # power_save needs it (null in the example)
    loaded = parse_config(data)
    assert loaded.slurm is not None and loaded.slurm.mode == "power_save"
    assert loaded.node_type_of(loaded.slurm.node_types["mem"]) == "r5.large:0.05"


def test_the_daemon_refuses_to_start_on_a_damaged_state_file(tmp_path: Path) -> None:
    state = tmp_path / "state.json"
    state.write_text('{"version": 1, "slurm": {"requests": {"cloud1": {}}}}')
    data = config(**{"state_dir": str(tmp_path), "provider.state_dir": str(tmp_path)})
    data["api"] = {"listen": f"127.0.0.1:{free_port()}"}
    path = tmp_path / "shoal.yaml"
    path.write_text(yaml.safe_dump(data))
    run = subprocess.run(
        [sys.executable, "-m", "shoal.daemon", "run", "-c", str(path)],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert run.returncode == 1
    assert "stage=slurm" in run.stderr and "malformed" in run.stderr, run.stderr
    assert state.read_text() == '{"version": 1, "slurm": {"requests": {"cloud1": {}}}}'  # as found


def test_external_mode_drains_and_undrains_with_scontrol_unless_hooks_are_set() -> None:
    from shoal.daemon.drain import CommandUndrainHook, NoUndrainHook
    from shoal.daemon.service import build_drain_hook, build_undrain_hook
    from shoal.daemon.slurm.drain import SlurmDrainHook

    external = parse_config(config(**{"slurm.mode": "external", "state_dir": None}))
    assert isinstance(build_drain_hook(external), SlurmDrainHook)
    assert isinstance(build_undrain_hook(external), SlurmDrainHook)
    own = parse_config(
        config(
            **{
                "slurm.mode": "external",
                "state_dir": None,
                "drain.undrain_command": ["resume-node", "{node}"],
            }
        )
    )
    assert isinstance(build_undrain_hook(own), CommandUndrainHook)
    assert isinstance(build_undrain_hook(parse_config(config())), NoUndrainHook)  # power_save
