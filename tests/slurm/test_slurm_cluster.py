"""The test cluster itself: real slurmctld, slurmd and munged, started and stopped by pid."""

from __future__ import annotations

import ipaddress
import os
import socket
import subprocess
import time
from collections.abc import Callable
from pathlib import Path

import pytest
from shoal.providers.local import pids_with_env
from slurm import cluster as cluster_module
from slurm.cluster import (
    MARKER_ENV,
    ClusterSpec,
    NodeGroup,
    SlurmCluster,
    SlurmClusterError,
    missing_requirements,
)

pytestmark = pytest.mark.slurm


def registered(flags: set[str]) -> bool:
    return not flags & {"not_responding", "powering_up", "powered_down"}


def marked_pids(cluster: SlurmCluster) -> set[int]:
    """Processes carrying this cluster's marker: everything it started, directly or not."""
    entry = f"{MARKER_ENV}={cluster.root}".encode()
    return set(pids_with_env(entry))


def commands(pids: set[int]) -> set[str]:
    names = set()
    for pid in pids:
        try:
            names.add(Path(f"/proc/{pid}/comm").read_text().strip())
        except OSError:
            continue
    return names


def listening(pids: set[int]) -> set[tuple[str, int]]:
    """(address, port) of the TCP sockets these processes listen on (IPv4 and IPv6)."""
    inodes = set()
    for pid in pids:
        try:
            for fd in Path(f"/proc/{pid}/fd").iterdir():
                target = os.readlink(fd)
                if target.startswith("socket:["):
                    inodes.add(target[8:-1])
        except OSError:
            continue
    found = set()
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        for line in Path(table).read_text().splitlines()[1:]:
            fields = line.split()
            local, state, inode = fields[1], fields[3], fields[9]
            if state == "0A" and inode in inodes:  # 0A: LISTEN
                address, port = local.split(":")
                found.add((str(ipaddress.ip_address(bytes.fromhex(address)[::-1])), int(port, 16)))
    return found


def test_config_declares_cloud_nodes_powered_down_on_loopback(slurm_cluster: SlurmCluster):
    conf = slurm_cluster.conf_path.read_text()
    assert f"SlurmctldHost={slurm_cluster.hostname}(127.0.0.1)" in conf
    for name in ("cloud1", "cloud4"):
        port = slurm_cluster.node_ports[name]
        assert f"NodeName={name} CPUs=2 RealMemory=1000 State=CLOUD Port={port}" in conf
    out = slurm_cluster.run("sinfo", "-h", "-N", "-o", "%N %P %t").stdout.split("\n")
    assert sorted(line for line in out if line) == [f"cloud{i} cloud* idle~" for i in range(1, 5)]
    # nothing else of ours is running yet: munged, slurmctld and its slurmscriptd
    assert slurm_cluster.slurmd_pids() == {}


def test_resume_runs_the_program_then_srun_runs_on_the_started_slurmd(
    slurm_cluster: SlurmCluster,
):
    srun = subprocess.Popen(
        [slurm_cluster.program("srun"), "-w", "cloud2", "-c1", "sh", "-c", "hostname; sleep 1"],
        env=slurm_cluster.env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        deadline = time.monotonic() + 20
        while not slurm_cluster.hook_calls() and time.monotonic() < deadline:
            time.sleep(0.05)
        [call] = slurm_cluster.hook_calls()
        assert (call.kind, call.hostlist) == ("resume", "cloud2")
        assert call.resume_file is not None
        assert call.resume_file["all_nodes"] == "cloud2"
        assert slurm_cluster.node_state("cloud2") == "allocated+cloud+not_responding+powering_up"

        slurm_cluster.start_slurmd("cloud2")
        slurm_cluster.wait_node("cloud2", registered, 10)
        # srun (it listens for its tasks' I/O) and every daemon listen on loopback only
        sockets = listening(marked_pids(slurm_cluster))
        assert {port for _, port in sockets} >= {
            slurm_cluster.slurmctld_port,
            slurm_cluster.node_ports["cloud2"],
        }
        assert {address for address, _ in sockets} == {"127.0.0.1"}
        out, err = srun.communicate(timeout=20)
    finally:
        if srun.poll() is None:
            srun.kill()
            srun.wait()
    assert srun.returncode == 0, err
    assert out.strip() == socket.gethostname()


def test_dynamic_node_registers_and_runs_the_pending_job(slurm_cluster: SlurmCluster):
    job = slurm_cluster.sbatch("-p", "dyn", "-c1", "--wrap", "true")
    reason = slurm_cluster.run("squeue", "-h", "-j", job, "-o", "%r").stdout.strip()
    assert reason in ("None", "PartitionConfig")  # "None" until the scheduler looked at it

    slurm_cluster.start_dynamic_slurmd("dyn1", features=("big",))
    assert slurm_cluster.wait_job_state(job, {"COMPLETED"}, 30) == "COMPLETED"
    state = slurm_cluster.node_state("dyn1")
    assert "dynamic_norm" in state.split("+")
    node = slurm_cluster.scontrol("show", "node", "dyn1")
    assert "AvailableFeatures=dyn,big" in node

    slurm_cluster.stop_slurmd("dyn1")
    slurm_cluster.scontrol("delete", "nodename=dyn1")
    assert slurm_cluster.node_state("dyn1") == ""


def test_stop_ends_every_process_including_running_jobs(
    slurm_cluster_factory: Callable[..., SlurmCluster],
):
    cluster = slurm_cluster_factory(cloud=(NodeGroup("w", 1),), dynamic_partition=None)
    cluster.power_up("w1")
    cluster.start_slurmd("w1")
    cluster.wait_node("w1", registered, 15)
    job = cluster.sbatch("-c1", "--wrap", "sleep 300")
    cluster.wait_job_state(job, {"RUNNING"}, 15)
    deadline = time.monotonic() + 10
    while "sleep" not in commands(marked_pids(cluster)) and time.monotonic() < deadline:
        time.sleep(0.05)  # the job's processes appear a moment after RUNNING
    names = commands(marked_pids(cluster))
    assert {"munged", "slurmctld", "slurmd", "slurmstepd", "sleep"} <= names, names

    cluster.stop()
    assert marked_pids(cluster) == set()


@pytest.mark.parametrize("auth", ["none", "munge"])
def test_auth_types(slurm_cluster_factory: Callable[..., SlurmCluster], auth: str):
    cluster = slurm_cluster_factory(ClusterSpec(auth=auth, cloud=(NodeGroup("a", 2),)))
    conf = cluster.conf_path.read_text()
    assert f"AuthType=auth/{auth}" in conf
    assert cluster.munge_socket.exists() == (auth == "munge")
    ping = cluster.run("scontrol", "ping").stdout
    assert "is UP" in ping


@pytest.mark.parametrize(
    ("absent", "uid", "auth", "expected"),
    [
        ({"munged"}, 0, "munge", "Slurm tests need munged (Debian"),
        ({"munged"}, 0, "none", None),
        ({"slurmd", "sbatch"}, 0, "none", "Slurm tests need slurmd, sbatch (Debian"),
        (set(), 1000, "munge", "Slurm tests need root"),
    ],
    ids=["no-munge", "no-munge-auth-none", "no-slurmd", "not-root"],
)
def test_missing_requirements_name_what_is_missing(
    monkeypatch: pytest.MonkeyPatch, absent: set[str], uid: int, auth: str, expected: str | None
):
    real = cluster_module.find_program
    monkeypatch.setattr(
        cluster_module, "find_program", lambda name: None if name in absent else real(name) or name
    )
    monkeypatch.setattr(cluster_module.os, "geteuid", lambda: uid)
    reason = missing_requirements(auth)
    if expected is None:
        assert reason is None
    else:
        assert reason is not None and reason.startswith(expected)


def test_a_root_too_long_for_socket_paths_is_refused(tmp_path: Path):
    with pytest.raises(SlurmClusterError, match="too long for socket paths"):
        SlurmCluster(tmp_path / ("x" * 80))


def test_a_slurmctld_that_dies_at_start_is_reported_with_its_log(
    slurm_cluster_factory: Callable[..., SlurmCluster],
):
    with pytest.raises(SlurmClusterError, match=r"slurmctld exited with \d+; its log ends"):
        slurm_cluster_factory(settings={"SelectType": "select/nosuch"})


def test_graceful_stop_lets_slurmctld_save_its_state(
    slurm_cluster_factory: Callable[..., SlurmCluster],
):
    cluster = slurm_cluster_factory(cloud=(NodeGroup("g", 1),), dynamic_partition=None)
    cluster.sbatch("--hold", "--wrap", "true")
    cluster.stop(graceful=True)
    assert (cluster.root / "state" / "job_state").stat().st_size > 0
    assert "Saving all slurm state" in cluster.log_tail()
    assert marked_pids(cluster) == set()
