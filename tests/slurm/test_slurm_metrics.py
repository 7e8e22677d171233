"""The Slurm integration registers its own collectors beside the core metrics."""

from __future__ import annotations

from shoal.daemon.metrics import ShoalMetrics
from shoal.daemon.slurm.cleanup import RepairKind
from shoal.daemon.slurm.metrics import SlurmMetrics
from shoal.daemon.slurm.power import REQUEST_KINDS


def families(metrics: ShoalMetrics) -> set[str]:
    text = metrics.render().decode()
    return {line.split()[2] for line in text.splitlines() if line.startswith("# TYPE ")}


def test_slurm_collectors_live_on_the_daemons_registry_every_kind_at_zero() -> None:
    core = ShoalMetrics()
    assert not any(name.startswith("shoal_slurm") for name in families(core))
    slurm = SlurmMetrics.on(core.registry)
    assert SlurmMetrics.on(core.registry) is slurm  # a second integration: the same ones
    slurm.slurm_requests.labels(kind="resume").inc(2)
    value = core.registry.get_sample_value
    assert value("shoal_slurm_requests_total", {"kind": "resume"}) == 2
    for kind in REQUEST_KINDS[1:]:
        assert value("shoal_slurm_requests_total", {"kind": kind}) == 0
    for repair in RepairKind:  # every repair kind has its series from the start
        assert value("shoal_slurm_cleanups_total", {"kind": repair.value}) == 0
    for command in ("squeue", "sinfo", "scontrol"):
        assert value("shoal_slurm_read_failures_total", {"command": command}) == 0
    assert value("shoal_slurm_spool_quarantined_total", {"reason": "unsigned"}) == 0


def test_a_dropped_registry_is_freed_with_its_slurm_collectors() -> None:
    """``SlurmMetrics.on`` keeps no registry alive: each restart in a chaos run builds a
    registry, and the leaked ones made every later seed slower."""
    import gc
    import weakref

    from prometheus_client import CollectorRegistry

    registry = CollectorRegistry()
    metrics = SlurmMetrics.on(registry)
    assert SlurmMetrics.on(registry) is metrics
    gone = weakref.ref(registry)
    del registry, metrics
    gc.collect()
    assert gone() is None
