"""Issue 21: when a term ends (``ha``), the power saver stops serving the requests it had in
hand, as the controller stops; the next term serves them again once it reconciled. A deposed
leader whose guard has not fired yet changes nothing in Slurm: neither its clean-up, nor the
power saver's DOWNs, releases (POWER_DOWN) and node addresses, each refused by the term's
confirmation (a fenced state write), which also steps it down."""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

from shoal.daemon.durable import StateError
from shoal.daemon.leader.memory import MemoryElection, MemoryElector
from shoal.daemon.leader.state import MemoryStateBackend
from shoal.daemon.service import fence_handler
from shoal.daemon.slurm.constants import SINFO_FIELDS
from shoal.daemon.slurm.parse import SlurmNode, parse_sinfo
from shoal.daemon.slurm.state import KeptDown
from shoal.providers.errors import RetryableError
from shoal.providers.simulated import SimulatedProvisioner
from shoal.runtime.testing import FakeClock
from test_slurm_power import ZONE, Daemon, FakeSlurm, start


async def leading(
    tmp_path: Path, clock: FakeClock, provider: SimulatedProvisioner | None = None, **slurm: Any
) -> tuple[Daemon, MemoryElection, MemoryElector]:
    """A power-saving daemon whose elector ``a`` leads, its state in the election's store
    (fenced by a's epoch) and a refused write stepping it down, as ``service.start_term``
    wires a term."""
    election = MemoryElection(clock, 10.0)
    a = election.elector("a")
    await clock.run_until(a.campaign(), limit=30)
    backend = MemoryStateBackend(election, a.me)
    d = await start(tmp_path, clock, provider, state_backend=backend, **slurm)
    await begin(d, a)
    return d, election, a


async def begin(d: Daemon, a: MemoryElector) -> None:
    controller = d.power.controller
    await controller.begin_term(a.epoch or 0)
    controller.store.on_fenced[:] = [fence_handler(a, a.epoch or 0)]


async def resumed_with_address_pending(
    tmp_path: Path, clock: FakeClock
) -> tuple[Daemon, MemoryElection, MemoryElector, FakeSlurm]:
    """A leading daemon with ``set_node_addr`` that served a resume of ``cloud1``: its
    instance is launched, its address not listed yet (a 30 s listing lag)."""
    provider = SimulatedProvisioner(clusterName="t", zone=ZONE, clock=clock, listing_lag=30)
    d, election, a = await leading(tmp_path, clock, provider, set_node_addr=True)
    slurm = FakeSlurm()
    d.power.client = slurm  # type: ignore[assignment]
    await d.power.accept("resume", "cloud1")
    await d.served()
    return d, election, a, slurm


async def kept_down(
    tmp_path: Path, clock: FakeClock, hostlist: str
) -> tuple[Daemon, MemoryElection, MemoryElector, FakeSlurm]:
    """A leading daemon on a FakeSlurm whose resume of ``hostlist`` found no capacity: its
    nodes kept DOWN (marked, while the term holds)."""
    d, election, a = await leading(tmp_path, clock)
    slurm = FakeSlurm()
    d.power.client = slurm  # type: ignore[assignment]
    d.provider.set_unavailable("c5.xlarge")
    await d.power.accept("resume", hostlist)
    await d.served()
    return d, election, a, slurm


async def depose(a: MemoryElector, election: MemoryElection, clock: FakeClock) -> MemoryElector:
    """``a`` is cut off (its renewals and guard stop: it still believes it leads), its lease
    runs out and ``b`` leads; returns b."""
    a.crash()
    await clock.advance(11)
    b = election.elector("b")
    await clock.run_until(b.campaign(), limit=30)
    return b


async def test_a_term_end_stops_the_requests_in_hand_and_the_next_term_serves_them(
    tmp_path: Path,
) -> None:
    clock = FakeClock()
    d = await start(tmp_path, clock)
    controller = d.power.controller
    busy = RetryableError("throttled", code="RequestLimitExceeded")
    d.provider.fail_next(busy, "RunInstances", n=1000)  # the worker retries, in hand
    run = asyncio.create_task(d.power.run())
    await d.power.accept("resume", "cloud1")
    await clock.advance(0.5)
    assert d.provider.worker_names() == [] and not d.power._workers["cloud1"].done()

    # the term ends as daemon.service ends it: the integration's task cancelled, the
    # controller stopped
    run.cancel()
    controller.stop()
    await asyncio.gather(run, return_exceptions=True)
    d.provider.reset_faults()
    tried = d.launches()
    await clock.advance(60)
    assert d.launches() == tried  # the deposed leader asked the cloud for nothing more
    assert set(d.power.state.requests) == {"cloud1"}  # left for the next term

    # the next term: run waits for its reconcile, then serves the request
    controller.resume()
    run = asyncio.create_task(d.power.run())
    await clock.advance(1)
    assert d.launches() == tried
    await clock.run_until(controller.reconcile())
    await d.served()
    assert len(d.provider.worker_names()) == 1 and set(await d.workers()) == {"cloud1"}
    run.cancel()
    await asyncio.gather(run, return_exceptions=True)


class Slurm:
    """slurmctld as the clean-up sees it: one cloud node left DOWN by a failed resume, with
    no instance (a repair: POWER_DOWN); every change asked of it recorded."""

    def __init__(self) -> None:
        self.changes: list[tuple[str, str]] = []

    async def nodes(self) -> tuple[SlurmNode, ...]:
        state, reason = "down+cloud+powered_down+not_responding", "ResumeTimeout reached"
        fields = {"nodelist": "cloud1", "statecomplete": state, "cpusstate": "0/2/0/2"}
        fields |= {"features": "(null)", "nodeaddr": "127.0.0.1", "reason": reason}
        return parse_sinfo("\t".join(fields[f] for f in SINFO_FIELDS))

    async def set_down(self, node: str, reason: str) -> None:
        self.changes.append(("down", node))

    async def power_down(self, node: str) -> None:
        self.changes.append(("power_down", node))

    async def delete_nodes(self, node: str) -> None:
        self.changes.append(("delete", node))


async def test_a_deposed_leaders_clean_up_changes_nothing_in_slurm(tmp_path: Path) -> None:
    """The clean-up's repairs change Slurm (DOWN, POWER_DOWN, delete) as well as the cloud: a
    deposed leader whose guard has not fired confirms its term first, and repairs nothing
    (the new leader may be resuming that node); while its term holds, it repairs."""
    clock = FakeClock()
    d, election, a = await leading(tmp_path, clock)
    slurm = Slurm()
    d.slurm.cleaner.client = slurm  # type: ignore[assignment]

    b = await depose(a, election, clock)
    repairs = await clock.run_until(d.slurm.cleaner.once())
    assert [(r.kind.value, r.node) for r in repairs] == [("down_without_instance", "cloud1")]
    assert slurm.changes == []
    assert not a.is_leader  # the refusal ended its term

    await b.resign()  # a leads again: its repairs go through
    await clock.run_until(a.campaign(), limit=30)
    await begin(d, a)
    await clock.run_until(d.slurm.cleaner.once())
    assert slurm.changes == [("power_down", "cloud1")]
    await a.close()


async def test_a_deposed_leaders_release_loop_neither_releases_nor_marks_down(
    tmp_path: Path,
) -> None:
    """The release loop's POWER_DOWN of a node kept DOWN whose backoff ended, and its DOWN of
    one not marked yet (slurmctld did not answer then), change Slurm: a deposed leader whose
    guard has not fired confirms its term first (once for the pass) and changes nothing (the
    new leader may be resuming those nodes); it steps down. Leading again, it releases."""
    clock = FakeClock()
    d, election, a, slurm = await kept_down(tmp_path, clock, "cloud1")
    assert slurm.calls == [("down", "cloud1")]  # the term holds: its failure is marked DOWN
    kept = d.power.state.kept_down["cloud1"]
    d.power.state.kept_down["cloud2"] = KeptDown(kept.until, kept.reason, marked=False)

    b = await depose(a, election, clock)
    loop = asyncio.ensure_future(d.power.run())
    await clock.advance(kept.until - clock.now() + d.power.retry_interval + 1)
    assert slurm.calls == [("down", "cloud1")]  # no DOWN of cloud2, no release of cloud1
    assert not a.is_leader and set(d.power.state.kept_down) == {"cloud1", "cloud2"}
    loop.cancel()
    await asyncio.gather(loop, return_exceptions=True)

    await b.resign()  # a leads again, from the state its term last wrote: it releases
    await clock.run_until(a.campaign(), limit=30)
    await begin(d, a)
    loop = asyncio.ensure_future(d.power.run())
    await clock.advance(1)
    assert slurm.calls == [("down", "cloud1"), ("power_down", "cloud1")]
    loop.cancel()
    await asyncio.gather(loop, return_exceptions=True)
    await a.close()


async def test_a_deposed_leader_marks_no_node_down(tmp_path: Path) -> None:
    """A resume accepted in the term and served after it passed, for a node of no node type,
    would set the node DOWN: a deposed leader confirms its term first and leaves it."""
    clock = FakeClock()
    d, election, a = await leading(tmp_path, clock)
    slurm = FakeSlurm()
    d.power.client = slurm  # type: ignore[assignment]
    d.power._ready.clear()  # the request waits, as behind a reconcile
    await d.power.accept("resume", "gpu1")
    await depose(a, election, clock)
    d.power._ready.set()
    await d.served()
    assert slurm.calls == [] and not a.is_leader
    await a.close()


async def test_a_deposed_leader_sets_no_node_address(tmp_path: Path) -> None:
    """With ``set_node_addr`` a launched node's NodeAddr is set once the listing shows its
    instance, maybe long after the launch: by then the term may have passed, and the new
    leader may have replaced the instance. A deposed leader confirms its term first and sets
    nothing."""
    clock = FakeClock()
    d, election, a, slurm = await resumed_with_address_pending(tmp_path, clock)
    assert len(d.power.launched) == 1 and d.power._tasks  # its address not listed yet

    await depose(a, election, clock)
    await clock.advance(60)  # listed by now
    await clock.run_until(asyncio.gather(*d.power._tasks))
    assert slurm.calls == [] and not a.is_leader
    await a.close()


async def test_a_confirmation_lost_to_a_store_timeout_does_not_lose_the_node_address(
    tmp_path: Path,
) -> None:
    """One etcd timeout on the confirming write is not a refusal: the daemon still leads,
    so the address is tried again ``retry_interval`` later and set (before, it was dropped
    for good, and the node waited for ResumeTimeout and was marked DOWN)."""
    clock = FakeClock()
    d, _, a, slurm = await resumed_with_address_pending(tmp_path, clock)
    backend = d.power.controller.store.backend
    save, failures = backend.save, [StateError("etcd kv/txn timed out")]

    async def flaky(snapshot: Any, epoch: Any) -> None:
        if failures:
            raise failures.pop()
        await save(snapshot, epoch)

    backend.save = flaky  # type: ignore[method-assign]
    await clock.advance(60)  # listed by now
    await clock.run_until(asyncio.gather(*d.power._tasks))
    assert not failures and a.is_leader
    assert [c[0] for c in slurm.calls] == ["address"]
    await a.close()


async def test_an_address_decided_in_one_term_is_not_written_in_the_next(tmp_path: Path) -> None:
    """The NodeAddr task of a launch outlives its term (only closing the integration cancels
    it). When this daemon leads again, a later term's confirmation must not cover it: the
    later term re-read the state and may judge the instance differently."""
    clock = FakeClock()
    d, _, a, slurm = await resumed_with_address_pending(tmp_path, clock)
    first = a.epoch
    assert d.power._tasks  # its address not listed yet
    await a.resign()  # the term ends as the service ends one: the task lives on
    d.power.controller.stop()
    await clock.run_until(a.campaign(), limit=30)  # elected again
    d.power.controller.resume()
    await begin(d, a)
    assert a.epoch != first
    await clock.advance(60)  # listed by now
    await clock.run_until(asyncio.gather(*d.power._tasks))
    assert slurm.calls == []
    await a.close()


async def test_a_pass_of_the_release_loop_confirms_its_term_once(tmp_path: Path) -> None:
    """The term is confirmed per batch, as the executor does per termination batch: a pass
    that releases three nodes makes one fenced write for them, not three."""
    clock = FakeClock()
    d, _, a, slurm = await kept_down(tmp_path, clock, "cloud[1-3]")
    until = max(k.until for k in d.power.state.kept_down.values())
    executor = d.power.controller.executor
    confirm, confirmed = executor.confirm_term, []

    async def counted() -> None:
        confirmed.append(clock.now())
        await confirm()

    executor.confirm_term = counted  # type: ignore[method-assign]
    await clock.advance(until - clock.now() + 0.5)
    loop = asyncio.ensure_future(d.power.run())
    await clock.advance(0.1)
    assert [c for c in slurm.calls if c[0] == "power_down"] == [
        ("power_down", f"cloud{i}") for i in (1, 2, 3)
    ]
    assert len(confirmed) == 1
    loop.cancel()
    await asyncio.gather(loop, return_exceptions=True)
    await a.close()
