"""The chaos harness with two daemons and one elector (``run_seed(seed, mode="ha")``, issue 21).

Push mode's run (``harness``), with two daemons, ``a`` and ``b``, for the one simulated cloud:
each has its own controller (``service.build_controller``, as ``shoal run`` builds it), its
own ``state_dir`` (locked only) and its own elector on one ``daemon.leader.memory.MemoryElection``
on the virtual clock (TTL ``TTL``), and both keep their durable state (the launch ledger) in
that election's store (``leader.state.state_backend``: ``MemoryStateBackend``, fenced by the
term's epoch as etcd's txn is). Only the daemon whose elector leads acts, through the
production code of ``Service._act``: a term begins with ``service.start_term`` (the last
leader's state read into a fresh tracker; a fenced write steps the daemon down) and a
reconcile (``Controller.run``'s first step), the harness runs its passes, and a pass in
flight when the term ends gets ``service.term_grace`` (``Controller.stop``: launch nothing
new; half the lease's margin to finish), then is cancelled. The demand goes to the leader
(the pusher's retry after a follower's 503).

Faults (``faults.HA_KINDS``): push mode's (a crash at a provider call kills the daemon
making it; ``reload``: each live daemon gets the edit and its own SIGHUP, ``_boot``;
``argchange``: the file a restarted daemon reads, the other one keeps what it applied), and
from this module's own streams, in the fault phase (``bench/chaos.py
--faults`` selects ``store``; partitions are always drawn, kills with ``crash``):

``partition``
    (stream ``ha-<seed>``) one daemon (the leader, mostly) cannot reach the election for one
    to four TTLs: its renewals fail, it must step down on its local deadline, and the other
    one leads.
``kill``
    (the same stream, with ``crash``) a daemon, leader or follower, dies at once (kill -9:
    its renewals stop, its lease runs out on the store's side) and restarts a few seconds to
    minutes later.
``store``
    (its own stream, ``ha-store-<seed>``: ``draw_store_faults``) at a write of the shared
    state (``StateBackend.save``: a launch intent before RunInstances, the term's
    confirmation before a termination or a tag, the ledger's background writes) made in a
    term, with a per-seed probability per write: the write takes effect and its answer is
    lost, or it fails before it takes effect, both raising what the etcd backend raises on
    a timeout (``EtcdError``: no member answered), so the daemon's own handling runs (a
    launch not journaled is not made); in half the seeds a lost answer comes with the store
    out of that daemon's reach for one to four TTLs (a paused etcd: the write applied, the
    next ones and the renewals fail, another daemon leads and reads what it applied). Or
    the daemon making the write dies (kill -9, as ``kill``) just before or just after it
    takes effect, and restarts as kills do. Between a launch's intent in the store and its
    RunInstances is where a new leader has to make the launch (``Controller._replay_intents``).

Invariants: push mode's, plus

``ha-overlap``
    At most one daemon actuates in any epoch, and epochs only move forward: every cloud
    actuation (RunInstances, TerminateInstances, a tag or an untag) is recorded with the
    daemon making it and the epoch of its term; an actuation whose epoch is older than one
    already acted in means two daemons acted in overlapping leadership.
``acted-after-lease``
    A daemon acts only while the election's ground truth (the store's key and lease, as the
    store's clock says) says it holds the lease of its epoch: never after its lease could
    have passed to another daemon, never while the other one holds the key.
``held-for-nothing``
    Capacity the daemon counts exists. A pass whose plan's target for a node type is above
    what the cloud has of it (live, launches in flight included, the nodes ``unlisted``
    hides too; less what the pass takes out) and that asks RunInstances for none of it
    counts nodes that do not exist (the planner launches ``target - current``). Passes in a
    row doing so for longer than ``3 * interval`` are a violation, except where the daemon
    cannot know better, for ``launch_ledger_ttl`` (what the ledger keeps an unseen launch):
    after a RunInstances of that type raised (throttled, no capacity, its answer lost: its
    placeholders wait for a listing or the TTL), and after a node of that type left the
    cloud by an interruption or a stop (perhaps before a listing showed it: its ledger
    entry waits the TTL), and while an intent with no answer is for more nodes than the
    plan is short of (made again only once wanted whole). A pass on stale demand
    (withheld), or with a failed write of the
    store in it (faulted, fenced, out of reach: an intent not written is a launch not
    made), starts the streaks again. Without the
    intent replay, a new leader holds the last one's unsent launch (its intent in the store,
    no answer: the daemon died before RunInstances, or the store lost the write's answer)
    as booting until the TTL, and queued jobs wait for it; ``starved``, whose bound allows
    the TTL (and runs from ``FAULT_END`` only), does not see that, this does
    (``test_chaos``: seed 0 with the replay planted away). Seeds 0-299: clean.

Nothing is excused: a new leader sees the last one's launches in flight in the shared state,
so a duplicate launch or a type over its max is reported as in push mode.
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import contextvars
import dataclasses
import functools
import json
import random
import weakref
from collections.abc import Awaitable, Callable, Coroutine, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from shoal.daemon.config import ShoalConfig
from shoal.daemon.durable import StateBackend
from shoal.daemon.leader.etcd import EtcdError
from shoal.daemon.leader.memory import MemoryElection, MemoryElector
from shoal.daemon.leader.state import state_backend
from shoal.daemon.loop import Controller, PassRecord
from shoal.daemon.service import start_term, term_grace
from shoal.daemon.simulate.engine import EPOCH
from shoal.scaler.model import CapacityType

from .faults import Crash, Window
from .harness import FAULT_END, _DrainHook, _Pass, _Run

__all__ = ["NAMES", "TTL", "HaRun", "SteppedDown", "StoreFaults", "draw_store_faults"]

TTL = 10.0  # the lease, seconds (the ha section's default)
NAMES = ("a", "b")
SPOT = CapacityType.SPOT
POLL = 1.0  # while nobody acts, the harness looks again this often (campaigns run meanwhile)

# Which daemon's process a task belongs to (its creator's, at creation): a kill -9 cancels
# the dead daemon's tasks and none of the other's (Task.get_context is 3.12's).
_OWNER: contextvars.ContextVar[str] = contextvars.ContextVar("ha_owner", default="")
_OWNERS: weakref.WeakKeyDictionary[asyncio.Task[Any], str] = weakref.WeakKeyDictionary()


def _task_factory(
    loop: asyncio.AbstractEventLoop, coro: Any, context: contextvars.Context | None = None
) -> asyncio.Task[Any]:
    task = asyncio.Task(coro, loop=loop, context=context)
    _OWNERS[task] = context.get(_OWNER, "") if context is not None else _OWNER.get()
    return task


@contextlib.contextmanager
def _owned(name: str) -> Iterator[None]:
    token = _OWNER.set(name)
    try:
        yield
    finally:
        _OWNER.reset(token)


def _spawn(name: str, coro: Coroutine[Any, Any, None], task_name: str) -> asyncio.Task[None]:
    context = contextvars.copy_context()
    context.run(_OWNER.set, name)
    return asyncio.get_running_loop().create_task(coro, name=task_name, context=context)


class SteppedDown(Crash):
    """A pass cancelled because its daemon's term ended and the grace ran out: the daemon
    lives on (a ``Crash`` so the harness's pass ends the same way)."""


@dataclass(eq=False)
class _Daemon:
    name: str
    state_dir: Path
    elector: MemoryElector | None = None
    controller: Controller | None = None
    campaign: asyncio.Task[None] | None = None
    listeners: list[Any] = field(default_factory=list)  # its subscriptions on the cloud
    epoch: int | None = None  # the term it acts in (reconciled), None: it does not act
    down_until: float | None = None  # dead until then (seconds since the run began)


def draw_ha_windows(seed: int, crashes: bool) -> list[Window]:
    """Partitions (and kills, with ``crash``) over the fault phase, from their own stream
    (push mode's draws of the seed stay as they are)."""
    rng = random.Random(f"ha-{seed}")
    out: list[Window] = []
    for kind, per_hour, (lo, hi) in (("partition", 2.0, (TTL, 4 * TTL)), ("kill", 1.0, (0, 0))):
        if kind == "kill" and not crashes:
            continue
        rate = per_hour * rng.uniform(0.5, 2.0) / 3600.0
        t = rng.expovariate(rate)
        while t < FAULT_END:
            out.append(Window(t, min(FAULT_END, t + rng.uniform(lo, hi)), kind, rng.random()))
            t += rng.expovariate(rate)
    return out


@dataclass(slots=True)
class StoreFaults:
    """The ``store`` faults of a seed: per write made in a term, one of ``KINDS`` with
    probability ``p`` (weighted by ``weights``), drawn from ``rng`` write by write."""

    KINDS = ("lost", "fail", "die-before", "die-after")

    p: float
    weights: tuple[float, ...]
    paused: bool  # a lost answer comes with the store out of the daemon's reach a while
    rng: random.Random

    def draw(self) -> str | None:
        if self.rng.random() >= self.p:
            return None
        return self.rng.choices(self.KINDS, self.weights)[0]


def draw_store_faults(seed: int, kinds: frozenset[str]) -> StoreFaults | None:
    """The ``store`` faults of ``seed`` (on in 60% of the seeds that allow them), from their
    own stream: the seed's other draws stay as they were."""
    rng = random.Random(f"ha-store-{seed}")
    if "store" not in kinds or rng.random() >= 0.6:
        return None
    weights = tuple(rng.uniform(0.2, 1.0) for _ in StoreFaults.KINDS)
    return StoreFaults(rng.uniform(0.02, 0.2), weights, rng.random() < 0.5, rng)


class _FaultyStore:
    """A daemon's ``StateBackend`` (the election's store) with the ``store`` faults at its
    writes (``HaRun.store_fault``); its reads as they are."""

    def __init__(self, run: HaRun, d: _Daemon, backend: StateBackend) -> None:
        self.run, self.d, self.backend = run, d, backend

    async def load(self) -> dict[str, Any] | None:
        return await self.backend.load()

    async def save(self, snapshot: dict[str, Any], epoch: int | None) -> None:
        try:
            await self._save(snapshot, epoch)
        except Exception:  # faulted, fenced, out of reach: a launch it was for is not made
            self.run.write_failed = True
            raise

    async def _save(self, snapshot: dict[str, Any], epoch: int | None) -> None:
        fault = self.run.store_fault(self.d, epoch)
        if fault == "fail":
            raise EtcdError("kv/txn: no member answered in time (chaos: before it applied)")
        if fault == "die-before":
            self.run.die_at_write(self.d, "before")
        await self.backend.save(snapshot, epoch)
        if fault == "lost":
            self.run.answer_lost(self.d)
            raise EtcdError("kv/txn: no member answered in time (chaos: applied, answer lost)")
        if fault == "die-after":
            self.run.die_at_write(self.d, "after")


class HaRun(_Run):
    def __init__(
        self, seed: int, kinds: frozenset[str], state_dir: Path, *rest: Any, mode: str = "ha"
    ) -> None:
        """``rest``: the base run's ``verbose`` and ``sabotage``; the base run is push mode's
        (its config, its tight capacity), reported as ``mode``."""
        self.daemons = {n: _Daemon(n, state_dir / n) for n in NAMES}
        self._next_poll = 0.0
        super().__init__(seed, kinds, state_dir, *rest, mode="push")
        self.mode = mode
        windows = (*self.plan.windows, *draw_ha_windows(seed, "crash" in self.plan.kinds))
        self.store_faults = draw_store_faults(seed, kinds)
        self.plan = dataclasses.replace(
            self.plan,
            windows=tuple(sorted(windows, key=lambda w: (w.start, w.kind))),
            kinds=self.plan.kinds | ({"store"} if self.store_faults else set()),
        )
        self.election: MemoryElection | None = None
        self.actor: _Daemon | None = None  # whose code makes the cloud calls now
        self.stepped_down = False
        self.acted: list[tuple[float, str, int]] = []  # (t, daemon, epoch) per actuation
        self.max_epoch = 0
        self.turn = 0
        self.asked: collections.Counter[str] = collections.Counter()  # RunInstances, this pass
        self.unsure_until: dict[
            str, float
        ] = {}  # node type -> end of its excuse (held-for-nothing)
        self.held_since: dict[str, float] = {}  # node type -> first pass of its streak
        self.launched_as: dict[str, str] = {}  # instance -> node type
        self.write_failed = False  # a store write failed since the last pass's check

    # -- who acts: the base run reads ``controller`` and ``restart_at`` ---------------------

    def _acting(self) -> list[_Daemon]:
        return [
            d
            for d in self.daemons.values()
            if d.controller is not None
            and d.elector is not None
            and d.epoch is not None
            and d.elector.epoch == d.epoch
        ]

    @property  # type: ignore[override]
    def controller(self) -> Controller | None:
        """The acting daemon's controller; None while nobody acts. Two daemons that both
        believe they lead (a broken guard) take turns, pass by pass: both act."""
        acting = self._acting()
        if not acting:
            return None
        d = acting[self.turn % len(acting)]
        self.actor = d
        return d.controller

    @controller.setter
    def controller(self, value: Controller | None) -> None:
        pass  # the daemons' own; set by start_daemon and bury

    @property  # type: ignore[override]
    def restart_at(self) -> float:
        downs = [d.down_until for d in self.daemons.values() if d.down_until is not None]
        return min([self._next_poll, *downs])

    @restart_at.setter
    def restart_at(self, value: float) -> None:
        pass  # each daemon's own (``down_until``) and the poll

    # -- the daemons' lives ---------------------------------------------------------------

    async def start_daemon(self, crashes: bool = True) -> bool:
        """The first call builds the election and starts both daemons; every later one
        restarts the dead daemons whose time has come and begins the term of a daemon that
        leads but does not act yet."""
        self._next_poll = self.t + POLL
        if self.election is None:
            self.election = MemoryElection(self.clock, TTL)
            for d in self.daemons.values():
                await self._boot(d, crashes=False)
            await self.clock.settle()
            await self.tend()
            if not crashes:
                self.faulty.arm(True)
            return True
        await self.tend()
        return self.controller is not None

    async def tend(self) -> None:
        for d in self.daemons.values():
            if d.down_until is not None and self.t >= d.down_until:
                await self._boot(d, crashes=True)
        for d in self.daemons.values():
            leads = d.elector is not None and d.elector.is_leader
            if d.controller is not None and leads and d.elector.epoch != d.epoch:
                await self._begin_term(d)

    async def _boot(self, d: _Daemon, crashes: bool) -> None:
        """A new process for ``d``: its controller (from its config and ``state_dir``), its
        elector, its campaign. Its controller acts only once it leads (``_begin_term``)."""
        assert self.election is not None
        d.down_until, d.epoch = None, None
        self.actor = d
        if crashes:  # a restart
            self.change_args()
        elector = self.election.elector(d.name)
        config = self.config  # the file as the process reads it
        own = config.model_copy(update={"state_dir": d.state_dir})
        try:
            with _owned(d.name):
                backend = state_backend(elector, own)  # the election's store, fenced
                assert backend is not None
                backend = _FaultyStore(self, d, backend)
                controller = await self.new_controller(crashes, backend, own)
        except Crash:
            self._die(d)
            return
        except Exception as exc:  # e.g. the catalogue's retries ran out: exit 1, restarted
            self.note(f"daemon {d.name} failed to start ({exc!r})")
            self._die(d)
            return
        ours = set(map(id, self.listeners))
        # a process hears of its own calls only: the other daemon's events are not its
        d.listeners = [
            functools.partial(self._hear, d, x)
            for x in self.cloud.fleet._listeners
            if id(x) not in ours
        ]
        d.controller = controller
        self._resubscribe()
        controller.executor.drain_hook = controller.executor.undrain_hook = _DrainHook(self)
        original = controller.run_pass
        controller.run_pass = lambda: self._gated_pass(d, original)  # type: ignore[method-assign]
        d.elector = elector
        d.campaign = _spawn(d.name, d.elector.campaign(), f"ha-campaign-{d.name}")
        d.campaign.add_done_callback(lambda t: t.cancelled() or self._campaign_again(d))
        if self.plan.reloads:  # the operator's SIGHUPs to this process, dying with it
            _spawn(d.name, self._sighups(d, controller, config), f"ha-sighup-{d.name}")
        self.note(f"daemon {d.name} started (incarnation {self.incarnation})")

    async def _sighups(self, d: _Daemon, c: Controller, applied: ShoalConfig) -> None:
        """``sighups`` in ``d``'s process: a crash at a cloud call of its reload (the policy's
        catalogue) kills ``d``, as ``die_at_write`` does: its own pass in flight unwinds and
        is buried, else it dies at once."""
        try:
            await self.sighups(c, applied, f"daemon {d.name}")
        except Crash as exc:
            # dead already, or the other daemon died at a call and is not buried yet (the
            # call refused as "by a dead process": this reload is cut short, d lives on)
            if d.controller is not c or "by a dead process" in str(exc):
                return
            if self.ctx is not None and self.actor is d:
                self._cancel_tasks(d)
            else:
                self._die(d)

    def _hear(self, d: _Daemon, listener: Callable[[Any], None], event: Any) -> None:
        if self.actor is d:
            listener(event)

    def _campaign_again(self, d: _Daemon) -> None:
        """``Service._lead``: after a term ends, campaign again (the task that waits for the
        loss is this one's successor)."""
        elector = d.elector
        if elector is None or d.controller is None:
            return

        async def next_term() -> None:
            await elector.lost()
            await elector.campaign()

        d.campaign = _spawn(d.name, next_term(), f"ha-campaign-{d.name}")
        d.campaign.add_done_callback(lambda t: t.cancelled() or self._campaign_again(d))

    def _resubscribe(self) -> None:
        """The cloud's own listeners and those of every live daemon (``new_controller``
        reset them to the cloud's own, as for one process)."""
        live = [x for d in self.daemons.values() if d.controller is not None for x in d.listeners]
        self.cloud.fleet._listeners[:] = [*self.listeners, *live]

    async def _begin_term(self, d: _Daemon) -> None:
        """``Service._act``'s start (``service.start_term``: the last leader's state read from
        the election's store, fenced writes from now on, resume), then ``Controller.run``'s
        first step, the reconcile; then the harness runs its passes."""
        assert d.controller is not None and d.elector is not None
        self.actor = d
        try:
            with _owned(d.name):
                epoch = await self.clock.run_until(start_term(d.elector, d.controller, self.clock))
                self.t = max(self.t, self.clock.now() - EPOCH)
                if epoch is None:
                    self.note(f"{d.name}: the term did not begin (state unread): campaigns again")
                    return
                self.restored(d.controller)  # the tracker read again from the last leader's
                await self.clock.run_until(d.controller.reconcile())
        except (Crash, asyncio.CancelledError) as exc:
            if d.controller is not None:  # a crash at a cloud call (a death at a store write:
                if not isinstance(exc, Crash):  # dead already, its tasks cancelled)
                    raise
                self._die(d)
            await self.clock.settle()
            return
        except Exception as exc:
            self.note(f"{d.name}: reconcile failed ({exc!r}): again soon")
            return
        d.epoch = epoch
        self.max_epoch = max(self.max_epoch, epoch or 0)
        self.note(f"daemon {d.name} leads (epoch {epoch})")
        self.push(force=True)

    async def _gated_pass(
        self, d: _Daemon, run_pass: Callable[[], Awaitable[PassRecord]]
    ) -> PassRecord:
        """One pass while the term lasts (``Service._act``): when the term ends during it,
        ``Controller.stop`` (nothing new launched) and half the margin to finish, then the
        pass is cancelled."""
        assert d.elector is not None and d.controller is not None
        elector, controller = d.elector, d.controller
        run = asyncio.ensure_future(run_pass())
        lost = asyncio.ensure_future(elector.lost())
        try:
            await asyncio.wait({run, lost}, return_when=asyncio.FIRST_COMPLETED)
            if not run.done():
                await term_grace(elector, controller, self.clock, run)
            if not run.done():
                run.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await run
                self.stepped_down = True
                raise SteppedDown(f"{d.name}: term ended, pass cancelled after the grace")
            return run.result()
        finally:
            lost.cancel()

    async def one_pass(self, c: Controller) -> None:
        await self.tend()
        c2 = self.controller
        if c2 is None:
            return
        self.turn += 1
        assert self.actor is not None
        with _owned(self.actor.name):
            await super().one_pass(c2)

    def pass_ended(self) -> bool:
        return self.faulty.dead or self.stepped_down  # died, or its term ended (``SteppedDown``)

    async def bury(self) -> None:
        """A pass ended by a ``Crash``: its daemon died (``FaultyCloud``), or stepped down
        and had its pass cancelled (``SteppedDown``: it lives on and campaigns)."""
        d = self.actor
        assert d is not None
        if self.stepped_down:
            self.stepped_down = False
            self.note(f"daemon {d.name} stepped down in a pass: the pass was cancelled")
            d.epoch = None
            return
        self._die(d)
        await self.clock.settle()

    def _die(self, d: _Daemon) -> None:
        """kill -9 of ``d``: its renewals stop without a word (its lease runs out on the
        store), every task of its process is cancelled; the other daemon lives on."""
        self.crashes += 1
        if d.elector is not None:
            d.elector.crash()
        d.controller, d.elector, d.campaign, d.epoch = None, None, None, None
        self._cancel_tasks(d)
        self._resubscribe()
        self.faulty.dead = False  # the other process's calls go through
        rng = random.Random(f"restart-{self.seed}-{self.crashes}")
        d.down_until = self.clock.now() - EPOCH + rng.uniform(*self.plan.restart_delay)
        self.note(f"daemon {d.name} down until t={d.down_until:.1f}")

    @staticmethod
    def _cancel_tasks(d: _Daemon) -> None:
        """Every task of ``d``'s process but the current one."""
        me = asyncio.current_task()
        for task in asyncio.all_tasks():
            if task is not me and _OWNERS.get(task) == d.name:
                task.cancel()

    # -- the ha faults ----------------------------------------------------------------------

    def store_fault(self, d: _Daemon, epoch: int | None) -> str | None:
        """The ``store`` fault at a write of ``d``'s, if any: only in the fault phase, at a
        write a term makes (etcd's backend refuses one without an epoch before any call), by
        a live daemon."""
        faults = self.store_faults
        if (
            faults is None
            or epoch is None
            or d.controller is None
            or self.faulty.dead
            or self.clock.now() - EPOCH >= FAULT_END
        ):
            return None
        fault = faults.draw()
        if fault is not None:
            self.note(f"store fault at a write of {d.name} (epoch {epoch}): {fault}")
        return fault

    def answer_lost(self, d: _Daemon) -> None:
        """A write's answer lost; with ``paused``, the store stays out of ``d``'s reach for
        one to four TTLs (its renewals fail too: it steps down, another daemon leads)."""
        faults = self.store_faults
        if faults is None or not faults.paused or self.election is None:
            return
        election, name = self.election, d.name
        until = faults.rng.uniform(TTL, 4 * TTL)
        election.partition(name)
        self.note(f"{name} cut off from the store for {until:.1f}s (paused)")

        async def heal() -> None:
            await self.clock.sleep(until)
            election.heal(name)
            self.note(f"{name} reaches the store again (t={self.clock.now() - EPOCH:.1f})")

        _spawn("", heal(), f"ha-heal-{name}")  # nobody's: a death of ``d`` does not stop it

    def die_at_write(self, d: _Daemon, when: str) -> None:
        """kill -9 of ``d`` at its write (``when`` it takes effect): in its own pass the
        pass unwinds and ``bury`` buries it, as a crash at a cloud call; elsewhere (a write in
        the background, in the other daemon's pass or between passes) it dies at once."""
        why = f"kill -9 of daemon {d.name} {when} its store write"
        self.note(why)
        if self.ctx is not None and self.actor is d:
            self.faulty.dead = True
            self._cancel_tasks(d)
        else:
            self._die(d)
        raise Crash(why)

    def _pick(self, w: Window) -> _Daemon | None:
        live = [d for d in self.daemons.values() if d.controller is not None]
        leaders = [d for d in live if d.elector is not None and d.elector.is_leader]
        pool = leaders if leaders and w.pick < 0.7 else live
        return pool[int(w.pick * len(pool)) % len(pool)] if pool else None

    def open_window(self, w: Any, ends: list[tuple[float, str, str]]) -> None:
        if w.kind == "partition":
            d = self._pick(w)
            if d is not None and self.election is not None:
                self.election.partition(d.name)
                ends.append((w.end, w.kind, d.name))
                self.note(f"{d.name} cut off from the election until t={w.end:.1f}")
        elif w.kind == "kill":
            d = self._pick(w)
            if d is not None:
                self.note(f"kill -9 of daemon {d.name}")
                self._die(d)
        else:
            super().open_window(w, ends)

    def close_window(self, end: tuple[float, str, str]) -> None:
        if end[1] == "partition":
            if self.election is not None:
                self.election.heal(end[2])
            self.note(f"{end[2]} reaches the election again")
        else:
            super().close_window(end)

    # -- the ha invariants ------------------------------------------------------------------

    def actuation(self, what: str) -> None:
        """Checks one cloud actuation against the election's ground truth."""
        d = self.actor
        if d is None or self.election is None:
            return
        epoch = d.epoch
        hold = self.election._live()  # the store's truth, on its own clock
        self.acted.append((self.t, d.name, epoch or 0))
        if epoch is None or hold is None or hold.holder.name != d.name or hold.lease != epoch:
            holder = "nobody" if hold is None else f"{hold.holder.name} (epoch {hold.lease})"
            self.violate(
                "acted-after-lease",
                f"daemon {d.name} (epoch {epoch}) {what} while the store says {holder} holds",
            )
        if epoch is not None and epoch < self.max_epoch:
            self.violate(
                "ha-overlap",
                f"daemon {d.name} {what} in epoch {epoch} after epoch {self.max_epoch} acted",
            )
        self.max_epoch = max(self.max_epoch, epoch or 0)

    def observe_call(self, op: str, phase: str, arg: Any, result: Any) -> None:
        if phase == "before" and op in ("RunInstances", "TerminateInstances"):
            self.actuation(op)
        nt = None
        if op == "RunInstances":
            offering = arg.offering
            nt = self.type_of.get((offering.instance_type, offering.capacity_type is SPOT))
            if phase == "before":
                self.asked[nt or ""] += 1
            elif isinstance(result, BaseException):  # throttled, no capacity, answer lost
                self.unsure(nt)
        super().observe_call(op, phase, arg, result)
        if phase == "after" and nt:  # what it launched: an interrupted node's type, later
            self.launched_as.update(
                (n, nt) for n in self.cloud.worker_names() if n not in self._names_before
            )

    def unsure(self, nt: str | None) -> None:
        """The daemon may count nodes of ``nt`` the cloud does not have until the ledger's
        TTL (``held-for-nothing``'s excuses)."""
        if nt:
            self.unsure_until[nt] = self.clock.now() + self.config.scaler.launch_ledger_ttl

    def forget(self, name: str, *, shoal: bool = False) -> None:
        if not shoal:  # interrupted or stopped: perhaps before a listing showed it
            self.unsure(self.launched_as.get(name))
        super().forget(name, shoal=shoal)

    def check_held(self, ctx: _Pass, record: PassRecord) -> None:
        """``held-for-nothing``: a pass whose plan wants more nodes of a type than the cloud
        has and asks for none counts nodes that do not exist; passes in a row doing so
        longer than ``3 * interval`` (none of its type's excuses on) are a violation. A pass
        that may not launch (stale demand: withheld) or where a store write failed (an
        intent not written is a launch not made) says nothing: the streaks start again."""
        asked, self.asked = self.asked, collections.Counter()
        failed, self.write_failed = self.write_failed, False
        if ctx.plan is None or ctx.stale or record.reason or failed:
            self.held_since.clear()
            return
        now = self.clock.now()
        have = ctx.alive_before - ctx.out()
        have.update(self.node_type(n) for n in self.hidden())  # the daemon keeps them
        limit = 3 * self.config.scaler.interval
        for nt, target in sorted(ctx.plan.targets.items()):
            if (
                asked[nt]
                or have[nt] >= target
                or self.unsure_until.get(nt, -1.0) > now
                or self.held_whole(nt, target - have[nt], now)
            ):
                self.held_since.pop(nt, None)
                continue
            since = self.held_since.setdefault(nt, self.t)
            if self.t - since > limit:
                self.held_since.pop(nt)  # reported once a streak
                self.violate(
                    "held-for-nothing",
                    f"{nt}: the plans since t={since:.1f} want {target}, the cloud has "
                    f"{have[nt]} and none asks for more",
                )

    def held_whole(self, nt: str, short: int, now: float) -> bool:
        """Whether the shared store holds an intent with no answer (the daemon died before
        its RunInstances, or before the answer was written) for more ``nt`` nodes than the
        plan is short of, within the ledger's TTL: the daemon cannot tell whether it
        launched, and makes a unit again only once a plan wants it whole
        (``Controller._replay_intents``: its client token launches the whole unit, nodes no
        plan wants), so it holds the placeholders until a listing or the TTL. (Seed 1648: a
        unit of 3 sent after a listing flap hid 2, the plan short of 1 once they showed.)"""
        state = self.election.state if self.election is not None else None
        if not state:
            return False
        ttl = self.config.scaler.launch_ledger_ttl
        intents = json.loads(state).get("ledger", {}).get("intents", {}).values()
        held = [
            int(i["count"]) for i in intents if i["node_type"] == nt and float(i["at"]) + ttl > now
        ]
        # every one larger than the shortfall: one that fits is made again (review review6)
        return bool(held) and min(held) > short

    def booted(self) -> Controller | None:
        # a daemon built at the first start, acting or not: a throttled first reconcile
        # leaves nobody acting yet (seed 1291), and the types are the same for both
        return next((d.controller for d in self.daemons.values() if d.controller), None)

    async def setup(self) -> None:
        asyncio.get_running_loop().set_task_factory(_task_factory)  # type: ignore[arg-type]
        await super().setup()
        for op in ("tag_instances", "untag_instances"):
            call = getattr(self.cloud, op)

            async def tagged(*args: Any, _call: Any = call, _op: str = op) -> Any:
                self.actuation(_op)
                return await _call(*args)

            setattr(self.cloud, op, tagged)
