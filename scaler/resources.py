"""What the packers share: a job's or node's resources as a tuple, and how many fit."""

from __future__ import annotations

import math

from shoal.scaler.shape import Shape

__all__ = ["EPS", "Res", "columns", "covering", "res", "sequential"]

EPS = 1e-9  # float slack in every resource and time comparison
Res = tuple[float, float, float]  # memory, cores, disk


def res(s: Shape) -> Res:
    return (s.memory, s.cores, s.disk)


def columns(room: Res, need: Res) -> float:
    """How many jobs needing ``need`` fit side by side in ``room`` (inf for a zero job)."""
    k: float = math.inf
    memory, cores, disk = need
    if memory > 0:
        k = float(math.floor(room[0] / memory + EPS))
    if cores > 0:
        c = float(math.floor(room[1] / cores + EPS))
        if c < k:
            k = c
    if disk > 0:
        d = float(math.floor(room[2] / disk + EPS))
        if d < k:
            k = d
    return k


def sequential(start: float, until: float, duration: float, target_time: float) -> float:
    """Jobs of ``duration`` one column runs from ``start``: each starts by the target and
    ends by ``until`` (inf for zero-length jobs)."""
    if start > target_time + EPS:
        return 0
    if duration <= 0:
        return math.inf
    count = math.floor((target_time - start) / duration + EPS) + 1
    if until != math.inf:
        count = min(count, math.floor((until - start) / duration + EPS))
    return count


def covering(length: float, interval: float) -> int:
    """Whole ``interval`` s (> 0) that hold ``length``, at least one, with the slack every
    fit takes: ``length`` fits ``k`` intervals when it ends at most ``EPS`` past them (as
    ``booking.per_column`` and the timelines check). A tolerance relative to the interval
    instead booked a job ``EPS`` to ``EPS * interval`` past a boundary one interval short,
    where it then fit no booking (review9: binpack divided by zero)."""
    return max(1, math.ceil((length - EPS) / interval))
