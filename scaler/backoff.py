"""Per-offering backoff: a pure, frozen table the daemon holds between passes.

When a launch fails for lack of capacity (``InsufficientInstanceCapacity``, spot
limits) or quota (``InstanceLimitExceeded``), the daemon records the failure for
that offering (instance type x zone x capacity type) and puts
``table.unavailable(now)`` into the next ``Snapshot``; the planner then skips the
offering and falls back to the next best node type.

Backoff is exponential per offering, as Karpenter's unavailable-offerings cache
and Cluster Autoscaler's node-group backoff are: the first failure blocks the
offering for ``initial`` seconds (3 min), each further failure while it is
remembered doubles that, up to ``maximum`` (30 min). A success clears the
offering. Quota errors start at ``quota_initial`` (15 min): a quota is an account
limit that does not free itself in minutes the way spot capacity does, so
retrying it every 3 minutes only produces errors. After a block has ended the
failure count is remembered for ``maximum`` seconds more, so an offering that
keeps failing keeps doubling while a quiet one starts again from ``initial``.

Every method returns a new table; nothing here reads a clock.
"""

from __future__ import annotations

import enum
from collections.abc import Mapping
from dataclasses import dataclass, field, replace
from types import MappingProxyType

from shoal.scaler.model import Offering

__all__ = ["BackoffEntry", "BackoffPolicy", "BackoffTable", "FailureKind"]


class FailureKind(enum.StrEnum):
    CAPACITY = "capacity"  # no capacity in the zone / spot pool: short, doubling
    QUOTA = "quota"  # account limit: starts longer


@dataclass(frozen=True, slots=True)
class BackoffPolicy:
    """Durations in seconds; defaults as Karpenter (3 min) and Cluster Autoscaler (30 min cap)."""

    initial: float = 180.0
    maximum: float = 1800.0
    multiplier: float = 2.0
    quota_initial: float = 900.0

    def __post_init__(self) -> None:
        if not 0 < self.initial <= self.maximum:
            raise ValueError(f"backoff initial {self.initial} must be > 0 and <= {self.maximum}")
        if self.multiplier < 1:
            raise ValueError(f"backoff multiplier {self.multiplier} must be >= 1")
        if not self.quota_initial > 0:
            raise ValueError(f"backoff quota_initial {self.quota_initial} must be > 0")

    def delay(self, failures: int, kind: FailureKind) -> float:
        """The block after the ``failures``-th consecutive failure (1-based)."""
        start = self.quota_initial if kind is FailureKind.QUOTA else self.initial
        return min(self.maximum, start * self.multiplier ** (failures - 1))


@dataclass(frozen=True, slots=True)
class BackoffEntry:
    failures: int  # consecutive failures remembered
    until: float  # the offering may be tried again at this time
    kind: FailureKind
    reason: str = ""  # the provider's error, for status pages


@dataclass(frozen=True, slots=True)
class BackoffTable:
    policy: BackoffPolicy = field(default_factory=BackoffPolicy)
    entries: Mapping[Offering, BackoffEntry] = field(default_factory=lambda: MappingProxyType({}))

    def record_failure(
        self,
        offering: Offering,
        now: float,
        kind: FailureKind = FailureKind.CAPACITY,
        reason: str = "",
    ) -> BackoffTable:
        """A launch in ``offering`` failed at ``now``: block it, longer than last time."""
        previous = self.entries.get(offering)
        failures = 1
        if previous is not None and now < previous.until + self.policy.maximum:
            failures = previous.failures + 1
        until = now + self.policy.delay(failures, kind)
        if previous is not None:
            until = max(until, previous.until)  # never shorten a block already running
        entry = BackoffEntry(failures=failures, until=until, kind=kind, reason=reason)
        return self._with({**self.entries, offering: entry})

    def record_success(self, offering: Offering) -> BackoffTable:
        """A launch in ``offering`` succeeded: forget its failures."""
        if offering not in self.entries:
            return self
        return self._with({k: v for k, v in self.entries.items() if k != offering})

    def unavailable(self, now: float) -> Mapping[Offering, float]:
        """Offerings blocked at ``now``, each with the time its block ends (for ``Snapshot``)."""
        return MappingProxyType(
            {offering: e.until for offering, e in self.entries.items() if now < e.until}
        )

    def next_deadline(self, now: float) -> float | None:
        """The earliest time after ``now`` an offering's block ends, or None."""
        return min((e.until for e in self.entries.values() if e.until > now), default=None)

    def prune(self, now: float) -> BackoffTable:
        """Forget offerings whose block ended more than ``policy.maximum`` ago."""
        keep = {k: v for k, v in self.entries.items() if now < v.until + self.policy.maximum}
        if len(keep) == len(self.entries):
            return self
        return self._with(keep)

    def _with(self, entries: dict[Offering, BackoffEntry]) -> BackoffTable:
        return replace(self, entries=MappingProxyType(entries))
