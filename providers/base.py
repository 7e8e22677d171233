"""The provisioner interface: Toil's ``AbstractProvisioner``, async where it talks to a cloud.

Names and signatures follow Toil's seed (camelCase kept for compatibility). Methods that talk
to a cloud are coroutines: ``addNodes``, ``terminateNodes``, ``addManagedNodes``,
``getProvisionedWorkers``, ``getLeader``, ``launchCluster``, ``destroyCluster``,
``createClusterSettings``, ``readClusterSettings``, ``getNodeShape`` and, because it looks
shapes up, ``setAutoscaledNodeTypes``. Everything else is synchronous and pure.

``addNodes`` and ``terminateNodes`` are written once, here, as template methods over small
primitives each cloud implements (so the simulated cloud and EC2 behave alike by construction)::

    launch_offering(LaunchRequest) -> [instance id]    up to n nodes of ONE offering
                                                       (type x zone x spot/on-demand); at least
                                                       one or a typed error; idempotent by
                                                       request.client_token
    terminate_instances([id]) -> {id: status | error}  one batch; unknown ids are ALREADY_GONE
    list_instances() -> [Node]                         the cluster's tagged workers, in
                                                       every state but terminated
                                                       (``Node.cloud_state``)
    describe_instance_types([name]) -> {name: InstanceTypeInfo}   shapes and prices
    tag_instances([id], {key: value})                  add or overwrite tags
    untag_instances([id], [key])                       remove tags (absent keys are fine)

The tags are how a decision outlives the daemon: ``TAG_DRAINING`` marks a worker shoal is
draining (its value the epoch second the drain began), set before the drain takes effect, so a
restarted daemon adopts the node as draining instead of as room for new work.

``addNodes(nodeTypes, numNodes, preemptible, spotBid, *, requestId, exclude, tags, first,
before_offering)`` tries the
offerings in preference order (the alternatives in the caller's order for a list or tuple,
sorted for a set, which keeps the seed's "any of these"; each in every zone of ``zones``),
skipping ``exclude`` (offerings the caller has in backoff), fills what one offering could not
from the next in the same call, and returns how many it launched; with none launched and every
offering out of capacity it raises ``CapacityError`` (``QuotaError`` when all were quotas)
carrying the offerings. A transient error is raised as it is, for the caller's one retry layer
(``providers.retry``, driven by ``retryPredicate``): the client token of each offering is a
function of (requestId, offering), so a retried call returns the instances already launched and
launches nothing twice; ``before_offering`` is awaited with each offering and its client token
before that offering is tried (a caller saves them, so a restart replays from the last offering
that may have launched). ``terminateNodes`` terminates in batches; ids already gone count as
terminated and any other failure raises ``TerminationError`` naming every failed id.

What the seed's return values cannot carry comes through ``subscribe``: see
``providers.outcomes``. Prices sit in the catalogue beside the shapes: ``instancePrice`` and
``InstanceTypeInfo.price``, where None means unknown.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import logging
import uuid
from abc import ABC, abstractmethod
from collections.abc import Awaitable, Callable, Collection, Iterable, Mapping, Sequence
from typing import Any, ClassVar

from shoal.providers.errors import (
    INSUFFICIENT_CAPACITY,
    CapacityError,
    ManagedNodesNotSupportedException,
    ProviderError,
    QuotaError,
    TerminationError,
)
from shoal.providers.instance_setup import InstanceConfiguration, WorkerBootstrap
from shoal.providers.outcomes import (
    InstanceTypeInfo,
    LaunchAttempt,
    LaunchRequest,
    ProviderEvent,
    TerminationResult,
    TerminationStatus,
)
from shoal.providers.workers import WorkerSettings
from shoal.scaler.model import CapacityType, Offering
from shoal.scaler.shape import Shape

__all__ = [
    "LEADER_HOME_DIR",
    "STOPPED_STATES",
    "TAG_AUTOSCALED",
    "TAG_CLUSTER",
    "TAG_DRAINING",
    "TAG_INSTANCE_TYPE",
    "TAG_REQUEST_ID",
    "TAG_ROLE",
    "AbstractProvisioner",
    "InstanceTypeInfo",
    "ManagedNodesNotSupportedException",
    "Node",
    "Shape",
    "a_short_time",
    "client_token",
    "ordered_types",
]

a_short_time = 5
LEADER_HOME_DIR = "/root/"
logger = logging.getLogger(__name__)

# Tags every provider puts on what it launches; membership is rebuilt from them after a restart.
TAG_CLUSTER = "shoal:cluster"  # the cluster name
TAG_ROLE = "shoal:role"  # "leader" | "worker"
TAG_AUTOSCALED = "shoal:autoscaled"  # "true" on workers launched by addNodes; others are static
# The instance type launched. The key keeps its first name: in the seed's words a node type
# is an instance type (``Node.nodeType``), and running instances already carry it.
TAG_INSTANCE_TYPE = "shoal:node-type"
TAG_REQUEST_ID = "shoal:request-id"  # the addNodes requestId that launched it
TAG_DRAINING = "shoal:draining"  # set while shoal drains it: the drain's start, epoch seconds
# Cloud states (EC2's names) of an instance that exists but is not running and never will be
# by itself: shoal never stops an instance, so one of its workers found so is terminated.
STOPPED_STATES = frozenset({"stopping", "stopped"})
GIB = 2**30


def ordered_types(node_types: str | Collection[str]) -> list[str]:
    """Alternatives in preference order: a list or tuple as given (repeats dropped), a set
    sorted (the seed's "any of these", made deterministic), a string as the only one."""
    if isinstance(node_types, str):
        return [node_types]
    if isinstance(node_types, set | frozenset):
        return sorted(node_types)
    return list(dict.fromkeys(node_types))


def client_token(request_id: str, offering: Offering) -> str:
    """The idempotency token for one request in one offering (<= 64 ASCII, as EC2 allows):
    the same on every retry of the request, different for every other request or offering."""
    key = f"{request_id}\0{offering.instance_type}\0{offering.zone}\0{offering.capacity_type}"
    return f"shoal-{hashlib.sha256(key.encode()).hexdigest()[:40]}"


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
        cloud_state: str | None = None,
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
        # The cloud's state of the instance, in EC2's words ("pending", "running",
        # "stopping", "stopped"); None: the provider does not say (it lists live ones only).
        self.cloud_state = cloud_state

    @property
    def stopped(self) -> bool:
        """Stopped or stopping: it runs nothing and is no capacity (``STOPPED_STATES``)."""
        return self.cloud_state in STOPPED_STATES

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


class AbstractProvisioner(ABC):
    """Interface for provisioning worker nodes of a cluster (see the module docstring).

    Instance setup (Ignition user data, node services, worker join values) is its
    ``bootstrap``, a ``providers.instance_setup.WorkerBootstrap``; the seed's instance-setup
    methods hand over to it.
    """

    LEADER_HOME_DIR = LEADER_HOME_DIR
    InstanceConfiguration = InstanceConfiguration
    cloud: ClassVar[str] = ""
    #: The most ids one ``terminate_instances`` call takes (EC2: 1000).
    terminate_batch_size: ClassVar[int] = 1000

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
        # shoal: the zones workers launch in, in preference order (the seed's one zone first).
        self.zones: tuple[str, ...] = tuple(dict.fromkeys([*([zone] if zone else []), *zones]))
        self._zone = self.zones[0] if self.zones else None
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
        self._catalogue: dict[str, InstanceTypeInfo] = {}
        self._listeners: list[Callable[[ProviderEvent], None]] = []
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
        self._spotBidsMap = bids
        self._shape_to_instance_type = shapes

    def hasAutoscaledNodeTypes(self) -> bool:
        return len(self.getAutoscaledInstanceShapes()) > 0

    def getAutoscaledInstanceShapes(self) -> dict[Shape, str]:
        """The node shapes to autoscale, each with the instance type that has it."""
        return dict(self._shape_to_instance_type)

    async def catalogue(self, names: Iterable[str]) -> dict[str, InstanceTypeInfo]:
        """Shapes and prices of ``names``, looked up once (``describe_instance_types``) and
        kept. An unknown type is a ``ProviderError`` naming it."""
        wanted = list(dict.fromkeys(names))
        missing = [n for n in wanted if n not in self._catalogue]
        if missing:
            self._catalogue.update(await self.describe_instance_types(missing))
        unknown = [n for n in wanted if n not in self._catalogue]
        if unknown:
            raise ProviderError(
                f"unknown instance type(s) {', '.join(map(repr, unknown))} in the "
                f"{self.cloud or type(self).__name__} catalogue",
                code="InvalidInstanceType",
                operation="describe_instance_types",
            )
        return {n: self._catalogue[n] for n in wanted}

    def update_catalogue(self, infos: Mapping[str, InstanceTypeInfo]) -> None:
        """Replace catalogue entries (a price refresh); shapes of known types stay."""
        self._catalogue.update(infos)

    def instancePrice(self, instance_type: str, preemptible: bool = False) -> float | None:
        """USD per hour of one node (spot: in the first zone that has a price); None when the
        price is unknown or the type was never looked up with ``catalogue``."""
        info = self._catalogue.get(instance_type)
        if info is None:
            return None
        if preemptible:
            for zone in self.zones:
                price = info.price(True, zone)
                if price is not None:
                    return price
        return info.price(preemptible)

    async def getNodeShape(self, instance_type: str, preemptible: bool = False) -> Shape:
        """The shape of one node of ``instance_type``: memory, cores, instance storage or
        nodeStorage (its override) GiB where there is none, as Toil does; wallTime is the
        billing interval (3600 s)."""
        await self.catalogue([instance_type])
        return self.node_shape(instance_type, preemptible)

    def node_shape(self, instance_type: str, preemptible: bool = False) -> Shape:
        """``getNodeShape`` of a type already in the catalogue (``KeyError`` otherwise)."""
        info = self._catalogue[instance_type]
        disk = info.disk or self._nodeStorageOverrides.get(instance_type, self._nodeStorage) * GIB
        return Shape(3600, int(info.memory), info.cores, int(disk), preemptible)

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

    # -- outcomes -----------------------------------------------------------

    def subscribe(self, listener: Callable[[ProviderEvent], None]) -> Callable[[], None]:
        """Call ``listener`` with every ``providers.outcomes`` event; returns an unsubscriber."""
        self._listeners.append(listener)
        return lambda: self._listeners.remove(listener)

    def _emit(self, event: ProviderEvent) -> None:
        for listener in list(self._listeners):
            listener(event)

    # -- the primitives a cloud implements -------------------------------------

    @abstractmethod
    async def launch_offering(self, request: LaunchRequest) -> list[str]:
        """Launch up to ``request.count`` workers of one offering, tagged ``request.tags``;
        return their ids (at least one). A repeated ``request.client_token`` returns the
        instances launched with it and launches nothing. Raises ``CapacityError`` /
        ``QuotaError`` carrying the offering when it can launch none."""

    @abstractmethod
    async def terminate_instances(
        self, ids: Sequence[str]
    ) -> Mapping[str, TerminationStatus | ProviderError]:
        """Terminate one batch (at most ``terminate_batch_size``); an outcome per id."""

    @abstractmethod
    async def list_instances(self) -> list[Node]:
        """Every worker of this cluster (static and autoscaled), from the cloud's tags: pending,
        running, and stopping or stopped (with ``Node.cloud_state``, so the daemon can end
        them); not terminated or being terminated."""

    @abstractmethod
    async def describe_instance_types(self, names: Sequence[str]) -> dict[str, InstanceTypeInfo]:
        """Shapes and prices of the named types the cloud knows (unknown names left out)."""

    @abstractmethod
    async def tag_instances(self, ids: Sequence[str], tags: Mapping[str, str]) -> None:
        """Add ``tags`` to the instances (a key already there takes the new value); the next
        listings show them (as eventually as the cloud's listing is). An unknown id is a
        ``ProviderError``; transient failures are raised for the caller's retry layer."""

    @abstractmethod
    async def untag_instances(self, ids: Sequence[str], keys: Collection[str]) -> None:
        """Remove the tag ``keys`` from the instances; a key an instance lacks is no error."""

    # -- cloud operations, written once ---------------------------------------

    def offerings(self, nodeTypes: str | Collection[str], preemptible: bool) -> list[Offering]:
        """The offerings of ``nodeTypes`` in preference order: each type in every zone."""
        kind = CapacityType.SPOT if preemptible else CapacityType.ON_DEMAND
        zones = self.zones or ("",)
        return [Offering(t, z, kind) for t in ordered_types(nodeTypes) for z in zones]

    def worker_tags(self, instance_type: str, request_id: str) -> dict[str, str]:
        """The tags of an autoscaled worker: membership, its type and its request."""
        name = self.clusterName or ""
        return {
            "Name": name,
            TAG_CLUSTER: name,
            TAG_ROLE: "worker",
            TAG_AUTOSCALED: "true",
            TAG_INSTANCE_TYPE: instance_type,
            TAG_REQUEST_ID: request_id,
        }

    async def addNodes(
        self,
        nodeTypes: set[str] | Sequence[str],
        numNodes: int,
        preemptible: bool,
        spotBid: float | None = None,
        *,
        requestId: str | None = None,
        exclude: Collection[Offering] = (),
        tags: Mapping[str, str] | None = None,
        first: Offering | None = None,
        before_offering: Callable[[Offering, str], Awaitable[None]] | None = None,
    ) -> int:
        """Launch ``numNodes`` workers of one of ``nodeTypes``; returns how many were launched.

        See the module docstring for the order, fallback, errors and idempotency. ``tags`` are
        added to the worker tags (a Slurm node name, say); they cannot replace shoal's own.
        ``first`` is tried before the others, even if excluded: the offering a replayed
        request chose before (its client token returns what it launched then). One that is
        not among these types' offerings any more (the config changed since: a zone or an
        instance type removed) is ignored, and logged. ``before_offering(offering, client
        token)`` is awaited before each offering is tried; what it raises ends the call (that
        offering untried) and is raised as it is.
        """
        ordered = ordered_types(nodeTypes)
        if numNodes <= 0 or not ordered:
            return 0
        await self.catalogue(ordered)  # an unknown type fails before anything launches
        if preemptible and spotBid is None:
            spotBid = self._spotBidsMap.get(frozenset(ordered))
        request_id = requestId if requestId is not None else f"shoal-{uuid.uuid4().hex}"
        every = self.offerings(ordered, preemptible)
        offerings = [o for o in every if o not in exclude]
        if first is not None and first not in every:
            logger.warning(
                "event=launch_first_ignored offering=%s request=%s reason=not-an-offering-now",
                first,
                request_id,
            )
        elif first is not None:
            offerings = [first, *(o for o in offerings if o != first)]
        launched = 0
        failed: list[CapacityError] = []
        for offering in offerings:
            remaining = numNodes - launched
            if remaining <= 0:
                break
            request = LaunchRequest(
                offering=offering,
                count=remaining,
                client_token=client_token(request_id, offering),
                request_id=request_id,
                spot_bid=spotBid,
                tags={**(tags or {}), **self.worker_tags(offering.instance_type, request_id)},
            )
            if before_offering is not None:
                await before_offering(offering, request.client_token)
            try:
                ids = await self.launch_offering(request)
            except ProviderError as e:
                self._emit(self._attempt(request, error=e))
                if not isinstance(e, CapacityError):
                    raise
                logger.warning(
                    "event=launch_no_capacity offering=%s code=%s request=%s",
                    offering,
                    e.code,
                    request_id,
                )
                failed.append(e)
                continue
            self._emit(self._attempt(request, ids=tuple(ids)))
            logger.info(
                "event=launched offering=%s count=%d asked=%d request=%s",
                offering,
                len(ids),
                remaining,
                request_id,
            )
            launched += len(ids)
        if not launched and failed:
            codes = {e.code for e in failed}
            code = codes.pop() if len(codes) == 1 else INSUFFICIENT_CAPACITY
            error = QuotaError if all(isinstance(e, QuotaError) for e in failed) else CapacityError
            raise error(
                "no capacity for "
                + ", ".join(f"{o} ({e.code})" for e in failed for o in e.offerings),
                offerings=tuple(o for e in failed for o in e.offerings),
                code=code,
                operation="addNodes",
            )
        return launched

    @staticmethod
    def _attempt(
        request: LaunchRequest, ids: tuple[str, ...] = (), error: ProviderError | None = None
    ) -> LaunchAttempt:
        return LaunchAttempt(
            request_id=request.request_id,
            offering=request.offering,
            requested=request.count,
            client_token=request.client_token,
            ids=ids,
            error=error,
        )

    async def terminateNodes(
        self, nodes: Iterable[Node | str], *, requestId: str | None = None
    ) -> None:
        """Terminate the given nodes, in batches. Nodes already gone are not an error; any
        other failure raises ``TerminationError`` naming every id that failed, after every
        batch was tried."""
        ids = list(dict.fromkeys(n if isinstance(n, str) else n.name for n in nodes))
        request_id = requestId if requestId is not None else f"shoal-{uuid.uuid4().hex}"
        failed: dict[str, ProviderError] = {}
        for start in range(0, len(ids), self.terminate_batch_size):
            batch = ids[start : start + self.terminate_batch_size]
            outcomes = await self.terminate_instances(batch)
            result = TerminationResult(
                request_id=request_id,
                terminated=tuple(
                    i for i in batch if outcomes.get(i) is TerminationStatus.TERMINATED
                ),
                already_gone=tuple(
                    i for i in batch if outcomes.get(i) is TerminationStatus.ALREADY_GONE
                ),
                failed={
                    i: outcome
                    if isinstance(outcome := outcomes.get(i), ProviderError)
                    else ProviderError(f"no outcome for {i}", code="NoOutcome")
                    for i in batch
                    if not isinstance(outcomes.get(i), TerminationStatus)
                },
            )
            self._emit(result)
            failed.update(result.failed)
            logger.info(
                "event=terminated count=%d already_gone=%d failed=%d request=%s",
                len(result.terminated),
                len(result.already_gone),
                len(result.failed),
                request_id,
            )
        if failed:
            raise TerminationError(failed)

    async def getProvisionedWorkers(
        self, instance_type: str | None = None, preemptible: bool | None = None
    ) -> list[Node]:
        """All worker nodes (static and autoscaled), optionally filtered."""
        return [
            n
            for n in await self.list_instances()
            if (instance_type is None or n.nodeType == instance_type)
            and (preemptible is None or n.preemptible == preemptible)
        ]

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
        self,
        config: InstanceConfiguration,
        role: str,
        keyPath: str | None = None,
        preemptible: bool = False,
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

    async def prepare_workers(self, settings: WorkerSettings | None = None) -> None:
        """Learn what worker user data needs (``WorkerBootstrap.prepare_workers``)."""
        await self.bootstrap.prepare_workers(settings)
