"""What goes wrong in one chaos run, drawn from its seed, and the provider wrapper that injects it.

``FaultPlan.draw(seed, kinds)`` picks a random mix of the fault kinds allowed (``KINDS``, or the
subset given to ``bench/chaos.py --faults``) and a rate for each. Every kind is something the
daemon meets in production:

=========  ======================================================================================
kind       what happens
=========  ======================================================================================
missing    a joined node drops out of the joined nodes of the pushed demand for a few seconds to a
           few minutes (Slurm's NOT_RESPONDING, a push that leaves it out); its jobs still run
stale      the source re-sends an old read: the last demand with an ``at`` older than ``max_age``
fail       the source cannot read its scheduler: ``DemandFailure`` for a while
lost       RunInstances takes effect and its response is lost (``lose_next_response``)
lag        the listing shows a new instance only after a lag (``listing_lag``, per seed)
capacity   an offering answers InsufficientInstanceCapacity for a while (``set_unavailable``)
throttle   a call is throttled before it takes effect (``throttle_next``)
spot       spot interruptions (``spot_interruption_rate``, drawn on the cloud's seeded clock)
slowterm   TerminateInstances takes seconds to minutes to take effect (the pass waits in it)
stop       someone stops a worker (``stop_instance``): it leaves the scheduler and the listing
hookerr    the drain hook fails with an error the daemon does not expect (not a DrainError)
crash      the process dies at a provider call, before the call takes effect or after it (the
           response is lost with the process); every in-memory object is thrown away and
           ``build_controller`` builds them again from ``state_dir`` and the cloud's tags.
           In power-saving mode also at a Slurm command and at a durable write (before the
           state file is replaced, or after), so hook requests in flight die with it; the
           daemon stays down for a while and the hooks spool what they cannot hand over
slurmerr   (power saving) slurmctld does not answer for a while: every squeue, sinfo and
           scontrol fails; commands otherwise take up to a few seconds
late       (power saving) the daemon took a hook's request but answered too late: the hook
           spools it as well, with the same request id
slowslurm  (power saving) an ``scontrol update`` takes effect at once but its answer comes
           seconds to a minute later: slurmctld acts on it (a node powered down is back in
           the pool and may be resumed again) while the daemon still waits in the call
stockout   (power saving) every offering of one node type has no capacity for a while: its
           resumes fail, their nodes are held DOWN and released when the backoff ends
flicker    (power saving) a node type's first offering has no capacity until a launch tries
           it: it answers InsufficientInstanceCapacity once and has capacity again right
           after (the daemon has it in backoff and launches on the next offering; a
           restarted daemon, whose backoff table was in memory, finds it available)
unlisted   a joined node drops out of DescribeInstances for ten seconds to five minutes (EC2's
           eventual consistency; ``SimulatedProvisioner.unlist``; a node at a time, three
           minutes after its last omission at the earliest, so no listing leaves it out for
           as long as the daemon remembers it, launch_ledger_ttl), and in half of them out of
           the pushed joined nodes as well, until a minute and a half as long again after
           the listings show it (NOT_RESPONDING): it runs on, and joins as before. In power
           saving the listings only: slurmctld's view of the node does not change
reload     the operator edits the config file and sends SIGHUP: the running daemon (in ha mode
           each live one: two hosts, one file each, edited alike) applies it as
           ``Service.reload`` does (``service.apply_config``), and a restart reads it. Each
           event changes one thing on top of the last: a node type's ``max`` one or two up or
           down (never below 1; not in power saving, where slurm.conf's node names, derived
           at a start, bound what Slurm resumes), ``scaler.interval``, ``debounce``,
           ``target_time`` or ``unneeded_time`` to another sane value, or puts the original
           config back; the last event, before the faults end, always puts it back
argchange  at a restart in the fault phase (a crash's or a kill's), with a per-seed chance, the
           file the new process reads has an argument of RunInstances that EC2 compares for
           idempotency changed: ``placement_group`` of every node type set to ``cluster`` or
           back to none (EC2's Placement; the same as a newer AMI an ``image_name`` pattern
           picks at a start, or changed tags). A launch the new process makes again with the
           dead one's client token (the intent replay, a Slurm resume's replay) is then
           answered ``IdempotentParameterMismatch``; the run counts those answers
           (``SeedResult.mismatches``). It bites only with restarts (``crash``)
store      (ha) a write of the shared state (the election's store, etcd's kv/txn) takes effect
           and its answer is lost (half of those seeds: the store then stays out of the
           daemon's reach a while, as a paused etcd), or fails before it takes effect (both
           raise etcd's ``EtcdError``), or the daemon making it dies (kill -9) just before
           or just after it takes effect (``ha.HaRun``, ``ha.draw_store_faults``)
=========  ======================================================================================

Windowed faults (missing, stale, fail, capacity, stop, unlisted) and reloads (``Reload``) are
drawn as timed events over the fault phase of the run (argchange: its odds per restart);
per-call faults (lost, throttle, slowterm, crash) are drawn by ``FaultyCloud`` at each
provider call from its own seeded stream, so a run replays exactly from its seed.
In power-saving mode a capacity window hits one offering (instance type, zone, capacity
type), so which offering a launch tries first depends on the backoff table.
"""

from __future__ import annotations

import random
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from shoal.providers.errors import IDEMPOTENT_PARAMETER_MISMATCH
from shoal.providers.simulated import SimulatedProvisioner

__all__ = [
    "HA_KINDS",
    "KINDS",
    "POWER_KINDS",
    "PUSH_KINDS",
    "Crash",
    "FaultPlan",
    "FaultyCloud",
    "Reload",
    "Window",
]

KINDS = (
    "missing",
    "stale",
    "fail",
    "lost",
    "lag",
    "capacity",
    "throttle",
    "spot",
    "slowterm",
    "stop",
    "crash",
    "hookerr",
    "slurmerr",
    "late",
    "slowslurm",
    "stockout",
    "flicker",
    "unlisted",
    "reload",
    "store",
    "argchange",
)
# drawn from their own streams (see FaultPlan.draw; ``store`` by ``ha.draw_store_faults``)
LATER = ("slowslurm", "stockout", "flicker")
OWN_STREAM = ("unlisted", "reload", "store", "argchange")
# the kinds each mode draws from (harness.MODES); a kind outside its mode has no effect there
PUSH_KINDS = (*KINDS[:12], "unlisted", "reload", "argchange")
# ha: push mode's, and faults at the shared state's writes
HA_KINDS = (*PUSH_KINDS, "store")
# power saving: Slurm decides, so the push's reads (missing, stale, fail), spot interruptions,
# stopped nodes and drain hooks do not apply; slurmctld's own faults do
POWER_KINDS = (
    "lost",
    "lag",
    "capacity",
    "throttle",
    "slowterm",
    "crash",
    "slurmerr",
    "late",
    "slowslurm",
    "stockout",
    "flicker",
    "unlisted",
    "reload",
    "argchange",
)


class Crash(BaseException):
    """The process dies here. A ``BaseException`` so no ``except Exception`` of the daemon can
    swallow it: it unwinds the pass as a kill -9 would end it."""


@dataclass(frozen=True, slots=True)
class Window:
    """A windowed fault: ``kind`` from ``start`` to ``end`` (seconds since the run began);
    ``pick`` chooses the node or offering it hits."""

    start: float
    end: float
    kind: str
    pick: float


@dataclass(frozen=True, slots=True)
class Reload:
    """A ``reload`` event: at ``at`` (seconds since the run began) the config file becomes
    the run's original config with ``changes`` made, and the daemon gets SIGHUP. A change is
    ``("max", i, delta)`` (the ``i``-th node type's ``max`` plus ``delta``, at least 1) or
    ``("scaler", knob, seconds)``; no change: the original config again."""

    at: float
    changes: tuple[tuple[str, int | str, float], ...]


# the scaler knobs a reload sets, and the values an operator would (seconds)
RELOAD_KNOBS = {
    "interval": (30.0, 60.0, 90.0, 120.0),
    "debounce": (0.5, 1.0, 5.0, 10.0),
    "target_time": (300.0, 600.0, 900.0, 1800.0),
    "unneeded_time": (60.0, 120.0, 300.0, 900.0),
}
RELOAD_TYPES = 3  # node types in the chaos config


def _reloads(
    rng: random.Random, per_hour: float, fault_end: float, maxes: bool = True
) -> tuple[Reload, ...]:
    """Reload events over [0, ``fault_end``), each one change on top of the last (or back to
    the original), the last one back to the original; without ``maxes``, no ``max`` changed
    (a scaler knob instead)."""
    rate = per_hour * rng.uniform(0.3, 2.0) / 3600.0
    out: list[Reload] = []
    changes: dict[tuple[str, int | str], float] = {}
    t = rng.expovariate(rate)
    while t < fault_end:
        draw = rng.random()
        if draw < 0.15:
            changes = {}
        elif draw < 0.6 and maxes:
            changes["max", rng.randrange(RELOAD_TYPES)] = rng.choice((-2, -1, 1, 2))
        else:
            knob = rng.choice(sorted(RELOAD_KNOBS))
            changes["scaler", knob] = rng.choice(RELOAD_KNOBS[knob])
        out.append(Reload(t, tuple((*key, v) for key, v in sorted(changes.items(), key=str))))
        t += rng.expovariate(rate)
    if out and out[-1].changes:
        out.append(Reload(rng.uniform(out[-1].at, fault_end), ()))
    return tuple(out)


def _windows(
    rng: random.Random, kind: str, per_hour: float, lo: float, hi: float, fault_end: float
) -> list[Window]:
    """Windows of ``kind`` over [0, ``fault_end``): a rate drawn around ``per_hour``, each
    window ``lo`` to ``hi`` seconds long (cut at ``fault_end``) with its ``pick``."""
    rate = per_hour * rng.uniform(0.3, 2.0) / 3600.0
    out = []
    t = rng.expovariate(rate)
    while t < fault_end:
        end = min(fault_end, t + rng.uniform(lo, hi))
        out.append(Window(t, end, kind, rng.random()))
        t += rng.expovariate(rate)
    return out


@dataclass(frozen=True, slots=True)
class FaultPlan:
    seed: int
    kinds: frozenset[str]  # the kinds on in this run
    windows: tuple[Window, ...]
    lost_p: float  # per RunInstances call
    throttle_p: float  # per call
    slowterm_p: float  # per TerminateInstances call
    slowterm_max: float  # seconds
    crash_every: float  # mean provider calls between crashes
    crash_after_p: float  # a crash comes after the call took effect
    restart_delay: tuple[float, float]  # seconds the daemon is down
    lag: float  # listing lag, seconds
    spot_rate: float  # interruptions per spot node-hour
    hookerr_p: float  # per drain
    late_p: float = 0.0  # per hook request the daemon took
    slowslurm_p: float = 0.0  # per scontrol update: its answer comes late
    reloads: tuple[Reload, ...] = ()
    argchange_p: float = 0.0  # per restart in the fault phase

    @classmethod
    def draw(
        cls, seed: int, allowed: frozenset[str], fault_end: float, power: bool = False
    ) -> FaultPlan:
        """A random mix of ``allowed`` kinds (each on with probability 0.6) and their rates;
        windows fall in [0, ``fault_end``). ``power`` (power-saving mode): capacity windows
        are more frequent and shorter, each on one offering, so a launch meets an offering in
        backoff and a replay after a restart meets it available again."""
        rng = random.Random(f"plan-{seed}")
        on = frozenset(
            k for k in KINDS if k not in LATER + OWN_STREAM and k in allowed and rng.random() < 0.6
        )
        # kinds added later draw from their own stream: the other draws of a seed stay as
        # they were (a seed named in bench/README.md replays the same faults)
        later = random.Random(f"plan-{seed}-later")
        on |= {k for k in LATER if k in allowed and later.random() < 0.6}
        windows: list[Window] = []
        spans = {
            "missing": (4.0, (5.0, 180.0)),  # per hour, duration bounds
            "stale": (1.5, (30.0, 600.0)),
            "fail": (1.5, (30.0, 600.0)),
            "capacity": (2.0, (60.0, 1200.0)),
            "stop": (0.5, (0.0, 0.0)),
            "slurmerr": (1.5, (10.0, 300.0)),
        }
        if power:
            spans["capacity"] = (6.0, (20.0, 300.0))
        for kind, (per_hour, (lo, hi)) in spans.items():
            if kind in on:
                windows += _windows(rng, kind, per_hour, lo, hi, fault_end)
        for kind, per_hour, (lo, hi) in (
            ("stockout", 1.0, (60.0, 900.0)),  # on one node type (``pick``)
            ("flicker", 3.0, (600.0, 1800.0)),  # until a launch tries it, at most this long
        ):
            if kind in on:
                windows += _windows(later, kind, per_hour, lo, hi, fault_end)
        # each kind added since has a stream of its own: the draws of every other kind of a
        # seed stay as they were
        for kind, per_hour, (lo, hi) in (("unlisted", 3.0, (10.0, 300.0)),):
            own = random.Random(f"plan-{seed}-{kind}")
            if kind not in allowed or own.random() >= 0.6:
                continue
            on |= {kind}
            windows += _windows(own, kind, per_hour, lo, hi, fault_end)
        windows.sort(key=lambda w: (w.start, w.kind))
        own = random.Random(f"plan-{seed}-reload")
        reloads: tuple[Reload, ...] = ()
        if "reload" in allowed and own.random() < 0.6:
            on |= {"reload"}
            reloads = _reloads(own, 1.5, fault_end, maxes=not power)
        own = random.Random(f"plan-{seed}-argchange")
        argchange_p = 0.0
        if "argchange" in allowed and own.random() < 0.6:
            on |= {"argchange"}
            argchange_p = own.uniform(0.3, 1.0)
        return cls(
            seed=seed,
            kinds=on,
            windows=tuple(windows),
            lost_p=rng.uniform(0.05, 0.5) if "lost" in on else 0.0,
            throttle_p=rng.uniform(0.02, 0.2) if "throttle" in on else 0.0,
            slowterm_p=rng.uniform(0.2, 1.0) if "slowterm" in on else 0.0,
            slowterm_max=rng.choice((5.0, 30.0, 120.0)),
            crash_every=rng.uniform(40.0, 400.0),
            crash_after_p=rng.uniform(0.3, 0.8),
            restart_delay=(1.0, rng.choice((5.0, 30.0, 120.0))),
            lag=rng.choice((5.0, 20.0, 60.0, 120.0)) if "lag" in on else 0.0,
            spot_rate=rng.uniform(0.2, 2.0) if "spot" in on else 0.0,
            hookerr_p=rng.uniform(0.1, 0.5) if "hookerr" in on else 0.0,
            late_p=rng.uniform(0.05, 0.5) if "late" in on else 0.0,
            slowslurm_p=later.uniform(0.1, 0.5) if "slowslurm" in on else 0.0,
            reloads=reloads,
            argchange_p=argchange_p,
        )

    def describe(self) -> str:
        parts = [f"kinds={','.join(k for k in KINDS if k in self.kinds) or '-'}"]
        if "lag" in self.kinds:
            parts.append(f"lag={self.lag:g}s")
        if "spot" in self.kinds:
            parts.append(f"spot={self.spot_rate:.2f}/h")
        if "lost" in self.kinds:
            parts.append(f"lost_p={self.lost_p:.2f}")
        if "throttle" in self.kinds:
            parts.append(f"throttle_p={self.throttle_p:.2f}")
        if "slowterm" in self.kinds:
            parts.append(f"slowterm_p={self.slowterm_p:.2f}<= {self.slowterm_max:g}s")
        if "crash" in self.kinds:
            parts.append(f"crash_every~{self.crash_every:.0f} calls")
        if "slowslurm" in self.kinds:
            parts.append(f"slowslurm_p={self.slowslurm_p:.2f}")
        if self.reloads:
            parts.append(f"reloads={len(self.reloads)}")
        if "argchange" in self.kinds:
            parts.append(f"argchange_p={self.argchange_p:.2f}")
        parts.append(f"windows={len(self.windows)}")
        return " ".join(parts)


class FaultyCloud:
    """Wraps the simulated cloud's primitives on the instance (``addNodes``, ``terminateNodes``
    and ``getProvisionedWorkers`` are the base class's and call them), to inject the per-call
    faults and let the harness watch every call take effect.

    ``observer(operation, phase, args, result)`` is called with ``phase`` ``"before"`` (the
    call is about to take effect: raising there stops it) and ``"after"`` (it took effect;
    ``result`` is what the cloud answered, or the exception it raised).
    """

    WRAPPED = (
        "launch_offering",
        "terminate_instances",
        "list_instances",
        "describe_instance_types",
    )

    def __init__(
        self,
        cloud: SimulatedProvisioner,
        plan: FaultPlan,
        observer: Callable[[str, str, Any, Any], None],
        log: Callable[[str], None],
    ) -> None:
        self.cloud = cloud
        self.plan = plan
        self.observer = observer
        self.log = log
        self.rng = random.Random(f"calls-{plan.seed}")
        self.calls = 0
        self.crash_at: int | None = None
        self.mismatches = 0  # RunInstances answered IdempotentParameterMismatch
        self.armed = False  # crashes only while armed (the fault phase)
        self.dead = False
        # called as the process dies (power-saving mode: stops its other tasks at once, as
        # kill -9 does, so none of them acts after the death)
        self.on_death: Callable[[], None] | None = None
        for name in self.WRAPPED:
            setattr(cloud, name, self._wrap(name, getattr(cloud, name)))

    def arm(self, on: bool) -> None:
        """Crashes on (drawing the next one) or off."""
        self.armed = on and "crash" in self.plan.kinds
        self.crash_at = None
        if self.armed:
            self.crash_at = self.calls + 1 + int(self.rng.expovariate(1.0 / self.plan.crash_every))

    def _wrap(self, name: str, call: Callable[..., Any]) -> Callable[..., Any]:
        clock = self.cloud.clock
        op = {
            "launch_offering": "RunInstances",
            "terminate_instances": "TerminateInstances",
            "list_instances": "DescribeInstances",
            "describe_instance_types": "DescribeInstanceTypes",
        }[name]

        async def wrapped(*args: Any) -> Any:
            arg = args[0] if args else None
            after = self.point(op, op != "DescribeInstances")
            if self.rng.random() < self.plan.throttle_p:
                self.cloud.throttle_next(1, op)
                self.log(f"throttle {op}")
            if op == "RunInstances" and self.rng.random() < self.plan.lost_p:
                self.cloud.lose_next_response(1, op)
                self.log("lose the response of RunInstances")
            if op == "TerminateInstances" and self.rng.random() < self.plan.slowterm_p:
                delay = self.rng.uniform(1.0, self.plan.slowterm_max)
                self.log(f"slow TerminateInstances: {delay:.0f}s")
                await clock.sleep(delay)
                if self.dead:
                    raise Crash(f"{op} by a dead process")
            self.observer(op, "before", arg, None)
            try:
                result = await call(*args)
            except Exception as exc:
                if getattr(exc, "code", None) == IDEMPOTENT_PARAMETER_MISMATCH:
                    self.mismatches += 1
                    self.log(f"{op} {arg.client_token}: {IDEMPOTENT_PARAMETER_MISMATCH}")
                self.observer(op, "after", arg, exc)
                if after:
                    self._die(f"crash after {op} failed (call {self.calls})")
                raise
            self.observer(op, "after", arg, result)
            if after:
                self._die(f"crash after {op} took effect (call {self.calls})")
            return result

        return wrapped

    def crash_soon(self, within: int) -> None:
        """Bring the next crash forward to one of the next ``within`` crash points (when
        crashes are on): the moments right after an action are where restarts find bugs."""
        if self.armed and self.crash_at is not None:
            self.crash_at = min(self.crash_at, self.calls + 1 + self.rng.randrange(within))

    def point(self, op: str, may_take_effect: bool = True) -> bool:
        """A crash point: raises Crash when the process dies here before ``op`` takes effect
        (or is made by a dead process); True when it dies right after ``op`` took effect."""
        if self.dead:
            raise Crash(f"{op} by a dead process")
        self.calls += 1
        crash = self.armed and self.crash_at is not None and self.calls >= self.crash_at
        after = crash and may_take_effect and self.rng.random() < self.plan.crash_after_p
        if crash and not after:
            self._die(f"crash before {op} (call {self.calls})")
        return after

    def die_after(self, op: str) -> None:
        self._die(f"crash after {op} took effect (call {self.calls})")

    def _die(self, why: str) -> None:
        self.dead = True
        self.log(why)
        if self.on_death is not None:
            self.on_death()
        raise Crash(why)
