"""``slurm.node_weights: kept``: the weigher (``daemon/slurm/weigher.py``) after each read,
on the daemon's own wiring over the simulated cloud, with a recording scontrol; and the
weights themselves (``scaler/order.py``). A real slurmctld takes the weights in
``tests/slurm/test_slurm_e2e.py``."""

from __future__ import annotations

import asyncio
from dataclasses import replace
from typing import TYPE_CHECKING, Any

import pytest
from hypothesis import given
from hypothesis import strategies as st
from shoal.daemon.durable import Fenced
from shoal.daemon.slurm.conf import weights
from shoal.daemon.slurm.constants import SHOAL_FEATURE
from shoal.daemon.slurm.demand import SlurmDemand
from shoal.daemon.slurm.errors import SlurmCommandError, SlurmUnavailableError
from shoal.daemon.slurm.metrics import SlurmMetrics
from shoal.daemon.slurm.parse import SlurmNode
from shoal.daemon.slurm.source import SlurmSnapshot
from shoal.daemon.slurm.weigher import Weigher
from shoal.scaler.model import Demand, RunningJob
from shoal.scaler.order import SPAN, STEP, idle_weight, kept_weight, remaining
from shoal.scaler.shape import Shape
from test_drain_ownership import ready_nodes

if TYPE_CHECKING:
    from loop_harness import Harness

HOUR = 3600.0


class Scontrol:
    """Records ``update_nodes`` calls; ``fail`` makes the next ones raise, and a name in
    ``refuse`` every one naming it, as Slurm would."""

    def __init__(self) -> None:
        self.calls: list[tuple[tuple[str, ...], dict[str, str]]] = []
        self.fail = 0
        self.refuse: set[str] = set()  # names Slurm does not know: the command fails
        self.refused: list[tuple[str, ...]] = []

    async def update_nodes(self, nodes: Any, **settings: str) -> None:
        if self.fail or self.refuse & set(nodes):
            self.fail = max(0, self.fail - 1)
            self.refused.append(tuple(nodes))
            raise SlurmCommandError("scontrol: error: Invalid node name specified")
        self.calls.append((tuple(nodes), settings))


def read(
    at: float, nodes: list[str], running: dict[str, list[tuple[float, float]]]
) -> SlurmSnapshot:
    """A read showing ``nodes`` (shoal's, by the feature) and, per node, its running jobs as
    (time limit, elapsed)."""
    jobs = tuple(
        RunningJob(Shape(wall, 2**30, 1, 0, False), name, elapsed)
        for name, js in running.items()
        for wall, elapsed in js
    )
    slurm = tuple(SlurmNode(n, "MIXED", frozenset(), 1, features=(SHOAL_FEATURE,)) for n in nodes)
    return SlurmSnapshot(at, (), slurm, SlurmDemand(Demand(running=jobs), frozenset(nodes)))


async def weigher(h: Harness, kept: bool = True) -> tuple[Weigher, Scontrol]:
    """A weigher on ``h``'s controller, reconciled (leading, as ``Controller.run`` makes it)."""
    await h.drive(h.controller.reconcile())
    scontrol = Scontrol()
    return Weigher(scontrol, h.controller, kept=kept), scontrol  # type: ignore[arg-type]


async def test_the_node_kept_longest_weighs_least_and_only_changes_are_set(
    harness_factory: Any,
) -> None:
    h: Harness = await harness_factory()
    long, short, idle = await ready_nodes(h, 3)
    w, scontrol = await weigher(h)
    now = h.clock.now()
    running = {long: [(4 * HOUR, 0.0), (HOUR, 0.0)], short: [(HOUR, 1800.0)]}
    w.observe(read(now, [long, short, idle], running))
    await h.settle()
    rank = 1  # one priced type
    want = {
        long: kept_weight(rank, 4 * HOUR),
        short: kept_weight(rank, 1800.0),
        idle: idle_weight(rank),
    }
    assert want[long] < want[short] < want[idle] == 2 * SPAN - 1
    assert sorted(scontrol.calls) == sorted(
        ((name,), {"Weight": str(weight)}) for name, weight in want.items()
    )
    # the same read again, and a later one within the same step: nothing to set
    scontrol.calls.clear()
    w.observe(read(now + 10, [long, short, idle], running))
    await h.settle()
    assert scontrol.calls == []
    # the short job ends: that node is idle now, one command for it
    w.observe(read(now + 20, [long, short, idle], {long: running[long]}))
    await h.settle()
    assert scontrol.calls == [((short,), {"Weight": str(idle_weight(rank))})]


async def test_nodes_of_one_weight_are_set_in_one_command_and_one_bad_name_holds_none_back(
    harness_factory: Any,
) -> None:
    """One command per weight; one name Slurm does not know (a node deleted meanwhile)
    fails the whole command, as slurmctld does: the nodes are then set one by one at once,
    and the one that failed is tried again after the next read."""
    h: Harness = await harness_factory()
    a, b = await ready_nodes(h, 2)
    w, scontrol = await weigher(h)
    now = h.clock.now()
    w.observe(read(now, [a, b], {}))
    await h.settle()
    assert scontrol.calls == [((a, b), {"Weight": str(idle_weight(1))})]
    scontrol.calls.clear()
    scontrol.refuse = {b}
    busy = {a: [(HOUR, 0.0)], b: [(HOUR, 0.0)]}
    w.observe(read(now + 10, [a, b], busy))
    await h.settle()
    weight = {"Weight": str(kept_weight(1, HOUR))}
    assert scontrol.calls == [((a,), weight)]  # (a, b) and (b,) refused
    assert scontrol.refused == [(a, b), (b,)] and w.applied == {a: kept_weight(1, HOUR)}
    scontrol.refuse = set()
    w.observe(read(now + 20, [a, b], busy))
    await h.settle()
    assert scontrol.calls == [((a,), weight), ((b,), weight)]


async def test_price_weights_follow_a_change_of_rank(harness_factory: Any) -> None:
    """``price`` (the default): a node weighs its type's rank; the first read sets it once
    (what it registered with), the next sets nothing, and a policy that reorders the types
    by price (a reload, a spot price refresh) sets the running node's new rank."""
    types = [{"type": "c5.xlarge", "max": 10}, {"type": "m5.large", "max": 10}]
    h: Harness = await harness_factory(node_types=types)
    (a,) = await ready_nodes(h, 1)
    node_type = h.controller.tracker.get(a).node_type  # type: ignore[union-attr]
    w, scontrol = await weigher(h, kept=False)
    policy = h.controller.policy
    rank = weights(policy)[node_type]
    running = {a: [(4 * HOUR, 0.0)]}  # ignored: price weighs the type alone
    w.observe(read(h.clock.now(), [a], running))
    await h.settle()
    w.observe(read(h.clock.now() + 10, [a], running))
    await h.settle()
    assert scontrol.calls == [((a,), {"Weight": str(rank)})]
    # the node's type becomes the dearest, or the cheapest: its rank moves
    dearest = max(t.price_per_hour or 0.0 for t in policy.node_types)
    price = 0.001 if rank > 1 else 2 * dearest + 1
    repriced = tuple(
        replace(t, price_per_hour=price) if t.name == node_type else t for t in policy.node_types
    )
    h.controller.set_policy(replace(policy, node_types=repriced))
    moved = weights(h.controller.policy)[node_type]
    assert moved != rank
    w.observe(read(h.clock.now() + 20, [a], running))
    await h.settle()
    assert scontrol.calls[1:] == [((a,), {"Weight": str(moved)})]


async def test_only_shoals_known_nodes_are_weighed(harness_factory: Any) -> None:
    """A node without shoal's feature (an admin's), or whose instance the tracker does not
    know, is never touched."""
    h: Harness = await harness_factory()
    (a,) = await ready_nodes(h, 1)
    w, scontrol = await weigher(h)
    snapshot = read(h.clock.now(), [a, "i-unknown"], {})
    admins = SlurmNode("static1", "IDLE", frozenset(), 0, features=("big",))
    w.observe(SlurmSnapshot(snapshot.at, (), (*snapshot.nodes, admins), snapshot.demand))
    await h.settle()
    assert scontrol.calls == [((a,), {"Weight": str(idle_weight(1))})]


def test_remaining_is_the_longest_job_as_the_planner_estimates_it() -> None:
    assert remaining([]) is None
    assert remaining([(HOUR, 0.0), (2 * HOUR, HOUR)]) == HOUR
    assert remaining([(HOUR, 2 * HOUR)]) > 0  # overrun: as long again, as the planner says


@given(
    rank=st.integers(1, 50),
    left=st.floats(0, 400 * HOUR),
    more=st.floats(0, 400 * HOUR),
)
def test_kept_weights_order_within_a_rank_and_never_cross_ranks(
    rank: int, left: float, more: float
) -> None:
    a, b = kept_weight(rank, left), kept_weight(rank, left + more)
    assert b <= a < idle_weight(rank)  # kept longer: no heavier; busy: below idle
    assert idle_weight(rank - 1) < b  # never past the cheaper rank's nodes
    if more >= STEP:
        assert b < a or b == rank * SPAN  # a step longer weighs less, down to the floor


@pytest.mark.parametrize("mode", ["power_save"])
def test_kept_needs_external_mode(mode: str) -> None:
    import configs
    from shoal.daemon.config import ConfigError, parse_config

    data = configs.config(
        demand={"slurm": True, "api": False}, slurm={"mode": mode, "node_weights": "kept"}
    )
    with pytest.raises(ConfigError, match="kept applies to mode: external"):
        parse_config(data)


class SlowSlurm(Scontrol):
    """A slurmctld that holds each node's Weight; ``lose`` makes the next updates take
    effect in Slurm while scontrol's answer is lost (it times out, as a loaded slurmctld's
    can: ``SlurmUnavailableError``)."""

    def __init__(self) -> None:
        super().__init__()
        self.weight: dict[str, str] = {}
        self.lose = 0

    async def update_nodes(self, nodes: Any, **settings: str) -> None:
        for name in nodes:
            self.weight[name] = settings["Weight"]
        if self.lose:
            self.lose -= 1
            raise SlurmUnavailableError("scontrol did not finish in 30s", code="timeout")


async def test_an_update_whose_answer_is_lost_is_set_again_when_the_old_weight_is_wanted(
    harness_factory: Any,
) -> None:
    """review (reviewu): scontrol times out after slurmctld took the change; the node's job
    then ends before the next read, which wants the weight the weigher last knew it set
    (idle). Slurm must end at what the read wants, not keep the busy weight: an idle node
    that weighs as kept an hour takes new jobs first and is never emptied."""
    h: Harness = await harness_factory()
    (a,) = await ready_nodes(h, 1)
    slurm = SlowSlurm()
    await h.drive(h.controller.reconcile())  # leading
    w = Weigher(slurm, h.controller)  # type: ignore[arg-type]
    now = h.clock.now()
    w.observe(read(now, [a], {}))  # idle: set and known
    await h.settle()
    assert slurm.weight[a] == str(idle_weight(1))
    slurm.lose = 1
    w.observe(read(now + 10, [a], {a: [(HOUR, 0.0)]}))  # a job: set, the answer lost
    await h.settle()
    assert slurm.weight[a] == str(kept_weight(1, HOUR))
    w.observe(read(now + 20, [a], {}))  # the job ended: idle wanted again
    await h.settle()
    w.observe(read(now + 30, [a], {}))
    await h.settle()
    assert slurm.weight[a] == str(idle_weight(1))


async def test_a_deposed_leaders_weigher_sets_nothing(harness_factory: Any) -> None:
    """review (reviewu): with ``ha`` every daemon's Slurm source reads, leader or not
    (``Service._pump``), so the weigher hears every read. A deposed leader (its controller
    stopped, as ``Service._act`` does when the term ends, its tracker still full) must not
    go on changing Slurm: the clean-up and the power saver confirm the term for that."""
    h: Harness = await harness_factory()
    (a,) = await ready_nodes(h, 1)
    w, scontrol = await weigher(h)
    h.controller.stop()  # the term ended
    w.observe(read(h.clock.now(), [a], {a: [(HOUR, 0.0)]}))
    await h.settle()
    assert scontrol.calls == []


async def test_a_leader_whose_term_is_not_confirmed_sets_nothing(harness_factory: Any) -> None:
    """ha: a deposed leader that has not noticed yet (its controller still running, its
    guard not fired) is refused its fenced state write; an update confirms the term with
    that write first, as the clean-up does, and sets no weight when it is refused. The next
    read tries again (nothing is kept as set)."""
    h: Harness = await harness_factory()
    (a,) = await ready_nodes(h, 1)
    w, scontrol = await weigher(h)
    refusals: list[str] = []

    async def fenced() -> None:
        refusals.append("refused")
        raise Fenced("another daemon's term began")

    confirm = h.controller.executor.before_actuate
    h.controller.executor.before_actuate = fenced
    w.observe(read(h.clock.now(), [a], {a: [(HOUR, 0.0)]}))
    await h.settle()
    assert scontrol.calls == [] and refusals == ["refused"] and w.applied == {}
    h.controller.executor.before_actuate = confirm  # the term confirmed again
    w.observe(read(h.clock.now() + 10, [a], {a: [(HOUR, 0.0)]}))
    await h.settle()
    assert scontrol.calls == [((a,), {"Weight": str(kept_weight(1, HOUR))})]


async def test_a_follower_that_never_led_sets_nothing(harness_factory: Any) -> None:
    """With ``ha`` a follower's Slurm source reads too, and its tracker may know nodes (one
    that led before and was restarted as a follower, or one given the ledger): a controller
    that has not reconciled in a term (``ready`` false) is not leading, and sets nothing."""
    h: Harness = await harness_factory()
    (a,) = await ready_nodes(h, 1)
    scontrol = Scontrol()
    w = Weigher(scontrol, h.controller)  # type: ignore[arg-type]
    assert not h.controller.ready and not h.controller.stopping
    w.observe(read(h.clock.now(), [a], {a: [(HOUR, 0.0)]}))
    await h.settle()
    assert scontrol.calls == []


async def test_a_leader_again_sets_every_weight_once_more(harness_factory: Any) -> None:
    """review (reviewu): what a daemon set in an earlier term is no longer what Slurm holds
    (another leader set weights meanwhile): leading again, it sets each node once more, as
    after a restart, even to the weight it set before."""
    h: Harness = await harness_factory()
    (a,) = await ready_nodes(h, 1)
    w, scontrol = await weigher(h)
    busy = {a: [(HOUR, 0.0)]}
    w.observe(read(h.clock.now(), [a], busy))
    await h.settle()
    h.controller.stop()  # the term ended; the next leader set its own weights
    w.observe(read(h.clock.now() + 10, [a], {}))
    h.controller.resume()  # leading again: the term's loop reconciles first
    w.observe(read(h.clock.now() + 15, [a], busy))
    await h.settle()
    assert scontrol.calls[1:] == []  # not before it reconciled
    await h.drive(h.controller.reconcile())
    scontrol.calls.clear()
    w.observe(read(h.clock.now() + 20, [a], busy))
    await h.settle()
    assert scontrol.calls == [((a,), {"Weight": str(kept_weight(1, HOUR))})]


class DownSlurm(Scontrol):
    """A slurmctld that does not answer: every command times out."""

    async def update_nodes(self, nodes: Any, **settings: str) -> None:
        self.refused.append(tuple(nodes))
        raise SlurmUnavailableError("scontrol did not finish in 30s", code="timeout")


async def test_a_controller_that_does_not_answer_gets_one_command_per_weight_not_per_node(
    harness_factory: Any,
) -> None:
    """review (reviewv): the weigher now runs by default in external mode, and after a
    restart its first read sets every node. A command that times out says nothing about
    its names (unlike "Invalid node name"): trying each node of it at once sends one more
    30 s command per node to a slurmctld that is already not answering, at every read."""
    h: Harness = await harness_factory()
    nodes = await ready_nodes(h, 4)
    slurm, metrics = DownSlurm(), SlurmMetrics()
    await h.drive(h.controller.reconcile())  # leading
    w = Weigher(slurm, h.controller, metrics, kept=False)  # type: ignore[arg-type]
    for at in (0, 10):
        w.observe(read(h.clock.now() + at, nodes, {}))
        await h.settle()
    assert slurm.refused == [tuple(nodes), tuple(nodes)]  # one command per read, not 1 + 4
    assert w.applied == {}
    failed = metrics.slurm_weight_updates.labels(result="failed")._value.get()
    assert failed == 2 * len(nodes)  # still counted, one per node


class GatedScontrol(Scontrol):
    """A slurmctld whose first answer waits for ``gate``."""

    def __init__(self) -> None:
        super().__init__()
        self.gate = asyncio.Event()

    async def update_nodes(self, nodes: Any, **settings: str) -> None:
        first = not self.calls
        await super().update_nodes(nodes, **settings)
        if first:
            await self.gate.wait()


async def test_an_update_in_flight_when_the_term_ends_sets_nothing_more(
    harness_factory: Any,
) -> None:
    """review (reviewy): an update of two weights (two commands) runs when the term ends
    (``ha``: the controller stopped while scontrol answers the first). The deposed leader
    must not send the second command (the new leader sets weights now), nor keep as set
    what it set in the old term: leading again, it sets each node once more."""
    h: Harness = await harness_factory()
    a, b = await ready_nodes(h, 2)
    await h.drive(h.controller.reconcile())
    scontrol = GatedScontrol()
    w = Weigher(scontrol, h.controller)  # type: ignore[arg-type]
    busy = {a: [(HOUR, 0.0)]}
    w.observe(read(h.clock.now(), [a, b], busy))
    await h.clock.settle()
    assert len(scontrol.calls) == 1  # the first command, its answer awaited
    h.controller.stop()  # the term ended
    w.observe(read(h.clock.now() + 10, [a, b], busy))
    scontrol.gate.set()
    await h.settle()
    assert len(scontrol.calls) == 1  # nothing after the term's end
    h.controller.resume()
    await h.drive(h.controller.reconcile())
    scontrol.calls.clear()
    w.observe(read(h.clock.now() + 20, [a, b], busy))
    await h.settle()
    assert sorted(n for names, _ in scontrol.calls for n in names) == sorted([a, b])
