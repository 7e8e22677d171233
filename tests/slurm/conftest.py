"""Fixtures for tests against a real Slurm (see ``cluster.py``).

``slurm_cluster`` is a started cluster of the default ``ClusterSpec`` (cloud1..cloud4 with
power saving, a ``dyn`` partition for dynamic nodes, munge); ``slurm_cluster_factory(spec)``
starts one of any spec. Both skip, naming what is missing, where Slurm cannot run (not
installed, not root), and stop every process they started at teardown, also after a failure;
the end of slurmctld's log is printed then, so a failing test's output carries it.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import Any

import pytest
from slurm.cluster import ClusterSpec, SlurmCluster, missing_requirements


@pytest.fixture
def slurm_cluster_factory(
    tmp_path_factory: pytest.TempPathFactory,
) -> Iterator[Callable[..., SlurmCluster]]:
    clusters: list[SlurmCluster] = []

    def make(spec: ClusterSpec | None = None, **fields: Any) -> SlurmCluster:
        spec = spec or ClusterSpec(**fields)
        reason = missing_requirements(spec.auth)
        if reason:
            pytest.skip(reason)
        # a short root: unix socket paths under it must stay below 108 bytes
        cluster = SlurmCluster(tmp_path_factory.mktemp("slurm"), spec)
        clusters.append(cluster)
        return cluster.start()

    yield make
    for cluster in clusters:
        cluster.stop()
        print(f"slurm cluster {cluster.root}: timings {cluster.timings}")
        print(f"slurmctld.log ends:\n{cluster.log_tail()}")
        for log in sorted((cluster.root / "log").glob("slurmd-*.log")):
            print(f"{log.name} ends:\n{cluster.log_tail(log.name, 15)}")


@pytest.fixture
def slurm_cluster(slurm_cluster_factory: Callable[..., SlurmCluster]) -> SlurmCluster:
    return slurm_cluster_factory()
