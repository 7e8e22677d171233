"""A cloud of local processes: each "instance" is a ``slurmd`` on this machine (tests, demos).

``LocalProvisioner`` is a ``FleetProvisioner`` (``providers.base``): it implements the
provider primitives so the daemon drives it exactly as it drives EC2 (``addNodes``/
``terminateNodes`` are the fleet's), and nothing of the seed's cluster surface (no leader to
launch or find, no Kubernetes, no user data: this machine is the leader, its slurmd
processes join by themselves):

``launch_offering``         starts one process per instance. An instance tagged with a Slurm
                            node name (``TAG_SLURM_NODE``, power saving) runs
                            ``slurmd -D -b -N NAME``: ``-b`` tells slurmctld the node has just
                            booted (otherwise it ignores the registration after a resume
                            request), and slurmd takes its own port from the node's ``Port=``
                            in slurm.conf. It starts in a wall-clock second after the one
                            the launch was asked in (``boot_second_wait``: else slurmctld
                            may take it as booted before the resume request). Any other
                            instance registers a dynamic node named after its instance
                            id: ``slurmd -D -Z -N ID --conf "CPUs=.. RealMemory=..
                            Weight=.. Feature=.."`` with the ``TAG_SLURM_RESOURCES`` of its
                            launch (else its type's whole shape) and the features of
                            ``TAG_SLURM_FEATURES`` (one per host: ``--conf`` takes no port).
                            Idempotent by client token; up to ``capacity[type]`` instances of a
                            type run at once (beyond that ``InsufficientInstanceCapacity``, as
                            EC2 says it: tests force a stock-out with 0); an all-or-nothing
                            request (``min_count`` = count, a gang) starts all or none.
``terminate_instances``     stops the process and everything in its session (its job steps),
                            SIGTERM then SIGKILL, by pid; unknown or dead ids are already gone.
``list_instances``          the instances of the records file whose process still runs.
``describe_instance_types`` the configured types (cores, memory, price or None).
``tag_instances``,          change the tags in the instance's record (saved at once); an
``untag_instances``         id whose process no longer runs is ``InvalidInstanceID.NotFound``.
``set_capacity``            changes a type's ``capacity`` while the daemon runs (a SIGHUP
                            reload of ``provider.capacity`` calls it).

Every process is started with ``posix_spawn``: its own session (``setsid``: slurmctld or a
terminal stopping shoal's process group must not take it along), an empty signal mask and
default signal dispositions (a program started from slurmctld inherits its blocked signals,
and Python ignores SIGPIPE), stdin from /dev/null and its output in ``logs/ID.log``.

The records (``instances.json`` in ``state_dir``) survive a restart of shoal, as a cloud's
instances do: each instance's id, type, tags, pid and the pid's start time (so a reused pid
is never mistaken for it), and the client tokens, each for ``CLIENT_TOKEN_TTL`` (a day, as
EC2 keeps them at least; a demo left running for months does not keep every launch's). An
instance is recorded before its
process starts and its pid right after, so a crash in between leaves a record whose process
is found again by the ``SHOAL_LOCAL_INSTANCE`` variable in its environment (the state
directory and the instance id, so two clusters on one machine never mix their processes).

Knobs for tests: ``launch_delay`` (seconds a launch waits before it takes effect: a window to
kill the daemon in), ``answer_delay`` (seconds it waits after it took effect, before it
answers: a response lost with the daemon), ``never_join`` (types whose "machine" never
starts slurmd: a ``sleep`` stands in, so the node never registers), ``listing_lag`` (seconds
an instance stays out of ``list_instances`` after its launch, as a lagging DescribeInstances).
The records file is the one cloud two ``shoal run`` processes on this machine can share (the
``ha`` end-to-end tests, one leading at a time): each reads it again once it changed on disk
(its inode, size or mtime; every write replaces it whole), so a daemon that leads again sees
what the other launched. No lock: two writing at once would lose one's changes.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import json
import logging
import math
import os
import shutil
import signal
from collections.abc import Collection, Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, ClassVar

from shoal.providers.base import CLIENT_TOKEN_TTL, FleetProvisioner, Node
from shoal.providers.errors import INSUFFICIENT_CAPACITY, CapacityError, ProviderError
from shoal.providers.outcomes import InstanceTypeInfo, LaunchRequest, TerminationStatus
from shoal.providers.workers import (
    TAG_SLURM_FEATURES,
    TAG_SLURM_NODE,
    slurm_node_tags,
    slurm_resources,
)
from shoal.runtime.clock import Clock, SystemClock
from shoal.runtime.files import write_json_atomic
from shoal.scaler.model import CapacityType

__all__ = [
    "INSTANCE_ENV",
    "LocalInstanceType",
    "LocalProvisioner",
    "find_program",
    "pids_with_env",
    "process_alive",
    "session_pids",
]

log = logging.getLogger(__name__)

MiB = 1024**2
INSTANCE_ENV = "SHOAL_LOCAL_INSTANCE"  # "<state dir>/<instance id>" in every process started
RECORDS = "instances.json"
_POLL = 0.05


@dataclass(frozen=True, slots=True)
class LocalInstanceType:
    """A type of local "machine": what its slurmd reports as CPUs and RealMemory."""

    name: str
    cores: int
    memory: int  # bytes
    price: float | None = None  # USD per hour, for cost features; None: unknown

    def info(self) -> InstanceTypeInfo:
        return InstanceTypeInfo(self.name, float(self.cores), self.memory, 0, self.price)


def boot_second_wait(asked: float) -> float:
    """Seconds from ``asked`` to the start of the next wall-clock second: how long a
    ``slurmd -b`` asked for at ``asked`` waits before it starts.

    ``-b`` makes slurmd report as its uptime the whole seconds of the host's uptime clock
    since its first reading, and slurmctld takes ``boot_time = now - uptime`` (whole seconds)
    and ignores every registration of a powering-up node whose ``boot_time`` is before the
    resume request's second (``waiting_for_node_boot``, Slurm 22.05): the node then stays
    down until ResumeTimeout. A slurmd started in the resume request's own second can report
    an uptime of 1 from its first registration (the uptime clock's seconds do not begin with
    the wall clock's), one second too early: seen as two nodes of a gang never registering.
    Started in a later second, ``boot_time`` is at least that second minus one, never before
    the request (which came before ``asked``). A machine that really boots has no such
    window; this is the local stand-in's."""
    return math.floor(asked) + 1 - asked


def find_program(name: str) -> str | None:
    """An absolute path: ``name`` itself when it has a slash, else on PATH or in /usr/sbin."""
    if "/" in name:
        return name if os.access(name, os.X_OK) else None
    found = shutil.which(name)
    if found:
        return found
    candidate = Path("/usr/sbin") / name
    return str(candidate) if os.access(candidate, os.X_OK) else None


def _stat(pid: int) -> list[str] | None:
    """Fields of /proc/PID/stat after the command name (state first), or None."""
    try:
        text = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    return text.rsplit(")", 1)[-1].split()


def _start_ticks(pid: int) -> int | None:
    fields = _stat(pid)
    return int(fields[19]) if fields is not None and len(fields) > 19 else None


def process_alive(pid: int, start_ticks: int | None = None) -> bool:
    """The process runs (not a zombie) and, when given, started at ``start_ticks``."""
    fields = _stat(pid)
    if fields is None or fields[0] in ("Z", "X"):
        return False
    return start_ticks is None or (len(fields) > 19 and int(fields[19]) == start_ticks)


def session_pids(leader: int) -> list[int]:
    """Live processes in the session ``leader`` leads, and their descendants (a job step
    that started its own session is still a descendant)."""
    parents: dict[int, int] = {}
    sessions: dict[int, int] = {}
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        fields = _stat(int(entry.name))
        if fields is None or fields[0] in ("Z", "X"):
            continue
        parents[int(entry.name)] = int(fields[1])
        sessions[int(entry.name)] = int(fields[3])
    found = {pid for pid, sid in sessions.items() if sid == leader}
    if leader in parents:
        found.add(leader)
    grew = True
    while grew:
        more = {pid for pid, ppid in parents.items() if ppid in found and pid not in found}
        found |= more
        grew = bool(more)
    return sorted(found)


def pids_with_env(entry: bytes) -> Iterator[int]:
    """Processes whose environment holds ``entry`` (``NAME=value``), zombies included."""
    for proc in Path("/proc").iterdir():
        if not proc.name.isdigit():
            continue
        try:
            environ = (proc / "environ").read_bytes()
        except OSError:
            continue
        if entry in environ.split(b"\0"):
            yield int(proc.name)


def _pid_with_env(entry: bytes) -> int | None:
    return next((pid for pid in pids_with_env(entry) if process_alive(pid)), None)


def _reap(pid: int) -> None:
    """Collect the exit status of a child of ours (a no-op for any other process)."""
    with contextlib.suppress(ChildProcessError, OSError):
        os.waitpid(pid, os.WNOHANG)


class LocalProvisioner(FleetProvisioner):
    """Instances are slurmd processes on this machine; see the module docstring."""

    cloud: ClassVar[str] = "local"
    terminate_batch_size: ClassVar[int] = 100

    def __init__(
        self,
        clusterName: str | None = None,
        zone: str | None = None,
        nodeStorage: int = 50,
        nodeStorageOverrides: list[str] | None = None,
        *,
        zones: Sequence[str] = (),
        state_dir: str | os.PathLike[str],
        instance_types: Iterable[LocalInstanceType],
        slurmd: str = "slurmd",
        slurm_conf: str | None = None,
        capacity: Mapping[str, int] | None = None,
        launch_delay: float = 0.0,
        answer_delay: float = 0.0,
        never_join: Iterable[str] = (),
        stop_timeout: float = 10.0,
        clock: Clock | None = None,
        listing_lag: float = 0.0,
    ) -> None:
        super().__init__(
            clusterName,
            zone or (None if zones else "local"),
            nodeStorage,
            nodeStorageOverrides,
            zones=zones,
        )
        self.state_dir = Path(state_dir)
        self.types = {t.name: t for t in instance_types}
        self.slurmd = slurmd
        self.slurm_conf = slurm_conf
        self.capacity = dict(capacity or {})
        self.launch_delay = float(launch_delay)
        self.answer_delay = float(answer_delay)
        self.never_join = frozenset(never_join)
        self.listing_lag = float(listing_lag)
        self.stop_timeout = float(stop_timeout)
        self.clock: Clock = clock if clock is not None else SystemClock()
        self._records: dict[str, Any] | None = None
        self._records_key: tuple[int, int, int] | None = None  # the file as last read/written

    # -- records ------------------------------------------------------------------------

    @property
    def records_path(self) -> Path:
        return self.state_dir / RECORDS

    def _file_key(self) -> tuple[int, int, int] | None:
        """The records file's inode, size and mtime (None: no file): it changed when this
        differs from what was last read or written (another process wrote it)."""
        try:
            st = os.stat(self.records_path)
        except FileNotFoundError:
            return None
        return (st.st_ino, st.st_size, st.st_mtime_ns)

    def _load(self) -> dict[str, Any]:
        key = self._file_key()
        if self._records is None or key != self._records_key:
            try:
                self._records = json.loads(self.records_path.read_text())
            except FileNotFoundError:
                self._records = {"next": 1, "tokens": {}, "instances": {}}
            except (OSError, ValueError) as exc:
                raise ProviderError(
                    f"cannot read the local provider's records {self.records_path}: {exc}",
                    code="RecordsUnreadable",
                ) from exc
            self._records_key = key
        return self._records

    def _save(self) -> None:
        # what this process changed, never read again first (that would drop its changes)
        records = self._records if self._records is not None else self._load()
        write_json_atomic(self.records_path, records, sort_keys=True)
        self._records_key = self._file_key()

    @staticmethod
    def _forget_tokens(records: dict[str, Any], now: float) -> None:
        """Drop the client tokens made ``CLIENT_TOKEN_TTL`` ago or more (a token of a file
        from before their times were kept is timed from now)."""
        times = records.setdefault("token_times", {})
        for token in records["tokens"]:
            times.setdefault(token, now)
        for token in [t for t, at in times.items() if at <= now - CLIENT_TOKEN_TTL]:
            records["tokens"].pop(token, None)
            del times[token]

    def _marker(self, instance_id: str) -> str:
        return f"{self.state_dir.resolve()}/{instance_id}"

    def _alive(self, instance_id: str, record: dict[str, Any]) -> bool:
        pid = record.get("pid")
        if pid is None:  # recorded, then the daemon died before it noted the pid
            found = _pid_with_env(f"{INSTANCE_ENV}={self._marker(instance_id)}".encode())
            if found is None:
                return False
            record["pid"], record["start_ticks"] = found, _start_ticks(found)  # saved by _live
            pid = found
        _reap(pid)
        return process_alive(pid, record.get("start_ticks"))

    def _live(self) -> dict[str, dict[str, Any]]:
        """Instances whose process runs; the records of the others are dropped."""
        records = self._load()
        instances: dict[str, dict[str, Any]] = records["instances"]
        unnoted = [i for i, r in instances.items() if r.get("pid") is None]
        dead = [i for i, r in instances.items() if not self._alive(i, r)]
        for instance_id in dead:
            log.info("event=local_instance_gone instance=%s", instance_id)
            del instances[instance_id]
        found = [i for i in unnoted if i in instances]  # their pid found again by _alive
        if dead or found:
            self._save()
        return dict(instances)

    # -- the provider primitives --------------------------------------------------------

    async def describe_instance_types(self, names: Sequence[str]) -> dict[str, InstanceTypeInfo]:
        return {name: self.types[name].info() for name in names if name in self.types}

    async def launch_offering(self, request: LaunchRequest) -> list[str]:
        asked = self.clock.now()
        records = self._load()
        self._forget_tokens(records, asked)
        known = records["tokens"].get(request.client_token)
        if known is not None:  # as EC2: the same token, the same instances, nothing more
            return list(known)
        delay = self.launch_delay
        if request.tags.get(TAG_SLURM_NODE):
            delay = max(delay, boot_second_wait(asked))
        if delay > 0:
            await self.clock.sleep(delay)
            known = records["tokens"].get(request.client_token)
            if known is not None:
                return list(known)
        offering = request.offering
        kind = self.types.get(offering.instance_type)
        if kind is None:
            raise ProviderError(
                f"unknown local instance type {offering.instance_type!r}",
                code="InvalidInstanceType",
                operation="launch_offering",
            )
        # one Slurm node name per instance (a gang's names listed in launch order)
        own_tags = slurm_node_tags(request.tags, request.count, "launch_offering")
        count = request.count
        if kind.name in self.capacity:
            running = sum(1 for r in self._live().values() if r["instance_type"] == kind.name)
            count = min(count, self.capacity[kind.name] - running)
            if count < request.min_count:  # as EC2: at least MinCount (a gang: all), or none
                raise CapacityError(
                    f"no capacity for {offering} ({INSUFFICIENT_CAPACITY}): "
                    f"{running} of {self.capacity[kind.name]} {kind.name} running",
                    offerings=(offering,),
                    code=INSUFFICIENT_CAPACITY,
                    operation="launch_offering",
                )
        ids = [self._new_id() for _ in range(count)]
        records["tokens"][request.client_token] = ids
        records.setdefault("token_times", {})[request.client_token] = asked
        now = self.clock.now()
        for instance_id, tags in zip(ids, own_tags, strict=False):
            records["instances"][instance_id] = {
                "instance_type": kind.name,
                "zone": offering.zone,
                "preemptible": offering.capacity_type is CapacityType.SPOT,
                "tags": tags,
                "launched_at": now,
                "pid": None,
                "start_ticks": None,
            }
        self._save()  # recorded before any process starts: a crash leaves no stray slurmd
        try:
            for instance_id in ids:
                record = records["instances"][instance_id]
                pid = self._spawn(instance_id, kind, record["tags"])
                record["pid"], record["start_ticks"] = pid, _start_ticks(pid)
                log.info(
                    "event=local_instance_started instance=%s type=%s slurm_node=%s pid=%d",
                    instance_id,
                    kind.name,
                    record["tags"].get(TAG_SLURM_NODE, instance_id),
                    pid,
                )
        finally:
            self._save()
        if self.answer_delay > 0:
            await self.clock.sleep(self.answer_delay)
        return ids

    def _new_id(self) -> str:
        records = self._load()
        number = records["next"]
        records["next"] = number + 1
        return f"{self.clusterName or 'local'}-{number}"

    def _argv(
        self, instance_id: str, kind: LocalInstanceType, tags: Mapping[str, str]
    ) -> list[str]:
        if kind.name in self.never_join:
            sleep = find_program("sleep") or "/bin/sleep"
            return [sleep, "infinity"]  # a machine whose slurmd never comes up
        slurmd = find_program(self.slurmd)
        if slurmd is None:
            raise ProviderError(f"{self.slurmd} is not installed", code="NoSlurmd")
        node_name = tags.get(TAG_SLURM_NODE)
        if node_name:
            return [slurmd, "-D", "-b", "-N", node_name]
        try:
            conf = slurm_resources(tags)
        except ValueError as exc:
            raise ProviderError(str(exc), code="InvalidParameterValue") from None
        if conf is None:
            conf = f"CPUs={kind.cores} RealMemory={kind.memory // MiB}"
        features = tags.get(TAG_SLURM_FEATURES, "")
        if features:
            conf += f" Feature={features}"
        # the node name need not resolve: slurmctld reaches the node here
        conf += " NodeAddr=127.0.0.1"
        return [slurmd, "-D", "-Z", "-N", instance_id, "--conf", conf]

    def _spawn(self, instance_id: str, kind: LocalInstanceType, tags: Mapping[str, str]) -> int:
        argv = self._argv(instance_id, kind, tags)
        logs = self.state_dir / "logs"
        logs.mkdir(parents=True, exist_ok=True)
        env = dict(os.environ)
        env[INSTANCE_ENV] = self._marker(instance_id)
        if self.slurm_conf is not None:
            env["SLURM_CONF"] = self.slurm_conf
        catchable = signal.valid_signals() - {signal.SIGKILL, signal.SIGSTOP}
        try:
            return os.posix_spawn(
                argv[0],
                argv,
                env,
                file_actions=[
                    (os.POSIX_SPAWN_OPEN, 0, "/dev/null", os.O_RDONLY, 0),
                    (
                        os.POSIX_SPAWN_OPEN,
                        1,
                        str(logs / f"{instance_id}.log"),
                        os.O_WRONLY | os.O_CREAT | os.O_APPEND,
                        0o644,
                    ),
                    (os.POSIX_SPAWN_DUP2, 1, 2),
                ],
                setsid=True,
                setsigmask=(),
                setsigdef=catchable,
            )
        except OSError as exc:
            raise ProviderError(
                f"cannot start {argv[0]} for {instance_id}: {exc}", code="SpawnFailed"
            ) from exc

    async def terminate_instances(
        self, ids: Sequence[str]
    ) -> Mapping[str, TerminationStatus | ProviderError]:
        live = self._live()
        out: dict[str, TerminationStatus | ProviderError] = {}
        for instance_id in ids:
            record = live.get(instance_id)
            if record is None:
                out[instance_id] = TerminationStatus.ALREADY_GONE
                continue
            try:
                await self._stop(instance_id, int(record["pid"]), record.get("start_ticks"))
            except OSError as exc:
                out[instance_id] = ProviderError(
                    f"cannot stop {instance_id} (pid {record['pid']}): {exc}", code="StopFailed"
                )
                continue
            self._load()["instances"].pop(instance_id, None)
            out[instance_id] = TerminationStatus.TERMINATED
        if TerminationStatus.TERMINATED in out.values():
            self._save()
        return out

    async def _stop(self, instance_id: str, pid: int, start_ticks: int | None) -> None:
        """SIGTERM the process and its session, SIGKILL what is left after the timeout."""
        if not process_alive(pid, start_ticks):
            return
        for target in session_pids(pid):
            with contextlib.suppress(ProcessLookupError):
                os.kill(target, signal.SIGTERM)
        waited = 0.0
        while waited < self.stop_timeout:
            _reap(pid)
            if not process_alive(pid, start_ticks):
                break
            await self.clock.sleep(_POLL)
            waited += _POLL
        left = [p for p in session_pids(pid) if process_alive(p)] if process_alive(pid) else []
        for target in left:
            with contextlib.suppress(ProcessLookupError):
                os.kill(target, signal.SIGKILL)
        while process_alive(pid, start_ticks):
            _reap(pid)
            await self.clock.sleep(_POLL)
        _reap(pid)
        log.info(
            "event=local_instance_stopped instance=%s pid=%d killed=%d", instance_id, pid, len(left)
        )

    async def list_instances(self) -> list[Node]:
        nodes = []
        listed_before = self.clock.now() - self.listing_lag
        for instance_id, record in sorted(self._live().items()):
            if record["launched_at"] > listed_before:
                continue  # not listed yet: an eventually consistent cloud (listing_lag)
            nodes.append(
                Node(
                    publicIP=None,
                    privateIP="127.0.0.1",
                    name=instance_id,
                    launchTime=dt.datetime.fromtimestamp(record["launched_at"], dt.UTC),
                    nodeType=record["instance_type"],
                    preemptible=bool(record.get("preemptible", False)),  # older records: none
                    tags=dict(record["tags"]),
                    use_private_ip=True,
                    zone=record["zone"],
                    joined=None,
                )
            )
        return nodes

    async def tag_instances(self, ids: Sequence[str], tags: Mapping[str, str]) -> None:
        for record in self._records_of(ids, "tag_instances"):
            record["tags"].update(tags)
        self._save()

    async def untag_instances(self, ids: Sequence[str], keys: Collection[str]) -> None:
        for record in self._records_of(ids, "untag_instances"):
            for key in keys:
                record["tags"].pop(key, None)
        self._save()

    def _records_of(self, ids: Sequence[str], operation: str) -> list[dict[str, Any]]:
        """The live instances' records, or, as EC2, an error naming the unknown ids."""
        live = self._live()
        unknown = [i for i in ids if i not in live]
        if unknown:
            raise ProviderError(
                f"The instance IDs '{', '.join(unknown)}' do not exist",
                code="InvalidInstanceID.NotFound",
                operation=operation,
            )
        return [self._load()["instances"][i] for i in ids]

    def set_capacity(self, instance_type: str, n: int | None) -> None:
        """At most ``n`` instances of ``instance_type`` run at once from now on (None:
        unlimited); those running stay. The daemon calls it when a SIGHUP reload changes
        ``provider.capacity``: an operator ends (or starts) a stock-out without a restart."""
        if instance_type not in self.types:
            raise ProviderError(
                f"unknown local instance type {instance_type!r}",
                code="InvalidInstanceType",
                operation="set_capacity",
            )
        if n is None:
            self.capacity.pop(instance_type, None)
        else:
            self.capacity[instance_type] = n

    def pids(self) -> dict[str, int]:
        """The pid of every live instance's process (for tests and the demo's clean-up)."""
        return {i: int(r["pid"]) for i, r in self._live().items() if r.get("pid") is not None}
