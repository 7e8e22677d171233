"""A simulated slurmctld in power-saving mode, for the chaos harness's ``power_save`` mode.

It behaves as Slurm documents power saving (https://slurm.schedmd.com/power_save.html), on
fixed node names (``slurm.node_types``, or the names derived from ``node_types``), one job
per node (exclusive jobs):

- a pending job is allocated an idle registered node of a type it fits, else a powered-down
  one (``idle~``), which goes POWERING_UP: slurmctld calls ResumeProgram for the nodes it
  powered up in the same step (one hostlist, ``SLURM_RESUME_FILE``'s jobs);
- a node registers when an instance tagged ``shoal:slurm-node=<node>`` joins (the cloud's
  truth) after the node's power-up began; its job then runs. A node not registered
  ResumeTimeout after its power-up is set DOWN ("ResumeTimeout reached") and powered down,
  its job requeued, and slurmctld calls ResumeFailProgram;
- a registered node idle for SuspendTime is powered down: SuspendProgram is called, the node
  is POWERING_DOWN for SuspendTimeout, then ``idle~`` again (Slurm does not wait for the
  instance to go);
- a registered node whose instance is gone stops responding: after SlurmdTimeout it is set
  DOWN ("Not responding") and powered down, its job requeued;
- ``scontrol update State=DOWN`` requeues the node's job and leaves it DOWN (powered down if
  it was powering up); ``State=POWER_DOWN`` requeues its job, calls SuspendProgram for a
  node that was up or powering up and returns it to the pool (``idle~``) after
  SuspendTimeout, clearing DOWN.

The hook programs are the harness's (``hook`` callback): it hands each call to the daemon as
``shoal slurm-<kind>`` would. ``FakeSlurmClient`` is a ``SlurmClient`` that answers from this
model instead of running squeue, sinfo and scontrol; with the ``slurmerr`` fault its
commands fail for a while (slurmctld not responding), and each command takes a little time.
"""

from __future__ import annotations

import math
from collections.abc import Awaitable, Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from shoal.daemon.slurm.client import SlurmClient
from shoal.daemon.slurm.errors import SlurmCommandError, SlurmUnavailableError
from shoal.daemon.slurm.parse import SlurmJob, SlurmNode, compress_hostlist, expand_hostlist
from shoal.runtime.testing import FakeClock
from shoal.scaler.shape import Shape

__all__ = ["FakeSlurmClient", "SJob", "SNode", "SlurmCtld"]

RESUME_TIMEOUT = 900.0
SUSPEND_TIME = 300.0
SUSPEND_TIMEOUT = 30.0
SLURMD_TIMEOUT = 60.0
NOT_RESPONDING = "Not responding"
RESUME_TIMEOUT_REASON = "ResumeTimeout reached"


@dataclass(slots=True)
class SJob:
    id: int
    submit: float
    shape: Shape
    run: float
    types: tuple[str, ...]  # node types it fits, in preference order
    node: str | None = None
    started: float | None = None  # running since (its node registered)
    restarts: int = 0
    done: bool = False


@dataclass(slots=True)
class SNode:
    name: str
    node_type: str
    usable: Shape
    power: str = "off"  # off (idle~), resuming (POWERING_UP), up, suspending (POWERING_DOWN)
    since: float = 0.0  # resuming: power-up time; suspending: when it is off; up: idle since
    down: str | None = None  # DOWN with this reason
    job: int | None = None
    instance: str | None = None  # the registered instance
    lost_at: float | None = None  # up: when its instance was found gone
    addr: str = ""


@dataclass(slots=True)
class SlurmCtld:
    """The model; ``step(t)`` applies everything due up to ``t``."""

    nodes: dict[str, SNode]
    clock: FakeClock
    epoch: float
    # (kind, hostlist, resume_file) -> None: slurmctld runs a hook program
    hook: Callable[[str, list[str], Mapping[str, Any] | None], None]
    # instance id -> (slurm node tag, joined at or None) for every live instance: the
    # cloud's truth
    instances: Callable[[], Mapping[str, tuple[str, float | None]]]
    note: Callable[[str], None]
    # (node, powered up at): a node did not register by ResumeTimeout
    on_timeout: Callable[[str, float], None]
    jobs: dict[int, SJob] = field(default_factory=dict)
    pending: list[int] = field(default_factory=list)  # FIFO (requeued jobs keep their place)
    finished: int = 0
    version: int = 0
    # slurm_nodes' last answer and what it was built from
    _shown_key: tuple[Any, ...] = ()
    _shown: tuple[SlurmNode, ...] = ()

    def t(self) -> float:
        return self.clock.now() - self.epoch

    # -- time -------------------------------------------------------------------------------

    def next_event(self) -> float | None:
        times: list[float] = []
        for n in self.nodes.values():
            if n.power == "resuming":
                times.append(n.since + RESUME_TIMEOUT)
            elif n.power == "suspending":
                times.append(n.since)
            elif n.power == "up":
                if n.job is None and n.down is None:
                    times.append(n.since + SUSPEND_TIME)
                if n.lost_at is not None:
                    times.append(n.lost_at + SLURMD_TIMEOUT)
        for j in self.jobs.values():
            if j.started is not None and not j.done:
                times.append(j.started + j.run)
        return min(times, default=None)

    def submit(self, job: SJob) -> None:
        self.jobs[job.id] = job
        self.pending.append(job.id)
        self.version += 1

    def step(self) -> None:
        t = self.t() + 1e-6  # the clock reads EPOCH + t: rounding may put it a hair before t
        live = self.instances()
        resume_fail: list[str] = []
        suspend: list[str] = []
        for n in self.nodes.values():
            if n.power == "resuming":
                # a slurmd that started after the power-up registers (one left running on an
                # instance that is being terminated after a suspend does not)
                joined = [
                    i
                    for i, (tag, at) in sorted(live.items())
                    if tag == n.name and at is not None and at >= n.since
                ]
                if joined:
                    n.power, n.instance, n.since = "up", joined[0], t
                    self.note(f"slurm: {n.name} registered ({joined[0]})")
                    job = self.jobs.get(n.job) if n.job is not None else None
                    if job is not None:
                        job.started = t
                    self.version += 1
                elif t >= n.since + RESUME_TIMEOUT:
                    self.note(f"slurm: {n.name} not registered by ResumeTimeout: DOWN")
                    self.on_timeout(n.name, n.since)
                    self._requeue(n)
                    n.power, n.down = "off", RESUME_TIMEOUT_REASON
                    resume_fail.append(n.name)
            elif n.power == "suspending" and t >= n.since:
                n.power = "off"
                self.version += 1
            elif n.power == "up":
                if n.instance not in live:
                    if n.lost_at is None:
                        n.lost_at = t
                    elif t >= n.lost_at + SLURMD_TIMEOUT:
                        self.note(f"slurm: {n.name} not responding: DOWN")
                        self._requeue(n)
                        n.power, n.down, n.instance, n.lost_at = "off", NOT_RESPONDING, None, None
                        continue
                job = self.jobs.get(n.job) if n.job is not None else None
                if job is not None and job.started is not None and t >= job.started + job.run:
                    job.done, job.node, n.job, n.since = True, None, None, t
                    self.finished += 1
                    self.version += 1
                if n.job is None and n.down is None and t >= n.since + SUSPEND_TIME:
                    suspend.append(n.name)
                    self._power_off(n, t)
        if resume_fail:
            self.hook("resume-fail", resume_fail, None)
        if suspend:
            self.note(f"slurm: SuspendTime: {compress_hostlist(suspend)}")
            self.hook("suspend", suspend, None)
        self.schedule()

    def schedule(self) -> None:
        t = self.t()
        resumed: list[tuple[str, int]] = []
        for job_id in list(self.pending):
            job = self.jobs[job_id]
            node = self._free(job, "up") or self._free(job, "off")
            if node is None:
                continue
            self.pending.remove(job_id)
            job.node, node.job = node.name, job_id
            self.version += 1
            if node.power == "up":
                job.started = t
            else:
                node.power, node.since = "resuming", t
                resumed.append((node.name, job_id))
        if resumed:
            names = [n for n, _ in resumed]
            self.note(f"slurm: ResumeProgram {compress_hostlist(names)}")
            jobs = [{"job_id": j, "nodes": n} for n, j in resumed]
            self.hook("resume", names, {"jobs": jobs})

    def _free(self, job: SJob, power: str) -> SNode | None:
        for node_type in job.types:
            for n in self.nodes.values():
                if (
                    n.node_type == node_type
                    and n.power == power
                    and n.job is None
                    and n.down is None
                    and n.lost_at is None
                ):
                    return n
        return None

    def _requeue(self, n: SNode) -> None:
        if n.job is None:
            return
        job = self.jobs[n.job]
        job.node, job.started, n.job = None, None, None
        job.restarts += 1
        self.pending.append(job.id)
        self.pending.sort()
        self.version += 1
        self.note(f"slurm: job {job.id} requeued from {n.name}")

    def _power_off(self, n: SNode, t: float) -> None:
        n.power, n.since, n.instance, n.lost_at = "suspending", t + SUSPEND_TIMEOUT, None, None
        self.version += 1

    # -- scontrol ---------------------------------------------------------------------------

    def update(self, names: Sequence[str], settings: Mapping[str, str]) -> list[str]:
        """``scontrol update``; the nodes SuspendProgram is called for."""
        unknown = [n for n in names if n not in self.nodes]
        if unknown:
            raise SlurmCommandError(f"Invalid node name specified {unknown[0]}", code="1")
        state = settings.get("State", "").upper()
        t = self.t()
        suspend: list[str] = []
        for name in names:
            n = self.nodes[name]
            if state == "DOWN":
                self._requeue(n)
                n.down = settings.get("Reason", "")
                if n.power == "resuming":
                    n.power = "off"
                self.version += 1
            elif state.startswith("POWER_DOWN"):
                self._requeue(n)
                n.down = None
                if n.power in ("up", "resuming"):
                    suspend.append(name)
                    self._power_off(n, t)
                self.version += 1
            if "NodeAddr" in settings:
                n.addr = settings["NodeAddr"]
        return suspend

    # -- reads ------------------------------------------------------------------------------

    def slurm_jobs(self) -> tuple[SlurmJob, ...]:
        out = []
        t = self.t()
        for job in sorted(self.jobs.values(), key=lambda j: j.id):
            if job.done:
                continue
            if job.node is None:
                state, reason = "PENDING", "Resources"
            elif job.started is None:
                state, reason = "CONFIGURING", "None"
            else:
                state, reason = "RUNNING", "None"
            cpus = max(1, math.ceil(job.shape.cores))
            out.append(
                SlurmJob(
                    job_id=str(job.id),
                    state=state,
                    reason=reason,
                    priority=1000,
                    restarts=job.restarts,
                    cpus=cpus,
                    min_cpus_per_node=cpus,
                    min_memory=int(job.shape.memory),
                    nodes=1,
                    time_limit=job.shape.wallTime,
                    time_used=0.0 if job.started is None else t - job.started,
                    partitions=("cloud",),
                    node_list=() if job.node is None else (job.node,),
                )
            )
        return tuple(out)

    def slurm_nodes(self) -> tuple[SlurmNode, ...]:
        """sinfo's nodes; rebuilt only when what it shows of a node changed (most reads
        find none changed)."""
        key = tuple(
            (n.name, n.power, n.down, n.job is None, n.lost_at is None, n.addr)
            for n in self.nodes.values()
        )
        if key != self._shown_key:
            self._shown_key, self._shown = key, self._build_nodes()
        return self._shown

    def _build_nodes(self) -> tuple[SlurmNode, ...]:
        out = []
        for n in self.nodes.values():
            flags = {"CLOUD"}
            if n.power == "off":
                flags.add("POWERED_DOWN")
            elif n.power == "resuming":
                flags.add("POWERING_UP")
            elif n.power == "suspending":
                flags.add("POWERING_DOWN")
            elif n.lost_at is not None:
                flags.add("NOT_RESPONDING")
            if n.down is not None:
                state = "DOWN"
            elif n.job is not None:
                state = "ALLOCATED"
            else:
                state = "IDLE"
            cpus = max(1, int(n.usable.cores))
            out.append(
                SlurmNode(
                    name=n.name,
                    state=state,
                    flags=frozenset(flags),
                    cpus_allocated=cpus if n.job is not None else 0,
                    address=n.addr or n.name,
                    reason=n.down or "",
                )
            )
        return tuple(out)


class FakeSlurmClient(SlurmClient):
    """squeue, sinfo and scontrol answered by ``SlurmCtld``. ``gate(command)`` is awaited at
    each command: it may sleep (the command's latency) and raise (slurmctld not responding,
    the calling process dies before the command takes effect); it returns True when the
    process dies right after the command took effect (then ``die(command)`` is called).
    ``on_update(names, settings)`` sees every ``scontrol update`` shoal tries; ``answer``,
    if given, is awaited once an ``scontrol update`` took effect, before it returns (a late
    answer)."""

    def __init__(
        self,
        ctld: SlurmCtld,
        gate: Callable[[str], Awaitable[bool]],
        on_update: Callable[[list[str], Mapping[str, str]], None],
        die: Callable[[str], None],
        answer: Callable[[str], Awaitable[None]] | None = None,
    ) -> None:
        super().__init__()
        self.ctld = ctld
        self.gate = gate
        self.on_update = on_update
        self.die = die
        self.answer = answer

    async def run(self, argv: Sequence[str]) -> str:  # never a real command
        raise SlurmCommandError(f"the simulated slurmctld runs no {argv[0]}", code="exec")

    async def jobs(self) -> tuple[SlurmJob, ...]:
        await self.gate("squeue")
        return self.ctld.slurm_jobs()

    async def nodes(self) -> tuple[SlurmNode, ...]:
        await self.gate("sinfo")
        return self.ctld.slurm_nodes()

    async def config(self) -> dict[str, str]:
        await self.gate("scontrol show config")
        return {"ResumeTimeout": f"{RESUME_TIMEOUT:.0f} sec", "SuspendTime": f"{SUSPEND_TIME:.0f}"}

    async def update_nodes(self, nodes: str | Iterable[str], **settings: str) -> None:
        names = expand_hostlist(nodes if isinstance(nodes, str) else ",".join(nodes))
        self.on_update(names, settings)
        after = await self.gate("scontrol update")
        suspend = self.ctld.update(names, settings)
        if suspend:
            self.ctld.hook("suspend", suspend, None)
        self.ctld.schedule()
        if after:
            self.die("scontrol update")
        if self.answer is not None:
            await self.answer("scontrol update")

    async def delete_nodes(self, nodes: str | Iterable[str]) -> None:
        await self.gate("scontrol delete")
        raise SlurmCommandError("cloud nodes of power saving are not dynamic nodes", code="1")


def unavailable(command: str) -> SlurmUnavailableError:
    return SlurmUnavailableError(
        f"{command}: Unable to contact slurm controller (connect failure)", code="1"
    )
