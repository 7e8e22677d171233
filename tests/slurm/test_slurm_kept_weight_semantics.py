"""What a real slurmctld 22.05 does with a Weight ``scontrol update`` set on a dynamic node
(``slurm.node_weights: kept``'s weigher, ``daemon/slurm/weigher.py``): it outlives the node's
slurmd restarting (``slurmd -Z`` again with its ``--conf`` Weight), ``scontrol reconfigure``
and a slurmctld restart; and one unknown name in ``NodeName=`` fails the whole command (no
node of it is set), so a node deleted while its update is in flight holds back the other
nodes of that weight until the next read."""

from __future__ import annotations

import re
from collections.abc import Callable

import pytest
from slurm.cluster import SlurmCluster, _wait

pytestmark = pytest.mark.slurm


def weight(cluster: SlurmCluster, node: str) -> int:
    out = cluster.scontrol("show", "node", node)
    return int(dict(re.findall(r"(\w+)=(\S*)", out))["Weight"])


def test_a_weight_set_by_scontrol_outlives_restarts_and_an_unknown_name_sets_none(
    slurm_cluster_factory: Callable[..., SlurmCluster],
) -> None:
    cluster = slurm_cluster_factory(cloud=(), suspend_time=3600)

    def register() -> None:
        cluster.start_dynamic_slurmd("d1", cpus=1, memory_mb=800, features=("shoal",), weight=1999)
        cluster.wait_node("d1", lambda s: "idle" in s, 30)

    register()
    cluster.scontrol("update", "NodeName=d1", "Weight=1500")
    assert weight(cluster, "d1") == 1500
    for names in ("nosuch,d1", "d1,nosuch"):
        out = cluster.run("scontrol", "update", f"NodeName={names}", "Weight=1400", check=False)
        assert out.returncode != 0 and "Invalid node name" in out.stderr
        assert weight(cluster, "d1") == 1500
    cluster.stop_slurmd("d1")
    register()  # --conf Weight=1999 again
    assert weight(cluster, "d1") == 1500
    cluster.scontrol("update", "NodeName=d1", "Weight=1300")
    cluster.scontrol("reconfigure")
    assert weight(cluster, "d1") == 1300
    ctld = cluster._slurmctld
    assert ctld is not None
    ctld.terminate()  # saves its state
    ctld.wait(20)
    cluster._slurmctld = cluster._spawn([cluster.program("slurmctld"), "-D", "-i"], "slurmctld.out")
    _wait("slurmctld to answer again", cluster._controller_up, 30)
    assert weight(cluster, "d1") == 1300
