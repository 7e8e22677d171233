from __future__ import annotations

import asyncio
import json
import os
from pathlib import Path
from typing import Any

import pytest
from shoal.daemon.demand import (
    DemandError,
    DemandUpdate,
    DemoDemandSource,
    FileDemandSource,
    parse_demand,
)
from shoal.runtime.testing import FakeClock
from shoal.scaler.model import Demand, GiB, QueuedJobs, RunningJob
from shoal.scaler.shape import Shape

JOB = {"cores": 1, "memory": "2GiB", "disk": "1GiB", "wall_time": "10m", "count": 100}


def test_good_body_exact_demand() -> None:
    body = {
        "jobs": [
            JOB,
            {**JOB, "count": 20},  # same shape: aggregated
            {"cores": 0.5, "memory": 1024, "preemptible": True},
        ],
        "running": [
            {
                "node": "w-1",
                "cores": 1,
                "memory": "2GiB",
                "disk": "1GiB",
                "wall_time": "10m",
                "elapsed": "3m",
            }
        ],
        "nodes": ["w-1", "w-2"],
    }
    update = parse_demand(json.dumps(body))
    small = Shape(600, 2 * GiB, 1, GiB, False)
    assert update == DemandUpdate(
        Demand(
            queued=(
                QueuedJobs(small, 120),
                QueuedJobs(Shape(3600, 1024, 0.5, 0, True), 1),
            ),
            running=(RunningJob(small, "w-1", 180.0),),
        ),
        frozenset({"w-1", "w-2"}),
    )


def test_node_count_makes_a_gang_with_per_node_resources() -> None:
    gang = {"cores": 12, "memory": "40GiB", "wall_time": "2h", "count": 2, "node_count": 4}
    update = parse_demand({"jobs": [gang, {**gang, "count": 1}, {**gang, "node_count": 1}]})
    shape = Shape(7200, 40 * GiB, 12, 0, False)
    # the same shape on 4 nodes and on 1 node are different demand; gangs add up
    assert update.demand.queued == (QueuedJobs(shape, 3, node_count=4), QueuedJobs(shape, 2))


def test_bytes_dict_and_empty_body() -> None:
    assert parse_demand(b'{"jobs": []}') == DemandUpdate(Demand(), None)
    assert parse_demand({}) == DemandUpdate(Demand(), None)
    update = parse_demand({"jobs": [{"cores": 2, "memory": 10, "wall_time": 5}]})
    assert update.demand.queued == (QueuedJobs(Shape(5, 10, 2, 0, False), 1),)
    assert parse_demand({"nodes": []}).joined_nodes == frozenset()


MALFORMED: list[tuple[str, Any, str]] = [
    ("empty", "", "body is empty"),
    ("not-json", "{jobs:", "not valid JSON"),
    ("list", "[1]", "must be a JSON object"),
    ("string", '"x"', "must be a JSON object"),
    ("nan", '{"jobs": [{"cores": NaN, "memory": 1}]}', "NaN is not a finite number"),
    ("infinity", '{"jobs": [{"cores": 1, "memory": Infinity}]}', "Infinity"),
    ("unknown-top", {"jobz": []}, "jobz: unknown field"),
    ("unknown-job-key", {"jobs": [{**JOB, "gpus": 1}]}, "jobs[0].gpus: unknown field"),
    ("negative-cores", {"jobs": [{**JOB, "cores": -1}]}, "jobs[0].cores: Input should be greater"),
    ("zero-cores", {"jobs": [{**JOB, "cores": 0}]}, "jobs[0].cores"),
    ("negative-memory", {"jobs": [{**JOB, "memory": -5}]}, "jobs[0].memory: -5 is negative"),
    ("bad-memory", {"jobs": [{**JOB, "memory": "lots"}]}, "jobs[0].memory: 'lots' is not a size"),
    ("bad-disk", {"jobs": [{**JOB, "disk": "1QB"}]}, "jobs[0].disk"),
    ("missing-memory", {"jobs": [{"cores": 1}]}, "jobs[0].memory: required field is missing"),
    ("count-zero", {"jobs": [{**JOB, "count": 0}]}, "jobs[0].count"),
    ("count-absurd", {"jobs": [{**JOB, "count": 10_000_001}]}, "10000001"),
    ("count-sum-absurd", {"jobs": [{**JOB, "count": 6_000_000}] * 2}, "exceed the limit"),
    ("count-float", {"jobs": [{**JOB, "count": 1.5}]}, "jobs[0].count"),
    (
        "node-count-zero",
        {"jobs": [{**JOB, "node_count": 0}]},
        "jobs[0].node_count: Input should be greater than or equal to 1 (got 0)",
    ),
    (
        "node-count-absurd",
        {"jobs": [{**JOB, "node_count": 10_001}]},
        "jobs[0].node_count: Input should be less than or equal to 10000 (got 10001)",
    ),
    ("node-count-float", {"jobs": [{**JOB, "node_count": 2.5}]}, "jobs[0].node_count"),
    ("node-count-string", {"jobs": [{**JOB, "node_count": "four"}]}, "jobs[0].node_count"),
    ("bad-wall-time", {"jobs": [{**JOB, "wall_time": "soon"}]}, "jobs[0].wall_time"),
    ("negative-wall-time", {"jobs": [{**JOB, "wall_time": -1}]}, "is negative"),
    ("preemptible-string", {"jobs": [{**JOB, "preemptible": "maybe"}]}, "jobs[0].preemptible"),
    ("jobs-not-list", {"jobs": {"cores": 1}}, "jobs"),
    ("running-no-node", {"running": [{"cores": 1, "memory": 1}]}, "running[0].node: required"),
    ("running-empty-node", {"running": [{"node": "", "cores": 1, "memory": 1}]}, "running[0].node"),
    (
        "running-bad-elapsed",
        {"running": [{"node": "a", "cores": 1, "memory": 1, "elapsed": "x"}]},
        "running[0].elapsed",
    ),
    (
        "running-count",
        {"running": [{"node": "a", "cores": 1, "memory": 1, "count": 2}]},
        "running[0].count: unknown field",
    ),
    ("nodes-not-strings", {"nodes": [1]}, "nodes[0]"),
    ("nodes-empty-name", {"nodes": [""]}, "nodes[0]"),
    ("not-utf8", b"\xff\xfe", "not UTF-8"),
    ("missing-cores", {"jobs": [{"memory": 1}]}, "jobs[0].cores: required field is missing"),
    ("word-cores", {"jobs": [{**JOB, "cores": "four"}]}, "jobs[0].cores: Input should be a valid"),
    ("second-job", {"jobs": [JOB, {**JOB, "cores": "x"}]}, "jobs[1].cores"),
    ("nodes-not-list", {"nodes": "w-1"}, "nodes: Input should be a valid tuple (got 'w-1')"),
]


@pytest.mark.parametrize(("body", "fragment"), [pytest.param(b, f, id=i) for i, b, f in MALFORMED])
def test_malformed_bodies(body: Any, fragment: str) -> None:
    with pytest.raises(DemandError) as info:
        parse_demand(body)
    assert info.value.messages
    assert any(fragment in m for m in info.value.messages), info.value.messages
    assert fragment in str(info.value)


def test_error_message_names_field_and_value() -> None:
    with pytest.raises(DemandError) as info:
        parse_demand({"jobs": [{**JOB, "cores": -3, "count": 0}]})
    assert info.value.messages == [
        "jobs[0].cores: Input should be greater than 0 (got -3)",
        "jobs[0].count: Input should be greater than or equal to 1 (got 0)",
    ]


def _write(path: Path, body: Any, mtime: int) -> None:
    path.write_text(body if isinstance(body, str) else json.dumps(body))
    os.utime(path, ns=(mtime, mtime))


def test_file_source_rereads_on_change_and_keeps_old_on_error(tmp_path: Path) -> None:
    path = tmp_path / "demand.json"
    source = FileDemandSource(path, FakeClock())
    assert source.check() is False and source.current() is None  # missing: nothing yet
    _write(path, {"jobs": [JOB]}, 1_000_000_000)
    assert source.check() is True
    first = source.current()
    assert first is not None and first.demand.queued[0].count == 100
    assert first.at == 1.0  # as old as the file (mtime 1e9 ns)
    assert source.check() is False  # unchanged stat: not re-read
    _write(path, {"jobs": [{**JOB, "count": 7}]}, 2_000_000_000)
    assert source.check() is True
    assert source.current().demand.queued[0].count == 7  # type: ignore[union-attr]
    kept = source.current()
    _write(path, '{"jobs": [{"cores": -1', 3_000_000_000)
    assert source.check() is False
    assert source.current() == kept
    assert source.last_error and "not valid JSON" in source.last_error
    _write(path, {"jobs": [{**JOB, "count": 0}]}, 4_000_000_000)
    assert source.check() is False and source.current() == kept
    assert "jobs[0].count" in (source.last_error or "")
    _write(path, {"jobs": []}, 5_000_000_000)
    assert source.check() is True and source.current() == DemandUpdate(Demand(), at=5.0)
    assert source.last_error is None


def test_file_source_yaml(tmp_path: Path) -> None:
    path = tmp_path / "demand.yaml"
    path.write_text("jobs:\n  - {cores: 2, memory: 4GiB, count: 3}\nnodes: [a]\n")
    source = FileDemandSource(path, FakeClock())
    assert source.check()
    update = source.current()
    assert update is not None and update.at == path.stat().st_mtime
    assert (update.demand, update.joined_nodes) == (
        Demand(queued=(QueuedJobs(Shape(3600, 4 * GiB, 2, 0, False), 3),)),
        frozenset({"a"}),
    )


async def test_file_source_updates_iterator(tmp_path: Path) -> None:
    path = tmp_path / "d.json"
    _write(path, {"jobs": [JOB]}, 1_000_000_000)
    clock = FakeClock()
    source = FileDemandSource(path, clock, poll_interval=1.0)
    updates = source.updates()
    first = await anext(updates)
    assert first.demand.queued[0].count == 100
    _write(path, {"jobs": [{**JOB, "count": 5}]}, 2_000_000_000)
    task = asyncio.ensure_future(anext(updates))
    await clock.settle()  # the iterator now sleeps on the clock
    await clock.advance(1.0)
    second = await task
    assert second.demand.queued[0].count == 5
    await updates.aclose()


async def test_demo_source_cycle() -> None:
    clock = FakeClock(start=1000.0)
    demo = DemoDemandSource(clock, period=300, burst=60, run=60, jobs=24)
    seen = []
    for t in range(0, 600, 10):
        if demo.check():
            seen.append((t, demo.phase()))
        await clock.advance(10)
    assert seen == [
        (0, "queued"),
        (60, "running"),
        (120, "idle"),
        (300, "queued"),
        (360, "running"),
        (420, "idle"),
    ]
    queued = demo.demand_at(1000.0).demand
    assert queued.queued == (QueuedJobs(demo.shape, 24),) and not queued.running
    running = demo.demand_at(1000.0 + 90).demand
    assert len(running.running) == 24 and running.running[0].elapsed == 30.0
    assert {r.node_id for r in running.running} == {f"demo-{i}" for i in range(24)}
    assert demo.demand_at(1000.0 + 200) == DemandUpdate(Demand())
    on_nodes = DemoDemandSource(clock, jobs=5, node_names=lambda: ["w-1", "w-2"])
    jobs = on_nodes.demand_at(on_nodes.start + 70).demand.running
    assert [j.node_id for j in jobs] == ["w-1", "w-2", "w-1", "w-2", "w-1"]
    with pytest.raises(ValueError, match="burst"):
        DemoDemandSource(clock, period=100, burst=60, run=60)
