"""The clean-up loop's decisions (``find_repairs``): instances against Slurm's nodes.

Node states are written as sinfo's StateComplete prints them (``idle+cloud+powered_down``);
the records go through the same parser the daemon uses.
"""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass, field

import pytest
from shoal.daemon.slurm.cleanup import Repair, RepairKind, find_repairs
from shoal.daemon.slurm.constants import SINFO_FIELDS, TAG_SLURM_NODE
from shoal.daemon.slurm.parse import SlurmNode, parse_sinfo
from shoal.providers.base import TAG_AUTOSCALED, Node

NOW = 1_700_000_000.0
GRACE = 60.0


def slurm_node(
    name: str,
    state: str,
    reason: str = "",
    features: str = "(null)",
    address: str = "127.0.0.1",
    cpus: str = "0/2/0/2",
) -> SlurmNode:
    values = {
        "nodelist": name,
        "statecomplete": state,
        "cpusstate": cpus,
        "features": features,
        "nodeaddr": address,
        "reason": reason or "none",
    }
    (node,) = parse_sinfo("\t".join(values[f] for f in SINFO_FIELDS))
    return node


def instance(
    name: str,
    slurm: str | None = None,
    age: float = 600.0,
    autoscaled: bool = True,
    ip: str = "10.0.0.1",
    cloud_state: str | None = None,
) -> Node:
    tags = {TAG_AUTOSCALED: "true" if autoscaled else "false"}
    if slurm is not None:
        tags[TAG_SLURM_NODE] = slurm
    launched = dt.datetime.fromtimestamp(NOW - age, dt.UTC)
    return Node(None, ip, name, launched, "c5.xlarge", False, tags, cloud_state=cloud_state)


@dataclass
class Case:
    instances: list[Node]
    nodes: list[SlurmNode]
    expected: list[tuple[RepairKind, str, tuple[str, ...]]]
    mode: str = "power_save"
    busy: set[str] = field(default_factory=set)
    powering_up_since: dict[str, float] = field(default_factory=dict)
    resume_timeout: float | None = 30.0


CASES = {
    "running-node-with-its-instance": Case(
        [instance("i-1", "cloud1")], [slurm_node("cloud1", "idle+cloud")], []
    ),
    "instance-of-a-powered-down-node-is-an-orphan": Case(
        [instance("i-1", "cloud1")],
        [slurm_node("cloud1", "idle+cloud+powered_down")],
        [(RepairKind.ORPHAN, "cloud1", ("i-1",))],
    ),
    "instance-of-an-unknown-node-is-an-orphan": Case(
        [instance("i-1", "gone7")], [], [(RepairKind.ORPHAN, "gone7", ("i-1",))]
    ),
    "young-instance-is-never-an-orphan": Case(
        [instance("i-1", "cloud1", age=GRACE / 2)],
        [slurm_node("cloud1", "idle+cloud+powered_down")],
        [],
    ),
    "node-being-suspended-keeps-its-instance-for-the-hook": Case(
        [instance("i-1", "cloud1")], [slurm_node("cloud1", "idle+cloud+powering_down")], []
    ),
    "node-powering-up-keeps-its-instance": Case(
        [instance("i-1", "cloud1")],
        [slurm_node("cloud1", "allocated+cloud+not_responding+powering_up")],
        [],
        powering_up_since={"cloud1": NOW - 5},
    ),
    "busy-node-is-left-to-the-power-saver": Case(
        [instance("i-1", "cloud1")],
        [slurm_node("cloud1", "idle+cloud+powered_down")],
        [],
        busy={"cloud1"},
    ),
    "static-instances-are-never-touched": Case(
        [instance("i-1", "cloud1", autoscaled=False)],
        [slurm_node("cloud1", "idle+cloud+powered_down")],
        [],
    ),
    "second-instance-for-a-node-is-a-duplicate": Case(
        [instance("i-2", "cloud1", age=300), instance("i-1", "cloud1", age=900)],
        [slurm_node("cloud1", "idle+cloud")],
        [(RepairKind.DUPLICATE, "cloud1", ("i-2",))],
    ),
    "the-duplicate-slurm-registered-stays-not-the-oldest": Case(
        [
            instance("i-2", "cloud1", age=300, ip="10.0.0.2"),
            instance("i-1", "cloud1", age=900, ip="10.0.0.1"),
        ],
        [slurm_node("cloud1", "idle+cloud", address="10.0.0.2")],
        [(RepairKind.DUPLICATE, "cloud1", ("i-1",))],
    ),
    "no-duplicate-is-terminated-while-the-node-runs-a-job": Case(
        [instance("i-2", "cloud1", age=300), instance("i-1", "cloud1", age=900)],
        [slurm_node("cloud1", "mixed+cloud", cpus="1/1/0/2")],
        [],
    ),
    "no-duplicate-is-terminated-while-a-job-completes": Case(
        [instance("i-2", "cloud1", age=300), instance("i-1", "cloud1", age=900)],
        [slurm_node("cloud1", "idle+cloud+completing")],
        [],
    ),
    "a-stopped-instance-is-not-the-nodes-and-no-duplicate": Case(
        [
            instance("i-2", "cloud1", age=300, ip="10.0.0.2"),
            instance("i-1", "cloud1", age=900, cloud_state="stopped"),
        ],
        [slurm_node("cloud1", "idle+cloud", address="cloud1")],
        [],
    ),
    "stuck-powering-up-past-resume-timeout": Case(
        [instance("i-1", "cloud1")],
        [slurm_node("cloud1", "allocated+cloud+not_responding+powering_up")],
        [(RepairKind.STUCK_POWERING_UP, "cloud1", ("i-1",))],
        powering_up_since={"cloud1": NOW - 200},
    ),
    "powering-up-within-resume-timeout-and-margin": Case(
        [],
        [slurm_node("cloud1", "allocated+cloud+not_responding+powering_up")],
        [],
        powering_up_since={"cloud1": NOW - 80},
    ),
    "powering-up-without-a-known-resume-timeout-is-left": Case(
        [],
        [slurm_node("cloud1", "allocated+cloud+not_responding+powering_up")],
        [],
        powering_up_since={"cloud1": NOW - 10_000},
        resume_timeout=None,
    ),
    "down-after-resume-timeout-without-instance-is-reset": Case(
        [],
        [slurm_node("cloud1", "down+cloud+powered_down+not_responding", "ResumeTimeout reached")],
        [(RepairKind.DOWN_WITHOUT_INSTANCE, "cloud1", ())],
    ),
    "down-for-an-admin-reason-is-left": Case(
        [], [slurm_node("cloud1", "down+cloud+powered_down", "bad DIMM")], []
    ),
    "instance-of-a-node-down-after-resume-timeout-is-an-orphan": Case(
        [instance("i-1", "cloud1")],
        [slurm_node("cloud1", "down+cloud+powered_down+not_responding", "ResumeTimeout reached")],
        [(RepairKind.ORPHAN, "cloud1", ("i-1",))],
    ),
    "held-down-node-is-left": Case(
        [],
        [slurm_node("cloud1", "down+cloud+powered_down", "shoal: no capacity")],
        [],
        busy={"cloud1"},
    ),
    "dynamic-node-drained-by-shoal-without-instance-is-deleted": Case(
        [],
        [slurm_node("t-3", "idle+drain+dynamic_norm+not_responding", "shoal", "shoal,dyn")],
        [(RepairKind.DYNAMIC_WITHOUT_INSTANCE, "t-3", ())],
        mode="external",
    ),
    "dynamic-node-of-shoal-that-stopped-responding-without-instance": Case(
        [],
        [slurm_node("t-4", "down+dynamic_norm+not_responding", "Not responding", "shoal,dyn")],
        [(RepairKind.DYNAMIC_WITHOUT_INSTANCE, "t-4", ())],
        mode="external",
    ),
    "dynamic-node-with-its-instance-stays": Case(
        [instance("t-3")],
        [slurm_node("t-3", "idle+drain+dynamic_norm", "shoal", "shoal,dyn")],
        [],
        mode="external",
    ),
    "someone-elses-dynamic-node-stays": Case(
        [],
        [slurm_node("gpu-a", "down+dynamic_norm+not_responding", "Not responding", "dyn")],
        [],
        mode="external",
    ),
    "responding-dynamic-node-registered-after-the-listing-stays": Case(
        [], [slurm_node("t-5", "idle+dynamic_norm", "", "shoal,dyn")], [], mode="external"
    ),
}


@pytest.mark.parametrize("case", list(CASES.values()), ids=list(CASES))
def test_find_repairs(case: Case) -> None:
    repairs = find_repairs(
        case.instances,
        case.nodes,
        mode=case.mode,  # type: ignore[arg-type]
        now=NOW,
        busy=case.busy,
        powering_up_since=case.powering_up_since,
        resume_timeout=case.resume_timeout,
        grace=GRACE,
        stuck_margin=60.0,
    )
    assert [(r.kind, r.node, r.instances) for r in repairs] == case.expected
    assert all(isinstance(r, Repair) and r.reason for r in repairs)


def test_only_managed_nodes_are_reset() -> None:
    nodes = [
        slurm_node("cloud1", "down+cloud+powered_down", "ResumeTimeout reached"),
        slurm_node("other1", "down+cloud+powered_down", "ResumeTimeout reached"),
    ]
    repairs = find_repairs(
        [], nodes, mode="power_save", now=NOW, managed=lambda name: name.startswith("cloud")
    )
    assert [r.node for r in repairs] == ["cloud1"]


@pytest.mark.parametrize(
    ("state", "reason", "never_registered"),
    [
        ("down+cloud+powered_down", "ResumeTimeout reached", True),
        ("idle+cloud+powered_down", "", False),  # suspended, its suspend lost: idle
        ("down+cloud+powered_down", "disk failure", False),  # an admin's DOWN
    ],
)
def test_an_orphan_of_a_node_given_up_at_resume_timeout_never_registered(
    state: str, reason: str, never_registered: bool
) -> None:
    (repair,) = find_repairs(
        [instance("i-1", "cloud1")],
        [slurm_node("cloud1", state, reason)],
        mode="power_save",
        now=NOW,
        grace=GRACE,
    )
    assert (repair.kind, repair.never_registered) == (RepairKind.ORPHAN, never_registered)
