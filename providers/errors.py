"""Typed provider errors: every cloud SDK error is mapped to one of these in one place.

ProviderError
├── RetryableError        throttling, 5xx, timeouts, eventual consistency
│                         (retryPredicate is True)
├── CapacityError         the offering has no capacity now (InsufficientInstanceCapacity,
│   │                     MaxSpotInstanceCountExceeded, SpotMaxPriceTooLow): back it off
│   └── QuotaError        an account limit (InstanceLimitExceeded): back it off longer
└── (other subclasses for errors that a retry will not fix)

ManagedNodesNotSupportedException(RuntimeError)   as in Toil's seed
"""

from __future__ import annotations

from shoal.scaler.model import Offering

__all__ = [
    "CapacityError",
    "ManagedNodesNotSupportedException",
    "ProviderError",
    "QuotaError",
    "RetryableError",
]


class ManagedNodesNotSupportedException(RuntimeError):
    """Raised when adding managed nodes to a provisioner that cannot have them."""


class ProviderError(Exception):
    """An error talking to a cloud. ``code`` is the cloud's error code when there is one."""

    def __init__(self, message: str, *, code: str = "", operation: str = "") -> None:
        super().__init__(message)
        self.code = code
        self.operation = operation


class RetryableError(ProviderError):
    """A transient error: the same call may succeed if retried after a backoff."""


class CapacityError(ProviderError):
    """No capacity for the offerings tried; ``offerings`` should be backed off.

    ``launched`` is how many nodes were launched before capacity ran out (0 if none).
    """

    def __init__(
        self,
        message: str,
        *,
        offerings: tuple[Offering, ...],
        code: str = "",
        operation: str = "addNodes",
        launched: int = 0,
    ) -> None:
        super().__init__(message, code=code, operation=operation)
        self.offerings = offerings
        self.launched = launched


class QuotaError(CapacityError):
    """An account quota was reached (e.g. InstanceLimitExceeded)."""
