"""IMDSv2: the fake behaves as EC2 documents the service, and shoal's client speaks it
(token first, token on every read, renewal when the token expires or is refused, errors typed).
Everything talks to 127.0.0.1; time is a FakeClock shared by the fake and the client."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from typing import Any

import aiohttp
import pytest
from aiohttp import web
from fake_imds import FakeImds
from loopback import serve
from shoal.providers.aws_imds import InstanceIdentity, InstanceMetadataClient
from shoal.providers.errors import ProviderError, RetryableError
from shoal.runtime.testing import FakeClock

TTL = "X-aws-ec2-metadata-token-ttl-seconds"
TOKEN = "X-aws-ec2-metadata-token"


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock()


@pytest.fixture
async def imds(clock: FakeClock) -> AsyncIterator[FakeImds]:
    fake = FakeImds(
        instance_id="i-0abc",
        local_ipv4="10.1.2.3",
        availability_zone="us-west-2b",
        tags={"shoal:slurm-node": "n-1"},
        now=clock.monotonic,
    )
    await fake.start()
    try:
        yield fake
    finally:
        await fake.stop()


async def call(method: str, url: str, headers: dict[str, str] | None = None) -> tuple[int, str]:
    async with (
        aiohttp.ClientSession() as session,
        session.request(method, url, headers=headers or {}) as r,
    ):
        return r.status, await r.text()


async def token(imds: FakeImds, ttl: str = "60") -> str:
    status, text = await call("PUT", f"{imds.url}/latest/api/token", {TTL: ttl})
    assert status == 200
    return text


# -- the fake, as EC2 documents IMDSv2 --------------------------------------------------------


@pytest.mark.parametrize(
    ("method", "headers", "status"),
    [
        ("PUT", {TTL: "21600"}, 200),
        ("PUT", {TTL: "1"}, 200),
        ("PUT", {}, 400),
        ("PUT", {TTL: "0"}, 400),
        ("PUT", {TTL: "21601"}, 400),
        ("PUT", {TTL: "ten"}, 400),
        ("PUT", {TTL: "60", "X-Forwarded-For": "203.0.113.9"}, 403),
        ("GET", {TTL: "60"}, 405),
    ],
    ids=["max-ttl", "min-ttl", "no-ttl", "zero", "too-long", "not-a-number", "forwarded", "get"],
)
async def test_fake_token_endpoint(
    method: str, headers: dict[str, str], status: int, imds: FakeImds
) -> None:
    got, text = await call(method, f"{imds.url}/latest/api/token", headers)
    assert got == status
    assert bool(text) and (status != 200 or len(text) > 20)


async def test_fake_metadata_needs_a_live_token(imds: FakeImds, clock: FakeClock) -> None:
    url = f"{imds.url}/latest/meta-data/local-ipv4"
    assert await call("GET", url) == (401, "Unauthorized")  # HttpTokens: required
    assert (await call("GET", url, {TOKEN: "made-up"}))[0] == 401
    good = await token(imds, ttl="60")
    assert await call("GET", url, {TOKEN: good}) == (200, "10.1.2.3")
    await clock.advance(59)
    assert (await call("GET", url, {TOKEN: good}))[0] == 200
    await clock.advance(1)
    assert (await call("GET", url, {TOKEN: good}))[0] == 401  # expired
    fresh = await token(imds)
    imds.revoke_all()
    assert (await call("GET", url, {TOKEN: fresh}))[0] == 401


async def test_fake_paths_listing_and_tags(imds: FakeImds) -> None:
    headers = {TOKEN: await token(imds)}
    base = f"{imds.url}/latest/meta-data/"
    assert await call("GET", base + "instance-id", headers) == (200, "i-0abc")
    assert await call("GET", base + "placement/availability-zone", headers) == (200, "us-west-2b")
    assert (await call("GET", base + "nothing-here", headers))[0] == 404
    status, listing = await call("GET", base, headers)
    assert status == 200 and "placement/" in listing.split("\n")
    assert "tags/" not in listing.split("\n")
    # Tags are served only with InstanceMetadataTags enabled.
    assert (await call("GET", base + "tags/instance/shoal:slurm-node", headers))[0] == 404
    imds.instance_metadata_tags = True
    assert await call("GET", base + "tags/instance/shoal:slurm-node", headers) == (200, "n-1")
    assert await call("GET", base + "tags/instance/", headers) == (200, "shoal:slurm-node")


async def test_fake_with_optional_tokens_answers_tokenless_reads(imds: FakeImds) -> None:
    imds.http_tokens = "optional"
    url = f"{imds.url}/latest/meta-data/local-ipv4"
    assert await call("GET", url) == (200, "10.1.2.3")
    assert (await call("GET", url, {TOKEN: "made-up"}))[0] == 401  # a bad token still fails


# -- the client --------------------------------------------------------------------------


async def test_client_reads_the_identity_with_one_token(imds: FakeImds, clock: FakeClock) -> None:
    client = InstanceMetadataClient(imds.url, clock=clock)
    expected = InstanceIdentity(instance_id="i-0abc", private_ip="10.1.2.3", zone="us-west-2b")
    assert await client.identity() == expected
    assert await client.identity() == expected  # the token is kept
    puts = [(m, p, h) for m, p, h in imds.requests if m == "PUT"]
    assert len(puts) == 1 and puts[0][2] == {TTL: "21600"}
    gets = [h for m, _, h in imds.requests if m == "GET"]
    assert len(gets) == 6
    assert all(h.get(TOKEN) for h in gets)
    assert len({h[TOKEN] for h in gets}) == 1


async def test_client_renews_a_token_before_it_expires(imds: FakeImds, clock: FakeClock) -> None:
    client = InstanceMetadataClient(imds.url, ttl=300, clock=clock)
    assert await client.get("instance-id") == "i-0abc"
    await clock.advance(239)  # still a minute left: kept
    assert await client.get("instance-id") == "i-0abc"
    await clock.advance(2)  # less than the margin left: renewed before use
    assert await client.get("instance-id") == "i-0abc"
    assert [m for m, _, _ in imds.requests] == ["PUT", "GET", "GET", "PUT", "GET"]


async def test_client_renews_a_refused_token_once(imds: FakeImds, clock: FakeClock) -> None:
    client = InstanceMetadataClient(imds.url, clock=clock)
    assert await client.get("local-ipv4") == "10.1.2.3"
    imds.revoke_all()  # e.g. the instance was stopped and started again
    assert await client.get("local-ipv4") == "10.1.2.3"
    assert [m for m, _, _ in imds.requests] == ["PUT", "GET", "GET", "PUT", "GET"]


async def test_client_missing_path_is_an_error(imds: FakeImds, clock: FakeClock) -> None:
    with pytest.raises(ProviderError) as info:
        await InstanceMetadataClient(imds.url, clock=clock).get("nothing-here")
    assert type(info.value) is ProviderError  # a retry will not make it appear
    assert info.value.code == "InstanceMetadataError"
    assert "GET nothing-here: HTTP 404" in str(info.value)


async def test_client_server_error_is_retryable(clock: FakeClock) -> None:
    async def issue(request: web.Request) -> web.Response:
        return web.Response(text="t")

    async def fail(request: web.Request) -> web.Response:
        return web.Response(status=500, text="Internal Server Error")

    app = web.Application()
    app.router.add_put("/latest/api/token", issue)
    app.router.add_get("/latest/meta-data/{path:.*}", fail)
    runner, url = await serve(app)
    try:
        with pytest.raises(RetryableError) as info:
            await InstanceMetadataClient(url, clock=clock).get("instance-id")
    finally:
        await runner.cleanup()
    assert info.value.code == "InstanceMetadataError"
    assert "HTTP 500" in str(info.value)


async def test_client_without_a_service_is_unavailable(clock: FakeClock) -> None:
    fake = FakeImds()
    url = await fake.start()
    await fake.stop()  # nothing listens there any more
    with pytest.raises(RetryableError) as info:
        await InstanceMetadataClient(url, timeout=5, clock=clock).identity()
    assert info.value.code == "InstanceMetadataUnavailable"
    assert url in str(info.value)


async def test_client_gives_up_after_its_timeout(clock: FakeClock) -> None:
    """A service that accepts and does not answer: the request ends at the timeout."""
    release = asyncio.Event()  # set once the client has given up

    async def hang(request: web.Request) -> web.Response:
        await release.wait()
        return web.Response(text="late")

    app = web.Application()
    app.router.add_put("/latest/api/token", hang)
    runner, url = await serve(app)
    try:
        client = InstanceMetadataClient(url, timeout=0.2, clock=clock)
        with pytest.raises(RetryableError) as info:
            await client.get("instance-id")
    finally:
        release.set()
        await runner.cleanup()
    assert info.value.code == "InstanceMetadataUnavailable"
    assert "within 0.2s" in str(info.value)


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [({"endpoint": "169.254.169.254"}, "http://"), ({"ttl": 0}, "1..21600")],
    ids=["no-scheme", "ttl"],
)
def test_client_checks_its_settings(kwargs: dict[str, Any], message: str) -> None:
    with pytest.raises(ValueError, match=message):
        InstanceMetadataClient(**{"endpoint": "http://127.0.0.1:1", **kwargs})
