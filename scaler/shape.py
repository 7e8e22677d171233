"""Job and node shapes, and Toil's node-type syntax.

``Shape`` is Toil's ``toil.provisioners.abstractProvisioner.Shape`` with the
same equality, ordering, hash and text form, made immutable so it can key
dictionaries safely. ``parse_node_types`` reads Toil's ``--nodeTypes`` syntax and
``parse_storage_overrides`` its ``--nodeStorageOverrides`` (the provider and the config
both use them).
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any

__all__ = ["NodeTypeSpec", "Shape", "parse_node_types", "parse_storage_overrides"]


@dataclass(frozen=True, eq=False, repr=False, slots=True)
class Shape:
    """The shape of a job or a node: wall time (s), memory (B), cores, disk (B), preemptibility.

    For a job, ``wallTime`` is its expected run time; for a node, its billing
    interval (3600 s on AWS).

    Shapes key the packers' dictionaries and are sorted by them all the time, so the
    five-tuple (equality and hash) and Toil's order (``order``) are computed once, when
    the shape is made.
    """

    wallTime: float
    memory: float
    cores: float
    disk: float
    preemptible: bool
    _key: tuple[float, float, float, float, bool] = field(init=False, repr=False)
    _hash: int = field(init=False, repr=False)
    order: tuple[bool, float, float, float, float] = field(init=False, repr=False)

    def __post_init__(self) -> None:
        key = (self.wallTime, self.memory, self.cores, self.disk, self.preemptible)
        object.__setattr__(self, "_key", key)
        object.__setattr__(self, "_hash", hash(key))
        # Toil's order as a sort key, ascending: preemptible first, then memory, cores,
        # disk, wallTime. sorted(shapes, key=attrgetter("order")) == sorted(shapes).
        order = (not self.preemptible, self.memory, self.cores, self.disk, self.wallTime)
        object.__setattr__(self, "order", order)

    def __eq__(self, other: Any) -> bool:
        if not isinstance(other, Shape):
            return NotImplemented
        return self._key == other._key

    def __hash__(self) -> int:
        return self._hash

    def greater_than(self, other: Any) -> bool:
        """Toil's order: non-preemptible above preemptible, then memory, cores, disk, wallTime."""
        if not isinstance(other, Shape):
            return NotImplemented
        return self.order > other.order

    def __gt__(self, other: Any) -> bool:
        return self.greater_than(other)

    def __lt__(self, other: Any) -> bool:
        if not isinstance(other, Shape):
            return NotImplemented
        return other.order > self.order

    def __repr__(self) -> str:
        return (
            f"Shape(wallTime={self.wallTime}, memory={self.memory}, cores={self.cores}, "
            f"disk={self.disk}, preemptible={self.preemptible})"
        )

    __str__ = __repr__

    def fits_in(self, other: Shape) -> list[str]:
        """The dimensions where this (job) shape exceeds ``other`` (a node); [] if it fits."""
        failing = []
        if self.memory > other.memory:
            failing.append("memory")
        if self.cores > other.cores:
            failing.append("cores")
        if self.disk > other.disk:
            failing.append("disk")
        if not self.preemptible and other.preemptible:
            failing.append("preemptible")
        return failing


NodeTypeSpec = tuple[set[str], float | None]


def parse_node_types(text: str | None) -> list[NodeTypeSpec]:
    """Parse Toil's node-type list, e.g. ``"c5.4xlarge/c5a.4xlarge:0.42,t2.large"``.

    Returns ``[({"c5.4xlarge", "c5a.4xlarge"}, 0.42), ({"t2.large"}, None)]``: each
    comma-separated entry is a set of equivalent instance types (slash-separated)
    and an optional spot bid in dollars after a colon (a bid makes it preemptible).

    Raises ``ValueError`` quoting the offending entry for several bids, an empty
    instance type name, or a bid that is not a non-negative number.
    """
    parsed: list[NodeTypeSpec] = []
    if not text:
        return parsed
    for entry in text.split(","):
        parts = entry.split(":")
        if len(parts) > 2:
            raise ValueError(f"node type {entry!r} has more than one bid (one ':' at most)")
        names = parts[0].split("/")
        if any(not name.strip() for name in names):
            raise ValueError(f"node type {entry!r} has an empty instance type name")
        bid: float | None = None
        if len(parts) == 2:
            try:
                bid = float(parts[1])
            except ValueError:
                raise ValueError(
                    f"node type {entry!r} has a bid {parts[1]!r} that is not a number"
                ) from None
            if not bid >= 0 or bid == float("inf"):
                raise ValueError(
                    f"node type {entry!r} has a bid {parts[1]!r} that is not a finite price >= 0"
                )
        parsed.append(({name.strip() for name in names}, bid))
    return parsed


def ordered_instance_types(entry: str) -> list[str]:
    """The instance type names of one node-type entry in the order written (preference order)."""
    return [name.strip() for name in entry.split(":")[0].split("/")]


def parse_storage_overrides(items: Iterable[str], minimum: int = 0) -> dict[str, int]:
    """Toil's node storage overrides, ``["i3.large:100", ...]``: root volume GiB by instance
    type (blanks around either part are ignored). Raises ``ValueError`` quoting an item that
    is not ``INSTANCE_TYPE:GIB`` with a whole number of GiB >= ``minimum``."""
    overrides: dict[str, int] = {}
    for item in items:
        name, sep, size = item.partition(":")
        name, size = name.strip(), size.strip()
        if not (sep and name and size.isdigit() and int(size) >= minimum):
            raise ValueError(
                f"{item!r} is not INSTANCE_TYPE:GIB with a whole number of GiB >= {minimum}, "
                'e.g. "i3.large:100"'
            )
        overrides[name] = int(size)
    return overrides
