"""The replay engine: a job trace through the daemon's own controller on a virtual clock.

``replay(trace, config, options) -> Replay`` builds the simulated cloud and the controller
exactly as ``shoal run`` does (``service.build_provider`` and ``service.build_controller``:
the same planner, executor, retry layer, node tracker and backoff table) on a ``FakeClock``,
and lets the in-simulation scheduler (``cluster.Cluster``) stand in for Slurm or Toil. There
is no second implementation of the policy here: the engine only decides *when* things
happen and carries news between the cloud, the scheduler and the controller.

Time is seconds since the trace start (the clock reads ``EPOCH + t``). The engine jumps
from event to event, never sleeping; at each time ``t``, in this order:

1. spot interruptions due at ``t`` (``SimulatedProvisioner.next_interruption``): the node
   leaves the scheduler (``node_interrupted``: its jobs are requeued);
2. nodes whose instance joins at ``t`` (launch + ``boot_delay`` + ``join_delay``, and still
   alive) join the scheduler with their usable room (the instance's shape less the
   policy's overhead);
3. jobs submitted at ``t`` queue; the scheduler finishes and starts jobs up to ``t``;
4. if the scheduler's demand or joined nodes changed, the controller gets them
   (``Controller.set_demand``, as a demand source pushes them);
5. a pass, when one is due (below): ``Controller.run_pass()``. What it did is carried
   back: launched instances are booked (they join later), drained nodes are cordoned,
   terminated nodes leave the scheduler (``node_removed``: jobs requeued).

When passes run is the daemon's loop (``Controller.run``) replayed: the first pass at
``t = 0``; after a pass, the next one ``scaler.interval`` later, or sooner when a timer of
the controller falls due first (``Controller.wake_at``: its next deadline plus
``WAKE_SLACK``), unless the demand changes first (at ``c``), then at ``c + scaler.debounce``
(a change at the very time a timer pass is due wins, as the demand event does in
``Controller._wait``). Timer passes fall on a grid: the time of the last pass woken by a
demand change or a deadline plus whole intervals. Like a demand
source that pushes on change, the scheduler reports running jobs' elapsed times as of the
last change: the controller plans with those until the next one.

**The demand source's cadence.** The replay observes demand the way the configured source
does. A pushed source (``demand.api``, ``demand.file``, or none) reports each change as it
happens (above). A Slurm source (``demand.slurm: true``) reads squeue every
``slurm.poll_interval`` from the daemon's start: the scheduler's changes since the last read
reach the controller only at the next read (``t = k * poll_interval``), as one change, and
the pass follows ``scaler.debounce`` later. A read that finds nothing changed would hand the
loop the same demand (running jobs' elapsed times aside, which a pushed source does not
refresh either), so the engine stops only at reads with a change behind them. Only
``slurm.mode: external`` replays (shoal's planner decides); in ``power_save`` Slurm decides,
which the replay cannot play. The controller is built without the Slurm integration (its
scontrol drain hook, its dynamic nodes' features): the replay's scheduler stands in for
slurmctld. With ``slurm.node_weights: kept`` the nodes' weights are what shoal would set at
its last read (``scaler.order``: the price rank, then the longest kept first, from the jobs
that had started by that read), taken before every scheduling pass; a node joins at its
rank's idle weight. ``ReplayOptions.node_weights`` is then moot (kept ranks by price).

**Skipping.** A timer pass is skipped (not run, but counted) when it provably cannot change
anything: nothing happened since the last pass that ran (no demand change, no change in the
cloud's listing), that pass planned nothing (``Plan.is_noop``) and left the planner state
as it found it (a fixed point: betaInertia estimates converged, unneeded marks unchanged),
and no timer falls due before it. The engine does not list the timers itself: it asks
``Controller.next_deadline()``, the daemon loop's one wake policy (a node's
``unneeded_time``, a booting node's ``join_timeout``, a missing node's
``unhealthy_timeout``, an offering's backoff expiry, a launch
ledger entry's TTL, any timer added there later), and adds only what the simulated cloud
knows: a launched instance becoming visible after ``listing_lag``. Since the controller's
demand is the object the last event gave it, such a pass would see the same snapshot, make
the same no-op plan and keep the same state. The engine then jumps to the pass the loop
wakes for at the next deadline, or to the first grid point at or after a due time if that
comes first (due times taken a microsecond early, so float rounding can only add a pass,
never lose one). ``ReplayOptions(skip=False)`` runs every pass; the tests check both give
the same result.

**Settling.** After a demand change the betaInertia estimates (``PlannerState.estimates``)
move towards the new raw estimates by one ``planner.smooth`` step a pass, for ~9 passes at
b = 0.1 (hundreds at 0.9), so a no-op pass rarely leaves the state as it found it. The
plan reads an estimate only through its rounding, so when a no-op pass changed nothing
but the estimates, the engine takes each type's raw estimate (a whole node count) back
from the step it saw (``_raw_estimate``: exact, or not at all) and steps the estimates on
itself: as long as no type's rounding moves, each timer pass would make the same plan
again and leave the next step's state. Those passes are skipped like the others, their
states applied (``Controller.state``) as they are counted; the first pass whose rounding
would move runs, and at the end of the replay the pass that reaches the fixed point runs,
so the replay ends where running every pass ends it. Not applied when a plan may smooth
twice with two raw estimates (cost packing with ``preemptible_compensation``).

**Billing** (``ReplayOptions``, the ``--billing-interval`` and ``--billing-minimum`` flags;
the cloud itself only has prices): each instance is charged its price for its lifetime,
at least ``billing_minimum``, rounded up to whole ``billing_interval`` s: 1 s and 60 s are
EC2's per-second billing; ``3600`` bills whole hours. Node-hours are the lifetimes as run.

**End.** After the last submit the replay runs until nothing can change any more: no job
runs, no node is about to join, and the last pass was a fixed point with no timer due
(queued jobs that no node will ever take then never start). Spot interruptions alone do
not keep it going (a ``min`` of spot nodes would be replaced for ever). ``tail`` caps the
time after the last submit. Instances still alive at the end are billed up to it.

Results come from the cloud (launches, terminations, interruptions, prices) and the
scheduler (waits, utilisation, jobs never started or fitting no node type); cost-ceiling
hits count passes, skipped ones included, whose plan reported jobs held back by the
cost ceiling (``Unschedulable.reasons`` holding ``"cost-ceiling"``).
"""

from __future__ import annotations

import asyncio
import heapq
import logging
import math
from collections.abc import Callable, Iterable, Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass, field, replace
from types import MappingProxyType

import numpy as np
from shoal.daemon.config import ShoalConfig
from shoal.daemon.loop import Controller, PassOutcome, PassRecord
from shoal.daemon.metrics import ShoalMetrics
from shoal.daemon.service import build_controller, build_provider
from shoal.daemon.simulate.cluster import (
    NODE_WEIGHTS,
    PLACEMENTS,
    Cluster,
    UnschedulableJob,
    check_choice,
)
from shoal.daemon.simulate.report import CostLine, SeriesRecorder, VariantResult, WaitStats
from shoal.daemon.simulate.trace import Trace
from shoal.daemon.slurm.conf import weights as slurm_weights
from shoal.providers.outcomes import LaunchAttempt, ProviderEvent, TerminationResult
from shoal.providers.simulated import SimulatedProvisioner
from shoal.runtime.testing import FakeClock, InlineExecutor
from shoal.scaler.model import CapacityType, Plan, PlannerState, Policy
from shoal.scaler.order import idle_weight, kept_weight, remaining
from shoal.scaler.planner import (
    REASON_COST_CEILING,
    cost_aware,
    round_half_away,
    smooth,
    usable,
    usable_shape,
)
from shoal.scaler.shape import Shape

__all__ = [
    "DAY",
    "EPOCH",
    "EngineStats",
    "Replay",
    "ReplayOptions",
    "SimulateError",
    "replay",
    "replay_async",
]

log = logging.getLogger(__name__)

DAY = 86400.0
EPOCH = 1_700_000_000.0  # what the virtual clock reads at the trace start
_SLACK = 1e-6  # seconds: due times are taken this much early (an extra pass, never one less)


class _ReplayMetrics(ShoalMetrics):
    """The daemon's metrics, less the per-pass gauges of nodes and targets, which nobody
    scrapes during a replay (they relabel every series each pass: a third of a pass's time)."""

    def set_nodes(self, counts: Mapping[tuple[str, str], int], node_types: Iterable[str]) -> None:
        pass

    def set_targets(self, targets: Mapping[str, int]) -> None:
        pass


class _ReplayClock(FakeClock):
    """A ``FakeClock`` the engine moves itself: nothing sleeps on it between passes."""

    def jump(self, now: float) -> None:
        deadline = self.next_deadline()
        if deadline is not None and deadline <= now:
            raise RuntimeError(f"a sleeper is due at {deadline}, before {now}")
        self._now = max(self._now, now)


class SimulateError(ValueError):
    """The replay cannot run with this config (e.g. a provider that is not simulated)."""


@dataclass(frozen=True, slots=True)
class ReplayOptions:
    """How to replay: billing, when to stop, whether to skip no-op passes, the cloud's seed,
    the scheduler's placement and node weights."""

    billing_interval: float = 1.0  # seconds; lifetimes are rounded up to whole intervals
    billing_minimum: float = 60.0  # seconds charged at least per instance (EC2: one minute)
    tail: float = 30 * DAY  # stop at the latest this long after the last submit
    skip: bool = True
    seed: int | None = None  # the simulated cloud's seed; None: the config's provider.seed
    placement: str = "first-fit"  # which node a 1-node job starts on (cluster.PLACEMENTS)
    # Slurm's node Weight: "equal" for every node, or "price" as `shoal slurm-conf` writes it
    # (the cheapest type 1, the next price 2, ...; 1-node jobs take the lowest that fits)
    node_weights: str = "equal"

    def __post_init__(self) -> None:
        check_choice("placement", self.placement, PLACEMENTS)
        check_choice("node_weights", self.node_weights, NODE_WEIGHTS)
        if not self.billing_interval > 0:
            raise ValueError(f"billing_interval must be > 0, not {self.billing_interval!r}")
        if not self.billing_minimum >= 0:
            raise ValueError(f"billing_minimum must be >= 0, not {self.billing_minimum!r}")
        if not self.tail >= 0:
            raise ValueError(f"tail must be >= 0, not {self.tail!r}")

    def billed_seconds(self, lifetime: float) -> float:
        seconds = max(lifetime, self.billing_minimum)
        # 1e-9: a lifetime of 3600.0000000001 s (float sums of delays) is still one hour
        return math.ceil(seconds / self.billing_interval - 1e-9) * self.billing_interval


@dataclass(frozen=True, slots=True)
class EngineStats:
    """How the replay went (not part of the report: it describes the engine, not the policy)."""

    passes: int  # passes run through the controller
    passes_skipped: int  # timer passes proven to change nothing, counted but not run
    steps: int  # distinct times the engine stopped at
    end: float  # seconds since the trace start when the replay ended
    capped: bool  # ended by ``tail``, not because nothing could change any more


@dataclass(frozen=True, eq=False)
class Replay:
    result: VariantResult
    stats: EngineStats
    unschedulable: tuple[UnschedulableJob, ...] = ()  # jobs no node type could hold


@dataclass(slots=True)
class _Instance:
    name: str
    instance_type: str
    preemptible: bool
    price: float  # USD per hour
    launched: float
    usable: Shape
    joined: bool = False
    ended: float | None = None


@dataclass(slots=True)
class _Bill:
    cost: float = 0.0
    seconds: float = 0.0


@dataclass(slots=True)
class _Totals:
    launches: int = 0
    terminations: int = 0
    interruptions: int = 0
    ceiling_hits: int = 0
    passes: int = 0
    skipped: int = 0
    steps: int = 0
    bills: dict[tuple[str, str], _Bill] = field(default_factory=dict)


@dataclass(slots=True)
class _Settling:
    """Timer passes proven to make the last plan again while its betaInertia estimates
    settle ("Settling" in the module docstring): ``states[j]`` is the planner state the
    ``j+1``-th timer pass after the pass at grid index ``k0`` leaves."""

    k0: int
    states: list[PlannerState]
    fixed: bool  # the pass after the last of ``states`` changes nothing; else it must run

    def end(self, anchor: float, interval: float) -> float:
        """The grid time of the first pass past ``states``."""
        return anchor + (self.k0 + len(self.states) + 1) * interval


def _raw_estimate(before: float, after: float, beta: float) -> int | None:
    """The raw estimate (a whole node count) a ``smooth`` step took from ``before`` to
    ``after``, or None if it cannot be told exactly. With ``1 - beta`` at least 1e-6 and
    estimates under 1e6, ``smooth`` is strictly increasing in the raw estimate (a step of
    one moves the weighted estimate by >= 1e-6, far above its float error and ``SETTLED``),
    so the one integer that reproduces ``after`` to the bit is the one the planner used."""
    if not (1 - beta >= 1e-6 and abs(before) < 1e6 and abs(after) < 1e6):
        return None
    raw = round_half_away((after - beta * before) / (1 - beta))
    return raw if raw >= 0 and smooth(raw, before, beta) == after else None


def _settle(
    policy: Policy, before: PlannerState, after: PlannerState
) -> tuple[list[PlannerState], bool] | None:
    """The states the next timer passes leave after a no-op pass that changed only the
    betaInertia estimates (``before`` -> ``after``), as long as each pass provably makes
    the same plan, and whether the pass after them is a fixed point; None when unproven."""
    if after.unneeded_since != before.unneeded_since or not set(before.estimates) <= set(
        after.estimates
    ):
        return None
    if after.gang_waits != before.gang_waits:
        return None
    if cost_aware(policy) and policy.preemptible_compensation > 0:
        return None  # a plan may smooth twice, the second time with another raw estimate
    b = policy.beta_inertia
    raws: dict[str, int] = {}
    for name, estimate in after.estimates.items():
        last = before.estimates.get(name, 0.0)
        if estimate != last:
            raw = _raw_estimate(last, estimate, b)
            if raw is None:
                return None
            raws[name] = raw
    states: list[PlannerState] = []
    estimates = dict(after.estimates)
    for _ in range(2000):  # b = 0.9 settles in ~200 passes; a far slower b is not proven
        step = {n: smooth(raws[n], e, b) if n in raws else e for n, e in estimates.items()}
        if step == estimates:
            return states, True
        if any(round_half_away(step[n]) != round_half_away(estimates[n]) for n in raws):
            return (states, False) if states else None
        states.append(replace(after, estimates=MappingProxyType(step)))  # keeps its reported
        estimates = step
    return (states, False) if states else None


def _has_ceiling_hit(plan: Plan | None) -> bool:
    return plan is not None and any(REASON_COST_CEILING in u.reasons for u in plan.unschedulable)


class _Arrivals:
    """The trace's jobs in submit order, made Python values a block at a time: the whole
    trace as lists (submit times, run times, shapes, node counts) held ~80 bytes a job for
    the whole replay, 80 MB on a million-job trace, besides the trace's own arrays."""

    __slots__ = ("_at", "_base", "_nodes", "_runs", "_shapes", "_submits", "_trace", "next")

    BLOCK = 4096

    def __init__(self, trace: Trace) -> None:
        self._trace = trace
        self._base = 0  # the loaded block's first job id (its trace index)
        self._submits: list[float] = []
        self._load()

    def _load(self) -> None:
        """Load the block after the one loaded; ``next``: its first submit time (inf: done)."""
        trace, start = self._trace, self._base + len(self._submits)
        end = min(start + self.BLOCK, len(trace))
        self._submits = trace.submit[start:end].tolist()
        self._runs = trace.run_time[start:end].tolist()
        self._shapes = [trace.shapes[i] for i in trace.shape_index[start:end].tolist()]
        nodes = trace.nodes
        self._nodes = [1] * (end - start) if nodes is None else nodes[start:end].tolist()
        self._at, self._base = 0, start
        self.next = self._submits[0] if self._submits else math.inf

    @property
    def done(self) -> bool:
        return self.next == math.inf

    def submit(self, cluster: Cluster, t: float) -> None:
        """Queue every job submitted by ``t`` (job ids: trace indices)."""
        while self.next <= t:
            at = self._at
            cluster.submit(self._base + at, self._shapes[at], self._runs[at], t, self._nodes[at])
            at += 1
            if at < len(self._submits):
                self._at, self.next = at, self._submits[at]
            else:
                self._load()


class _Engine:
    def __init__(
        self,
        trace: Trace,
        config: ShoalConfig,
        options: ReplayOptions,
        name: str,
        overrides: tuple[tuple[str, str], ...],
        progress: Callable[[float], None] | None,
    ) -> None:
        if config.provider.kind != "simulated":
            raise SimulateError(
                f"provider.kind: shoal simulate replays on the simulated cloud; got "
                f"{config.provider.kind!r} (set provider.kind: simulated with its boot_delay, "
                "join_delay and capacity)"
            )
        if options.seed is not None:
            provider = config.provider.model_copy(update={"seed": options.seed})
            config = config.model_copy(update={"provider": provider})
        self.poll: float | None = None  # a Slurm source's poll interval; None: pushed demand
        self.kept = False  # slurm.node_weights: kept (weights set at each read)
        if config.demand.slurm and config.slurm is not None:
            self.kept = config.slurm.node_weights == "kept"
            if config.slurm.mode != "external":
                raise SimulateError(
                    f"slurm.mode: shoal simulate replays shoal's planner (slurm.mode: "
                    f"external); in {config.slurm.mode!r} Slurm's power saving decides"
                )
            self.poll = config.slurm.poll_interval
            demand = config.demand.model_copy(update={"slurm": False})
            config = config.model_copy(update={"demand": demand, "slurm": None})
        self.config = config
        self.trace = trace
        self.options = options
        self.name = name
        self.overrides = overrides
        self.progress = progress
        self.totals = _Totals()
        self.instances: dict[str, _Instance] = {}
        self.live = 0  # instances alive
        self.booting = 0  # alive, not joined
        self.rate = 0.0  # USD per hour of the live instances
        self.accrued = 0.0  # USD billed for ended instances plus the live ones up to `accrued_at`
        self.accrued_at = 0.0
        self.joins: list[tuple[float, int, str]] = []  # (join time, seq, name)
        self.unlisted: list[float] = []  # heap of times launched instances become listed
        self.events: list[ProviderEvent] = []
        self.seen_interruptions = 0
        self.series = SeriesRecorder()
        self._last_sample: tuple[int, int, int, int, float] | None = None
        self._usable: dict[tuple[str, bool], Shape] = {}
        self._weight: dict[tuple[str, bool], int] = {}  # (instance type, spot): Slurm's Weight
        self._rank: dict[tuple[str, bool], int] = {}  # the same, by price (node_weights kept)

    # --- setup -------------------------------------------------------------------------

    async def _build(self) -> None:
        asyncio.get_running_loop().set_default_executor(InlineExecutor())
        self.clock = _ReplayClock(EPOCH)
        provider = build_provider(self.config, self.clock)
        assert isinstance(provider, SimulatedProvisioner)
        provider.record_calls = 0  # its record of API calls is for tests: 25 MB at 100,000
        self.provider = provider
        self.controller: Controller = await build_controller(
            self.config, provider, self.clock, metrics=_ReplayMetrics()
        )
        provider.subscribe(self.events.append)
        policy: Policy = self.controller.policy
        for instance_type in self.config.instance_types():
            for preemptible in (False, True):
                whole = await provider.getNodeShape(instance_type, preemptible)
                self._usable[instance_type, preemptible] = usable(whole, policy)
        self.cluster = Cluster(
            (usable_shape(t, policy) for t in policy.node_types), self.options.placement
        )
        if self.options.node_weights == "price" or self.kept:
            weight = slurm_weights(policy)
            for t in reversed(policy.node_types):  # an offering of two types: the first's
                for o in t.offerings():
                    spot = o.capacity_type is CapacityType.SPOT
                    self._weight[o.instance_type, spot] = weight[t.name]
        if self.kept:
            self._rank = dict(self._weight)  # (instance type, spot): the price rank
            self._weight = {k: idle_weight(rank) for k, rank in self._rank.items()}
            self.cluster.weigher = self._reweigh
            self.cluster.ended_window = self.poll or 0.0  # a read saw the runs it had
        settings = self.controller.settings
        self.interval = settings.interval
        self.debounce = settings.debounce
        await self.controller.reconcile()

    def _reweigh(self, t: float) -> None:
        """slurm.node_weights kept: each node's weight as shoal set it at its last read by
        ``t`` (from the jobs started by then)."""
        poll = self.poll or 0.0
        read = math.floor(t / poll + 1e-9) * poll if poll else t
        cluster = self.cluster
        for name, jobs in cluster.running_by_node(read):
            inst = self.instances[name]
            rank = self._rank.get((inst.instance_type, inst.preemptible), 0)
            cluster.set_weight(name, kept_weight(rank, remaining(jobs)))

    # --- time and money ----------------------------------------------------------------

    def _move_to(self, t: float) -> None:
        self.clock.jump(EPOCH + t)

    def _accrue(self, t: float) -> None:
        self.accrued += self.rate * (t - self.accrued_at) / 3600.0
        self.accrued_at = t

    def _launched(self, attempt: LaunchAttempt, t: float) -> None:
        preemptible = attempt.offering.capacity_type is CapacityType.SPOT
        instance_type = attempt.offering.instance_type
        price = self.provider.types[instance_type].price(preemptible)
        usable = self._usable[instance_type, preemptible]
        p = self.provider
        self._accrue(t)
        for name in attempt.ids:
            if name in self.instances:
                continue  # a retried request returns the instances it launched before
            self.instances[name] = _Instance(name, instance_type, preemptible, price, t, usable)
            self.totals.launches += 1
            self.live += 1
            self.booting += 1
            self.rate += price
            heapq.heappush(self.joins, (t + p.boot_delay + p.join_delay, len(self.instances), name))
            if p.listing_lag > 0:
                heapq.heappush(self.unlisted, t + p.listing_lag)

    def _ended(self, name: str, t: float) -> _Instance | None:
        inst = self.instances.get(name)
        if inst is None or inst.ended is not None:
            return None
        self._accrue(t)
        inst.ended = t
        self.live -= 1
        if not inst.joined:
            self.booting -= 1
        self.rate -= inst.price
        lifetime = t - inst.launched
        billed = self.options.billed_seconds(lifetime)
        charge = inst.price * billed / 3600.0
        # what accrued per second so far is in `accrued`; add the rounding up
        self.accrued += charge - inst.price * lifetime / 3600.0
        capacity = CapacityType.SPOT if inst.preemptible else CapacityType.ON_DEMAND
        bill = self.totals.bills.setdefault((inst.instance_type, capacity.value), _Bill())
        bill.cost += charge
        bill.seconds += lifetime
        return inst

    def _sample(self, t: float) -> None:
        c = self.cluster
        key = (self.live, self.booting, c.queued_count, c.running_count, self.rate)
        if key == self._last_sample:
            return
        self._last_sample = key
        self._accrue(t)
        self.series.sample(t, self.live, self.booting, key[2], key[3], self.accrued)

    # --- events ------------------------------------------------------------------------

    def _interruptions(self, t: float) -> bool:
        """Apply interruptions due by ``t``; True if the cloud's listing changed."""
        self.provider.count()  # the cloud applies what happened on its clock
        new = self.provider.interruptions[self.seen_interruptions :]
        self.seen_interruptions += len(new)
        for name, _ in new:
            inst = self._ended(name, t)
            if inst is None:
                continue
            self.totals.interruptions += 1
            if inst.joined:
                self.cluster.node_interrupted(name, t)
        return bool(new)

    def _joins(self, t: float) -> None:
        joins = self.joins
        while joins and joins[0][0] <= t:
            _, _, name = heapq.heappop(joins)
            inst = self.instances[name]
            if inst.ended is not None:
                continue  # interrupted or terminated while booting
            self._accrue(t)
            inst.joined = True
            self.booting -= 1
            weight = self._weight.get((inst.instance_type, inst.preemptible), 0)
            self.cluster.node_joined(name, inst.usable, t, weight)

    def _after_pass(self, record: PassRecord, t: float) -> None:
        events = list(self.events)
        self.events.clear()
        for event in events:
            if isinstance(event, LaunchAttempt) and event.ids:
                self._launched(event, t)
        cluster = self.cluster
        in_sync = cluster.version == self.fed_version
        for name in record.drained:
            cluster.cordon(name, t)  # no new work; the demand source reports no change
        if in_sync:
            self.fed_version = cluster.version
        for event in events:
            if isinstance(event, TerminationResult):
                for name in event.terminated:
                    if self._ended(name, t) is not None:
                        self.totals.terminations += 1
                        cluster.node_removed(name, t)

    def _feed(self, t: float) -> None:
        cluster = self.cluster
        cluster.advance(t)
        if self.poll is not None:
            # the first read at or after ``t`` (reads passed over saw no change); an int
            # count of reads, so float rounding cannot hold a read at ``t`` for ever
            self.poll_k = max(self.poll_k, math.ceil(t / self.poll - 1e-6))
            if t < self.poll_k * self.poll:
                return  # a Slurm source reads at its next poll
            self.poll_k += 1
        if cluster.version != self.fed_version:
            self.controller.set_demand(cluster.update(t))
            self.fed_version = cluster.version
            if self.change_at is None:
                self.change_at = t

    # --- skipping ----------------------------------------------------------------------

    def _wake(self) -> float | None:
        """When the daemon's loop wakes for the controller's next deadline
        (``Controller.wake_at``: the one wake policy), or None."""
        at = self.controller.wake_at()
        return None if at is None else at - EPOCH

    def _due(self) -> float | None:
        """After a fixed point, the first pass that may change anything: the deadline pass
        (``_wake``), a timer pass at or after that deadline (it may come first), or the first
        timer pass that sees a launched instance listed. Deadlines are taken ``_SLACK`` early,
        so one falling on this very pass (a strict timer not due yet) keeps the next timer
        pass: an extra pass, never one less."""
        times: list[float] = []
        if self.wake is not None:
            times.append(self.wake)
        near = self.controller.next_deadline(after=self.clock.now() - _SLACK)
        if near is not None:
            times.append(self._next_grid(near - EPOCH - _SLACK))
        if self.unlisted:
            times.append(self._next_grid(self.unlisted[0] - _SLACK))
        return min(times, default=None)

    def _next_grid(self, due: float) -> float:
        """The first timer pass at or after ``due`` (and after the last one)."""
        k = max(self.k + 1, math.ceil((due - self.anchor) / self.interval))
        return self.anchor + k * self.interval

    def _catch_up(self, t: float) -> None:
        """Count the timer passes skipped strictly before ``t``: each would have made the
        last plan again (so a cost-ceiling hit again, if that plan was one)."""
        k = self.k
        while self.anchor + (k + 1) * self.interval < t:
            k += 1
        skipped = k - self.k
        self.k = k
        self.totals.skipped += skipped
        self.totals.ceiling_hits += skipped * self.ceiling
        settling = self.settling
        if skipped and settling is not None:
            done = min(k - settling.k0, len(settling.states))  # then a fixed point
            if done:
                self.controller.state = settling.states[done - 1]

    # --- the loop ----------------------------------------------------------------------

    async def run(self) -> Replay:
        await self._build()
        arrivals = _Arrivals(self.trace)
        n = len(self.trace)
        cap = (float(self.trace.submit[-1]) if n else 0.0) + self.options.tail
        cluster = self.cluster
        skip = self.options.skip
        self.fed_version = cluster.version
        self.poll_k = 0  # a Slurm source's next read is at poll_k * poll (``_feed``)
        self.change_at: float | None = None  # the first demand change since the last pass
        self.anchor = 0.0  # timer passes fall at anchor + k * interval
        self.k = -1  # the last timer pass since the anchor (the first pass is at 0)
        self.wake: float | None = None  # the controller's next deadline pass (``_wake``)
        self.ceiling = False  # the last plan held jobs back for the cost ceiling
        self.settling: _Settling | None = None  # estimates settling under the last plan
        fixed = False  # the last pass run was a no-op at a fixed point, nothing since
        due: float | None = None  # when a timer of the controller falls due (if fixed)
        first = True
        t = 0.0
        capped = False
        while True:
            grid = self.anchor + (self.k + 1) * self.interval
            if self.change_at is not None:
                pass_at = self.change_at + self.debounce
            elif skip and fixed:
                pass_at = math.inf if due is None else due
            elif self.wake is not None and self.wake < grid:
                pass_at = self.wake
            else:
                pass_at = grid
            if (
                arrivals.done
                and fixed
                and due is None
                and not self.joins
                and not cluster.running_count
                and self.change_at is None
                and cluster.version == self.fed_version
            ):
                if self.settling is None:
                    if skip:  # the timer passes skipped up to here would have run
                        self._catch_up(math.nextafter(t, math.inf))
                    break  # nothing can change any more
                # run the pass that ends the settling: the replay ends there, as it would
                # with every pass run
                due = pass_at = self.settling.end(self.anchor, self.interval)
            nxt = pass_at
            if self.poll is not None and cluster.version != self.fed_version:
                nxt = min(nxt, self.poll_k * self.poll)  # the read that sees the change
            nxt = min(nxt, arrivals.next)
            finish = cluster.next_finish()
            if finish is not None:
                nxt = min(nxt, finish)
            if self.joins:
                nxt = min(nxt, self.joins[0][0])
            interrupt = self.provider.next_interruption()
            if interrupt is not None:
                nxt = min(nxt, interrupt - EPOCH)
            nxt = max(nxt, t)
            if nxt > cap:
                if skip and fixed:  # the timer passes skipped up to the cap would have run
                    self._catch_up(math.nextafter(cap, math.inf))
                capped = True
                break
            t = nxt
            self.totals.steps += 1
            self._move_to(t)
            listing_changed = self._interruptions(t)
            self._joins(t)
            arrivals.submit(cluster, t)
            self._feed(t)
            if fixed and (listing_changed or self.change_at is not None):
                if skip:
                    self._catch_up(t)
                fixed = False
            if first:
                kind = "timer"
            elif self.change_at is not None:
                kind = "event" if t >= self.change_at + self.debounce else ""
            else:
                kind = "timer" if t >= pass_at else ""
            if kind:
                if kind == "timer" and skip and fixed:
                    self._catch_up(t)
                if kind == "timer" and not first and t < self.anchor + (self.k + 1) * self.interval:
                    kind = "deadline"  # off the grid: the loop woke for a timer's deadline
                before = self.controller.state
                record, noop, self.ceiling = await self._pass(t)
                first = False
                if kind == "timer":
                    self.k += 1
                else:
                    self.anchor, self.k = t, 0
                fixed, self.settling = self._fixed(noop, before)
                self.change_at = None
                self._after_pass(record, t)
                self._feed(t)
                if self.change_at is not None:
                    fixed = False
                while self.unlisted and self.unlisted[0] <= t:
                    heapq.heappop(self.unlisted)
                self.wake = self._wake()
                due = self._due() if fixed else None
                if self.settling is not None and not self.settling.fixed:
                    end = self.settling.end(self.anchor, self.interval)  # that pass must run
                    due = end if due is None else min(due, end)
            self._sample(t)
            if self.progress is not None:
                self.progress(t)
        return self._result(cap if capped else t, capped)

    async def _pass(self, t: float) -> tuple[PassRecord, bool, bool]:
        """Run a pass: its record, whether it was a no-op (planned nothing, no errors), and
        whether its plan hit the cost ceiling."""
        c = self.controller
        # A pass sleeps on the clock only to retry a provider call: then let time run.
        record = await self.clock.run_until(c.run_pass())
        self.totals.passes += 1
        if record.outcome is not PassOutcome.OK:
            return record, False, False
        plan = c.last_plan
        assert plan is not None
        hit = _has_ceiling_hit(plan)
        self.totals.ceiling_hits += hit
        return record, plan.is_noop and not record.errors, hit

    def _fixed(self, noop: bool, before: PlannerState) -> tuple[bool, _Settling | None]:
        """Whether the next timer passes may be skipped after a pass (a no-op that left the
        planner state as it found it, or one whose estimates settle under the same plan:
        then the settling, applied as passes are skipped)."""
        state = self.controller.state
        if not noop or state == before:
            return noop, None
        if not self.options.skip:
            return False, None
        settled = _settle(self.controller.policy, before, state)
        if settled is None:
            return False, None
        return True, _Settling(self.k, *settled)

    # --- results -----------------------------------------------------------------------

    def _result(self, end: float, capped: bool) -> Replay:
        self._move_to(end)
        for name in list(self.instances):
            self._ended(name, end)
        self._sample(end)
        stats = self.cluster.stats(end)
        t = self.totals
        by_type = tuple(
            CostLine(node_type, capacity, bill.cost, bill.seconds / 3600.0)
            for (node_type, capacity), bill in sorted(t.bills.items())
        )
        waits = np.asarray(stats.waits, dtype=np.float64)
        result = VariantResult(
            name=self.name,
            overrides=self.overrides,
            jobs=len(self.trace),
            jobs_started=stats.started,
            jobs_completed=stats.completed,
            jobs_never_started=stats.never_started,
            jobs_unschedulable=len(stats.unschedulable),
            cost=sum(line.cost for line in by_type),
            node_hours=sum(line.node_hours for line in by_type),
            by_type=by_type,
            utilisation=stats.utilisation,
            wait=WaitStats.of(waits),
            launches=t.launches,
            terminations=t.terminations,
            interruptions=t.interruptions,
            cost_ceiling_hits=t.ceiling_hits,
            requeues=stats.requeues,
            simulated_seconds=end,
            series=self.series.build(),
            waits=waits,
        )
        engine = EngineStats(t.passes, t.skipped, t.steps, end, capped)
        return Replay(result, engine, stats.unschedulable)


@contextmanager
def _quiet_logs(level: int) -> Iterator[None]:
    """The daemon logs every pass; a replay runs hundreds of thousands."""
    logger = logging.getLogger("shoal")
    old = logger.level
    logger.setLevel(level)
    try:
        yield
    finally:
        logger.setLevel(old)


async def replay_async(
    trace: Trace,
    config: ShoalConfig,
    options: ReplayOptions | None = None,
    *,
    name: str = "config",
    overrides: tuple[tuple[str, str], ...] = (),
    progress: Callable[[float], None] | None = None,
) -> Replay:
    """``replay`` inside a running event loop (installs ``InlineExecutor`` as its default)."""
    engine = _Engine(trace, config, options or ReplayOptions(), name, overrides, progress)
    return await engine.run()


def replay(
    trace: Trace,
    config: ShoalConfig,
    options: ReplayOptions | None = None,
    *,
    name: str = "config",
    overrides: tuple[tuple[str, str], ...] = (),
    progress: Callable[[float], None] | None = None,
    log_level: int = logging.ERROR,
) -> Replay:
    """Replay ``trace`` under ``config`` (whose provider must be the simulated cloud) in a
    fresh event loop. Raises ``SimulateError`` for a config it cannot replay, and whatever
    building the controller raises (e.g. ``ProviderError`` for an unknown instance type)."""
    with _quiet_logs(log_level):
        return asyncio.run(
            replay_async(trace, config, options, name=name, overrides=overrides, progress=progress)
        )
