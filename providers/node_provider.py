"""The node provider: the primitives a cloud implements, and the machines it lists.

A ``NodeProvider`` is what shoal needs from a cloud, and no more (as Karpenter's
``CloudProvider`` or Ray's ``NodeProvider``)::

    launch_offering(LaunchRequest) -> [instance id]    up to n nodes of ONE offering
                                                       (type x zone x spot/on-demand); at least
                                                       request.min_count (1, or n: all or
                                                       nothing) or a typed error; idempotent by
                                                       request.client_token
    terminate_instances([id]) -> {id: status | error}  one batch; unknown ids are ALREADY_GONE
    list_instances() -> [Node]                         the cluster's tagged workers, in
                                                       every state but terminated
                                                       (``Node.cloud_state``)
    describe_instance_types([name]) -> {name: InstanceTypeInfo}   shapes and prices
    tag_instances([id], {key: value})                  add or overwrite tags
    untag_instances([id], [key])                       remove tags (absent keys are fine)

with ``retryPredicate`` (which of its errors are transient), ``start`` and ``close``
(background work, connections) and two attributes: ``cloud`` (its name) and
``terminate_batch_size`` (the most ids one ``terminate_instances`` takes). The fleet logic over
these primitives is ``providers.fleet.Fleet``; the seed's ``AbstractProvisioner`` is composed of
both (``providers.base``).

The daemon depends on less than ``AbstractProvisioner``, and says so with two protocols that
every provisioner satisfies: ``Provisioner``, what the control loop and executor call (launch,
terminate and list workers through the fleet, tag them, ``retryPredicate``, the events of
``subscribe``), and ``Catalogue``, what building the planner's policy reads (shapes and
prices); ``CataloguedProvisioner`` is both, what ``daemon.service.build_controller`` takes.
Their signatures are the part the daemon uses; ``AbstractProvisioner``'s methods are the
definitions.

The tags are how a decision outlives the daemon: ``TAG_DRAINING`` marks a worker shoal is
draining (its value the epoch second the drain began), set before the drain takes effect, so a
restarted daemon adopts the node as draining instead of as room for new work.
With ``ha``, ``TAG_EPOCH`` names the leader's term that asked for a worker, and the term is in
the request id too (``term_request_id``), so its client tokens (``client_token``) are the
term's: see the README's "High availability" section for what that buys. A request a later
term sends again (a Slurm resume request restored from the store) keeps its term's tag
(``request_term``): EC2 answers a client token sent again with other tags with
``IdempotentParameterMismatch``, not with the instances it launched.
"""

from __future__ import annotations

import datetime as dt
import hashlib
from collections.abc import Callable, Collection, Iterable, Mapping, Sequence
from typing import Any, Protocol, runtime_checkable

from shoal.providers.errors import ProviderError
from shoal.providers.outcomes import (
    InstanceTypeInfo,
    LaunchRequest,
    ProviderEvent,
    TerminationStatus,
)
from shoal.scaler.model import Offering
from shoal.scaler.shape import Shape

__all__ = [
    "CLIENT_TOKEN_TTL",
    "STOPPED_STATES",
    "TAG_AUTOSCALED",
    "TAG_CLUSTER",
    "TAG_DRAINING",
    "TAG_EPOCH",
    "TAG_INSTANCE_TYPE",
    "TAG_REQUEST_ID",
    "TAG_ROLE",
    "Catalogue",
    "CataloguedProvisioner",
    "Node",
    "NodeProvider",
    "Provisioner",
    "client_token",
    "ordered_types",
    "request_term",
    "term_request_id",
]

# Tags every provider puts on what it launches; membership is rebuilt from them after a restart.
TAG_CLUSTER = "shoal:cluster"  # the cluster name
TAG_ROLE = "shoal:role"  # "leader" | "worker"
TAG_AUTOSCALED = "shoal:autoscaled"  # "true" on workers launched by addNodes; others are static
# The instance type launched. The key keeps its first name: in the seed's words a node type
# is an instance type (``Node.nodeType``), and running instances already carry it.
TAG_INSTANCE_TYPE = "shoal:node-type"
TAG_REQUEST_ID = "shoal:request-id"  # the addNodes requestId that launched it
TAG_DRAINING = "shoal:draining"  # set while shoal drains it: the drain's start, epoch seconds
TAG_EPOCH = "shoal:epoch"  # ha: the leader's term (etcd revision) that launched it
# Cloud states (EC2's names) of an instance that exists but is not running and never will be
# by itself: shoal never stops an instance, so one of its workers found so is terminated.
STOPPED_STATES = frozenset({"stopping", "stopped"})


def ordered_types(node_types: str | Collection[str]) -> list[str]:
    """Alternatives in preference order: a list or tuple as given (repeats dropped), a set
    sorted (the seed's "any of these", made deterministic), a string as the only one."""
    if isinstance(node_types, str):
        return [node_types]
    if isinstance(node_types, set | frozenset):
        return sorted(node_types)
    return list(dict.fromkeys(node_types))


def term_request_id(request_id: str, epoch: int | None) -> str:
    """A new request id of the leader's term ``epoch`` (``<id>-e<epoch>``; as it is without
    ``ha``). Made once per request: a replay keeps the id, and so its client tokens."""
    return request_id if epoch is None else f"{request_id}-e{epoch}"


def request_term(request_id: str) -> int | None:
    """The term ``term_request_id`` made ``request_id`` in, or None (made without ``ha``)."""
    head, sep, tail = request_id.rpartition("-e")
    return int(tail) if head and sep and tail.isascii() and tail.isdigit() else None


# how long a fake cloud's RunInstances remembers a client token's instances (a retry with
# it launches nothing more): EC2 documents at least 24 hours, long past any retry or a
# restart's replay of an unanswered launch (the launch ledger's TTL is 10 minutes); and
# bounded, so a cloud that runs for months forgets them
CLIENT_TOKEN_TTL = 86400.0


def client_token(request_id: str, offering: Offering) -> str:
    """The idempotency token for one request in one offering (<= 64 ASCII, as EC2 allows):
    the same on every retry of the request, different for every other request or offering."""
    key = f"{request_id}\0{offering.instance_type}\0{offering.zone}\0{offering.capacity_type}"
    return f"shoal-{hashlib.sha256(key.encode()).hexdigest()[:40]}"


class Node:
    """A provisioned machine, as Toil's ``toil.provisioners.node.Node``.

    ``launchTime`` accepts a datetime (naive means UTC) or an ISO 8601 string.

    A provider's listing hands a new ``Node`` for a machine whose facts changed; it may
    hand the same object again only while nothing in it changed: the daemon's node tracker
    keeps what it built from a ``Node`` it has seen (``NodeTracker.observe``).
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


@runtime_checkable
class NodeProvider(Protocol):
    """The primitives a cloud implements (see the module docstring)."""

    @property
    def cloud(self) -> str:
        """The cloud's name ("aws", "simulated", "local")."""
        ...

    @property
    def terminate_batch_size(self) -> int:
        """The most ids one ``terminate_instances`` call takes (EC2: 1000)."""
        ...

    def retryPredicate(self, e: BaseException) -> bool:
        """True if ``e`` is transient and the call should be retried with backoff."""
        ...

    async def start(self) -> None:
        """Start background work the provider needs while the daemon runs (a price refresh,
        say)."""
        ...

    async def close(self) -> None:
        """Stop background work and release connections."""
        ...

    async def launch_offering(self, request: LaunchRequest) -> list[str]:
        """Launch up to ``request.count`` workers of one offering, tagged ``request.tags``;
        return their ids (at least ``request.min_count``: fewer is none, and an error). A
        repeated ``request.client_token`` returns the instances launched with it and launches
        nothing. Raises ``CapacityError`` /
        ``QuotaError`` carrying the offering when it can launch none."""

    async def terminate_instances(
        self, ids: Sequence[str]
    ) -> Mapping[str, TerminationStatus | ProviderError]:
        """Terminate one batch (at most ``terminate_batch_size``); an outcome per id."""

    async def list_instances(self) -> list[Node]:
        """Every worker of this cluster (static and autoscaled), from the cloud's tags: pending,
        running, and stopping or stopped (with ``Node.cloud_state``, so the daemon can end
        them); not terminated or being terminated."""

    async def describe_instance_types(self, names: Sequence[str]) -> dict[str, InstanceTypeInfo]:
        """Shapes and prices of the named types the cloud knows (unknown names left out)."""

    async def tag_instances(self, ids: Sequence[str], tags: Mapping[str, str]) -> None:
        """Add ``tags`` to the instances (a key already there takes the new value); the next
        listings show them (as eventually as the cloud's listing is). An unknown id is a
        ``ProviderError``; transient failures are raised for the caller's retry layer."""

    async def untag_instances(self, ids: Sequence[str], keys: Collection[str]) -> None:
        """Remove the tag ``keys`` from the instances; a key an instance lacks is no error."""


@runtime_checkable
class Provisioner(Protocol):
    """What the daemon's control loop and executor call on a provisioner: the fleet's launch,
    termination and listing, the drain tag, which errors are transient, and the events
    (``AbstractProvisioner`` and every cloud subclass of it satisfy it)."""

    def retryPredicate(self, e: BaseException) -> bool: ...

    def subscribe(self, listener: Callable[[ProviderEvent], None]) -> Callable[[], None]:
        """Call ``listener`` with every ``providers.outcomes`` event; returns an unsubscriber."""
        ...

    async def addNodes(
        self, types: Sequence[str], n: int, preemptible: bool, bid: float | None, /, **options: Any
    ) -> int:
        """Launch ``n`` workers of one of ``types``, in that order of preference; how many
        launched. ``options``: ``requestId``, ``exclude``, ``tags``, ``first``,
        ``before_offering``, ``all_or_nothing``, ``placement_group`` (``Fleet.addNodes``)."""
        ...

    async def terminateNodes(
        self, nodes: Iterable[Node | str], *, requestId: str | None = None
    ) -> None: ...

    async def getProvisionedWorkers(self) -> list[Node]: ...

    async def tag_instances(self, ids: Sequence[str], tags: Mapping[str, str]) -> None: ...

    async def untag_instances(self, ids: Sequence[str], keys: Collection[str]) -> None: ...


@runtime_checkable
class Catalogue(Protocol):
    """What building the planner's policy reads of a provisioner: the configured node types
    looked up, then their shapes and prices (None: unknown)."""

    async def setAutoscaledNodeTypes(
        self, nodeTypes: list[tuple[set[str], float | None]]
    ) -> None: ...

    async def catalogue(self, names: Iterable[str]) -> dict[str, InstanceTypeInfo]: ...

    def node_shape(self, instance_type: str, preemptible: bool = False) -> Shape: ...

    def instancePrice(self, instance_type: str, preemptible: bool = False) -> float | None: ...


@runtime_checkable
class CataloguedProvisioner(Provisioner, Catalogue, Protocol):
    """A ``Provisioner`` with its ``Catalogue``: what a controller is built over."""
