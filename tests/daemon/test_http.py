"""The HTTP API on a real loopback listener (port 0) over a real controller."""

from __future__ import annotations

import io
import json
import os
from collections.abc import AsyncIterator
from pathlib import Path
from typing import TYPE_CHECKING, Any

import aiohttp
import pytest
from shoal.daemon.demand import MAX_BODY_BYTES, DemandReports
from shoal.daemon.http import (
    BearerToken,
    InsecureListenError,
    check_listen,
    make_app,
    start_http,
)

if TYPE_CHECKING:
    from loop_harness import Harness

TOKEN = "s3cret-token"
BODY = {"jobs": [{"cores": 1, "memory": "1GiB", "wall_time": "10m", "count": 4}]}


@pytest.fixture
async def api(harness: Harness) -> AsyncIterator[tuple[Harness, str]]:
    runner, port = await start_http(make_app(harness.controller), "127.0.0.1", 0)
    try:
        yield harness, f"http://127.0.0.1:{port}"
    finally:
        await runner.cleanup()


@pytest.fixture
async def secured(harness: Harness) -> AsyncIterator[tuple[Harness, str]]:
    runner, port = await start_http(make_app(harness.controller, token=TOKEN), "127.0.0.1", 0)
    try:
        yield harness, f"http://127.0.0.1:{port}"
    finally:
        await runner.cleanup()


async def request(method: str, url: str, **kwargs: Any) -> tuple[int, Any, str]:
    async with aiohttp.ClientSession() as session, session.request(method, url, **kwargs) as r:
        text = await r.text()
        try:
            body = json.loads(text)
        except json.JSONDecodeError:
            body = None
        return r.status, body, text


async def test_put_demand_then_status_shows_it_and_the_plan(api: tuple[Harness, str]) -> None:
    h, base = api
    status, body, _ = await request("PUT", f"{base}/v1/demand", json=BODY)
    assert status == 200 and body["queued_jobs"] == 4
    assert sum(q.count for q in h.controller.demand.queued) == 4
    await h.pass_()
    status, body, _ = await request("GET", f"{base}/v1/status")
    assert status == 200
    assert body["demand"]["queued_jobs"] == 4
    (launch,) = body["last_plan"]["launches"]
    assert launch["node_type"] == "c5.xlarge" and launch["count"] == 1
    assert "queued" in launch["reason"]
    assert body["last_pass"]["outcome"] == "ok"
    assert body["backoff"] == [] and body["unschedulable"] == []
    await h.pass_()  # the launched node is listed from the next pass on
    _, body, _ = await request("GET", f"{base}/v1/status")
    assert body["node_counts"] == {"c5.xlarge": {"booting": 1}}
    (node,) = body["nodes"]["c5.xlarge"]["booting"]
    assert node["instance_type"] == "c5.xlarge" and node["static"] is False
    assert body["last_plan"]["launches"] == []


async def test_a_pushed_wall_time_a_hair_past_whole_hours_is_planned(
    api: tuple[Harness, str],
) -> None:
    # review9: a float wall time 1e-8 s past 10 hours was booked for 10 hours, where it did
    # not fit: every pass's plan raised (ZeroDivisionError) while the job was queued
    h, base = api
    body = {"jobs": [{"cores": 1, "memory": "1GiB", "wall_time": 36000.00000001, "count": 2}]}
    status, _, _ = await request("PUT", f"{base}/v1/demand", json=body)
    assert status == 200
    await h.pass_()
    _, body, _ = await request("GET", f"{base}/v1/status")
    assert body["last_pass"]["outcome"] == "ok"
    (launch,) = body["last_plan"]["launches"]
    assert launch["count"] == 1


async def test_status_reports_unschedulable_jobs(api: tuple[Harness, str]) -> None:
    h, base = api
    huge = {"jobs": [{"cores": 512, "memory": "1GiB", "count": 2}]}
    assert (await request("PUT", f"{base}/v1/demand", json=huge))[0] == 200
    await h.pass_()
    _, body, _ = await request("GET", f"{base}/v1/status")
    (item,) = body["unschedulable"]
    assert item["count"] == 2 and "cores" in item["reasons"]


@pytest.mark.parametrize(
    ("payload", "needle"),
    [
        (b"{not json", "not valid JSON"),
        (b"[1, 2]", "JSON object"),
        (b'{"jobs": [{"cores": -1, "memory": "1GiB"}]}', "jobs[0].cores"),
        (b'{"jobs": [{"cores": 1, "memory": "lots"}]}', "jobs[0].memory"),
        (b'{"jobz": []}', "unknown field"),
        (b"", "empty"),
    ],
    ids=["syntax", "array", "negative-cores", "bad-size", "unknown-key", "empty"],
)
async def test_malformed_demand_is_400_and_changes_nothing(
    api: tuple[Harness, str], payload: bytes, needle: str
) -> None:
    h, base = api
    assert (await request("PUT", f"{base}/v1/demand", json=BODY))[0] == 200
    before = h.controller.demand
    status, body, text = await request(
        "PUT", f"{base}/v1/demand", data=payload, headers={"Content-Type": "application/json"}
    )
    assert status == 400, text
    assert needle in text
    assert "error" in body
    assert h.controller.demand is before


async def test_body_too_large_is_413(api: tuple[Harness, str]) -> None:
    h, base = api
    before = h.controller.demand
    status, body, _ = await request(
        "PUT", f"{base}/v1/demand", data=io.BytesIO(b" " * (MAX_BODY_BYTES + 1))
    )
    assert status == 413
    assert "larger" in body["error"]
    assert h.controller.demand is before


async def test_token_is_required_when_configured(secured: tuple[Harness, str]) -> None:
    h, base = secured
    url = f"{base}/v1/demand"
    assert (await request("PUT", url, json=BODY))[0] == 401
    wrong = {"Authorization": "Bearer nope"}
    assert (await request("PUT", url, json=BODY, headers=wrong))[0] == 401
    basic = {"Authorization": f"Basic {TOKEN}"}
    assert (await request("PUT", url, json=BODY, headers=basic))[0] == 401
    assert h.controller.demand.queued == ()
    good = {"Authorization": f"Bearer {TOKEN}"}
    assert (await request("PUT", url, json=BODY, headers=good))[0] == 200
    assert sum(q.count for q in h.controller.demand.queued) == 4
    # reads stay open on loopback
    assert (await request("GET", f"{base}/v1/status"))[0] == 200


async def test_metrics_endpoint(api: tuple[Harness, str]) -> None:
    h, base = api
    await h.pass_()
    status, _, text = await request("GET", f"{base}/metrics")
    assert status == 200
    assert 'shoal_passes_total{outcome="ok"} 1.0' in text


async def test_readyz_after_first_reconcile(api: tuple[Harness, str]) -> None:
    h, base = api
    assert (await request("GET", f"{base}/readyz"))[0] == 503
    await h.controller.reconcile()
    assert (await request("GET", f"{base}/readyz"))[0] == 200
    h.controller.stop()
    assert (await request("GET", f"{base}/readyz"))[0] == 503


async def test_healthz_fails_without_a_pass_for_three_intervals(api: tuple[Harness, str]) -> None:
    h, base = api
    assert (await request("GET", f"{base}/healthz"))[0] == 200
    await h.clock.advance(91)
    status, body, _ = await request("GET", f"{base}/healthz")
    assert status == 503 and body["healthy"] is False
    await h.pass_()
    assert (await request("GET", f"{base}/healthz"))[0] == 200
    await h.clock.advance(89)
    assert (await request("GET", f"{base}/healthz"))[0] == 200


def test_refuses_to_listen_beyond_loopback_without_a_token() -> None:
    with pytest.raises(InsecureListenError, match="token"):
        check_listen("0.0.0.0", None)
    check_listen("0.0.0.0", TOKEN)
    check_listen("127.0.0.1", None)
    check_listen("::1", None)


# -- the observation contract ------------------------------------------------------------------


@pytest.fixture
async def contract(harness: Harness) -> AsyncIterator[tuple[Harness, str]]:
    app = make_app(harness.controller, reports=DemandReports(running=True), max_age=300.0)
    runner, port = await start_http(app, "127.0.0.1", 0)
    try:
        yield harness, f"http://127.0.0.1:{port}"
    finally:
        await runner.cleanup()


async def test_a_source_that_reports_running_jobs_must_send_them(
    contract: tuple[Harness, str],
) -> None:
    h, base = contract
    status, body, _ = await request("PUT", f"{base}/v1/demand", json=BODY)
    assert status == 400
    assert 'send "running": [] when none run' in body["details"][0]
    assert h.controller.demand_at is None  # refused: nothing changed
    status, _, _ = await request("PUT", f"{base}/v1/demand", json={**BODY, "running": []})
    assert status == 200


async def test_pushed_demand_goes_stale_and_then_nothing_is_launched_or_removed(
    contract: tuple[Harness, str],
) -> None:
    h, base = contract
    await h.controller.reconcile()
    busy_body = {**BODY, "running": []}
    assert (await request("PUT", f"{base}/v1/demand", json=busy_body))[0] == 200
    await h.clock.advance(300)
    assert (await request("GET", f"{base}/readyz"))[0] == 200  # 300 s old: still fresh
    await h.clock.advance(1)
    status, body, _ = await request("GET", f"{base}/readyz")
    assert (status, body["reason"]) == (503, "demand is 301s old (max_age 300s)")
    record = await h.pass_()
    assert record.launched == 0 and record.reason == "demand is 301s old (max_age 300s)"
    assert h.launch_calls() == []
    assert h.sample("shoal_demand_age_seconds") == 301
    # pushed again (same jobs): fresh, and the pass launches
    assert (await request("PUT", f"{base}/v1/demand", json=busy_body))[0] == 200
    assert (await request("GET", f"{base}/readyz"))[0] == 200
    record = await h.pass_()
    assert record.launched == 1 and record.reason == ""


def test_a_token_file_rotated_as_the_daemon_starts_is_taken_at_the_next_request(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The file is replaced between the start's read of the token and its look at the file:
    the next request reads it again. Before, the start stat'ed the file after reading it,
    kept the new file's key with the old token, and refused the new token until the next
    rotation (every hook call a 401)."""
    path = tmp_path / "token"
    path.write_text("first\n")
    real = Path.read_text

    def read_then_rotated(self: Path, *args: Any, **kwargs: Any) -> str:
        text = real(self, *args, **kwargs)
        if self == path and text.startswith("first"):
            (tmp_path / "token.new").write_text("second\n")
            os.replace(tmp_path / "token.new", path)
        return text

    monkeypatch.setattr(Path, "read_text", read_then_rotated)
    token = BearerToken(path)
    monkeypatch.undo()
    assert token.current() == "second"


async def test_the_token_file_is_read_again_when_it_changes_never_emptied(
    harness: Harness, tmp_path: Path
) -> None:
    """``BearerToken``: a rotated file is taken at the next request; a file emptied or gone
    for a moment (a rotation half done) keeps the last token: the API never opens."""
    path = tmp_path / "token"
    path.write_text("one\n")
    runner, port = await start_http(
        make_app(harness.controller, token=BearerToken(path)), "127.0.0.1", 0
    )
    url = f"http://127.0.0.1:{port}/v1/demand"

    async def put(token: str | None) -> int:
        headers = {"Authorization": f"Bearer {token}"} if token else {}
        status, _, _ = await request("PUT", url, json=BODY, headers=headers)
        return status

    try:
        assert (await put("one"), await put("two"), await put(None)) == (200, 401, 401)
        path.write_text("two\n")
        assert (await put("two"), await put("one")) == (200, 401)
        path.write_text("")
        assert (await put("two"), await put(None)) == (200, 401)
        path.unlink()
        assert (await put("two"), await put(None)) == (200, 401)
        path.write_text("three\n")
        assert (await put("three"), await put("two")) == (200, 401)
        path.write_bytes(b"\xff\xfe four\n")  # not text (a binary written): kept, no 500
        assert (await put("three"), await put(None)) == (200, 401)
    finally:
        await runner.cleanup()
