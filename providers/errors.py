"""Typed provider errors: every cloud SDK error is mapped to one of these in one place.

ProviderError
├── RetryableError        throttling, 5xx, timeouts, eventual consistency
│                         (retryPredicate is True)
├── CapacityError         the offering has no capacity now (InsufficientInstanceCapacity,
│   │                     MaxSpotInstanceCountExceeded, SpotMaxPriceTooLow): back it off
│   └── QuotaError        an account limit (InstanceLimitExceeded): back it off longer
├── TerminationError      some ids of a terminateNodes call could not be terminated
│                         (``failed``: id -> error); retryable when every failure is
├── AuthError             the credentials or the IAM policy refuse the call (never retried)
└── (other subclasses for errors that a retry will not fix)

ManagedNodesNotSupportedException(RuntimeError)   as in Toil's seed
"""

from __future__ import annotations

from shoal.scaler.model import Offering

__all__ = [
    "IDEMPOTENT_PARAMETER_MISMATCH",
    "INSUFFICIENT_CAPACITY",
    "AuthError",
    "CapacityError",
    "ManagedNodesNotSupportedException",
    "ProviderError",
    "QuotaError",
    "RetryableError",
    "TerminationError",
    "is_retryable",
]


# EC2's error code for an offering out of stock; the fake clouds answer with it too.
INSUFFICIENT_CAPACITY = "InsufficientInstanceCapacity"
# EC2's answer to a client token sent again with other arguments: the token's first request
# succeeded (a failed one keeps no token), so its instances exist; the fakes answer so too.
IDEMPOTENT_PARAMETER_MISMATCH = "IdempotentParameterMismatch"


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


class AuthError(ProviderError):
    """The credentials are missing, wrong or expired, or the IAM policy refuses the action:
    a retry will not fix it, an operator must."""


class CapacityError(ProviderError):
    """No capacity for the offerings tried; ``offerings`` should be backed off."""

    def __init__(
        self,
        message: str,
        *,
        offerings: tuple[Offering, ...],
        code: str = "",
        operation: str = "addNodes",
    ) -> None:
        super().__init__(message, code=code, operation=operation)
        self.offerings = offerings


class QuotaError(CapacityError):
    """An account quota was reached (e.g. InstanceLimitExceeded)."""


class TerminationError(ProviderError):
    """``terminateNodes`` could not terminate some ids; ``failed`` maps each to its error.

    The ids not in ``failed`` were terminated (or were already gone). Retrying the call is
    safe: terminating an instance twice is not an error.
    """

    def __init__(self, failed: dict[str, ProviderError], *, operation: str = "terminateNodes"):
        first = next(iter(failed.values()))
        ids = ", ".join(sorted(failed)[:5]) + (" ..." if len(failed) > 5 else "")
        super().__init__(
            f"could not terminate {len(failed)} node(s) ({ids}): {first}",
            code=first.code,
            operation=operation,
        )
        self.failed = dict(failed)

    @property
    def retryable(self) -> bool:
        return all(isinstance(e, RetryableError) for e in self.failed.values())


def is_retryable(e: BaseException) -> bool:
    """True for a transient error: a ``RetryableError``, or a ``TerminationError`` whose every
    failure is one. Capacity and quota errors are never retried (they are backed off)."""
    if isinstance(e, TerminationError):
        return e.retryable
    return isinstance(e, RetryableError)
