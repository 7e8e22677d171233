"""The chaos harness in Slurm's power-saving mode (``run_seed(seed, mode="power_save")``).

The daemon's own power-saving pieces, built as ``shoal run`` builds them: the controller of
``service.build_controller`` (its planner the power saver's ``requests_only_planner``) and the
``SlurmIntegration`` around it (``PowerSaver``, ``Cleaner``, the demand source, the hook
spool), whose ``SlurmClient`` is the only thing replaced: ``slurmsim.FakeSlurmClient``
answers from a simulated slurmctld (``slurmsim.SlurmCtld``) instead of running squeue,
sinfo and scontrol. The integration's background work (``SlurmIntegration.run``: the hold
loop, the clean-up loop, the spool) and the source's polls (pumped into the controller as
``Service._pump`` does) run as tasks on the virtual clock; the harness runs the passes.

Slurm's side: the same job stream as push mode, one job per node, on fixed node names (the
names ``shoal slurm-conf`` derives from ``node_types``). slurmctld runs its hook programs as
``shoal slurm-<kind>`` would: while the daemon is up the request goes to the integration's
intake (what ``POST /v1/slurm/<kind>`` calls); when the daemon is down, or dies while the
request is in flight, or answers too late (``late``), the real hook (``hook.main``) is run
with a POST that got no answer, so it spools the request to ``<state_dir>/spool`` with the
same request id, for the restarted daemon to serve.

Faults (``faults.POWER_KINDS``): crashes at any provider call, Slurm command or durable write
(before the state file is replaced or after), so hook requests die in flight; the daemon
stays down for a while; capacity errors per offering (instance type, zone, capacity type),
so the offering a launch tries first depends on the backoff table; lost launch responses,
listing lag, throttling, slow terminations; slurmctld not answering for a while
(``slurmerr``); hook answers too late (``late``); ``scontrol update`` answers that come up to
a minute after the command took effect (``slowslurm``: slurmctld returns a released node to
the pool and resumes it again while the daemon still waits in the call); a node type
without any capacity for a while (``stockout``); an offering whose capacity comes back
right after it answered InsufficientInstanceCapacity (``flicker``: in backoff for the
daemon, available to a restarted one); config edits and SIGHUPs (``reload``: the scaler's
knobs, no ``max``, which slurm.conf's node names bound here); a restart that reads a changed
RunInstances argument (``argchange``), so a resume made again under the dead process's
client token is answered ``IdempotentParameterMismatch``; a joined instance left out of
DescribeInstances for 10 s to 5 min (``unlisted``: EC2's eventual consistency; Slurm's
view of the node does not change).

Invariants (beside ``over-max``, ``not-quiescent`` and ``fsync-on-loop`` of push mode):

``slurm-duplicate``
    A Slurm node has at most one live instance (tag ``shoal:slurm-node``), checked each time
    a launch takes effect. An instance the ``unlisted`` fault hides from the listings is not
    counted (as push mode's ``duplicate-launch`` does not count it): a launch for a node
    whose instance no listing shows is what the daemon should do. A second instance next to
    a listed one is flagged.
``hook-lost``
    Every resume slurmctld asks for (by HTTP or through the spool) is served or explicitly
    failed: the node registers before ResumeTimeout, or shoal sets it DOWN with a reason
    (attempted: slurmctld may not answer) before then. Every suspend is served: the
    instances the node had when it was suspended are gone ``SUSPEND_BOUND`` later (unless it
    was resumed since).
``busy-killed``
    Shoal never terminates the instance a registered node runs a job on, nor sets DOWN or
    POWER_DOWN a node whose job runs or waits on an instance launched for it, nor
    POWER_DOWN a node powering up for a job within ResumeTimeout (only a held node, DOWN, is
    released so).
``down-unheld``
    Every node Slurm shows DOWN with a reason the power saver gave (``shoal: ...``) has a
    hold in the state file on disk (``state.json``, as the last write left it), checked after
    every write and every step of the run: a node shoal set DOWN is released by whichever
    daemon runs next, not left DOWN until the clean-up loop happens to find it. (The
    clean-up loop's own DOWN on its way to POWER_DOWN, "shoal: powering up for ...", is
    not a hold.)
``unsaved-answer``
    A hook's request the daemon answered (202), accepting a node, is on disk when the answer
    goes out: its request id is in the state file's ``accepted_ids``, which the daemon
    writes in the same write as the requests it carries (those may be served and gone by
    the time the answer goes out: the hold loop retries a request it finds in memory).
``status-terminated``
    After every Slurm read, ``SlurmIntegration.status()`` (``GET /v1/slurm``) maps no node
    to an instance the cloud has terminated.
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import io
import itertools
import json
import random
from collections.abc import Mapping
from typing import Any

from shoal.daemon.loop import Controller
from shoal.daemon.service import build_provider
from shoal.daemon.simulate.engine import EPOCH
from shoal.daemon.slurm import hook, spool
from shoal.daemon.slurm.constants import TAG_SLURM_NODE
from shoal.daemon.slurm.integration import SlurmIntegration
from shoal.daemon.slurm.names import node_type_keys
from shoal.daemon.slurm.parse import compress_hostlist, expand_hostlist
from shoal.daemon.slurm.power import requests_only_planner
from shoal.daemon.slurm.source import SlurmDemandSource, SlurmSnapshot
from shoal.providers.errors import CapacityError
from shoal.providers.outcomes import TerminationStatus
from shoal.providers.simulated import SimulatedProvisioner
from shoal.runtime.testing import FakeClock
from shoal.scaler.model import CapacityType, Offering, Plan, PlannerState, Policy, Snapshot
from shoal.scaler.planner import usable_shape

from . import harness
from .faults import Crash, FaultyCloud
from .harness import END, FAULT_END, _Executor, _Run, make_jobs
from .slurmsim import RESUME_TIMEOUT, FakeSlurmClient, SJob, SlurmCtld, SNode, unavailable

__all__ = ["SUSPEND_BOUND", "PowerRun"]

SUSPEND_BOUND = 900.0  # a suspend's instances are gone by then (the clean-up loop's too)
REPORTED_PER_INVARIANT = 5
# a launch brings the next crash (if crashes are on) forward to right after it, with these
# odds: on its type's first offering, on another one
CRASH_AFTER_LAUNCH = (0.1, 0.5)
# ... and when the offering tried before it failed and has capacity again (``flicker``): a
# replay that does not start at the offering that launched launches a second instance
CRASH_AFTER_FLICKER = 0.9


class PowerRun(_Run):
    """One seed in power-saving mode; see the module docstring."""

    def __init__(self, *args: Any) -> None:
        super().__init__(*args)
        self.integration: SlurmIntegration | None = None
        self.hook_ids = itertools.count(1)
        # hook requests handed to the daemon, not answered yet: id -> (task, kind, hostlist)
        self.in_flight: dict[str, tuple[asyncio.Task[None], str, str]] = {}
        self.resume_calls: dict[str, float] = {}  # node -> when slurmctld powered it up
        self.down_tries: dict[str, float] = {}  # node -> shoal's last DOWN (attempted)
        self.suspend_calls: list[tuple[float, str, frozenset[str]]] = []
        self.slurm_down_until = -1.0
        self.reported: collections.Counter[str] = collections.Counter()
        self.duplicated: set[str] = set()
        self.bad_status: set[tuple[str, str]] = set()
        self.on_disk: Mapping[str, Any] = {}  # the slurm section of state.json, as written
        self.unheld: set[tuple[str, float]] = set()  # (node, when set DOWN) reported
        self.flickered_at = -1.0  # when an offering's capacity came back at once (flicker)
        self.flickering: set[Offering] = set()  # without capacity until a launch tries it

    def violate(self, invariant: str, detail: str) -> None:
        self.reported[invariant] += 1
        if self.reported[invariant] <= REPORTED_PER_INVARIANT:
            super().violate(invariant, detail)

    # -- set-up -----------------------------------------------------------------------------

    async def setup(self) -> None:
        config = self.original = self.file = self.config  # as ``run_seed`` set it
        assert config.state_dir is not None
        config.state_dir.mkdir(parents=True, exist_ok=True)
        # the hooks' config file: the same state_dir, so they spool where the daemon looks
        self.hook_config = config.state_dir.parent / "hook.json"
        self.hook_config.write_text(
            json.dumps({"state_dir": str(config.state_dir), "api": {"listen": "127.0.0.1:9"}})
        )
        asyncio.get_running_loop().set_default_executor(_Executor())
        self.clock = FakeClock(EPOCH)
        cloud = build_provider(config, self.clock)
        assert isinstance(cloud, SimulatedProvisioner)
        self.cloud = cloud
        self.faulty = FaultyCloud(cloud, self.plan, self.observe_call, self.note)
        self.faulty.on_death = self.kill
        self.main_task = asyncio.current_task()
        self.listeners = list(cloud.fleet._listeners)
        self.rng = random.Random(f"slurm-{self.seed}")
        self.answer_rng = random.Random(f"answers-{self.seed}")
        self.ctld = SlurmCtld(
            {}, self.clock, EPOCH, self.hook, self.tagged, self.note, self.on_resume_timeout
        )
        self.client = FakeSlurmClient(
            self.ctld, self.gate, self.on_update, self.faulty.die_after, self.late_answer
        )
        while not await self.start_daemon(crashes=False):  # a start may fail: throttled
            await self.clock.advance(EPOCH + self.restart_at - self.clock.now())
            self.t = self.restart_at
        assert self.controller is not None
        policy = self.controller.policy
        self.types = {t.name: t for t in policy.node_types}
        self.type_of = {
            (i, t.preemptible): t.name for t in policy.node_types for i in t.instance_types
        }
        self.usable = {t.name: usable_shape(t, policy) for t in policy.node_types}
        for key, entry in node_type_keys(config).items():
            node_type = config.node_type_of(entry)
            for name in expand_hostlist(key):
                self.ctld.nodes[name] = SNode(name, node_type, self.usable[node_type])
        self.offerings = [
            (i, t.preemptible, zone)
            for t in sorted(policy.node_types, key=lambda t: t.name)
            for i in t.instance_types
            for zone in config.provider.launch_zones
        ]
        self.note(
            f"faults: {self.plan.describe()}; power saving: {len(self.ctld.nodes)} Slurm "
            f"nodes, ResumeTimeout {RESUME_TIMEOUT:.0f}s"
        )

    def planner(self, snapshot: Snapshot, policy: Policy, state: PlannerState, now: float) -> Plan:
        return requests_only_planner(snapshot, policy, state, now)

    async def start_daemon(self, crashes: bool = True) -> bool:
        """A new process, built as ``shoal run`` builds it: controller, then the Slurm
        integration around it (its state from ``state_dir``), reconcile, background work (the
        operator's SIGHUPs too: ``sighups``)."""
        if crashes:  # a restart
            self.change_args()
        built = self.config  # the file as the process reads it
        try:
            controller = await self.new_controller(crashes)
            controller.store.writer = self.faulty_writer(controller.store.writer)
            integration = SlurmIntegration(
                self.config, self.clock, controller, controller.metrics, client=self.client
            )
            integration.source.listeners.append(self.check_status)
            await self.clock.run_until(controller.reconcile())
            if not crashes:
                self.faulty.arm(True)
        except (Crash, asyncio.CancelledError):  # cancelled: another task died (``kill``)
            if not self.faulty.dead:
                raise
            await self.bury()
            return False
        except Exception as exc:  # shoal run exits (startup_failed); systemd restarts it
            self.note(f"the daemon failed to start: {exc!r}")
            self.faulty.dead = True
            self.kill()
            await self.bury()
            return False
        self.controller, self.integration = controller, integration
        loop = asyncio.get_running_loop()
        self.tasks = [  # cancelled by ``bury`` with every other task of the dead process
            loop.create_task(integration.run(), name="slurm-integration"),
            loop.create_task(self.pump(integration.source, controller), name="slurm-pump"),
        ]
        if self.plan.reloads:
            self.tasks.append(loop.create_task(self.sighups(controller, built), name="sighups"))
        self.note(f"daemon started (incarnation {self.incarnation})")
        self.change_at = self.t
        return True

    async def pump(self, source: SlurmDemandSource, controller: Controller) -> None:
        """``Service._pump``: every read of the source into the controller."""
        async for update in source.updates():
            controller.set_demand(update)

    def kill(self) -> None:
        """kill -9: every task of the process stops where it is (the hooks' requests in
        flight get no answer); ``bury`` schedules the restart at the harness's next step."""
        me = asyncio.current_task()
        hooks, self.in_flight = self.in_flight, {}
        for task in asyncio.all_tasks():
            if task is not me and task is not self.main_task:
                task.cancel()
        # a hook whose POST had not been answered (or not even sent: a task cancelled before
        # it ran never runs) gets no answer now: it spools the request
        for request_id, (_, kind, hostlist) in hooks.items():
            self.spool(kind, hostlist, request_id, "the daemon died with the request")

    async def bury(self) -> None:
        self.integration = None
        await super().bury()

    def wrote(self, data: Any) -> None:
        self.on_disk = data.get("slurm") or {}
        self.check_holds()

    # -- Slurm's side -------------------------------------------------------------------------

    def tagged(self) -> Mapping[str, tuple[str, float | None]]:
        """Live instances: their Slurm node tag and when they joined, if they did (the
        cloud's truth)."""
        out = {}
        for name in self.cloud.worker_names():
            inst = self.cloud._instances[name]
            state = self.cloud.instance_state(name)
            if state in ("stopping", "stopped"):
                continue
            joined = inst.joined_at - EPOCH if state == "joined" else None
            out[name] = (inst.tags.get(TAG_SLURM_NODE, ""), joined)
        return out

    async def gate(self, command: str) -> bool:
        """Each Slurm command: a crash point of the daemon, a little latency, and slurmctld
        may not answer. True: the daemon dies right after the command takes effect."""
        after = self.faulty.point(command, command == "scontrol update")
        await self.clock.sleep(self.rng.uniform(0.01, 2.0))
        if self.faulty.dead:
            raise Crash(f"{command} by a dead process")
        if self.clock.now() - EPOCH < self.slurm_down_until:
            raise unavailable(command)
        return after

    async def late_answer(self, command: str) -> None:
        """``slowslurm``: the command took effect; its answer comes later."""
        if self.answer_rng.random() >= self.plan.slowslurm_p:
            return
        delay = self.answer_rng.uniform(1.0, 60.0)
        self.note(f"{command}: answer {delay:.0f}s late")
        await self.clock.sleep(delay)
        if self.faulty.dead:
            raise Crash(f"{command} answered to a dead process")

    def on_update(self, names: list[str], settings: Mapping[str, str]) -> None:
        """Shoal's ``scontrol update`` (tried: slurmctld may not answer), checked against the
        jobs: ``busy-killed``; a DOWN tried counts as failing the node's power-up."""
        state = settings.get("State", "").upper()
        if not (state == "DOWN" or state.startswith("POWER_DOWN")):
            return
        now = self.clock.now() - EPOCH
        live = self.tagged()
        for name in names:
            if state == "DOWN":
                self.down_tries[name] = now
            node = self.ctld.nodes.get(name)
            if node is None or node.job is None:
                continue
            since = self.resume_calls.get(name, node.since)
            serving = sorted(
                i
                for i, (tag, _) in live.items()
                if tag == name and self.cloud._instances[i].launched_at - EPOCH >= since
            )
            powering_up = node.power == "resuming" and now - node.since < RESUME_TIMEOUT
            if node.power == "up" or serving or (state != "DOWN" and powering_up):
                self.violate(
                    "busy-killed",
                    f"shoal set {name} {state} while job {node.job} "
                    f"{'runs' if node.power == 'up' else 'waits'} on it "
                    f"(instances {serving or node.instance})",
                )

    def hook(self, kind: str, names: list[str], resume_file: Mapping[str, Any] | None) -> None:
        """slurmctld runs ``shoal slurm-<kind> <hostlist>``."""
        hostlist = compress_hostlist(names)
        request_id = f"hook-{self.seed}-{next(self.hook_ids)}"
        now = self.clock.now() - EPOCH
        if kind == "resume":
            for name in names:
                self.resume_calls[name] = now
        elif kind == "suspend":
            live = self.tagged()
            for name in names:
                ids = frozenset(i for i, (tag, _) in live.items() if tag == name)
                if ids:
                    self.suspend_calls.append((now, name, ids))
        integration = self.integration
        if integration is None or self.faulty.dead:
            self.spool(kind, hostlist, request_id, "the daemon is down")
            return
        task = asyncio.get_running_loop().create_task(
            self.post(integration, kind, hostlist, resume_file, request_id)
        )
        self.in_flight[request_id] = (task, kind, hostlist)

    async def post(
        self,
        integration: SlurmIntegration,
        kind: str,
        hostlist: str,
        resume_file: Mapping[str, Any] | None,
        request_id: str,
    ) -> None:
        """The hook's POST, handled as the HTTP route handles it."""
        try:
            answer = await integration._accept(
                kind.replace("-", "_"), hostlist, dict(resume_file or {}), request_id
            )
        except (Crash, asyncio.CancelledError):
            if self.in_flight.pop(request_id, None) is not None:  # else ``kill`` spooled it
                self.spool(kind, hostlist, request_id, "the daemon died with the request")
            return
        self.in_flight.pop(request_id, None)
        self.check_saved(kind, request_id, answer)
        integration._spool_wake.set()
        if self.rng.random() < self.plan.late_p:
            self.spool(kind, hostlist, request_id, "the answer came too late")

    def spool(self, kind: str, hostlist: str, request_id: str, why: str) -> None:
        """Run the real hook (another process: its fsyncs are not the daemon's loop's) with a
        POST that got no answer."""

        def no_answer(*args: Any, **kwargs: Any) -> dict[str, Any]:
            raise hook.Unreachable(f"no answer: {why}")

        out = io.StringIO()
        send, new_id = hook.send, spool.new_request_id
        hook.send = no_answer  # type: ignore[assignment]
        spool.new_request_id = lambda: request_id
        _Executor.inside = True
        try:
            with contextlib.redirect_stderr(out), contextlib.redirect_stdout(out):
                code = hook.main(["-c", str(self.hook_config), hostlist], kind=kind)
        finally:
            hook.send, spool.new_request_id = send, new_id  # type: ignore[assignment]
            _Executor.inside = False
        self.note(
            f"hook {kind} {hostlist}: {why}: "
            + ("spooled" if code == 0 else f"exit {code}, the request is lost")
        )

    # -- the run ------------------------------------------------------------------------------

    async def run(self) -> harness.SeedResult:
        await self.setup()
        jobs = make_jobs(self.seed)
        windows = list(self.plan.windows)
        ends: list[tuple[float, str, Any]] = []
        i = wi = 0
        self.last_pass = -1e9
        self.restart_at = 0.0
        while True:
            times = [END]
            if i < len(jobs):
                times.append(jobs[i].submit)
            if wi < len(windows):
                times.append(windows[wi].start)
            if self.edits < len(self.plan.reloads):
                times.append(self.plan.reloads[self.edits].at)
            if ends:
                times.append(min(e[0] for e in ends))
            event = self.ctld.next_event()
            if event is not None:
                times.append(event)
            times += self.join_times()
            if self.suspend_calls:
                times.append(self.suspend_calls[0][0] + SUSPEND_BOUND)
            c = self.controller
            if c is None:
                times.append(self.restart_at)
            else:
                due = self.last_pass + self.config.scaler.interval
                if self.change_at is not None:
                    due = min(due, self.change_at + self.config.scaler.debounce)
                times.append(due)
            if self.t < FAULT_END:
                times.append(FAULT_END)
            t = max(self.t, min(times))
            await self.clock.advance(EPOCH + t - self.clock.now())
            self.t = t
            if self.faulty.dead and self.controller is not None:
                await self.bury()
            while i < len(jobs) and jobs[i].submit <= t:
                self.submit(jobs[i])
                i += 1
            while wi < len(windows) and windows[wi].start <= t:
                self.open_power_window(windows[wi], ends)
                wi += 1
            for end in [e for e in ends if e[0] <= t]:
                ends.remove(end)
                self.close_power_window(end)
            self.edit_config(t)  # (a live daemon's ``sighups`` made it already)
            if t >= FAULT_END and self.faulty.armed:
                self.faulty.arm(False)
                self.note("calm: no new faults")
            self.ctld.step()
            self.check_suspends()
            self.check_holds()
            c = self.controller
            if c is None:
                if t >= self.restart_at:
                    await self.start_daemon()
                continue
            if c._demand_changed.is_set():
                c._demand_changed.clear()
                self.change_at = self.t if self.change_at is None else self.change_at
            if t >= END:
                break
            due = self.last_pass + self.config.scaler.interval
            if self.change_at is not None:
                due = min(due, self.change_at + self.config.scaler.debounce)
            if t >= due:
                await self.one_pass(c)
                if self.faulty.dead and self.controller is not None:
                    await self.bury()
        self.check_end()
        return self.result(len(jobs))

    def first_offering(self, offering: Offering) -> Offering:
        """The first offering of the node type ``offering`` belongs to (its first instance
        type in the first zone)."""
        preemptible = offering.capacity_type is CapacityType.SPOT
        node_type = self.types[self.type_of[offering.instance_type, preemptible]]
        zone = self.config.provider.launch_zones[0]
        return Offering(node_type.instance_types[0], zone, offering.capacity_type)

    def submit(self, job: harness.Job) -> None:
        shape = job.shape
        fits = [
            n
            for n, u in sorted(self.usable.items())
            if not shape.fits_in(u) and (shape.preemptible or not self.types[n].preemptible)
        ]
        if not fits:
            return
        self.ctld.submit(SJob(job.id, job.submit, shape, job.run, tuple(fits)))

    def join_times(self) -> list[float]:
        """When the next instances join (a powering-up node registers then)."""
        out = []
        for name in self.cloud.worker_names():
            at = self.cloud._instances[name].joined_at - EPOCH
            if at > self.t and at != float("inf"):
                out.append(at)
        return [min(out)] if out else []

    def open_power_window(self, w: Any, ends: list[tuple[float, str, Any]]) -> None:
        if w.kind == "capacity":
            offering = self.offerings[int(w.pick * len(self.offerings))]
            itype, preemptible, zone = offering
            self.cloud.set_unavailable(itype, preemptible, zone=zone)
            ends.append((w.end, "capacity", offering))
            kind = CapacityType.SPOT if preemptible else CapacityType.ON_DEMAND
            self.note(f"no capacity for {itype} {kind} in {zone} until t={w.end:.1f}")
        elif w.kind == "stockout":
            types = sorted(self.types)
            name = types[int(w.pick * len(types))]
            hit = [o for o in self.offerings if self.type_of[o[0], o[1]] == name]
            for itype, preemptible, zone in hit:
                self.cloud.set_unavailable(itype, preemptible, zone=zone)
            ends.append((w.end, "stockout", hit))
            self.note(f"no capacity for any offering of {name} until t={w.end:.1f}")
        elif w.kind == "flicker":
            node_type = self.types[sorted(self.types)[int(w.pick * len(self.types))]]
            capacity = CapacityType.SPOT if node_type.preemptible else CapacityType.ON_DEMAND
            first = node_type.instance_types[0], self.config.provider.launch_zones[0]
            offering = Offering(first[0], first[1], capacity)
            self.flickering.add(offering)
            self.cloud.set_unavailable(first[0], node_type.preemptible, zone=first[1])
            ends.append((w.end, "flicker", offering))
            self.note(f"no capacity for {offering} until a launch tries it")
        elif w.kind == "unlisted":  # a node's instance: Slurm's view of it does not change
            self.unlist(w, (n for n, (tag, joined) in self.tagged().items() if joined is not None))
        elif w.kind == "slurmerr":
            self.slurm_down_until = max(self.slurm_down_until, w.end)
            self.note(f"slurmctld does not answer until t={w.end:.1f}")

    def close_power_window(self, end: tuple[float, str, Any]) -> None:
        _, kind, target = end
        if kind == "capacity":
            itype, preemptible, zone = target
            self.cloud.set_unavailable(itype, preemptible, code=None, zone=zone)
            self.note(f"capacity back for {itype} in {zone}")
        elif kind == "flicker" and target in self.flickering:  # no launch tried it
            self.flickering.discard(target)
            preemptible = target.capacity_type is CapacityType.SPOT
            self.cloud.set_unavailable(
                target.instance_type, preemptible, code=None, zone=target.zone
            )
        elif kind == "stockout":
            for itype, preemptible, zone in target:
                self.cloud.set_unavailable(itype, preemptible, code=None, zone=zone)
            self.note("capacity back for every offering of the type")
        elif kind == "slurmerr" and self.t >= self.slurm_down_until:
            self.note("slurmctld answers again")

    async def one_pass(self, c: Controller) -> None:
        self.change_at = None
        self.passes += 1
        try:
            record = await self.clock.run_until(c.run_pass())
        except (Crash, asyncio.CancelledError):  # cancelled: another task died (``kill``)
            if not self.faulty.dead:
                raise
            await self.bury()
            return
        finally:
            self.t = max(self.t, self.clock.now() - EPOCH)
        self.last_pass = self.t
        if record.launched or record.terminated or record.errors:
            self.note(
                f"pass {record.number}: {record.outcome} launched={record.launched} "
                f"terminated={len(record.terminated)} errors={len(record.errors)}"
            )

    # -- invariants ---------------------------------------------------------------------------

    def observe_call(self, op: str, phase: str, arg: Any, result: Any) -> None:
        if (
            op == "RunInstances"
            and isinstance(result, CapacityError)
            and arg.offering in self.flickering
        ):
            offering = arg.offering
            self.flickering.discard(offering)
            preemptible = offering.capacity_type is CapacityType.SPOT
            self.cloud.set_unavailable(
                offering.instance_type, preemptible, code=None, zone=offering.zone
            )
            self.note(f"capacity back at once for {offering}")
            self.flickered_at = self.clock.now()
        if op == "RunInstances":
            if phase == "before":
                self._names_before = set(self.cloud.worker_names())
                return
            new = [n for n in self.cloud.worker_names() if n not in self._names_before]
            if not new:
                return
            self.launched_total += len(new)
            # a launch on an offering other than its type's first (the first was in backoff,
            # or failed) is where a replay after a restart may choose differently
            odds = CRASH_AFTER_LAUNCH[arg.offering != self.first_offering(arg.offering)]
            if self.flickered_at == self.clock.now():  # the offering before has capacity again
                odds = CRASH_AFTER_FLICKER
            if self.rng.random() < odds:
                self.faulty.crash_soon(2)
            tags = {n: self.cloud._instances[n].tags.get(TAG_SLURM_NODE, "-") for n in new}
            self.note(
                "launched " + ", ".join(f"{n} for {tags[n]}" for n in new) + f" ({arg.offering})"
            )
            # an instance the ``unlisted`` fault hides is not counted (as in push mode's
            # ``duplicate-launch``): the daemon cannot tell it from one that is gone
            by_node: dict[str, list[str]] = collections.defaultdict(list)
            hidden = self.hidden()
            for name, (tag, _) in self.tagged().items():
                if name not in hidden:
                    by_node[tag].append(name)
            for node, ids in sorted(by_node.items()):
                if node and len(ids) > 1 and node not in self.duplicated:
                    self.duplicated.add(node)
                    self.violate(
                        "slurm-duplicate", f"{len(ids)} live instances for {node}: {sorted(ids)}"
                    )
            alive, limits = self.alive(), self.limits()  # the max in force (``reload``)
            for nt, n in alive.items():
                if nt and n > limits[nt]:
                    self.violate("over-max", f"{n} live instances of {nt} (max {limits[nt]})")
        elif op == "TerminateInstances":
            if phase == "before" or isinstance(result, BaseException):
                return
            gone = [n for n, st in result.items() if st is TerminationStatus.TERMINATED]
            if gone:
                self.note(f"shoal terminated {', '.join(gone)}")
            for name in gone:
                for node in self.ctld.nodes.values():
                    if node.instance == name and node.power == "up" and node.job is not None:
                        self.violate(
                            "busy-killed",
                            f"shoal terminated {name}, the instance of {node.name}, which runs "
                            f"job {node.job}",
                        )

    def check_status(self, snapshot: SlurmSnapshot) -> None:
        """``status-terminated``, after each read: the integration's view maps no node to an
        instance the cloud terminated."""
        integration = self.integration
        if integration is None:
            return
        # /v1/slurm's "power_saving" is the power saver's status; the rest of the answer
        # (every node's state text) is not checked here, so it is not built
        power = integration.power.status() if integration.power is not None else {}
        for node, instance in sorted(power.get("instances", {}).items()):
            if self.cloud.instance_state(instance) == "terminated":
                if (node, instance) in self.bad_status:
                    continue
                self.bad_status.add((node, instance))
                self.violate(
                    "status-terminated",
                    f"/v1/slurm maps {node} to {instance}, which is terminated (after a read)",
                )

    def check_holds(self) -> None:
        """``down-unheld``: every node DOWN for a reason of the power saver's has a hold on
        disk."""
        holds = self.on_disk.get("kept_down", {})
        for node in self.ctld.nodes.values():
            reason = node.down or ""
            if not reason.startswith("shoal:") or reason.startswith("shoal: powering up for"):
                continue
            key = (node.name, self.down_tries.get(node.name, -1.0))
            if node.name not in holds and key not in self.unheld:
                self.unheld.add(key)
                self.violate(
                    "down-unheld",
                    f"{node.name} is DOWN ({reason!r}, set at t={key[1]:.1f}) and the state "
                    "file holds no hold for it: a restart would leave it DOWN",
                )

    def check_saved(self, kind: str, request_id: str, answer: Mapping[str, Any]) -> None:
        """``unsaved-answer``: what the daemon answered for is on disk."""
        accepted = list(answer.get("accepted", ()))
        if accepted and request_id not in self.on_disk.get("accepted_ids", ()):
            self.violate(
                "unsaved-answer",
                f"the daemon answered hook {request_id} ({kind} {','.join(accepted)}) before "
                "it was on disk (its request id is not in the state file)",
            )

    def check_suspends(self) -> None:
        now = self.t
        while self.suspend_calls and self.suspend_calls[0][0] + SUSPEND_BOUND <= now:
            at, name, ids = self.suspend_calls.pop(0)
            if self.resume_calls.get(name, -1.0) > at:
                continue
            left = sorted(i for i in ids if self.cloud.instance_state(i) != "terminated")
            if left:
                self.violate(
                    "hook-lost",
                    f"slurmctld suspended {name} at t={at:.1f}; its instance(s) {left} still "
                    f"live {SUSPEND_BOUND:.0f}s later",
                )

    def on_resume_timeout(self, name: str, since: float) -> None:
        """slurmctld gave up on a power-up: shoal must have served or failed it."""
        tried = self.down_tries.get(name, -1.0)
        if tried >= since:
            return
        launched = sorted(
            n
            for n, inst in self.cloud._instances.items()
            if inst.tags.get(TAG_SLURM_NODE) == name and inst.launched_at - EPOCH >= since
        )
        self.violate(
            "hook-lost",
            f"slurmctld resumed {name} at t={since:.1f}; by ResumeTimeout "
            f"({RESUME_TIMEOUT:.0f}s) it neither registered nor was set DOWN by shoal "
            f"(instances launched for it since, still live: {launched or 'none'})",
        )
