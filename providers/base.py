"""The provisioner interface: Toil's ``AbstractProvisioner``, async where it talks to a cloud.

Names and signatures follow Toil's seed (camelCase kept for compatibility).
Methods that talk to a cloud are coroutines: ``addNodes``, ``terminateNodes``,
``addManagedNodes``, ``getProvisionedWorkers``, ``getLeader``, ``launchCluster``,
``destroyCluster``, ``createClusterSettings``, ``readClusterSettings``,
``getNodeShape`` and, because it looks shapes up, ``setAutoscaledNodeTypes``.
Everything else is synchronous and pure.

shoal additions, all keyword-only and optional so Toil-style calls still work:
``addNodes(..., requestId=...)`` makes a retried launch idempotent (used as the
cloud's client token), and errors are the typed ``providers.errors`` hierarchy.
"""

from __future__ import annotations

import datetime as dt
import logging
from abc import ABC, abstractmethod
from typing import Any, ClassVar

from shoal.providers.errors import ManagedNodesNotSupportedException
from shoal.providers.instance_setup import InstanceConfiguration, InstanceSetupMixin
from shoal.scaler.shape import Shape

__all__ = [
    "LEADER_HOME_DIR",
    "TAG_AUTOSCALED",
    "TAG_CLUSTER",
    "TAG_NODE_TYPE",
    "TAG_REQUEST_ID",
    "TAG_ROLE",
    "AbstractProvisioner",
    "ManagedNodesNotSupportedException",
    "Node",
    "Shape",
    "a_short_time",
]

a_short_time = 5
LEADER_HOME_DIR = "/root/"
logger = logging.getLogger(__name__)

# Tags every provider puts on what it launches; membership is rebuilt from them after a restart.
TAG_CLUSTER = "shoal:cluster"  # the cluster name
TAG_ROLE = "shoal:role"  # "leader" | "worker"
TAG_AUTOSCALED = "shoal:autoscaled"  # "true" on workers launched by addNodes; others are static
TAG_NODE_TYPE = "shoal:node-type"  # the instance type launched
TAG_REQUEST_ID = "shoal:request-id"  # the addNodes requestId that launched it


class Node:
    """A provisioned machine, as Toil's ``toil.provisioners.node.Node``.

    ``launchTime`` accepts a datetime (naive means UTC) or an ISO 8601 string.
    """

    maxWaitTime = 7 * 60

    def __init__(
        self,
        publicIP: str | None,
        privateIP: str | None,
        name: str,
        launchTime: dt.datetime | str,
        nodeType: str | None,
        preemptible: bool,
        tags: dict[str, str] | None = None,
        use_private_ip: bool | None = None,
        *,
        zone: str | None = None,
        joined: bool | None = None,
    ) -> None:
        self.publicIP = publicIP
        self.privateIP = privateIP
        self.effectiveIP = privateIP if use_private_ip else (publicIP or privateIP)
        self.name = name
        if isinstance(launchTime, str):
            launchTime = dt.datetime.fromisoformat(launchTime.replace("Z", "+00:00"))
        if launchTime.tzinfo is None:
            launchTime = launchTime.replace(tzinfo=dt.UTC)
        self.launchTime = launchTime
        self.nodeType = nodeType
        self.preemptible = preemptible
        self.tags = dict(tags or {})
        # shoal additions: the zone it runs in, and whether it has joined the scheduler
        # (None: this provider cannot tell; the daemon then trusts the demand source or
        # treats a running instance as joined).
        self.zone = zone
        self.joined = joined

    def __str__(self) -> str:
        return f"{self.name} at {self.effectiveIP}"

    def __repr__(self) -> str:
        return (
            f"Node(name={self.name!r}, privateIP={self.privateIP!r}, nodeType={self.nodeType!r}, "
            f"preemptible={self.preemptible}, launchTime={self.launchTime.isoformat()!r})"
        )

    def __eq__(self, other: object) -> bool:
        return isinstance(other, Node) and self.name == other.name

    def __hash__(self) -> int:
        return hash(self.name)


class AbstractProvisioner(InstanceSetupMixin, ABC):
    """Interface for provisioning worker nodes of a cluster.

    Instance setup (Ignition user data, node services) comes from ``InstanceSetupMixin``.
    """

    LEADER_HOME_DIR = LEADER_HOME_DIR
    InstanceConfiguration = InstanceConfiguration
    cloud: ClassVar[str] = ""
    # shoal: True when the provider retries its own API calls (with retryPredicate and the
    # retry policy it was given); callers then make one attempt, so retries never nest.
    retries_internally: ClassVar[bool] = False

    def __init__(
        self,
        clusterName: str | None = None,
        clusterType: str | None = "mesos",
        zone: str | None = None,
        nodeStorage: int = 50,
        nodeStorageOverrides: list[str] | None = None,
    ) -> None:
        self.clusterName = clusterName
        self.clusterType = clusterType
        supported = self.supportedClusterTypes()
        if clusterType not in supported:
            raise ValueError(
                f"{type(self).__name__} does not support cluster type {clusterType!r}; "
                f"supported: {', '.join(sorted(supported))}"
            )
        self._zone = zone
        self._nodeStorage = nodeStorage
        self._nodeStorageOverrides: dict[str, int] = {}
        for override in nodeStorageOverrides or []:
            name, sep, size = override.partition(":")
            if not sep or not name or not size.isdigit():
                raise ValueError(
                    f"node storage override {override!r} is not of the form INSTANCE_TYPE:GIB"
                )
            self._nodeStorageOverrides[name] = int(size)
        self._spotBidsMap: dict[frozenset[str], float] = {}
        self._shape_to_instance_type: dict[Shape, str] = {}
        self._leaderPrivateIP: str | None = None

    # -- cluster settings -------------------------------------------------

    @abstractmethod
    def supportedClusterTypes(self) -> set[str]:
        """The cluster types (``mesos``, ``kubernetes``) this provisioner supports."""

    @abstractmethod
    async def createClusterSettings(self) -> None:
        """Initialise for a new cluster, to be deployed, when running outside the cloud."""

    @abstractmethod
    async def readClusterSettings(self) -> None:
        """Initialise from an existing cluster; assumes we run on its leader."""

    # -- autoscaled node types -------------------------------------------

    async def setAutoscaledNodeTypes(self, nodeTypes: list[tuple[set[str], float | None]]) -> None:
        """Set node types, shapes and spot bids (``parse_node_types`` output) for autoscaling."""
        bids: dict[frozenset[str], float] = {}
        shapes: dict[Shape, str] = {}
        for names, bid in nodeTypes:
            preemptible = bid is not None
            if bid is not None:
                bids[frozenset(names)] = bid
            for name in sorted(names):
                shape = await self.getNodeShape(name, preemptible)
                shapes[shape] = name
        self._spotBidsMap = bids
        self._shape_to_instance_type = shapes

    def hasAutoscaledNodeTypes(self) -> bool:
        return len(self.getAutoscaledInstanceShapes()) > 0

    def getAutoscaledInstanceShapes(self) -> dict[Shape, str]:
        """The node shapes to autoscale, each with the instance type that has it."""
        return dict(self._shape_to_instance_type)

    @staticmethod
    def retryPredicate(e: BaseException) -> bool:
        """True if ``e`` is transient and the call should be retried with backoff."""
        return False

    # -- cloud operations ------------------------------------------------

    @abstractmethod
    async def launchCluster(self, *args: Any, **kwargs: Any) -> None:
        """Initialise a cluster and create its leader node."""

    @abstractmethod
    async def addNodes(
        self,
        nodeTypes: set[str],
        numNodes: int,
        preemptible: bool,
        spotBid: float | None = None,
        *,
        requestId: str | None = None,
    ) -> int:
        """Launch ``numNodes`` workers of one of ``nodeTypes``; returns how many were launched.

        Raises ``CapacityError`` (with the offerings tried) when none could be launched.
        """

    async def addManagedNodes(
        self,
        nodeTypes: set[str],
        minNodes: int,
        maxNodes: int,
        preemptible: bool,
        spotBid: float | None = None,
    ) -> None:
        """Add a group of nodes the cloud scales by itself; unsupported by default."""
        raise ManagedNodesNotSupportedException(f"{type(self).__name__} cannot add managed nodes")

    @abstractmethod
    async def terminateNodes(self, nodes: list[Node]) -> None:
        """Terminate the given nodes. Nodes already gone are not an error."""

    @abstractmethod
    async def getLeader(self) -> Node:
        """The leader node."""

    @abstractmethod
    async def getProvisionedWorkers(
        self, instance_type: str | None = None, preemptible: bool | None = None
    ) -> list[Node]:
        """All worker nodes (static and autoscaled), optionally filtered."""

    @abstractmethod
    async def getNodeShape(self, instance_type: str, preemptible: bool = False) -> Shape:
        """The shape of one node of ``instance_type`` (wallTime = billing interval)."""

    @abstractmethod
    async def destroyCluster(self) -> None:
        """Terminate every node of the cluster and clean up its resources."""

    # -- Kubernetes hooks with provider-specific answers ---------------------

    @abstractmethod
    def getKubernetesAutoscalerSetupCommands(self, values: dict[str, str]) -> str:
        """Bash commands that set up the Kubernetes cluster autoscaler for this cloud."""

    def getKubernetesCloudProvider(self) -> str | None:
        """The Kubernetes cloud provider name to pass to kubelets, or None."""
        return None

    # -- instance setup (Ignition) ----------------------------------------
    # InstanceConfiguration, getBaseInstanceConfiguration, addVolumesService,
    # addNodeExporterService, toil_service_env_options, add_toil_service,
    # getKubernetesValues, addKubernetesServices, addKubernetesLeader,
    # addKubernetesWorker: inherited from providers.instance_setup.InstanceSetupMixin.
