"""The local process provider: real processes, started and stopped by pid.

A probe program stands in for slurmd where a test needs to see what the provider runs (its
argv and environment) without a Slurm controller; ``never_join`` types run ``sleep``, as a
machine whose slurmd never comes up. Every process a test starts is killed by pid at the end.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import json
import os
import signal
import stat
from collections.abc import AsyncIterator, Callable
from pathlib import Path

import pytest
from shoal.providers.base import (
    CLIENT_TOKEN_TTL,
    TAG_DRAINING,
    TAG_INSTANCE_TYPE,
    TAG_REQUEST_ID,
    client_token,
)
from shoal.providers.errors import CapacityError, ProviderError
from shoal.providers.local import (
    INSTANCE_ENV,
    LocalInstanceType,
    LocalProvisioner,
    process_alive,
    session_pids,
)
from shoal.providers.outcomes import LaunchRequest, TerminationStatus
from shoal.providers.workers import TAG_SLURM_FEATURES, TAG_SLURM_NODE, TAG_SLURM_RESOURCES
from shoal.runtime.testing import FakeClock
from shoal.scaler.model import CapacityType, Offering

MiB = 1024**2
TYPES = [LocalInstanceType("small", 2, 1000 * MiB), LocalInstanceType("hung", 1, 500 * MiB)]

PROBE = """#!/bin/sh
# stands in for slurmd: records how it was started, starts a child, then waits
printf '%s\\n' "$@" > "{out}/argv-$$"
env > "{out}/env-$$"
sleep 300 &
wait
"""


@pytest.fixture
async def make(tmp_path: Path) -> AsyncIterator[Callable[..., LocalProvisioner]]:
    made: list[LocalProvisioner] = []
    probe = tmp_path / "probe.sh"
    probe.write_text(PROBE.format(out=tmp_path))
    probe.chmod(probe.stat().st_mode | stat.S_IXUSR)

    def factory(**kwargs: object) -> LocalProvisioner:
        options: dict[str, object] = {
            "clusterName": "t",
            "state_dir": tmp_path / "local",
            "instance_types": TYPES,
            "slurmd": str(probe),
            "slurm_conf": "/etc/test/slurm.conf",
            "never_join": ["hung"],
            "stop_timeout": 5.0,
            **kwargs,
        }
        provider = LocalProvisioner(**options)  # type: ignore[arg-type]
        made.append(provider)
        return provider

    yield factory
    records = tmp_path / "local" / "instances.json"
    instances = json.loads(records.read_text())["instances"] if records.exists() else {}
    for record in instances.values():
        pid = record.get("pid")
        if pid is None:
            continue
        for target in session_pids(pid):  # the process and its children, by pid
            with contextlib.suppress(ProcessLookupError):
                os.kill(target, signal.SIGKILL)
        with contextlib.suppress(ChildProcessError):
            os.waitpid(pid, 0)


def request(
    instance_type: str = "small", count: int = 1, token: str = "tok-1", **tags: str
) -> LaunchRequest:
    offering = Offering(instance_type, "local", CapacityType.ON_DEMAND)
    return LaunchRequest(
        offering, count, token, "req-1", None, {TAG_INSTANCE_TYPE: instance_type, **tags}
    )


def proc_status(pid: int) -> dict[str, str]:
    lines = Path(f"/proc/{pid}/status").read_text().splitlines()
    return dict(line.split(":\t", 1) for line in lines if ":\t" in line)


async def wait_file(path_glob: Callable[[], list[Path]]) -> Path:
    for _ in range(500):
        found = path_glob()
        if found:
            await asyncio.sleep(0.05)  # let the probe finish writing
            return found[0]
        await asyncio.sleep(0.01)
    raise AssertionError("the probe never wrote its file")


async def test_a_node_runs_in_its_own_session_with_signals_unblocked(
    make: Callable[..., LocalProvisioner],
) -> None:
    provider = make()
    # slurmctld starts its programs with SIGTERM, SIGINT, SIGHUP... blocked: so do we here
    blocked = {signal.SIGTERM, signal.SIGINT, signal.SIGHUP, signal.SIGUSR1}
    old = signal.pthread_sigmask(signal.SIG_BLOCK, blocked)
    try:
        (instance_id,) = await provider.launch_offering(request("hung"))
    finally:
        signal.pthread_sigmask(signal.SIG_SETMASK, old)
    pid = provider.pids()[instance_id]
    status = proc_status(pid)
    assert int(status["SigBlk"], 16) == 0
    assert int(status["SigIgn"], 16) & (1 << (signal.SIGPIPE - 1)) == 0  # Python ignores it
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    assert int(fields[3]) == pid  # session id: it leads its own session
    environ = Path(f"/proc/{pid}/environ").read_bytes().split(b"\0")
    marker = f"{INSTANCE_ENV}={provider.state_dir.resolve()}/{instance_id}"
    assert marker.encode() in environ


async def test_a_power_saving_node_runs_slurmd_b_with_its_name(
    make: Callable[..., LocalProvisioner], tmp_path: Path
) -> None:
    provider = make()
    (instance_id,) = await provider.launch_offering(request(**{TAG_SLURM_NODE: "cloud3"}))
    pid = provider.pids()[instance_id]
    argv = await wait_file(lambda: list(tmp_path.glob(f"argv-{pid}")))
    assert argv.read_text().split("\n")[:-1] == ["-D", "-b", "-N", "cloud3"]
    env = (tmp_path / f"env-{pid}").read_text().splitlines()
    assert "SLURM_CONF=/etc/test/slurm.conf" in env
    assert (await provider.list_instances())[0].tags[TAG_SLURM_NODE] == "cloud3"


@pytest.mark.parametrize("start", [1_000.25, 1_000.0])
async def test_a_power_saving_slurmd_starts_in_a_later_second_than_its_launch_was_asked(
    make: Callable[..., LocalProvisioner], start: float
) -> None:
    """slurmd -b started in the resume request's own second can register as booted a second
    before it, and slurmctld ignores it until ResumeTimeout (boot_second_wait): seen in CI as
    two nodes of a gang that never came up. A dynamic node has no resume request to wait for."""
    clock = FakeClock(start=start)
    provider = make(clock=clock)
    named = asyncio.create_task(provider.launch_offering(request(**{TAG_SLURM_NODE: "cloud3"})))
    await clock.advance(1_000.99 - start)
    assert not named.done() and provider.pids() == {}  # nothing started in second 1000
    await clock.advance(0.01)
    (instance_id,) = await named
    assert clock.now() >= 1_001.0 and instance_id in provider.pids()

    provider.clock = clock = FakeClock(start=2_000.5)
    # bounded: a dynamic launch that waited on the fake clock would never end
    (other,) = await asyncio.wait_for(provider.launch_offering(request(token="tok-2")), 10)
    assert other in provider.pids() and clock.now() == 2_000.5


async def test_a_gang_of_power_saving_nodes_names_each_instance_in_launch_order(
    make: Callable[..., LocalProvisioner], tmp_path: Path
) -> None:
    """A multi-node job's nodes are one request listing one name per instance."""
    provider = make()
    ids = await provider.launch_offering(request(count=2, **{TAG_SLURM_NODE: "cloud4,cloud2"}))
    for instance_id, name in zip(ids, ["cloud4", "cloud2"], strict=True):
        pid = provider.pids()[instance_id]
        argv = await wait_file(lambda pid=pid: list(tmp_path.glob(f"argv-{pid}")))
        assert argv.read_text().split("\n")[:-1] == ["-D", "-b", "-N", name]
    tags = {i.name: i.tags[TAG_SLURM_NODE] for i in await provider.list_instances()}
    assert tags == dict(zip(ids, ["cloud4", "cloud2"], strict=True))
    with pytest.raises(ProviderError, match="one name each"):  # a node never gets two
        await provider.launch_offering(
            request(count=2, token="tok-2", **{TAG_SLURM_NODE: "cloud1"})
        )


async def test_a_dynamic_node_registers_with_its_shape_and_features(
    make: Callable[..., LocalProvisioner], tmp_path: Path
) -> None:
    provider = make()
    (instance_id,) = await provider.launch_offering(request(**{TAG_SLURM_FEATURES: "shoal,dyn"}))
    pid = provider.pids()[instance_id]
    argv = (await wait_file(lambda: list(tmp_path.glob(f"argv-{pid}")))).read_text()
    assert argv.split("\n")[:-1] == [
        "-D",
        "-Z",
        "-N",
        instance_id,
        "--conf",
        "CPUs=2 RealMemory=1000 Feature=shoal,dyn NodeAddr=127.0.0.1",
    ]


async def test_a_dynamic_node_registers_with_the_resources_of_its_launch(
    make: Callable[..., LocalProvisioner], tmp_path: Path
) -> None:
    """``TAG_SLURM_RESOURCES`` (what ``shoal slurm-conf`` declares of the type: usable CPUs
    and memory, Weight) replaces the type's whole shape; one that is not of that form is
    refused before anything starts (it goes into a command line)."""
    provider = make()
    tags = {TAG_SLURM_FEATURES: "shoal,dyn", TAG_SLURM_RESOURCES: "CPUs=2 RealMemory=800 Weight=3"}
    (instance_id,) = await provider.launch_offering(request(**tags))
    pid = provider.pids()[instance_id]
    argv = (await wait_file(lambda: list(tmp_path.glob(f"argv-{pid}")))).read_text()
    conf = "CPUs=2 RealMemory=800 Weight=3 Feature=shoal,dyn NodeAddr=127.0.0.1"
    assert argv.split("\n")[-2] == conf
    bad = {TAG_SLURM_RESOURCES: "CPUs=2 RealMemory=800 Weight=3 NodeAddr=10.0.0.9"}
    with pytest.raises(ProviderError, match="is not CPUs=<n> RealMemory=<MiB> Weight=<n>"):
        await provider.launch_offering(request(token="tok-2", **bad))
    assert list(provider.pids()) == [instance_id]


async def test_one_client_token_launches_once(make: Callable[..., LocalProvisioner]) -> None:
    provider = make()
    first = await provider.launch_offering(request("hung", count=2))
    again = await provider.launch_offering(request("hung", count=2))
    assert first == again and len(first) == 2
    assert sorted(provider.pids()) == sorted(first)
    other = await provider.launch_offering(request("hung", token="tok-2"))
    assert other != first and len(provider.pids()) == 3


async def test_a_client_token_is_kept_for_a_day_then_forgotten(
    make: Callable[..., LocalProvisioner], tmp_path: Path
) -> None:
    """As EC2 keeps a token at least 24 hours: within ``CLIENT_TOKEN_TTL`` the same token
    launches nothing more, across a restart too; after it the records no longer hold it (a
    demo left running does not keep every launch's token). A records file from before the
    tokens' times were kept times its tokens from the first launch that reads it."""
    clock = FakeClock()
    provider = make(clock=clock)
    first = await provider.launch_offering(request("hung", token="old"))
    await clock.advance(CLIENT_TOKEN_TTL - 1)
    again = make(clock=clock)  # a restart: the records file
    assert await again.launch_offering(request("hung", token="old")) == first
    await clock.advance(1)
    await again.launch_offering(request("hung", token="new"))
    records = json.loads((tmp_path / "local" / "instances.json").read_text())
    assert set(records["tokens"]) == set(records["token_times"]) == {"new"}
    # a file of an older shoal: tokens without times
    del records["token_times"]
    (tmp_path / "local" / "instances.json").write_text(json.dumps(records))
    older = make(clock=clock)
    await older.launch_offering(request("hung", token="other"))
    await clock.advance(CLIENT_TOKEN_TTL)
    await older.launch_offering(request("hung", token="last"))
    records = json.loads((tmp_path / "local" / "instances.json").read_text())
    assert set(records["tokens"]) == {"last"}


async def test_capacity_fills_partly_then_is_a_capacity_error(
    make: Callable[..., LocalProvisioner],
) -> None:
    provider = make(capacity={"hung": 2})
    assert len(await provider.launch_offering(request("hung", count=3))) == 2
    with pytest.raises(CapacityError) as caught:
        await provider.launch_offering(request("hung", token="tok-2"))
    assert caught.value.code == "InsufficientInstanceCapacity"
    assert caught.value.offerings == (Offering("hung", "local", CapacityType.ON_DEMAND),)


async def test_a_gang_starts_whole_on_a_type_with_room_or_not_at_all(
    make: Callable[..., LocalProvisioner],
) -> None:
    provider = make(capacity={"hung": 2})
    gang = dataclasses.replace(request("hung", count=3), min_count=3)
    with pytest.raises(CapacityError):  # room for 2 of a 3-node gang: none started
        await provider.launch_offering(gang)
    assert provider.pids() == {} and await provider.list_instances() == []
    assert await provider.addNodes(["hung", "small"], 3, False, all_or_nothing=True) == 3
    assert {n.nodeType for n in await provider.list_instances()} == {"small"}


async def test_capacity_changed_at_run_time_applies_to_the_next_launch(
    make: Callable[..., LocalProvisioner],
) -> None:
    """``set_capacity`` (what a SIGHUP reload of ``provider.capacity`` calls): a stock-out
    ends for the next launch, a lower limit keeps what runs and refuses more."""
    provider = make(capacity={"hung": 0})
    gang = dataclasses.replace(request("hung", count=3), min_count=3)
    with pytest.raises(CapacityError):
        await provider.launch_offering(gang)
    provider.set_capacity("hung", 3)
    assert len(await provider.launch_offering(gang)) == 3
    provider.set_capacity("hung", 1)
    with pytest.raises(CapacityError):
        await provider.launch_offering(request("hung", token="tok-2"))
    assert len(provider.pids()) == 3
    provider.set_capacity("hung", None)  # unlimited
    assert len(await provider.launch_offering(request("hung", token="tok-3"))) == 1
    with pytest.raises(ProviderError):
        provider.set_capacity("absent", 1)


async def test_add_nodes_tags_what_it_launches_and_zero_capacity_raises(
    make: Callable[..., LocalProvisioner],
) -> None:
    provider = make(capacity={"small": 0})
    assert await provider.addNodes(["hung"], 1, False, requestId="r-7", tags={"x": "y"}) == 1
    (node,) = await provider.list_instances()
    assert (node.tags["x"], node.tags[TAG_REQUEST_ID], node.nodeType) == ("y", "r-7", "hung")
    assert node.privateIP == "127.0.0.1" and node.zone == "local"
    with pytest.raises(CapacityError):
        await provider.addNodes(["small"], 1, False)


async def test_records_survive_a_restart_of_the_daemon(
    make: Callable[..., LocalProvisioner],
) -> None:
    first = make()
    ids = await first.launch_offering(request("hung"))
    second = make()  # a new daemon, the same state_dir
    assert [n.name for n in await second.list_instances()] == ids
    assert await second.launch_offering(request("hung")) == ids  # the token is remembered
    assert (await second.launch_offering(request("hung", token="tok-9")))[0] not in ids


async def test_a_spot_launch_is_listed_as_spot_after_a_restart_too(
    make: Callable[..., LocalProvisioner],
) -> None:
    """The listing says what capacity each instance is, as EC2's ``InstanceLifecycle``
    does: the daemon's ledger matches a lost spot answer's placeholder to a listed spot
    instance only (before, every local instance was listed on-demand, so such a
    placeholder waited for the ledger's TTL)."""
    provider = make()
    spot = dataclasses.replace(
        request("hung", token="tok-s"),
        offering=Offering("hung", "local", CapacityType.SPOT),
    )
    ids = await provider.launch_offering(spot)
    other = await provider.launch_offering(request("hung"))
    kinds = {n.name: n.preemptible for n in await make().list_instances()}
    assert kinds == {ids[0]: True, other[0]: False}


async def test_two_daemons_sharing_the_records_file_see_each_others_changes(
    make: Callable[..., LocalProvisioner],
) -> None:
    """Two ``shoal run`` on one machine share the records file (ha: one leads, then the
    other, then the first again). Each read it once, at its first use: the first, leading
    again, listed its own old copy (the other's launch missing, so launched again) and its
    next write dropped the other's instance from the file (a process nobody would stop)."""
    first, second = make(), make()
    assert await first.list_instances() == []  # the first leads: it has read the file
    ids = await second.launch_offering(request("hung"))  # the second leads, launches
    assert [n.name for n in await first.list_instances()] == ids  # the first leads again
    assert await first.launch_offering(request("hung")) == ids  # its retry: the same token
    other = await first.launch_offering(request("hung", token="tok-2"))
    assert sorted(n.name for n in await second.list_instances()) == sorted(ids + other)


async def test_tags_are_kept_in_the_records_across_a_restart(
    make: Callable[..., LocalProvisioner],
) -> None:
    first = make()
    (instance_id,) = await first.launch_offering(request("hung"))
    await first.tag_instances([instance_id], {TAG_DRAINING: "1700000000"})
    second = make()  # a new daemon, the same state_dir: the drain is still marked
    (node,) = await second.list_instances()
    assert node.tags[TAG_DRAINING] == "1700000000" and node.tags[TAG_INSTANCE_TYPE] == "hung"
    await second.untag_instances([instance_id], [TAG_DRAINING, "absent"])
    assert TAG_DRAINING not in (await make().list_instances())[0].tags
    with pytest.raises(ProviderError) as info:
        await second.tag_instances([instance_id, "t-404"], {TAG_DRAINING: "1"})
    assert info.value.code == "InvalidInstanceID.NotFound" and "t-404" in str(info.value)
    assert TAG_DRAINING not in (await second.list_instances())[0].tags  # all or nothing


async def test_terminate_stops_the_process_and_everything_in_its_session(
    make: Callable[..., LocalProvisioner], tmp_path: Path
) -> None:
    provider = make()
    (instance_id,) = await provider.launch_offering(request())
    pid = provider.pids()[instance_id]
    await wait_file(lambda: list(tmp_path.glob(f"env-{pid}")))
    family = session_pids(pid)
    assert len(family) >= 2  # the probe and its sleep
    outcome = await provider.terminate_instances([instance_id, "t-404"])
    assert outcome == {
        instance_id: TerminationStatus.TERMINATED,
        "t-404": TerminationStatus.ALREADY_GONE,
    }
    assert not any(process_alive(p) for p in family)
    assert await provider.list_instances() == []
    again = await provider.terminate_instances([instance_id])
    assert again == {instance_id: TerminationStatus.ALREADY_GONE}


async def test_a_process_that_died_is_no_longer_listed(
    make: Callable[..., LocalProvisioner],
) -> None:
    provider = make()
    (instance_id,) = await provider.launch_offering(request("hung"))
    pid = provider.pids()[instance_id]
    os.kill(pid, signal.SIGKILL)
    os.waitpid(pid, 0)
    assert await provider.list_instances() == []
    records = json.loads(provider.records_path.read_text())
    assert records["instances"] == {}


async def test_an_instance_recorded_without_its_pid_is_found_by_its_environment(
    make: Callable[..., LocalProvisioner],
) -> None:
    first = make()
    (instance_id,) = await first.launch_offering(request("hung"))
    pid = first.pids()[instance_id]
    records = json.loads(first.records_path.read_text())
    records["instances"][instance_id]["pid"] = None  # died between the record and the spawn
    first.records_path.write_text(json.dumps(records))
    second = make()
    assert [n.name for n in await second.list_instances()] == [instance_id]
    assert second.pids() == {instance_id: pid}
    assert json.loads(first.records_path.read_text())["instances"][instance_id]["pid"] == pid


async def test_the_catalogue_is_the_configured_types(make: Callable[..., LocalProvisioner]) -> None:
    provider = make()
    infos = await provider.describe_instance_types(["small", "nope"])
    assert list(infos) == ["small"]
    assert (infos["small"].cores, infos["small"].memory) == (2.0, 1000 * MiB)
    # no seed cluster surface to stub: no leader, no cluster to launch, no Kubernetes
    assert not hasattr(provider, "getLeader") and not hasattr(provider, "launchCluster")
    assert client_token("a", Offering("small", "local", CapacityType.ON_DEMAND)).startswith(
        "shoal-"
    )
