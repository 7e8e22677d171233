"""The node tracker: what the daemon knows of each worker, from the cloud and its own launches.

States (``scaler.NodeState`` plus the daemon's own ``terminated``)::

    addNodes accepted ──► (ledger) BOOTING, not yet listed
            │ listed                     │ never listed within the TTL: expired,
            ▼                            ▼ terminated as a join timeout
    (listed by the provider)
            │
            ▼   joined (demand source lists it, or provider says joined / cannot tell)
        BOOTING ─────────────► READY ◄───────────┐ undrained
            │                    │ drain hook     │
            │                    ▼ succeeded      │
            │                DRAINING ────────────┘
            │                    │ plan says terminate
            └────────────────────┴──► TERMINATED ──► (forgotten once no longer listed)

Membership comes from the cloud's tags (``TAG_AUTOSCALED == "true"`` marks a node shoal may
remove; any other worker is static), launch times from the cloud, so a restarted daemon
adopts what a previous one launched. A node the provider stops listing is forgotten. Drains
outlive the daemon the same way: the executor tags a node ``TAG_DRAINING`` before its drain
takes effect, and a listed node with the tag is DRAINING, never room; the drain counts as
done (``drain_confirmed``) once the scheduler shows it drained or this daemon's drain hook
succeeded, and until then the node is never terminated as drained and idle. A drain by
someone else (the scheduler shows the node drained without the tag, or with another reason
than shoal's) is static: never undrained or removed, but counted toward the type's max
(``drained_by_others``). A node the cloud lists
stopped (``Node.stopped``) is no capacity either and is left out of the planner's view.

Joined stays joined: a node once seen joined (``joined_at``) never goes back to BOOTING, so
the join timeout is only for nodes that never joined. A read that leaves it out (Slurm marks
it NOT_RESPONDING for a few seconds, a push omits it) marks it missing (``missing_since``,
cleared by the next read that lists it); the planner counts it as capacity, as Cluster
Autoscaler counts an unready node, until it has been missing from every read for
``scaler.unhealthy_timeout``, and replaces it then only if it runs nothing.

A node the scheduler shows joined before any listing shows it (a launch the ledger holds:
EC2's listing lags) is taken as joined then, and is one when the listing shows it.

Joined stays joined through a listing that leaves it out, too: a joined node the cloud
stops listing is forgotten as capacity at once (an interrupted or terminated node is gone),
but its ``joined_at`` and ``missing_since`` are remembered for ``ledger_ttl`` from when the
listing first left it out (``seen_joined``; the reads meanwhile still move ``missing_since``,
and a restart keeps when it was left out), so when EC2's eventually consistent listing shows
it again while a read also leaves it out, it is missing, not a booting node past its join
timeout. A node marked terminated is not remembered.

Joined stays joined across a restart too (``restore_joined``): the durable store keeps
``joined_at`` and ``missing_since`` of every node seen joined (``seen_joined``: listed, or
remembered), and a node the first listing after a restart shows takes them back (one it
does not show is remembered as an unlisted one); a node the store does not name never
joined, and its join timeout runs from its launch. Without that knowledge (no
``state_dir``, or a file from an older shoal) the first listing's nodes are taken as joined
then (unless the provider itself says one has not joined, ``Node.joined`` False): one a
read leaves out is missing from that moment, so it is replaced after ``unhealthy_timeout``
as unhealthy, never at once as a join timeout (and its offering is not backed off). Either
way, which of the first listing and the first read comes first no longer matters.

The launch ledger: EC2's listing is eventually consistent, so a node the cloud accepted may be
missing from the next listings. Every id ``addNodes`` reported launched is kept as a booting
node from the moment the cloud accepted it until a listing shows it or ``ttl`` passes; a
launch whose response was lost (the request's client token, no ids) is kept the same way as
that many placeholder nodes, each until an instance of the request that no answer named
shows up in a listing (one instance for one placeholder: a listing may show some of a
launch before the rest; one booked by id, another offering's, vouches for none), a later
answer for the same request and offering (a replay under the same client token: ids, no
capacity, or lost again) replaces them, or the TTL passes. An instance stands for one
placeholder at most: the tracker keeps, per request, the instances that stood for one
(``stood``, on disk with the ledger: a restart takes it back before its first listing), so
one new again to a listing (left out and shown again, or shown to a restarted daemon) takes
no second one; kept while the request has a placeholder. Planning on the listing alone
launched 28 instances for 4 nodes of demand.
"""

from __future__ import annotations

import bisect
import datetime as dt
import enum
import itertools
import operator
from collections import Counter
from collections.abc import Callable, Collection, Iterable, Mapping
from dataclasses import dataclass, replace
from operator import attrgetter
from types import MappingProxyType
from typing import Generic, TypeVar, cast

from shoal.providers.base import (
    TAG_AUTOSCALED,
    TAG_DRAINING,
    TAG_INSTANCE_TYPE,
    TAG_REQUEST_ID,
    Node,
)
from shoal.providers.outcomes import LaunchAttempt
from shoal.scaler.model import (
    CapacityType,
    Demand,
    NodeInfo,
    NodeState,
    NodeType,
    Offering,
    QueuedJobs,
)

__all__ = [
    "DEFAULT_LEDGER_TTL",
    "INTERRUPTED_MARK",
    "NodeTracker",
    "TrackedNode",
    "TrackedState",
    "requeue_running",
]

DEFAULT_LEDGER_TTL = 600.0  # seconds a launched node may stay unlisted
# The drain mark's value ends with it on a node the cloud takes away (an interruption
# notice): "<epoch seconds> interrupted", so a restarted daemon knows it too. One tag key:
# deploy/iam-policy.json lets shoal write TAG_DRAINING alone.
INTERRUPTED_MARK = "interrupted"


class TrackedState(enum.StrEnum):
    BOOTING = "booting"
    READY = "ready"
    DRAINING = "draining"
    TERMINATED = "terminated"  # terminate call made; still listed until the cloud catches up


def node_offering(node: Node, zone: str) -> Offering:
    """The offering ``node`` was launched from (its zone, or ``zone`` when it has none)."""
    capacity = CapacityType.SPOT if node.preemptible else CapacityType.ON_DEMAND
    return Offering(node.nodeType or "", node.zone or zone, capacity)


def _stands_for(
    new: Mapping[tuple[str, Offering], list[str]], placeholder: Node
) -> tuple[str, Offering] | None:
    """A new listed instance of the placeholder's request and offering left to stand for
    it, taken (one instance, one placeholder), with its offering; None when none is left."""
    request = placeholder.tags.get(TAG_REQUEST_ID, "")
    offering = node_offering(placeholder, "")
    for (of, own), ids in new.items():
        if ids and of == request and _offering_holds(own, offering):
            return ids.pop(), own
    return None


def _offering_holds(own: Offering, offering: Offering) -> bool:
    """Whether an instance of offering ``own`` is of ``offering``: its instance and capacity
    type, and its zone unless ``offering`` has none (no zone configured: the cloud chose)."""
    return (own.instance_type, own.capacity_type) == (
        offering.instance_type,
        offering.capacity_type,
    ) and (not offering.zone or own.zone == offering.zone)


def _launched_in(node: Node, offering: Offering) -> bool:
    """Whether ``node`` is of ``offering``: its instance and capacity type, and its zone
    unless the offering has none (no zone configured: the cloud chose it)."""
    return _offering_holds(node_offering(node, ""), offering)


@dataclass(frozen=True, slots=True)
class TrackedNode:
    node: Node
    node_type: str  # NodeType.name, "" if it matches no configured type
    state: TrackedState
    static: bool
    zone: str
    # ledger entries: accepted by the cloud, not yet listed (time accepted; None once listed)
    accepted_at: float | None = None
    placeholder: bool = False  # a lost launch response: no instance id known
    expired: bool = False  # never listed within the ledger's TTL: to be terminated
    # first seen joined (None: never, so it may time out joining); since when a node that
    # joined has been missing from every read (None: not missing)
    joined_at: float | None = None
    missing_since: float | None = None
    # DRAINING, shoal's: the drain is known to be in effect (this daemon's drain hook
    # succeeded, or the scheduler shows it drained); False: only the tag says so
    drain_confirmed: bool = False
    # the scheduler shows it drained by someone else: static, counted, never touched
    drained_by_others: bool = False

    @property
    def id(self) -> str:
        return self.node.name

    @property
    def listed(self) -> bool:
        return self.accepted_at is None

    def offering(self) -> Offering:
        return node_offering(self.node, self.zone)

    def info(self) -> NodeInfo:
        return NodeInfo(
            id=self.node.name,
            node_type=self.node_type,
            instance_type=self.node.nodeType or "",
            zone=self.zone,
            preemptible=self.node.preemptible,
            state=NodeState(self.state.value),
            launched_at=self.node.launchTime.timestamp(),
            static=self.static,
            joined_at=self.joined_at,
            missing_since=self.missing_since,
            drain_unconfirmed=self.state is TrackedState.DRAINING
            and not self.static
            and not self.drain_confirmed,
        )


# what ``NodeTracker.observe`` sets of a listed node beside its ``Node`` (the ledger's
# fields keep their defaults)
_LISTED = (
    "node_type",
    "state",
    "static",
    "zone",
    "joined_at",
    "missing_since",
    "drain_confirmed",
    "drained_by_others",
)
_listed = attrgetter(*_LISTED)


def _fields(t: TrackedNode) -> tuple[object, ...]:
    """``t``'s ``_LISTED`` fields; () for a ledger entry, which a listing never keeps."""
    if t.accepted_at is not None or t.placeholder or t.expired:
        return ()
    return _listed(t)


_name = attrgetter("node.name")  # TrackedNode.id


def _by_id(records: Iterable[TrackedNode]) -> list[TrackedNode]:
    """``records`` sorted by id. Readers that keep a few records filter first and sort what
    is left (the same list as filtering the sorted records), not every record each pass."""
    return sorted(records, key=_name)


T = TypeVar("T")

# every tracker's version comes from here, so two trackers (a restart or a new term makes a
# new one) never share one: a value kept by a version is the same tracker's, unchanged
_VERSIONS = itertools.count()


class Kept(Generic[T]):
    """A value made again only when its key changed: a tracker's ``version`` (which changes
    whenever a record is replaced, added or dropped) and what else it was made from. A
    pass's listing mostly changes nothing, and the readers ask after every pass."""

    __slots__ = ("_key", "_value")

    def __init__(self) -> None:
        self._key: object = None  # no key equals it: the first ``get`` makes the value
        self._value: T | None = None

    def get(self, key: tuple[object, ...], make: Callable[[], T]) -> T:
        if key != self._key:
            self._key, self._value = key, make()
        return cast(T, self._value)


class NodeTracker:
    """Tracks workers across passes; ``observe`` applies a provider listing, ``record_launch``
    what ``addNodes`` reported."""

    def __init__(
        self,
        node_types: Iterable[NodeType] = (),
        default_zone: str = "",
        ledger_ttl: float = DEFAULT_LEDGER_TTL,
    ) -> None:
        self._nodes: dict[str, TrackedNode] = {}
        # undrained by this daemon: when; and those whose draining tag listings still show
        # (the removal not listed yet, or failed): ignored until one does not, or the TTL
        self._undrained: dict[str, float] = {}
        self._stale_tag: set[str] = set()
        # the cloud is taking these away (an interruption notice): since when
        self._interrupted: dict[str, float] = {}
        self._imminent: set[str] = set()  # of those, within minutes (a spot warning)
        self._default_zone = default_zone
        self.ledger_ttl = ledger_ttl
        # what a restart knows of nodes seen joined before it (restore_joined); None: nothing
        self._known: dict[str, tuple[float, float | None, float | None]] | None = None
        # joined nodes the cloud stopped listing: (joined_at, missing_since, since when),
        # taken back if a listing shows them again within ledger_ttl
        self._gone: dict[str, tuple[float, float | None, float]] = {}
        self._adopting = False  # the next listing is the first since a restart
        # per request id, the instances that stood for one of its lost answers' placeholders
        # (id -> its offering), so that one stands for one at most, through a listing that
        # leaves it out and a restart (``stood``, ``restore_stood``); kept while the request
        # has a placeholder (its TTL at most), and an answer for an offering drops those of
        # it (``record_launch``: its placeholders are booked anew)
        self._stood: dict[str, dict[str, Offering]] = {}
        # requests whose instances the first listing shows stood already (a restored file
        # from before ``stood``: ``restore_stood``'s ``unknown``)
        self._stood_unknown: frozenset[str] = frozenset()
        # the records the last listing kept, each with what else it was made from (the read,
        # the drains): kept again, unexamined, while a listing hands the same Node and those
        # (a kept record did not depend on the time: no joined_at or missing_since was set)
        self._kept: dict[str, tuple[TrackedNode, tuple[bool | None, ...]]] = {}
        # each node's last NodeInfo, with the record it was made from (kept while the
        # record is the same object: a pass's listing mostly changes nothing)
        self._infos: dict[str, tuple[TrackedNode, NodeInfo]] = {}
        self._version = next(_VERSIONS)
        # what the readers ask every pass, kept while the records are (``version``) and
        # what else each was made from is
        self._made: Kept[tuple[NodeInfo, ...]] = Kept()
        self._deadlines: Kept[list[float]] = Kept()
        self._counts: Kept[Mapping[tuple[str, str], int]] = Kept()
        self._filtered: dict[str, Kept[list[TrackedNode]]] = {}
        # the last listing, if ``observe`` kept every record it lists unexamined or as it
        # was, at the version it left, with the read and drains it was applied with: the
        # same again changes nothing (see ``observe``)
        self._settled: tuple[tuple[Node, ...], int, tuple[object, ...]] | None = None
        self.set_node_types(node_types)

    @property
    def version(self) -> int:
        """Changes whenever a record is replaced, added or dropped (never the same number
        for two trackers): what is made from the records is kept while it is the same."""
        return self._version

    def _changed(self) -> None:
        self._version = next(_VERSIONS)

    def set_node_types(self, node_types: Iterable[NodeType]) -> None:
        """Map (instance type, preemptible) to the configured node type name (after a reload)."""
        self._type_of: dict[tuple[str, bool], str] = {}
        self._names: list[str] = []
        for nt in node_types:
            self._names.append(nt.name)
            for instance_type in nt.instance_types:
                self._type_of.setdefault((instance_type, nt.preemptible), nt.name)
        self._nodes = {
            k: replace(t, node_type=self._node_type(t.node)) for k, t in self._nodes.items()
        }
        self._changed()

    @property
    def node_type_names(self) -> list[str]:
        return list(self._names)

    def _node_type(self, node: Node) -> str:
        instance_type = node.tags.get(TAG_INSTANCE_TYPE) or node.nodeType or ""
        return self._type_of.get((instance_type, node.preemptible), "")

    def restore_joined(
        self, known: Mapping[str, tuple[float, float | None, float | None]] | None
    ) -> None:
        """At start, before the first listing: node id -> (``joined_at``, ``missing_since``,
        since when the listings left it out or None) from before the restart, or None when
        that is unknown (see the module docstring)."""
        self._known = dict(known) if known is not None else None
        self._adopting = True
        self._changed()  # what seen_joined answers changed
        self._settled = None  # the next listing is examined: it adopts

    def _adopted(self, node: Node, now: float) -> tuple[float | None, float | None]:
        """``joined_at`` and ``missing_since`` of a node listed for the first time, or again
        after a listing left it out."""
        gone = self._gone.pop(node.name, None)
        if gone is not None:
            return gone[0], gone[1]
        if self._known is not None:
            known = self._known.pop(node.name, None)
            return (None, None) if known is None else (known[0], known[1])
        if self._adopting and node.joined is not False:
            return now, None  # no knowledge: taken as joined at the start, unless the
        return None, None  # provider itself says it has not joined

    # -- the launch ledger ------------------------------------------------------------------

    def record_launch(self, attempts: Iterable[LaunchAttempt], now: float) -> list[TrackedNode]:
        """Book what one ``addNodes`` request did (all its attempts, retries included): ids
        launched become booting nodes; an offering whose only answers were transient errors
        (the response may have been lost) becomes ``requested`` placeholders, found again by
        the request id tag. Returns the new ledger entries."""
        attempts = list(attempts)
        confirmed = {a.client_token for a in attempts if a.ids or a.capacity_error}
        # an earlier answer's placeholders for the same request and offering (a replay, or a
        # caller's retry, under the same client token) give way to this answer: ids, no
        # capacity (that token launched nothing there), or lost again (placeholders anew);
        # any other error tells nothing of what the token did, and they stay
        asked = {
            (a.request_id, a.offering) for a in attempts if a.ids or a.capacity_error or a.uncertain
        }
        stale = [  # a placeholder's offering as ``_book`` wrote it (no zone default)
            k
            for k, t in self._nodes.items()
            if t.placeholder
            and (t.node.tags.get(TAG_REQUEST_ID), node_offering(t.node, "")) in asked
        ]
        for name in stale:
            del self._nodes[name]
        if stale:
            self._changed()
        for request, offering in asked:
            stood = self._stood.get(request, {})
            for name in [k for k, own in stood.items() if _offering_holds(own, offering)]:
                del stood[name]
        added: list[TrackedNode] = []
        for attempt in attempts:
            if attempt.ids:
                for instance_id in attempt.ids:
                    if instance_id not in self._nodes:
                        added.append(self._book(instance_id, attempt, now))
            elif attempt.uncertain and attempt.client_token not in confirmed:
                confirmed.add(attempt.client_token)
                # instances of this request and offering a listing already showed are the
                # token's (its one launch there): they stand for as many placeholders, which
                # no later listing would release (they are not new to it any more)
                # (and have stood for them: a listing that leaves one out and shows it
                # again does not take it for new)
                shown = [
                    t
                    for t in self._nodes.values()
                    if t.listed
                    and not t.placeholder
                    and t.node.tags.get(TAG_REQUEST_ID) == attempt.request_id
                    and _launched_in(t.node, attempt.offering)
                ]
                for i in range(max(0, attempt.requested - len(shown))):
                    name = f"unconfirmed:{attempt.client_token}:{i}"
                    added.append(self._book(name, attempt, now, placeholder=True))
                stood = self._stood.setdefault(attempt.request_id, {})
                stood.update((t.id, node_offering(t.node, "")) for t in shown)
        self._prune_stood()
        return added

    def stood(self) -> dict[str, dict[str, Offering]]:
        """Per request id that has a lost answer's placeholder, the instances that stood for
        one of its placeholders (id -> offering): what a restart takes back
        (``restore_stood``)."""
        return {request: dict(ids) for request, ids in self._stood.items()}

    def restore_stood(
        self, stood: Mapping[str, Mapping[str, Offering]], unknown: Iterable[str] = ()
    ) -> None:
        """At start, before the first listing and once the placeholders the ledger kept are
        booked again (the ids of requests with none are dropped): the instances that stood
        for a placeholder before the restart (``stood``), which the first listing does not
        take for new again. An intent's placeholders, booked after this, are its whole
        count: their offering's ids are dropped then (``record_launch``). ``unknown``: the
        requests whose instances in the first listing stood already, for all one knows (a
        file written before ``stood`` was kept)."""
        self._stood = {request: dict(ids) for request, ids in stood.items()}
        self._stood_unknown = frozenset(unknown)
        self._prune_stood()

    def _prune_stood(self) -> None:
        """Forget the instances that stood for a request's placeholders once it has none."""
        if not self._stood:
            return
        held = {t.node.tags.get(TAG_REQUEST_ID) for t in self._nodes.values() if t.placeholder}
        self._stood = {r: ids for r, ids in self._stood.items() if ids and r in held}

    def _book(
        self, name: str, attempt: LaunchAttempt, now: float, placeholder: bool = False
    ) -> TrackedNode:
        offering = attempt.offering
        preemptible = offering.capacity_type is CapacityType.SPOT
        node = Node(
            publicIP=None,
            privateIP=None,
            name=name,
            launchTime=dt.datetime.fromtimestamp(now, dt.UTC),
            nodeType=offering.instance_type,
            preemptible=preemptible,
            tags={
                TAG_AUTOSCALED: "true",
                TAG_INSTANCE_TYPE: offering.instance_type,
                TAG_REQUEST_ID: attempt.request_id,
            },
            zone=offering.zone,
            joined=False,
        )
        tracked = TrackedNode(
            node=node,
            node_type=self._node_type(node),
            state=TrackedState.BOOTING,
            static=False,
            zone=offering.zone or self._default_zone,
            accepted_at=now,
            placeholder=placeholder,
        )
        self._nodes[name] = tracked
        self._changed()
        return tracked

    def expire(self, now: float) -> list[TrackedNode]:
        """Ledger entries older than the TTL and still not listed. Placeholders are dropped
        (no instance of the lost launch ever showed up); real ids leave the planner's view and
        are returned for the caller to terminate as join timeouts (again each pass until
        the termination succeeds)."""
        expired = [
            t
            for t in self.pending()  # the ledger entries, in the tracker's order
            if t.accepted_at is not None
            and now - t.accepted_at >= self.ledger_ttl
            and t.state is not TrackedState.TERMINATED
        ]
        for t in expired:
            if t.placeholder:
                del self._nodes[t.id]
            else:
                self._nodes[t.id] = replace(t, expired=True)
        if expired:
            self._changed()
            self._prune_stood()
        return expired

    def next_deadline(
        self, join_timeout: float, unhealthy_timeout: float, now: float
    ) -> float | None:
        """The earliest time after ``now`` a node's timer here falls due, or None: the join
        timeout of a booting node never seen joined (``join_timeout`` after its launch; the
        planner's), the unhealthy timeout of a joined node missing from the reads, and a
        ledger entry's TTL (``expire``). The times, sorted, are kept while no record changed
        (a pass's listing mostly changes nothing, and the loop asks after every pass)."""
        times = self._deadlines.get(
            (self._version, join_timeout, unhealthy_timeout, self.ledger_ttl),
            lambda: self._times(join_timeout, unhealthy_timeout),
        )
        first = bisect.bisect_right(times, now)
        return times[first] if first < len(times) else None

    def _times(self, join_timeout: float, unhealthy_timeout: float) -> list[float]:
        times: list[float] = []
        for t in self._nodes.values():
            if t.state is TrackedState.TERMINATED or t.expired:
                continue
            if t.state is TrackedState.BOOTING and not t.static and t.joined_at is None:
                times.append(t.node.launchTime.timestamp() + join_timeout)
            if t.missing_since is not None and not t.static:
                times.append(t.missing_since + unhealthy_timeout)
            if t.accepted_at is not None:
                times.append(t.accepted_at + self.ledger_ttl)
        return sorted(t for t in times if t == t)  # never a NaN: no time is after it

    def pending(self) -> list[TrackedNode]:
        """Ledger entries: accepted by the cloud, not yet listed."""
        return self._filter("pending", lambda t: not t.listed, sort=False)

    def _filter(
        self, name: str, keep: Callable[[TrackedNode], bool], *, sort: bool = True
    ) -> list[TrackedNode]:
        """The records ``keep`` keeps (sorted by id, or in the tracker's order), made again
        only when a record changed: a new list each call, for the caller to keep."""
        kept = self._filtered.setdefault(name, Kept())
        made = kept.get(
            (self._version,),
            lambda: (_by_id if sort else list)(t for t in self._nodes.values() if keep(t)),
        )
        return list(made)

    # -- listings -----------------------------------------------------------------------------

    def observe(
        self,
        workers: Iterable[Node],
        joined: Collection[str] | None,
        now: float,
        draining: Collection[str] = (),
        own_drains: Collection[str] | None = None,
        *,
        unread: bool = False,
    ) -> list[TrackedNode]:
        """Apply a complete provider listing at ``now``. Returns the nodes seen for the first
        time.

        ``joined`` is the node names the demand source reports as joined, or None when it
        reports none; then a node is READY when ``Node.joined`` is True or None (cannot tell).
        A node tagged ``TAG_DRAINING`` is DRAINING (shoal's drain, from before a restart too);
        so is one in ``draining`` (the scheduler shows it drained), which without the tag is
        someone else's drain: static then, neither room nor shoal's to undrain or remove.
        When the source reports drain reasons (``own_drains``: the drained nodes with
        shoal's), a drain with another reason is someone else's, tag or not (an admin
        drained the node again: "bad GPU"). A drain of shoal's is confirmed once the
        scheduler shows it drained or this daemon's drain hook succeeded (``mark_drained``);
        with the tag alone (the daemon died before the hook, the hook and the tag's removal
        both failed) it is not, and is never terminated as idle: the drain is made again
        first. After an undrain (``mark_undrained``) the tag is ignored until a listing no
        longer shows it, or for ``ledger_ttl`` at most (EC2's tags are eventually consistent).
        Ledger entries the listing does not show yet are kept (see the module docstring).
        Joined stays joined: a node once seen joined that a read leaves out (Slurm's
        NOT_RESPONDING, a push that omits it) stays READY, missing since then; the planner
        replaces it only after ``unhealthy_timeout`` of absence (``NodeInfo.missing_since``),
        and never times it out as a node that did not join. ``unread``: no read has arrived
        yet (a restart), so only the provider's own ``Node.joined`` True says a node joined,
        and none is marked missing.

        A listing of the very same ``Node`` objects as the last, in the same order, applied
        with equal reads and drains while no record changed since, changes nothing when the
        last one kept every record it lists (each would be kept again unexamined, as below,
        and the ledger entries kept or dropped as then) and no undrain's tag is ignored:
        then it is not walked at all.
        """
        workers = tuple(workers)
        # as sets (a frozenset is taken as it is): a caller's set changed in place since
        # is not the read the last listing was applied with
        reads = (
            None if joined is None else frozenset(joined),
            frozenset(draining),
            None if own_drains is None else frozenset(own_drains),
            unread,
        )
        last = self._settled
        if (
            last is not None
            and not self._gone  # (what is remembered expires with time)
            and last[1] == self._version
            and len(last[0]) == len(workers)
            and all(map(operator.is_, last[0], workers))
            and last[2] == reads
        ):
            return []
        seen: dict[str, TrackedNode] = {}
        new: list[TrackedNode] = []
        # new instances listed, per request id and offering (a lost answer's placeholders
        # stand for instances of its own offering: its client token launches there only),
        # not those that stood for one already (new again after a flap or a restart)
        requests: dict[tuple[str, Offering], list[str]] = {}
        kept: dict[str, tuple[TrackedNode, tuple[bool | None, ...]]] = {}
        made = False  # a record made anew (not the one held)
        for node in workers:
            old = self._nodes.get(node.name)
            request = node.tags.get(TAG_REQUEST_ID)
            if request and old is None and request in self._stood_unknown:
                self._stood.setdefault(request, {})[node.name] = node_offering(node, "")
            elif request and old is None and node.name not in self._stood.get(request, ()):
                # an instance no answer named may be a lost answer's; one booked by id (an
                # offering of the same request that answered) vouches for no other's
                offering = node_offering(node, "")
                requests.setdefault((request, offering), []).append(node.name)
            is_joined = (node.name in joined) if joined is not None else node.joined is not False
            is_joined = node.joined is True if unread else is_joined
            if node.tags.get(TAG_DRAINING, "").endswith(INTERRUPTED_MARK):
                self._interrupted.setdefault(node.name, now)  # marked before a restart
            # what the record is made from besides the old record and the Node: the last
            # listing kept the record on the same, so this one would (``_kept``)
            inputs = (
                is_joined,
                node.name in draining,
                None if own_drains is None else node.name in own_drains,  # reasons read?
                unread,
            )
            held = self._kept.get(node.name)
            if (
                held is not None
                and held[0] is old
                and held[1] == inputs
                and old.node is node
                and node.name not in self._stale_tag
            ):
                seen[node.name], kept[node.name] = old, held
                continue
            if old is not None:
                joined_at, missing_since = old.joined_at, old.missing_since
            else:
                joined_at, missing_since = self._adopted(node, now)
            # a node the scheduler shows drained is there, only not taking work
            if is_joined or node.name in draining:
                joined_at, missing_since = now if joined_at is None else joined_at, None
            elif joined_at is not None and missing_since is None and not unread:
                missing_since = now
            tagged = TAG_DRAINING in node.tags
            if node.name in self._stale_tag:
                if tagged and now - self._undrained[node.name] < self.ledger_ttl:
                    tagged = False  # undrained: the tag's removal is not listed yet
                else:
                    self._stale_tag.discard(node.name)
            drained = node.name in draining
            shoals = own_drains is None or node.name in own_drains  # by the reason
            was_own = old is not None and old.state is TrackedState.DRAINING and not old.static
            # shoal's drain: the mark, or one made by this daemon whose mark is not listed yet;
            # never while the scheduler shows it drained for another reason
            own = (tagged or was_own) and (shoals or not drained)
            if old is not None and old.state is TrackedState.TERMINATED:
                state = old.state
            elif own or drained:
                state = TrackedState.DRAINING
            else:
                state = TrackedState.READY if joined_at is not None else TrackedState.BOOTING
            fields = (
                self._node_type(node),
                state,
                node.tags.get(TAG_AUTOSCALED) != "true" or (drained and not own),
                node.zone or self._default_zone,
                joined_at,
                missing_since,
                own and (drained or (was_own and old is not None and old.drain_confirmed)),
                drained and not own and not (own_drains is not None and shoals),
            )
            if old is not None and old.node is node and _fields(old) == fields:
                tracked = old  # unchanged (a listing hands the same Node while it is): kept
                kept[node.name] = (old, inputs)
            else:
                tracked = TrackedNode(node, **dict(zip(_LISTED, fields, strict=True)))
                made = True
            seen[node.name] = tracked
            if old is None or not old.listed:
                new.append(tracked)
        for name, old in self._nodes.items():
            if name in seen or old.state is TrackedState.TERMINATED:
                continue
            if old.listed:
                if old.joined_at is not None:  # may be a listing's lag: remembered
                    self._gone[name] = (old.joined_at, old.missing_since, now)
                continue
            if old.placeholder and (stood := _stands_for(requests, old.node)) is not None:
                # one of the lost launch's instances is listed now: it stands for one
                # placeholder (not all: a listing may show some of a launch before the rest)
                instance, offering = stood
                request = old.node.tags.get(TAG_REQUEST_ID, "")
                self._stood.setdefault(request, {})[instance] = offering
                continue
            if old.joined_at is None and joined is not None and name in joined and not unread:
                # joined before the listing shows it (the listing's lag): when it does, it
                # is a node that joined, not a booting one
                old = replace(old, joined_at=now)
                made = True
            seen[name] = old
        if self._adopting and self._known:
            # known joined before the restart, not listed yet: remembered as the unlisted
            # are, from when a listing first left it out
            for name, (joined_at, missing_since, since) in self._known.items():
                if name not in seen:
                    self._gone.setdefault(
                        name, (joined_at, missing_since, now if since is None else since)
                    )
            self._known = {}
        moved = self._read_gone(joined, draining, unread, now)
        expired = [k for k, v in self._gone.items() if now - v[2] >= self.ledger_ttl]
        for name in expired:
            del self._gone[name]
        # no record made: each one is the one held under its id, so as many as before are
        # the very same records
        changed = made or len(seen) != len(self._nodes) or bool(expired) or moved
        self._nodes = seen
        if changed:
            self._changed()
            self._prune_stood()
        self._kept = kept
        self._undrained = {k: v for k, v in self._undrained.items() if k in seen}
        self._stale_tag &= seen.keys()
        self._interrupted = {k: v for k, v in self._interrupted.items() if k in seen}
        self._imminent &= self._interrupted.keys()
        self._adopting = False
        self._stood_unknown = frozenset()
        whole = len(kept) == len(workers) and not self._stale_tag
        self._settled = (workers, self._version, reads) if whole else None
        return new

    def _read_gone(
        self, joined: Collection[str] | None, draining: Collection[str], unread: bool, now: float
    ) -> bool:
        """The read applied to the joined nodes the listing leaves out, as to a listed one:
        shown (joined or drained), not missing; else missing from now if it was not. Whether
        one moved."""
        if joined is None or unread:
            return False
        moved = False
        for name, (joined_at, missing_since, since) in self._gone.items():
            shown = name in joined or name in draining
            missing = None if shown else (now if missing_since is None else missing_since)
            if missing != missing_since:
                self._gone[name] = (joined_at, missing, since)
                moved = True
        return moved

    def mark(self, node_id: str, state: TrackedState) -> None:
        if state is TrackedState.TERMINATED and self._gone.pop(node_id, None) is not None:
            self._changed()  # terminated while a listing left it out: not remembered
        if node_id in self._nodes:
            self._nodes[node_id] = replace(self._nodes[node_id], state=state)
            self._changed()

    def mark_drained(self, node_id: str) -> None:
        """This daemon's drain hook succeeded: DRAINING, the drain confirmed."""
        if node_id in self._nodes:
            node = replace(self._nodes[node_id], state=TrackedState.DRAINING, drain_confirmed=True)
            self._nodes[node_id] = node
            self._stale_tag.discard(node_id)
            self._changed()

    def mark_undrained(self, node_id: str, now: float) -> None:
        """Undrained (or a drain undone) at ``now``: READY, and the draining tag listings
        may still show is ignored until one does not (bounded by ``ledger_ttl``)."""
        if node_id in self._nodes:
            node = replace(self._nodes[node_id], state=TrackedState.READY, drain_confirmed=False)
            self._nodes[node_id] = node
            self._undrained[node_id] = now
            self._stale_tag.add(node_id)
            self._changed()

    def mark_interrupted(self, node_id: str, now: float, *, imminent: bool = True) -> bool:
        """The cloud takes the node away (an interruption notice): from now on it is out of
        the planner's view (no room, never undrained) until listings stop showing it;
        ``imminent`` (a spot warning: within minutes), its running jobs are the caller's to
        requeue (``imminent()``); not so a scheduled change's, weeks ahead maybe, which
        finish there. False: unknown, or marked already (a notice delivered again)."""
        if node_id not in self._nodes or node_id in self._interrupted:
            return False
        self._interrupted[node_id] = now
        if imminent:
            self._imminent.add(node_id)
        return True

    def interrupted(self) -> frozenset[str]:
        """Nodes marked interrupted that listings still show."""
        return frozenset(self._interrupted)

    def imminent(self) -> frozenset[str]:
        """Interrupted nodes the cloud takes within minutes: their jobs die with them."""
        return frozenset(self._imminent)

    def interrupted_idle(self, busy: Collection[str]) -> list[TrackedNode]:
        """Interrupted nodes to terminate now: drained (confirmed) and running no job (not
        in ``busy``). They are out of the planner's view, so no idle timer removes them, and
        a scheduled change may come weeks before the cloud takes the node."""
        if not self._interrupted:
            return []
        return _by_id(
            t
            for t in self._nodes.values()
            if t.id in self._interrupted
            and t.id not in busy
            and t.state is TrackedState.DRAINING
            and t.drain_confirmed
            and not t.static
            and not t.node.stopped
        )

    def undrained_at(self, node_id: str) -> float | None:
        """When this daemon last undrained the node (None: never, or no longer listed)."""
        return self._undrained.get(node_id)

    def unconfirmed_drains(self) -> list[TrackedNode]:
        """Shoal's draining nodes whose drain only the tag vouches for: the drain hook
        runs again for them before any is terminated as idle."""
        return self._filter(
            "unconfirmed_drains",
            lambda t: t.state is TrackedState.DRAINING and not t.static and not t.drain_confirmed,
        )

    def drained_by_others(self) -> list[TrackedNode]:
        """Nodes the scheduler shows drained by someone else (never shoal's to touch)."""
        return self._filter(
            "drained_by_others",
            lambda t: t.drained_by_others and t.state is TrackedState.DRAINING,
        )

    def forget(self, node_id: str) -> None:
        if self._nodes.pop(node_id, None) is not None:
            self._changed()

    def get(self, node_id: str) -> TrackedNode | None:
        return self._nodes.get(node_id)

    def all(self) -> list[TrackedNode]:
        return _by_id(self._nodes.values())

    def seen_joined(self) -> dict[str, tuple[float, float | None, float | None]]:
        """Node id -> (``joined_at``, ``missing_since``, since when the listings leave it
        out or None) of every node seen joined: listed and not terminated, or joined and
        left out of the listings for less than ``ledger_ttl``, or known from before a restart
        and not listed since (what a restart takes back, ``restore_joined``)."""
        out = dict(self._known or {})  # before the first listing after a restart
        out.update(self._gone)
        for t in self._nodes.values():
            if t.joined_at is not None and t.listed and t.state is not TrackedState.TERMINATED:
                out[t.id] = (t.joined_at, t.missing_since, None)
        return out

    def records(self) -> Iterable[TrackedNode]:
        """Every record, in no order (``all`` sorts them by id): for a reader whose result
        does not depend on the order, without the sort (the launch journal, every pass)."""
        return self._nodes.values()

    def infos(self) -> tuple[NodeInfo, ...]:
        """The planner's view: every node not terminated, ledger entries not expired included;
        not stopped ones (no capacity: the loop terminates them) nor interrupted ones. The
        same tuple again while no record changed and no node was marked interrupted."""
        return self._made.get((self._version, tuple(self._interrupted)), self._make_infos)

    def _make_infos(self) -> tuple[NodeInfo, ...]:
        made = self._infos
        infos: dict[str, tuple[TrackedNode, NodeInfo]] = {}
        for t in self.all():
            if (
                t.state is TrackedState.TERMINATED
                or t.expired
                or t.node.stopped
                or t.id in self._interrupted
            ):
                continue
            last = made.get(t.id)
            infos[t.id] = last if last is not None and last[0] is t else (t, t.info())
        self._infos = infos
        return tuple(info for _, info in infos.values())

    def stopped(self) -> list[TrackedNode]:
        """Autoscaled nodes the cloud lists stopped or stopping, not yet terminated."""
        return self._filter(
            "stopped",
            lambda t: t.node.stopped and not t.static and t.state is not TrackedState.TERMINATED,
        )

    def counts(self) -> Mapping[tuple[str, str], int]:
        """Records per (node type, state): the same mapping again while no record changed."""
        return self._counts.get((self._version,), self._count)

    def _count(self) -> Mapping[tuple[str, str], int]:
        out: dict[tuple[str, str], int] = {}
        for t in self._nodes.values():
            key = (t.node_type or "unmanaged", t.state.value)
            out[key] = out.get(key, 0) + 1
        return MappingProxyType(out)


def requeue_running(demand: Demand, node_ids: Collection[str]) -> Demand:
    """``demand`` with the jobs running on ``node_ids`` (nodes the cloud is taking away) as
    queued jobs of their whole shape: the scheduler requeues them when the node goes, and
    the plan launches room for them now, before it has gone."""
    if not node_ids:
        return demand
    moved = [job for job in demand.running if job.node_id in node_ids]
    if not moved:
        return demand
    requeued = Counter(job.shape for job in moved)
    return Demand(
        queued=demand.queued + tuple(QueuedJobs(shape, n) for shape, n in requeued.items()),
        running=tuple(job for job in demand.running if job.node_id not in node_ids),
    )
