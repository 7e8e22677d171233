"""Issue 21, fencing: the durable state in the election's store (``daemon.leader.state``).

On the in-memory election (``MemoryElection``, the etcd of the unit tests) and the simulated
cloud on a FakeClock: a deposed term's write is refused and steps its daemon down; a new
leader reads the last one's launches in flight at its term's start and launches nothing
twice; every launch carries its term (request id, ``shoal:epoch`` tag) while a replay of a
restored request keeps its original client token; the file backend writes what it wrote
before.
"""

from __future__ import annotations

import asyncio
import json
from pathlib import Path
from typing import Any

import pytest
from loop_harness import Harness, config_dict, make_harness
from shoal.daemon.config import parse_config
from shoal.daemon.durable import (
    STATE_FILE,
    DurableStore,
    Fenced,
    FileBackend,
    LaunchJournal,
)
from shoal.daemon.leader import LeaderInfo
from shoal.daemon.leader.memory import MemoryElection, MemoryElector
from shoal.daemon.leader.state import MemoryStateBackend
from shoal.daemon.nodes import TrackedState
from shoal.daemon.service import fence_handler
from shoal.daemon.slurm.state import PowerState, ResumeRequest
from shoal.daemon.slurm.weigher import Weigher
from shoal.providers.node_provider import TAG_EPOCH, TAG_REQUEST_ID, client_token
from shoal.providers.outcomes import LaunchRequest
from shoal.runtime.files import write_json_atomic
from shoal.runtime.testing import FakeClock
from shoal.scaler.model import (
    AddCause,
    CapacityType,
    Launch,
    NodeAction,
    Offering,
    Plan,
    PlannerState,
    RemoveCause,
)
from test_leader_gate import start_pair, stop_all
from test_slurm_weigher import HOUR, Scontrol, read

TTL = 10.0
OFFERING = Offering("c5.xlarge", "us-west-2a", CapacityType.ON_DEMAND)


async def leader(clock: FakeClock, election: MemoryElection, name: str) -> MemoryElector:
    elector = election.elector(name)
    await clock.run_until(elector.campaign(), limit=3 * TTL)
    return elector


async def harness_of(clock: FakeClock, elector: MemoryElector, **kwargs: Any) -> Harness:
    """A controller whose durable state is ``elector``'s election's (no state_dir)."""
    backend = MemoryStateBackend(elector.election, elector.me)
    config = parse_config(config_dict(provider={"listing_lag": "120s"}))
    return await make_harness(clock, config, state_backend=backend, **kwargs)


async def next_leader(
    clock: FakeClock, election: MemoryElection, old: Harness
) -> tuple[MemoryElector, Harness]:
    """Past the crashed leader's lease, ``b`` leads on ``old``'s cloud: its term begun (the
    state read) and reconciled."""
    await clock.advance(TTL + 1)
    b = await leader(clock, election, "b")
    new = await harness_of(clock, b, provider=old.provider)
    await new.controller.begin_term(b.epoch or 0)
    await new.drive(new.controller.reconcile())
    return b, new


def saved(election: MemoryElection) -> dict[str, Any]:
    assert election.state is not None
    return dict(json.loads(election.state))


async def test_a_write_of_a_deposed_term_is_refused_and_steps_its_daemon_down() -> None:
    clock = FakeClock()
    election = MemoryElection(clock, TTL)
    a = await leader(clock, election, "a")
    store = DurableStore(None, backend=MemoryStateBackend(election, a.me))
    journal = LaunchJournal(store)
    await store.reload(a.epoch)
    node_type = (await harness_of(clock, a)).controller.policy.node_types[0]
    store.on_fenced.append(lambda exc: a.step_down("fenced"))
    await journal.intent("r1", node_type, 1, OFFERING, clock.now())
    assert set(saved(election)["ledger"]["intents"]) == {"r1"}

    a.crash()  # its renewals stop, and so does its guard: it still believes it leads
    await clock.advance(TTL + 1)
    b = await leader(clock, election, "b")
    assert a.is_leader and b.is_leader and b.epoch != a.epoch  # two believe they lead
    with pytest.raises(Fenced):
        await journal.intent("r2", node_type, 1, OFFERING, clock.now())
    assert not a.is_leader  # stepped down at the refused write
    assert set(saved(election)["ledger"]["intents"]) == {"r1"}  # the store kept the last good
    with pytest.raises(Fenced):  # and stays refused
        await store.flush()
    await b.close()


async def test_a_new_leader_restores_launches_in_flight_at_its_term_start() -> None:
    """kill -9 of the leader right after the cloud answered its launch (the ids not booked
    yet: only the intent is in the store) while the listing lags: the new leader finds the
    intent at its term's start and launches nothing twice, in its first pass and later."""
    clock = FakeClock()
    election = MemoryElection(clock, TTL)
    a = await leader(clock, election, "a")
    old = await harness_of(clock, a)
    await old.controller.begin_term(a.epoch or 0)
    at_answer: list[str | None] = []
    real = old.provider.launch_offering

    async def launch_then_crash(request: LaunchRequest) -> list[str]:
        ids = await real(request)
        at_answer.append(election.state)  # what the store holds when kill -9 lands
        return ids

    old.provider.launch_offering = launch_then_crash  # type: ignore[method-assign]
    old.set_demand(old.jobs(12))  # 3 four-core nodes
    assert (await old.pass_()).launched == 3
    old.provider.launch_offering = real  # type: ignore[method-assign]
    a.crash()
    election.state = at_answer[-1]  # a's writes after the answer never happened
    assert saved(election)["ledger"]["intents"] and not saved(election)["ledger"]["entries"]

    b, new = await next_leader(clock, election, old)
    new.set_demand(new.jobs(12))
    assert (await new.pass_()).launched == 3  # the replay's 3 (the plan launched none)
    await clock.advance(125)  # listed now: the placeholders give way to the instances
    assert (await new.pass_()).launched == 0
    assert old.provider.count() == 3
    assert new.controller.tracker.pending() == []
    await b.close()


async def test_an_intent_applied_with_its_answer_lost_is_launched_by_the_next_leader() -> None:
    """etcd applies the leader's intent but its answer is lost (the CI failure of the 7 s
    etcd outage test: a paused etcd ran the write when it resumed). The leader, told the
    write failed, never calls addNodes; the next leader finds the intent with no answer.
    Its first pass that wants the nodes makes the launch again under the same client token:
    launched now, once, not held as placeholders for the ledger's TTL."""
    clock = FakeClock()
    election = MemoryElection(clock, TTL)
    a = await leader(clock, election, "a")
    old = await harness_of(clock, a)
    await old.controller.begin_term(a.epoch or 0)
    backend = old.controller.store.backend
    real_save = backend.save

    lost: list[bool] = []

    async def applied_but_lost(snapshot: dict[str, Any], epoch: int | None) -> None:
        if not lost and not snapshot["ledger"]["intents"]:
            return await real_save(snapshot, epoch)  # before the outage
        if not lost:  # the intent: etcd applies it once it resumes; later writes find it paused
            await real_save(snapshot, epoch)
        lost.append(True)
        raise TimeoutError("no answer in time")

    backend.save = applied_but_lost  # type: ignore[method-assign]
    old.set_demand(old.jobs(12))
    record = await old.pass_()
    assert record.launched == 0 and old.launch_calls() == []  # not journaled: not sent
    (request_id,) = saved(election)["ledger"]["intents"]  # yet the store has it
    a.crash()

    b, new = await next_leader(clock, election, old)
    new.set_demand(new.jobs(12))
    assert (await new.pass_()).launched == 3  # the replay's 3 (the plan launched none)
    (call,) = new.launch_calls()  # and the replay sent them, with the first term's token
    assert call.kwargs["requestId"] == request_id
    assert call.kwargs["client_token"] == client_token(request_id, OFFERING)
    assert old.provider.count() == 3
    assert not any(t.placeholder for t in new.controller.tracker.pending())
    await clock.advance(125)  # listed: nothing more launched
    assert (await new.pass_()).launched == 0 and old.provider.count() == 3
    await b.close()


async def test_each_term_reads_the_state_again_the_power_savers_requests_too() -> None:
    """A daemon that led before, then followed, leads again: what it knew is a term old; it
    takes the store's state (ledger and Slurm section), not its own."""
    clock = FakeClock()
    election = MemoryElection(clock, TTL)
    a = await leader(clock, election, "a")
    h = await harness_of(clock, a)
    power = PowerState(h.controller.store)
    await h.controller.begin_term(a.epoch or 0)
    power.requests["cloud1"] = ResumeRequest("slurm-x-e1", 1.0, offering=OFFERING)
    await power.save()
    await a.resign()
    b = await leader(clock, election, "b")
    other = DurableStore(None, backend=MemoryStateBackend(election, b.me))
    other_power = PowerState(other)
    await other.reload(b.epoch)
    assert set(other_power.requests) == {"cloud1"}
    del other_power.requests["cloud1"]  # served by b
    other_power.requests["cloud2"] = ResumeRequest("slurm-y-e2", 2.0)
    await other_power.save()
    await b.resign()

    a_again = await leader(clock, election, "a")  # the same daemon's next term
    await h.controller.begin_term(a_again.epoch or 0)
    assert set(power.requests) == {"cloud2"}
    assert h.controller.store.epoch == a_again.epoch == h.controller.executor.epoch
    await a_again.close()


async def test_launches_carry_their_term_and_a_replay_keeps_the_original_token() -> None:
    clock = FakeClock()
    election = MemoryElection(clock, TTL)
    a = await leader(clock, election, "a")
    h = await harness_of(clock, a)
    first_term = a.epoch or 0
    await h.controller.begin_term(first_term)
    node_type = h.controller.policy.node_types[0]
    request_id = h.controller.executor.new_request_id()
    assert request_id.endswith(f"-e{first_term}")
    launch = Launch(node_type.name, 2, AddCause.DEMAND, "test")
    report = await h.drive(h.controller.launch(node_type, launch, request_id=request_id))
    ids = sorted(i for attempt in report.attempts for i in attempt.ids)
    assert len(ids) == 2
    first_token = h.launch_calls()[0].args["client_token"]
    assert first_token == client_token(request_id, report.attempts[0].offering)

    # a new term replays the request restored from the store: the same request id, so the
    # same client token, and the cloud returns the instances it launched then
    await a.resign()
    b = await leader(clock, election, "b")
    await h.controller.begin_term(b.epoch or 0)
    replay = await h.drive(h.controller.launch(node_type, launch, request_id=request_id))
    assert sorted(i for attempt in replay.attempts for i in attempt.ids) == ids
    assert h.launch_calls()[-1].args["client_token"] == first_token
    assert h.provider.count() == 2
    await clock.advance(125)
    tags = {n.name: n.tags for n in await h.provider.getProvisionedWorkers()}
    assert {t[TAG_EPOCH] for t in tags.values()} == {str(first_term)}  # who launched
    assert {t[TAG_REQUEST_ID] for t in tags.values()} == {request_id}
    await b.close()


async def test_the_file_backend_writes_the_same_bytes_as_before(tmp_path: Path) -> None:
    store = DurableStore.open(tmp_path / "state")
    assert isinstance(store.backend, FileBackend)
    section = {"b": [1, 2.5, None], "a": {"z": "é"}}
    store.section("ledger", lambda: section)
    await store.flush()
    expected = tmp_path / "expected.json"
    write_json_atomic(expected, {"version": 1, "ledger": section})
    assert (tmp_path / "state" / STATE_FILE).read_bytes() == expected.read_bytes()
    assert await store.backend.load() == {"version": 1, "ledger": section}
    store.close()


def test_the_state_key_sits_beside_the_leader_key() -> None:
    from shoal.daemon.config import HaConfig

    ha = HaConfig(etcd=("http://127.0.0.1:2379",))
    assert (ha.leader_key("c1"), ha.state_key("c1")) == ("/shoal/c1/leader", "/shoal/c1/state")
    custom = HaConfig(etcd=("http://127.0.0.1:2379",), key="/site/x")
    assert custom.state_key("c1") == "/site/x/state"


class SlowBackend(MemoryStateBackend):
    """etcd answering late: each save waits for ``answer`` before the txn is decided."""

    def __init__(self, election: MemoryElection, who: LeaderInfo) -> None:
        super().__init__(election, who)
        self.answer = asyncio.Event()

    async def save(self, snapshot: dict[str, Any], epoch: int | None) -> None:
        await self.answer.wait()
        await super().save(snapshot, epoch)


async def test_a_late_refusal_of_an_earlier_terms_write_does_not_end_the_next_term() -> None:
    """A write of term 1 still in flight when the same daemon leads again (term 3) is refused
    while the new term starts: that refusal concerns term 1 and must not end term 3."""
    clock = FakeClock()
    election = MemoryElection(clock, TTL)
    a = await leader(clock, election, "a")
    backend = SlowBackend(election, a.me)
    store = DurableStore(None, backend=backend)
    store.section("ledger", dict)
    first = a.epoch or 0
    backend.answer.set()
    await store.reload(first)
    store.on_fenced[:] = [fence_handler(a, first)]
    backend.answer.clear()
    store.changed()  # term 1 writes; the store has not answered yet
    await clock.settle()
    await a.resign()
    b = await leader(clock, election, "b")
    await b.resign()
    await clock.run_until(a.campaign(), limit=3 * TTL)  # a leads again: term 3
    third = a.epoch
    reloading = asyncio.ensure_future(store.reload(third))
    await clock.settle()
    backend.answer.set()  # now term 1's write is refused
    await reloading
    assert a.is_leader and a.epoch == third and store.epoch == third
    store.on_fenced[:] = [fence_handler(a, third or 0)]
    await store.flush()  # term 3 writes
    a.crash()  # term 3's renewals stop; a still believes it leads
    await clock.advance(TTL + 1)
    c = await leader(clock, election, "c")
    with pytest.raises(Fenced):
        await store.flush()
    assert not a.is_leader  # a refusal in the current term ends it
    await c.close()


async def test_a_leader_that_cannot_read_the_state_does_not_act(tmp_path: Path) -> None:
    """Acting without the last leader's launches in flight could launch them twice: a leader
    whose read of the state fails gives its term back and acts not at all; once the state
    can be read, a leader acts."""
    clock = FakeClock()
    election = MemoryElection(clock, TTL)
    election.state = json.dumps({"version": 99})  # written by a shoal this one cannot read
    _, services, tasks = await start_pair(tmp_path, clock, election=election)
    try:
        await clock.advance(3 * TTL)
        assert len(election.grants) >= 2  # each won, could not begin, gave the term back
        assert all(s.controller is not None and s.controller.passes == 0 for s in services)
        election.state = None  # the operator removed it
        await clock.advance(3 * TTL)
        assert sum(s.controller is not None and s.controller.passes > 0 for s in services) == 1
    finally:
        await stop_all(services, tasks)


async def deposed_with_a_ready_node(
    clock: FakeClock,
) -> tuple[Harness, str, MemoryElector, MemoryElector]:
    """Leader a launched one node that joined; then a's renewals and guard stop (it still
    believes it leads) and b takes the key: a is deposed and does not know it yet."""
    election = MemoryElection(clock, TTL)
    a = await leader(clock, election, "a")
    h = await harness_of(clock, a, provider=None)
    await h.controller.begin_term(a.epoch or 0)
    h.controller.store.on_fenced[:] = [fence_handler(a, a.epoch or 0)]
    node = await h.one_ready_node()
    await clock.advance(125)  # listed now
    await h.pass_()
    assert h.states()[node] == "ready"
    a.crash()
    await clock.advance(TTL + 1)
    b = await leader(clock, election, "b")
    assert a.is_leader and b.is_leader  # two believe they lead
    return h, node, a, b


def cloud_writes(h: Harness) -> list[str]:
    return [
        c.operation
        for c in h.provider.calls
        if c.operation in ("TerminateInstances", "CreateTags", "DeleteTags")
    ]


async def test_a_deposed_leader_cannot_terminate_outside_a_plan() -> None:
    """Slurm's suspend and the clean-up loop terminate through ``Controller.terminate``: a
    deposed leader whose guard has not fired must not reach the cloud; its term ends."""
    clock = FakeClock()
    h, node, a, b = await deposed_with_a_ready_node(clock)
    before = cloud_writes(h)
    with pytest.raises(Fenced):
        await h.drive(h.controller.terminate([node]))
    assert cloud_writes(h) == before
    assert h.provider.count() == 1
    assert h.states()[node] == "ready"  # nothing booked
    assert not a.is_leader
    await b.close()


async def test_a_deposed_leader_neither_drains_nor_terminates_in_a_pass() -> None:
    """The plan's scale-down (the draining tag, then terminateNodes) is fenced as launches
    are: a deposed leader's pass touches no instance, and its term ends at the refusal."""
    clock = FakeClock()
    h, node, a, b = await deposed_with_a_ready_node(clock)
    before = cloud_writes(h)
    saves = h.controller.store.writes
    h.set_demand(h.jobs(0))
    for _ in range(4):  # idle for longer than unneeded_time (10 min)
        await clock.advance(200)
        await h.pass_()
    assert cloud_writes(h) == before
    assert h.provider.count() == 1 and h.states()[node] == "ready"
    assert h.controller.store.writes == saves
    assert not a.is_leader
    await b.close()


async def test_one_fenced_write_confirms_a_batch_of_terminations() -> None:
    """While the term holds, a scale-down of several nodes costs one confirming write (the
    store coalesces), and then terminates them all."""
    clock = FakeClock()
    election = MemoryElection(clock, TTL)
    a = await leader(clock, election, "a")
    h = await harness_of(clock, a)
    await h.controller.begin_term(a.epoch or 0)
    h.set_demand(h.jobs(12))  # 3 four-core nodes
    await h.pass_()
    await clock.advance(125)
    await h.pass_()
    assert h.provider.count() == 3
    writes = h.controller.store.writes
    await h.drive(h.controller.terminate(sorted(h.states())))
    assert h.provider.count() == 0
    assert h.controller.store.writes - writes <= 2  # the confirmation, and the booking
    await a.close()


class Hooks:
    """The scheduler's drain and undrain hooks (scontrol), recording what they were asked."""

    def __init__(self) -> None:
        self.calls: list[tuple[str, str]] = []

    async def drain(self, node: str, reason: str | None = None) -> None:
        self.calls.append(("drain", node))

    async def undrain(self, node: str) -> None:
        self.calls.append(("undrain", node))


async def test_a_deposed_leader_runs_no_drain_or_undrain_hook() -> None:
    """An undrain runs its hook (scontrol resume) before it removes the tag, and a drain the
    tag alone vouches for runs its hook again without tagging: neither may be run by a
    deposed leader (the new one may be terminating that node)."""
    clock = FakeClock()
    h, node, a, b = await deposed_with_a_ready_node(clock)
    hooks = Hooks()
    executor = h.controller.executor
    executor.drain_hook, executor.undrain_hook = hooks, hooks
    before = cloud_writes(h)
    node_type = h.controller.policy.node_types[0].name
    action = NodeAction(node, node_type, RemoveCause.IDLE, "idle")
    undrain = NodeAction(node, node_type, AddCause.DEMAND, "demand is back")
    for plan in (
        Plan((), (), (), {}, (), PlannerState(), undrains=(undrain,)),
        Plan((), (action,), (), {}, (), PlannerState()),
    ):
        h.controller.tracker.mark(node, TrackedState.DRAINING)  # by the tag alone
        assert h.controller.tracker.get(node).drain_confirmed is False  # type: ignore[union-attr]
        report = await h.drive(
            executor.execute(plan, h.controller.policy, h.controller.tracker, set())
        )
        assert report.errors  # refused, and said so
    assert hooks.calls == []
    assert cloud_writes(h) == before
    assert not a.is_leader
    await b.close()


async def test_a_deposed_leaders_weigher_changes_no_weight_and_steps_down() -> None:
    """review (reviewq2): the weigher's confirming write on the real fence (the memory
    election, as etcd's txn): a deposed leader whose guard has not fired yet (its controller
    still ready) sets no weight, and the refusal steps it down."""
    clock = FakeClock()
    h, node, a, b = await deposed_with_a_ready_node(clock)
    await h.drive(h.controller.reconcile())  # as Controller.run did when the term began
    assert h.controller.ready and not h.controller.stopping
    scontrol = Scontrol()
    w = Weigher(scontrol, h.controller)  # type: ignore[arg-type]
    w.observe(read(clock.now(), [node], {node: [(HOUR, 0.0)]}))
    await h.settle()
    assert scontrol.calls == [] and w.applied == {}
    assert not a.is_leader
    await b.close()
