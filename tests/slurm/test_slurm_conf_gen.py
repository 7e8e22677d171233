"""`shoal slurm-conf`: slurm.conf lines from the planner's policy, read back by a real slurmctld.

The node names it declares must be the names the daemon maps to node types (the hooks get
them from Slurm), its RealMemory what the planner packs, its Weight the price order.
"""

from __future__ import annotations

import asyncio
import re
from collections.abc import Callable
from pathlib import Path
from typing import Any

import configs
import pytest
import yaml
from e2e.procs import poll_until
from shoal.daemon.cli import main
from shoal.daemon.config import ConfigError, ShoalConfig, parse_config
from shoal.daemon.service import build_policy
from shoal.daemon.slurm.conf import node_lines, render
from shoal.daemon.slurm.integration import slurm_features, slurm_node_types
from shoal.daemon.slurm.names import derived_node_types, slurm_name
from shoal.daemon.slurm.parse import expand_hostlist
from shoal.providers.simulated import SimulatedProvisioner
from shoal.scaler.model import Policy
from shoal.scaler.planner import usable_shape
from slurm.cluster import ClusterSpec, SlurmCluster

# the shipped simulated catalogue: c5.xlarge 4 cores 8 GiB 0.17 $/h (c5a.xlarge 0.154),
# r5.large 2 cores 16 GiB (spot 0.045 $/h), c5.2xlarge 8 cores 16 GiB 0.34 $/h
MiB = 1 << 20

BASE: dict[str, Any] = configs.config(
    cluster_name="demo",
    provider={"kind": "simulated", "zone": "sim-1a"},
    node_types=[
        {"type": "c5.xlarge/c5a.xlarge", "max": 10},
        {"type": "r5.large:0.05", "max": 5},
        {"type": "c5.2xlarge", "max": 3},
    ],
    scaler={"node_memory_overhead": "1GiB"},
    demand={"api": False, "slurm": True},
    state_dir="/nonexistent/state",
    slurm={"mode": "power_save"},
)


def config(tmp_path: Path | None = None, **slurm: Any) -> dict[str, Any]:
    """BASE with ``slurm`` keys set in its slurm section (and the state in ``tmp_path``)."""
    changes = {f"slurm.{key}": value for key, value in slurm.items()}
    if tmp_path is not None:
        changes["state_dir"] = str(tmp_path / "state")
    return configs.changed(BASE, **changes)


async def policy_of(loaded: ShoalConfig) -> Policy:
    """The planner's policy, as the daemon builds it from the simulated catalogue."""
    return await build_policy(loaded, SimulatedProvisioner(zone="sim-1a"))


def generate(tmp_path: Path, data: dict[str, Any], capsys: pytest.CaptureFixture[str]) -> str:
    path = tmp_path / "shoal.yaml"
    path.write_text(yaml.safe_dump(data))
    assert main(["slurm-conf", "-c", str(path), "--bin-dir", "/opt/shoal/bin"]) == 0
    return capsys.readouterr().out


def node_lines_of(text: str) -> dict[str, dict[str, str]]:
    """NodeName lines: hostlist -> {key: value}."""
    out = {}
    for line in text.splitlines():
        if line.startswith("NodeName="):
            fields = dict(part.split("=", 1) for part in line.split())
            out[fields["NodeName"]] = fields
    return out


# --- the lines --------------------------------------------------------------------------


def test_power_save_lines_carry_usable_shapes_features_weights_and_counts(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    text = generate(tmp_path, config(), capsys)
    nodes = node_lines_of(text)
    # 8 GiB less the 1 GiB overhead = 7168 MiB; 16 GiB less 1 GiB = 15360 MiB. Prices per
    # hour: r5.large spot 0.045 < c5.xlarge 0.17 < c5.2xlarge 0.34, so weights 1, 2, 3.
    assert {
        k: (v["CPUs"], v["RealMemory"], v["Features"], v["Weight"]) for k, v in nodes.items()
    } == {
        "c5-xlarge-[1-10]": ("4", "7168", "shoal,c5-xlarge,on-demand", "2"),
        "r5-large-spot-[1-5]": ("2", "15360", "shoal,r5-large-spot,r5.large,spot", "1"),
        "c5-2xlarge-[1-3]": ("8", "15360", "shoal,c5-2xlarge,c5.2xlarge,on-demand", "3"),
    }
    assert all(v["State"] == "CLOUD" for v in nodes.values())
    settings = dict(
        line.split("=", 1) for line in text.splitlines() if line and not line.startswith("#")
    )
    assert settings["ResumeProgram"] == "/opt/shoal/bin/shoal-slurm-resume"
    assert settings["SuspendProgram"] == "/opt/shoal/bin/shoal-slurm-suspend"
    assert settings["ResumeFailProgram"] == "/opt/shoal/bin/shoal-slurm-resume-fail"
    # scaler.unneeded_time and join_timeout by default (1 min, 15 min)
    assert (settings["SuspendTime"], settings["ResumeTimeout"]) == ("60", "900")
    # the workers shoal launches run slurmd configless: slurmctld must serve its config
    assert "enable_configless" in settings["SlurmctldParameters"].split(",")
    assert settings["PartitionName"].startswith(
        "shoal Nodes=c5-xlarge-[1-10],r5-large-spot-[1-5],c5-2xlarge-[1-3] Default=YES"
    )


async def test_real_memory_is_the_planners_usable_memory_with_any_overhead() -> None:
    """Without a flat overhead the planner keeps Toil's reservation by size: RealMemory
    follows it, so a job Slurm places is a job the planner counts as fitting."""
    data = config()
    del data["scaler"]
    loaded = parse_config(data)
    policy = await policy_of(loaded)
    lines = node_lines(loaded, policy)
    assert [line.node_type.name for line in lines] == [e.type for e in loaded.node_types]
    for line in lines:
        usable = usable_shape(line.node_type, policy)
        assert line.real_memory * MiB <= usable.memory < (line.real_memory + 1) * MiB
        assert line.real_memory < line.node_type.shape.memory / MiB  # an overhead is kept
        assert line.cpus == usable.cores


async def test_slurm_resume_timeout_and_unneeded_time_become_slurms_timers() -> None:
    data = config(resume_timeout="7m")
    data["scaler"]["unneeded_time"] = "90s"
    loaded = parse_config(data)
    text = render(loaded, await policy_of(loaded), bin_dir="/b")
    assert "\nSuspendTime=90\n" in text and "\nResumeTimeout=420\n" in text


async def test_given_node_names_are_declared_as_given() -> None:
    loaded = parse_config(config(node_types={"cloud[1-4]": "c5.xlarge", "mem": "r5.large"}))
    lines = node_lines(loaded, await policy_of(loaded))
    # a prefix gets the type's max nodes; a type the mapping omits gets none
    assert [(line.hostlist, line.node_type.name) for line in lines] == [
        ("cloud[1-4]", "c5.xlarge/c5a.xlarge"),
        ("mem[1-5]", "r5.large:0.05"),
    ]


async def test_a_generated_name_the_hooks_would_map_elsewhere_is_refused() -> None:
    # "gpu" gets gpu[1-10], but gpu1 is the longer prefix "gpu1"'s (another type)
    loaded = parse_config(config(node_types={"gpu": "c5.xlarge", "gpu1": "r5.large"}))
    with pytest.raises(ValueError, match=r"node gpu1 of gpu\[1-10\] would be launched as"):
        node_lines(loaded, await policy_of(loaded))


def test_two_types_with_one_slurm_name_need_explicit_node_names() -> None:
    data = config()
    data["node_types"] = [{"type": "c5.xlarge"}, {"type": "c5.xlarge/c5a.xlarge:0.1"}]
    assert parse_config(data)  # c5-xlarge and c5-xlarge-spot
    data["provider"] = {
        "kind": "local",
        "state_dir": "/nonexistent",
        "instance_types": {
            "a.b": {"cores": 1, "memory": "1GiB"},
            "a-b": {"cores": 1, "memory": "1GiB"},
        },
    }
    data["node_types"] = [{"type": "a.b"}, {"type": "a-b"}]
    with pytest.raises(ConfigError) as info:
        parse_config(data)
    assert [str(issue) for issue in info.value.errors] == [
        "slurm.node_types: node types 'a.b' and 'a-b' have one Slurm name 'a-b': "
        "give slurm.node_types"
    ]


def test_slurm_names() -> None:
    assert slurm_name("c5.xlarge/c5a.xlarge") == "c5-xlarge"
    assert slurm_name("r5.large:0.05") == "r5-large-spot"
    assert slurm_name("Big_Mem") == "big-mem"
    loaded = parse_config(config())
    assert derived_node_types(loaded.node_types) == {
        "c5-xlarge-[1-10]": "c5.xlarge/c5a.xlarge",
        "r5-large-spot-[1-5]": "r5.large:0.05",
        "c5-2xlarge-[1-3]": "c5.2xlarge",
    }


async def test_external_mode_declares_room_and_a_nodeset_the_workers_join(
    tmp_path: Path,
) -> None:
    loaded = parse_config(config(mode="external", features={"c5.2xlarge": ["big"]}))
    policy = await policy_of(loaded)
    text = render(loaded, policy, bin_dir="/b")
    assert "NodeName=" not in text and "ResumeProgram" not in text
    assert "\nMaxNodeCount=18\n" in text
    assert "SlurmctldParameters\n# must hold enable_configless." in text
    assert "\nNodeSet=shoal-nodes Feature=shoal\n" in text
    by_name = {t.name: t for t in policy.node_types}
    assert loaded.slurm is not None
    assert slurm_features(loaded.slurm, by_name["c5.2xlarge"]) == (
        "shoal",
        "c5-2xlarge",
        "on-demand",
        "big",
    )
    spot = slurm_features(loaded.slurm, by_name["r5.large:0.05"])
    assert spot == ("shoal", "r5-large-spot", "spot")


def test_slurm_conf_needs_a_slurm_section(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    data = config()
    data["demand"] = {"api": True}
    del data["slurm"]
    path = tmp_path / "shoal.yaml"
    path.write_text(yaml.safe_dump(data))
    assert main(["slurm-conf", "-c", str(path)]) == 2
    assert "has no slurm section" in capsys.readouterr().err


def test_the_test_clusters_nodes_are_the_generated_lines(
    tmp_path: Path, tmp_path_factory: pytest.TempPathFactory, capsys: pytest.CaptureFixture[str]
) -> None:
    """The Slurm end-to-end tests' cluster declares its cloud nodes from `shoal slurm-conf`'s
    lines, so the two cannot drift: each node's line is the generated one for its hostlist,
    with only the private Port and NodeAddr added (every slurmd here needs its own port)."""
    text = generate(tmp_path, config(tmp_path), capsys)
    spec = ClusterSpec(cloud=(), dynamic_partition=None, shoal_nodes=text)
    cluster = SlurmCluster(tmp_path_factory.mktemp("c"), spec)  # short: socket paths
    generated = node_lines_of(text)
    written = node_lines_of(cluster.render_conf())
    assert (
        list(written)
        == [name for hostlist in generated for name in expand_hostlist(hostlist)]
        == cluster.cloud_nodes
    )
    for hostlist, fields in generated.items():
        for name in expand_hostlist(hostlist):
            assert written[name] == {
                **fields,
                "NodeName": name,
                "Port": str(cluster.node_ports[name]),
                "NodeAddr": "127.0.0.1",
            }
    assert len(set(cluster.node_ports.values())) == len(written) == 18
    assert f"PartitionName=cloud Nodes={','.join(written)} Default=YES" in cluster.render_conf()


# --- a real slurmctld reads them --------------------------------------------------------


def show_node(cluster: SlurmCluster, name: str) -> dict[str, str]:
    out = cluster.scontrol("show", "node", name)
    return dict(re.findall(r"(\w+)=(\S*)", out))


@pytest.mark.slurm
def test_slurmctld_starts_with_the_power_save_lines_and_the_daemon_maps_its_nodes(
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
    slurm_cluster_factory: Callable[..., SlurmCluster],
) -> None:
    data = config(tmp_path)
    text = generate(tmp_path, data, capsys)
    cluster = slurm_cluster_factory(ClusterSpec(cloud=(), dynamic_partition=None, include=text))
    names = cluster.run("sinfo", "-h", "-N", "-o", "%N").stdout.split()
    assert len(names) == 10 + 5 + 3
    partition = cluster.run("sinfo", "-h", "-p", "shoal", "-N", "-o", "%N").stdout.split()
    assert sorted(partition) == sorted(names)
    assert (
        show_node(cluster, "c5-xlarge-10").items()
        >= {
            "CPUTot": "4",
            "RealMemory": "7168",
            "AvailableFeatures": "shoal,c5-xlarge,on-demand",
            "Weight": "2",
        }.items()
    )
    assert (
        show_node(cluster, "r5-large-spot-1").items()
        >= {
            "CPUTot": "2",
            "RealMemory": "15360",
            "AvailableFeatures": "shoal,r5-large-spot,r5.large,spot",
            "Weight": "1",
        }.items()
    )
    config_out = cluster.scontrol("show", "config")
    assert re.search(r"ResumeProgram\s*=\s*/opt/shoal/bin/shoal-slurm-resume\n", config_out)
    # every node slurmctld has maps, in the daemon, to the type its features name
    loaded = parse_config(data)
    types = slurm_node_types(loaded)
    for name in names:
        features = show_node(cluster, name)["AvailableFeatures"].split(",")
        node_type = loaded.node_type_of(types.node_type(name) or "")
        assert slurm_name(node_type) == features[1], name
    assert sorted(names) == sorted(
        n for hostlist in node_lines_of(text) for n in expand_hostlist(hostlist)
    )


@pytest.mark.slurm
def test_slurmctld_starts_with_the_external_lines_and_a_worker_joins_its_partition(
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
    slurm_cluster_factory: Callable[..., SlurmCluster],
) -> None:
    data = config(mode="external")
    text = generate(tmp_path, data, capsys)
    cluster = slurm_cluster_factory(
        ClusterSpec(cloud=(), dynamic_partition=None, def_mem_per_cpu=None, include=text)
    )
    assert re.search(r"MaxNodeCount\s*=\s*18\n", cluster.scontrol("show", "config"))
    loaded = parse_config(data)
    policy = asyncio.run(policy_of(loaded))
    node_type = next(t for t in policy.node_types if t.name == "c5.2xlarge")
    features = slurm_features(loaded.slurm, node_type)
    cluster.start_dynamic_slurmd("i-0abc", features=features)

    def in_partition() -> bool:
        out = cluster.run("sinfo", "-h", "-p", "shoal", "-N", "-o", "%N").stdout
        return "i-0abc" in out.split()

    poll_until("the dynamic node in partition shoal", in_partition, 20.0)
    assert set(features) <= set(show_node(cluster, "i-0abc")["AvailableFeatures"].split(","))
