"""Job demand: the body of ``PUT /v1/demand``, and the sources the control loop reads it from.

Body (JSON; a demand file may also be YAML)::

    {"jobs":    [{"cores": 1, "memory": "2GiB", "disk": "1GiB", "wall_time": "10m",
                  "preemptible": false, "count": 100, "node_count": 1}],
     "running": [{"node": "w-1", "cores": 1, "memory": "2GiB", "disk": "1GiB",
                  "wall_time": "10m", "elapsed": "3m"}],
     "nodes":   ["w-1"]}          # optional: nodes the scheduler reports as joined

``parse_demand(raw)`` returns a ``DemandUpdate`` (a ``scaler.Demand`` with jobs of identical
shape and node count aggregated, plus the joined node names or ``None``) or raises
``DemandError`` whose ``messages`` name each bad field and value. ``parse_demand(raw,
reports)`` also checks the body says what its source promised (``DemandReports``): a source
that reports running jobs sends ``"running": []`` when none run, one that reports joined
nodes always sends ``"nodes"``.

The observation contract: every ``DemandUpdate`` says when it was observed (``at``) and how old
it may grow before it is stale (``max_age``: pushed demand has one, a source polled by the
daemon refreshes it itself); a source that cannot read its scheduler sends ``DemandFailure``,
which makes the demand stale at once. The loop launches and removes nothing on stale demand.

A source is an async iterator of those (``DemandSource.updates()``), polling on the injected
clock. ``FileDemandSource`` re-reads its file when mtime or size changes (the demand is as old
as the file); a malformed file is logged and the previous demand kept. ``DemoDemandSource``
derives demand from the clock: a burst of queued jobs, then those jobs running, then nothing,
repeating every ``period`` seconds, so a daemon visibly scales up and then down.
"""

from __future__ import annotations

import json
import logging
import os
from collections.abc import AsyncIterator, Callable, Mapping, Sequence
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Annotated, Any, Protocol

import yaml
from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    ValidationError,
)
from shoal.daemon.units import Duration, Size
from shoal.runtime.clock import Clock
from shoal.scaler.model import Demand, QueuedJobs, RunningJob
from shoal.scaler.shape import Shape

__all__ = [
    "MAX_COUNT",
    "MAX_NODE_COUNT",
    "DemandBody",
    "DemandError",
    "DemandFailure",
    "DemandReports",
    "DemandSource",
    "DemandUpdate",
    "DemoDemandSource",
    "FileDemandSource",
    "parse_demand",
]

log = logging.getLogger(__name__)

MAX_COUNT = 10_000_000
# Nodes one (multi-node) job may ask for: beyond any cluster shoal scales, so a larger
# number is a client's mistake (a total of cores where cores per node was meant)
MAX_NODE_COUNT = 10_000
MAX_BODY_BYTES = 16 * 1024 * 1024

# the attribute docstrings are the field descriptions of `shoal demand-schema`
_STRICT = ConfigDict(
    extra="forbid", frozen=True, allow_inf_nan=False, use_attribute_docstrings=True
)


class JobsBody(BaseModel):
    """``count`` queued jobs of one shape; ``wall_time`` is the expected run time."""

    model_config = _STRICT
    cores: float = Field(gt=0, le=100_000)
    """Cores one job needs (fractions allowed)."""
    memory: Size
    """Memory one job needs: bytes, or "2GiB", "512MiB", "1G"."""
    disk: Size = 0
    """Disk one job needs."""
    wall_time: Duration = 3600.0
    """The job's expected run time: seconds, or "10m", "1h30m"."""
    preemptible: bool = False
    """The job may run on spot (preemptible) nodes."""
    count: int = Field(default=1, ge=1, le=MAX_COUNT)
    """How many queued jobs have this shape."""
    node_count: int = Field(default=1, ge=1, le=MAX_NODE_COUNT)
    """Nodes each job runs on at once (an MPI job, Slurm's -N); cores, memory and disk are
    then per node. shoal launches all of a job's nodes, of one node type, or none."""


class RunningBody(BaseModel):
    """One running job on ``node``, ``elapsed`` into its expected ``wall_time``."""

    model_config = _STRICT
    node: str = Field(min_length=1)
    """The node it runs on, named as shoal lists its workers (on EC2 the instance id, as
    GET /v1/status shows them); jobs on other nodes count for no node."""
    cores: float = Field(gt=0, le=100_000)
    """Cores it holds."""
    memory: Size
    """Memory it holds."""
    disk: Size = 0
    """Disk it holds."""
    wall_time: Duration = 3600.0
    """Its expected run time."""
    elapsed: Duration = 0.0
    """How long it has run: it frees its node after about wall_time - elapsed."""
    preemptible: bool = False
    """It may run on spot nodes."""


class DemandBody(BaseModel):
    """The body of ``PUT /v1/demand``: the whole demand now, replacing the last one."""

    model_config = _STRICT
    jobs: tuple[JobsBody, ...] = ()
    """Queued jobs waiting for capacity, by shape."""
    running: tuple[RunningBody, ...] = ()
    """Every running job, per node: a node running none is idle and may be scaled down.
    Required (send [] when none run) when demand.reports holds "running"."""
    nodes: tuple[Annotated[str, Field(min_length=1)], ...] | None = None
    """The nodes that have joined the scheduler, named as in running (a node listed is
    ready, one not listed is still booting). Required when demand.reports holds "joined";
    otherwise optional."""


@dataclass(frozen=True, slots=True)
class DemandUpdate:
    """A demand snapshot and, when the sender knows it, which nodes have joined the scheduler.

    ``at`` is when the source observed it (None: when it reached the loop); past ``max_age``
    seconds after that it is stale (None: never)."""

    demand: Demand
    joined_nodes: frozenset[str] | None = None
    at: float | None = None
    max_age: float | None = None
    # nodes the scheduler shows drained (no new work; not in joined_nodes): never room
    draining_nodes: frozenset[str] = frozenset()
    # those of them drained with shoal's own reason; None: the source reports no reasons
    # (then the instance's draining tag tells shoal's drains from anyone else's)
    own_drains: frozenset[str] | None = None
    # who sent it: "push" (PUT /v1/demand), or the polling source's ``name`` ("file",
    # "demo", "slurm"); /v1/status names the one that fed the last pass
    source: str | None = None


@dataclass(frozen=True, slots=True)
class DemandFailure:
    """A source could not read its scheduler: the last demand is kept but stale from ``at``."""

    reason: str
    at: float


@dataclass(frozen=True, slots=True)
class DemandReports:
    """What a source reports besides queued jobs: running jobs per node (so a node running
    none is idle), and the nodes that joined the scheduler."""

    running: bool = False
    joined: bool = False


class DemandError(ValueError):
    """A demand body that cannot be used; ``messages`` has one line per problem."""

    def __init__(self, messages: list[str]) -> None:
        self.messages = messages
        super().__init__("invalid demand: " + "; ".join(messages))


def _loc(loc: tuple[int | str, ...]) -> str:
    out = ""
    for part in loc:
        out += f"[{part}]" if isinstance(part, int) else (f".{part}" if out else str(part))
    return out or "(body)"


def _decode(raw: bytes | str | Mapping[str, Any]) -> Any:
    if isinstance(raw, Mapping):
        return raw
    if isinstance(raw, bytes):
        if len(raw) > MAX_BODY_BYTES:
            raise DemandError([f"body is {len(raw)} bytes; at most {MAX_BODY_BYTES} allowed"])
        try:
            raw = raw.decode("utf-8")
        except UnicodeDecodeError as exc:
            raise DemandError([f"body is not UTF-8: {exc}"]) from None
    if not raw.strip():
        raise DemandError(['body is empty; expected a JSON object like {"jobs": [...]}'])

    def reject_constant(name: str) -> Any:
        raise DemandError([f"{name} is not a finite number"])

    try:
        return json.loads(raw, parse_constant=reject_constant)
    except json.JSONDecodeError as exc:
        raise DemandError(
            [f"body is not valid JSON: {exc.msg} at line {exc.lineno}, column {exc.colno}"]
        ) from None


def _validate(data: Any, reports: DemandReports | None = None) -> DemandUpdate:
    if not isinstance(data, Mapping):
        raise DemandError([f"body must be a JSON object, got {type(data).__name__}"])
    missing = []
    if reports is not None and reports.running and "running" not in data:
        missing.append(
            "running: required field is missing (this source reports running jobs per node "
            '(demand.reports); send "running": [] when none run)'
        )
    if reports is not None and reports.joined and "nodes" not in data:
        missing.append(
            "nodes: required field is missing (this source reports joined nodes (demand.reports))"
        )
    try:
        body = DemandBody.model_validate(data)
    except ValidationError as exc:
        messages = []
        for err in exc.errors(include_url=False):
            msg = err["msg"].removeprefix("Value error, ")
            if err["type"] == "extra_forbidden":
                msg = "unknown field"
            elif err["type"] == "missing":
                messages.append(f"{_loc(err['loc'])}: required field is missing")
                continue
            messages.append(f"{_loc(err['loc'])}: {msg} (got {err.get('input')!r})")
        raise DemandError(messages + missing) from None
    if missing:
        raise DemandError(missing)
    return to_update(body)


def to_update(body: DemandBody) -> DemandUpdate:
    """Turn a validated body into a ``DemandUpdate``, summing jobs of identical shape."""
    counts: dict[tuple[Shape, int], int] = {}
    for job in body.jobs:
        shape = Shape(job.wall_time, job.memory, job.cores, job.disk, job.preemptible)
        key = (shape, job.node_count)
        counts[key] = counts.get(key, 0) + job.count
    problems = [
        f"jobs: {n} jobs of {s} exceed the limit of {MAX_COUNT}"
        for (s, _), n in counts.items()
        if n > MAX_COUNT
    ]
    running = []
    for job in body.running:
        shape = Shape(job.wall_time, job.memory, job.cores, job.disk, job.preemptible)
        running.append(RunningJob(shape=shape, node_id=job.node, elapsed=job.elapsed))
    if problems:
        raise DemandError(problems)
    queued = tuple(QueuedJobs(shape=s, count=n, node_count=k) for (s, k), n in counts.items())
    joined = frozenset(body.nodes) if body.nodes is not None else None
    return DemandUpdate(Demand(queued=queued, running=tuple(running)), joined)


def parse_demand(
    raw: bytes | str | Mapping[str, Any], reports: DemandReports | None = None
) -> DemandUpdate:
    """Parse and validate a demand body (JSON text or an already-decoded mapping); with
    ``reports``, the fields the source promised must be there."""
    return _validate(_decode(raw), reports)


# --- sources -------------------------------------------------------------------------------


class DemandSource(Protocol):
    name: str  # what DemandUpdate.source says: "file", "demo", "slurm"

    def updates(self) -> AsyncIterator[DemandUpdate | DemandFailure]: ...


class _PollingSource:
    poll_interval: float = 1.0

    def __init__(self, clock: Clock) -> None:
        self.clock = clock
        self._current: DemandUpdate | None = None

    def current(self) -> DemandUpdate | None:
        return self._current

    def check(self) -> bool:  # pragma: no cover - overridden
        raise NotImplementedError

    def _set(self, update: DemandUpdate) -> bool:
        if update == self._current:
            return False
        self._current = update
        return True

    async def updates(self) -> AsyncIterator[DemandUpdate | DemandFailure]:
        """Yield the current demand (if any), then each new one; polls on the clock."""
        self.check()
        last = self._current
        if last is not None:
            yield last
        while True:
            await self.clock.sleep(self.poll_interval)
            if self.check() and self._current is not None and self._current != last:
                last = self._current
                yield last


class FileDemandSource(_PollingSource):
    """Demand from a JSON or YAML file, re-read whenever its mtime or size changes."""

    name = "file"

    def __init__(
        self,
        path: str | os.PathLike[str],
        clock: Clock,
        poll_interval: float = 1.0,
        *,
        reports: DemandReports | None = None,
        max_age: float | None = None,
    ):
        super().__init__(clock)
        self.path = Path(path)
        self.poll_interval = poll_interval
        self.reports = reports
        self.max_age = max_age
        self._stamp: tuple[int, int] | None = None
        self.last_error: str | None = None

    def check(self) -> bool:
        try:
            st = self.path.stat()
        except OSError as exc:
            if self._stamp != (-1, -1):
                log.warning("event=demand_file_missing path=%s error=%s", self.path, exc)
                self.last_error = str(exc)
            self._stamp = (-1, -1)
            return False
        stamp = (st.st_mtime_ns, st.st_size)
        if stamp == self._stamp:
            return False
        self._stamp = stamp
        try:
            text = self.path.read_text()
            data = yaml.safe_load(text) if self.path.suffix in (".yaml", ".yml") else None
            update = (
                _validate(data, self.reports)
                if data is not None
                else parse_demand(text, self.reports)
            )
        except (DemandError, yaml.YAMLError, OSError, UnicodeDecodeError) as exc:
            self.last_error = str(exc)
            log.warning(
                "event=demand_file_invalid path=%s kept=previous error=%s",
                self.path,
                str(exc).replace("\n", " "),
            )
            return False
        self.last_error = None
        # the demand is as old as the file: a pusher that stops rewriting it lets it go stale
        changed = self._set(replace(update, at=st.st_mtime, max_age=self.max_age))
        if changed:
            log.info("event=demand_file_loaded path=%s", self.path)
        return changed


class DemoDemandSource(_PollingSource):
    """A repeating, clock-driven demo: queued burst, then running, then idle.

    Phase by ``(now - start) % period``: ``[0, burst)`` -> ``jobs`` queued jobs;
    ``[burst, burst + run)`` -> the same jobs running, spread round-robin over the names
    ``node_names()`` returns (the daemon passes its joined nodes, so they stay busy) or on
    notional nodes ``demo-0`` ... when it is not given or returns none (the planner ignores
    jobs on nodes it does not manage); afterwards -> no demand, so idle nodes scale down.

    The daemon stops it for good once ``PUT /v1/demand`` accepts a body: pushed demand wins.
    """

    name = "demo"

    def __init__(
        self,
        clock: Clock,
        *,
        period: float = 300.0,
        burst: float = 60.0,
        run: float = 60.0,
        jobs: int = 24,
        shape: Shape | None = None,
        poll_interval: float = 1.0,
        node_names: Callable[[], Sequence[str]] | None = None,
    ) -> None:
        super().__init__(clock)
        if not (burst > 0 and run >= 0 and burst + run < period):
            raise ValueError("need 0 < burst, 0 <= run and burst + run < period")
        self.start = clock.now()
        self.period = period
        self.burst = burst
        self.run = run
        self.jobs = jobs
        self.shape = shape or Shape(600.0, 2 * 1024**3, 1.0, 1024**3, False)
        self.poll_interval = poll_interval
        self.node_names = node_names

    def phase(self, now: float | None = None) -> str:
        t = ((self.clock.now() if now is None else now) - self.start) % self.period
        if t < self.burst:
            return "queued"
        if t < self.burst + self.run:
            return "running"
        return "idle"

    def demand_at(self, now: float) -> DemandUpdate:
        phase = self.phase(now)
        if phase == "queued":
            return DemandUpdate(Demand(queued=(QueuedJobs(self.shape, self.jobs),)))
        if phase == "running":
            t = (now - self.start) % self.period - self.burst
            names = list(self.node_names() if self.node_names else ()) or [
                f"demo-{i}" for i in range(self.jobs)
            ]
            running = tuple(
                RunningJob(self.shape, names[i % len(names)], elapsed=t) for i in range(self.jobs)
            )
            return DemandUpdate(Demand(running=running))
        return DemandUpdate(Demand())

    def check(self) -> bool:
        now = self.clock.now()
        update = self.demand_at(now)
        current = self._current
        if current is not None and current.demand.running and self.phase(now) == "running":
            return False  # elapsed grows every poll; only the phase change is news
        return self._set(update)
