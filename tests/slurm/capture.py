"""Capture real squeue/sinfo/scontrol output from the test cluster into ``tests/slurm/data``.

Run as root where Slurm is installed (``make tools``)::

    .venv/bin/python tests/slurm/capture.py [OUTDIR [STEP...]]

It starts a ``SlurmCluster`` (``cluster.py``), brings a mix of jobs and nodes into known
states, and writes the exact stdout of the commands ``shoal.daemon.slurm.client`` runs
(``squeue_argv``, ``sinfo_argv``, ``scontrol show config``) at each step; ``data/README.md``
says which file holds which step. The parser tests read these files, so they test the
parsers on what Slurm really prints. Takes about a minute.
"""

from __future__ import annotations

import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from shoal.daemon.slurm.client import SlurmCommands, sinfo_argv, squeue_argv
from slurm.cluster import ClusterSpec, SlurmCluster, missing_requirements


def registered(flags: set[str]) -> bool:
    return not flags & {"not_responding", "powering_up", "powered_down"}


class Capture:
    def __init__(self, cluster: SlurmCluster, outdir: Path) -> None:
        self.cluster = cluster
        self.outdir = outdir
        commands = SlurmCommands(
            squeue=cluster.program("squeue"),
            sinfo=cluster.program("sinfo"),
            scontrol=cluster.program("scontrol"),
        )
        self.squeue = squeue_argv(commands)
        self.sinfo = sinfo_argv(commands)

    def save(self, name: str, argv: list[str]) -> str:
        result = subprocess.run(
            argv, env=self.cluster.env, capture_output=True, text=True, check=True, timeout=15
        )
        (self.outdir / name).write_text(result.stdout)
        print(f"wrote {name}: {len(result.stdout.splitlines())} lines")
        return result.stdout

    def snapshot(self, step: str) -> None:
        self.save(f"squeue-{step}.txt", self.squeue)
        self.save(f"sinfo-{step}.txt", self.sinfo)

    def settle(self, deadline: float = 20.0) -> None:
        """Wait until the scheduler gave every pending job a reason (not "None")."""
        end = time.monotonic() + deadline
        while time.monotonic() < end:
            out = self.cluster.run("squeue", "-h", "-t", "PD", "-o", "%r").stdout.split("\n")
            if "None" not in out:
                return
            time.sleep(0.2)
        raise RuntimeError("pending jobs still have reason None")


def mixed(outdir: Path, root: Path) -> None:
    """DefMemPerCPU=100: running, configuring, pending for every reason, requeued, dynamic."""
    with SlurmCluster(root / "mixed", ClusterSpec()) as cluster:
        cap = Capture(cluster, outdir)
        cluster.power_up("cloud1", "cloud2")
        for name in ("cloud1", "cloud2"):
            cluster.start_slurmd(name)
        for name in ("cloud1", "cloud2"):
            cluster.wait_node(name, registered, 15)
        # running: a 2-node job with --mem-per-cpu, then two array tasks fill the nodes
        multi = cluster.sbatch("-N2", "-n2", "--mem-per-cpu=150", "-t", "1:30:00",
                               "--wrap", "srun sleep 300")  # fmt: skip
        cluster.wait_job_state(multi, {"RUNNING"}, 15)
        array = cluster.sbatch("--array=1-2", "-c1", "--mem=100", "-t", "10", "--wrap", "sleep 300")
        cluster.wait_job_state(f"{array}_2", {"RUNNING"}, 15)
        # configuring: allocated to cloud3, which powers up (nobody starts its slurmd)
        configuring = cluster.sbatch("-c2", "--mem=600", "-t", "2-00:00:00", "--wrap", "sleep 300")
        cluster.scontrol("update", "nodename=cloud4", "state=down", "reason=capacity test")
        # pending, one reason each
        first = cluster.sbatch("-c2", "--mem=500", "-t", "30", "--wrap", "sleep 300")
        cluster.sbatch("-n3", "-N2", "--mem-per-cpu=150", "--wrap", "sleep 300")
        cluster.sbatch("--array=1-3", "-c1", "--mem-per-cpu=300", "-t", "45", "--wrap", "sleep 1")
        cluster.sbatch("--hold", "-c1", "--wrap", "sleep 1")
        admin_held = cluster.sbatch("-c1", "--wrap", "sleep 1")
        cluster.scontrol("hold", admin_held)
        cluster.sbatch("-w", "cloud4", "-c1", "--wrap", "sleep 1")
        cluster.sbatch("-p", "dyn", "-c1", "--mem=2000", "--wrap", "sleep 1")
        cluster.sbatch("--begin=now+1hour", "-c1", "--wrap", "sleep 1")
        cluster.sbatch(f"--dependency=afterok:{first}", "-c1", "--wrap", "sleep 1")
        cluster.sbatch("-p", "cloud,dyn", "-c1", "-t", "5:00", "--wrap", "sleep 1")
        cap.settle()
        cap.snapshot("mixed")
        cap.save("config-defmem.txt", [cluster.program("scontrol"), "show", "config"])

        # a failed launch: the configuring job's node is forced down and the job requeued
        cluster.scontrol("update", "nodename=cloud3", "state=power_down_force",
                         "reason=no capacity")  # fmt: skip
        end = time.monotonic() + 15
        while cluster.run("squeue", "-h", "-j", configuring, "-o", "%r").stdout.strip() != (
            "BeginTime"
        ):
            if time.monotonic() > end:
                raise RuntimeError("the job on cloud3 was not requeued")
            time.sleep(0.1)
        cap.snapshot("requeued")

        # a dynamic node takes the PartitionConfig job; cloud1 drains
        cluster.start_dynamic_slurmd("dyn1", memory_mb=4000, features=("big",))
        cluster.wait_node("dyn1", registered, 15)
        cluster.scontrol("update", "nodename=cloud1", "state=drain", "reason=shoal idle")
        end = time.monotonic() + 15
        while "dyn1" not in cluster.run("squeue", "-h", "-t", "R,CG", "-o", "%N").stdout:
            if time.monotonic() > end:
                raise RuntimeError("no job ran on dyn1")
            time.sleep(0.1)
        cap.snapshot("dynamic")


def no_default_memory(outdir: Path, root: Path) -> None:
    """No DefMemPerCPU: a job without --mem gets (and shows) a whole node's memory."""
    spec = ClusterSpec(def_mem_per_cpu=None, dynamic_partition=None)
    with SlurmCluster(root / "nodefmem", spec) as cluster:
        cap = Capture(cluster, outdir)
        for _ in range(5):
            cluster.sbatch("-c1", "--wrap", "sleep 1")
        cluster.sbatch("-c1", "--mem=0", "--wrap", "sleep 1")
        cap.settle()
        cap.save("squeue-nodefmem.txt", cap.squeue)
        cap.save("config-nodefmem.txt", [cluster.program("scontrol"), "show", "config"])
    # what a client says once slurmctld is gone
    down = subprocess.run(cap.squeue, env=cluster.env, capture_output=True, text=True, timeout=30)
    (outdir / "squeue-down.stderr").write_text(f"exit {down.returncode}\n{down.stderr}")


def gangs(outdir: Path, root: Path) -> None:
    """Multi-node jobs pending for capacity (partition dyn has no node yet: PartitionConfig),
    one per way of sizing a node: --mem, --mem-per-cpu with -c, --ntasks-per-node, uneven -n."""
    with SlurmCluster(root / "gangs", ClusterSpec()) as cluster:
        cap = Capture(cluster, outdir)
        for args in (
            ("-N3", "--mem=500", "-t", "1:00:00"),
            ("-N2", "--mem-per-cpu=200", "-c2"),
            ("-N2", "--ntasks-per-node=3", "--mem-per-cpu=100"),
            ("-N2", "--ntasks-per-node=2", "-c2", "--mem=700"),
            ("-N3", "-n4", "--mem-per-cpu=100"),
        ):
            cluster.sbatch("-p", "dyn", *args, "--wrap", "srun sleep 1")
        cap.settle()
        cap.save("squeue-gangs.txt", cap.squeue)


STEPS = {"mixed": mixed, "nodefmem": no_default_memory, "gangs": gangs}


def main() -> int:
    reason = missing_requirements()
    if reason:
        print(reason, file=sys.stderr)
        return 1
    outdir = Path(sys.argv[1]) if len(sys.argv) > 1 else Path(__file__).parent / "data"
    outdir.mkdir(parents=True, exist_ok=True)
    steps = sys.argv[2:] or list(STEPS)  # e.g. `capture.py tests/slurm/data gangs`
    with tempfile.TemporaryDirectory(prefix="shoal-slurm-") as tmp:
        for step in steps:
            STEPS[step](outdir, Path(tmp))
    return 0


if __name__ == "__main__":
    sys.exit(main())
