"""Fixtures for provider tests."""

from __future__ import annotations

from typing import Any

import pytest
from shoal.providers.base import AbstractProvisioner, Node
from shoal.scaler.shape import Shape

__all__ = ["MinimalProvisioner"]

GIB = 2**30


class MinimalProvisioner(AbstractProvisioner):
    """The smallest concrete provisioner: implements the abstract methods with fixed answers,
    so the base class's own behaviour (bookkeeping, instance setup) can be tested."""

    cloud = "minimal"
    supported: set[str] = {"mesos", "kubernetes"}  # noqa: RUF012 - tests override per instance
    cloudProvider: str | None = None
    autoscalerCommands = "echo set up the autoscaler for @cluster\n"

    def supportedClusterTypes(self) -> set[str]:
        return set(self.supported)

    async def createClusterSettings(self) -> None:
        return None

    async def readClusterSettings(self) -> None:
        return None

    async def launchCluster(self, *args: Any, **kwargs: Any) -> None:
        return None

    async def addNodes(
        self,
        nodeTypes: set[str],
        numNodes: int,
        preemptible: bool,
        spotBid: float | None = None,
        *,
        requestId: str | None = None,
    ) -> int:
        return 0

    async def terminateNodes(self, nodes: list[Node]) -> None:
        return None

    async def getLeader(self) -> Node:
        return Node("203.0.113.1", "10.0.0.1", "leader", "2026-01-01T00:00:00Z", "t3.large", False)

    async def getProvisionedWorkers(
        self, instance_type: str | None = None, preemptible: bool | None = None
    ) -> list[Node]:
        return []

    async def getNodeShape(self, instance_type: str, preemptible: bool = False) -> Shape:
        # Size grows with the name's length, so different types get different shapes.
        size = len(instance_type)
        return Shape(3600, size * GIB, size, 2 * size * GIB, preemptible)

    async def destroyCluster(self) -> None:
        return None

    def getKubernetesAutoscalerSetupCommands(self, values: dict[str, str]) -> str:
        return self.autoscalerCommands.replace("@cluster", str(values["CLUSTER_NAME"]))

    def getKubernetesCloudProvider(self) -> str | None:
        return self.cloudProvider


@pytest.fixture
def make_provisioner() -> type[MinimalProvisioner]:
    """The MinimalProvisioner class, to construct with any AbstractProvisioner arguments."""
    return MinimalProvisioner
