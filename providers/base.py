"""The provisioner interface: Toil's ``AbstractProvisioner``, async where it talks to a cloud.

Names and signatures follow Toil's seed (camelCase kept for compatibility). Methods that talk
to a cloud are coroutines: ``addNodes``, ``terminateNodes``, ``addManagedNodes``,
``getProvisionedWorkers``, ``getLeader``, ``launchCluster``, ``destroyCluster``,
``createClusterSettings``, ``readClusterSettings``, ``getNodeShape`` and, because it looks
shapes up, ``setAutoscaledNodeTypes``. Everything else is synchronous and pure.

The provisioner is composed, not inherited (as Karpenter's small ``CloudProvider`` under its
controllers): ``AbstractProvisioner`` keeps the seed's surface whole and hands the work to

- its ``NodeProvider`` (``providers.node_provider``): the primitives a cloud implements
  (``launch_offering``, ``terminate_instances``, ``list_instances``,
  ``describe_instance_types``, ``tag_instances``, ``untag_instances``), ``retryPredicate``,
  ``start`` and ``close``. A cloud class subclasses ``AbstractProvisioner`` and implements
  them itself, so it is its own node provider (a cloud with none of the seed's cluster
  operations to give, ``providers.local``, subclasses ``FleetProvisioner``: the primitives,
  the fleet and the autoscaled node types, what the daemon takes, without them);
- its ``fleet`` (``providers.fleet.Fleet``): ``addNodes``/``terminateNodes`` written once over
  those primitives (offerings in preference order, fallback, idempotent client tokens, the
  events of ``providers.outcomes`` through ``subscribe``), and the catalogue of shapes and
  prices (``instancePrice``, ``InstanceTypeInfo.price``: None means unknown);
- its ``bootstrap`` (``providers.instance_setup.WorkerBootstrap``): the Ignition user data
  and the worker join values, behind the seed's instance-setup methods.

``Node``, the tags (``TAG_*``), ``ordered_types`` and ``client_token`` live in
``providers.node_provider`` and are re-exported here, where the seed's users look for them.
"""

from __future__ import annotations

import logging
from abc import ABC, abstractmethod
from collections.abc import Callable, Collection, Iterable, Mapping, Sequence
from typing import Any, ClassVar

from shoal.providers.errors import (
    ManagedNodesNotSupportedException,
    ProviderError,
)
from shoal.providers.fleet import Fleet
from shoal.providers.instance_setup import InstanceConfiguration, WorkerBootstrap

# Node, the tags, ordered_types and client_token: where the seed's users look for them.
from shoal.providers.node_provider import *  # noqa: F403
from shoal.providers.node_provider import Node
from shoal.providers.node_provider import __all__ as _node_provider_names
from shoal.providers.outcomes import (
    InstanceTypeInfo,
    LaunchRequest,
    ProviderEvent,
    TerminationStatus,
)
from shoal.providers.workers import WorkerSecrets, WorkerSettings
from shoal.scaler.model import Offering
from shoal.scaler.shape import Shape, parse_storage_overrides

__all__ = [
    "LEADER_HOME_DIR",
    "AbstractProvisioner",
    "FleetProvisioner",
    "InstanceTypeInfo",
    "ManagedNodesNotSupportedException",
    "Shape",
    "a_short_time",
    *_node_provider_names,
]

a_short_time = 5
LEADER_HOME_DIR = "/root/"
GIB = 2**30
_Config = InstanceConfiguration
logger = logging.getLogger(__name__)


class FleetProvisioner(ABC):
    """A provisioner without the seed's cluster operations: its own ``NodeProvider``
    primitives (abstract here), the ``fleet`` that launches and terminates over them and
    keeps the catalogue, and the autoscaled node types. The daemon's ``Provisioner`` and
    ``Catalogue`` (``providers.node_provider``) are all it offers, so a cloud with no leader,
    no cluster to launch and no user data to build (``providers.local``) is one of these and
    stubs nothing; ``AbstractProvisioner`` adds the seed's surface on top.
    """

    cloud: ClassVar[str] = ""
    #: The most ids one ``terminate_instances`` call takes (EC2: 1000).
    terminate_batch_size: ClassVar[int] = 1000

    def __init__(
        self,
        clusterName: str | None = None,
        zone: str | None = None,
        nodeStorage: int = 50,
        nodeStorageOverrides: list[str] | None = None,
        *,
        zones: Sequence[str] = (),
    ) -> None:
        self.clusterName = clusterName
        self.fleet = Fleet(
            self,
            cluster_name=clusterName,
            # shoal: the zones workers launch in, in preference order (the seed's zone first).
            zones=tuple(dict.fromkeys([*([zone] if zone else []), *zones])),
            node_storage=nodeStorage,
            node_storage_overrides=parse_storage_overrides(nodeStorageOverrides or []),
        )
        self._shape_to_instance_type: dict[Shape, str] = {}

    # The fleet's settings, under the seed's names.
    @property
    def zones(self) -> tuple[str, ...]:
        return self.fleet.zones

    @zones.setter
    def zones(self, zones: Sequence[str]) -> None:
        self.fleet.zones = tuple(zones)

    @property
    def _zone(self) -> str | None:
        """The seed's one zone: the first of ``zones``; setting it puts it first."""
        return self.fleet.zones[0] if self.fleet.zones else None

    @_zone.setter
    def _zone(self, zone: str | None) -> None:
        if zone:
            self.fleet.zones = tuple(dict.fromkeys([zone, *self.fleet.zones]))

    @property
    def _nodeStorage(self) -> int:
        return self.fleet.node_storage

    @property
    def _nodeStorageOverrides(self) -> dict[str, int]:
        return self.fleet.node_storage_overrides

    @property
    def _spotBidsMap(self) -> dict[frozenset[str], float]:
        return self.fleet.spot_bids

    @property
    def _catalogue(self) -> dict[str, InstanceTypeInfo]:
        return self.fleet.catalogue_entries

    # -- autoscaled node types and the catalogue ---------------------------

    async def setAutoscaledNodeTypes(self, nodeTypes: list[tuple[set[str], float | None]]) -> None:
        """Set node types, shapes and spot bids (``parse_node_types`` output) for autoscaling."""
        await self.catalogue(name for names, _ in nodeTypes for name in names)
        bids: dict[frozenset[str], float] = {}
        shapes: dict[Shape, str] = {}
        for names, bid in nodeTypes:
            preemptible = bid is not None
            if bid is not None:
                bids[frozenset(names)] = bid
            for name in sorted(names):
                shape = await self.getNodeShape(name, preemptible)
                shapes[shape] = name
        self.fleet.spot_bids = bids
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

    # -- lifecycle ----------------------------------------------------------

    async def start(self) -> None:  # noqa: B027 - optional hook, nothing by default
        """Start background work the provider needs while the daemon runs (a price refresh,
        say). Nothing by default."""

    async def close(self) -> None:  # noqa: B027 - optional hook, nothing by default
        """Stop background work and release connections. Nothing by default."""

    # -- the catalogue and the outcomes: the fleet's ----------------------------------------

    async def catalogue(self, names: Iterable[str]) -> dict[str, InstanceTypeInfo]:
        """Shapes and prices of ``names`` (``Fleet.catalogue``)."""
        return await self.fleet.catalogue(names)

    def update_catalogue(self, infos: Mapping[str, InstanceTypeInfo]) -> None:
        self.fleet.update_catalogue(infos)

    def instancePrice(self, instance_type: str, preemptible: bool = False) -> float | None:
        """USD per hour of one node, None when unknown (``Fleet.instancePrice``)."""
        return self.fleet.instancePrice(instance_type, preemptible)

    async def getNodeShape(self, instance_type: str, preemptible: bool = False) -> Shape:
        """The shape of one node of ``instance_type`` (``Fleet.getNodeShape``)."""
        return await self.fleet.getNodeShape(instance_type, preemptible)

    def node_shape(self, instance_type: str, preemptible: bool = False) -> Shape:
        return self.fleet.node_shape(instance_type, preemptible)

    def subscribe(self, listener: Callable[[ProviderEvent], None]) -> Callable[[], None]:
        """Call ``listener`` with every ``providers.outcomes`` event; returns an unsubscriber."""
        return self.fleet.subscribe(listener)

    def _emit(self, event: ProviderEvent) -> None:
        self.fleet.emit(event)

    # -- the primitives this provisioner implements, as a NodeProvider (see there) ----------

    @abstractmethod
    async def launch_offering(self, request: LaunchRequest) -> list[str]:
        """``NodeProvider.launch_offering``."""

    @abstractmethod
    async def terminate_instances(
        self, ids: Sequence[str]
    ) -> Mapping[str, TerminationStatus | ProviderError]:
        """``NodeProvider.terminate_instances``."""

    @abstractmethod
    async def list_instances(self) -> list[Node]:
        """``NodeProvider.list_instances``."""

    @abstractmethod
    async def describe_instance_types(self, names: Sequence[str]) -> dict[str, InstanceTypeInfo]:
        """``NodeProvider.describe_instance_types``."""

    @abstractmethod
    async def tag_instances(self, ids: Sequence[str], tags: Mapping[str, str]) -> None:
        """``NodeProvider.tag_instances``."""

    @abstractmethod
    async def untag_instances(self, ids: Sequence[str], keys: Collection[str]) -> None:
        """``NodeProvider.untag_instances``."""

    # -- cloud operations, written once ---------------------------------------

    # -- launching and terminating: the fleet's -------------------------------------------

    async def addNodes(
        self,
        nodeTypes: set[str] | Sequence[str],
        numNodes: int,
        preemptible: bool,
        spotBid: float | None = None,
        **options: Any,
    ) -> int:
        """Launch ``numNodes`` workers of one of ``nodeTypes``; returns how many were launched.
        ``options`` are shoal's (``requestId``, ``exclude``, ``tags``, ``first``,
        ``before_offering``, ``all_or_nothing``, ``placement_group``): see ``Fleet.addNodes``."""
        return await self.fleet.addNodes(nodeTypes, numNodes, preemptible, spotBid, **options)

    async def terminateNodes(
        self, nodes: Iterable[Node | str], *, requestId: str | None = None
    ) -> None:
        """Terminate the given nodes, in batches (``Fleet.terminateNodes``)."""
        await self.fleet.terminateNodes(nodes, requestId=requestId)

    async def getProvisionedWorkers(
        self, instance_type: str | None = None, preemptible: bool | None = None
    ) -> list[Node]:
        """All worker nodes (static and autoscaled), optionally filtered."""
        return await self.fleet.getProvisionedWorkers(instance_type, preemptible)

    def offerings(self, nodeTypes: str | Collection[str], preemptible: bool) -> list[Offering]:
        return self.fleet.offerings(nodeTypes, preemptible)

    def worker_tags(self, instance_type: str, request_id: str) -> dict[str, str]:
        return self.fleet.worker_tags(instance_type, request_id)


class AbstractProvisioner(FleetProvisioner):
    """Interface for provisioning worker nodes of a cluster (see the module docstring).

    A subclass is its own ``NodeProvider``: it implements the primitives; ``fleet`` launches
    and terminates over them and keeps the catalogue, ``bootstrap`` builds user data. The
    daemon's control loop takes it as the smaller ``Provisioner`` (policy building: as a
    ``Catalogue``; ``providers.node_provider``), which every subclass satisfies.
    """

    LEADER_HOME_DIR = LEADER_HOME_DIR
    InstanceConfiguration = InstanceConfiguration

    def __init__(
        self,
        clusterName: str | None = None,
        clusterType: str | None = "mesos",
        zone: str | None = None,
        nodeStorage: int = 50,
        nodeStorageOverrides: list[str] | None = None,
        *,
        zones: Sequence[str] = (),
    ) -> None:
        self.clusterName = clusterName
        self.clusterType = clusterType
        supported = self.supportedClusterTypes()
        if clusterType not in supported:
            raise ValueError(
                f"{type(self).__name__} does not support cluster type {clusterType!r}; "
                f"supported: {', '.join(sorted(supported))}"
            )
        super().__init__(clusterName, zone, nodeStorage, nodeStorageOverrides, zones=zones)
        self._leaderPrivateIP: str | None = None
        self.bootstrap = WorkerBootstrap(self)

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

    # -- the seed's cluster operations ---------------------------------------------------

    @abstractmethod
    async def launchCluster(self, *args: Any, **kwargs: Any) -> None:
        """Initialise a cluster and create its leader node."""

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
    async def getLeader(self) -> Node:
        """The leader node."""

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

    # -- instance setup (Ignition): the seed's methods, carried out by ``bootstrap`` ----------

    def getBaseInstanceConfiguration(self) -> InstanceConfiguration:
        return self.bootstrap.getBaseInstanceConfiguration()

    def addVolumesService(self, config: InstanceConfiguration) -> None:
        self.bootstrap.addVolumesService(config)

    def addNodeExporterService(self, config: InstanceConfiguration) -> None:
        self.bootstrap.addNodeExporterService(config)

    def toil_service_env_options(self) -> str:
        return self.bootstrap.toil_service_env_options()

    def add_toil_service(
        self, config: _Config, role: str, keyPath: str | None = None, preemptible: bool = False
    ) -> None:
        self.bootstrap.add_toil_service(config, role, keyPath, preemptible)

    def getKubernetesValues(self, architecture: str = "amd64") -> dict[str, str]:
        return self.bootstrap.getKubernetesValues(architecture)

    def addKubernetesServices(
        self, config: InstanceConfiguration, architecture: str = "amd64"
    ) -> None:
        self.bootstrap.addKubernetesServices(config, architecture)

    def addKubernetesLeader(self, config: InstanceConfiguration) -> None:
        self.bootstrap.addKubernetesLeader(config)

    def addKubernetesWorker(
        self, config: InstanceConfiguration, authVars: dict[str, str], preemptible: bool = False
    ) -> None:
        self.bootstrap.addKubernetesWorker(config, authVars, preemptible)

    async def prepare_workers(
        self, settings: WorkerSettings | None = None, secrets: WorkerSecrets | None = None
    ) -> None:
        """Learn what worker user data needs (``WorkerBootstrap.prepare_workers``)."""
        await self.bootstrap.prepare_workers(settings, secrets)
