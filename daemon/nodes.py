"""The node tracker: what the daemon knows of each worker, rebuilt from the cloud every pass.

States (``scaler.NodeState`` plus the daemon's own ``terminated``)::

    (listed by the provider)
            │
            ▼   joined (demand source lists it, or provider says joined / cannot tell)
        BOOTING ─────────────► READY
            │                    │ drain hook succeeded
            │                    ▼
            │                DRAINING
            │                    │ plan says terminate
            └────────────────────┴──► TERMINATED ──► (forgotten once no longer listed)

Membership comes from the cloud's tags (``TAG_AUTOSCALED == "true"`` marks a node shoal may
remove; any other worker is static), launch times from the cloud, so a restarted daemon
adopts what a previous one launched. A node the provider stops listing is forgotten.
"""

from __future__ import annotations

import enum
from collections.abc import Collection, Iterable, Mapping
from dataclasses import dataclass, replace

from shoal.providers.base import TAG_AUTOSCALED, TAG_NODE_TYPE, Node
from shoal.scaler.model import CapacityType, NodeInfo, NodeState, NodeType, Offering

__all__ = ["NodeTracker", "TrackedNode", "TrackedState"]


class TrackedState(enum.StrEnum):
    BOOTING = "booting"
    READY = "ready"
    DRAINING = "draining"
    TERMINATED = "terminated"  # terminate call made; still listed until the cloud catches up


@dataclass(frozen=True, slots=True)
class TrackedNode:
    node: Node
    node_type: str  # NodeType.name, "" if it matches no configured type
    state: TrackedState
    static: bool
    zone: str

    @property
    def id(self) -> str:
        return self.node.name

    def offering(self) -> Offering:
        capacity = CapacityType.SPOT if self.node.preemptible else CapacityType.ON_DEMAND
        return Offering(self.node.nodeType or "", self.zone, capacity)

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
        )


class NodeTracker:
    """Tracks workers across passes; ``observe`` applies a provider listing."""

    def __init__(self, node_types: Iterable[NodeType] = (), default_zone: str = "") -> None:
        self._nodes: dict[str, TrackedNode] = {}
        self._default_zone = default_zone
        self.set_node_types(node_types)

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

    @property
    def node_type_names(self) -> list[str]:
        return list(self._names)

    def _node_type(self, node: Node) -> str:
        instance_type = node.tags.get(TAG_NODE_TYPE) or node.nodeType or ""
        return self._type_of.get((instance_type, node.preemptible), "")

    def observe(self, workers: Iterable[Node], joined: Collection[str] | None) -> list[TrackedNode]:
        """Apply a complete provider listing. Returns the nodes seen for the first time.

        ``joined`` is the node names the demand source reports as joined, or None when it
        reports none; then a node is READY when ``Node.joined`` is True or None (cannot tell).
        """
        seen: dict[str, TrackedNode] = {}
        new: list[TrackedNode] = []
        for node in workers:
            old = self._nodes.get(node.name)
            is_joined = (node.name in joined) if joined is not None else node.joined is not False
            if old is not None and old.state in (TrackedState.DRAINING, TrackedState.TERMINATED):
                state = old.state
            else:
                state = TrackedState.READY if is_joined else TrackedState.BOOTING
            tracked = TrackedNode(
                node=node,
                node_type=self._node_type(node),
                state=state,
                static=node.tags.get(TAG_AUTOSCALED) != "true",
                zone=node.zone or self._default_zone,
            )
            seen[node.name] = tracked
            if old is None:
                new.append(tracked)
        self._nodes = seen
        return new

    def mark(self, node_id: str, state: TrackedState) -> None:
        if node_id in self._nodes:
            self._nodes[node_id] = replace(self._nodes[node_id], state=state)

    def get(self, node_id: str) -> TrackedNode | None:
        return self._nodes.get(node_id)

    def all(self) -> list[TrackedNode]:
        return sorted(self._nodes.values(), key=lambda t: t.id)

    def infos(self) -> tuple[NodeInfo, ...]:
        """The planner's view: every node not already terminated."""
        return tuple(t.info() for t in self.all() if t.state is not TrackedState.TERMINATED)

    def counts(self) -> Mapping[tuple[str, str], int]:
        out: dict[tuple[str, str], int] = {}
        for t in self._nodes.values():
            key = (t.node_type or "unmanaged", t.state.value)
            out[key] = out.get(key, 0) + 1
        return out
