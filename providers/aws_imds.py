"""The EC2 instance metadata service, version 2 (IMDSv2), for the machine shoal runs on.

IMDSv2 is session-oriented: ``PUT /latest/api/token`` with the header
``X-aws-ec2-metadata-token-ttl-seconds`` (1..21600) returns a token; every ``GET`` under
``/latest/meta-data/`` then carries it in ``X-aws-ec2-metadata-token``. A missing, wrong or
expired token is answered 401 (when the instance requires tokens), so the client fetches a new
token and asks once more. The token is kept until shortly before its TTL ends (by the injected
clock). Requests never go through a proxy (aiohttp's default ignores the proxy environment).

Errors are ``ProviderError`` with code ``InstanceMetadataUnavailable`` (no answer within the
timeout: not on EC2, or the service is off) or ``InstanceMetadataError`` (an HTTP error; the
status is in the message); transport failures and 5xx are ``RetryableError``.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass

import aiohttp
from shoal.providers.errors import ProviderError, RetryableError
from shoal.runtime.clock import Clock, SystemClock

__all__ = [
    "DEFAULT_ENDPOINT",
    "TOKEN_TTL",
    "InstanceIdentity",
    "InstanceMetadataClient",
]

log = logging.getLogger(__name__)

DEFAULT_ENDPOINT = "http://169.254.169.254"
TOKEN_TTL = 21600  # seconds, the most IMDS allows
_TOKEN_MARGIN = 60.0  # renew a kept token this long before it expires
_TTL_HEADER = "X-aws-ec2-metadata-token-ttl-seconds"
_TOKEN_HEADER = "X-aws-ec2-metadata-token"


@dataclass(frozen=True, slots=True)
class InstanceIdentity:
    """What shoal learns about the instance it runs on."""

    instance_id: str
    private_ip: str
    zone: str


class InstanceMetadataClient:
    """IMDSv2 at ``endpoint`` (``http://169.254.169.254``; a fake in tests), each request
    bounded by ``timeout`` seconds."""

    def __init__(
        self,
        endpoint: str = DEFAULT_ENDPOINT,
        *,
        timeout: float = 2.0,
        ttl: int = TOKEN_TTL,
        clock: Clock | None = None,
    ) -> None:
        if not endpoint.startswith(("http://", "https://")):
            raise ValueError(f"metadata endpoint {endpoint!r} is not an http:// URL")
        if not 1 <= ttl <= 21600:
            raise ValueError(f"token TTL {ttl} is outside 1..21600 seconds")
        self.endpoint = endpoint.rstrip("/")
        self.timeout = timeout
        self.ttl = ttl
        self.clock: Clock = clock or SystemClock()
        self._token: str | None = None
        self._token_expires = 0.0

    async def identity(self) -> InstanceIdentity:
        """Instance id, private IPv4 address and availability zone."""
        async with self._session() as session:
            return InstanceIdentity(
                instance_id=await self._get(session, "instance-id"),
                private_ip=await self._get(session, "local-ipv4"),
                zone=await self._get(session, "placement/availability-zone"),
            )

    async def get(self, path: str) -> str:
        """The text of ``/latest/meta-data/<path>``."""
        async with self._session() as session:
            return await self._get(session, path)

    # -- internals ---------------------------------------------------------------------

    def _session(self) -> aiohttp.ClientSession:
        return aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=self.timeout))

    async def _get(self, session: aiohttp.ClientSession, path: str) -> str:
        url = f"{self.endpoint}/latest/meta-data/{path.lstrip('/')}"
        token = await self._session_token(session)
        status, text = await self._request(session, "GET", url, {_TOKEN_HEADER: token})
        if status == 401:  # expired or revoked: a new token, and one more try
            log.info("event=imds_token_rejected path=%s action=renew", path)
            self._token = None
            token = await self._session_token(session)
            status, text = await self._request(session, "GET", url, {_TOKEN_HEADER: token})
        self._check(status, "GET", path)
        return text.strip()

    async def _session_token(self, session: aiohttp.ClientSession) -> str:
        if self._token is not None and self.clock.monotonic() < self._token_expires:
            return self._token
        started = self.clock.monotonic()
        status, text = await self._request(
            session, "PUT", f"{self.endpoint}/latest/api/token", {_TTL_HEADER: str(self.ttl)}
        )
        self._check(status, "PUT", "api/token")
        if not text:
            raise ProviderError(
                "IMDS answered an empty token", code="InstanceMetadataError", operation="imds"
            )
        self._token = text
        self._token_expires = started + self.ttl - min(_TOKEN_MARGIN, self.ttl / 2)
        return text

    async def _request(
        self, session: aiohttp.ClientSession, method: str, url: str, headers: dict[str, str]
    ) -> tuple[int, str]:
        try:
            async with session.request(method, url, headers=headers, allow_redirects=False) as r:
                return r.status, await r.text()
        except (TimeoutError, aiohttp.ClientError) as exc:
            raise RetryableError(
                f"instance metadata service at {self.endpoint} did not answer {method} "
                f"within {self.timeout:g}s: {type(exc).__name__}",
                code="InstanceMetadataUnavailable",
                operation="imds",
            ) from exc

    def _check(self, status: int, method: str, path: str) -> None:
        if status == 200:
            return
        message = f"instance metadata {method} {path}: HTTP {status}"
        if status >= 500:
            raise RetryableError(message, code="InstanceMetadataError", operation="imds")
        raise ProviderError(message, code="InstanceMetadataError", operation="imds")
