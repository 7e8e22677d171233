"""Metrics: the real /metrics text after some passes, checked by promtool, values from state."""

from __future__ import annotations

import shutil
import subprocess
from typing import TYPE_CHECKING, Any

import pytest
from shoal.daemon.metrics import ShoalMetrics

if TYPE_CHECKING:
    from loop_harness import Harness

EXPECTED = {
    "shoal_nodes": "gauge",
    "shoal_jobs_queued": "gauge",
    "shoal_jobs_running": "gauge",
    "shoal_jobs_unschedulable": "gauge",
    "shoal_jobs_waiting_for_limit": "gauge",
    "shoal_target_nodes": "gauge",
    "shoal_scale_ups_total": "counter",
    "shoal_scale_downs_total": "counter",
    "shoal_scale_up_failures_total": "counter",
    "shoal_offerings_in_backoff": "gauge",
    "shoal_provider_call_duration_seconds": "histogram",
    "shoal_provider_errors_total": "counter",
    "shoal_pass_duration_seconds": "histogram",
    "shoal_passes_total": "counter",
    "shoal_last_successful_pass_timestamp_seconds": "gauge",
    "shoal_estimated_cost_dollars_per_hour": "gauge",
}


async def busy_cluster(h: Harness) -> None:
    """Some history: launches, a capacity failure, unschedulable jobs, a skipped pass."""
    h.set_demand(h.jobs(8))
    await h.pass_()
    await h.clock.advance(60)
    await h.pass_()
    h.provider.fail_next("DescribeInstances", RuntimeError("listing broke"))
    await h.pass_()
    h.provider.set_capacity("c5.xlarge", 2)
    demand = h.jobs(12)
    huge = h.jobs(1, cores=999)
    h.set_demand(type(demand)(queued=demand.queued + huge.queued))
    await h.pass_()


def metric_types(text: str) -> dict[str, str]:
    out = {}
    for line in text.splitlines():
        if line.startswith("# TYPE "):
            _, _, name, kind = line.split()
            out[name] = kind
    return out


async def test_every_dashboard_metric_is_exported_with_its_type(harness: Harness) -> None:
    await busy_cluster(harness)
    types = metric_types(harness.metrics.render().decode())
    for name, kind in EXPECTED.items():
        base = name.removesuffix("_total") if kind == "counter" else name
        assert types.get(base) == kind or types.get(name) == kind, name
    assert all(name.startswith("shoal_") for name in types)


async def test_promtool_check_metrics_is_clean(harness: Harness) -> None:
    promtool = shutil.which("promtool")
    if promtool is None:
        pytest.skip("promtool not installed (Debian package 'prometheus'; `make tools`)")
    await busy_cluster(harness)
    text = harness.metrics.render()
    result = subprocess.run(
        [promtool, "check", "metrics"], input=text, capture_output=True, timeout=30
    )
    assert result.returncode == 0, result.stdout.decode() + result.stderr.decode()
    assert result.stdout.strip() == b"" and result.stderr.strip() == b""


async def test_values_reflect_the_state(harness: Harness) -> None:
    h = harness
    await busy_cluster(h)

    def v(name: str, **labels: Any) -> float:
        return h.sample(name, **labels)

    assert v("shoal_nodes", node_type="c5.xlarge", state="ready") == 2
    assert v("shoal_nodes", node_type="c5.xlarge", state="booting") == 0
    assert v("shoal_jobs_queued") == 13
    assert v("shoal_jobs_running") == 0
    assert v("shoal_jobs_unschedulable", reason="cores") == 1  # the 999-core job
    assert v("shoal_jobs_waiting_for_limit", reason="max-nodes") == 0
    assert v("shoal_target_nodes", node_type="c5.xlarge") >= 2
    assert v("shoal_scale_ups_total", node_type="c5.xlarge") == 2
    assert v("shoal_scale_up_failures_total", node_type="c5.xlarge", reason="capacity") == 1
    assert v("shoal_offerings_in_backoff") == 1
    assert v("shoal_passes_total", outcome="ok") == 3
    assert v("shoal_passes_total", outcome="skipped") == 1
    assert v("shoal_pass_duration_seconds_count") == 4
    assert v("shoal_provider_call_duration_seconds_count", operation="addNodes") == 2
    assert v("shoal_provider_errors_total", operation="getProvisionedWorkers", code="RuntimeError")
    assert v("shoal_last_successful_pass_timestamp_seconds") == h.clock.now()
    assert v("shoal_estimated_cost_dollars_per_hour") > 0


def test_each_daemon_has_its_own_registry() -> None:
    a, b = ShoalMetrics(), ShoalMetrics()
    a.scale_ups.labels(node_type="x").inc()
    assert b.registry.get_sample_value("shoal_scale_ups_total", {"node_type": "x"}) is None


async def test_jobs_held_by_a_limit_wait_and_only_jobs_that_never_fit_are_unschedulable(
    harness_factory: Any,
) -> None:
    """A full queue is not an outage: jobs beyond a type's max or the cost ceiling wait
    (shoal_jobs_waiting_for_limit); only jobs no node type can hold are unschedulable, the
    series the shipped alert watches."""
    h = await harness_factory(node_types=[{"type": "c5.xlarge", "max": 2}])
    demand = h.jobs(30)  # 1 core, 2 GiB each: far more than two c5.xlarge hold
    huge = h.jobs(3, memory=512 * 1024**3)
    h.set_demand(type(demand)(queued=demand.queued + huge.queued))
    await h.pass_()
    waiting = h.sample("shoal_jobs_waiting_for_limit", reason="max-nodes")
    assert 0 < waiting < 30
    assert h.sample("shoal_jobs_unschedulable", reason="memory") == 3
    unschedulable = {
        line.split("{")[1].split("}")[0]: float(line.rsplit(" ", 1)[1])
        for line in h.metrics.render().decode().splitlines()
        if line.startswith("shoal_jobs_unschedulable{")
    }
    assert unschedulable == {'reason="memory"': 3.0}
    # the huge jobs leave the queue: their series goes, nothing is left to alert on
    h.set_demand(demand)
    await h.pass_()
    assert "shoal_jobs_unschedulable{" not in h.metrics.render().decode()
    assert h.sample("shoal_jobs_waiting_for_limit", reason="max-nodes") == waiting


async def test_jobs_held_by_the_cost_ceiling_wait(harness_factory: Any) -> None:
    h = await harness_factory(scaler={"cost_ceiling_per_hour": 0.2})  # one c5.xlarge
    h.set_demand(h.jobs(30))
    await h.pass_()
    assert h.sample("shoal_jobs_waiting_for_limit", reason="cost-ceiling") > 0
    assert "shoal_jobs_unschedulable{" not in h.metrics.render().decode()


def test_a_gauge_set_every_pass_keeps_its_series_and_drops_the_gone_ones() -> None:
    """Every pass sets shoal_nodes, the targets and the backoff anew: a series that stays is
    the same child (not cleared and built again each pass), one that went is removed."""
    m = ShoalMetrics()
    m.set_nodes({("c5.large", "ready"): 2, ("gone.large", "ready"): 1}, ["c5.large"])
    ready = m.nodes.labels(node_type="c5.large", state="ready")
    m.set_nodes({("c5.large", "ready"): 3}, ["c5.large"])
    assert m.nodes.labels(node_type="c5.large", state="ready") is ready
    assert ready._value.get() == 3
    assert (
        m.registry.get_sample_value("shoal_nodes", {"node_type": "gone.large", "state": "ready"})
        is None
    )
    assert (
        m.registry.get_sample_value("shoal_nodes", {"node_type": "c5.large", "state": "booting"})
        == 0
    )
    m.set_targets({"c5.large": 2})
    target = m.target_nodes.labels(node_type="c5.large")
    m.set_targets({"c5.large": 1})
    assert m.target_nodes.labels(node_type="c5.large") is target
    m.set_targets({})
    assert m.registry.get_sample_value("shoal_target_nodes", {"node_type": "c5.large"}) is None


def test_the_same_unschedulable_tuple_again_is_not_split_again_and_the_gauges_stay_right(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    from shoal.scaler.model import Unschedulable
    from shoal.scaler.shape import Shape

    wide = Unschedulable(Shape(60, 2**30, 1, 0, False), 5, ("max-nodes",), node_count=64)
    huge = Unschedulable(Shape(60, 2**40, 1, 0, False), 2, ("memory",))
    m = ShoalMetrics()
    first, second = (wide, huge), (wide,)
    m.set_unschedulable(first)
    splits = []
    real = m._set_exactly
    monkeypatch.setattr(m, "_set_exactly", lambda *a: splits.append(a) or real(*a))
    m.set_unschedulable(first)  # the planner's tuple, handed again while nothing changed
    assert splits == []
    m.set_unschedulable(second)
    assert m.registry.get_sample_value("shoal_jobs_unschedulable", {"reason": "memory"}) is None
    m.set_unschedulable(first)
    waiting = m.registry.get_sample_value("shoal_jobs_waiting_for_limit", {"reason": "max-nodes"})
    assert waiting == 5
    assert m.registry.get_sample_value("shoal_jobs_unschedulable", {"reason": "memory"}) == 2
