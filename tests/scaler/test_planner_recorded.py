"""The planner against the plans it made before its speed work, on 300 seeded snapshots.

``recorded.py`` builds each snapshot (many running jobs, each with its own remaining time)
and holds the plans the unoptimised planner made for them. Every plan must be the same,
message for message (its digest covers launches, undrains, drains, terminations, targets,
unschedulable jobs, the new planner state and the cost).
"""

from __future__ import annotations

import json

import pytest
from recorded import CASES, DATA, case, digest, on_minute_grid, summary
from shoal.scaler.planner import plan

RECORDED = json.loads(DATA.read_text())


def test_the_cases_cover_what_they_claim_to() -> None:
    """The set is as recorded, and holds what makes the planner slow: many running jobs,
    each with its own remaining time, on and off the minute grid."""
    assert sorted(RECORDED, key=int) == [str(s) for s in range(CASES)]
    busy = [case(s)[0] for s in range(0, CASES, 3)]
    assert sum(len(snap.demand.running) >= 60 for snap in busy) >= 20
    assert any(on_minute_grid(snap) for snap in busy if snap.demand.running)
    assert any(not on_minute_grid(snap) for snap in busy if snap.demand.running)


@pytest.mark.parametrize("seed", range(CASES))
def test_same_plan_as_recorded(seed: int) -> None:
    p = plan(*case(seed))
    expected = RECORDED[str(seed)]
    assert summary(p) == {k: v for k, v in expected.items() if k != "digest"}
    assert digest(p) == expected["digest"]
