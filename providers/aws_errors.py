"""The one map from AWS errors to ``providers.errors``, for every AWS API shoal calls.

EC2 (``providers.aws``), Auto Scaling (managed nodes) and the Pricing API with EC2's spot
price history (``providers.aws_pricing``) all go through ``translate_error``, so a code means
the same thing whichever client got it, and the retry layer (``providers.retry``) sees only
typed errors: ``is_retryable`` on the result is the whole retry decision.

The code table follows AWS's documentation:

- throttling: EC2's ``RequestLimitExceeded`` ("Error codes for the Amazon EC2 API" and
  "Request throttling"), the Pricing API's ``ThrottlingException`` (GetProducts errors), the
  query APIs' ``Throttling`` (Auto Scaling), and the other spellings botocore's standard retry
  mode treats as throttling for these services;
- server errors: EC2's ``InternalError``, ``InternalFailure``, ``ServiceUnavailable`` and
  ``Unavailable``, the Pricing API's ``InternalErrorException``, the request time-outs botocore
  retries as transient, and any HTTP 5xx. All retryable;
- capacity, per offering (instance type x zone x market): EC2's ``InsufficientInstanceCapacity``
  and ``InsufficientCapacity`` (documented as server errors, HTTP 500, but a retry of the same
  offering will not help: it is backed off instead), ``MaxSpotInstanceCountExceeded``,
  ``SpotMaxPriceTooLow`` and ``Unsupported`` (the type is not offered in the zone);
- quota: ``InstanceLimitExceeded``, ``VcpuLimitExceeded`` (account limits, backed off longer);
- authentication and authorisation: EC2's ``AuthFailure``, ``UnauthorizedOperation``,
  ``Blocked``, ``OptInRequired``, the Pricing API's ``AccessDeniedException`` and the signing
  errors common to every API; an ``AuthError``, never retried;
- eventual consistency: ``InvalidInstanceID.NotFound`` (EC2 documents that an instance just
  launched may not be visible to the next call yet): retryable. Other not-found codes are
  plain ``ProviderError`` with the code.

Transport errors (connection refused, closed, timed out) are retryable. Anything else is a
``ProviderError`` carrying the AWS code, for callers that branch on it (``e.code``).
"""

from __future__ import annotations

import contextlib

from botocore.exceptions import (
    ClientError,
    ConnectionClosedError,
    ConnectTimeoutError,
    EndpointConnectionError,
    ReadTimeoutError,
)
from shoal.providers.errors import (
    AuthError,
    CapacityError,
    ProviderError,
    QuotaError,
    RetryableError,
)
from shoal.scaler.model import Offering

__all__ = [
    "AUTH_CODES",
    "CAPACITY_CODES",
    "NOT_FOUND_CODES",
    "QUOTA_CODES",
    "SERVER_CODES",
    "THROTTLE_CODES",
    "error_code",
    "translate_error",
]

THROTTLE_CODES = frozenset(
    {
        "RequestLimitExceeded",  # EC2
        "ThrottlingException",  # Pricing API (JSON protocols)
        "Throttling",  # Auto Scaling and the other query APIs
        "ThrottledException",
        "RequestThrottled",
        "RequestThrottledException",
        "TooManyRequestsException",
        "EC2ThrottledException",
        "SlowDown",
    }
)
SERVER_CODES = frozenset(
    {
        "InternalError",  # EC2
        "InternalFailure",  # every AWS API
        "ServiceUnavailable",
        "Unavailable",
        "InternalErrorException",  # Pricing API
        "RequestTimeout",
        "RequestTimeoutException",
        "PriorRequestNotComplete",
    }
)
# Eventual consistency: an instance just launched may not be visible to the next call yet.
NOT_FOUND_CODES = frozenset({"InvalidInstanceID.NotFound"})
CAPACITY_CODES = frozenset(
    {
        "InsufficientInstanceCapacity",
        "InsufficientCapacity",
        "MaxSpotInstanceCountExceeded",
        "SpotMaxPriceTooLow",
        "Unsupported",  # the type is not offered in this zone
    }
)
QUOTA_CODES = frozenset({"InstanceLimitExceeded", "VcpuLimitExceeded"})
AUTH_CODES = frozenset(
    {
        "AuthFailure",  # EC2
        "UnauthorizedOperation",  # EC2: the IAM policy refuses the action
        "Blocked",
        "OptInRequired",
        "AccessDeniedException",  # Pricing API
        "AccessDenied",
        "UnrecognizedClientException",
        "InvalidClientTokenId",
        "SignatureDoesNotMatch",
        "IncompleteSignature",
        "MissingAuthenticationToken",
        "ExpiredToken",
        "ExpiredTokenException",
        "RequestExpired",
    }
)
_TRANSPORT_ERRORS = (
    EndpointConnectionError,
    ConnectionClosedError,
    ConnectTimeoutError,
    ReadTimeoutError,
)


def error_code(e: BaseException) -> str:
    """The AWS error code of a typed or botocore error ("" when it has none)."""
    if isinstance(e, ProviderError):
        return e.code
    if isinstance(e, ClientError):
        return str(e.response.get("Error", {}).get("Code", ""))
    return ""


def _http_status(e: BaseException) -> int:
    if isinstance(e, ClientError):
        meta = e.response.get("ResponseMetadata", {})
        with contextlib.suppress(TypeError, ValueError):
            return int(meta.get("HTTPStatusCode", 0))
    return 0


def translate_error(
    e: BaseException, operation: str, offerings: tuple[Offering, ...] = ()
) -> ProviderError:
    """``e`` as a ``providers.errors`` error (a typed error is returned as it is).

    Capacity and quota errors carry ``offerings``: the ones the failed call tried.
    """
    if isinstance(e, ProviderError):
        return e
    code = error_code(e)
    message = f"{operation}: {e}"
    if isinstance(e, _TRANSPORT_ERRORS):
        return RetryableError(message, code=type(e).__name__, operation=operation)
    if code in QUOTA_CODES:
        return QuotaError(message, offerings=offerings, code=code, operation=operation)
    if code in CAPACITY_CODES:
        return CapacityError(message, offerings=offerings, code=code, operation=operation)
    if code in AUTH_CODES:
        return AuthError(message, code=code, operation=operation)
    if (
        code in THROTTLE_CODES
        or code in SERVER_CODES
        or code in NOT_FOUND_CODES
        or _http_status(e) >= 500
    ):
        return RetryableError(message, code=code, operation=operation)
    return ProviderError(message, code=code or type(e).__name__, operation=operation)
