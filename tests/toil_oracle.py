"""Run code in Toil 9.6's own virtualenv (bench/.toil-venv): the behavioural oracle.

Toil is never imported into shoal's environment. Callers send JSON on stdin to a
small script run by the Toil venv's Python and read JSON back. When the venv is
missing (``make toil`` builds it), ``require_toil()`` skips the test and names it.
"""

from __future__ import annotations

import json
import subprocess
from pathlib import Path
from typing import Any

import pytest

__all__ = ["TOIL_PYTHON", "require_toil", "run_in_toil", "toil_binpack", "toil_scaler"]

ROOT = Path(__file__).resolve().parents[1]
TOIL_PYTHON = ROOT / "bench" / ".toil-venv" / "bin" / "python"

BINPACK_SCRIPT = r"""
import json, sys, time
from toil.provisioners.abstractProvisioner import Shape
from toil.provisioners.clusterScaler import binPacking

def shape(d):
    return Shape(d[0], d[1], d[2], d[3], d[4])

out = []
for case in json.load(sys.stdin):
    nodes = [shape(n) for n in case["nodes"]]
    jobs = [shape(j) for j in case["jobs"]]
    started = time.perf_counter()
    counts, failed = binPacking(nodes, jobs, case["target_time"])
    seconds = time.perf_counter() - started
    out.append({"total": sum(counts.values()), "seconds": seconds,
                "counts": [[[s.wallTime, s.memory, s.cores, s.disk, s.preemptible], n]
                           for s, n in counts.items()],
                "unschedulable": len(failed)})
json.dump(out, sys.stdout)
"""


# Toil's ClusterScaler and BinPackedFit driven the way Toil's clusterScalerTest.py drives
# them, with a minimal leader, batch system and provisioner in place of its mocks (its
# test module needs pytest, which the oracle venv does not have). One op per case:
#   binpack   BinPackedFit(nodes, target).addJobShape per job, in the order given
#   estimate  ClusterScaler.getEstimatedNodeCounts (optionally after a preset deficit)
#   update    ClusterScaler.updateClusterSize, with ignored nodes and an addNodes result
#   smooth    ClusterScaler.smoothEstimate, repeated
#   round     ClusterScaler._round
#   overhead  ClusterScaler._reserve_overhead
SCALER_SCRIPT = r"""
import datetime, json, sys
from argparse import Namespace
from collections import defaultdict
from toil.batchSystems.abstractBatchSystem import AbstractScalableBatchSystem, NodeInfo
from toil.common import Config
from toil.provisioners.abstractProvisioner import Shape
from toil.provisioners.clusterScaler import BinPackedFit, ClusterScaler
from toil.provisioners.node import Node


def shape(d):
    return Shape(d[0], d[1], d[2], d[3], d[4])


class Cluster(AbstractScalableBatchSystem):
    # leader, batch system and provisioner in one, as Toil's own test mock is;
    # types: [instance type name, shape] (a spot and an on-demand entry share the name)
    def __init__(self, types, workers=()):
        self.types = {shape(s): name for name, s in types}
        self.workers = list(workers)
        self.added = []
        self.add_returns = None
        self.provisioner = self
        self.batchSystem = self
        self.toilState = Namespace(bus=Namespace(publish=lambda *a, **k: None))

    def getAutoscaledInstanceShapes(self):
        return dict(self.types)

    def getProvisionedWorkers(self, instance_type=None, preemptible=None):
        return list(self.workers)

    def getNodes(self, preemptible=None, timeout=None):
        return {}

    def nodeInUse(self, ip):
        return False

    def ignoreNode(self, ip):
        pass

    def unignoreNode(self, ip):
        pass

    def addNodes(self, nodeTypes, numNodes, preemptible):
        self.added.append(numNodes)
        return numNodes if self.add_returns is None else self.add_returns

    def terminateNodes(self, nodes):
        pass

    @staticmethod
    def retryPredicate(e):
        return False


Cluster.__abstractmethods__ = frozenset()


def scaler(case, cluster):
    config = Config()
    config.targetTime = case.get("target_time", config.targetTime)
    config.betaInertia = case.get("beta", config.betaInertia)
    config.maxNodes = list(case.get("max", [10] * len(case["types"])))
    config.minNodes = case.get("min")
    config.preemptibleCompensation = case.get("compensation", 0.0)
    return ClusterScaler(cluster, cluster, config)


def jobs(case):
    return [shape(s) for s, n in case.get("jobs", []) for _ in range(n)]


def run(case):
    op = case["op"]
    if op == "binpack":
        nodes = [shape(n) for n in case["nodes"]]
        fit = BinPackedFit(nodes, case["target_time"])
        failed = [j for j in jobs(case) if fit.addJobShape(j) is not None]
        counts = fit.getRequiredNodes()
        return {"counts": [counts[n] for n in nodes], "unschedulable": len(failed)}
    if op == "round":
        s = scaler({"types": [["t", case["shape"]]]}, Cluster([["t", case["shape"]]]))
        return {"values": [s._round(v) for v in case["values"]]}
    if op == "overhead":
        s = scaler({"types": [["t", case["shapes"][0]]]}, Cluster([["t", case["shapes"][0]]]))
        out = [s._reserve_overhead(shape(n)) for n in case["shapes"]]
        return {"usable": [[u.memory, u.disk, u.cores] for u in out]}
    if op == "smooth":
        cluster = Cluster(case["types"])
        s = scaler(case, cluster)
        node = shape(case["types"][0][1])
        seen = [s.smoothEstimate(node, case["value"]) for _ in range(case["passes"])]
        return {"values": [seen[i] for i in case["report"]]}
    workers = [
        Node(w[0], w[0], "worker", datetime.datetime.now().isoformat(),
             nodeType=w[1], preemptible=w[2])
        for w in case.get("workers", [])
    ]
    cluster = Cluster(case["types"])
    s = scaler(case, cluster)
    cluster.workers = workers  # listed after start-up, so not static (as Toil's test mocks)
    if op == "estimate":
        for name, n in case.get("deficit", {}).items():
            s.preemptibleNodeDeficit[name] = n
        counts, failed = s.getEstimatedNodeCounts(jobs(case), defaultdict(int))
        in_order = [counts[shape(t)] for _, t in case["types"]]
        return {"counts": in_order, "unschedulable": len(failed)}
    if op == "update":
        s.ignoredNodes.update(case.get("ignored", []))
        out = []
        for step in case["steps"]:
            cluster.add_returns = step.get("add_returns")
            cluster.added = []
            ignored = len(s.ignoredNodes)
            estimates = {shape(t): n for (name, t), n in zip(case["types"], step["estimates"])}
            s.updateClusterSize(estimates)
            out.append({"added": sum(cluster.added), "unignored": ignored - len(s.ignoredNodes),
                        "deficit": dict(s.preemptibleNodeDeficit)})
        return {"steps": out}
    raise ValueError(op)


json.dump([run(case) for case in json.load(sys.stdin)], sys.stdout)
"""


def toil_scaler(cases: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Run Toil's ClusterScaler/BinPackedFit on each case (see SCALER_SCRIPT's ops)."""
    return run_in_toil(SCALER_SCRIPT, cases)


def require_toil() -> None:
    if not TOIL_PYTHON.exists():
        pytest.skip(f"Toil oracle missing: {TOIL_PYTHON} (build it with `make toil`)")
    probe = subprocess.run(
        [str(TOIL_PYTHON), "-c", "import toil.provisioners.clusterScaler"],
        capture_output=True,
        text=True,
        check=False,
    )
    if probe.returncode != 0:
        pytest.skip(f"Toil oracle does not import in {TOIL_PYTHON}: {probe.stderr[-200:]}")


def run_in_toil(script: str, payload: Any, timeout: float = 300) -> Any:
    """Run ``script`` with the Toil venv's Python, ``payload`` as JSON on stdin; return its JSON."""
    done = subprocess.run(
        [str(TOIL_PYTHON), "-c", script],
        input=json.dumps(payload),
        capture_output=True,
        text=True,
        timeout=timeout,
        check=False,
    )
    if done.returncode != 0:
        raise RuntimeError(f"Toil oracle failed: {done.stderr[-2000:]}")
    return json.loads(done.stdout)


def toil_binpack(cases: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Toil's binPacking per case: {"nodes": [[w, m, c, d, p]...], "jobs": [...], "target_time"}"""
    return run_in_toil(BINPACK_SCRIPT, cases)
