"""Until scaler/binpack.py lands, a first-fit-decreasing stand-in of its exact contract.

Removed once the real ``scaler.binpack`` exists (then this file does nothing).
"""

from __future__ import annotations

import importlib.util
import sys
import types
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field

from scaler.shape import Shape


@dataclass(frozen=True)
class _Packing:
    counts: dict[Shape, int] = field(default_factory=dict)
    unschedulable: dict[Shape, list[str]] = field(default_factory=dict)


def _binpack(
    jobs: Iterable[Shape] | Mapping[Shape, int],
    node_shapes: Iterable[Shape],
    target_time: float = 3600,
    prices: Mapping[Shape, float] | None = None,
) -> _Packing:
    expanded = (
        [s for s, c in jobs.items() for _ in range(c)] if isinstance(jobs, Mapping) else list(jobs)
    )
    nodes = sorted(node_shapes)
    counts = {n: 0 for n in nodes}
    bins: dict[Shape, list[list[float]]] = {n: [] for n in nodes}
    unschedulable: dict[Shape, list[str]] = {}
    for job in sorted(expanded, reverse=True):
        node = next((n for n in nodes if not job.fits_in(n)), None)
        if node is None:
            unschedulable[job] = job.fits_in(nodes[-1]) if nodes else ["no node shapes"]
            continue
        for free in bins[node]:
            if job.memory <= free[0] and job.cores <= free[1] and job.disk <= free[2]:
                free[0] -= job.memory
                free[1] -= job.cores
                free[2] -= job.disk
                break
        else:
            bins[node].append(
                [node.memory - job.memory, node.cores - job.cores, node.disk - job.disk]
            )
            counts[node] += 1
    return _Packing(counts, unschedulable)


if importlib.util.find_spec("scaler.binpack") is None:
    _module = types.ModuleType("scaler.binpack")
    _module.binpack = _binpack  # type: ignore[attr-defined]
    _module.Packing = _Packing  # type: ignore[attr-defined]
    sys.modules["scaler.binpack"] = _module
