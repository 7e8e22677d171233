"""``make run-slurm``: a Slurm cluster on this machine, scaled by shoal, to watch nodes come and go.

Starts, as root, a private munged and slurmctld on free loopback ports (the test cluster of
``tests/slurm/cluster.py``: cloud nodes with power saving), shoal's hooks as slurmctld's
ResumeProgram / SuspendProgram / ResumeFailProgram, and ``shoal run`` on the local provider
(every "instance" is a ``slurmd`` on this machine). Then submit jobs in another terminal
with the ``SLURM_CONF`` it prints, and watch ``sinfo``: nodes power up (``alloc#``, then
``alloc``), run the jobs, and power down after SuspendTime (``idle%``, then ``idle~``).

Ctrl-C (or SIGTERM) stops everything it started, by pid: shoal, the slurmds shoal started,
slurmctld and munged. ``--smoke`` runs one ``srun -N2 hostname`` and stops (what the test of
this script does).
"""

from __future__ import annotations

import argparse
import contextlib
import shutil
import signal
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "tests"))

from e2e.procs import free_port, poll_until, stop_process  # noqa: E402
from slurm.cluster import ClusterSpec, SlurmCluster, missing_requirements  # noqa: E402
from slurm.shoal_proc import kill_local_instances, slurm_conf_lines  # noqa: E402

BIN = Path(sys.executable).parent
HOOK = """#!/bin/sh
# slurmctld's {kind} program (slurm.conf takes no arguments): shoal's hook with the demo config
exec '{program}' -c '{config}' "$@"
"""
_stop = False


def _on_signal(signum: int, frame: object) -> None:
    global _stop
    _stop = True


def hooks(directory: Path, config: Path) -> dict[str, str]:
    programs = {}
    for kind in ("resume", "suspend", "resume-fail"):
        path = directory / f"{kind}.sh"
        path.write_text(HOOK.format(kind=kind, program=BIN / f"shoal-slurm-{kind}", config=config))
        path.chmod(0o755)
        programs[kind] = str(path)
    return programs


def shoal_config(
    slurm_conf: Path, directory: Path, port: int, nodes: int, cores: int, memory: int
) -> dict:
    return {
        "cluster_name": "demo",
        "state_dir": str(directory / "state"),
        "provider": {
            "kind": "local",
            "state_dir": str(directory / "local"),
            "instance_types": {"small": {"cores": cores, "memory": f"{memory}MiB"}},
        },
        "node_types": [{"type": "small", "max": nodes}],
        "scaler": {"interval": "10s"},
        "demand": {"api": False, "slurm": True},
        "slurm": {
            "mode": "power_save",
            "slurm_conf": str(slurm_conf),
            "poll_interval": "2s",
            "node_types": {"cloud": "small"},  # cloud1..cloud<nodes>
            "cleanup_interval": "10s",
            "orphan_grace": "30s",
        },
        "api": {"listen": f"127.0.0.1:{port}"},
    }


def wait_ready(base: str, shoal: subprocess.Popen[bytes], deadline: float = 30.0) -> None:
    def ready() -> bool:
        if shoal.poll() is not None:
            raise SystemExit(f"shoal exited with {shoal.returncode}")
        with contextlib.suppress(OSError), urllib.request.urlopen(base + "/readyz", timeout=1) as r:
            return r.status == 200
        return False

    poll_until("shoal /readyz", ready, deadline, interval=0.2, error=SystemExit)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--nodes", type=int, default=4, help="cloud nodes (default 4)")
    parser.add_argument("--cpus", type=int, default=2, help="CPUs per node (default 2)")
    parser.add_argument("--memory", type=int, default=1000, help="MB per node (default 1000)")
    parser.add_argument("--suspend-time", type=int, default=30, help="SuspendTime seconds")
    parser.add_argument("--port", type=int, default=0, help="shoal's API port (default: free)")
    parser.add_argument("--keep", action="store_true", help="keep the directory afterwards")
    parser.add_argument("--smoke", action="store_true", help="run srun -N2 hostname and stop")
    args = parser.parse_args(argv)
    reason = missing_requirements()
    if reason:
        print(f"run-slurm: {reason}", file=sys.stderr)
        return 2
    top = Path(tempfile.mkdtemp(prefix="shoal-slurm-", dir="/tmp"))
    (top / "slurm").mkdir()
    print(f"run-slurm: directory {top}", flush=True)
    config_path = top / "shoal.yaml"
    port = args.port or free_port()
    config = shoal_config(
        top / "slurm" / "slurm.conf", top, port, args.nodes, args.cpus, args.memory
    )
    config_path.write_text(yaml.safe_dump(config, sort_keys=False))
    spec = ClusterSpec(
        cloud=(),
        shoal_nodes=slurm_conf_lines(config, top),  # the nodes `shoal slurm-conf` declares
        dynamic_partition=None,
        suspend_time=args.suspend_time,
        suspend_timeout=10,
        resume_timeout=60,
        **{f"{k.replace('-', '_')}_program": v for k, v in hooks(top, config_path).items()},
    )
    cluster = SlurmCluster(top / "slurm", spec)
    shoal: subprocess.Popen[bytes] | None = None
    signal.signal(signal.SIGINT, _on_signal)
    signal.signal(signal.SIGTERM, _on_signal)
    status = 0
    try:
        cluster.start()
        log = open(top / "shoal.log", "ab") if args.smoke else None  # noqa: SIM115
        shoal = subprocess.Popen(
            [str(BIN / "shoal"), "run", "-c", str(config_path)],
            env={**cluster.env, "PYTHONUNBUFFERED": "1"},
            stdin=subprocess.DEVNULL,
            stdout=log,
            stderr=subprocess.STDOUT if log else None,
        )
        base = f"http://127.0.0.1:{port}"
        wait_ready(base, shoal)
        if args.smoke:
            result = cluster.run("srun", "-N2", "hostname", check=False, timeout=120)
            print(result.stdout, end="")
            status = result.returncode
            if status:  # say why: srun's own words, and what shoal and slurmctld logged
                print(result.stderr, end="", file=sys.stderr)
                for path in (top / "shoal.log", *sorted(top.glob("**/slurmctld.log"))):
                    if path.is_file():
                        tail = path.read_text(errors="replace").splitlines()[-40:]
                        print(f"--- {path.name} ends:", *tail, sep="\n", file=sys.stderr)
        else:
            print(
                f"\nshoal scales {', '.join(cluster.cloud_nodes)} (power saving, local slurmds)."
                f"\nIn another terminal:\n"
                f"  export SLURM_CONF={cluster.conf_path}\n"
                f"  srun -N2 hostname; sbatch --wrap 'sleep 20'; watch -n1 sinfo\n"
                f"  curl -s {base}/v1/slurm | python3 -m json.tool\n"
                f"shoal's config: {config_path}; Ctrl-C stops everything.\n",
                flush=True,
            )
            while not _stop and shoal.poll() is None:
                time.sleep(0.5)
    finally:
        stop_process(shoal, grace=15)
        killed = kill_local_instances(top)
        cluster.stop()
        print(f"run-slurm: stopped shoal, {killed} slurmd(s), slurmctld and munged")
        if not args.keep:
            shutil.rmtree(top, ignore_errors=True)
    return status


if __name__ == "__main__":
    sys.exit(main())
