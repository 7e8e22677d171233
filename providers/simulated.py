"""An in-process simulated cloud: the demo cloud for ``make run`` and the daemon's test fake.

``SimulatedProvisioner`` implements the provider primitives of ``AbstractProvisioner`` over a
catalogue of AWS-like instance types (``providers/catalogue/instance_types.json``: shapes and
prices); ``addNodes``/``terminateNodes`` are the base class's, exactly as on AWS. Everything
runs on the injected clock: a node launched at ``t`` is *booting* until ``t + boot_delay``,
*running* after that and *joined* (``Node.joined``) from ``t + boot_delay + join_delay``.
States are computed lazily from those times; there are no per-node tasks or timers, so
10,000 nodes cost a few dicts.

Behaviour as EC2 documents it, inconvenient parts included:

- ``launch_offering`` (RunInstances) launches up to the count asked, as capacity allows
  (MinCount=1/MaxCount=n): a partial fill launches fewer; an all-or-nothing request
  (``LaunchRequest.min_count`` = n, a gang) launches all or none; none is
  ``InsufficientInstanceCapacity``
  (a ``CapacityError``), the account limit ``InstanceLimitExceeded`` (a ``QuotaError``), a spot bid
  below the spot price ``SpotMaxPriceTooLow``. A repeated client token returns the instances
  launched with it and launches nothing; repeated with other arguments (count, MinCount, bid,
  tags, placement; the zone aside, as EC2 documents), it is ``IdempotentParameterMismatch``
  and launches nothing either. A token whose launch failed is not kept.
- The listing (DescribeInstances) is eventually consistent: an instance is invisible to
  ``list_instances`` for ``listing_lag`` seconds after its launch, and ``unlist`` leaves an
  instance that was listed out of the listings for a while (its tags and state unchanged).
- ``lose_next_response`` launches and then raises a ``RetryableError``, as a response lost on
  the way back; ``throttle_next`` and ``fail_next`` inject errors before anything happens.
- ``terminate_instances`` answers per id: terminated, already gone (unknown ids), or the error
  set with ``fail_termination``.
- ``tag_instances``/``untag_instances`` (CreateTags/DeleteTags) change every id or none (an
  unknown id is ``InvalidInstanceID.NotFound``); the next listing shows the new tags. Faults
  apply to them by those operation names.
- ``stop_instance`` stops an instance as an operator or EC2 would: it lists as ``stopping``,
  then ``stopped`` (``Node.cloud_state``; pending and running otherwise), never joined, until
  it is terminated; it still counts against capacity, as a reserved host would.

Knobs for tests (as Karpenter's fake.CloudProvider): ``throttle_next``, ``fail_next``,
``lose_next_response``, ``fail_termination``, ``unlist``, ``set_capacity``, ``set_unavailable``,
``set_instance_limit``, ``never_join``, ``preempt``, ``stop_instance``, ``add_static_nodes``,
``set_managed_desired``, ``reset_faults``; inspection: ``calls`` (recorded by EC2 operation name:
RunInstances, TerminateInstances, DescribeInstances, DescribeInstanceTypes, CreateTags,
DeleteTags, and the seed's names
for cluster operations), ``api_errors``, ``interruptions``, ``instance_state``, ``cost_per_hour``.

Managed nodes are supported, as an Auto Scaling group would be: ``addManagedNodes`` creates
a group at ``minNodes`` that the cloud keeps at its desired size (replacing terminated or
interrupted members on the next call); ``set_managed_desired`` moves the desired size within
[min, max]. Members are tagged ``TAG_AUTOSCALED="false"`` (shoal must not scale them).
"""

from __future__ import annotations

import collections
import datetime as dt
import difflib
import heapq
import itertools
import json
import math
import random
import shlex
from collections.abc import Callable, Collection, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from importlib import resources
from pathlib import Path
from typing import Any, ClassVar

from shoal.providers.base import (
    CLIENT_TOKEN_TTL,
    GIB,
    TAG_AUTOSCALED,
    TAG_CLUSTER,
    TAG_INSTANCE_TYPE,
    TAG_ROLE,
    AbstractProvisioner,
    Node,
    ordered_types,
)
from shoal.providers.errors import (
    INSUFFICIENT_CAPACITY,
    CapacityError,
    ProviderError,
    QuotaError,
    RetryableError,
    is_retryable,
)
from shoal.providers.outcomes import InstanceTypeInfo, LaunchRequest, TerminationStatus
from shoal.providers.workers import slurm_node_tags
from shoal.runtime.clock import Clock, SystemClock
from shoal.scaler.model import CapacityType

__all__ = [
    "DEFAULT_ZONE",
    "TAG_MANAGED_GROUP",
    "Call",
    "InstanceType",
    "ManagedGroup",
    "SimulatedProvisioner",
    "load_catalogue",
]

DEFAULT_ZONE = "sim-1a"
TAG_MANAGED_GROUP = "shoal:managed-group"  # the managed group a node belongs to
SPOT_PRICE_TOO_LOW = "SpotMaxPriceTooLow"
INSTANCE_LIMIT = "InstanceLimitExceeded"
THROTTLED = "RequestLimitExceeded"
TOKEN_TTL = CLIENT_TOKEN_TTL  # (node_provider's)
IDEMPOTENT_PARAMETER_MISMATCH = "IdempotentParameterMismatch"


def _idempotent_params(request: LaunchRequest) -> tuple[object, ...]:
    """What EC2 compares when a client token comes again: every argument but the zone."""
    o = request.offering
    return (
        o.instance_type,
        o.capacity_type,
        request.count,
        request.min_count,
        request.spot_bid,
        request.placement_group,
        tuple(sorted(request.tags.items())),
    )


@dataclass(frozen=True, slots=True)
class InstanceType:
    """One catalogue entry. Prices in USD per hour; ``storage_gib`` 0 means EBS only."""

    name: str
    cores: float
    memory_gib: float
    storage_gib: float
    on_demand_price: float
    spot_price: float
    gpus: int = 0

    def price(self, preemptible: bool) -> float:
        return self.spot_price if preemptible else self.on_demand_price

    def info(self, zones: Iterable[str]) -> InstanceTypeInfo:
        """The provider catalogue's entry: sizes in bytes, the spot price in every zone."""
        return InstanceTypeInfo(
            name=self.name,
            cores=self.cores,
            memory=int(self.memory_gib * GIB),
            disk=int(self.storage_gib * GIB),
            on_demand_price=self.on_demand_price,
            spot_prices={zone: self.spot_price for zone in zones},
            gpus=self.gpus,
        )


def load_catalogue(path: str | Path | None = None) -> dict[str, InstanceType]:
    """The instance types of a catalogue JSON file (default: the one shipped with shoal)."""
    if path is None:
        text = (
            resources.files("shoal.providers").joinpath("catalogue/instance_types.json").read_text()
        )
    else:
        text = Path(path).read_text()
    rows = json.loads(text)["instance_types"]
    return {
        name: InstanceType(
            name=name,
            cores=row["cores"],
            memory_gib=row["memory_gib"],
            storage_gib=row.get("storage_gib", 0),
            on_demand_price=row["on_demand_price"],
            spot_price=row["spot_price"],
            gpus=row.get("gpus", 0),
        )
        for name, row in rows.items()
    }


@dataclass(frozen=True, slots=True)
class Call:
    """One recorded API call: its operation, its arguments by name, and the clock time."""

    operation: str
    kwargs: dict[str, Any]
    time: float

    @property
    def args(self) -> dict[str, Any]:
        return self.kwargs


@dataclass(slots=True)
class ManagedGroup:
    """A group of nodes the cloud keeps at ``desired`` (an Auto Scaling group)."""

    name: str
    instance_types: tuple[str, ...]
    min_nodes: int
    max_nodes: int
    desired: int
    preemptible: bool
    spot_bid: float | None
    members: set[str] = field(default_factory=set)


@dataclass(slots=True)
class _Instance:
    name: str
    instance_type: str
    zone: str
    preemptible: bool
    role: str  # "leader" | "worker"
    launched_at: float
    running_at: float
    joined_at: float  # math.inf: never joins
    private_ip: str
    public_ip: str | None
    tags: dict[str, str]
    interrupt_at: float = math.inf
    group: str | None = None
    stopping_at: float = math.inf  # stopped by someone else (``stop_instance``): from then
    stopped_at: float = math.inf  # "stopping", and "stopped" from this time
    # cached Node objects, one per (joined, cloud state); cleared when the tags change
    nodes: dict[tuple[bool, str], Node] = field(default_factory=dict)

    def cloud_state(self, now: float) -> str:
        """EC2's state name: pending, running, stopping or stopped."""
        if now >= self.stopped_at:
            return "stopped"
        if now >= self.stopping_at:
            return "stopping"
        return "running" if now >= self.running_at else "pending"

    def node(self, now: float) -> Node:
        state = self.cloud_state(now)
        joined = now >= self.joined_at and now < self.stopping_at
        cached = self.nodes.get((joined, state))
        if cached is None:
            cached = self.nodes[joined, state] = Node(
                publicIP=self.public_ip,
                privateIP=self.private_ip,
                name=self.name,
                launchTime=dt.datetime.fromtimestamp(self.launched_at, dt.UTC),
                nodeType=self.instance_type,
                preemptible=self.preemptible,
                tags=self.tags,
                use_private_ip=self.role == "worker",
                zone=self.zone,
                joined=joined,
                cloud_state=state,
            )
        return cached


@dataclass(slots=True)
class _Fault:
    operation: str | None  # None: any operation
    remaining: int
    make: Callable[[], BaseException]
    after: bool = False  # raise after the call took effect (a lost response)


class SimulatedProvisioner(AbstractProvisioner):
    """An in-process cloud on an injected clock, with capacity limits and injectable faults.

    Node objects returned are shared with the simulation (one per node and joined state);
    treat them as read-only.
    """

    cloud: ClassVar[str] = "simulated"

    def __init__(
        self,
        clusterName: str | None = None,
        clusterType: str | None = "mesos",
        zone: str | None = None,
        nodeStorage: int = 50,
        nodeStorageOverrides: list[str] | None = None,
        *,
        zones: Sequence[str] = (),
        clock: Clock | None = None,
        catalogue: dict[str, InstanceType] | None = None,
        boot_delay: float = 30.0,
        join_delay: float = 15.0,
        listing_lag: float = 0.0,
        capacity: dict[str, int] | None = None,
        api_latency: float = 0.0,
        spot_interruption_rate: float = 0.0,
        seed: int = 0,
        record_calls: int | None = 100_000,
    ) -> None:
        super().__init__(
            clusterName,
            clusterType,
            zone or (None if zones else DEFAULT_ZONE),
            nodeStorage,
            nodeStorageOverrides,
            zones=zones,
        )
        self.clock: Clock = clock if clock is not None else SystemClock()
        self.types = dict(catalogue) if catalogue is not None else load_catalogue()
        self.zone = self.zones[0]
        self.boot_delay = float(boot_delay)
        self.join_delay = float(join_delay)
        self.listing_lag = float(listing_lag)
        self.api_latency = float(api_latency)
        self.spot_interruption_rate = float(spot_interruption_rate)
        self._rng = random.Random(seed)
        self._capacity: dict[str, int] = dict(capacity or {})
        self._zone_capacity: dict[tuple[str, str], int] = {}  # (type, zone) -> most live
        self._alive_by_zone: collections.Counter[tuple[str, str]] = collections.Counter()
        self._unavailable: dict[tuple[str, CapacityType, str | None], str] = {}
        self._instance_limit: int | None = None
        self._instances: dict[str, _Instance] = {}
        self._leader: str | None = None
        self._alive_by_type: collections.Counter[str] = collections.Counter()
        self._alive_by_offer: collections.Counter[tuple[str, bool]] = collections.Counter()
        self._interrupt_heap: list[tuple[float, str]] = []
        self._tokens: dict[str, list[str]] = {}
        self._token_params: dict[str, tuple[object, ...]] = {}  # what each token was sent with
        self._token_times: collections.deque[tuple[float, str]] = collections.deque()
        self._termination_failures: dict[str, ProviderError] = {}
        self._unlisted: dict[str, float] = {}  # instance -> until when listings leave it out
        self._groups: dict[str, ManagedGroup] = {}
        self._ids = itertools.count(1)
        self._faults: list[_Fault] = []
        self._never_join_types: set[str] = set()
        self._never_join_all = False
        self._never_join_count = 0
        self.calls: list[Call] = []  # the newest record_calls (None: all), oldest first
        self.record_calls = record_calls  # may be changed: the next call trims to it
        self.api_errors: collections.Counter[tuple[str, str]] = collections.Counter()
        self.interruptions: list[tuple[str, float]] = []  # (node name, time)
        self.settings: dict[str, Any] = {}

    # -- provider interface ---------------------------------------------------------------

    def supportedClusterTypes(self) -> set[str]:
        return {"mesos", "kubernetes"}

    @property
    def region(self) -> str:
        """The zone without its letter, as AWS names regions (``sim-1a`` -> ``sim-1``)."""
        return self.zone[:-1] if self.zone[-1:].isalpha() else self.zone

    @staticmethod
    def retryPredicate(e: BaseException) -> bool:
        return is_retryable(e)

    async def createClusterSettings(self) -> None:
        await self._api("createClusterSettings", {})
        self.settings["created"] = self.clock.now()

    async def readClusterSettings(self) -> None:
        await self._api("readClusterSettings", {})
        self.settings["read"] = self.clock.now()
        leader = self._instances.get(self._leader or "")
        if leader is not None:
            self._leaderPrivateIP = leader.private_ip

    async def describe_instance_types(self, names: Sequence[str]) -> dict[str, InstanceTypeInfo]:
        await self._api("DescribeInstanceTypes", {"InstanceTypes": list(names)})
        for name in names:
            self._type(name)  # an unknown name is an error that suggests near ones
        return {name: self.types[name].info(self.zones) for name in names}

    async def launch_offering(self, request: LaunchRequest) -> list[str]:
        offering = request.offering
        await self._api(
            "RunInstances",
            {
                "offering": offering,
                "count": request.count,
                "client_token": request.client_token,
                "requestId": request.request_id,
                "spot_bid": request.spot_bid,
                "min_count": request.min_count,
                "placement_group": request.placement_group,
            },
            effect=lambda: self._run_instances(request),
        )
        return list(self._tokens[request.client_token])

    def _run_instances(self, request: LaunchRequest) -> None:
        """The effect of RunInstances: idempotent by client token (recorded once made, for
        ``TOKEN_TTL``)."""
        now = self.clock.now()
        times = self._token_times
        while times and times[0][0] <= now - TOKEN_TTL:
            token = times.popleft()[1]
            del self._tokens[token], self._token_params[token]
        if request.client_token in self._tokens:
            if self._token_params[request.client_token] != _idempotent_params(request):
                raise ProviderError(
                    f"the client token {request.client_token} was sent with other arguments",
                    code=IDEMPOTENT_PARAMETER_MISMATCH,
                    operation="RunInstances",
                )
            return  # EC2: the same token returns the same instances, launches nothing more
        offering = request.offering
        preemptible = offering.capacity_type is CapacityType.SPOT
        info = self._type(offering.instance_type)
        code = self._unavailable.get(
            (offering.instance_type, offering.capacity_type, offering.zone)
        ) or self._unavailable.get((offering.instance_type, offering.capacity_type, None))
        bid = request.spot_bid
        if code is None and preemptible and bid is not None and bid < info.spot_price:
            code = SPOT_PRICE_TOO_LOW
        # one Slurm node name per instance (a gang's names listed in launch order)
        own_tags = slurm_node_tags(request.tags, request.count, "RunInstances")
        room = request.count
        if offering.instance_type in self._capacity:
            room = min(
                room, self._capacity[offering.instance_type] - self._alive_by_type[info.name]
            )
        pool = (offering.instance_type, offering.zone)
        if pool in self._zone_capacity:
            room = min(room, self._zone_capacity[pool] - self._alive_by_zone[pool])
        if code is None and room < request.min_count:  # as EC2: at least MinCount, or none
            code = INSUFFICIENT_CAPACITY
        if code is None and self._instance_limit is not None:
            room = min(room, self._instance_limit - sum(self._alive_by_type.values()))
            if room < request.min_count:
                code = INSTANCE_LIMIT
        if code is not None:
            error = QuotaError if code == INSTANCE_LIMIT else CapacityError
            raise error(
                f"no capacity for {offering} ({code})",
                offerings=(offering,),
                code=code,
                operation="RunInstances",
            )
        made = self._launch(
            offering.instance_type,
            preemptible,
            room,
            zone=offering.zone,
            extra_tags=dict(request.tags),
        )
        for inst, tags in zip(made, own_tags, strict=False):
            inst.tags.update(tags)
        self._tokens[request.client_token] = [inst.name for inst in made]
        self._token_params[request.client_token] = _idempotent_params(request)
        times.append((now, request.client_token))

    async def terminate_instances(
        self, ids: Sequence[str]
    ) -> Mapping[str, TerminationStatus | ProviderError]:
        await self._api("TerminateInstances", {"InstanceIds": list(ids)})
        out: dict[str, TerminationStatus | ProviderError] = {}
        for name in ids:
            if name in self._termination_failures:
                out[name] = self._termination_failures[name]
            elif name in self._instances:
                self._remove(name)
                out[name] = TerminationStatus.TERMINATED
            else:
                out[name] = TerminationStatus.ALREADY_GONE
        return out

    async def list_instances(self) -> list[Node]:
        await self._api("DescribeInstances", {})
        now = self.clock.now()
        if self._unlisted:
            self._unlisted = {k: t for k, t in self._unlisted.items() if now < t}
        unlisted = self._unlisted
        return [
            inst.node(now)
            for inst in self._instances.values()
            if inst.role == "worker"
            and now >= inst.launched_at + self.listing_lag
            and inst.name not in unlisted
        ]

    async def tag_instances(self, ids: Sequence[str], tags: Mapping[str, str]) -> None:
        await self._api(
            "CreateTags",
            {"Resources": list(ids), "Tags": dict(tags)},
            effect=lambda: self._retag(ids, lambda t: t.update(tags)),
        )

    async def untag_instances(self, ids: Sequence[str], keys: Collection[str]) -> None:
        def drop(t: dict[str, str]) -> None:
            for key in keys:
                t.pop(key, None)

        await self._api(
            "DeleteTags",
            {"Resources": list(ids), "Keys": list(keys)},
            effect=lambda: self._retag(ids, drop),
        )

    def _retag(self, ids: Sequence[str], change: Callable[[dict[str, str]], None]) -> None:
        """The effect of CreateTags/DeleteTags: all ids known, or none changed (as EC2); the
        next listing shows the new tags."""
        unknown = [name for name in ids if name not in self._instances]
        if unknown:
            raise ProviderError(
                f"The instance IDs '{', '.join(unknown)}' do not exist",
                code="InvalidInstanceID.NotFound",
            )
        for name in ids:
            inst = self._instances[name]
            change(inst.tags)
            inst.nodes.clear()

    async def launchCluster(
        self,
        leaderNodeType: str,
        leaderStorage: int = 50,
        owner: str = "",
        *args: Any,
        userTags: dict[str, str] | None = None,
        **kwargs: Any,
    ) -> None:
        """Create the leader node (running and joined at once is not assumed: it boots too)."""
        await self._api(
            "launchCluster",
            {"leaderNodeType": leaderNodeType, "leaderStorage": leaderStorage, "owner": owner},
        )
        self._type(leaderNodeType)
        if self._leader is not None and self._leader in self._instances:
            raise ProviderError(
                f"cluster {self.clusterName!r} already has a leader {self._leader}",
                code="ClusterExists",
                operation="launchCluster",
            )
        tags = dict(userTags or {})
        if owner:
            tags["Owner"] = owner
        (leader,) = self._launch(
            leaderNodeType, False, 1, role="leader", autoscaled="false", extra_tags=tags
        )
        self._leader = leader.name
        self._leaderPrivateIP = leader.private_ip
        self.settings["leaderStorage"] = leaderStorage

    async def getLeader(self) -> Node:
        await self._api("getLeader", {})
        leader = self._instances.get(self._leader or "")
        if leader is None:
            raise ProviderError(
                f"cluster {self.clusterName!r} has no leader",
                code="NoLeader",
                operation="getLeader",
            )
        return leader.node(self.clock.now())

    async def addManagedNodes(
        self,
        nodeTypes: set[str] | Sequence[str],
        minNodes: int,
        maxNodes: int,
        preemptible: bool,
        spotBid: float | None = None,
    ) -> None:
        ordered = ordered_types(nodeTypes)
        await self._api(
            "addManagedNodes",
            {
                "nodeTypes": ordered,
                "minNodes": minNodes,
                "maxNodes": maxNodes,
                "preemptible": preemptible,
                "spotBid": spotBid,
            },
        )
        for name in ordered:
            self._type(name)
        if not 0 <= minNodes <= maxNodes:
            raise ValueError(f"managed group needs 0 <= minNodes <= maxNodes, not {minNodes}..")
        name = f"sim-group-{len(self._groups) + 1}"
        self._groups[name] = ManagedGroup(
            name, tuple(ordered), minNodes, maxNodes, minNodes, preemptible, spotBid
        )
        self._replenish()

    async def destroyCluster(self) -> None:
        await self._api("destroyCluster", {})
        self._groups.clear()
        for name in list(self._instances):
            self._remove(name)
        self._leader = None
        self._leaderPrivateIP = None

    def getKubernetesAutoscalerSetupCommands(self, values: dict[str, str]) -> str:
        cluster = shlex.quote(values.get("CLUSTER_NAME", self.clusterName or ""))
        return (
            "# The simulated cloud has no Kubernetes cluster autoscaler integration:\n"
            "# shoal itself scales this cluster through providers.simulated.\n"
            f"echo 'shoal: no cluster autoscaler to set up for simulated cluster '{cluster}\n"
        )

    # -- test and demo helpers ------------------------------------------------------------

    def add_static_nodes(
        self, instance_type: str, count: int = 1, *, preemptible: bool = False, joined: bool = True
    ) -> list[Node]:
        """Add workers that shoal did not launch (``TAG_AUTOSCALED="false"``), already running
        (and joined unless ``joined=False``). Not an API call; not subject to faults."""
        self._type(instance_type)
        now = self.clock.now()
        made = self._launch(instance_type, preemptible, count, autoscaled="false", ready=True)
        for inst in made:
            inst.launched_at -= self.listing_lag  # listed at once: it has run for a while
            if not joined:
                inst.joined_at = math.inf
        return [inst.node(now) for inst in made]

    def cost_per_hour(self) -> float:
        """USD per hour of every live instance (leader, workers, booting ones included)."""
        self._reap()
        return sum(count * self.types[t].price(p) for (t, p), count in self._alive_by_offer.items())

    def next_interruption(self) -> float | None:
        """When the next spot interruption of a live instance is due (clock time), or None
        when none is drawn; ``shoal simulate`` wakes then, as the node's scheduler would."""
        heap = self._interrupt_heap
        while heap:
            at, name = heap[0]
            inst = self._instances.get(name)
            if inst is not None and inst.interrupt_at == at:
                return at
            heapq.heappop(heap)
        return None

    def instance_state(self, name: str) -> str:
        """``"booting"``, ``"running"``, ``"joined"``, ``"stopping"``, ``"stopped"`` or
        ``"terminated"`` (also unknown names)."""
        self._reap()
        inst = self._instances.get(name)
        if inst is None:
            return "terminated"
        now = self.clock.now()
        if now >= inst.stopping_at:
            return inst.cloud_state(now)
        if now >= inst.joined_at:
            return "joined"
        return "running" if now >= inst.running_at else "booting"

    def worker_names(self) -> list[str]:
        """Every worker not terminated, stopped ones and ones not listed yet included: the
        cloud's truth, for tests (the listing is what shoal sees)."""
        self._reap()
        return [name for name, inst in self._instances.items() if inst.role == "worker"]

    def count(self, instance_type: str | None = None) -> int:
        """Live instances (of one type), leader included; O(1)."""
        self._reap()
        if instance_type is None:
            return sum(self._alive_by_type.values())
        return self._alive_by_type[instance_type]

    @property
    def managed_groups(self) -> dict[str, ManagedGroup]:
        return dict(self._groups)

    def set_managed_desired(self, group: str, desired: int) -> int:
        """Set a managed group's desired size, clamped to [min, max]; returns what was set."""
        g = self._groups[group]
        g.desired = max(g.min_nodes, min(g.max_nodes, desired))
        self._replenish()
        return g.desired

    # -- fault knobs -----------------------------------------------------------------------

    def throttle_next(self, n: int = 1, operation: str | None = None) -> None:
        """The next ``n`` calls (of ``operation``, or of any) raise a ``RetryableError``
        with code ``RequestLimitExceeded``."""

        def make() -> BaseException:
            return RetryableError("Request limit exceeded.", code=THROTTLED)

        self._faults.append(_Fault(operation, n, make))

    def fail_next(
        self, exc: BaseException | str, operation: BaseException | str | None = None, n: int = 1
    ) -> None:
        """The next ``n`` calls (of ``operation``, or of any) raise ``exc``.

        Both orders are accepted: ``fail_next(exc, "RunInstances")`` and
        ``fail_next("RunInstances", exc)``."""
        if isinstance(exc, str):
            exc, operation = operation, exc  # type: ignore[assignment]
        if not isinstance(exc, BaseException) or not (
            operation is None or isinstance(operation, str)
        ):
            raise TypeError("fail_next needs an exception and optionally an operation name")
        error = exc
        self._faults.append(_Fault(operation, n, lambda: error))

    def lose_next_response(self, n: int = 1, operation: str = "RunInstances") -> None:
        """The next ``n`` calls of ``operation`` take effect, then raise ``InternalError``
        (retryable): the cloud did the work and the answer was lost on the way back."""

        def make() -> BaseException:
            return RetryableError("We encountered an internal error.", code="InternalError")

        self._faults.append(_Fault(operation, n, make, after=True))

    def fail_termination(self, name: str, error: ProviderError | None) -> None:
        """Terminating ``name`` fails with ``error`` (None: it succeeds again)."""
        if error is None:
            self._termination_failures.pop(name, None)
        else:
            self._termination_failures[name] = error

    def set_capacity(self, instance_type: str, n: int | None, *, zone: str | None = None) -> None:
        """At most ``n`` live instances of ``instance_type`` (None: unlimited), in ``zone``
        when given (a zone's limit and the type's both apply)."""
        self._type(instance_type)
        caps: dict[Any, int] = self._capacity if zone is None else self._zone_capacity
        key = instance_type if zone is None else (instance_type, zone)
        if n is None:
            caps.pop(key, None)
        else:
            caps[key] = n

    def set_unavailable(
        self,
        instance_type: str,
        preemptible: bool | None = None,
        code: str | None = INSUFFICIENT_CAPACITY,
        *,
        zone: str | None = None,
    ) -> None:
        """Make an offering fail with ``code`` (both capacity types if ``preemptible`` is None,
        every zone if ``zone`` is None); ``code=None`` makes it available again."""
        self._type(instance_type)
        kinds = [False, True] if preemptible is None else [preemptible]
        for p in kinds:
            key = (instance_type, CapacityType.SPOT if p else CapacityType.ON_DEMAND, zone)
            if code is None:
                self._unavailable.pop(key, None)
            else:
                self._unavailable[key] = code

    def set_instance_limit(self, n: int | None) -> None:
        """An account quota: at most ``n`` live instances in all (``InstanceLimitExceeded``)."""
        self._instance_limit = n

    def never_join(self, what: str | int | None = None) -> None:
        """Nodes launched from now on never join: all (None), all of an instance type (str),
        or the next ``what`` nodes launched (int). Static nodes are not affected."""
        if what is None:
            self._never_join_all = True
        elif isinstance(what, str):
            self._type(what)
            self._never_join_types.add(what)
        else:
            self._never_join_count += what

    def unlist(self, node_name: str, seconds: float) -> None:
        """Listings leave ``node_name`` out for ``seconds`` from now, as DescribeInstances'
        eventual consistency may leave out an instance it listed before; the instance runs
        on (and joins) as before. Not an API call; not subject to faults."""
        if node_name not in self._instances:
            raise KeyError(f"no live node {node_name!r}")
        self._unlisted[node_name] = max(
            self._unlisted.get(node_name, 0.0), self.clock.now() + seconds
        )

    def reset_faults(self) -> None:
        """Clear pending faults, never-join marks, unavailable offerings, termination
        failures and unlisted instances (not capacity)."""
        self._faults.clear()
        self._unlisted.clear()
        self._never_join_types.clear()
        self._never_join_all = False
        self._never_join_count = 0
        self._unavailable.clear()
        self._termination_failures.clear()

    def preempt(self, node_name: str) -> None:
        """A spot interruption of ``node_name`` now: it is gone from the next listing."""
        inst = self._instances.get(node_name)
        if inst is None:
            raise KeyError(f"no live node {node_name!r}")
        if not inst.preemptible:
            raise ValueError(f"node {node_name!r} is on-demand; only spot nodes are interrupted")
        self.interruptions.append((node_name, self.clock.now()))
        self._remove(node_name)

    def stop_instance(self, node_name: str, *, stopping_for: float = 0.0) -> None:
        """Someone else stops ``node_name`` now (an operator, or EC2 for a spot instance whose
        interruption behaviour is "stop"): it leaves its scheduler and lists as ``stopping``
        for ``stopping_for`` seconds, then ``stopped``, until it is terminated. Not an API
        call; not subject to faults."""
        inst = self._instances.get(node_name)
        if inst is None:
            raise KeyError(f"no live node {node_name!r}")
        now = self.clock.now()
        inst.stopping_at = min(inst.stopping_at, now)
        inst.stopped_at = min(inst.stopped_at, now + stopping_for)

    # -- internals --------------------------------------------------------------------------

    def _type(self, name: str) -> InstanceType:
        try:
            return self.types[name]
        except KeyError:
            near = difflib.get_close_matches(name, self.types, n=5, cutoff=0.5)
            if not near:
                family = name.split(".")[0]
                near = [t for t in self.types if t.startswith(family + ".")][:5]
            hint = f"; did you mean {', '.join(near)}?" if near else ""
            raise ProviderError(
                f"unknown instance type {name!r} in the simulated cloud's catalogue{hint}",
                code="InvalidInstanceType",
            ) from None

    async def _api(
        self, operation: str, kwargs: dict[str, Any], effect: Callable[[], None] | None = None
    ) -> None:
        """One API call: record it, wait out the latency, raise any injected fault, apply its
        ``effect`` (whose errors are counted as the call's errors)."""
        self.calls.append(Call(operation, kwargs, self.clock.now()))
        keep = self.record_calls
        if keep is not None and len(self.calls) > keep + keep // 10:  # trim now and then
            del self.calls[: len(self.calls) - keep]
        if self.api_latency > 0:
            await self.clock.sleep(self.api_latency)
        self._reap()
        fault = self._take_fault(operation)
        try:
            if fault is not None and not fault.after:
                raise fault.make()
            if effect is not None:
                effect()
            if fault is not None:
                raise fault.make()
        except BaseException as exc:
            code = getattr(exc, "code", "") or type(exc).__name__
            if isinstance(exc, ProviderError) and not exc.operation:
                exc.operation = operation
            self.api_errors[operation, code] += 1
            raise

    def _take_fault(self, operation: str) -> _Fault | None:
        for fault in self._faults:
            if fault.operation is None or fault.operation == operation:
                fault.remaining -= 1
                if fault.remaining <= 0:
                    self._faults.remove(fault)
                return fault
        return None

    def _launch(
        self,
        instance_type: str,
        preemptible: bool,
        count: int,
        *,
        zone: str | None = None,
        role: str = "worker",
        autoscaled: str = "true",
        group: str | None = None,
        extra_tags: dict[str, str] | None = None,
        ready: bool = False,
    ) -> list[_Instance]:
        now = self.clock.now()
        running_at = now if ready else now + self.boot_delay
        joined_at = running_at if ready else running_at + self.join_delay
        base_tags = {
            "Name": self.clusterName or "",
            TAG_CLUSTER: self.clusterName or "",
            TAG_ROLE: role,
            TAG_AUTOSCALED: autoscaled,
            TAG_INSTANCE_TYPE: instance_type,
            **(extra_tags or {}),
        }
        if group is not None:
            base_tags[TAG_MANAGED_GROUP] = group
            base_tags[TAG_AUTOSCALED] = "false"  # the cloud scales these, not shoal
        never_type = self._never_join_all or instance_type in self._never_join_types
        made = []
        for _ in range(count):
            n = next(self._ids)
            never = False
            if role == "worker" and not ready:
                if never_type:
                    never = True
                elif self._never_join_count > 0:
                    self._never_join_count -= 1
                    never = True
            inst = _Instance(
                name=f"sim-{n:06d}",
                instance_type=instance_type,
                zone=zone or self.zone,
                preemptible=preemptible,
                role=role,
                launched_at=now,
                running_at=running_at,
                joined_at=math.inf if never else joined_at,
                private_ip=f"10.{(n >> 16) & 255}.{(n >> 8) & 255}.{n & 255}",
                public_ip=f"198.51.100.{n % 250 + 1}" if role == "leader" else None,
                tags=dict(base_tags),
                group=group,
            )
            if preemptible and self.spot_interruption_rate > 0:
                inst.interrupt_at = now + self._rng.expovariate(self.spot_interruption_rate / 3600)
                heapq.heappush(self._interrupt_heap, (inst.interrupt_at, inst.name))
            self._instances[inst.name] = inst
            self._alive_by_type[instance_type] += 1
            self._alive_by_zone[instance_type, inst.zone] += 1
            self._alive_by_offer[instance_type, preemptible] += 1
            if group is not None:
                self._groups[group].members.add(inst.name)
            made.append(inst)
        return made

    def _remove(self, name: str) -> None:
        inst = self._instances.pop(name, None)
        if inst is None:
            return
        self._alive_by_type[inst.instance_type] -= 1
        self._alive_by_zone[inst.instance_type, inst.zone] -= 1
        self._alive_by_offer[inst.instance_type, inst.preemptible] -= 1
        if inst.group is not None and inst.group in self._groups:
            self._groups[inst.group].members.discard(name)
        if self._leader == name:
            self._leader = None

    def _reap(self) -> None:
        """Apply what happened on the clock since the last call: spot interruptions, then
        managed groups topping themselves up."""
        now = self.clock.now()
        heap = self._interrupt_heap
        while heap and heap[0][0] <= now:
            at, name = heapq.heappop(heap)
            inst = self._instances.get(name)
            if inst is not None and inst.interrupt_at == at:
                self.interruptions.append((name, at))
                self._remove(name)
        if self._groups:
            self._replenish()

    def _replenish(self) -> None:
        """Managed groups top themselves up to their desired size from their types in order;
        on a shortage they try again later, as an Auto Scaling group does."""
        for g in self._groups.values():
            deficit = g.desired - len(g.members)
            kind = CapacityType.SPOT if g.preemptible else CapacityType.ON_DEMAND
            for name in g.instance_types:
                if deficit <= 0:
                    break
                if (name, kind, None) in self._unavailable:
                    continue
                room = deficit
                if name in self._capacity:
                    room = min(room, self._capacity[name] - self._alive_by_type[name])
                if self._instance_limit is not None:
                    room = min(room, self._instance_limit - sum(self._alive_by_type.values()))
                if room > 0:
                    deficit -= len(self._launch(name, g.preemptible, room, group=g.name))
            if deficit < 0:
                for name in sorted(g.members)[deficit:]:
                    self._remove(name)
