"""``SlurmClient`` against a real slurmctld: reads jobs, nodes and config, updates nodes,
and fails with the right typed error when the controller is gone, hangs, or a command is
missing."""

from __future__ import annotations

import asyncio
import socket
import time
from collections.abc import Awaitable, Callable, Iterator
from pathlib import Path
from typing import TypeVar

import pytest
from shoal.daemon.slurm.client import SlurmClient, SlurmCommands
from shoal.daemon.slurm.demand import slurm_demand
from shoal.daemon.slurm.errors import SlurmCommandError, SlurmUnavailableError
from shoal.daemon.slurm.parse import SlurmJob, SlurmNode, def_mem_per_cpu
from shoal.providers.errors import RetryableError
from shoal.providers.local import pids_with_env
from shoal.scaler.model import QueuedJobs
from shoal.scaler.shape import Shape
from slurm.cluster import SlurmCluster

pytestmark = pytest.mark.slurm
T = TypeVar("T")
MiB = 1024**2


def client_for(cluster: SlurmCluster, **options: float) -> SlurmClient:
    return SlurmClient(cluster.commands(**options))


async def until(what: str, probe: Callable[[], Awaitable[T | None]], deadline: float = 20) -> T:
    """Poll a read of the real cluster until it gives an answer (bounded)."""
    end = time.monotonic() + deadline
    while True:
        got = await probe()
        if got is not None:
            return got
        if time.monotonic() > end:
            raise AssertionError(f"timed out waiting for {what}")
        await asyncio.sleep(0.1)


async def node(client: SlurmClient, name: str) -> SlurmNode | None:
    return {n.name: n for n in await client.nodes()}.get(name)


async def test_reads_jobs_nodes_and_config_into_demand(slurm_cluster: SlurmCluster):
    client = client_for(slurm_cluster)
    slurm_cluster.power_up("cloud1")
    slurm_cluster.start_slurmd("cloud1")

    async def cloud1_joined() -> SlurmNode | None:
        got = await node(client, "cloud1")
        return got if got is not None and got.joined else None

    await until("cloud1 to join", cloud1_joined)
    running = slurm_cluster.sbatch("-c1", "--mem-per-cpu=200", "-t", "20", "--wrap", "sleep 300")
    array = slurm_cluster.sbatch(
        "-p", "dyn", "--array=1-3", "-c2", "--mem-per-cpu=300", "-t", "45", "--wrap", "true"
    )
    multi = slurm_cluster.sbatch("-p", "dyn", "-N2", "--mem=500", "--wrap", "true")
    held = slurm_cluster.sbatch("-p", "dyn", "--hold", "--wrap", "true")

    async def settled() -> tuple[SlurmJob, ...] | None:
        jobs = await client.jobs()
        pending_unseen = any(j.state == "PENDING" and j.reason == "None" for j in jobs)
        started = any(j.job_id == running and j.state == "RUNNING" for j in jobs)
        return jobs if started and not pending_unseen else None

    jobs = await until("the job to run and the scheduler to see the rest", settled)
    by_id = {job.job_id: job for job in jobs}
    assert set(by_id) == {running, f"{array}_1", f"{array}_2", f"{array}_3", multi, held}
    assert by_id[running].node_list == ("cloud1",)
    assert by_id[f"{array}_2"].reason == "PartitionConfig"
    assert by_id[held].held

    nodes = await client.nodes()
    assert [n.name for n in nodes] == ["cloud1", "cloud2", "cloud3", "cloud4"]
    assert [n.name for n in nodes if n.powered_down] == ["cloud2", "cloud3", "cloud4"]
    config = await client.config()
    assert def_mem_per_cpu(config) == 100 * MiB

    got = slurm_demand(jobs, nodes, def_mem_per_cpu=def_mem_per_cpu(config))
    assert set(got.demand.queued) == {
        QueuedJobs(Shape(2700.0, 600.0 * MiB, 2.0, 0.0, False), 3),
        QueuedJobs(Shape(3600.0, 500.0 * MiB, 1.0, 0.0, False), 1, node_count=2),  # -N2: a gang
    }
    [on_cloud1] = got.demand.running
    assert (on_cloud1.node_id, on_cloud1.shape) == (
        "cloud1",
        Shape(1200.0, 200.0 * MiB, 1.0, 0.0, False),
    )
    assert got.joined == {"cloud1"}
    assert got.skipped == {"JobHeldUser": 1}


async def test_node_updates_read_back(slurm_cluster: SlurmCluster):
    client = client_for(slurm_cluster)

    await client.drain("cloud1", "shoal idle")
    got = await node(client, "cloud1")
    assert got is not None and got.drain and got.reason == "shoal idle"
    await client.resume(["cloud1"])
    got = await node(client, "cloud1")
    assert got is not None and not got.drain and got.reason == ""

    await client.set_down(["cloud3", "cloud4"], "no capacity for c5.large")
    for name in ("cloud3", "cloud4"):
        got = await node(client, name)
        assert got is not None and got.down and got.reason == "no capacity for c5.large"
    # the reset for a node left down: power it down; Slurm keeps it out until it is idle~
    await client.power_down("cloud4", reason="reset by shoal")
    got = await node(client, "cloud4")
    assert got is not None and got.flags & {"POWER_DOWN", "POWERING_DOWN", "POWERED_DOWN"}

    await client.set_address("cloud2", "127.0.0.1", hostname="localhost")
    got = await node(client, "cloud2")
    assert got is not None and got.address == "127.0.0.1"

    slurm_cluster.start_dynamic_slurmd("dyn1")

    async def dyn1_joined() -> SlurmNode | None:
        got = await node(client, "dyn1")
        return got if got is not None and got.joined else None

    assert (await until("dyn1 to register", dyn1_joined)).dynamic
    slurm_cluster.stop_slurmd("dyn1")
    await client.delete_nodes("dyn1")
    assert await node(client, "dyn1") is None


async def test_a_job_on_a_forced_down_node_is_requeued(slurm_cluster: SlurmCluster):
    client = client_for(slurm_cluster)
    job = slurm_cluster.sbatch("-w", "cloud2", "-c1", "--wrap", "sleep 300")

    async def configuring() -> SlurmJob | None:
        jobs = {j.job_id: j for j in await client.jobs()}
        return jobs[job] if jobs[job].state == "CONFIGURING" else None

    await until("the job to be allocated to cloud2", configuring)
    await client.power_down("cloud2", force=True, reason="launch failed")

    async def requeued() -> SlurmJob | None:
        jobs = {j.job_id: j for j in await client.jobs()}
        return jobs[job] if jobs[job].state == "PENDING" and jobs[job].restarts else None

    assert (await until("the job to be requeued", requeued)).node_list == ()


async def test_unknown_node_is_a_command_error(slurm_cluster: SlurmCluster):
    client = client_for(slurm_cluster)
    with pytest.raises(SlurmCommandError, match="Invalid node name") as info:
        await client.drain("nosuch1", "x")
    err = info.value
    assert not isinstance(err, RetryableError)
    assert (err.returncode, err.operation) == (1, "scontrol")
    assert err.argv[-2:] == ("State=DRAIN", "Reason=x")


async def test_stopped_controller_is_unavailable_and_retryable(
    slurm_cluster_factory: Callable[..., SlurmCluster],
):
    # a client retries connecting once a second for MessageTimeout (default 10 s)
    cluster = slurm_cluster_factory(settings={"MessageTimeout": "3"})
    client = client_for(cluster)
    cluster.stop()
    errors = await asyncio.gather(client.jobs(), client.nodes(), return_exceptions=True)
    for err in errors:
        assert isinstance(err, SlurmUnavailableError), err
        assert isinstance(err, RetryableError) and err.returncode == 1
        assert "Unable to contact slurm controller" in err.stderr
    assert [getattr(err, "operation", None) for err in errors] == ["squeue", "sinfo"]


@pytest.fixture
def black_hole(slurm_cluster: SlurmCluster, tmp_path: Path) -> Iterator[Path]:
    """A slurm.conf whose controller port accepts connections and never answers."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        sock.listen(16)
        port = sock.getsockname()[1]
        conf = tmp_path / "slurm.conf"
        text = slurm_cluster.conf_path.read_text()
        conf.write_text(
            text.replace(f"SlurmctldPort={slurm_cluster.slurmctld_port}", f"SlurmctldPort={port}")
        )
        yield conf


def commands_using(conf: Path) -> set[int]:
    entry = f"SLURM_CONF={conf}".encode()
    return set(pids_with_env(entry))


async def test_a_hung_command_times_out_and_is_killed(slurm_cluster: SlurmCluster, black_hole):
    client = SlurmClient(
        SlurmCommands(
            squeue=slurm_cluster.program("squeue"), slurm_conf=str(black_hole), timeout=0.5
        )
    )
    started = time.monotonic()
    with pytest.raises(SlurmUnavailableError, match=r"did not finish in 0\.5s") as info:
        await client.jobs()
    # not squeue giving up by itself: that takes MessageTimeout (10 s here)
    assert time.monotonic() - started < 8
    assert info.value.code == "timeout"
    assert commands_using(black_hole) == set()


async def test_a_cancelled_read_kills_its_command(slurm_cluster: SlurmCluster, black_hole):
    client = SlurmClient(
        SlurmCommands(sinfo=slurm_cluster.program("sinfo"), slurm_conf=str(black_hole), timeout=60)
    )
    task = asyncio.create_task(client.nodes())
    await until("sinfo to start", lambda: _some(commands_using(black_hole)), 5)
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    assert commands_using(black_hole) == set()


async def _some(pids: set[int]) -> set[int] | None:
    return pids or None


async def test_a_missing_command_is_a_command_error(tmp_path: Path):
    client = SlurmClient(SlurmCommands(squeue=str(tmp_path / "squeue")))
    with pytest.raises(SlurmCommandError, match="cannot run") as info:
        await client.jobs()
    assert info.value.code == "exec" and info.value.returncode is None
