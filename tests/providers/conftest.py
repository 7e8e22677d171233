"""Fixtures for provider tests."""

from __future__ import annotations

from collections.abc import Collection, Mapping, Sequence
from typing import Any

import pytest
from shoal.providers.base import AbstractProvisioner, Node
from shoal.providers.errors import CapacityError, ProviderError
from shoal.providers.outcomes import InstanceTypeInfo, LaunchRequest, TerminationStatus
from shoal.scaler.model import Offering

__all__ = ["MinimalProvisioner"]

GIB = 2**30


class MinimalProvisioner(AbstractProvisioner):
    """The smallest concrete provisioner: its primitives are a scripted cloud, so the base
    class's own behaviour (template methods, bookkeeping, instance setup) can be tested.

    ``capacity[(type, zone)]`` bounds launches per offering (absent: unlimited); ``errors``
    maps an offering to the error its next launch raises; ``launches`` and ``terminations``
    record the primitive calls; ``instances`` are the live ids."""

    cloud = "minimal"
    supported: set[str] = {"mesos", "kubernetes"}  # noqa: RUF012 - tests override per instance
    cloudProvider: str | None = None
    autoscalerCommands = "echo set up the autoscaler for @cluster\n"
    terminate_batch_size = 3

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.capacity: dict[tuple[str, str], int] = {}
        self.errors: dict[Offering, ProviderError] = {}
        self.termination_errors: dict[str, ProviderError] = {}
        self.launches: list[LaunchRequest] = []
        self.terminations: list[list[str]] = []
        self.instances: dict[str, Node] = {}
        self.tokens: dict[str, list[str]] = {}

    def supportedClusterTypes(self) -> set[str]:
        return set(self.supported)

    async def createClusterSettings(self) -> None:
        return None

    async def readClusterSettings(self) -> None:
        return None

    async def launchCluster(self, *args: Any, **kwargs: Any) -> None:
        return None

    async def describe_instance_types(self, names: Sequence[str]) -> dict[str, InstanceTypeInfo]:
        # Size grows with the name's length, so different types get different shapes; names
        # starting with "no." are unknown.
        return {
            n: InstanceTypeInfo(n, len(n), len(n) * GIB, 2 * len(n) * GIB, 0.01 * len(n))
            for n in names
            if not n.startswith("no.")
        }

    async def launch_offering(self, request: LaunchRequest) -> list[str]:
        self.launches.append(request)
        if request.client_token in self.tokens:
            return self.tokens[request.client_token]
        o = request.offering
        if o in self.errors:
            raise self.errors.pop(o)
        room = self.capacity.get((o.instance_type, o.zone), request.count)
        if room <= 0:
            raise CapacityError(f"no {o}", offerings=(o,), code="InsufficientInstanceCapacity")
        count = min(room, request.count)
        if (o.instance_type, o.zone) in self.capacity:
            self.capacity[o.instance_type, o.zone] -= count
        ids = [f"i-{len(self.instances) + k:04d}" for k in range(count)]
        for i in ids:
            self.instances[i] = Node(
                None,
                "10.0.0.9",
                i,
                "2026-01-01T00:00:00Z",
                o.instance_type,
                request.preemptible,
                dict(request.tags),
                zone=o.zone,
            )
        self.tokens[request.client_token] = ids
        return ids

    async def terminate_instances(
        self, ids: Sequence[str]
    ) -> Mapping[str, TerminationStatus | ProviderError]:
        self.terminations.append(list(ids))
        out: dict[str, TerminationStatus | ProviderError] = {}
        for i in ids:
            if i in self.termination_errors:
                out[i] = self.termination_errors[i]
            elif self.instances.pop(i, None) is not None:
                out[i] = TerminationStatus.TERMINATED
            else:
                out[i] = TerminationStatus.ALREADY_GONE
        return out

    async def list_instances(self) -> list[Node]:
        return list(self.instances.values())

    async def tag_instances(self, ids: Sequence[str], tags: Mapping[str, str]) -> None:
        for i in ids:
            self.instances[i].tags.update(tags)

    async def untag_instances(self, ids: Sequence[str], keys: Collection[str]) -> None:
        for i in ids:
            for key in keys:
                self.instances[i].tags.pop(key, None)

    async def getLeader(self) -> Node:
        return Node("203.0.113.1", "10.0.0.1", "leader", "2026-01-01T00:00:00Z", "t3.large", False)

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
