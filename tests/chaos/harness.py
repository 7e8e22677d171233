"""Deterministic simulation testing of the daemon with fault injection (FoundationDB, TigerBeetle).

``run_seed(seed, kinds) -> SeedResult`` runs the daemon's own pieces on a virtual clock for six
simulated hours: the controller built by ``service.build_controller`` exactly as ``shoal run``
builds it (planner, executor, retry layer, node tracker, backoff table), against the simulated
cloud (``providers.simulated``, built by ``service.build_provider``), with the replay engine's
scheduler (``daemon.simulate.cluster.Cluster``) standing in for Slurm: its demand is pushed to the
controller as ``PUT /v1/demand`` would (``Controller.set_demand``, on every change and every
``PUSH_EVERY`` seconds). Everything random comes from the seed, so a seed replays exactly.

The run
=======
- ``[0, FAULT_END)``: jobs arrive and the faults of ``faults.FaultPlan.draw(seed)`` happen (see
  ``faults``): flapping and stale reads, lost responses, listing lag, capacity errors,
  throttling, spot interruptions, slow terminations, stopped nodes, and crashes at any provider
  call or write of ``state.json`` (before it, or right after it) followed by a restart that
  throws away every in-memory object and builds them again from ``state_dir`` (a fresh temp
  dir per seed, kept across restarts) and the cloud's tags. The simulated cloud and the
  scheduler live on. With ``reload``, the config file changes (``_Run.edit_config``) and the
  live daemon gets SIGHUP, a task of its process, so between passes or in the middle of one
  (``_Run.sighups``: it applies the file as ``Service.reload`` does, ``service.apply_config``);
  a restart reads the file. The last reload puts the original config back, so the calm phase
  and the tail run on the config the run began with. With ``argchange``, a restart in the
  fault phase may read the file with ``placement_group`` set or unset on every node type
  (``_Run.change_args``): a launch made again under the dead process's client token is
  answered ``IdempotentParameterMismatch`` (counted: ``SeedResult.mismatches``).
- ``[FAULT_END, SUBMIT_END)``: calm (no new fault; instances stopped before stay stopped), jobs
  still arrive.
- ``[SUBMIT_END, END]``: no new job; the cluster must scale to nothing.

Passes run as ``Controller.run`` schedules them: every ``scaler.interval`` after the last one, or
``scaler.debounce`` after a demand change. A pass may take virtual time (retries, a slow
termination); the harness steps from event to event (submits, job ends, joins, interruptions,
fault windows, passes, pushes) and never sleeps.

Invariants, checked after every pass (and at each call where they are about a call)
===================================================================================
``busy-killed``
    No node running a job, by the scheduler's truth at the last step, is terminated by shoal.
    (Interruptions and stops are not shoal's.)
``over-max``
    Live instances of a node type (the cloud's truth: not stopped, listed or not) never exceed
    its ``max``; checked for the types launched, after every launch takes effect. A node the
    ``unlisted`` fault hides is not counted here nor in ``duplicate-launch``: a listing that
    leaves out a node it showed is how an interrupted node leaves, so replacing it is right.
    With ``reload``, the ``max`` is the one in force when the pass that launched planned,
    from the config file the harness wrote (a reload may come in the middle of a pass, after
    its plan: that plan's launches keep the ``max`` they were planned under), not from the
    daemon's policy: a reload that lowers ``max`` below the live count is no violation by
    itself (shoal does not terminate nodes for it), a launch of that type while its live
    count is at or over the new ``max`` is.
``duplicate-launch``
    A pass that launches nodes of type T ends with no more live instances of T than its plan's
    need: ``alive_before(T) - out(T) + launched(T) <= plan.targets[T]``, where
    ``alive_before`` is the cloud's truth when the pass started (launches still in flight, i.e.
    accepted but not listed yet, included; stopped instances and nodes shoal drained excluded),
    ``out`` the live ones the pass terminated or planned to terminate or drain (a termination
    that fails does not make its replacement a duplicate), ``launched`` what the cloud launched
    in it (lost responses included) and ``plan.targets[T]`` the planner's own target for the
    pass. The planner launches ``target - current`` where ``current`` is what it believes is
    present or booting, so this fails exactly when the daemon's view missed live instances: a
    launch ledger lost in a crash, a listing lag not covered, a launch whose record was dropped.
    A pass that launches a gang of T checks ``launched(T) <= plan.targets[T]`` only: a gang
    goes on N free nodes of one type or N new ones, so the plan may launch it whole beside
    live nodes it cannot use.
``stale-acted``
    A pass that starts with stale demand (``Controller.demand_stale()``: a failed read, or a
    read older than its ``max_age``) launches nothing and terminates nothing.
``not-quiescent``
    At the end (``END``: demand ended ``END - SUBMIT_END`` seconds before, longer than every
    timer) no instance of the cluster is left, stopped ones included, whatever crashed.
``starved``
    Liveness, in the calm and the tail: a queued job that fits a node type starts within
    ``liveness_bound(config)`` of ``max(queued since, FAULT_END)``; the clock of a job restarts
    at every step where every type it fits is at ``max`` (then it waits for room, not for shoal),
    for a 1-node job also where the first type it fits in Toil's order is at ``max``, and for a
    gang of N nodes where no type it fits could launch N more within its ``max``. (The chaos
    config packs by count, as Toil: each queued job goes to the first type that fits, and a
    type's max does not spill its jobs to the next type, ``_pack``'s "Toil's max: no spill";
    so while that type is full the job waits for room on it, whatever the other types have.
    Seeds 2095 and 3415 of 10,000: 2-core jobs for c5.large, at 3 of 3, with r5.large free.)
    The bound is the planner's ``target_time`` (a job may wait for a running one), plus three
    intervals and the debounce (the passes that see it), plus boot, join and listing lag, plus
    the longest a fault phase can leave behind: an offering's backoff (``backoff.max``), a ledger
    entry of a lost launch (``launch_ledger_ttl``) and the retry deadline. The config is the one
    in force (the run's original: the ``reload`` fault puts it back before ``FAULT_END``; each
    pass plans from the config in force then, so no earlier one is left behind), and so is the
    ``max`` that pauses a job's clock.

``joined-timed-out``
    No node a push showed the daemon joined is terminated as a join timeout (the timeout is
    for nodes that never joined; it backs off their offering): not when a read leaves it out
    later, not when a listing does (the ``unlisted`` fault), not across a restart. A restart
    (or an ``ha`` term) knows what the store kept: a push to a daemon that died before it
    saved the join is forgotten with it (seed 102: a crash 10 s after the push).
``unhealthy-while-read``
    No node is terminated as unhealthy less than ``unhealthy_timeout`` after a push showed it
    joined: missing means missing from every read since then, whether the listings showed
    the node meanwhile or not (the ``unlisted`` fault).
``drain-forgotten``
    A node shoal drained (the scheduler gives it no new work) is never ready capacity in the
    daemon's view (``Controller.tracker``), across restarts too.
``noisy-wake``
    A pushed demand that changed neither the queued jobs, the running jobs per node (elapsed
    times aside) nor the joined nodes does not wake a pass, unless the daemon's demand was
    stale or absent before it (a restart, a failed read: then what was held back may be
    done). The loop's own wake-up event, ``Controller._demand_changed``, is what the harness
    reads. Reported once per run.
``fsync-on-loop``
    Nothing is fsynced on the event loop (work handed to ``asyncio.to_thread`` is off it).
``partial-gang``
    A pass whose plan launches gangs (``Launch.gangs``: multi-node jobs, to be launched whole
    or not at all) launches, per node type, whole gangs and at most its single nodes beside
    them, never part of a gang; checked after every pass, crashed ones too. Push mode draws up
    to three gangs of 2 or 3 nodes per seed (their own random stream), and with the
    ``capacity`` fault half the seeds give the first node type room for only 2 instances
    until ``FAULT_END`` (below its ``max``: a 3-node gang finds part of its room).

This is push mode (``mode="push"``). Slurm's power-saving mode (``mode="power_save"``:
``PowerSaver``, ``Cleaner`` and the hook spool driven by a simulated slurmctld, with the hook
invariants) is ``powersave.PowerRun``, a subclass of this run; its module docstring lists
what it adds. With two daemons on one elector (``mode="ha"``: partitions from the election,
kills of a daemon, faults at the shared state's writes, and the invariants ``ha-overlap``,
``acted-after-lease`` and ``held-for-nothing``) it is ``ha.HaRun``, a subclass too.

A violation records the seed and the run's event log; ``bench/chaos.py --seed S --verbose``
replays it and prints every event.
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import dataclasses
import gc
import itertools
import logging
import os
import random
import selectors
import tempfile
import traceback
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from shoal.daemon.config import ShoalConfig, parse_config
from shoal.daemon.demand import DemandFailure, DemandUpdate
from shoal.daemon.durable import StateBackend
from shoal.daemon.loop import Controller, PassRecord
from shoal.daemon.service import (
    apply_config,
    build_controller,
    build_policy,
    build_provider,
    reload_policy_config,
)
from shoal.daemon.simulate.cluster import Cluster
from shoal.daemon.simulate.engine import EPOCH, _ReplayMetrics
from shoal.providers.outcomes import TerminationStatus
from shoal.providers.simulated import SimulatedProvisioner
from shoal.runtime.testing import FakeClock, InlineExecutor
from shoal.scaler.model import NodeType, Plan, PlannerState, Policy, RemoveCause, Snapshot
from shoal.scaler.planner import plan as default_plan
from shoal.scaler.planner import usable_shape
from shoal.scaler.shape import Shape

from .faults import HA_KINDS, KINDS, POWER_KINDS, PUSH_KINDS, Crash, FaultPlan, FaultyCloud

__all__ = [
    "END",
    "FAULT_END",
    "KINDS",
    "MODES",
    "Sabotage",
    "SeedResult",
    "Violation",
    "chaos_config",
    "liveness_bound",
    "run_seed",
    "run_seeds",
]

HOUR = 3600.0
FAULT_END = 3 * HOUR
SUBMIT_END = 3.5 * HOUR
END = 6 * HOUR
RESTART_SEC = 5.0  # deploy/shoal.service's RestartSec: systemd starts a failed start again
PUSH_EVERY = 90.0  # a pushing source re-sends its demand at least this often
GiB = 1024**3
LOG_TAIL = 60  # events printed with a violation
MODES = ("push", "power_save", "ha")  # ha: two daemons, one elector (``ha``)

# plan, snapshot, seconds since the run began -> the plan to carry out instead
Sabotage = Callable[[Plan, Snapshot, float], Plan]


def chaos_config(seed: int, plan: FaultPlan, state_dir: Path, mode: str = "push") -> ShoalConfig:
    """A small cluster: three node types (one spot), tight timers, count packing (``run_seed``
    may switch it to cost packing: every type here has a price). In
    power-saving mode Slurm's power saving drives it (``powersave``): two zones, and a node
    type with two instance types, so a launch has several offerings to choose from."""
    power = mode == "power_save"
    zone: dict[str, Any] = {"zones": ["sim-1a", "sim-1b"]} if power else {"zone": "sim-1a"}
    extra: dict[str, Any] = {}
    if power:
        extra = {
            "demand": {"api": False, "slurm": True},
            "slurm": {
                "mode": "power_save",
                "poll_interval": "20s",
                "cleanup_interval": "60s",
                "orphan_grace": "120s",
            },
        }
    first = "c5.large/c5a.large" if power else "c5.large"
    return parse_config(
        {
            "cluster_name": "chaos",
            "provider": {
                "kind": "simulated",
                **zone,
                "boot_delay": "60s",
                "join_delay": "30s",
                "listing_lag": plan.lag,
                "spot_interruption_rate": min(1.0, plan.spot_rate),
                "seed": seed,
            },
            "node_types": [
                {"type": first, "max": 3},
                {"type": "r5.large", "max": 2},
                {"type": "c5.xlarge:0.2", "max": 3},
            ],
            "scaler": {
                "interval": "60s",
                "debounce": "1s",
                "target_time": "15m",
                "beta_inertia": 0.0,
                "unneeded_time": "300s",
                "scale_down_budget": 1.0,
                "join_timeout": "600s",
                "launch_ledger_ttl": "600s",
                "packing": "count",
                "backoff": {"initial": "60s", "max": "300s"},
                "retry": {"attempts": 4, "initial": "1s", "max": "10s", "deadline": "60s"},
            },
            "demand": {"max_age": "120s"},
            "state_dir": str(state_dir),
            **extra,
        }
    )


def liveness_bound(config: ShoalConfig) -> float:
    """See ``starved`` in the module docstring."""
    s, p = config.scaler, config.provider
    return (
        s.target_time
        + 3 * s.interval
        + s.debounce
        + p.boot_delay  # type: ignore[union-attr]
        + p.join_delay  # type: ignore[union-attr]
        + p.listing_lag  # type: ignore[union-attr]
        + max(s.backoff.max, s.launch_ledger_ttl)
        + s.retry.deadline
    )


# (cores, memory GiB, preemptible): fit c5.large / r5.large / c5.xlarge spot as commented
_JOB_SHAPES = (
    (1.0, 1.5, False),  # any on-demand type, or spot
    (2.0, 2.5, False),  # c5.large, r5.large
    (1.0, 10.0, False),  # r5.large only
    (3.0, 5.0, True),  # c5.xlarge spot only
    (1.0, 1.0, True),  # anything
)


# with ``argchange``, a launch brings the next crash (if crashes are on) forward to right
# after it with these odds: its answer may not be booked, so the restart makes it again
ARGCHANGE_CRASH = 0.3

# seconds a node is listed again before the ``unlisted`` fault may hide it again: with the
# omission itself (at most 300 s) and a pass interval, the listings leave it out for less
# than the chaos config's launch_ledger_ttl (600 s), how long the daemon remembers it joined
UNLISTED_APART = 180.0


@dataclass(frozen=True, slots=True)
class Job:
    id: int
    submit: float
    shape: Shape
    run: float
    nodes: int = 1  # a gang's size (``shape`` is per node)


def make_jobs(seed: int, gangs: bool = False) -> list[Job]:
    """Tens of jobs in a few bursts over [0, SUBMIT_END), run 2-20 minutes; with ``gangs``
    also up to three multi-node jobs of 2 or 3 on-demand nodes, drawn from a stream of their
    own (the 1-node jobs of a seed are the same either way)."""
    rng = random.Random(f"jobs-{seed}")
    jobs: list[Job] = []
    for _ in range(rng.randint(4, 10)):
        at = rng.uniform(0.0, SUBMIT_END)
        for _ in range(rng.randint(1, 8)):
            cores, mem, pre = rng.choice(_JOB_SHAPES)
            run = rng.uniform(120.0, 1200.0)
            shape = Shape(run * 1.5, int(mem * GiB), cores, GiB, pre)
            jobs.append(Job(len(jobs), at + rng.uniform(0.0, 120.0), shape, run))
    rng = random.Random(f"gangs-{seed}")
    for _ in range(rng.randint(0, 3) if gangs else 0):
        cores, mem, pre = rng.choice(_JOB_SHAPES[:2])
        run = rng.uniform(120.0, 1200.0)
        shape = Shape(run * 1.5, int(mem * GiB), cores, GiB, pre)
        jobs.append(Job(len(jobs), rng.uniform(0.0, SUBMIT_END), shape, run, rng.randint(2, 3)))
    jobs.sort(key=lambda j: j.submit)
    return jobs


def gang_launches(plan: Plan) -> dict[str, tuple[list[int], int]]:
    """Per node type, the gangs a plan launches and how many single nodes beside them."""
    out: dict[str, tuple[list[int], int]] = {}
    for launch in plan.launches:
        gangs, singles = out.get(launch.node_type, ([], 0))
        gangs = [*gangs, *launch.gangs]
        out[launch.node_type] = (gangs, singles + launch.count - sum(launch.gangs))
    return out


def whole_gangs(launched: int, gangs: list[int], singles: int) -> bool:
    """Whether ``launched`` nodes can be whole gangs of ``gangs`` plus at most ``singles``
    single nodes (a single may fill partly, a gang only all or none)."""
    sums = {0}
    for g in gangs:
        sums |= {s + g for s in sums}
    return any(0 <= launched - s <= singles for s in sums)


@dataclass(frozen=True, slots=True)
class Violation:
    invariant: str
    at: float  # seconds since the run began
    detail: str

    def __str__(self) -> str:
        return f"t={self.at:.1f} {self.invariant}: {self.detail}"


@dataclass(slots=True)
class SeedResult:
    seed: int
    faults: str
    violations: list[Violation]
    log: list[str]
    passes: int = 0
    crashes: int = 0
    launched: int = 0
    jobs: int = 0
    mode: str = "push"
    mismatches: int = 0  # RunInstances answered IdempotentParameterMismatch (``argchange``)

    def report(self, tail: int = LOG_TAIL) -> str:
        lines = [
            f"seed {self.seed} ({self.mode}): {len(self.violations)} violation(s); "
            f"faults: {self.faults}"
        ]
        lines += [f"  {v}" for v in self.violations[:10]]
        lines.append(
            f"  last {min(tail, len(self.log))} events (replay: bench/chaos.py --mode "
            f"{self.mode} --seed {self.seed} --verbose):"
        )
        lines += [f"    {e}" for e in self.log[-tail:]]
        return "\n".join(lines)


@dataclass(slots=True)
class _Pass:
    """What one pass did, as the cloud saw it."""

    stale: str | None
    alive_before: collections.Counter[str]
    alive_names: dict[str, str]  # live instance -> node type, when the pass started
    plan: Plan | None = None
    limits: dict[str, int] | None = None  # node type -> its max in force when it planned
    launched: collections.Counter[str] = field(default_factory=collections.Counter)
    gone: set[str] = field(default_factory=set)  # terminated by shoal in the pass
    # the drain hook asked in the pass: the plan's drains, and those the controller makes
    # again for a draining mark the hook never confirmed (``unconfirmed_drains``, added to
    # the plan after the planner: seed 2174 of the ha campaign of 2026-12-08)
    drains_asked: set[str] = field(default_factory=set)

    def out(self) -> collections.Counter[str]:
        """Per node type, the live instances the pass took out of the count: terminated, or
        planned to be terminated or drained (a termination that failed still let the planner
        launch its replacement; so does a drain whose hook failed)."""
        names = self.gone | self.drains_asked
        if self.plan is not None:
            names |= {a.node_id for a in (*self.plan.terminations, *self.plan.drains)}
        return collections.Counter(self.alive_names[n] for n in names if n in self.alive_names)


def _plan_input(update: DemandUpdate) -> tuple[Any, ...]:
    """What of a demand can change a plan: the queued jobs, the running jobs per node (not
    their elapsed times) and the joined nodes."""
    d = update.demand
    running = sorted((r.node_id, repr(r.shape)) for r in d.running)
    return (frozenset(d.queued), tuple(running), update.joined_nodes)


class _Executor(InlineExecutor):
    """``InlineExecutor`` that knows when it runs work handed off the event loop."""

    inside = False

    def submit(self, fn: Any, /, *args: Any, **kwargs: Any) -> Any:
        _Executor.inside = True
        try:
            return super().submit(fn, *args, **kwargs)
        finally:
            _Executor.inside = False


_CURRENT: list[_Run] = []  # the run in progress in this process
_real_fsync = os.fsync


def _fsync(fd: int) -> None:
    """``fsync-on-loop``: a write that must survive a crash is fsynced off the event loop
    (``asyncio.to_thread``), never on it, where it would stall every other task."""
    if _CURRENT and not _Executor.inside:
        run = _CURRENT[-1]
        if not run.fsync_reported:
            run.fsync_reported = True
            where = "".join(traceback.format_stack(limit=6)[:-1])
            run.violate("fsync-on-loop", f"fsync on the event loop:\n{where}")
    # no real fsync: a simulated crash loses no page cache (the machine lives on), and the
    # disk's flush would be most of a power-saving seed's time


class _DrainHook:
    """The scheduler's side of a drain and an undrain (the configured hooks' job): the node
    takes no new work, or takes it again.
    With the ``hookerr`` fault it sometimes fails with an error the daemon does not expect
    (not a ``DrainError``), as a webhook client's bug or an unmapped exception would."""

    def __init__(self, run: _Run) -> None:
        self.run = run
        self.rng = random.Random(f"drain-{run.seed}-{run.incarnation}")

    async def drain(self, node: str) -> None:
        run = self.run
        if run.ctx is not None:  # asked in a pass: taken out of its count, failed or not
            run.ctx.drains_asked.add(node)
        if run.t < FAULT_END and self.rng.random() < run.plan.hookerr_p:
            run.note(f"drain hook fails on {node}")
            raise RuntimeError(f"chaos: the drain hook failed on {node}")
        run.drained.add(node)
        run.cluster.cordon(node, max(run.t, run.cluster.now))

    async def undrain(self, node: str) -> None:
        run = self.run
        run.drained.discard(node)
        run.cluster.uncordon(node, max(run.t, run.cluster.now))


class _Run:
    def __init__(
        self,
        seed: int,
        kinds: frozenset[str],
        state_dir: Path,
        verbose: bool,
        sabotage: Sabotage | None = None,
        mode: str = "push",
    ) -> None:
        self.seed = seed
        self.mode = mode
        self.sabotage = sabotage
        self.plan = FaultPlan.draw(seed, kinds, FAULT_END, power=mode == "power_save")
        self.config = chaos_config(seed, self.plan, state_dir, mode)
        self.original = self.config  # (``run_seed`` may set its packing: ``setup`` takes it)
        self.edits = 0  # reload events whose edit of the config file was made
        self.placement = False  # argchange: the file sets placement_group "cluster"
        self.args_rng = random.Random(f"argchange-{seed}")  # its draw at each restart
        self.sighup: asyncio.Future[None] | None = None  # the process's SIGHUPs (``sighups``)
        self.file = self.config  # the config file (``write_config``; ``setup`` sets it again)
        # id of a live daemon's controller -> the config it runs after a refused reload
        self.refused: dict[int, ShoalConfig] = {}
        self.verbose = verbose
        self.log: list[str] = []
        self.violations: list[Violation] = []
        self.t = 0.0
        self.ctx: _Pass | None = None
        self.controller: Controller | None = None
        self.incarnation = 0
        self.crashes = 0
        self.passes = 0
        self.launched_total = 0
        self.join_at: dict[str, float] = {}  # instance -> when it joins the scheduler
        self.joined: set[str] = set()
        self.drained: set[str] = set()
        self.forgotten: set[str] = set()
        self.noisy_wakes = 0
        self.fsync_reported = False
        self.change_at: float | None = 0.0
        self.stopped: set[str] = set()
        self.missing: dict[str, float] = {}  # node -> flap end
        self.shown_joined: set[str] = set()  # nodes a push to the daemon showed joined
        self.unlisted_until: dict[str, float] = {}  # node -> end of its last omission
        self.shown_at: dict[str, float] = {}  # ... and when a push last did
        self.stale_until = -1.0
        self.stale_kind = ""
        self.last_update: DemandUpdate | None = None
        self.starved: set[int] = set()
        self.seen_interruptions = 0
        self.cluster: Cluster | None = None
        self.paused: dict[int, float] = {}
        self.job_nodes: dict[int, int] = {}  # a gang's size, by job id
        # a type's capacity below its max during the fault phase (see ``partial-gang``)
        draw = random.Random(f"tight-{seed}").random()
        self.tight = mode == "push" and "capacity" in self.plan.kinds and draw < 0.5

    # -- the event log --------------------------------------------------------------------

    def note(self, text: str) -> None:
        line = f"t={self.t:8.1f} {text}"
        self.log.append(line)
        if self.verbose:
            print(line)

    def violate(self, invariant: str, detail: str) -> None:
        v = Violation(invariant, self.t, detail)
        self.violations.append(v)
        self.note(f"VIOLATION {invariant}: {detail}")

    # -- set-up ---------------------------------------------------------------------------

    def booted(self) -> Controller | None:
        """A controller the first start built, to read the configured types from."""
        return self.controller

    async def setup(self) -> None:
        asyncio.get_running_loop().set_default_executor(_Executor())
        self.clock = FakeClock(EPOCH)
        cloud = build_provider(self.config, self.clock)
        assert isinstance(cloud, SimulatedProvisioner)
        self.cloud = cloud
        self.faulty = FaultyCloud(cloud, self.plan, self.observe_call, self.note)
        if self.mode == "push":  # ha: two processes, each daemon's own tasks (``ha._die``)
            self.faulty.on_death = self.kill
        self.main_task = asyncio.current_task()
        self.original = self.file = self.config  # as ``run_seed`` set it
        self.listeners = list(cloud.fleet._listeners)  # the cloud's own, before any daemon's
        await self.start_daemon(crashes=False)  # the first start, on an empty cloud
        booted = self.booted()
        assert booted is not None
        policy = booted.policy
        self.types: dict[str, NodeType] = {t.name: t for t in policy.node_types}
        self.type_of = {
            (i, t.preemptible): t.name for t in policy.node_types for i in t.instance_types
        }
        self.usable = {t.name: usable_shape(t, policy) for t in policy.node_types}
        self.cluster = Cluster(self.usable.values())
        self.bound = liveness_bound(self.config)
        self.push(force=True)
        self.note(f"faults: {self.plan.describe()}; liveness bound {self.bound:.0f}s")
        if self.tight:
            self.tight_type = policy.node_types[0].instance_types[0]
            self.cloud.set_capacity(self.tight_type, 2)
            self.note(f"room for 2 {self.tight_type} until t={FAULT_END:.1f}")

    def planner(self, snapshot: Snapshot, policy: Policy, state: PlannerState, now: float) -> Plan:
        """The daemon's planner, watched: the harness keeps the plan of the pass."""
        plan = default_plan(snapshot, policy, state, now)
        if self.sabotage is not None:
            plan = self.sabotage(plan, snapshot, now - EPOCH)
        if self.ctx is not None:
            self.ctx.plan = plan
            self.ctx.limits = self.limits()
        for launch in plan.launches:
            self.note(f"plan: launch {launch.count} {launch.node_type} ({launch.cause})")
        for action in plan.undrains:
            self.note(f"plan: undrain {action.node_id} ({action.cause})")
        for action in (*plan.drains, *plan.terminations):
            self.note(f"plan: remove {action.node_id} ({action.cause}: {action.message})")
        return plan

    async def new_controller(
        self,
        crashes: bool,
        state_backend: StateBackend | None = None,
        config: ShoalConfig | None = None,
    ) -> Controller:
        """A new process's controller, built by ``build_controller`` from the config (or
        ``config``), ``state_dir`` (or ``state_backend``) and the cloud (crash points armed unless
        ``crashes`` is False), with request ids that say which incarnation launched what."""
        self.incarnation += 1
        self.faulty.dead = False
        # A new process: the dead one's subscribers and its client-side catalogue died with it.
        self.cloud.fleet._listeners[:] = self.listeners
        self.cloud._catalogue.clear()
        self.faulty.arm(crashes and self.t < FAULT_END)
        counter = itertools.count(1)
        prefix = f"shoal-{self.seed}-{self.incarnation}"
        controller = await self.clock.run_until(
            build_controller(
                self.config if config is None else config,
                self.cloud,
                self.clock,
                metrics=_ReplayMetrics(),
                planner=self.planner,
                state_backend=state_backend,
            )
        )
        controller.executor.request_ids = lambda: f"{prefix}-{next(counter)}"
        return controller

    async def start_daemon(self, crashes: bool = True) -> bool:
        """A new process: every in-memory object built again from the config, ``state_dir``
        and the cloud. False if it crashed while starting (it is then down again)."""
        if crashes:  # a restart
            self.change_args()
        try:
            while True:  # as systemd: a start that fails (startup_failed) runs again RestartSec on
                try:
                    built = self.config  # the file as the process reads it
                    controller = await self.new_controller(crashes)
                    break
                except Crash:
                    raise
                except Exception as exc:
                    self.note(f"start failed ({exc!r}): started again in {RESTART_SEC:.0f} s")
                    await self.clock.advance(RESTART_SEC)
            controller.executor.drain_hook = controller.executor.undrain_hook = _DrainHook(self)
            controller.store.writer = self.faulty_writer(controller.store.writer)
            self.restored(controller)
            while True:  # as Controller.run: a failed first listing is tried again an interval on
                try:
                    await self.clock.run_until(controller.reconcile())
                    break
                except Crash:
                    raise
                except Exception as exc:
                    self.note(f"reconcile failed ({exc!r}): again in {controller.interval:.0f} s")
                    await self.clock.advance(controller.interval)
            if not crashes:
                self.faulty.arm(True)
        except (Crash, asyncio.CancelledError):  # cancelled: it died in another task (``kill``)
            if not self.faulty.dead:
                raise
            await self.bury()
            return False
        self.controller = controller
        self.note(f"daemon started (incarnation {self.incarnation})")
        if self.plan.reloads:
            self.sighup = asyncio.ensure_future(self.sighups(controller, built))
        self.push(force=True)
        return True

    def faulty_writer(self, write: Callable[[Path, Any], None]) -> Callable[[Path, Any], None]:
        """The store's writer, as a crash point: the process dies before the state file is
        replaced, or right after (``wrote`` is told what was written). Between a launch's
        intent on disk and its answer booked is where a restart has to make the launch
        again (``Controller._replay_intents``)."""

        def writer(path: Path, data: Any) -> None:
            after = self.faulty.point("write state.json")
            write(path, data)
            self.wrote(data)
            if after:
                self.faulty.die_after("write state.json")

        return writer

    def edit_config(self, upto: float) -> None:
        """The ``reload`` fault's file edits due by ``upto`` (seconds since the run began): the
        config file (what a start reads) becomes the original with the last one's changes."""
        reloads = self.plan.reloads
        due = self.edits
        while due < len(reloads) and reloads[due].at <= upto:
            due += 1
        if due == self.edits:
            return
        self.edits = due
        self.t = max(self.t, upto)  # (a pass may be in flight)
        new = self.write_config()
        maxes = ",".join(f"{e.type}={e.max}" for e in new.node_types)
        s = new.scaler
        self.note(
            f"config edited: max {maxes} interval={s.interval:g}s debounce={s.debounce:g}s "
            f"target_time={s.target_time:g}s unneeded_time={s.unneeded_time:g}s"
            + ("" if reloads[due - 1].changes else " (the original)")
        )

    def write_config(self) -> ShoalConfig:
        """The config file as the faults left it, now what a start reads: the original, the
        last reload's changes (``edits``) and argchange's placement groups (``placement``)."""
        data = self.original.model_dump(mode="json", exclude_unset=True)
        for what, key, value in self.plan.reloads[self.edits - 1].changes if self.edits else ():
            if what == "max":
                entry = data["node_types"][int(key)]
                entry["max"] = max(1, entry["max"] + int(value))
            else:
                data["scaler"][key] = value
        for entry in data["node_types"] if self.placement else ():
            entry["placement_group"] = "cluster"
        self.config = self.file = new = parse_config(data)
        if hasattr(self, "types"):  # (set once the first start built the policy)
            self.types = {
                e.type: dataclasses.replace(self.types[e.type], max_nodes=e.max)
                for e in new.node_types
            }
        return new

    def change_args(self) -> None:
        """``argchange``, at a restart: with the plan's odds, in the fault phase, the file the
        new process reads sets (or unsets) ``placement_group`` on every node type, an argument
        of RunInstances EC2 compares when a client token comes again."""
        if self.t >= FAULT_END or self.args_rng.random() >= self.plan.argchange_p:
            return
        self.placement = not self.placement
        self.write_config()
        where = "cluster" if self.placement else "none"
        self.note(f"config edited for the restart: placement_group {where} on every node type")

    async def sighups(self, c: Controller, applied: ShoalConfig, who: str = "") -> None:
        """The operator's SIGHUP after each edit, to a daemon started from ``applied``: a task
        of the process (it dies with it), so a reload may come in the middle of a pass, as
        ``Service.reload``'s does. The daemon builds the policy from the file and applies it
        as ``Service.reload`` does (``service.apply_config``); the harness's drain hook
        stands in for the configured one, as at a start. A file edited while the process
        started is applied at once (the reload right after a start). A reload whose policy
        cannot be built (its catalogue call throttled past the retries) is refused, as
        ``Service.reload`` refuses it: the daemon keeps the config it runs, whose ``max``
        stays in force for ``over-max`` (``refused``), and the operator sends SIGHUP again
        ``RESTART_SEC`` later. ``who``: the daemon, in the event log (ha mode)."""
        reloads = self.plan.reloads
        who = who or f"incarnation {self.incarnation}"
        upto = self.clock.now() - EPOCH
        try:
            while True:
                self.edit_config(upto)
                if self.file is not applied:
                    new = self.file
                    hook = c.executor.drain_hook
                    try:
                        policy = await build_policy(reload_policy_config(applied, new), self.cloud)
                    except Exception as exc:
                        self.refused[id(c)] = applied
                        self.note(
                            f"reload by {who} refused ({exc!r}): SIGHUP again in {RESTART_SEC:g} s"
                        )
                        await self.clock.sleep(RESTART_SEC)
                        upto = self.clock.now() - EPOCH
                        continue
                    apply_config(c, policy, applied, new, self.cloud)
                    applied = new
                    self.refused.pop(id(c), None)
                    c.executor.drain_hook = c.executor.undrain_hook = hook
                    during = " during a pass" if self.ctx is not None else ""
                    self.note(f"reloaded by {who}{during}")
                if self.edits >= len(reloads):
                    return
                upto = reloads[self.edits].at
                await self.clock.sleep(max(0.0, EPOCH + upto - self.clock.now()))
        finally:
            self.refused.pop(id(c), None)

    def wrote(self, data: Any) -> None:
        """What ``state.json`` holds now (a mode may check it)."""

    def check_held(self, ctx: _Pass, record: PassRecord) -> None:
        """After a pass that finished: what it planned against the cloud (a mode may check
        it)."""

    def kill(self) -> None:
        """kill -9 (push mode): every task of the process stops where it is, whichever task
        died (a background write of ``state.json`` too, not only the pass's own calls)."""
        me = asyncio.current_task()
        for task in asyncio.all_tasks():
            if task is not me and task is not self.main_task:
                task.cancel()

    def restored(self, controller: Controller) -> None:
        """A daemon starts from what the store kept (before its first listing): a node a
        push showed joined only to a daemon that died before it saved that is not known
        joined any more (``joined-timed-out`` asks no more than the store holds). A store
        that tells nothing of joins (None) makes the first listing's nodes joined anyway."""
        tracker = controller.tracker
        if tracker._known is not None:
            self.shown_joined &= set(tracker.seen_joined())

    def pass_ended(self) -> bool:
        """A pass that raised ``Crash`` or was cancelled: whether its process died there (else
        the harness has a bug)."""
        return self.faulty.dead

    async def bury(self) -> None:
        """The process died: cancel whatever it left running (the other branches of a
        gather), and schedule the restart."""
        self.crashes += 1
        self.controller = None
        me = asyncio.current_task()
        for task in asyncio.all_tasks():
            if task is not me:
                task.cancel()
        await self.clock.settle()
        rng = random.Random(f"restart-{self.seed}-{self.crashes}")
        self.restart_at = self.clock.now() - EPOCH + rng.uniform(*self.plan.restart_delay)
        self.note(f"daemon down until t={self.restart_at:.1f}")

    # -- the cloud's truth ----------------------------------------------------------------

    def node_type(self, name: str) -> str:
        inst = self.cloud._instances.get(name)
        return "" if inst is None else self.type_of.get((inst.instance_type, inst.preemptible), "")

    def hidden(self) -> set[str]:
        """Live instances the listings leave out now (the ``unlisted`` fault)."""
        now = self.cloud.clock.now()
        return {n for n, until in self.cloud._unlisted.items() if now < until}

    def limits(self) -> dict[str, int]:
        """Each node type's ``max`` in force now: the config file's, or a higher one a live
        daemon still runs because its reload was refused (``sighups``)."""
        out = {name: t.max_nodes for name, t in self.types.items()}
        for config in self.refused.values():
            for e in config.node_types:
                out[e.type] = max(out[e.type], e.max)
        return out

    def alive(self) -> collections.Counter[str]:
        """Live instances per node type: not stopped, listed or not (launches in flight
        included), except those the ``unlisted`` fault hides from listings that showed them
        before: the daemon cannot tell one from a node that is gone (an interrupted node
        leaves the listing the same way), and replacing it is what it should do."""
        out: collections.Counter[str] = collections.Counter()
        hidden = self.hidden()
        for name in self.cloud.worker_names():
            if self.cloud.instance_state(name) != "stopped" and name not in hidden:
                out[self.node_type(name)] += 1
        return out

    def observe_call(self, op: str, phase: str, arg: Any, result: Any) -> None:
        """The cloud's side of every call: checks about the call, and what it did."""
        ctx = self.ctx
        if op == "RunInstances":
            if phase == "before":
                self._names_before = set(self.cloud.worker_names())
                return
            new = [n for n in self.cloud.worker_names() if n not in self._names_before]
            now = self.clock.now() - EPOCH
            for name in new:
                self.join_at[name] = now + self.cloud.boot_delay + self.cloud.join_delay
                nt = self.node_type(name)
                self.launched_total += 1
                if ctx is not None:
                    ctx.launched[nt] += 1
            if new:
                self.note(f"launched {', '.join(new)} ({arg.offering})")
                if self.plan.argchange_p and self.args_rng.random() < ARGCHANGE_CRASH:
                    self.faulty.crash_soon(2)  # before the answer is booked: a replay
                if ctx is not None and ctx.stale:
                    self.violate("stale-acted", f"launched {new} on stale demand ({ctx.stale})")
                alive = self.alive()
                # of the types launched (a node ``unlisted`` hid and the listing shows again
                # may leave another type over its max, and the daemon launches none of it)
                limits = self.limits() if ctx is None or ctx.limits is None else ctx.limits
                for nt in {self.node_type(n) for n in new}:
                    if nt and alive[nt] > limits[nt]:
                        self.violate(
                            "over-max", f"{alive[nt]} live instances of {nt} (max {limits[nt]})"
                        )
        elif op == "TerminateInstances":
            if phase == "before" or isinstance(result, BaseException):
                return
            gone = [n for n, st in result.items() if st is TerminationStatus.TERMINATED]
            if gone:
                self.note(f"shoal terminated {', '.join(gone)}")
            timeouts = {
                a.node_id
                for a in (ctx.plan.terminations if ctx is not None and ctx.plan else ())
                if a.cause is RemoveCause.JOIN_TIMEOUT
            }
            unhealthy = {
                a.node_id
                for a in (ctx.plan.terminations if ctx is not None and ctx.plan else ())
                if a.cause is RemoveCause.UNHEALTHY
            }
            limit = self.config.scaler.unhealthy_timeout
            for name in gone:
                shown = self.shown_at.get(name)
                if name in unhealthy and shown is not None and self.clock.now() - shown < limit:
                    self.violate(
                        "unhealthy-while-read",
                        f"shoal terminated {name} as unhealthy; a read showed it joined "
                        f"{self.clock.now() - shown:.0f}s ago (unhealthy_timeout {limit:.0f}s)",
                    )
                if name in timeouts and name in self.shown_joined:
                    self.violate(
                        "joined-timed-out",
                        f"shoal terminated {name} as a join timeout; a read showed it joined",
                    )
                running = self.cluster.running_on(name)
                if running:
                    self.violate(
                        "busy-killed", f"shoal terminated {name}, which ran {running} job(s)"
                    )
                if ctx is not None and ctx.stale:
                    self.violate("stale-acted", f"terminated {name} on stale demand ({ctx.stale})")
                if ctx is not None:
                    ctx.gone.add(name)
                self.forget(name, shoal=True)

    def forget(self, name: str, *, shoal: bool = False) -> None:
        self.join_at.pop(name, None)
        self.drained.discard(name)
        self.missing.pop(name, None)
        if name in self.joined:
            self.joined.discard(name)
            now = max(self.t, self.cluster.now)
            if shoal:
                self.cluster.node_removed(name, now)
            else:
                self.cluster.node_interrupted(name, now)

    # -- demand -----------------------------------------------------------------------------

    def push(self, force: bool = False) -> None:
        """What the source sends now: the scheduler's demand (less flapping nodes), or during a
        stale window the old read or the failure."""
        c = self.controller
        now = self.clock.now()
        if c is None or self.cluster is None:
            return
        if self.t < self.stale_until:
            if self.stale_kind == "fail":
                c.set_demand(DemandFailure("chaos: the scheduler does not answer", now))
            elif self.last_update is not None:
                old = self.last_update
                max_age = self.config.demand.max_age
                at = min(old.at or now, now - max_age - 1.0)
                c.set_demand(DemandUpdate(old.demand, old.joined_nodes, at=at, max_age=max_age))
            if c._demand_changed.is_set():
                c._demand_changed.clear()
                self.change_at = self.t if self.change_at is None else self.change_at
            self.pushed_at = self.t
            return
        update = self.cluster.update(self.t)
        joined = update.joined_nodes
        if self.missing and joined is not None:
            joined = frozenset(n for n in joined if n not in self.missing)
        if joined:
            self.shown_joined |= joined
            self.shown_at.update(dict.fromkeys(joined, now))
        update = DemandUpdate(update.demand, joined, at=now, max_age=self.config.demand.max_age)
        previous = self.last_update
        self.last_update = update
        self.pushed_version = self.cluster.version
        self.pushed_at = self.t
        # a fresh read after a stale spell may act on what was held back: a wake worth having
        was_stale = c.demand_stale() is not None or c.demand_at is None
        c.set_demand(update)
        # The loop's own wake-up decision (Controller.run waits on this event, then clears it).
        woke = c._demand_changed.is_set()
        c._demand_changed.clear()
        if force or woke:
            self.change_at = self.t if self.change_at is None else self.change_at
        if (
            woke
            and not force
            and not was_stale
            and previous is not None
            and _plan_input(previous) == _plan_input(update)
        ):
            self.noisy_wakes += 1
            if self.noisy_wakes == 1:  # reported once per run
                self.violate(
                    "noisy-wake",
                    "a push that changed neither the queued jobs, the running jobs per node nor "
                    "the joined nodes woke a pass",
                )

    # -- the loop ---------------------------------------------------------------------------

    async def run(self) -> SeedResult:
        await self.setup()
        jobs = make_jobs(self.seed, gangs=True)
        windows = list(self.plan.windows)
        reloads = self.plan.reloads
        ends: list[tuple[float, str, str]] = []  # (end, kind, target)
        i = wi = 0
        self.last_pass = -1e9
        self.restart_at = 0.0
        self.pushed_version = -1
        self.pushed_at = 0.0
        while True:
            c = self.controller
            times = [END]
            if i < len(jobs):
                times.append(jobs[i].submit)
            if wi < len(windows):
                times.append(windows[wi].start)
            if self.edits < len(reloads):
                times.append(reloads[self.edits].at)
            if ends:
                times.append(min(e[0] for e in ends))
            finish = self.cluster.next_finish()
            if finish is not None:
                times.append(finish)
            if self.join_at:
                times.append(min(self.join_at.values()))
            interrupt = self.cloud.next_interruption()
            if interrupt is not None:
                times.append(interrupt - EPOCH)
            if c is None:
                times.append(self.restart_at)
            else:
                due = self.last_pass + self.config.scaler.interval
                if self.change_at is not None:
                    due = min(due, self.change_at + self.config.scaler.debounce)
                times.append(due)
                times.append(self.pushed_at + PUSH_EVERY)
            if self.t < FAULT_END:
                times.append(FAULT_END)
            t = max(self.t, min(times))
            await self.clock.advance(EPOCH + t - self.clock.now())
            self.t = t
            if self.faulty.dead and self.controller is not None:  # died between passes
                await self.bury()
            self.step_cloud()
            while i < len(jobs) and jobs[i].submit <= t:
                j = jobs[i]
                self.cluster.submit(j.id, j.shape, j.run, t, j.nodes)
                self.job_nodes[j.id] = j.nodes
                i += 1
            while wi < len(windows) and windows[wi].start <= t:
                self.open_window(windows[wi], ends)
                wi += 1
            for end in [e for e in ends if e[0] <= t]:
                ends.remove(end)
                self.close_window(end)
            self.edit_config(t)  # (a live daemon's ``sighups`` made it already)
            if t >= FAULT_END and self.faulty.armed:
                self.faulty.arm(False)
                self.note("calm: no new faults")
            if t >= FAULT_END and self.tight:
                self.tight = False
                self.cloud.set_capacity(self.tight_type, None)
                self.note(f"room for {self.tight_type} back")
            self.cluster.advance(t)
            c = self.controller
            if c is None:
                if t >= self.restart_at:
                    await self.start_daemon()
                continue
            if self.cluster.version != self.pushed_version or t >= self.pushed_at + PUSH_EVERY:
                self.push()
            self.check_liveness()
            if t >= END:
                break
            due = self.last_pass + self.config.scaler.interval
            if self.change_at is not None:
                due = min(due, self.change_at + self.config.scaler.debounce)
            if t >= due:
                await self.one_pass(c)
        self.check_end()
        return self.result(len(jobs))

    def result(self, jobs: int) -> SeedResult:
        return SeedResult(
            self.seed,
            self.plan.describe(),
            self.violations,
            self.log,
            self.passes,
            self.crashes,
            self.launched_total,
            jobs,
            self.mode,
            self.faulty.mismatches if hasattr(self, "faulty") else 0,
        )

    def step_cloud(self) -> None:
        """Interruptions and joins up to now."""
        cloud = self.cloud
        cloud.count()  # applies what happened on the clock
        for name, _ in cloud.interruptions[self.seen_interruptions :]:
            self.note(f"spot interruption of {name}")
            self.forget(name)
        self.seen_interruptions = len(cloud.interruptions)
        for name, at in sorted(self.join_at.items(), key=lambda kv: kv[1]):
            if at > self.t:
                continue
            del self.join_at[name]
            if cloud.instance_state(name) == "joined":
                self.joined.add(name)
                self.cluster.node_joined(
                    name, self.usable[self.node_type(name)], max(self.t, self.cluster.now)
                )

    def open_window(self, w: Any, ends: list[tuple[float, str, str]]) -> None:
        kind = w.kind
        if kind == "missing":
            nodes = sorted(self.joined)
            if not nodes:
                return
            busy = [n for n in nodes if self.cluster.running_on(n)]
            pool = busy or nodes
            name = pool[int(w.pick * len(pool))]
            self.missing[name] = w.end
            ends.append((w.end, kind, name))
            self.note(f"{name} missing from the joined nodes until t={w.end:.1f}")
            self.push()
        elif kind in ("stale", "fail"):
            if self.t < self.stale_until:
                return
            self.stale_until, self.stale_kind = w.end, kind
            ends.append((w.end, kind, ""))
            self.note(f"{'stale reads' if kind == 'stale' else 'failed reads'} until t={w.end:.1f}")
            self.push()
        elif kind == "capacity":
            nt = sorted(self.types.values(), key=lambda t: t.name)[int(w.pick * len(self.types))]
            self.cloud.set_unavailable(nt.instance_types[0], nt.preemptible)
            ends.append((w.end, kind, nt.name))
            self.note(f"no capacity for {nt.name} until t={w.end:.1f}")
        elif kind == "unlisted":
            hid = self.unlist(w, self.joined)
            if hid is None:
                return
            name, at = hid
            if at % 1.0 < 0.5:  # out of the reads as well, half the time, and for longer
                end = w.end + 60.0 + (w.end - w.start) / 2
                self.missing[name] = max(self.missing.get(name, end), end)
                ends.append((end, "missing", name))
                self.note(f"{name} missing from the joined nodes until t={end:.1f}")
                self.push()
        elif kind == "stop":
            names = sorted(n for n in self.cloud.worker_names() if n not in self.stopped)
            if not names:
                return
            name = names[int(w.pick * len(names))]
            self.cloud.stop_instance(name)
            self.stopped.add(name)
            self.note(f"someone stops {name}")
            self.forget(name)

    def unlist(self, w: Any, joined: Iterable[str]) -> tuple[str, float] | None:
        """The ``unlisted`` window ``w``: hide one of the ``joined`` nodes from the listings
        until ``w.end``; the node and ``w.pick`` scaled to the candidates (its fraction picks
        more), or None when every joined node was hidden too recently. One omission at a time
        per node, apart by UNLISTED_APART: the daemon remembers an unlisted node for
        launch_ledger_ttl from the first listing without it (chained windows hid seed 171's
        node from every listing for 13 minutes)."""
        nodes = sorted(
            n for n in joined if self.unlisted_until.get(n, -1e9) + UNLISTED_APART <= self.t
        )
        if not nodes:
            return None
        at = w.pick * len(nodes)
        name = nodes[int(at)]
        self.cloud.unlist(name, w.end - self.t)
        self.unlisted_until[name] = w.end
        self.note(f"{name} out of the listings until t={w.end:.1f}")
        return name, at

    def close_window(self, end: tuple[float, str, str]) -> None:
        _, kind, target = end
        if kind == "missing":
            if self.missing.get(target, -1.0) <= self.t:
                self.missing.pop(target, None)
                self.note(f"{target} back in the joined nodes")
                self.push()
        elif kind in ("stale", "fail"):
            self.stale_until = -1.0
            self.note("reads fresh again")
            self.push()
        elif kind == "capacity":
            nt = self.types[target]
            self.cloud.set_unavailable(nt.instance_types[0], nt.preemptible, code=None)
            self.note(f"capacity back for {target}")

    async def one_pass(self, c: Controller) -> None:
        hidden = self.hidden()
        alive = {
            n: self.node_type(n)
            for n in self.cloud.worker_names()
            if n not in self.drained
            and n not in hidden
            and self.cloud.instance_state(n) != "stopped"
        }
        self.ctx = ctx = _Pass(c.demand_stale(), collections.Counter(alive.values()), alive)
        self.change_at = None
        self.passes += 1
        try:
            record = await self.clock.run_until(c.run_pass())
        except (Crash, asyncio.CancelledError):  # cancelled: it died in another task (``kill``)
            if not self.pass_ended():
                raise
            self.ctx = None
            await self.bury()
            self.check_duplicates(ctx)
            self.check_gangs(ctx)
            return
        finally:
            self.t = max(self.t, self.clock.now() - EPOCH)
        self.ctx = None
        self.last_pass = self.t
        for name in record.drained:
            self.drained.add(name)
            self.cluster.cordon(name, max(self.t, self.cluster.now))
        for name in record.undrained:
            self.drained.discard(name)
            self.cluster.uncordon(name, max(self.t, self.cluster.now))
        if record.launched or record.terminated or record.errors or record.reason:
            self.note(
                f"pass {record.number}: {record.outcome} launched={record.launched} "
                f"terminated={len(record.terminated)} errors={len(record.errors)}"
                + (f" ({record.reason})" if record.reason else "")
            )
        self.check_duplicates(ctx)
        self.check_gangs(ctx)
        self.check_drains(c)
        self.check_held(ctx, record)

    # -- invariants -------------------------------------------------------------------------

    def check_duplicates(self, ctx: _Pass) -> None:
        if ctx.plan is None or not ctx.launched:
            return
        out = ctx.out()
        # a spot interruption during the pass (after it began, before its listing) takes a
        # node out of the count too: its replacement is no duplicate
        counted = (
            ctx.gone
            | ctx.drains_asked
            | {a.node_id for a in (*ctx.plan.terminations, *ctx.plan.drains)}
        )
        out.update(
            nt
            for n, nt in ctx.alive_names.items()
            if n not in counted and self.cloud.instance_state(n) == "terminated"
        )
        gangs = gang_launches(ctx.plan)
        for nt, launched in ctx.launched.items():
            target = ctx.plan.targets.get(nt, 0)
            total = ctx.alive_before[nt] - out[nt] + launched
            if gangs.get(nt, ([], 0))[0]:
                # a gang goes on N free nodes of one type or on N new ones: beside live nodes
                # it cannot use (busy, or fewer than N free) the plan launches it whole, past
                # its target; what it launched is still bounded by the target
                total = launched
            if total > target:
                self.violate(
                    "duplicate-launch",
                    f"{nt}: {ctx.alive_before[nt]} live before the pass, {out[nt]} taken out "
                    f"(terminated, or planned to be), {launched} launched > the plan's target "
                    f"{target}",
                )

    def check_gangs(self, ctx: _Pass) -> None:
        """``partial-gang``: per node type, the pass launched whole gangs of its plan and at
        most its single nodes beside them."""
        if ctx.plan is None:
            return
        for nt, (gangs, singles) in gang_launches(ctx.plan).items():
            if gangs and not whole_gangs(ctx.launched[nt], gangs, singles):
                self.violate(
                    "partial-gang",
                    f"{nt}: {ctx.launched[nt]} launched for gangs {gangs} and {singles} single "
                    "node(s): part of a gang",
                )

    def check_drains(self, c: Controller) -> None:
        """``drain-forgotten``: a node shoal drained (the scheduler gives it no new work) is
        never ready capacity in the daemon's view, across restarts too."""
        for name in sorted(self.drained):
            tracked = c.tracker.get(name)
            ready = tracked is not None and tracked.state.value == "ready"
            if ready and name not in self.forgotten:  # reported once
                self.forgotten.add(name)
                self.violate("drain-forgotten", f"{name} is drained but counted as ready")

    def check_liveness(self) -> None:
        if self.t < FAULT_END:
            return
        alive = self.alive()
        full = {name for name, nt in self.types.items() if alive[name] >= nt.max_nodes}
        for job_id, shape, since in self.cluster.queued_jobs():
            if job_id in self.starved:
                continue
            nodes = self.job_nodes.get(job_id, 1)
            fits = [n for n, u in self.usable.items() if not shape.fits_in(u)]
            fits = [n for n in fits if shape.preemptible or not self.types[n].preemptible]
            fits = [n for n in fits if self.types[n].max_nodes >= nodes]
            if not fits:
                continue
            # a gang waits for room while no type it fits could launch all of it; a 1-node
            # job while its type (the first it fits in Toil's order) is full: no spill
            first = min(fits, key=lambda n: (self.types[n].shape.order, n))
            if all(n in full or alive[n] + nodes > self.types[n].max_nodes for n in fits) or (
                nodes == 1 and first in full
            ):
                self.paused[job_id] = self.t
            start = max(since, FAULT_END, self.paused.get(job_id, -1.0))
            if self.t - start > self.bound:
                self.starved.add(job_id)
                self.violate("starved", f"job {job_id} ({shape}) queued since t={since:.1f}")

    def check_end(self) -> None:
        left = self.cloud.worker_names()
        if left:
            states = ", ".join(f"{n} ({self.cloud.instance_state(n)})" for n in left)
            self.violate("not-quiescent", f"{len(left)} instance(s) left: {states}")


@contextlib.contextmanager
def _quiet() -> Iterator[None]:
    loggers = [logging.getLogger("shoal"), logging.getLogger("asyncio")]
    old = [logger.level for logger in loggers]
    for logger in loggers:
        logger.setLevel(logging.CRITICAL)
    try:
        yield
    finally:
        for logger, level in zip(loggers, old, strict=True):
            logger.setLevel(level)


def mode_kinds(mode: str) -> tuple[str, ...]:
    """The fault kinds a mode draws from by default (ha: push mode's but ``reload``)."""
    if mode not in MODES:
        raise ValueError(f"unknown mode {mode!r}; known: {', '.join(MODES)}")
    return {"power_save": POWER_KINDS, "ha": HA_KINDS}.get(mode, PUSH_KINDS)


def run_seed(
    seed: int,
    kinds: Iterable[str] | None = None,
    *,
    mode: str = "push",
    verbose: bool = False,
    sabotage: Sabotage | None = None,
    packing: str = "count",
) -> SeedResult:
    """One seed, in a fresh event loop and a fresh ``state_dir``. ``sabotage`` rewrites every
    plan (the harness's own tests plant bugs with it, to show each invariant can fail).
    ``mode``: ``push`` (shoal's planner, demand pushed), ``power_save`` (Slurm's power
    saving: ``powersave``) or ``ha`` (push mode with two daemons and one elector: ``ha``).
    ``packing``: the planner's ``scaler.packing``, ``count`` (Toil's, the seeds' default)
    or ``cost`` (the default wherever every node type has a price, as here)."""
    allowed = frozenset(mode_kinds(mode) if kinds is None else kinds)
    unknown = allowed - set(KINDS)
    if unknown:
        raise ValueError(f"unknown fault kinds {sorted(unknown)}; known: {', '.join(KINDS)}")
    memory = "/dev/shm" if os.path.isdir("/dev/shm") else None  # state files in memory
    with tempfile.TemporaryDirectory(prefix="shoal-chaos-", dir=memory) as tmp, _quiet():
        if mode == "power_save":
            from .powersave import PowerRun

            state = Path(tmp) / "state"
            run: _Run = PowerRun(seed, allowed, state, verbose, sabotage, mode)
        elif mode == "ha":
            from .ha import HaRun

            run = HaRun(seed, allowed, Path(tmp), verbose, sabotage)
        else:
            run = _Run(seed, allowed, Path(tmp), verbose, sabotage, mode)
        if packing != run.config.scaler.packing:
            scaler = run.config.scaler.model_copy(update={"packing": packing})
            run.config = run.config.model_copy(update={"scaler": scaler})
        random.seed(f"jitter-{seed}")  # the retry layer's jitter draws from the global stream
        _freeze_heap()
        _CURRENT.append(run)
        os.fsync = _fsync
        try:
            with asyncio.Runner(loop_factory=_seed_loop) as runner:
                result = runner.run(run.run())
            gc.collect()  # the dead processes' tasks, while their warnings are quiet
            return result
        except Exception:
            # the harness itself failed: a bug to fix here, reported with its seed
            run.violate("harness-error", traceback.format_exc())
            return run.result(0)
        finally:
            os.fsync = _real_fsync
            _CURRENT.pop()


class _IdleSelector(selectors.DefaultSelector):
    """A seed's loop does no I/O: the only file it watches is its own self-pipe, which no
    thread writes while the seed runs (``InlineExecutor``). Its poll with no wait, made on
    every turn that has callbacks ready, is skipped (a tenth of a power-saving seed's CPU);
    an idle loop polls as always, so a wake-up through the pipe is still seen."""

    def select(self, timeout: float | None = None) -> list[Any]:
        return [] if timeout == 0 else super().select(timeout)


def _seed_loop() -> asyncio.AbstractEventLoop:
    return asyncio.SelectorEventLoop(_IdleSelector())


def _freeze_heap() -> None:
    """Once per process: what is alive before the first seed (the modules, their caches)
    lives as long as the process, so the collector stops scanning it (``gc.freeze``); its
    full collections were a tenth of a seed's CPU."""
    global _FROZEN
    if not _FROZEN:
        _FROZEN = True
        gc.collect()
        gc.freeze()


_FROZEN = False


def run_seeds(
    seeds: Iterable[int],
    kinds: Iterable[str] | None = None,
    *,
    mode: str = "push",
    workers: int = 2,
    packing: str = "count",
) -> Iterator[SeedResult]:
    """Many seeds over ``workers`` processes, in seed order."""
    seeds = list(seeds)
    chosen = None if kinds is None else tuple(kinds)
    if workers <= 1:
        for s in seeds:
            yield run_seed(s, chosen, mode=mode, packing=packing)
        return
    import concurrent.futures
    import functools

    with concurrent.futures.ProcessPoolExecutor(workers) as pool:
        run = functools.partial(run_seed, kinds=chosen, mode=mode, packing=packing)
        yield from pool.map(run, seeds, chunksize=4)
