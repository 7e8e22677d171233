"""The Slurm integration's own Prometheus collectors, on the registry it is given.

``daemon.metrics.ShoalMetrics`` holds the core metrics of every daemon; the Slurm side
registers these beside them on the same registry (``SlurmMetrics.on(registry)``), so
``GET /metrics`` serves both and the names stay ``shoal_slurm_*``. Each label set comes
from the module that owns it (the request kinds from ``power``, the repair kinds from
``cleanup``) and is exported at 0 from the start, so a rate over it has a series before
the first event. A daemon without Slurm exports none of them.
"""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter

__all__ = ["READ_COMMANDS", "SPOOL_QUARANTINE_REASONS", "SlurmMetrics"]

READ_COMMANDS = ("squeue", "sinfo", "scontrol")  # what the demand source runs
# why a spooled hook request was quarantined (daemon.slurm.spool's SpoolError.reason)
SPOOL_QUARANTINE_REASONS = (
    "not_a_file",
    "too_large",
    "malformed",
    "unsigned",
    "refused",
    "failing",
)


class SlurmMetrics:
    """Failed reads of Slurm's state, power-saving requests, clean-up repairs and
    quarantined spool files. ``SlurmMetrics()`` has a registry of its own (tests)."""

    @classmethod
    def on(cls, registry: CollectorRegistry) -> SlurmMetrics:
        """The collectors on ``registry``, registered the first time (a registry takes
        each name once)."""
        # kept on the registry itself: a WeakKeyDictionary's value (which holds the
        # registry) kept its key alive, and every registry and its collectors leaked
        found: SlurmMetrics | None = getattr(registry, "_shoal_slurm", None)
        if found is None:
            found = cls(registry)
            registry._shoal_slurm = found  # type: ignore[attr-defined]
        return found

    def __init__(self, registry: CollectorRegistry | None = None) -> None:
        # The owners import this module, so their label sets are looked up here, late.
        from shoal.daemon.slurm.cleanup import RepairKind
        from shoal.daemon.slurm.power import REQUEST_KINDS

        self.registry = r = registry or CollectorRegistry(auto_describe=True)
        self.slurm_read_failures = Counter(
            "shoal_slurm_read_failures",
            "Failed reads of Slurm's state (squeue, sinfo, scontrol show config): the demand "
            "is stale until the next good read, so nothing is launched or removed.",
            ["command"],
            registry=r,
        )
        self.slurm_requests = Counter(
            "shoal_slurm_requests",
            "Slurm nodes named by the power-saving hooks, by kind (resume, suspend, resume_fail).",
            ["kind"],
            registry=r,
        )
        self.slurm_cleanups = Counter(
            "shoal_slurm_cleanups",
            "Repairs by the Slurm clean-up loop, by kind (orphan instances, stuck or down nodes).",
            ["kind"],
            registry=r,
        )
        self.slurm_spool_quarantined = Counter(
            "shoal_slurm_spool_quarantined",
            "Files in the hooks' spool that could not be served, moved to <state_dir>/spool-bad, "
            f"by reason ({', '.join(SPOOL_QUARANTINE_REASONS)}).",
            ["reason"],
            registry=r,
        )
        self.slurm_weight_updates = Counter(
            "shoal_slurm_weight_updates",
            "Slurm node Weights shoal set (external mode), by result (set, failed): one per node.",
            ["result"],
            registry=r,
        )
        for result in ("set", "failed"):
            self.slurm_weight_updates.labels(result=result)
        for command in READ_COMMANDS:
            self.slurm_read_failures.labels(command=command)
        for kind in REQUEST_KINDS:
            self.slurm_requests.labels(kind=kind)
        for repair in RepairKind:
            self.slurm_cleanups.labels(kind=repair.value)
        for reason in SPOOL_QUARANTINE_REASONS:
            self.slurm_spool_quarantined.labels(reason=reason)
