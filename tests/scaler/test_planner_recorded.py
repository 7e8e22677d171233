"""The planner against the plans it made before its speed work, on 300 seeded snapshots.

``recorded.py`` builds each snapshot (many running jobs, each with its own remaining time)
and holds the plans the unoptimised planner made for them.

* Where every running job's remaining time is a whole number of minutes (even seeds, and
  snapshots without running jobs), the plan must be the same, message for message (its
  digest covers launches, undrains, drains, terminations, targets, unschedulable jobs,
  the new planner state and the cost).
* Elsewhere the planner now rounds remaining times up to whole minutes
  (``RUNNING_JOB_GRID``), a conservative approximation: the plan may differ, but never
  asks for less (no target lower, no fewer launches and undrains, no drain or
  termination the recorded plan did not make).
"""

from __future__ import annotations

import functools
import json

import pytest
from recorded import CASES, DATA, case, digest, on_minute_grid, summary
from shoal.scaler.model import Plan
from shoal.scaler.planner import plan

RECORDED = json.loads(DATA.read_text())


ON_GRID = [s for s in range(CASES) if on_minute_grid(case(s)[0])]
OFF_GRID = [s for s in range(CASES) if s not in ON_GRID]

# 272 was re-recorded on purpose (issue 17's review): c5.2xlarge (max 6) has 1 live node and
# 1 drained by someone else; the old plan launched 5, 7 instances for a max of 6. Every draining
# node now counts toward the max, so it launches 4 (test_272_counts_the_drained_node_toward_max).
# 17 were re-recorded on purpose (issue 17, chaos seed 5797): count packing pins running jobs
# at 0, so no queued job is planned ahead of one (35 69 73 93 98 105 135 157 160 174 202 216
# 229 236 253 278 282: two ask for more nodes, 98 and 160, the rest differ in estimates and
# messages). Off the grid they were recorded as the others were, with exact remaining times
# (RUNNING_JOB_GRID set to 1e-6, which gives 299 of the 300 old recordings without the pin).
# 7 cost-packing cases were re-recorded on purpose (issue 19, policy19c): queued jobs that fit in
# the room of nodes running jobs keep up anyway go there before the cheapest mix is bought
# (planner._onto_held). 175 launches 10 c5.xlarge, not 16, and 61 targets one spot node fewer;
# with fewer jobs to mix the heuristic packs the rest on one more cheap spot node in 244 and 286;
# 106, 116 and 272 differ in messages and estimates. 61 and 175 are off the grid, recorded as
# above (RUNNING_JOB_GRID 1e-6).
# 7 were re-recorded on purpose (issue 19, review of _onto_held): held room must be on a node
# kept up until the queued job ends (per node, not the type's longest job), add nothing to the
# type's _need, and not be behind a job past its estimate. 175 launches 16 c5.xlarge again, as
# before held room (its 1-hour jobs fitted room on nodes that free sooner); 297 targets one
# m5.4xlarge fewer (4 of its jobs were held behind jobs past their estimate) and 286 one spot
# node fewer; 4, 50, 106 and 272 differ in messages and estimates. 175 and 297 are off the grid,
# recorded as above (RUNNING_JOB_GRID 1e-6).
# 90 were re-recorded on purpose (issue 19, overrun): a running job past its estimate is taken
# to run as long again as it has overrun (planner.running_remaining), no longer a minute. About
# one running job in six here is past its estimate (elapsed up to 1.2 x its run time), by up to
# 8 h. 22 ask for more nodes (targets, launches or undrains: 1 3 25 35 62 65 97 98 100 116 184
# 204 213 220 231 249 254 264 276 278 288 297); 4 ask for one node of one type fewer (137 251 253
# 260: count packing of many running jobs is not monotone in their run times, a longer job books
# more billing intervals of its node, in which others then fit: checked on 137, 253, 260); the
# other 64 differ in messages and estimates. Recorded with
# ``tests/scaler/recorded.py --record SEED...`` (off the grid with RUNNING_JOB_GRID 1e-6).
# 19 were re-recorded on purpose (issue 19, maxoff): every cost case here has the solver off
# (solver_time_limit 0), and its heuristic now keeps to each type's max as the solver does,
# spilling to the next cheapest type that fits (at a max with nowhere to spill, booked to hold
# the most jobs) instead of putting every job on the cheapest and leaving the rest
# "max-nodes". 4 48 175 182 leave no job max-nodes now; 12 38 50 61 83 110 212 244 245 272 289
# 297 fewer (12: 276 -> 35, 289: 293 -> 141, 297: 3059 -> 2860); 286 six more (1314, the
# solver's plan 1304); 106 targets one more spot node (cost-ceiling waits 219 -> 168), 114
# differs in messages and estimates. With the solver on (10 s and 0.2 s of work), all 69 cost
# cases give the same plans as before, message for message.
# 24 were re-recorded on purpose (issue 19, leftjobs2): in cost packing the jobs past every
# max (the packer's ``left``, and what a type's own count does not hold within its max) go to
# idle live room of types in backoff, then to types still below their max as the
# planner counts them, and the rest wait "max-nodes" counted in the raw need of every type
# that can launch and fits them (planner._assign_by_cost; tests/scaler/test_planner_left.py).
# Types now reach their max while jobs they hold wait: 38 (c5.2xlarge 9 -> 10 of 10; waits
# 1315 -> 1297), 50 (r5.xlarge 9 -> 10; 220 -> 181), 61 (m5.4xlarge 18 -> 20, smoothing of a
# raw need that counts its waiting jobs; 13 wait either way), 244 (spot m5.4xlarge 8 -> 10;
# 140 -> 131), 286 (m5.4xlarge 7 -> 8, one drain fewer; max-nodes 1314 -> 1277, cost-ceiling
# 52 -> 62), 289 (c5.2xlarge 19 -> 20; 141 -> 93), 297 (one m5.4xlarge more; 2860 -> 2838).
# Same nodes, fewer jobs waiting: 12 (35 -> 34), 67 (81 -> 50), 106 (4 max-nodes -> 0), 114
# (22 -> 16), 121 (1470 -> 1457), 172 (27 -> 26), 212 (37 either way, 5 of them max-nodes ->
# cost-ceiling), 228 (225 -> 190), 245 (1088 -> 1087). Two wait more, the count (``_need``) not
# being monotone in the jobs, so ``_serve``'s largest prefix differs with the jobs offered: 83
# (1259 -> 1268: idle nodes of c5.xlarge, in backoff, hold 9 fewer); and 110 (1574 -> 1575;
# 32 cost-ceiling -> max-nodes: not the count's doing, as said here before (review10), but
# jobs the heuristic packer leaves past every max, reported "max-nodes" while the $3/h
# ceiling held m5.4xlarge at 2 of 40, where main's Toil order queued them on it). 111 158
# 159 221 272 274 differ in messages and estimates only (raw needs that count the waiting
# jobs that fit each type). 61 67 83 121 159 221 245 289 297 are off the grid, recorded as
# above (RUNNING_JOB_GRID 1e-6).
# 3 were re-recorded on purpose (issue 19, leftjobs3, review10): jobs past every max that fit
# a type the cost ceiling holds below its max wait "cost-ceiling", not "max-nodes" (a larger
# max runs none of them; planner._cost_ceiling). Same plans, reasons only: 110 (370
# max-nodes, 1205 cost-ceiling -> 1575 cost-ceiling), 212 (22 + 15 -> 37), 286 (1277 + 62
# -> 1339). Main reports the jobs beyond such a type's count at its max "max-nodes" (110:
# 337): all of these now say the ceiling.
# 17 were re-recorded on purpose (leftjobs3, review10): messages only. A launch message counts
# the jobs waiting past every max under every type that fits them, and now says how many of
# its queued jobs those are ("... need 4 x a (3 of them wait past every max)"): 12 38 50 61
# 67 83 110 111 114 158 159 221 244 245 272 289 297 (61 67 83 159 221 245 289 297 off the
# grid, recorded with RUNNING_JOB_GRID 1e-6 as before).
# 110 was re-recorded again (issue 19, review11): its launch message said "(370 of them wait
# past every max)" while the plan reports all 370 "cost-ceiling" (every type that fits them is
# cut by the $3/h ceiling); the message now names only jobs that wait for a max. The plan's
# summary (targets, launches, reasons) is the same.


@functools.cache
def planned(seed: int) -> Plan:
    """The plan for a seed, made once for the two tests that look at the off-grid ones."""
    return plan(*case(seed))


@pytest.mark.parametrize("seed", ON_GRID)
def test_same_plan_as_recorded(seed: int) -> None:
    p = plan(*case(seed))
    expected = RECORDED[str(seed)]
    assert summary(p) == {k: v for k, v in expected.items() if k != "digest"}
    assert digest(p) == expected["digest"]


def test_272_counts_the_drained_node_toward_max() -> None:
    snapshot, policy, _, _ = case(272)
    (c5,) = [t for t in policy.node_types if t.name == "c5.2xlarge"]
    nodes = [n for n in snapshot.nodes if n.node_type == "c5.2xlarge"]
    p = plan(*case(272))
    launched = sum(x.count for x in p.launches if x.node_type == "c5.2xlarge")
    # one live, one drained by someone else: 4 more make the max of 6 (the old plan made it 7)
    assert (launched, len(nodes) + launched) == (4, c5.max_nodes)


@pytest.mark.parametrize("seed", OFF_GRID)
def test_rounded_remaining_times_never_ask_for_less(seed: int) -> None:
    p = planned(seed)
    expected = RECORDED[str(seed)]
    if digest(p) == expected["digest"]:
        return
    now = summary(p)
    assert now["targets"].keys() == expected["targets"].keys()
    for name, target in expected["targets"].items():
        assert now["targets"][name] >= target, name
    adds = sum(now["launches"].values()) + len(now["undrains"])
    assert adds >= sum(expected["launches"].values()) + len(expected["undrains"])
    assert set(now["drains"]) <= set(expected["drains"])
    assert set(now["terminations"]) <= set(expected["terminations"])


def test_most_plans_off_the_grid_are_still_the_same() -> None:
    """Rounding to whole minutes rarely changes a decision: on all but a few snapshots the
    plan is the same, message for message."""
    same = sum(digest(planned(s)) == RECORDED[str(s)]["digest"] for s in OFF_GRID)
    assert same >= 0.9 * len(OFF_GRID)
