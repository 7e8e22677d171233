"""shoal against the test cluster: the daemon as a process, its hooks as slurmctld's programs.

``hook_programs(directory, config)`` writes the programs slurm.conf names (ResumeProgram,
SuspendProgram, ResumeFailProgram): each records its call (kind, hostlist, how long shoal's
hook took, its exit status) in ``hooks.log`` and runs the real ``shoal-slurm-*`` console
script with ``-c config`` (slurm.conf takes no arguments, so a wrapper is what an operator
writes too). ``ShoalDaemon`` runs ``shoal run`` with the cluster's environment, talks to it
over loopback HTTP, and is stopped by pid with every local slurmd its provider started.
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import subprocess
import sys
import urllib.error
import urllib.request
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml
from e2e.procs import free_port, poll_until, shoal_argv, stop_process
from slurm.cluster import SlurmCluster, SlurmClusterError

__all__ = [
    "HookRun",
    "ShoalDaemon",
    "free_port",
    "hook_programs",
    "hook_runs",
    "kill_local_instances",
    "local_instances",
    "shoal_config",
    "slurm_conf_lines",
]

BIN = Path(sys.executable).parent
KINDS = {
    "resume": "shoal-slurm-resume",
    "suspend": "shoal-slurm-suspend",
    "resume-fail": "shoal-slurm-resume-fail",
}

_WRAPPER = """#!/bin/sh
# slurmctld's {kind} program: shoal's hook, timed and recorded
start=$(date +%s%N)
'{program}' -c '{config}' "$@" >> '{out}' 2>&1
status=$?
end=$(date +%s%N)
printf '%s\\t%s\\t%s\\t%s\\n' '{kind}' "$1" "$(( (end - start) / 1000 ))" "$status" >> '{log}'
exit $status
"""


@dataclass(frozen=True, slots=True)
class HookRun:
    kind: str
    hostlist: str
    micros: int  # how long shoal's hook ran
    status: int


def hook_programs(directory: Path, config: Path) -> dict[str, str]:
    """ResumeProgram, SuspendProgram, ResumeFailProgram for ``ClusterSpec``."""
    paths = {}
    for kind, script in KINDS.items():
        path = directory / f"hook-{kind}.sh"
        path.write_text(
            _WRAPPER.format(
                kind=kind,
                program=BIN / script,
                config=config,
                out=directory / "hooks.out",
                log=directory / "hooks.log",
            )
        )
        path.chmod(0o755)
        paths[kind] = str(path)
    return paths


def hook_runs(directory: Path) -> list[HookRun]:
    log = directory / "hooks.log"
    if not log.exists():
        return []
    runs = []
    for line in log.read_text().splitlines():
        kind, hostlist, micros, status = line.split("\t")
        runs.append(HookRun(kind, hostlist, int(micros), int(status)))
    return runs


def shoal_config(
    slurm_conf: Path,
    workdir: Path,
    port: int,
    *,
    mode: str = "power_save",
    types: dict[str, dict[str, Any]] | None = None,
    slurm: dict[str, Any] | None = None,
    provider: dict[str, Any] | None = None,
    scaler: dict[str, Any] | None = None,
) -> dict[str, Any]:
    """A config for the local provider against the cluster of ``slurm_conf``: instance types
    named after the node groups (2 CPUs, 1000 MB by default), short timings."""
    types = types or {"small": {"cores": 2, "memory": "1000MiB"}}
    config: dict[str, Any] = {
        "cluster_name": "t",
        "state_dir": str(workdir / "state"),
        "provider": {
            "kind": "local",
            "state_dir": str(workdir / "local"),
            "instance_types": types,
            **(provider or {}),
        },
        "node_types": [{"type": name, "max": 8} for name in types],
        "scaler": {
            "interval": "2s",
            "debounce": "100ms",
            "beta_inertia": 0.0,
            "node_memory_overhead": 0,
            "node_disk_overhead": 0,
            "unneeded_time": "4s",
            "scale_down_budget": 1.0,
            "join_timeout": "60s",
            "backoff": {"initial": "20s", "max": "1m"},
            "retry": {"attempts": 2, "initial": "100ms", "max": "200ms", "deadline": "5s"},
            **(scaler or {}),
        },
        "demand": {"api": False, "slurm": True},
        "slurm": {
            "mode": mode,
            "slurm_conf": str(slurm_conf),
            "poll_interval": "1s",
            "command_timeout": "10s",
            "cleanup_interval": "2s",
            "orphan_grace": "3s",
            **(slurm or {}),
        },
        "api": {"listen": f"127.0.0.1:{port}"},
        "log_level": "INFO",
    }
    return config


def slurm_conf_lines(config: dict[str, Any], workdir: Path) -> str:
    """What ``shoal slurm-conf -c CONFIG`` prints for ``config`` (the real command, as an
    operator runs it; its hook programs in this virtualenv's bin)."""
    path = workdir / "slurm-conf-input.yaml"
    path.write_text(yaml.safe_dump(config, sort_keys=False))
    result = subprocess.run(
        [*shoal_argv(), "slurm-conf", "-c", str(path), "--bin-dir", str(BIN)],
        capture_output=True,
        text=True,
        timeout=60,
    )
    if result.returncode != 0:
        raise SlurmClusterError(f"shoal slurm-conf failed: {result.stderr}")
    return result.stdout


def local_instances(workdir: Path) -> dict[str, dict[str, Any]]:
    """The local provider's records: instance id -> record (pid, tags...)."""
    path = workdir / "local" / "instances.json"
    if not path.exists():
        return {}
    return json.loads(path.read_text())["instances"]


def kill_local_instances(workdir: Path) -> int:
    """SIGKILL every process the local provider started (each in its own session, so its
    job steps too), by the pids in its records; how many were signalled."""
    killed = 0
    for record in local_instances(workdir).values():
        pid = record.get("pid")
        if pid is not None:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(pid, signal.SIGKILL)
                killed += 1
    return killed


class ShoalDaemon:
    """``shoal run`` as a process with the cluster's environment."""

    def __init__(self, cluster: SlurmCluster, workdir: Path, config: dict[str, Any]) -> None:
        self.cluster = cluster
        self.workdir = workdir
        self.config = config
        self.config_path = workdir / "shoal.yaml"
        self.log_path = workdir / "shoal.log"
        self.proc: subprocess.Popen[bytes] | None = None
        self.base = f"http://{config['api']['listen']}"
        self.config_path.write_text(yaml.safe_dump(config, sort_keys=False))

    def write(self, config: dict[str, Any]) -> None:
        self.config = config
        self.config_path.write_text(yaml.safe_dump(config, sort_keys=False))

    def start(self, *, ready: bool = True) -> ShoalDaemon:
        with self.log_path.open("ab") as log:
            log.write(b"----- start -----\n")
            log.flush()
            self.proc = subprocess.Popen(
                [str(BIN / "shoal"), "run", "-c", str(self.config_path)],
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
                env={**self.cluster.env, "PYTHONUNBUFFERED": "1"},
                cwd=self.workdir,
            )
        if ready:
            poll_until("shoal to answer /healthz", self._answers, 20, explain=self.tail)
        return self

    def _answers(self) -> bool:
        if self.proc is not None and self.proc.poll() is not None:
            raise AssertionError(f"shoal exited with {self.proc.returncode}\n{self.tail()}")
        try:
            return self.get("/v1/slurm") is not None
        except OSError:
            return False

    def get(self, path: str) -> Any:
        with urllib.request.urlopen(self.base + path, timeout=5) as response:
            return json.loads(response.read())

    def readyz(self) -> tuple[int, dict[str, Any]]:
        try:
            with urllib.request.urlopen(self.base + "/readyz", timeout=5) as response:
                return response.status, json.loads(response.read())
        except urllib.error.HTTPError as exc:
            with exc:
                return exc.code, json.loads(exc.read())

    def metrics(self) -> str:
        with urllib.request.urlopen(self.base + "/metrics", timeout=5) as response:
            return response.read().decode()

    def kill9(self) -> None:
        assert self.proc is not None
        self.proc.kill()
        self.proc.wait(timeout=10)

    def stop(self) -> int | None:
        """SIGTERM and wait (SIGKILL after 10 s); the exit status."""
        return stop_process(self.proc)

    def stop_instances(self) -> None:
        """Kill every process the local provider started, by the pids in its records."""
        kill_local_instances(self.workdir)

    def tail(self, lines: int = 60) -> str:
        text = self.log_path.read_text(errors="replace") if self.log_path.exists() else ""
        return "\n".join(text.splitlines()[-lines:])

    def node_state(self, name: str) -> str:
        try:
            return self.cluster.node_state(name)
        except SlurmClusterError:
            return ""
