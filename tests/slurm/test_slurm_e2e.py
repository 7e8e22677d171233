"""shoal scaling a real Slurm: slurmctld runs shoal's hooks, shoal launches slurmd processes
through the local provider, jobs run on them.

Each test starts its own cluster (munged, slurmctld) and ``shoal run`` as a process on the
local provider, and stops every process by pid at the end: the daemon, the slurmds it
started (by the pids in the provider's records), then the cluster. Batch jobs on a node that
has just powered up start at slurmctld's 30-second job check; ``srun`` starts at once.
"""

from __future__ import annotations

import json
import re
import signal
import subprocess
import time
from collections import Counter
from collections.abc import Callable, Iterator
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import pytest
from e2e.procs import poll_until
from shoal.daemon.slurm.parse import expand_hostlist
from shoal.scaler.order import idle_weight, kept_weight
from slurm.cluster import ClusterSpec, NodeGroup, SlurmCluster
from slurm.shoal_proc import (
    HookRun,
    ShoalDaemon,
    free_port,
    hook_programs,
    hook_runs,
    local_instances,
    shoal_config,
    slurm_conf_lines,
)

pytestmark = pytest.mark.slurm

LOCAL_MARKER = b"SHOAL_LOCAL_INSTANCE="


@dataclass
class Setup:
    cluster: SlurmCluster
    daemon: ShoalDaemon
    workdir: Path

    def jobs(self) -> dict[str, tuple[str, str]]:
        """Every job (array tasks one by one): id -> (state, nodes)."""
        out = self.cluster.run("squeue", "-h", "-r", "-t", "all", "-o", "%i|%T|%N").stdout
        return {
            line.split("|")[0]: (line.split("|")[1], line.split("|")[2])
            for line in out.splitlines()
            if line.strip()
        }

    def states(self, names: list[str]) -> dict[str, set[str]]:
        return {n: set(self.cluster.node_state(n).split("+")) for n in names}

    def reason(self, name: str) -> str:
        result = self.cluster.run("sinfo", "-h", "-N", "-n", name, "-O", "Reason:0")
        return result.stdout.strip()

    def hooks(self) -> list[HookRun]:
        return hook_runs(self.workdir)

    def instances(self) -> dict[str, dict[str, Any]]:
        return local_instances(self.workdir)

    def slurm_conf(self) -> str:
        """What ``shoal slurm-conf`` prints for the daemon's config."""
        return slurm_conf_lines(self.daemon.config, self.workdir)

    def metric(self, name: str, **labels: str) -> float:
        total = 0.0
        for line in self.daemon.metrics().splitlines():
            match = re.match(r"^(\w+)(?:\{(.*)\})? (\S+)$", line)
            if match is None or match.group(1) != name:
                continue
            have = dict(re.findall(r'(\w+)="([^"]*)"', match.group(2) or ""))
            if all(have.get(k) == v for k, v in labels.items()):
                total += float(match.group(3))
        return total

    def explain(self) -> str:
        nodes = self.cluster.run("sinfo", "-h", "-N", "-O", "NodeList:12,StateComplete:45,Reason:0")
        return (
            f"jobs: {self.jobs()}\nnodes:\n{nodes.stdout}\nhooks: {self.hooks()}\n"
            f"instances: {sorted(self.instances())}\nshoal log:\n{self.daemon.tail(40)}"
        )


def local_processes(workdir: Path) -> list[int]:
    """Live processes the local provider of ``workdir`` started (found by their marker)."""
    marker = LOCAL_MARKER + str((workdir / "local").resolve()).encode()
    pids = []
    for proc in Path("/proc").iterdir():
        if not proc.name.isdigit():
            continue
        try:
            environ = (proc / "environ").read_bytes().split(b"\0")
            state = (proc / "stat").read_text().rsplit(")", 1)[1].split()[0]
        except OSError:
            continue
        if state != "Z" and any(e.startswith(marker) for e in environ):
            pids.append(int(proc.name))
    return pids


@pytest.fixture
def setup_factory(
    slurm_cluster_factory: Callable[..., SlurmCluster], tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Callable[..., Setup]]:
    made: list[ShoalDaemon] = []

    def make(spec: ClusterSpec, *, start: bool = True, hooks: bool = True, **config: Any) -> Setup:
        """A cluster of ``spec`` and a shoal daemon for it. In power_save mode, unless ``spec``
        declares its own node groups, its cloud nodes are what `shoal slurm-conf` generates
        from the daemon's config."""
        workdir = tmp_path_factory.mktemp("shoal")
        port = free_port()
        if not spec.cloud and config.get("mode", "power_save") == "power_save":
            draft = shoal_config(workdir / "slurm.conf", workdir, port, **config)
            spec = replace(spec, shoal_nodes=slurm_conf_lines(draft, workdir))
        if hooks:
            programs = hook_programs(workdir, workdir / "shoal.yaml")
            spec = replace(
                spec,
                resume_program=programs["resume"],
                suspend_program=programs["suspend"],
                resume_fail_program=programs["resume-fail"],
            )
        cluster = slurm_cluster_factory(spec)
        daemon = ShoalDaemon(
            cluster, workdir, shoal_config(cluster.conf_path, workdir, port, **config)
        )
        made.append(daemon)
        if start:
            daemon.start()
        return Setup(cluster, daemon, workdir)

    yield make
    for daemon in made:  # before the clusters (their fixture ends after this one)
        daemon.stop()
        daemon.stop_instances()
        print(f"shoal log {daemon.log_path}:\n{daemon.tail(30)}")


def srun(cluster: SlurmCluster, *args: str) -> subprocess.Popen[str]:
    """``srun`` in the background (it blocks until its job ends)."""
    return subprocess.Popen(
        [cluster.program("srun"), *args],
        env=cluster.env,
        stdin=subprocess.DEVNULL,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )


def finish(proc: subprocess.Popen[str], timeout: float = 90) -> str:
    """Wait for a background ``srun``; its output (one line per task)."""
    try:
        out, err = proc.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        proc.kill()
        out, err = proc.communicate()
        raise AssertionError(f"srun did not finish: {out}{err}") from None
    assert proc.returncode == 0, out + err
    return out


def named(runs: list[HookRun], kind: str) -> Counter[str]:
    """How often the hooks of ``kind`` named each node."""
    return Counter(n for r in runs if r.kind == kind for n in expand_hostlist(r.hostlist))


# -- power saving -------------------------------------------------------------------------


def test_power_saving_resumes_exactly_the_named_nodes_and_suspends_them(
    setup_factory: Callable[..., Setup],
) -> None:
    spec = ClusterSpec(cloud=(), dynamic_partition=None, suspend_time=5, suspend_timeout=5)
    s = setup_factory(spec, slurm={"node_types": {"cloud[1-6]": "small"}})
    names = s.cluster.cloud_nodes
    assert names == [f"cloud{i}" for i in range(1, 7)]  # as `shoal slurm-conf` declares them
    features = s.cluster.run("sinfo", "-h", "-N", "-n", "cloud1", "-O", "Features:0").stdout
    assert features.strip().split(",")[:2] == ["shoal", "small"]
    step = srun(s.cluster, "-N2", "hostname")
    submitted = [
        s.cluster.sbatch("-c1", "--wrap", "sleep 1"),
        s.cluster.sbatch("-c2", "--mem=500M", "--wrap", "sleep 1"),
        s.cluster.sbatch("--array=1-3", "-c1", "--wrap", "sleep 1"),
    ]
    assert len(finish(step).split()) == 2
    poll_until(
        "every job to complete",
        lambda: len(jobs := s.jobs()) == 6 and all(st == "COMPLETED" for st, _ in jobs.values()),
        120,
        interval=0.5,
        explain=s.explain,
    )
    resumed = named(s.hooks(), "resume")
    launched = Counter(node for node, _ in s.daemon.get("/v1/slurm")["power_saving"]["launched"])
    assert launched == resumed  # exactly the named nodes, once per resume
    records = json.loads((s.workdir / "local" / "instances.json").read_text())
    assert records["next"] - 1 == sum(launched.values())  # and nothing else was started
    ran_on = {n for _, nodes in s.jobs().values() for n in expand_hostlist(nodes)}
    assert ran_on <= set(launched)
    assert all(run.status == 0 for run in s.hooks()), s.hooks()
    assert submitted and all(job_id.isdigit() for job_id in submitted)

    poll_until(
        "the nodes to be suspended",
        lambda: all("powered_down" in f for f in s.states(names).values()) and not s.instances(),
        90,
        interval=0.5,
        explain=s.explain,
    )
    assert named(s.hooks(), "suspend") == launched  # each instance suspended once
    assert local_processes(s.workdir) == []  # every slurmd gone: no orphan
    assert s.daemon.get("/v1/status")["node_counts"] == {}
    print(
        "hook runs (kind, hostlist, ms):",
        [(r.kind, r.hostlist, r.micros // 1000) for r in s.hooks()],
    )


# -- failures -----------------------------------------------------------------------------


def test_no_capacity_and_a_node_that_never_registers(setup_factory: Callable[..., Setup]) -> None:
    """a1 (preferred for jobs needing x) has no capacity: DOWN with the reason, the job goes to
    c, a1 is powered down when its backoff ends. b1 (preferred for y) never registers: at
    ResumeTimeout slurmctld runs ResumeFailProgram, shoal terminates its instance, holds it,
    and powers it down; the job goes to c as well."""
    spec = ClusterSpec(
        cloud=(
            NodeGroup("a", 1, features=("x",), weight=1),
            NodeGroup("b", 1, features=("y",), weight=2),
            NodeGroup("c", 2, features=("x", "y"), weight=10),
        ),
        dynamic_partition=None,
        suspend_time=60,
        suspend_timeout=5,
        resume_timeout=8,
        cred_expire=5,
    )
    types = {name: {"cores": 2, "memory": "1000MiB"} for name in "abc"}
    s = setup_factory(
        spec,
        types=types,
        slurm={"node_types": {"a": "a", "b": "b", "c": "c"}},
        provider={"capacity": {"a": 0}, "never_join": ["b"]},
    )
    on_x = s.cluster.sbatch("--constraint=x", "-c2", "--wrap", "sleep 1")
    on_y = s.cluster.sbatch("--constraint=y", "-c2", "--wrap", "sleep 1")

    def a1_held() -> dict[str, Any] | None:
        status = s.daemon.get("/v1/status")
        held = "down" in s.states(["a1"])["a1"] and "no capacity" in s.reason("a1")
        backoff = [b for b in status["backoff"] if b["offering"] == "a/local/on-demand"]
        return backoff[0] if held and backoff else None

    backoff = poll_until(
        "a1 DOWN with shoal's reason", a1_held, 30, interval=0.2, explain=s.explain
    )
    assert backoff["kind"] == "capacity" and "InsufficientInstanceCapacity" in backoff["reason"]
    assert s.reason("a1").startswith("shoal: ")
    poll_until(
        "both jobs to complete on c",
        lambda: all(s.jobs()[j][0] == "COMPLETED" for j in (on_x, on_y)),
        120,
        interval=0.5,
        explain=s.explain,
    )
    # on c: side by side on c1 and c2, or one after the other on c1 when c2's slurmd (started
    # at the same moment) is late to register and ResumeTimeout fails it as well
    assert {s.jobs()[on_x][1], s.jobs()[on_y][1]} <= {"c1", "c2"}
    fails = [
        n for run in s.hooks() if run.kind == "resume-fail" for n in expand_hostlist(run.hostlist)
    ]
    assert "b1" in fails
    poll_until(
        "a1 and b1 powered down, back in the pool",
        lambda: all(
            "powered_down" in f and "down" not in f for f in s.states(["a1", "b1"]).values()
        ),
        60,
        interval=0.5,
        explain=s.explain,
    )
    assert s.metric("shoal_scale_up_failures_total", node_type="a", reason="capacity") >= 1
    # b1's instance is terminated once, as a join timeout (its offering backed off): by its
    # resume-fail request, or, when the clean-up loop reads b1 first (slurmctld sets it down~
    # "ResumeTimeout reached" a moment before it runs ResumeFailProgram; 1 run in 4 here), by
    # the clean-up as an orphan that never registered
    assert s.metric("shoal_scale_downs_total", node_type="b", cause="join-timeout") == 1
    assert s.metric("shoal_slurm_cleanups_total", kind="orphan") <= 1
    assert not [r for r in s.instances().values() if r["tags"]["shoal:slurm-node"] in ("a1", "b1")]
    kept_down = s.daemon.get("/v1/slurm")["power_saving"]["kept_down"]
    assert "a1" not in kept_down and "b1" not in kept_down


def gang_on_room_for_two(setup_factory: Callable[..., Setup], **scaler: Any) -> Setup:
    """Cloud nodes g[1-3] of a type ``g`` with room for 2 (``provider.capacity``)."""
    spec = ClusterSpec(
        cloud=(NodeGroup("g", 3),),
        dynamic_partition=None,
        suspend_time=60,
        suspend_timeout=5,
        resume_timeout=30,
        cred_expire=5,
        # the main scheduling loop every 2 s (default 60): the requeued job is placed soon
        # after its nodes are powered down, not up to a minute later
        settings={"SchedulerParameters": "batch_sched_delay=0,sched_interval=2"},
    )
    return setup_factory(
        spec,
        types={"g": {"cores": 2, "memory": "1000MiB"}},
        slurm={"node_types": {"g": "g"}},
        provider={"capacity": {"g": 2}},
        scaler=scaler or None,
    )


def gang_down_and_nothing_running(s: Setup, names: list[str]) -> None:
    """Wait until every node of ``names`` is DOWN with shoal's reason and no slurmd runs."""

    def all_down() -> bool:
        states = s.states(names)
        return all("down" in f for f in states.values()) and all(
            s.reason(n).startswith("shoal: ") for n in names
        )

    poll_until("g[1-3] DOWN with shoal's reason", all_down, 40, interval=0.2, explain=s.explain)
    poll_until(
        "no slurmd left running",
        lambda: not s.instances() and not local_processes(s.workdir),
        20,
        interval=0.2,
        explain=s.explain,
    )


def test_a_multi_node_job_without_room_for_all_its_nodes_leaves_none_running(
    setup_factory: Callable[..., Setup],
) -> None:
    """``sbatch -N3`` on a type with room for 2 (issue 18): Slurm resumes g[1-3] in one call,
    shoal launches them all or nothing, so no slurmd is left running for the job: all three
    nodes are DOWN with shoal's reason and the job waits, requeued, instead of 2 nodes
    billing for a job that cannot start."""
    s = gang_on_room_for_two(setup_factory)
    job = s.cluster.sbatch("-N3", "-c2", "--wrap", "srun hostname")
    names = ["g1", "g2", "g3"]
    gang_down_and_nothing_running(s, names)
    resumed = [r for r in s.hooks() if r.kind == "resume"]
    assert [expand_hostlist(r.hostlist) for r in resumed] == [names]
    assert s.jobs()[job][0] == "PENDING"  # requeued: it waits for capacity, on no node
    kept_down = s.daemon.get("/v1/slurm")["power_saving"]["kept_down"]
    assert sorted(kept_down) == names
    assert len({k["reason"] for k in kept_down.values()}) == 1


def test_a_multi_node_job_runs_once_capacity_returns(
    setup_factory: Callable[..., Setup],
) -> None:
    """The -N3 job above, then the operator raises ``provider.capacity`` to 3 and sends
    SIGHUP (issue 18): when the type's backoff ends shoal powers g[1-3] down, Slurm resumes
    them for the requeued job, and this time all three launch and the job runs on them."""
    s = gang_on_room_for_two(setup_factory, backoff={"initial": "2s", "max": "4s"})
    # no srun in the script: slurmctld 22.05.8 once crashed (SIGSEGV in build_job_info_resp)
    # answering the allocation lookup of an srun in this requeued job, at its start after
    # the power-up; the allocation on g[1-3] is what this test is about
    job = s.cluster.sbatch("-N3", "-c2", "--wrap", "hostname")
    names = ["g1", "g2", "g3"]
    gang_down_and_nothing_running(s, names)
    assert s.jobs()[job][0] == "PENDING"

    config = s.daemon.config
    s.daemon.write({**config, "provider": {**config["provider"], "capacity": {"g": 3}}})
    assert s.daemon.proc is not None
    s.daemon.proc.send_signal(signal.SIGHUP)
    poll_until(
        "the daemon to reload its config",
        lambda: "event=reloaded" in s.daemon.tail(200),
        10,
        interval=0.1,
        explain=s.explain,
    )
    # about 25 s; the deadline covers one node whose registration slurmctld ignores: its
    # ResumeTimeout (30 s), shoal's relaunch of it, and the next 30-second check that starts
    # the batch job. (Seen in CI before the local provider waited for the next second to
    # start a slurmd -b: boot_second_wait.)
    poll_until(
        "the job to run on g[1-3]",
        lambda: (
            s.jobs()[job][0] in ("RUNNING", "COMPLETING", "COMPLETED")
            and expand_hostlist(s.jobs()[job][1]) == names
        ),
        120,
        interval=0.2,
        explain=s.explain,
    )
    log = s.daemon.log_path.read_text()
    assert "event=capacity_applied capacity=g=3" in log
    assert "event=reload_needs_restart" not in log
    assert sorted(r["tags"]["shoal:slurm-node"] for r in s.instances().values()) == names


# -- external mode ------------------------------------------------------------------------


def test_external_mode_launches_a_dynamic_node_then_drains_terminates_and_deletes_it(
    setup_factory: Callable[..., Setup],
) -> None:
    # the main scheduling loop every 2 s (default 60): slurmctld may look at the queue as the
    # dynamic node registers, before it can take the job (seen under load: allocated at
    # the next 60 s loop, 55 s after the node was up, and the test's 60 s wait ran out)
    spec = ClusterSpec(
        cloud=(),
        dynamic_partition="dyn",
        settings={"SchedulerParameters": "batch_sched_delay=0,sched_interval=2"},
    )
    # "small" first (count packing launches it), unpriced: its Weight comes after "spare"'s;
    # shoal's overhead makes its RealMemory the planner's usable memory, not the machine's
    types = {
        "small": {"cores": 2, "memory": "1000MiB"},
        "spare": {"cores": 2, "memory": "1000MiB", "price": 0.1},
    }
    s = setup_factory(
        spec,
        hooks=False,
        mode="external",
        types=types,
        slurm={"partitions": ["dyn"], "features": {"small": ["dyn"]}},
        provider={"capacity": {"small": 1, "spare": 0}},
        scaler={"node_memory_overhead": "200MiB"},
    )
    job = s.cluster.sbatch("-p", "dyn", "-c1", "--wrap", "sleep 1")
    poll_until(
        "the job to complete", lambda: s.jobs()[job][0] == "COMPLETED", 60, explain=s.explain
    )
    (instance_id,) = s.instances()
    assert s.jobs()[job][1] == instance_id  # the dynamic node is named after its instance
    features = s.cluster.run("sinfo", "-h", "-N", "-n", instance_id, "-O", "Features:0").stdout
    # shoal's mark, the type's feature as `shoal slurm-conf` names it, then the configured
    assert features.strip() == "shoal,small,on-demand,dyn"
    # registered with what `shoal slurm-conf` declares of its type (its comment line)
    declared = re.search(r"# small: .*: (CPUs=\S+ RealMemory=\S+ Weight=\S+)", s.slurm_conf())
    assert declared and declared[1] == "CPUs=2 RealMemory=800 Weight=2", s.slurm_conf()
    node = dict(re.findall(r"(\w+)=(\S*)", s.cluster.scontrol("show", "node", instance_id)))
    assert (node["CPUTot"], node["RealMemory"], node["Weight"]) == ("2", "800", "2")
    drained = poll_until(
        "the idle node to be drained",
        lambda: s.reason(instance_id) == "shoal" or not s.instances(),
        30,
        interval=0.1,
        explain=s.explain,
    )
    assert drained
    poll_until(
        "the node to be terminated and deleted",
        lambda: not s.instances() and not s.cluster.node_state(instance_id),
        30,
        interval=0.2,
        explain=s.explain,
    )
    assert local_processes(s.workdir) == []
    assert s.metric("shoal_scale_downs_total", node_type="small", cause="idle") == 1
    assert "event=drain node=" + instance_id in s.daemon.tail(200)


def test_external_mode_with_kept_weights_sets_a_nodes_weight_from_its_jobs(
    setup_factory: Callable[..., Setup],
) -> None:
    """``slurm.node_weights: kept`` on a real slurmctld (one dynamic node: the local provider
    runs one per host): the node registers last of its rank (``idle_weight``); running a
    60-minute job, shoal sets its Weight lower (``scontrol update``: kept an hour); when the
    job is cancelled, back to the idle weight."""
    spec = ClusterSpec(
        cloud=(),
        dynamic_partition="dyn",
        settings={"SchedulerParameters": "batch_sched_delay=0,sched_interval=2"},
    )
    s = setup_factory(
        spec,
        hooks=False,
        mode="external",
        slurm={"partitions": ["dyn"], "features": {"small": ["dyn"]}, "node_weights": "kept"},
        provider={"capacity": {"small": 1}},
        scaler={"unneeded_time": "5m"},
    )
    job = s.cluster.sbatch("-p", "dyn", "-c1", "--time=60", "--wrap", "sleep 600")
    poll_until("the job to run", lambda: s.jobs()[job][0] == "RUNNING", 60, explain=s.explain)
    node = s.jobs()[job][1]

    def weight() -> int:
        out = s.cluster.scontrol("show", "node", node)
        return int(dict(re.findall(r"(\w+)=(\S*)", out))["Weight"])

    kept = {kept_weight(1, 3600.0), kept_weight(1, 3540.0)}  # an hour left, or a minute less
    poll_until("shoal to weigh the busy node", lambda: weight() in kept, 30, explain=s.explain)
    assert max(kept) < idle_weight(1)
    s.cluster.run("scancel", job)
    poll_until("the idle weight again", lambda: weight() == idle_weight(1), 30, explain=s.explain)
    assert s.metric("shoal_slurm_weight_updates_total", result="set") >= 2
    assert s.metric("shoal_slurm_weight_updates_total", result="failed") == 0


# -- restart --------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "window",
    [
        pytest.param("launch_delay", id="killed-before-the-launch"),
        pytest.param("answer_delay", id="killed-after-the-launch-before-its-answer"),
    ],
)
def test_kill_9_between_the_request_and_the_launch_serves_it_once(
    setup_factory: Callable[..., Setup], window: str
) -> None:
    spec = ClusterSpec(cloud=(), dynamic_partition=None)
    s = setup_factory(
        spec, slurm={"node_types": {"cloud[1-2]": "small"}}, provider={window: "120s"}
    )
    step = srun(s.cluster, "-N1", "hostname")
    state = s.workdir / "state" / "state.json"
    poll_until(
        "the resume request to be handed over",
        lambda: any(r.kind == "resume" for r in s.hooks()),
        30,
        explain=s.explain,
    )
    (run,) = s.hooks()
    assert run.status == 0  # the hook returned...
    requests = json.loads(state.read_text())["slurm"]["requests"]
    assert list(requests) == ["cloud1"]  # ...with the request on disk
    if window == "launch_delay":
        assert s.instances() == {}  # and nothing launched: the hook did not wait for it
    else:
        poll_until("the launch to take effect", lambda: s.instances(), 10, explain=s.explain)
    s.daemon.kill9()

    config = json.loads(json.dumps(s.daemon.config))
    config["provider"][window] = "0s"
    s.daemon.write(config)
    s.daemon.start()
    assert len(finish(step).split()) == 1
    (record,) = s.instances().values()  # one instance, launched for that request
    assert record["tags"]["shoal:slurm-node"] == "cloud1"
    assert record["tags"]["shoal:request-id"] == requests["cloud1"]["request_id"]
    records = json.loads((s.workdir / "local" / "instances.json").read_text())
    assert records["next"] == 2  # and no other was ever started
    # and only its slurmd runs (the job step's slurmstepd, a child that carries the same
    # marker, may take a moment to exit after srun returned; a second slurmd never would)
    poll_until(
        "only the one slurmd to run",
        lambda: local_processes(s.workdir) == [record["pid"]],
        15,
        explain=lambda: f"{local_processes(s.workdir)} (expected [{record['pid']}])",
    )
    # the served request leaves the state file (a write in the background: losing it would
    # only serve the request again, which its client token makes launch nothing)
    poll_until(
        "the served request to leave the state file",
        lambda: json.loads(state.read_text())["slurm"]["requests"] == {},
        15,
        explain=lambda: state.read_text(),
    )


# -- clean-up -------------------------------------------------------------------------------


def test_cleanup_repairs_what_lost_hook_calls_left(setup_factory: Callable[..., Setup]) -> None:
    """shoal is down (kill -9) while Slurm suspends cloud1 and resumes cloud2, and the hooks
    cannot spool either (the spool is unusable meanwhile: a full disk, say): both hook calls
    fail. After the restart the clean-up loop terminates cloud1's orphan instance and resets
    cloud2, left DOWN at ResumeTimeout. (With a usable spool the calls are not lost: see
    test_a_hook_call_while_shoal_is_down_is_served_when_it_is_back.)"""
    spec = ClusterSpec(
        cloud=(), dynamic_partition=None, suspend_time=3, suspend_timeout=3, resume_timeout=5
    )
    s = setup_factory(spec, slurm={"node_types": {"cloud[1-2]": "small"}})
    finish(srun(s.cluster, "-N1", "-w", "cloud1", "hostname"))
    (orphan,) = s.instances()
    s.daemon.kill9()
    spool_dir = s.workdir / "state" / "spool"
    spool_dir.rename(spool_dir.with_name("spool.away"))
    spool_dir.write_text("not a folder: the hooks cannot spool\n")
    job = s.cluster.sbatch("-w", "cloud2", "--wrap", "sleep 1")
    poll_until(
        "cloud1 suspended and cloud2 DOWN at ResumeTimeout, their hooks failing",
        lambda: (
            "powered_down" in s.states(["cloud1"])["cloud1"]
            and s.reason("cloud2") == "ResumeTimeout reached"
            # resume-fail too: slurmctld runs it as it marks cloud2 DOWN, and one run after
            # the spool is back is served at the restart (the power saver, not the clean-up,
            # then resets cloud2: seen once in a CI rehearsal)
            and {r.kind for r in s.hooks() if r.status != 0} >= {"suspend", "resume", "resume-fail"}
        ),
        60,
        interval=0.5,
        explain=s.explain,
    )
    s.cluster.run("scancel", job)
    assert list(s.instances()) == [orphan]  # still running: nobody terminated it
    spool_dir.unlink()
    spool_dir.with_name("spool.away").rename(spool_dir)
    s.daemon.start()
    poll_until(
        "the orphan terminated and cloud2 reset",
        lambda: (
            not s.instances()
            and "down" not in s.states(["cloud2"])["cloud2"]
            and s.metric("shoal_slurm_cleanups_total", kind="orphan") == 1
        ),
        30,
        interval=0.5,
        explain=s.explain,
    )
    assert s.metric("shoal_slurm_cleanups_total", kind="down_without_instance") == 1
    assert local_processes(s.workdir) == []
    repairs = s.daemon.tail(200)
    assert "event=slurm_cleanup kind=orphan node=cloud1" in repairs


def test_a_hook_call_while_shoal_is_down_is_served_when_it_is_back(
    setup_factory: Callable[..., Setup],
) -> None:
    """Bug 11: the resume hook found shoal down and failed, and the job waited for
    ResumeTimeout (77 s instead of about 12 s). Now it spools the request and exits 0, and
    shoal serves it when it is back: the job starts about the restart's time later."""
    spec = ClusterSpec(cloud=(), dynamic_partition=None, resume_timeout=60)
    s = setup_factory(spec, start=False, slurm={"node_types": {"cloud[1-2]": "small"}})
    s.daemon.write({**s.daemon.config, "state_dir": str(s.workdir / "state")})
    s.daemon.start()  # makes the spool
    s.daemon.kill9()
    down_for = 5.0
    submitted = time.monotonic()
    step = srun(s.cluster, "-N1", "hostname")
    try:
        poll_until("the resume hook to run", lambda: bool(s.hooks()), 30, explain=s.explain)
        (run,) = s.hooks()
        assert (run.kind, run.status) == ("resume", 0)  # spooled, not failed
        time.sleep(max(0.0, submitted + down_for - time.monotonic()))  # shoal stays down
        s.daemon.start()
        assert len(finish(step).split()) == 1
    finally:
        if step.poll() is None:
            step.kill()
            step.communicate()
    waited = time.monotonic() - submitted
    print(f"srun submit to finish with shoal down {down_for:.0f}s at the resume: {waited:.1f}s")
    assert waited < spec.resume_timeout / 2, s.explain()
    assert "event=slurm_spool_served" in s.daemon.tail(200)
    assert not list((s.workdir / "state" / "spool").iterdir())
