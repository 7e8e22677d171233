"""Slurm's names and fixed values in one place: the output formats shoal asks for, the job
reasons and states the demand reads, the drain reason that marks a drain as shoal's, and the
instance tags a Slurm worker is launched with.

The tag names are defined in ``providers.workers`` and re-exported here: a provider reads
them from a launch request or writes them into a worker's user data (``providers.aws``,
``providers.instance_setup``, ``providers.local``), and providers never import the daemon.
To a provider they are plain instance tags; what they mean to Slurm is this package's.
Stdlib only (besides those names), so any Slurm module may import it.
"""

from __future__ import annotations

from shoal.providers.workers import (
    SHOAL_FEATURE,
    TAG_SLURM_FEATURES,
    TAG_SLURM_NODE,
    TAG_SLURM_RESOURCES,
)

__all__ = [
    "CAPACITY_REASONS",
    "DRAIN_REASON",
    "HELD_REASONS",
    "HOLDING_STATES",
    "NOT_DRAINED",
    "RESETTABLE_REASONS",
    "RESUME_TIMEOUT_REASON",
    "SEP",
    "SHOAL_FEATURE",
    "SINFO_FIELDS",
    "SQUEUE_FIELDS",
    "TAG_SLURM_FEATURES",
    "TAG_SLURM_NODE",
    "TAG_SLURM_RESOURCES",
]

# --- formats -----------------------------------------------------------------------------
# fixed --Format (-O) field lists, tab-separated, the one free-text field (the reason) last;
# every field exists from Slurm 21.08 to 25.x (see daemon.slurm.parse for why not -o)

SEP = "\t"
SQUEUE_FIELDS = (
    "jobid",
    "arrayjobid",
    "arraytaskid",
    "state",
    "prioritylong",
    "restartcnt",
    "numcpus",
    "mincpus",
    "minmemory",
    "numnodes",
    "timelimit",
    "timeused",
    "partition",
    "nodelist",
    "tres-alloc",
    "reason",  # free text: last
)
SINFO_FIELDS = (
    "nodelist",
    "statecomplete",
    "cpusstate",
    "features",
    "nodeaddr",
    "reason",  # free text: last
)


# --- jobs ----------------------------------------------------------------------------------

HELD_REASONS = frozenset({"JobHeldUser", "JobHeldAdmin"})
# reasons of a PENDING job that more nodes would satisfy (matched on the text before a comma:
# "ReqNodeNotAvail, UnavailableNodes:cloud3"). Not: Dependency, BeginTime (but see
# slurm_demand for requeued jobs), limits, held jobs, "None" (not yet looked at).
CAPACITY_REASONS = frozenset(
    {"Resources", "Priority", "PartitionConfig", "NodeDown", "ReqNodeNotAvail"}
)
# states of a job that holds its nodes
HOLDING_STATES = frozenset(
    {"RUNNING", "CONFIGURING", "COMPLETING", "SUSPENDED", "STOPPED", "RESIZING", "SIGNALING"}
)

# --- nodes ---------------------------------------------------------------------------------

DRAIN_REASON = "shoal"  # the clean-up loop deletes dynamic nodes drained with it
NOT_DRAINED = "Invalid node state specified"  # scontrol's answer to resuming a node not drained
RESUME_TIMEOUT_REASON = "ResumeTimeout reached"  # slurmctld's, for a node never registered
RESETTABLE_REASONS = (RESUME_TIMEOUT_REASON, "shoal")  # reasons a failed resume leaves
