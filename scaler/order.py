"""Slurm node weights that fill the nodes kept longest first (``slurm.node_weights: kept``).

Slurm starts a job on the lowest-``Weight`` nodes that fit it. ``shoal slurm-conf`` ranks
the node types by price (``rank`` 1 the cheapest), and with ``price`` every node of a type
weighs its rank. With ``kept``, each of shoal's nodes weighs, within its type's rank, less
the longer its running jobs are expected to hold it (the planner's own estimate,
``planner.running_remaining``): a new job goes to a node that is kept anyway, not to one
about to empty, and the node about to empty can be removed once it does. An idle node
weighs the most of its rank (a new node waits behind the busy ones that have room).

Weights are whole numbers in steps of ``STEP`` seconds of remaining time, ``SPAN`` to a
rank, so a node's weight changes a few times an hour at most, not at every read.
"""

from __future__ import annotations

from collections.abc import Iterable

from shoal.scaler.planner import running_remaining

__all__ = ["SPAN", "STEP", "idle_weight", "kept_weight", "remaining"]

SPAN = 1000  # weights a price rank spans
STEP = 900.0  # seconds of remaining time that weigh the same


def idle_weight(rank: int) -> int:
    """The weight of a node of price rank ``rank`` that runs nothing: the last of its rank."""
    return rank * SPAN + SPAN - 1


def kept_weight(rank: int, left: float | None) -> int:
    """The weight of a node of price rank ``rank`` whose jobs are expected to hold it
    ``left`` more seconds (None: it runs nothing). Lower the longer it is kept; always below
    ``idle_weight(rank)`` and above ``idle_weight(rank - 1)``."""
    if left is None:
        return idle_weight(rank)
    return rank * SPAN + SPAN - 2 - min(SPAN - 2, int(max(left, 0.0) // STEP))


def remaining(jobs: Iterable[tuple[float, float]]) -> float | None:
    """How long a node's running jobs, each ``(expected wall time, elapsed)``, hold it: the
    longest of them, as the planner estimates it; None when it runs none."""
    return max((running_remaining(wall, elapsed) for wall, elapsed in jobs), default=None)
