"""What a provider call did, beyond the seed's return values: the typed channel of the base class.

``addNodes`` returns how many nodes it launched and ``terminateNodes`` returns nothing, as in
Toil's seed. Everything else the caller needs comes as events, delivered synchronously, in
order, to every listener registered with ``AbstractProvisioner.subscribe``:

``LaunchAttempt``       one offering tried by ``addNodes``: the ids it launched (a partial fill
                        launches fewer than asked), or the typed error it failed with. When the
                        error is retryable the launch may have happened with its response lost:
                        ``uncertain`` is True and the ``client_token`` (idempotency key) tells
                        which instances to look for.
``TerminationResult``   one batch of ``terminateNodes``: ids terminated, ids already gone, and
                        ids that failed with their error. ``terminateNodes`` raises
                        ``TerminationError`` afterwards when any failed; nothing is dropped.
``PricesUpdated``       a price refresh finished (ok or not); on success the catalogue holds
                        the new prices. Providers whose prices never change never send it.

Launch and termination events carry the ``request_id`` of their call, and every instance
``addNodes`` launches is tagged with it (``TAG_REQUEST_ID``), so a caller matches listings,
events and its own requests.
"""

from __future__ import annotations

import enum
from collections.abc import Mapping
from dataclasses import dataclass, field
from types import MappingProxyType

from shoal.providers.errors import (
    IDEMPOTENT_PARAMETER_MISMATCH,
    CapacityError,
    ProviderError,
    QuotaError,
    RetryableError,
)
from shoal.scaler.model import Offering

__all__ = [
    "InstanceTypeInfo",
    "LaunchAttempt",
    "LaunchRequest",
    "PricesUpdated",
    "ProviderEvent",
    "TerminationResult",
    "TerminationStatus",
]

_EMPTY: Mapping = MappingProxyType({})


@dataclass(frozen=True, slots=True)
class InstanceTypeInfo:
    """One instance type in a provider's catalogue. Sizes in bytes, prices in USD per hour.

    A price of ``None`` means *unknown*, never free. ``spot_prices`` is per zone; a zone that is
    not in it has an unknown spot price. ``disk`` is instance storage (0: network storage only,
    the provider's ``nodeStorage`` applies).
    """

    name: str
    cores: float
    memory: int
    disk: int = 0
    on_demand_price: float | None = None
    spot_prices: Mapping[str, float] = field(default_factory=lambda: _EMPTY)
    gpus: int = 0

    def price(self, preemptible: bool, zone: str | None = None) -> float | None:
        """The price in ``zone`` (spot), or on demand; None when unknown. Without a zone, the
        lowest known spot price stands for the type."""
        if not preemptible:
            return self.on_demand_price
        if zone is not None:
            return self.spot_prices.get(zone)
        return min(self.spot_prices.values(), default=None)


@dataclass(frozen=True, slots=True)
class LaunchRequest:
    """What ``launch_offering`` is asked: up to ``count`` nodes of one offering, at least
    ``min_count`` of them or none (EC2's MinCount; ``min_count == count`` is an all-or-nothing
    launch: a gang, every node in the offering's one zone).

    ``client_token`` is the idempotency key: the same token must return the same instances
    and launch nothing more, however often it is sent (EC2's ClientToken).
    ``placement_group`` is a placement strategy ("cluster") for the nodes, or None.
    """

    offering: Offering
    count: int
    client_token: str
    request_id: str
    spot_bid: float | None
    tags: Mapping[str, str]
    min_count: int = 1
    placement_group: str | None = None

    @property
    def preemptible(self) -> bool:
        return self.offering.capacity_type == "spot"


@dataclass(frozen=True, slots=True)
class LaunchAttempt:
    request_id: str
    offering: Offering
    requested: int
    client_token: str
    ids: tuple[str, ...] = ()
    error: ProviderError | None = None

    @property
    def capacity_error(self) -> bool:
        """The offering had no capacity or hit a quota: back it off."""
        return isinstance(self.error, CapacityError)

    @property
    def quota_error(self) -> bool:
        return isinstance(self.error, QuotaError)

    @property
    def uncertain(self) -> bool:
        """A transient error: the cloud may have launched with the answer lost."""
        return isinstance(self.error, RetryableError)

    @property
    def launched_before(self) -> bool:
        """The cloud refused the client token as sent before with other arguments (EC2's
        ``IdempotentParameterMismatch``): that first request launched, its instances exist."""
        return self.error is not None and self.error.code == IDEMPOTENT_PARAMETER_MISMATCH


class TerminationStatus(enum.StrEnum):
    TERMINATED = "terminated"  # the cloud accepted the termination
    ALREADY_GONE = "already-gone"  # the cloud does not know it (any more): as good as terminated


@dataclass(frozen=True, slots=True)
class TerminationResult:
    request_id: str
    terminated: tuple[str, ...] = ()
    already_gone: tuple[str, ...] = ()
    failed: Mapping[str, ProviderError] = field(default_factory=lambda: _EMPTY)

    @property
    def done(self) -> tuple[str, ...]:
        """Ids that no longer run: terminated now or gone before."""
        return self.terminated + self.already_gone


@dataclass(frozen=True, slots=True)
class PricesUpdated:
    ok: bool
    at: float  # when the refresh finished (epoch seconds)
    source: str  # where the prices came from, e.g. "aws-pricing-api"
    error: str = ""  # what failed, when not ok; the last good prices stay


ProviderEvent = LaunchAttempt | TerminationResult | PricesUpdated
