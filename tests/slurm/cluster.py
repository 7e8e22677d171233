"""A real Slurm cluster on this machine, for tests: munged, slurmctld and slurmd processes.

``SlurmCluster(root, ClusterSpec(...))`` writes a ``slurm.conf`` into ``root`` (cloud nodes
with power saving, and a partition of dynamic nodes), then ``start()`` runs a private munged
(or ``auth/none``) and ``slurmctld`` on free loopback ports. ``start_slurmd(name)`` starts a
``slurmd -b -N name`` for a declared cloud node (``-b``: "just booted", else slurmctld ignores
its registration after a resume request) and ``start_dynamic_slurmd(name)`` a ``slurmd -Z``
that registers a dynamic node. ``stop()`` stops every process it started, by pid, and then
any process that carries this cluster's marker in its environment (job steps and the
programs slurmctld ran), so nothing outlives the test, also when it failed.

Every daemon runs in the foreground (``-D``/``-F``) as a child of the test process, so its pid
is known without pid files. Node names need not resolve: every node has ``NodeAddr=127.0.0.1``
in slurm.conf, and the controller is ``SlurmctldHost=<this host>(127.0.0.1)``; nothing touches
``/etc/hosts``. Everything listens on 127.0.0.1 only (``CommunicationParameters``). The
power-saving programs default to a recorder script that appends one line per call to
``hooks.log`` (see ``hook_calls()``); tests that want Slurm to reach shoal's hooks pass their
own commands.

The cloud nodes are ``NodeGroup``s declared here, or (``ClusterSpec.shoal_nodes``) the lines
``shoal slurm-conf`` generates for shoal's config, so what the end-to-end tests run is what an
operator's slurm.conf gets: only the per-node ``Port`` and ``NodeAddr`` are this harness's.

``timings`` records how long each start and the stop took, in seconds.
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import socket
import subprocess
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal, TypeVar

from e2e.procs import poll_until
from shoal.daemon.slurm.client import SlurmCommands
from shoal.daemon.slurm.parse import expand_hostlist
from shoal.providers.local import boot_second_wait, find_program, pids_with_env, process_alive

__all__ = [
    "MARKER_ENV",
    "ClusterSpec",
    "HookCall",
    "NodeGroup",
    "SlurmCluster",
    "SlurmClusterError",
    "find_program",
    "generated_nodes",
    "missing_requirements",
]

T = TypeVar("T")

MARKER_ENV = "SHOAL_SLURM_TEST_CLUSTER"  # set to the cluster's root in every process we start
SLURM_PROGRAMS = ("slurmctld", "slurmd", "squeue", "sinfo", "scontrol", "sbatch", "srun", "scancel")
MUNGE_PROGRAMS = ("munged",)
READY_DEADLINE = 15.0  # seconds for munged or slurmctld to answer
STOP_GRACE = 5.0  # seconds a daemon gets after SIGTERM before SIGKILL
# slurmctld takes 1 s to stop on SIGTERM (its background loop's tick), 4 s when its agents wait
# on nodes that never came up; its saved state is of no use to a finished test
SLURMCTLD_STOP_GRACE = 1.5
POLL = 0.02
MAX_ROOT_LEN = 60  # unix socket paths (munge, slurmd step sockets) must stay under 108 bytes


class SlurmClusterError(RuntimeError):
    """The cluster could not be set up or did not reach the awaited state in time."""


def missing_requirements(auth: Literal["munge", "none"] = "munge") -> str | None:
    """Why a real Slurm cannot run here (a sentence naming what is missing), or None."""
    needed = SLURM_PROGRAMS + (MUNGE_PROGRAMS if auth == "munge" else ())
    missing = [name for name in needed if find_program(name) is None]
    if missing:
        return (
            f"Slurm tests need {', '.join(missing)} (Debian slurmctld, slurmd, slurm-client, "
            "munge; `make tools` installs them as root)"
        )
    if os.geteuid() != 0:
        return "Slurm tests need root: slurmd runs the test cluster's jobs as root (SlurmUser=root)"
    return None


@dataclass(frozen=True, slots=True)
class NodeGroup:
    """``count`` cloud nodes named ``prefix1..prefixN``, each with its own slurmd port."""

    prefix: str
    count: int
    cpus: int = 2
    memory_mb: int = 1000
    features: tuple[str, ...] = ()
    weight: int | None = None  # Slurm allocates the lowest weight first

    def names(self) -> list[str]:
        return [f"{self.prefix}{i}" for i in range(1, self.count + 1)]


@dataclass(frozen=True, slots=True)
class ClusterSpec:
    """What the test cluster declares. Durations in seconds, as slurm.conf takes them."""

    cloud: tuple[NodeGroup, ...] = (NodeGroup("cloud", 4),)
    cloud_partition: str = "cloud"
    dynamic_partition: str | None = "dyn"  # a partition of dynamic nodes (Nodeset Feature=dyn)
    dynamic_feature: str = "dyn"
    max_node_count: int = 12  # room for dynamic nodes beyond the declared ones
    auth: Literal["munge", "none"] = "munge"
    def_mem_per_cpu: int | None = 100  # MB; None leaves DefMemPerCPU unset
    suspend_time: int = 15
    suspend_timeout: int = 10
    resume_timeout: int = 30
    # a credential's lifetime: a requeued batch job is held this long + 1 s before it is
    # placed again (Slurm's minimum is 5)
    cred_expire: int = 10
    resume_program: str | None = None  # None: the recorder script
    suspend_program: str | None = None
    resume_fail_program: str | None = None
    settings: Mapping[str, str] = field(default_factory=dict)  # extra or overriding lines
    # a slurm.conf fragment (e.g. `shoal slurm-conf`'s), written beside slurm.conf and
    # Included after the settings; a setting it gives replaces ours (never given twice)
    include: str | None = None
    # `shoal slurm-conf`'s output (power_save): the cloud nodes are those its NodeName lines
    # declare, each line written as generated for one node of its hostlist plus the private
    # Port and NodeAddr this cluster needs; its other lines (the hooks, timeouts) are unused
    shoal_nodes: str | None = None


@dataclass(frozen=True, slots=True)
class HookCall:
    """One run of a power-saving program, as the recorder script saw it."""

    kind: str  # "resume", "suspend" or "resume-fail"
    hostlist: str
    resume_file: Mapping[str, object] | None  # SLURM_RESUME_FILE's JSON, for resume


def _free_ports(count: int) -> list[int]:
    """``count`` distinct ports free on 127.0.0.1 now (all held open until all are chosen)."""
    with contextlib.ExitStack() as stack:
        ports = []
        for _ in range(count):
            sock = stack.enter_context(socket.socket(socket.AF_INET, socket.SOCK_STREAM))
            sock.bind(("127.0.0.1", 0))
            ports.append(int(sock.getsockname()[1]))
        return ports


def _wait(what: str, probe: Callable[[], T | None], deadline: float) -> T:
    return poll_until(what, probe, deadline, interval=POLL, error=SlurmClusterError)


_RECORDER = """#!/bin/sh
# Records one power-saving call: kind, hostlist and (for resume) SLURM_RESUME_FILE's JSON,
# which is valid only while this program runs.
data=""
if [ -n "${{SLURM_RESUME_FILE:-}}" ]; then data=$(tr -d '\\n' < "$SLURM_RESUME_FILE"); fi
printf '%s\\t%s\\t%s\\n' '{kind}' "$1" "$data" >> '{log}'
"""


class SlurmCluster:
    """A slurmctld (and munged) with slurmd processes on demand; see the module docstring."""

    def __init__(self, root: Path, spec: ClusterSpec | None = None) -> None:
        self.root = Path(root).resolve()
        if len(str(self.root)) > MAX_ROOT_LEN:
            raise SlurmClusterError(f"cluster root {self.root} is too long for socket paths")
        self.spec = spec or ClusterSpec()
        self.conf_path = self.root / "slurm.conf"
        self.hooks_log = self.root / "log" / "hooks.log"
        self.hostname = socket.gethostname().split(".")[0]
        self.timings: dict[str, float] = {}
        self._programs = {name: find_program(name) for name in SLURM_PROGRAMS + MUNGE_PROGRAMS}
        self._munged: subprocess.Popen[bytes] | None = None
        self._slurmctld: subprocess.Popen[bytes] | None = None
        self._slurmds: dict[str, subprocess.Popen[bytes]] = {}
        self._stopped = False
        self._generated = dict(generated_nodes(self.spec.shoal_nodes or ""))
        names = [name for group in self.spec.cloud for name in group.names()]
        names += list(self._generated)
        ports = _free_ports(2 + len(names))
        self.slurmctld_port, self.slurmd_port = ports[0], ports[1]
        self.node_ports = dict(zip(names, ports[2:], strict=True))
        self.env = {
            **{k: v for k, v in os.environ.items() if not k.startswith("SLURM_")},
            "SLURM_CONF": str(self.conf_path),
            MARKER_ENV: str(self.root),
        }

    # --- configuration -------------------------------------------------------------------

    @property
    def cloud_nodes(self) -> list[str]:
        return list(self.node_ports)

    @property
    def include_path(self) -> Path:
        return self.root / "included.conf"

    @property
    def munge_socket(self) -> Path:
        return self.root / "munge" / "munge.socket"

    def program(self, name: str) -> str:
        path = self._programs.get(name) or find_program(name)
        if path is None:
            raise SlurmClusterError(f"{name} is not installed")
        return path

    def commands(self, **options: float) -> SlurmCommands:
        """shoal's Slurm client commands for this cluster (``options``: e.g. ``timeout``)."""
        return SlurmCommands(
            squeue=self.program("squeue"),
            sinfo=self.program("sinfo"),
            scontrol=self.program("scontrol"),
            slurm_conf=str(self.conf_path),
            **options,
        )

    def _recorder(self, kind: str) -> str:
        return str(self.root / f"record-{kind}.sh")

    def _write_recorders(self) -> None:
        for kind in ("resume", "suspend", "resume-fail"):
            path = Path(self._recorder(kind))
            path.write_text(_RECORDER.format(kind=kind, log=self.hooks_log))
            path.chmod(0o755)

    def settings(self) -> dict[str, str]:
        """The global slurm.conf settings, in order (node and partition lines come after)."""
        spec, root = self.spec, self.root
        auth = {
            "AuthType": "auth/none",
            "CredType": "cred/none",
        }
        if spec.auth == "munge":
            auth = {
                "AuthType": "auth/munge",
                "CredType": "cred/munge",
                "AuthInfo": f"socket={self.munge_socket},cred_expire={spec.cred_expire}",
            }
        settings = {
            "ClusterName": "shoaltest",
            "SlurmctldHost": f"{self.hostname}(127.0.0.1)",
            "SlurmctldPort": str(self.slurmctld_port),
            "SlurmdPort": str(self.slurmd_port),
            "SlurmUser": "root",  # slurmctld's programs must be able to start local slurmds
            **auth,
            "StateSaveLocation": f"{root}/state",
            "SlurmdSpoolDir": f"{root}/spool/%n",
            "SlurmctldPidFile": f"{root}/run/slurmctld.pid",
            "SlurmdPidFile": f"{root}/run/slurmd-%n.pid",
            "SlurmctldLogFile": f"{root}/log/slurmctld.log",
            "SlurmdLogFile": f"{root}/log/slurmd-%n.log",
            "ProctrackType": "proctrack/linuxproc",
            "TaskPlugin": "task/none",
            "JobAcctGatherType": "jobacct_gather/none",
            "MpiDefault": "none",
            "MailProg": "/bin/true",
            "SelectType": "select/cons_tres",
            "SelectTypeParameters": "CR_Core_Memory",
            "ReturnToService": "2",
            "ResumeProgram": spec.resume_program or self._recorder("resume"),
            "SuspendProgram": spec.suspend_program or self._recorder("suspend"),
            "ResumeFailProgram": spec.resume_fail_program or self._recorder("resume-fail"),
            "SuspendTime": str(spec.suspend_time),
            "SuspendTimeout": str(spec.suspend_timeout),
            "ResumeTimeout": str(spec.resume_timeout),
            "ResumeRate": "0",
            "SuspendRate": "0",
            "TreeWidth": "65533",
            # without it, powered-down cloud nodes are hidden from sinfo and scontrol
            "PrivateData": "cloud",
            # power_save_interval: the power-saving loop (suspends, resumes, ResumeTimeout)
            # looks every second instead of every 10 seconds. No cloud_reg_addrs (shoal's
            # slurm-conf has it): every node here is at 127.0.0.1 already, and with it a
            # powered-down node's NodeAddr goes back to its name, which does not resolve: a
            # job requeued from a node that never registered then has slurmctld retry the
            # name for 10 s (Debian's build), and a node's address change meanwhile holds
            # every command (they time out), as CI saw
            "SlurmctldParameters": (
                "idle_on_node_suspend,power_save_interval=1,power_save_min_interval=0"
            ),
            # listen on the configured addresses (127.0.0.1), not on every interface: the
            # default binds slurmctld, slurmd and srun to 0.0.0.0
            "CommunicationParameters": "NoCtldInAddrAny,NoInAddrAny",
            # schedule submitted jobs at the next tick of slurmctld's background loop (1 s), not
            # up to 3 s after the last pass. (The first pass still comes 3 s after the start:
            # these parameters are read in that pass.)
            "SchedulerParameters": "batch_sched_delay=0",
        }
        if spec.def_mem_per_cpu is not None:
            settings["DefMemPerCPU"] = str(spec.def_mem_per_cpu)
        if spec.dynamic_partition is not None:
            settings["MaxNodeCount"] = str(spec.max_node_count)
        settings.update(spec.settings)
        for key in _fragment_settings(spec.include or ""):
            settings.pop(key, None)
        return settings

    def render_conf(self) -> str:
        lines = [f"{key}={value}" for key, value in self.settings().items()]
        for group in self.spec.cloud:
            features = f" Feature={','.join(group.features)}" if group.features else ""
            if group.weight is not None:
                features += f" Weight={group.weight}"
            for name in group.names():
                # NodeAddr: slurmctld never resolves the node name (an unresolvable name
                # stalls it 10 s per node); nothing here changes it (no cloud_reg_addrs)
                lines.append(
                    f"NodeName={name} CPUs={group.cpus} RealMemory={group.memory_mb}"
                    f"{features} State=CLOUD Port={self.node_ports[name]} NodeAddr=127.0.0.1"
                )
        for name, attributes in self._generated.items():
            lines.append(
                f"NodeName={name} {attributes} Port={self.node_ports[name]} NodeAddr=127.0.0.1"
            )
        if self.cloud_nodes:
            nodes = ",".join(self.cloud_nodes)
            lines.append(
                f"PartitionName={self.spec.cloud_partition} Nodes={nodes} Default=YES "
                "MaxTime=INFINITE State=UP"
            )
        if self.spec.include is not None:
            lines.append(f"Include {self.include_path}")
        if self.spec.dynamic_partition is not None:
            lines.append(f"Nodeset=dynset Feature={self.spec.dynamic_feature}")
            default = "NO" if self.spec.cloud else "YES"
            lines.append(
                f"PartitionName={self.spec.dynamic_partition} Nodes=dynset Default={default} "
                "MaxTime=INFINITE State=UP"
            )
        return "\n".join(lines) + "\n"

    # --- processes -----------------------------------------------------------------------

    def _spawn(self, argv: Sequence[str], log_name: str) -> subprocess.Popen[bytes]:
        with open(self.root / "log" / log_name, "ab") as out:
            return subprocess.Popen(
                list(argv),
                env=self.env,
                stdin=subprocess.DEVNULL,
                stdout=out,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )

    def start(self) -> SlurmCluster:
        """Write slurm.conf, start munged (if used) and slurmctld; wait until it answers."""
        for sub in ("state", "spool", "run", "log"):
            (self.root / sub).mkdir(parents=True, exist_ok=True)
        self._write_recorders()
        if self.spec.include is not None:
            self.include_path.write_text(self.spec.include)
        self.conf_path.write_text(self.render_conf())
        try:
            if self.spec.auth == "munge":
                self._start_munged()
            started = time.monotonic()
            self._slurmctld = self._spawn([self.program("slurmctld"), "-D", "-i"], "slurmctld.out")
            _wait("slurmctld to answer `scontrol ping`", self._controller_up, READY_DEADLINE)
            self.timings["start_slurmctld"] = time.monotonic() - started
        except BaseException:
            self.stop()
            raise
        return self

    def _start_munged(self) -> None:
        started = time.monotonic()
        munge_dir = self.munge_socket.parent
        munge_dir.mkdir(mode=0o711, exist_ok=True)
        key = munge_dir / "munge.key"
        key.write_bytes(os.urandom(128))
        key.chmod(0o600)
        self._munged = self._spawn(
            [
                self.program("munged"),
                "--foreground",
                "--force",  # root, and a key we made ourselves
                f"--socket={self.munge_socket}",
                f"--key-file={key}",
                f"--pid-file={munge_dir / 'munged.pid'}",
                f"--log-file={self.root / 'log' / 'munged.log'}",
                f"--seed-file={munge_dir / 'munged.seed'}",
            ],
            "munged.out",
        )
        _wait("munged's socket", self._munge_up, READY_DEADLINE)
        self.timings["start_munged"] = time.monotonic() - started

    def _munge_up(self) -> bool:
        self._check_alive(self._munged, "munged", "munged.out")
        return self.munge_socket.exists()

    def _controller_up(self) -> bool:
        self._check_alive(self._slurmctld, "slurmctld", "slurmctld.log")
        result = self.run("scontrol", "ping", check=False, timeout=5)
        return result.returncode == 0 and "UP" in result.stdout

    def _check_alive(self, proc: subprocess.Popen[bytes] | None, name: str, log: str) -> None:
        if proc is not None and proc.poll() is not None:
            raise SlurmClusterError(
                f"{name} exited with {proc.returncode}; its log ends:\n{self.log_tail(log)}\n"
                f"its output ends:\n{self.log_tail(name + '.out')}"
            )

    def start_slurmd(self, name: str, *, booted: bool = True) -> int:
        """Start ``slurmd -b -N name`` for a declared node; return its pid (not awaited)."""
        if name not in self.node_ports:
            raise SlurmClusterError(f"{name} is not a declared cloud node of this cluster")
        argv = [self.program("slurmd"), "-D", "-N", name]
        if booted:
            argv.insert(2, "-b")
            # after a resume request (a resume hook call, or power_up), a -b slurmd started
            # in the request's own second can register as booted a second before it and be
            # ignored until ResumeTimeout (boot_second_wait)
            time.sleep(boot_second_wait(time.time()))
        return self._start_slurmd_process(name, argv)

    def start_dynamic_slurmd(
        self,
        name: str,
        *,
        cpus: int = 2,
        memory_mb: int = 1000,
        features: Sequence[str] = (),
        weight: int | None = None,
    ) -> int:
        """Start ``slurmd -Z -N name --conf ...``: registers a new dynamic node (one per host,
        since ``Port=`` is not accepted in ``--conf``); return its pid."""
        feats = ",".join([self.spec.dynamic_feature, *features])
        weighed = f" Weight={weight}" if weight is not None else ""
        conf = f"CPUs={cpus} RealMemory={memory_mb}{weighed} Feature={feats} NodeAddr=127.0.0.1"
        argv = [self.program("slurmd"), "-D", "-Z", "-N", name, "--conf", conf]
        return self._start_slurmd_process(name, argv)

    def _start_slurmd_process(self, name: str, argv: list[str]) -> int:
        old = self._slurmds.get(name)
        if old is not None and old.poll() is None:
            raise SlurmClusterError(f"a slurmd for {name} is already running (pid {old.pid})")
        self._slurmds[name] = self._spawn(argv, f"slurmd-{name}.out")
        return self._slurmds[name].pid

    def stop_slurmd(self, name: str) -> int | None:
        """Stop the slurmd started for ``name`` (SIGTERM, then SIGKILL); its exit status."""
        proc = self._slurmds.pop(name, None)
        return _terminate(proc) if proc is not None else None

    def slurmd_pids(self) -> dict[str, int]:
        """Nodes whose slurmd we started and that still runs, with its pid."""
        return {name: p.pid for name, p in self._slurmds.items() if p.poll() is None}

    def stop(self, *, graceful: bool = False) -> None:
        """Stop everything this cluster started, by pid; safe to call more than once.

        slurmctld gets SIGKILL at once (its state is thrown away with the test), or SIGTERM
        and a moment to save its state and stop its programs if ``graceful``.
        """
        if self._stopped:
            return
        self._stopped = True
        started = time.monotonic()
        for name in list(self._slurmds):
            self.stop_slurmd(name)
        self.timings["stop_slurmds"] = time.monotonic() - started
        _terminate(self._slurmctld, SLURMCTLD_STOP_GRACE if graceful else 0.0)
        self.timings["stop_slurmctld"] = time.monotonic() - started - self.timings["stop_slurmds"]
        _terminate(self._munged)
        self._kill_marked()
        self.timings["stop"] = time.monotonic() - started

    def _kill_marked(self) -> None:
        """SIGKILL what our daemons left behind (job steps, hooks): found by our marker."""
        marker = f"{MARKER_ENV}={self.root}".encode()
        pids = [pid for pid in pids_with_env(marker) if pid != os.getpid()]
        for pid in pids:
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)
        with contextlib.suppress(SlurmClusterError):
            _wait(
                "killed job processes to go", lambda: not any(process_alive(p) for p in pids), 5.0
            )

    def __enter__(self) -> SlurmCluster:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    # --- client commands -----------------------------------------------------------------

    def run(
        self, program: str, *args: str, check: bool = True, timeout: float = 15.0
    ) -> subprocess.CompletedProcess[str]:
        """Run a Slurm client command against this cluster; raise on failure if ``check``."""
        result = subprocess.run(
            [self.program(program), *args],
            env=self.env,
            stdin=subprocess.DEVNULL,
            capture_output=True,
            text=True,
            timeout=timeout,
            check=False,
        )
        if check and result.returncode != 0:
            raise SlurmClusterError(
                f"{program} {' '.join(args)} exited {result.returncode}: {result.stderr.strip()}"
            )
        return result

    def sbatch(self, *args: str) -> str:
        """Submit a batch job; its job id (of the whole array, for an array)."""
        out = self.run("sbatch", "--parsable", "--output=/dev/null", *args).stdout.strip()
        return out.split(";")[0]

    def scontrol(self, *args: str) -> str:
        return self.run("scontrol", *args).stdout

    def node_state(self, name: str) -> str:
        """The node's complete state, e.g. ``idle+cloud+powered_down`` ("" if unknown)."""
        result = self.run("sinfo", "-h", "-N", "-n", name, "-O", "StateComplete:0", check=False)
        lines = result.stdout.split()
        return lines[0].strip().lower() if result.returncode == 0 and lines else ""

    def power_up(self, *names: str, deadline: float = 15) -> None:
        """Ask slurmctld to power ``names`` up and wait until each is POWERING_UP: it set the
        node's resume request time with that state, so a ``start_slurmd`` after this starts
        in a later second than the request (``boot_second_wait``)."""
        self.scontrol("update", f"nodename={','.join(names)}", "state=power_up")
        for name in names:
            self.wait_node(name, lambda state: "powering_up" in state, deadline)

    def wait_node(self, name: str, predicate: Callable[[set[str]], bool], deadline: float) -> str:
        """Wait until ``predicate`` holds for the node's state flags; return the state."""

        def probe() -> str | None:
            state = self.node_state(name)
            return state if state and predicate(set(state.split("+"))) else None

        return _wait(f"node {name} to reach the state awaited", probe, deadline)

    def wait_job_state(self, job_id: str, states: set[str], deadline: float) -> str:
        def probe() -> str | None:
            out = self.run("squeue", "-h", "-t", "all", "-j", job_id, "-o", "%T", check=False)
            state = out.stdout.strip()
            return state if state in states else None

        return _wait(f"job {job_id} to reach one of {sorted(states)}", probe, deadline)

    def hook_calls(self) -> list[HookCall]:
        """Calls of the recorder power-saving programs so far, in order."""
        if not self.hooks_log.exists():
            return []
        calls = []
        for line in self.hooks_log.read_text().splitlines():
            kind, hostlist, data = [*line.split("\t"), "", ""][:3]
            calls.append(HookCall(kind, hostlist, json.loads(data) if data else None))
        return calls

    def log_tail(self, name: str = "slurmctld.log", lines: int = 40) -> str:
        path = self.root / "log" / name
        if not path.exists():
            return f"({path} does not exist)"
        return "\n".join(path.read_text(errors="replace").splitlines()[-lines:])


_LINE_KEYS = ("nodename", "nodeset", "partitionname", "include", "downnodes", "frontendname")


def generated_nodes(text: str) -> list[tuple[str, str]]:
    """(node, the rest of its line) for every node the NodeName lines of ``text`` declare,
    their hostlists expanded, in order."""
    out = []
    for line in text.splitlines():
        if line.startswith("NodeName="):
            hostlist, _, attributes = line.removeprefix("NodeName=").partition(" ")
            out.extend((name, attributes) for name in expand_hostlist(hostlist))
    return out


def _fragment_settings(text: str) -> list[str]:
    """The global settings a slurm.conf fragment gives (not its node or partition lines)."""
    keys = []
    for line in text.splitlines():
        line = line.split("#", 1)[0].strip()
        key = line.split("=", 1)[0].strip()
        if "=" in line and key.lower() not in _LINE_KEYS:
            keys.append(key)
    return keys


def _terminate(proc: subprocess.Popen[bytes] | None, grace: float = STOP_GRACE) -> int | None:
    if proc is None:
        return None
    if proc.poll() is None and grace > 0:
        with contextlib.suppress(ProcessLookupError):
            proc.send_signal(signal.SIGTERM)
        try:
            return proc.wait(timeout=grace)
        except subprocess.TimeoutExpired:
            pass
    if proc.poll() is None:
        proc.kill()
    return proc.wait()
