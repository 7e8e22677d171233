"""shoal's binpack against Toil 9.6's binPacking on hundreds of random inputs.

Toil runs in its own virtualenv (tests/toil_oracle.py); the test skips, naming the
oracle, when that venv is missing. Each node shape is chosen as Toil chooses it, so
the counts are comparable input by input.
"""

from __future__ import annotations

import random

import pytest
from shoal.scaler.binpack import binpack
from shoal.scaler.shape import Shape
from toil_oracle import require_toil, toil_binpack

GiB = 1024**3
CASES = 400


def random_cases(seed: int) -> list[dict]:
    rng = random.Random(seed)
    cases = []
    for _ in range(CASES):
        nodes = {
            (
                3600,
                rng.choice([2, 4, 8, 16, 32]) * GiB,
                rng.choice([1, 2, 4, 8, 16]),
                rng.choice([10, 50, 100]) * GiB,
                rng.random() < 0.3,
            )
            for _ in range(rng.randint(1, 4))
        }
        jobs = []
        for _ in range(rng.randint(1, 6)):
            shape = (
                rng.choice([0, 60, 600, 1800, 3600, 7200, 20000]),  # zero-length and long jobs
                rng.choice([0, 0.5, 1, 2, 4, 8, 20]) * GiB,
                rng.choice([0, 1, 2, 4, 8]),  # zero-resource jobs
                rng.choice([0, 1, 5, 20]) * GiB,
                rng.random() < 0.4,
            )
            jobs += [shape] * rng.randint(1, 40)
        cases.append(
            {"nodes": sorted(nodes), "jobs": jobs, "target_time": rng.choice([0, 600, 3600, 7200])}
        )
    return cases


@pytest.mark.toil
@pytest.mark.parametrize("seed", [1, 2, 3])
def test_node_counts_against_toil(seed: int) -> None:
    require_toil()
    cases = random_cases(seed)
    toil = toil_binpack(cases)
    ours_total = toil_total = 0
    worse, better, equal = [], 0, 0
    for case, theirs in zip(cases, toil, strict=True):
        packing = binpack(
            [Shape(*j) for j in case["jobs"]],
            [Shape(*n) for n in case["nodes"]],
            case["target_time"],
        )
        assert len(packing.unschedulable) == theirs["unschedulable"]
        ours_total += packing.total
        toil_total += theirs["total"]
        if packing.total > theirs["total"]:
            worse.append((packing.total, theirs["total"], case))
        elif packing.total < theirs["total"]:
            better += 1
        else:
            equal += 1
    print(
        f"seed {seed}: {CASES} inputs, shoal {ours_total} nodes vs Toil {toil_total}; "
        f"fewer on {better}, equal on {equal}, more on {len(worse)}"
    )
    assert ours_total <= toil_total
    assert not worse, worse[:3]
