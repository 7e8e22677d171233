"""A local fake of the EC2 instance metadata service (IMDSv2), on 127.0.0.1 only.

It behaves as the EC2 documentation describes IMDS on an instance whose metadata options
are ``HttpTokens: required`` (the default here; ``optional`` also answers tokenless GETs):

- ``PUT /latest/api/token`` needs ``X-aws-ec2-metadata-token-ttl-seconds`` between 1 and
  21600 (400 otherwise); a request carrying ``X-Forwarded-For`` is refused (403); the answer
  is the token, with the TTL echoed in the same header. Any other method there is 405.
- ``GET /latest/meta-data/<path>`` needs a token this server issued and that has not expired
  (401 otherwise, also for a token that is absent when tokens are required); the answer
  carries the token's remaining TTL. Unknown paths are 404; a path ending in ``/`` lists its
  children, one per line, sub-directories with a trailing ``/``.
- ``tags/instance/<key>`` is served only when ``instance_metadata_tags`` is on (as EC2's
  ``InstanceMetadataTags: enabled``); otherwise that whole tree is 404. ``retag_after(n,
  tags)`` changes the tags once ``n`` tag reads have been answered, as a CreateTags made
  while the instance runs shows in its metadata.

Time comes from an injected ``now()`` (seconds), so tests expire tokens by moving it, never by
waiting. ``revoke_all()`` forgets every token. ``requests`` records (method, path, headers
that matter) of every request.
"""

from __future__ import annotations

import secrets
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from aiohttp import web
from loopback import serve

__all__ = ["FakeImds", "FakeTime"]

TTL_HEADER = "X-aws-ec2-metadata-token-ttl-seconds"
TOKEN_HEADER = "X-aws-ec2-metadata-token"


@dataclass
class FakeTime:
    """A clock a test moves by hand."""

    t: float = 1_000.0

    def __call__(self) -> float:
        return self.t

    def advance(self, seconds: float) -> None:
        self.t += seconds


@dataclass
class FakeImds:
    """The metadata of one instance, served over IMDSv2 (see the module docstring)."""

    instance_id: str = "i-0123456789abcdef0"
    local_ipv4: str = "10.0.0.5"
    availability_zone: str = "us-east-1a"
    local_hostname: str = "ip-10-0-0-5.ec2.internal"
    tags: dict[str, str] = field(default_factory=dict)
    instance_metadata_tags: bool = False
    http_tokens: str = "required"  # or "optional"
    now: Callable[[], float] = field(default_factory=FakeTime)
    requests: list[tuple[str, str, dict[str, str]]] = field(default_factory=list)
    url: str = ""
    _tokens: dict[str, float] = field(default_factory=dict)
    _retags: list[tuple[int, dict[str, str]]] = field(default_factory=list)
    _tag_reads: int = 0
    _runner: web.AppRunner | None = None

    @classmethod
    def of_instance(cls, instance: dict[str, Any], **kwargs: Any) -> FakeImds:
        """The metadata of an instance as DescribeInstances describes it."""
        tags = {t["Key"]: t["Value"] for t in instance.get("Tags", [])}
        return cls(
            instance_id=instance["InstanceId"],
            local_ipv4=instance["PrivateIpAddress"],
            availability_zone=instance["Placement"]["AvailabilityZone"],
            local_hostname=instance.get("PrivateDnsName") or "",
            tags=tags,
            **kwargs,
        )

    # -- lifecycle -------------------------------------------------------------------------

    async def start(self) -> str:
        app = web.Application()
        app.router.add_route("*", "/latest/api/token", self._token)
        app.router.add_route("*", "/latest/meta-data/{path:.*}", self._metadata)
        self._runner, self.url = await serve(app)
        return self.url

    async def stop(self) -> None:
        if self._runner is not None:
            await self._runner.cleanup()
            self._runner = None

    def retag_after(self, reads: int, tags: dict[str, str]) -> None:
        """The tags become ``tags`` once ``reads`` reads of a tag have been answered."""
        self._retags.append((reads, tags))

    def revoke_all(self) -> None:
        self._tokens.clear()

    # -- handlers --------------------------------------------------------------------------

    def _record(self, request: web.Request) -> None:
        kept = {
            k: v
            for k, v in request.headers.items()
            if k.lower() in (TTL_HEADER.lower(), TOKEN_HEADER.lower(), "x-forwarded-for")
        }
        self.requests.append((request.method, request.path, kept))

    async def _token(self, request: web.Request) -> web.Response:
        self._record(request)
        if request.method != "PUT":
            return web.Response(status=405, text="Method Not Allowed")
        if "X-Forwarded-For" in request.headers:
            return web.Response(status=403, text="Forbidden")
        raw = request.headers.get(TTL_HEADER, "")
        if not raw.isdigit() or not 1 <= int(raw) <= 21600:
            return web.Response(status=400, text="Bad Request")
        token = secrets.token_urlsafe(42)
        self._tokens[token] = self.now() + int(raw)
        return web.Response(text=token, headers={TTL_HEADER: raw})

    def _remaining(self, token: str | None) -> float | None:
        """Seconds left on ``token``; None when it is unknown or expired."""
        if token is None or token not in self._tokens:
            return None
        left = self._tokens[token] - self.now()
        return left if left > 0 else None

    async def _metadata(self, request: web.Request) -> web.Response:
        self._record(request)
        if request.method not in ("GET", "HEAD"):
            return web.Response(status=405, text="Method Not Allowed")
        token = request.headers.get(TOKEN_HEADER)
        left = self._remaining(token)
        tokenless_ok = token is None and self.http_tokens == "optional"
        if left is None and not tokenless_ok:
            return web.Response(status=401, text="Unauthorized")
        tree = self._tree()
        path = request.match_info["path"]
        headers = {TTL_HEADER: str(int(left))} if left is not None else {}
        if path == "" or path.endswith("/"):
            prefix = path
            children = sorted(
                {
                    key[len(prefix) :].split("/")[0] + ("/" if "/" in key[len(prefix) :] else "")
                    for key in tree
                    if key.startswith(prefix)
                }
            )
            if not children:
                return web.Response(status=404, text="Not Found")
            return web.Response(text="\n".join(children), headers=headers)
        if path not in tree:
            return web.Response(status=404, text="Not Found")
        if path.startswith("tags/instance/"):
            self._tag_reads += 1
            for reads, tags in [r for r in self._retags if r[0] <= self._tag_reads]:
                self._retags.remove((reads, tags))
                self.tags = dict(tags)
        return web.Response(text=tree[path], headers=headers)

    def _tree(self) -> dict[str, str]:
        tree = {
            "instance-id": self.instance_id,
            "local-ipv4": self.local_ipv4,
            "local-hostname": self.local_hostname,
            "hostname": self.local_hostname,
            "placement/availability-zone": self.availability_zone,
            "placement/region": self.availability_zone[:-1],
        }
        if self.instance_metadata_tags:
            for key, value in self.tags.items():
                tree[f"tags/instance/{key}"] = value
        return tree
