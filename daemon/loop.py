"""The control loop: observe -> plan -> execute -> record, one pass at a time.

::

    start ─► reconcile (list the cloud, adopt tagged nodes) ─► ready
                 │ fails: retry every interval
                 ▼
    ┌──► pass: observe ─► plan ─► execute ─► record
    │          │ listing failed: skip (metric + status reason), never plan on a bad view
    │          ▼
    └── wait: scale interval, or the next deadline if sooner, or demand changed in a way
              that can change a plan (+ debounce), or stop

A pass is the four named phases below. ``observe`` lists the provider's workers into the
node tracker (beside the launch ledger: nodes the cloud accepted but does not list yet) and
builds a ``Snapshot`` (demand, nodes, offerings in backoff); ``plan`` calls the pure planner
on a worker thread, so a long pass never delays the HTTP API, and adds the ledger's expired
launches as join timeouts (unless a running job names one), then holds back what the demand
cannot vouch for (stale: everything; none yet: every removal); ``execute`` hands the plan to
the executor; ``record`` books the launches in the ledger, keeps the planner state, turns
capacity errors into backoff entries and updates metrics. Passes never overlap (a lock), a
pass that raises is counted and logged and the loop goes on, and after ``stop()`` the current
pass finishes without launching anything new.

When to wake is one policy (``next_deadline``): besides the interval and a demand change, the
loop wakes when a timer of its state falls due (an unneeded node ripens, a join timeout, a
ledger entry's TTL, a backoff's end, a power-save node's time kept DOWN ends), and the
replay engine asks the same method which timer passes it may skip.
"""

from __future__ import annotations

import asyncio
import dataclasses
import enum
import logging
from collections import Counter
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol

from shoal.daemon.demand import DemandFailure, DemandUpdate
from shoal.daemon.durable import DurableStore, LaunchJournal
from shoal.daemon.executor import (
    BackoffEvent,
    ExecutionReport,
    Executor,
    OnOffering,
    Replayable,
)
from shoal.daemon.metrics import ShoalMetrics
from shoal.daemon.nodes import (
    DEFAULT_LEDGER_TTL,
    NodeTracker,
    TrackedNode,
    TrackedState,
    node_offering,
    requeue_running,
)
from shoal.providers.node_provider import TAG_REQUEST_ID, Node, Provisioner
from shoal.providers.outcomes import (
    LaunchAttempt,
    PricesUpdated,
    ProviderEvent,
    TerminationResult,
)
from shoal.runtime.clock import Clock, SystemClock, sleep_or_event
from shoal.scaler.backoff import BackoffTable, FailureKind
from shoal.scaler.model import (
    Demand,
    Launch,
    NodeAction,
    NodeType,
    Offering,
    Plan,
    PlannerState,
    Policy,
    RemoveCause,
    Snapshot,
)

__all__ = [
    "WAKE_SLACK",
    "Controller",
    "ControllerSettings",
    "PassOutcome",
    "PassRecord",
    "Planner",
]

log = logging.getLogger(__name__)

# The loop wakes this long after a timer's deadline (float rounding and strict comparisons).
WAKE_SLACK = 1e-3


class Planner(Protocol):
    def __call__(
        self, snapshot: Snapshot, policy: Policy, state: PlannerState, now: float
    ) -> Plan: ...


class PassOutcome(enum.StrEnum):
    OK = "ok"
    ERROR = "error"
    SKIPPED = "skipped"


@dataclass(frozen=True, slots=True)
class ControllerSettings:
    interval: float = 30.0  # timer wake-up, seconds
    debounce: float = 0.2  # after a demand change, wait this long for more
    health_factor: float = 3.0  # unhealthy when no pass completed for this many intervals
    # A pass still running after this long is wedged (it must exceed the provider retry
    # deadlines a pass can sit through); liveness, and so the systemd watchdog, then fails.
    stuck_after: float = 600.0
    # A launched node the listing does not show within this long counts as never joined.
    ledger_ttl: float = DEFAULT_LEDGER_TTL


@dataclass(frozen=True, slots=True)
class PassRecord:
    number: int
    outcome: PassOutcome
    started_at: float  # epoch seconds
    duration: float
    reason: str = ""  # why skipped or what failed
    launched: int = 0
    drained: tuple[str, ...] = ()
    undrained: tuple[str, ...] = ()
    terminated: tuple[str, ...] = ()
    errors: tuple[str, ...] = ()
    demand_source: str | None = None  # which source's demand it planned from


@dataclass(slots=True)
class _Observation:
    snapshot: Snapshot
    now: float
    expired: list[TrackedNode] = field(default_factory=list)


@dataclass(frozen=True, slots=True)
class _Listing:
    asked_at: float  # monotonic time the listing was asked for (its age counts from then)
    nodes: tuple[Node, ...]


@dataclass(frozen=True, slots=True)
class _Withheld:
    plan: Plan  # what may be done
    reason: str
    keep_state: bool  # do not take the planner's new state


def _wake_key(
    demand: Demand, joined: frozenset[str] | None, held: tuple[Demand, tuple[object, ...]] | None
) -> tuple[object, ...]:
    """What of a demand can change a plan, so a change of it wakes a pass: the queued jobs
    (per shape and gang size), which jobs run on which node, and the joined nodes. Not the
    running jobs' elapsed times: a polled source moves them on every read, and a pass for
    each read would list the cloud every poll for nothing (the timer pass plans with the
    newest elapsed times). ``held``: the demand held and its key, whose queue count serves
    again when ``demand`` hands the very same queued tuple (a replay's source does while
    the queue is unchanged; a tuple is immutable, so its count stays right). No count is
    zero (a queued entry of none is left out), so two keys compare as dicts do
    (``_same_wake``)."""
    if held is not None and demand.queued is held[0].queued and isinstance(demand.queued, tuple):
        queued = held[1][0]
    else:
        queued = Counter()
        for q in demand.queued:
            if q.count:
                queued[q.shape, q.node_count] += q.count  # a gang of n is another plan
    running = Counter((r.node_id, r.shape) for r in demand.running)
    return queued, running, joined


def _same_wake(a: tuple[Any, ...], b: tuple[Any, ...]) -> bool:
    """Whether two ``_wake_key``s are equal: their counts compared as dicts, which for
    counts none of which is zero is what ``Counter``'s ``==`` says (it takes a missing key
    for a zero), ~15x faster (``Counter.__eq__`` walks both keys in Python, each read)."""
    return a[2] == b[2] and dict.__eq__(a[0], b[0]) and dict.__eq__(a[1], b[1])


def _default_planner() -> Planner:
    from shoal.scaler.planner import plan

    return plan


class Controller:
    """Owns the loop's state: tracker, planner state, backoff table, demand, last plan."""

    def __init__(
        self,
        provider: Provisioner,
        policy: Policy,
        *,
        clock: Clock | None = None,
        metrics: ShoalMetrics | None = None,
        executor: Executor | None = None,
        settings: ControllerSettings | None = None,
        backoff: BackoffTable | None = None,
        planner: Planner | None = None,
        zone: str = "",
        policy_source: Callable[[], Policy] | None = None,
        store: DurableStore | None = None,
    ) -> None:
        self.provider = provider
        self.policy = policy
        self.clock: Clock = clock or SystemClock()
        self.metrics = metrics or ShoalMetrics()
        self.executor = executor or Executor(provider, self.clock, self.metrics)
        self.executor.policy = policy
        self.settings = settings or ControllerSettings()
        self.backoff = backoff or BackoffTable()
        self.planner: Planner = planner or _default_planner()
        self.zone = zone
        self.tracker = NodeTracker(
            policy.node_types, default_zone=zone, ledger_ttl=self.settings.ledger_ttl
        )
        # what must survive a crash (daemon.durable); the launch ledger is reloaded at once
        self.store = store or DurableStore(None)
        self.journal = LaunchJournal(self.store)
        self._restore_ledger()
        self.executor.before_launch = self._before_launch
        self.executor.before_actuate = self._confirm_term
        self.state = PlannerState()
        self.demand = Demand()
        self.joined: frozenset[str] | None = None
        # the held demand's _wake_key, made once as it came: a read compares its own with it
        self._held_key: tuple[object, ...] = _wake_key(self.demand, self.joined, None)
        self.draining: frozenset[str] = frozenset()  # nodes the scheduler shows drained
        self.own_drains: frozenset[str] | None = None  # those drained for shoal's reason
        self._drained_by_others: set[str] = set()  # logged once each
        self.demand_at: float | None = None  # None: no demand received yet
        self.demand_max_age: float | None = None
        self.demand_failure: str | None = None
        self.demand_source: str | None = None  # DemandUpdate.source of the current demand
        self._observed_source: str | None = None  # that of the demand the pass plans from
        self.last_plan: Plan | None = None
        self.last_pass: PassRecord | None = None
        self.passes = 0
        self.ready = False  # first reconcile done
        self.stopping = False
        self.on_pass: list[Callable[[PassRecord], None]] = []
        self.on_ready: list[Callable[[], None]] = []
        # the loop terminates interrupted nodes once drained and idle; off where the scheduler
        # decides which nodes run (Slurm's power saving suspends an idle node itself)
        self.remove_interrupted = True
        # timers beside the controller's own (the Slurm power saver's nodes kept DOWN): each
        # gives the earliest time after ``now`` it falls due, or None (see ``next_deadline``)
        self.deadline_sources: list[Callable[[float], float | None]] = []
        self._lock = asyncio.Lock()
        self._demand_changed = asyncio.Event()
        self._stop = asyncio.Event()
        self._started = self.clock.monotonic()
        # rebuilds the policy from the provider's catalogue when its prices change
        self.policy_source = policy_source
        provider.subscribe(self._on_provider_event)
        self._last_ok: float | None = None
        self._last_finished: float | None = None
        self._pass_started: float | None = None
        self._listing: _Listing | None = None  # shared by callers of list_workers(max_age)
        self._listing_generation = 0  # bumped by every action on the cloud
        self._listing_lock = asyncio.Lock()

    # -- inputs ---------------------------------------------------------------------------

    def set_demand(self, update: DemandUpdate | DemandFailure | Demand) -> None:
        """Replace the demand (waking the loop, after the debounce, when it changed in a way
        that can change a plan: see ``_wake_key``), or note that the source failed to read it
        (the demand is stale from then on)."""
        now = self.clock.now()
        if isinstance(update, DemandFailure):
            if self.demand_failure is None:
                log.warning('event=demand_stale reason="%s"', update.reason)
            self.demand_failure = update.reason
            return
        if isinstance(update, Demand):
            update = DemandUpdate(update)
        joined = frozenset(update.joined_nodes) if update.joined_nodes is not None else None
        key = _wake_key(update.demand, joined, (self.demand, self._held_key))
        changed = not _same_wake(key, self._held_key) or self.demand_failure
        self._held_key = key
        self.demand, self.joined = update.demand, joined
        self.draining, self.own_drains = update.draining_nodes, update.own_drains
        self.demand_at = update.at if update.at is not None else now
        self.demand_max_age = update.max_age
        self.demand_source = update.source
        self.demand_failure = None
        if changed:
            self._demand_changed.set()

    def demand_stale(self) -> str | None:
        """Why the demand cannot be trusted now, or None: a source failed to read it, or it is
        older than its source allows."""
        if self.demand_failure is not None:
            return f"demand source failed: {self.demand_failure}"
        if self.demand_at is not None and self.demand_max_age is not None:
            age = self.clock.now() - self.demand_at
            if age > self.demand_max_age:
                return f"demand is {age:.0f}s old (max_age {self.demand_max_age:.0f}s)"
        return None

    def set_policy(self, policy: Policy, settings: ControllerSettings | None = None) -> None:
        """Apply a reloaded config; takes effect from the next pass."""
        self.policy = self.executor.policy = policy
        self.tracker.set_node_types(policy.node_types)
        if settings is not None:
            self.settings = settings
            self.tracker.ledger_ttl = settings.ledger_ttl

    def _on_provider_event(self, event: ProviderEvent) -> None:
        """A launch or termination: the shared listing is out of date. New prices: count the
        refresh, and plan with the catalogue's prices from the next
        pass (a refresh that failed in part still updated what it could; the rest is the last
        good price)."""
        if isinstance(event, LaunchAttempt | TerminationResult):
            self.invalidate_listing()
            return
        if not isinstance(event, PricesUpdated):
            return
        self.metrics.price_refreshes.labels(outcome="ok" if event.ok else "failed").inc()
        if not event.ok:
            log.warning('event=price_refresh_failed kept=last-good error="%s"', event.error)
        if self.policy_source is not None:
            self.set_policy(self.policy_source())
            log.info("event=prices_updated source=%s ok=%s", event.source, event.ok)

    def wake(self) -> None:
        """Run a pass soon (after the debounce), as a demand change does: the cloud changed
        in a way a plan must answer now (an interruption notice)."""
        self._demand_changed.set()

    def stop(self) -> None:
        """Finish the current pass, launch nothing new, leave ``run``."""
        self.stopping = True
        self._stop.set()

    def resume(self) -> None:
        """Undo ``stop()`` for a daemon that leads again (``ha``): ``run`` may be called
        again and reconciles with the cloud first (another daemon acted meanwhile); health
        and liveness count from now."""
        self.stopping, self.ready = False, False
        self._stop.clear()
        self._started, self._last_ok, self._last_finished = self.clock.monotonic(), None, None

    async def begin_term(self, epoch: int) -> None:
        """(``ha``) A term of leadership starts: before ``resume``, read the durable state as
        the last leader left it (``DurableStore.reload``, fenced by ``epoch`` from now on)
        into a new node tracker, exactly as a restart does: what this daemon knew may be a
        term old. New request ids and launches carry ``epoch``. Raises what the read raised."""
        await self.store.reload(epoch)
        self.tracker = NodeTracker(
            self.policy.node_types,
            default_zone=self.zone,
            ledger_ttl=self.settings.ledger_ttl,
        )
        self._restore_ledger()
        self.state = PlannerState()
        self.executor.epoch = epoch
        self.invalidate_listing()

    def _restore_ledger(self) -> None:
        for tracked in self.journal.restore(self.tracker):
            log.info(
                "event=launch_restored node=%s offering=%s placeholder=%s accepted_at=%.0f",
                tracked.id,
                tracked.offering(),
                tracked.placeholder,
                tracked.accepted_at or 0.0,
            )

    # -- health ---------------------------------------------------------------------------

    def healthy(self) -> bool:
        """A pass succeeded recently: the daemon is scaling (what /healthz reports)."""
        since = self._last_ok if self._last_ok is not None else self._started
        limit = self.settings.health_factor * self.settings.interval
        return self.clock.monotonic() - since <= limit

    def alive(self) -> bool:
        """The loop is not wedged: passes keep finishing, whatever their outcome, and none
        has run longer than ``stuck_after``. What the systemd watchdog is fed on: a cloud
        outage makes passes skip (unhealthy), but restarting shoal would not help."""
        now = self.clock.monotonic()
        if self._pass_started is not None:
            return now - self._pass_started <= self.settings.stuck_after
        since = self._last_finished if self._last_finished is not None else self._started
        return now - since <= self.settings.health_factor * self.settings.interval

    # -- the loop -------------------------------------------------------------------------

    async def run(self) -> None:
        """Reconcile, then pass after pass until ``stop()``."""
        while not self.stopping and not self.ready:
            try:
                await self.reconcile()
            except Exception as exc:
                log.error('event=reconcile_failed error="%r" retry_in=%.1fs', exc, self.interval)
                await self._wait(self.interval, wake_on_demand=False)
        while not self.stopping:
            await self.run_pass()
            if self.stopping:
                break
            woke_on_demand = await self._wait(self._timer_wait(), wake_on_demand=True)
            if woke_on_demand and not self.stopping:
                await self._wait(self.settings.debounce, wake_on_demand=False)
        log.info("event=loop_stopped passes=%d", self.passes)

    @property
    def interval(self) -> float:
        return self.settings.interval

    def next_deadline(self, after: float | None = None) -> float | None:
        """The one wake policy: the earliest time after ``after`` (default: now) at which a
        timer falls due, so a pass then may do what the last one could not; None when no
        timer runs. The timers
        are the planner state's (an unneeded node ripens), the node tracker's (a booting
        node's join timeout, a ledger entry's TTL), the backoff table's (an offering's block
        ends) and those of ``deadline_sources`` (the Slurm power saver's nodes kept DOWN). The loop
        wakes for it (``wake_at``) and the replay engine skips the timer passes before it:
        a new timer goes in one of these, never beside them."""
        now = self.clock.now() if after is None else after
        times = (
            self.state.next_deadline(self.policy, now),
            self.tracker.next_deadline(
                self.policy.join_timeout, self.policy.unhealthy_timeout, now
            ),
            self.backoff.next_deadline(now),
            *(source(now) for source in self.deadline_sources),
        )
        return min((t for t in times if t is not None), default=None)

    def wake_at(self) -> float | None:
        """When the loop wakes for the next deadline: ``WAKE_SLACK`` after it, so the pass
        finds it due whether the timer compares with ``>`` or ``>=``; None without one."""
        deadline = self.next_deadline()
        return None if deadline is None else deadline + WAKE_SLACK

    def _timer_wait(self) -> float:
        """Seconds until the next timer pass: the interval, or less when a deadline falls
        due before it."""
        wake = self.wake_at()
        if wake is None:
            return self.interval
        return min(self.interval, max(0.0, wake - self.clock.now()))

    async def _wait(self, seconds: float, *, wake_on_demand: bool) -> bool:
        """Sleep on the clock; returns True if a demand change woke us (and clears it)."""
        events = [self._stop, self._demand_changed] if wake_on_demand else [self._stop]
        woke = self._demand_changed in await sleep_or_event(self.clock, seconds, *events)
        if not wake_on_demand or woke:
            self._demand_changed.clear()
        return woke

    async def reconcile(self) -> None:
        """Rebuild the view from the cloud: adopt every tagged node; launch nothing."""
        workers = await self.list_workers()
        adopted = self._observe_listing(workers)
        self.journal.sync(self.tracker)
        for tracked in adopted:
            log.info(
                "event=adopt node=%s node_type=%s instance_type=%s state=%s static=%s "
                "launched_at=%s",
                tracked.id,
                tracked.node_type or "-",
                tracked.node.nodeType,
                tracked.state,
                tracked.static,
                tracked.node.launchTime.isoformat(),
            )
        self.ready = True
        self._update_node_metrics()
        log.info("event=reconciled nodes=%d", len(adopted))
        for callback in list(self.on_ready):
            callback()

    async def _replay_intents(self, plan: Plan) -> ExecutionReport:
        """After a restart or in a new term: make again each plan launch whose intent the
        restore found with no answer (``Executor.replay``), once a plan wants its nodes on top
        of every other node of its type the daemon counts, but the placeholders of launches
        still to make after it (of two lost units of 3, a plan wanting 5 makes one again,
        not neither: those 5 waited for the TTL). Its client token returns what
        it launched, if it did, and launches it if it did not: the placeholders give way to
        what is real instead of holding that capacity for the ledger's TTL. A plan that wants
        fewer leaves it for a later pass (replayed then, it would launch a node no plan
        wants), and so does one that would put its type over the max beside the nodes still
        alive (drained ones the pass terminates after it); one listed (its placeholders gave
        way) or expired, or whose node type no
        longer has its offering (its instance type, capacity type or zone: addNodes would
        ignore it as ``first`` and launch the unit elsewhere under a new token), is settled
        without a replay, its placeholders left to the listing or the TTL. Each replay is
        booked at once (``record_outcomes``); the launches and errors of all are returned,
        for the pass record."""
        made = ExecutionReport()  # what the replays did, booked already: for the pass record
        if self.stopping or self.demand_stale() is not None:
            return made  # a pass that makes none of its plan's launches makes no replay
        replays = self.journal.replays
        ahead = {r.request_id for r in replays}
        held = Counter(  # the placeholders of each launch still to make again
            t.node.tags.get(TAG_REQUEST_ID) for t in self.tracker.pending() if t.placeholder
        )
        # the nodes of each type the daemon counts, but those placeholders: a launch is made
        # again when the plan wants its nodes on top of these and of those made before it
        counted = Counter(
            t.node_type
            for t in self.tracker.all()
            if t.state in (TrackedState.BOOTING, TrackedState.READY)
            and not t.expired
            and not (t.placeholder and t.node.tags.get(TAG_REQUEST_ID) in ahead)
        )
        # the nodes of each type alive as the daemon knows them, drained ones too (the pass
        # terminates them after the replays), but those placeholders: a replay that would put
        # its type over the max waits for them to go (review chaosarg: a lowered max drained
        # the real nodes for the placeholders, and the replay went out before they ended)
        # (interrupted and stopped nodes are out of the planner's view and its max: out of
        # this count too, review review6)
        gone = self.tracker.interrupted()
        alive = Counter(
            t.node_type
            for t in self.tracker.all()
            if t.state is not TrackedState.TERMINATED
            and not t.expired
            and t.id not in gone
            and not t.node.stopped
            and not (t.placeholder and t.node.tags.get(TAG_REQUEST_ID) in ahead)
        )
        types = {t.name: t for t in self.policy.node_types}
        for intent in replays:
            node_type = types.get(intent.node_type)
            offering = intent.offering
            if (
                not held[intent.request_id]
                or node_type is None
                or offering not in node_type.offerings()  # its zone too: else made elsewhere
            ):
                counted[intent.node_type] += held[intent.request_id]  # left to the TTL
                alive[intent.node_type] += held[intent.request_id]
                self.journal.settle_replay(intent.request_id)
                continue
            if (
                plan.targets.get(node_type.name, 0)
                < counted[node_type.name] + held[intent.request_id]
                or alive[node_type.name] + held[intent.request_id] > node_type.max_nodes
            ):
                continue  # not wanted whole now, or over the max: asked again at the next pass
            counted[node_type.name] += held[intent.request_id]
            alive[node_type.name] += held[intent.request_id]
            log.info(
                "event=launch_replayed request_id=%s offering=%s count=%d",
                intent.request_id,
                offering,
                intent.count,
            )
            unavailable = set(self.backoff.unavailable(self.clock.now())) | intent.answered
            report = await self.executor.replay(
                node_type, intent.request_id, offering, intent.count, intent.replay, unavailable
            )
            if report.attempts:  # the cloud was asked: its answer settles it
                self.journal.settle_replay(intent.request_id)
            # else nothing reached the cloud (its intent not written): made at a later pass
            self.record_outcomes(report)
            made.launches.extend(report.launches)
            made.errors.extend(report.errors)
        return made

    async def run_pass(self) -> PassRecord:
        """One pass: observe -> plan -> execute -> record. Never raises; never overlaps."""
        async with self._lock:
            self.passes += 1
            number = self.passes
            started_at, start = self.clock.now(), self.clock.monotonic()
            self._pass_started = start
            try:
                observation = await self._observe()
                if isinstance(observation, str):
                    record = self._skipped(number, started_at, start, observation)
                else:
                    plan = await self._plan(observation)
                    withheld = self._withhold(plan)
                    if withheld is not None:
                        plan = withheld.plan
                    replayed = await self._replay_intents(plan) if self.journal.replays else None
                    report = await self._execute(plan, observation)
                    if replayed is not None:  # the pass record tells them too
                        report.launches[:0] = replayed.launches
                        report.errors[:0] = replayed.errors
                    record = self._record(
                        number, started_at, start, observation, plan, report, withheld
                    )
            except Exception as exc:
                record = self._failed(number, started_at, start, exc)
            finally:
                self._pass_started = None
                self._last_finished = self.clock.monotonic()
            self.metrics.passes.labels(outcome=record.outcome.value).inc()
            self.metrics.pass_duration.observe(record.duration)
            self.last_pass = record
        for callback in list(self.on_pass):
            try:
                callback(record)
            except Exception as exc:
                log.error('event=pass_callback_failed error="%r"', exc)
        return record

    # -- phases ---------------------------------------------------------------------------

    async def list_workers(self, max_age: float = 0.0) -> list[Node]:
        """The provider's workers, through the executor (its retry policy, its metrics).

        One listing serves every caller within ``max_age`` seconds of when it was asked for
        (0: list now): a pass lists fresh and the power saver and the clean-up loop take its
        listing, so a pass, a burst of resume requests and a clean-up make one paginated
        DescribeInstances. A launch or termination through the provider (its events), or a
        call of ``invalidate_listing``, retires the shared listing, and a listing that was in
        flight across one is never shared: no caller is served a view older than an action
        as if it were current."""
        if max_age <= 0:
            return await self._fresh_listing()
        async with self._listing_lock:
            cached = self._listing
            if cached is not None and self.clock.monotonic() - cached.asked_at <= max_age:
                return list(cached.nodes)
            return await self._fresh_listing()

    async def _fresh_listing(self) -> list[Node]:
        generation, asked_at = self._listing_generation, self.clock.monotonic()
        nodes = await self.executor.call("getProvisionedWorkers", self._list)
        shared = self._listing
        if generation == self._listing_generation and (
            shared is None or shared.asked_at <= asked_at
        ):
            self._listing = _Listing(asked_at, tuple(nodes))
        return nodes

    def invalidate_listing(self) -> None:
        """The cloud changed (or may have): the shared listing is not served again."""
        self._listing_generation += 1
        self._listing = None

    async def launch(
        self,
        node_type: NodeType,
        launch: Launch,
        *,
        request_id: str | None = None,
        tags: Mapping[str, str] | None = None,
        first: Offering | None = None,
        on_offering: OnOffering | None = None,
    ) -> ExecutionReport:
        """Launch outside a plan (a Slurm resume request) through the executor, skipping the
        offerings in backoff (``first`` is tried first regardless), and book it: ledger,
        backoff table, durable state. Before each offering is tried, ``on_offering`` is called
        with it and its client token, and then the intent (with that offering) is written, with
        whatever ``on_offering`` changed in the same store."""
        unavailable = set(self.backoff.unavailable(self.clock.now()))
        report = await self.executor.launch(
            node_type,
            launch,
            unavailable,
            request_id=request_id,
            tags=tags,
            first=first,
            on_offering=on_offering,
        )
        self.record_outcomes(report)
        return report

    async def terminate(
        self, nodes: Sequence[Node | str], *, cause: str | None = None, back_off: bool = False
    ) -> None:
        """Terminate instances outside a plan (Slurm's suspend, the clean-up loop) through
        the executor and book it: marked terminated in the tracker (and so out of the ledger),
        counted as scale-downs with ``cause`` when given, and with ``back_off`` each one's
        offering backed off (a node that never joined); an instance booked terminated
        before (the clean-up's orphan, then its resume-fail request on a listing that still
        shows it) is not booked again. Raises what the executor raises
        (nothing is booked then), ``Fenced`` first when the term is over (``ha``: nothing
        reaches the cloud)."""
        ids = [n if isinstance(n, str) else n.name for n in nodes]
        await self.executor.confirm_term()

        async def terminate() -> None:
            await self.provider.terminateNodes(ids)

        try:
            await self.executor.call("terminateNodes", terminate)
        finally:
            self.invalidate_listing()  # even a failed call may have terminated some
        report = ExecutionReport()
        for node in nodes:
            name = node if isinstance(node, str) else node.name
            tracked = self.tracker.get(name)
            if tracked is not None and tracked.state is TrackedState.TERMINATED:
                continue  # booked by an earlier call (a listing may show it a while): once
            self.tracker.mark(name, TrackedState.TERMINATED)
            if cause is not None:
                type_name = tracked.node_type if tracked is not None and tracked.node_type else "-"
                self.metrics.scale_downs.labels(node_type=type_name, cause=cause).inc()
            instance = node if isinstance(node, Node) else tracked.node if tracked else None
            if back_off and instance is not None:
                offering = node_offering(instance, tracked.zone if tracked is not None else "")
                report.failed_offerings.append(
                    BackoffEvent(offering, FailureKind.CAPACITY, cause or "terminated")
                )
        self.record_outcomes(report)

    async def _confirm_term(self) -> None:
        """(``ha``) Before a termination or a tag: one state write, fenced by the term's
        epoch (``Fenced`` once another term began; the store's ``on_fenced`` steps down).
        Without a term (no ``ha``) nothing: the ``state_dir`` lock keeps one daemon."""
        if self.store.epoch is not None:
            await self.store.flush()

    async def _before_launch(
        self,
        request_id: str,
        node_type: NodeType,
        count: int,
        offering: Offering,
        replay: Replayable | None,
        answered: tuple[tuple[str, Offering], ...] = (),
    ) -> None:
        await self.journal.intent(
            request_id, node_type, count, offering, self.clock.now(), replay, answered
        )

    def _observe_listing(self, workers: list[Node]) -> list[TrackedNode]:
        """Apply a listing to the tracker. Before any demand arrived (``unread``) nobody can
        say which nodes joined: a node is not taken for joined, nor marked missing, on no
        evidence (``Node.joined`` None means the provider cannot tell)."""
        return self.tracker.observe(
            workers,
            self.joined,
            self.clock.now(),
            self.draining,
            self.own_drains,
            unread=self.demand_at is None,
        )

    async def _list(self) -> list[Node]:
        return await self.provider.getProvisionedWorkers()

    async def _observe(self) -> _Observation | str:
        """List the cloud into the tracker and build the snapshot; a reason string to skip."""
        try:
            workers = await self.list_workers()
        except Exception as exc:
            return f"provider listing failed: {exc!r}"
        new = self._observe_listing(workers)
        for tracked in new:
            log.info(
                "event=node_seen node=%s node_type=%s state=%s",
                tracked.id,
                tracked.node_type or "-",
                tracked.state,
            )
        now = self.clock.now()
        expired = self.tracker.expire(now)
        for tracked in expired:
            log.warning(
                "event=launch_never_listed node=%s offering=%s accepted_at=%.0f ttl=%.0fs",
                tracked.id,
                tracked.offering(),
                tracked.accepted_at or 0.0,
                self.tracker.ledger_ttl,
            )
        self.journal.sync(self.tracker)
        self.backoff = self.backoff.prune(now)
        self._observed_source = self.demand_source
        snapshot = Snapshot(
            demand=requeue_running(self.demand, self.tracker.imminent()),
            nodes=self.tracker.infos(),
            unavailable=self.backoff.unavailable(now),
        )
        return _Observation(snapshot, now, [t for t in expired if not t.placeholder])

    async def _plan(self, observation: _Observation) -> Plan:
        # Off the event loop: a pass over a large demand must not delay /healthz or a PUT.
        plan = await asyncio.to_thread(
            self.planner, observation.snapshot, self.policy, self.state, observation.now
        )
        expired = observation.expired
        if expired:  # (the busy nodes walked only then: a pass mostly has none)
            busy = {job.node_id for job in observation.snapshot.demand.running}
            expired = [t for t in expired if t.id not in busy]  # a job runs: keep it
        if expired:
            plan = dataclasses.replace(
                plan,
                terminations=plan.terminations
                + tuple(
                    NodeAction(
                        t.id,
                        t.node_type,
                        RemoveCause.JOIN_TIMEOUT,
                        f"accepted by the cloud {self.tracker.ledger_ttl:.0f}s ago and never "
                        f"listed; offering {t.offering()} should back off",
                    )
                    for t in expired
                ),
            )
        stopped = tuple(  # shoal never stops an instance: someone else did, and it only costs
            NodeAction(
                t.id, t.node_type, RemoveCause.STOPPED, f"the cloud lists it {t.node.cloud_state}"
            )
            for t in self.tracker.stopped()
        )
        if self.remove_interrupted and self.tracker.interrupted():
            running = {job.node_id for job in self.demand.running}  # the snapshot requeued them
            stopped += tuple(  # out of the planner's view: no idle timer would remove them
                NodeAction(
                    t.id, t.node_type, RemoveCause.INTERRUPTED, "drained for the cloud, idle"
                )
                for t in self.tracker.interrupted_idle(running)
            )
        if stopped:
            plan = dataclasses.replace(plan, terminations=plan.terminations + stopped)
        taken_back = {a.node_id for a in plan.undrains}
        redrains = tuple(  # only the mark says draining: make the drain (the hook) again
            NodeAction(t.id, t.node_type, RemoveCause.IDLE, "marked draining, drain unconfirmed")
            for t in self.tracker.unconfirmed_drains()
            if t.id not in taken_back
        )
        if redrains:
            plan = dataclasses.replace(plan, drains=plan.drains + redrains)
        for launch in plan.launches:
            log.info(
                'event=plan_launch node_type=%s count=%d cause=%s reason="%s"',
                launch.node_type,
                launch.count,
                launch.cause,
                launch.message,
            )
        for action in plan.undrains:
            log.info(
                'event=plan_undrain node=%s node_type=%s cause=%s reason="%s"',
                action.node_id,
                action.node_type,
                action.cause,
                action.message,
            )
        for action in (*plan.drains, *plan.terminations):
            log.info(
                'event=plan_remove node=%s node_type=%s cause=%s reason="%s"',
                action.node_id,
                action.node_type,
                action.cause,
                action.message,
            )
        for action in plan.withheld:
            log.warning(
                'event=plan_remove_withheld node=%s node_type=%s cause=%s reason="%s"',
                action.node_id,
                action.node_type,
                action.cause,
                action.message,
            )
        for item in plan.unschedulable:
            log.warning(
                'event=unschedulable count=%d nodes=%d shape="%s" reasons="%s"',
                item.count,
                item.node_count,
                item.shape,
                ",".join(item.reasons),
            )
        return plan

    async def _execute(self, plan: Plan, observation: _Observation) -> ExecutionReport:
        return await self.executor.execute(
            plan,
            self.policy,
            self.tracker,
            set(observation.snapshot.unavailable),
            allow_launch=not self.stopping,
        )

    def _withhold(self, plan: Plan) -> _Withheld | None:
        """Don't act on what the demand cannot vouch for: on stale demand launch, undrain and
        remove nothing; before any demand arrived, remove nothing. Either way keep the
        planner's state, so idle timers do not run on a demand nobody read (a node idle at
        the first read is removed ``unneeded_time`` after it, not at it). Removing means
        every drain and every termination, join timeouts and expired launches included:
        whether a node joined or runs a job is the demand source's word too."""
        stale = self.demand_stale()
        if stale is None and self.demand_at is not None:
            return None
        reason = stale or "no demand received yet: removing nothing"
        withheld = dataclasses.replace(
            plan,
            launches=() if stale else plan.launches,
            drains=(),
            undrains=() if stale else plan.undrains,
            terminations=(),
        )
        if withheld != plan:
            log.warning('event=pass_withheld reason="%s"', reason)
        return _Withheld(withheld, reason, keep_state=True)

    def _record(
        self,
        number: int,
        started_at: float,
        start: float,
        observation: _Observation,
        plan: Plan,
        report: ExecutionReport,
        withheld: _Withheld | None = None,
    ) -> PassRecord:
        now = self.record_outcomes(report)
        if withheld is None or not withheld.keep_state:
            self.state = plan.state
        self.last_plan = plan
        self._last_ok = self.clock.monotonic()
        m = self.metrics
        m.set_targets(plan.targets)
        m.estimated_cost.set(plan.cost_per_hour)
        m.set_unschedulable(plan.unschedulable)
        m.last_successful_pass.set(now)
        self._update_node_metrics()
        record = PassRecord(
            number=number,
            outcome=PassOutcome.OK,
            started_at=started_at,
            duration=max(0.0, self.clock.monotonic() - start),
            reason="" if withheld is None else withheld.reason,
            launched=report.launched,
            drained=tuple(report.drained),
            undrained=tuple(report.undrained),
            terminated=tuple(report.terminated),
            errors=tuple(report.errors),
            demand_source=self._observed_source,
        )
        if not plan.is_noop or report.errors:
            log.info(
                "event=pass pass=%d outcome=ok launched=%d drained=%d terminated=%d errors=%d",
                number,
                record.launched,
                len(record.drained),
                len(record.terminated),
                len(record.errors),
            )
        return record

    def record_outcomes(self, report: ExecutionReport) -> float:
        """Book what an execution did: launches in the ledger, offerings into or out of
        backoff. Every pass does; so does a launch made outside a pass (a Slurm resume
        request). Returns the time it was booked at."""
        now = self.clock.now()
        if report.launches or report.attempts or report.terminated or report.errors:
            self.invalidate_listing()
        for tracked in self.tracker.record_launch(report.attempts, now):
            log.info(
                "event=launch_booked node=%s offering=%s placeholder=%s",
                tracked.id,
                tracked.offering(),
                tracked.placeholder,
            )
        self.journal.sync(self.tracker, answered=[o.request_id for o in report.launches])
        for offering in report.succeeded_offerings:
            self.backoff = self.backoff.record_success(offering)
        for event in report.failed_offerings:
            self.backoff = self.backoff.record_failure(
                event.offering, now, event.kind, event.reason
            )
            log.warning(
                'event=offering_backoff offering=%s kind=%s until=%.0f reason="%s"',
                event.offering,
                event.kind,
                self.backoff.entries[event.offering].until,
                event.reason,
            )
        return now

    def _skipped(self, number: int, started_at: float, start: float, reason: str) -> PassRecord:
        log.warning('event=pass_skipped pass=%d reason="%s"', number, reason)
        self._update_node_metrics()
        return PassRecord(
            number, PassOutcome.SKIPPED, started_at, self.clock.monotonic() - start, reason
        )

    def _failed(self, number: int, started_at: float, start: float, exc: Exception) -> PassRecord:
        log.error('event=pass_failed pass=%d error="%r"', number, exc)
        log.debug("event=pass_failed_traceback pass=%d", number, exc_info=exc)
        return PassRecord(
            number, PassOutcome.ERROR, started_at, self.clock.monotonic() - start, repr(exc)
        )

    def _update_node_metrics(self) -> None:
        m = self.metrics
        m.set_nodes(self.tracker.counts(), self.tracker.node_type_names)
        m.jobs_queued.set(sum(q.count for q in self.demand.queued))
        if self.demand_at is not None:
            m.demand_age.set(max(0.0, self.clock.now() - self.demand_at))
        m.jobs_running.set(len(self.demand.running))
        unavailable = self.backoff.unavailable(self.clock.now())
        m.offerings_in_backoff.set(len(unavailable))
        m.set_backoff(unavailable)
        m.nodes_unlisted.set(len(self.tracker.pending()))
        others = {t.id: t for t in self.tracker.drained_by_others()}
        m.nodes_drained_by_others.set(len(others))
        for name in others.keys() - self._drained_by_others:
            log.warning(
                "event=drained_by_others node=%s node_type=%s action=counted-toward-max,left-alone",
                name,
                others[name].node_type or "-",
            )
        self._drained_by_others = set(others)
