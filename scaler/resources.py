"""What the packers share: a job's or node's resources as a tuple, and how many fit."""

from __future__ import annotations

import math

from scaler.shape import Shape

__all__ = ["EPS", "Res", "columns", "res"]

EPS = 1e-9  # float slack in every resource and time comparison
Res = tuple[float, float, float]  # memory, cores, disk


def res(s: Shape) -> Res:
    return (s.memory, s.cores, s.disk)


def columns(room: Res, need: Res) -> float:
    """How many jobs needing ``need`` fit side by side in ``room`` (inf for a zero job)."""
    k = math.inf
    for have, want in zip(room, need, strict=True):
        if want > 0:
            k = min(k, math.floor(have / want + EPS))
    return k
