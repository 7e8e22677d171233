"""A fixed fleet replayed through the simulation's real scheduler (tests and bench/).

Stands in for the engine, which scales the fleet: ``nodes`` always-on nodes of shape
``usable`` from t = 0, the series sampled at every submit and finish."""

from __future__ import annotations

from shoal.daemon.simulate.cluster import Cluster
from shoal.daemon.simulate.report import CostLine, SeriesRecorder, VariantResult, WaitStats
from shoal.daemon.simulate.trace import Trace
from shoal.scaler.shape import Shape

__all__ = ["fixed_fleet"]


def fixed_fleet(trace: Trace, nodes: int, price: float, name: str, usable: Shape) -> VariantResult:
    """Replay ``trace`` on ``nodes`` always-on nodes of ``usable``, each at ``price`` an hour
    (reported as m5.4xlarge on-demand)."""
    cluster = Cluster([usable])
    recorder = SeriesRecorder()
    for i in range(nodes):
        cluster.node_joined(f"n{i}", usable, 0.0)

    def sample(t: float) -> None:
        cluster.advance(t)
        cost = nodes * price * t / 3600
        recorder.sample(t, nodes, 0, cluster.queued_count, cluster.running_count, cost)

    now = 0.0
    for job in trace:
        now = job.submit
        cluster.submit(job.index, job.shape, job.run_time, now)
        sample(now)
    while (at := cluster.next_finish()) is not None:
        now = at
        sample(now)
    stats = cluster.stats(now)
    hours = nodes * now / 3600
    return VariantResult(
        name=name,
        overrides=(("fleet", str(nodes)),),
        jobs=len(trace),
        jobs_started=stats.started,
        jobs_completed=stats.completed,
        jobs_never_started=stats.never_started,
        jobs_unschedulable=len(stats.unschedulable),
        cost=hours * price,
        node_hours=hours,
        by_type=(CostLine("m5.4xlarge", "on-demand", hours * price, hours),),
        utilisation=stats.utilisation,
        wait=WaitStats.of(stats.waits),
        launches=nodes,
        terminations=0,
        interruptions=stats.interruptions,
        cost_ceiling_hits=0,
        requeues=stats.requeues,
        simulated_seconds=now,
        series=recorder.build(),
        waits=stats.waits,
    )
