"""The fleet: ``addNodes`` and ``terminateNodes`` written once over a ``NodeProvider``'s
primitives (``providers.node_provider``), so the simulated cloud and EC2 behave alike by
construction, with the catalogue (shapes and prices, looked up once) and the event bus.

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
that may have launched). With ``all_or_nothing`` the nodes are one gang: each offering is asked
for all of them or none (``LaunchRequest.min_count``), the fallback moves the gang whole, and a
cloud answering with fewer has them terminated at once. ``terminateNodes`` terminates in
batches; ids already gone count as terminated and any other failure raises
``TerminationError`` naming every failed id.

What the seed's return values cannot carry comes through ``subscribe``: see
``providers.outcomes``. Prices sit in the catalogue beside the shapes: ``instancePrice`` and
``InstanceTypeInfo.price``, where None means unknown.
"""

from __future__ import annotations

import logging
import uuid
from collections.abc import Awaitable, Callable, Collection, Iterable, Mapping, Sequence

from shoal.providers.errors import (
    INSUFFICIENT_CAPACITY,
    CapacityError,
    ProviderError,
    QuotaError,
    TerminationError,
)
from shoal.providers.node_provider import (
    TAG_AUTOSCALED,
    TAG_CLUSTER,
    TAG_INSTANCE_TYPE,
    TAG_REQUEST_ID,
    TAG_ROLE,
    Node,
    NodeProvider,
    client_token,
    ordered_types,
)
from shoal.providers.outcomes import (
    InstanceTypeInfo,
    LaunchAttempt,
    LaunchRequest,
    ProviderEvent,
    TerminationResult,
    TerminationStatus,
)
from shoal.scaler.model import CapacityType, Offering
from shoal.scaler.shape import Shape

__all__ = ["Fleet"]

logger = logging.getLogger(__name__)
GIB = 2**30


class Fleet:
    r"""Launches and terminates workers of a cluster through ``provider`` (see the module
    docstring); keeps the catalogue and tells ``subscribe``\ d listeners what happened.

    ``zones`` are where workers launch, in preference order; ``node_storage`` GiB (per type:
    ``node_storage_overrides``) is a node's disk where its type has no instance storage;
    ``spot_bids`` maps a set of alternatives to its spot bid (``setAutoscaledNodeTypes``).
    """

    def __init__(
        self,
        provider: NodeProvider,
        *,
        cluster_name: str | None = None,
        zones: Sequence[str] = (),
        node_storage: int = 50,
        node_storage_overrides: Mapping[str, int] | None = None,
    ) -> None:
        self.provider = provider
        self.cluster_name = cluster_name
        self.zones: tuple[str, ...] = tuple(zones)
        self.node_storage = node_storage
        self.node_storage_overrides = dict(node_storage_overrides or {})
        self.spot_bids: dict[frozenset[str], float] = {}
        self.catalogue_entries: dict[str, InstanceTypeInfo] = {}
        self._listeners: list[Callable[[ProviderEvent], None]] = []

    # -- the catalogue --------------------------------------------------------------------

    async def catalogue(self, names: Iterable[str]) -> dict[str, InstanceTypeInfo]:
        """Shapes and prices of ``names``, looked up once (``describe_instance_types``) and
        kept. An unknown type is a ``ProviderError`` naming it."""
        wanted = list(dict.fromkeys(names))
        missing = [n for n in wanted if n not in self.catalogue_entries]
        if missing:
            self.catalogue_entries.update(await self.provider.describe_instance_types(missing))
        unknown = [n for n in wanted if n not in self.catalogue_entries]
        if unknown:
            raise ProviderError(
                f"unknown instance type(s) {', '.join(map(repr, unknown))} in the "
                f"{self.provider.cloud or type(self.provider).__name__} catalogue",
                code="InvalidInstanceType",
                operation="describe_instance_types",
            )
        return {n: self.catalogue_entries[n] for n in wanted}

    def update_catalogue(self, infos: Mapping[str, InstanceTypeInfo]) -> None:
        """Replace catalogue entries (a price refresh); shapes of known types stay."""
        self.catalogue_entries.update(infos)

    def instancePrice(self, instance_type: str, preemptible: bool = False) -> float | None:
        """USD per hour of one node (spot: in the first zone that has a price); None when the
        price is unknown or the type was never looked up with ``catalogue``."""
        info = self.catalogue_entries.get(instance_type)
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
        info = self.catalogue_entries[instance_type]
        disk = info.disk or self.node_storage_overrides.get(instance_type, self.node_storage) * GIB
        return Shape(3600, int(info.memory), info.cores, int(disk), preemptible)

    # -- outcomes -----------------------------------------------------------

    def subscribe(self, listener: Callable[[ProviderEvent], None]) -> Callable[[], None]:
        """Call ``listener`` with every ``providers.outcomes`` event; returns an unsubscriber."""
        self._listeners.append(listener)
        return lambda: self._listeners.remove(listener)

    def emit(self, event: ProviderEvent) -> None:
        for listener in list(self._listeners):
            listener(event)

    def offerings(self, nodeTypes: str | Collection[str], preemptible: bool) -> list[Offering]:
        """The offerings of ``nodeTypes`` in preference order: each type in every zone."""
        kind = CapacityType.SPOT if preemptible else CapacityType.ON_DEMAND
        zones = self.zones or ("",)
        return [Offering(t, z, kind) for t in ordered_types(nodeTypes) for z in zones]

    def worker_tags(self, instance_type: str, request_id: str) -> dict[str, str]:
        """The tags of an autoscaled worker: membership, its type and its request."""
        name = self.cluster_name or ""
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
        nodeTypes: str | Collection[str],
        numNodes: int,
        preemptible: bool,
        spotBid: float | None = None,
        *,
        requestId: str | None = None,
        exclude: Collection[Offering] = (),
        tags: Mapping[str, str] | None = None,
        first: Offering | None = None,
        before_offering: Callable[[Offering, str], Awaitable[None]] | None = None,
        all_or_nothing: bool = False,
        placement_group: str | None = None,
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

        ``all_or_nothing``: the ``numNodes`` are one gang, launched whole in one offering (one
        zone) or not at all: each offering is asked for all of them (``LaunchRequest.min_count``
        = ``numNodes``, EC2's MinCount = MaxCount), and the fallback moves the whole gang to the
        next offering. Should a cloud still answer with fewer, they are terminated at once and
        that offering counts as out of capacity (when terminating fails, the attempt is told
        with the ids, so the caller books them and ends them later, and the error is raised).
        ``placement_group`` (a strategy, "cluster"): the nodes go into the cloud's placement
        group of that strategy for their type and zone.
        """
        ordered = ordered_types(nodeTypes)
        if numNodes <= 0 or not ordered:
            return 0
        await self.catalogue(ordered)  # an unknown type fails before anything launches
        if preemptible and spotBid is None:
            spotBid = self.spot_bids.get(frozenset(ordered))
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
                min_count=remaining if all_or_nothing else 1,
                placement_group=placement_group,
            )
            if before_offering is not None:
                await before_offering(offering, request.client_token)
            try:
                ids = await self.provider.launch_offering(request)
            except ProviderError as e:
                self.emit(self._attempt(request, error=e))
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
            if len(ids) < request.min_count:
                error = await self._undo_partial(request, ids)
                self.emit(self._attempt(request, error=error))
                failed.append(error)
                continue
            self.emit(self._attempt(request, ids=tuple(ids)))
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

    async def _undo_partial(self, request: LaunchRequest, ids: Sequence[str]) -> CapacityError:
        """A cloud launched fewer than an all-or-nothing request's ``min_count``: terminate
        them and return the ``CapacityError`` that offering failed with. When terminating
        fails, the attempt is told with the ids (booked, to be ended later) and the error
        raised."""
        logger.warning(
            "event=launch_partial_gang offering=%s launched=%d asked=%d request=%s",
            request.offering,
            len(ids),
            request.min_count,
            request.request_id,
        )
        try:
            await self.terminateNodes(ids, requestId=request.request_id)
        except ProviderError as e:
            self.emit(self._attempt(request, ids=tuple(ids), error=e))
            raise
        return CapacityError(
            f"{request.offering} launched {len(ids)} of an all-or-nothing {request.min_count}"
            " (terminated)",
            offerings=(request.offering,),
            code=INSUFFICIENT_CAPACITY,
            operation="addNodes",
        )

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
        for start in range(0, len(ids), self.provider.terminate_batch_size):
            batch = ids[start : start + self.provider.terminate_batch_size]
            outcomes = await self.provider.terminate_instances(batch)
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
            self.emit(result)
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
        nodes = await self.provider.list_instances()
        if instance_type is None and preemptible is None:
            return list(nodes)  # unfiltered (the daemon's listing, every pass): no test a node
        return [
            n
            for n in nodes
            if (instance_type is None or n.nodeType == instance_type)
            and (preemptible is None or n.preemptible == preemptible)
        ]
