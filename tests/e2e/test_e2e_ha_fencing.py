"""Issue 21, fencing: kill -9 of the leader right after its launch, on real etcd, a lagging cloud.

Two `shoal run` daemons (``ha.ttl`` 2 s) share one real etcd (``etcd_server``) and one cloud.
The simulated cloud lives inside each daemon's process, so the cloud two processes can share
is the local provider's records file (``providers.local``: an instance is a process of this
machine; ``never_join`` makes it a ``sleep``, no slurmd needed), with ``listing_lag`` 60 s: a
launched instance stays out of the listings for the whole test, as a lagging
DescribeInstances would keep it. The leader is killed as soon as the cloud holds its
launch; the new leader leads within TTL + 1 s and, given the same demand, launches nothing:
it found the launches in flight in etcd (``daemon.leader.state``) at its term's start. Every
instance carries the epoch of the term that launched it (tag and request id). The instances'
processes are stopped by their pids at the end.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import signal
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from etcd_server import EtcdServer, etcd_server
from test_e2e_ha import TTL, knows_leader, leadership, role

pytestmark = pytest.mark.e2e

JOBS = {"jobs": [{"count": 4, "cores": 4, "memory": "6GiB", "wall_time": "2h"}], "running": []}


@pytest.fixture
def etcd(tmp_path: Path) -> Iterator[EtcdServer]:
    with etcd_server(tmp_path / "etcd") as server:
        yield server


@pytest.fixture
def cloud(tmp_path: Path) -> Iterator[Path]:
    """The local provider's folder; its instances' processes are killed by pid at the end."""
    folder = tmp_path / "cloud"
    try:
        yield folder
    finally:
        for record in instances(folder).values():
            if record.get("pid") is not None:
                with contextlib.suppress(ProcessLookupError):
                    os.kill(int(record["pid"]), signal.SIGKILL)


def instances(folder: Path) -> dict[str, Any]:
    try:
        return dict(json.loads((folder / "instances.json").read_text())["instances"])
    except (FileNotFoundError, ValueError):
        return {}


def started(folder: Path) -> dict[str, Any]:
    """The instances whose process was started (a record is written before its process)."""
    return {i: r for i, r in instances(folder).items() if r.get("pid") is not None}


def config(e2e: Any, etcd: EtcdServer, cloud: Path, name: str) -> dict[str, Any]:
    return e2e.simulated_config(
        e2e.free_port(),
        ha={"etcd": [etcd.url], "ttl": f"{TTL:.0f}s", "name": name},
        provider={
            "kind": "local",
            "zone": "local",
            "boot_delay": None,
            "join_delay": None,
            "state_dir": str(cloud),
            "instance_types": {"w4": {"cores": 4, "memory": "8GiB", "price": 0.2}},
            "never_join": ["w4"],
            "listing_lag": "60s",
        },
        node_types=[{"type": "w4", "min": 0, "max": 20}],
    )


def test_a_new_leader_launches_nothing_its_killed_predecessor_had_in_flight(
    shoal: Any, e2e: Any, etcd: EtcdServer, cloud: Path
) -> None:
    a = shoal(config(e2e, etcd, cloud, "a"), name="a").start(wait_ready=True)
    e2e.wait_for("a leads", lambda: knows_leader(a, "a", "leader"), 15.0, on_timeout=a.tail)
    b = shoal(config(e2e, etcd, cloud, "b"), name="b").start(wait_ready=False)
    e2e.wait_for("b follows", lambda: knows_leader(b, "a", "follower"), 15.0, on_timeout=b.tail)
    view = leadership(a)
    assert view is not None
    epoch = view["epoch"]

    assert a.put_demand(JOBS).status == 200
    launched = e2e.wait_for(
        "a's launch in the cloud",
        lambda: found if len(found := started(cloud)) == 4 else None,
        10.0,
        interval=0.005,
        on_timeout=a.tail,
    )
    killed = time.monotonic()
    a.kill9()  # right after the launch: the cloud lists none of it for a minute
    e2e.wait_for("b leads", lambda: role(b) == "leader", TTL + 1.0, on_timeout=b.tail)
    took = time.monotonic() - killed
    print(f"failover after kill -9 right after a launch: {took:.3f}s (ttl {TTL:.0f}s)")
    assert took <= TTL + 1.0
    b.wait_ready()

    passes = b.status()["passes"]
    assert b.put_demand(JOBS).status == 200

    def planned() -> bool:
        last = b.status()["last_pass"]
        return last is not None and last["number"] > passes

    e2e.wait_for("b's pass on the demand", planned, 10.0, on_timeout=b.tail)
    assert set(instances(cloud)) == set(launched)  # nothing launched twice
    log = b.log_path.read_text()
    assert "event=launch_restored" in log
    # a was killed after the cloud launched: before its answer was booked, b found the intent
    # and made it again under a's client token, getting the same 4 back (booked and counted
    # by b); after it, b found the 4 ids. Either way none is new.
    replayed = "event=launch_replayed" in log
    assert e2e.metric(b.metrics(), "shoal_scale_ups_total") == (4 if replayed else 0)
    for record in launched.values():  # each instance names the term that launched it
        assert record["tags"]["shoal:epoch"] == str(epoch)
        assert record["tags"]["shoal:request-id"].endswith(f"-e{epoch}")


async def test_on_real_etcd_a_deposed_terms_state_write_is_refused(etcd: EtcdServer) -> None:
    """The etcd backend's txn: a term's writes succeed while its leader key lives; once the
    key is another term's, they are refused (``Fenced``) and the state keeps the last good
    snapshot, which the next leader reads."""
    import aiohttp
    from shoal.daemon.durable import Fenced
    from shoal.daemon.leader import LeaderInfo
    from shoal.daemon.leader.etcd import EtcdElector, _b64
    from shoal.daemon.leader.state import EtcdStateBackend
    from shoal.runtime.clock import SystemClock

    key, state_key = "/shoal/e2e/leader", "/shoal/e2e/state"
    a = EtcdElector([etcd.url], key, LeaderInfo("a"), TTL, SystemClock())
    b = EtcdElector([etcd.url], key, LeaderInfo("b"), TTL, SystemClock())
    try:
        await a.campaign()
        a_epoch = a.epoch
        a_state = EtcdStateBackend(a, state_key)
        assert await a_state.load() is None
        await a_state.save({"version": 1, "ledger": {"n": 1}}, a_epoch)
        url = f"{etcd.url}/v3/kv/deleterange"  # a's key goes, as with its lease
        async with aiohttp.ClientSession() as http, http.post(url, json={"key": _b64(key)}):
            pass
        await asyncio.wait_for(b.campaign(), TTL)
        assert b.epoch != a_epoch
        with pytest.raises(Fenced):  # a late write of a's term
            await a_state.save({"version": 1, "ledger": {"n": 2}}, a_epoch)
        b_state = EtcdStateBackend(b, state_key)
        assert await b_state.load() == {"version": 1, "ledger": {"n": 1}}
        await b_state.save({"version": 1, "ledger": {"n": 3}}, b.epoch)
        assert await a_state.load() == {"version": 1, "ledger": {"n": 3}}
    finally:
        await a.close()
        await b.close()
