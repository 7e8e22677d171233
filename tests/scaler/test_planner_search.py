"""``_need`` and ``_serve``'s search for how many queued jobs fit under a cap pack no more
than they must.

Count packing's need is the max of the merged packing (running and queued jobs together)
and the pinned one (running jobs first, at 0) less what the pin adds for the running jobs
alone (two more packings, >= 0). So those two are run only when the pinned count is over
the merged one. The search asks only whether a prefix of the queue needs more than the
cap, so once the merged count is over it the pinned packing cannot change the answer and
is not run (``_need``'s ``cap``). The answers, and so every plan, are the same: below the
cap ``_need`` gives the need itself.
"""

from __future__ import annotations

from builders import GiB, policy
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from shoal.scaler import planner
from shoal.scaler.binpack import binpack
from shoal.scaler.planner import _need, _serve, _TypeDemand
from shoal.scaler.shape import Shape
from test_planner_floor import JOBS, NODES

NODE = Shape(3600, 8 * GiB, 4, 20 * GiB, False)


def long_job(cores: float) -> Shape:
    return Shape(7200, 1 * GiB, cores, 1 * GiB, False)


def recorder(monkeypatch) -> list[tuple[dict[Shape, int], dict[Shape, int]]]:
    """Make the planner's ``binpack`` note (jobs, pinned) of every packing it runs."""
    packed: list[tuple[dict[Shape, int], dict[Shape, int]]] = []
    real = planner.binpack

    def recording(jobs, node_shapes, target_time=3600, prices=None, pinned=None):
        packed.append((dict(jobs), dict(pinned or {})))
        return real(jobs, node_shapes, target_time=target_time, prices=prices, pinned=pinned)

    monkeypatch.setattr(planner, "binpack", recording)
    planner.NEEDS.clear()
    return packed


def test_running_jobs_are_packed_alone_only_when_the_pin_adds_nodes(monkeypatch) -> None:
    packed = recorder(monkeypatch)
    running, queued = {long_job(1): 1}, {long_job(1): 2}
    assert _need(running, queued.items(), NODE, policy()) == 1
    # merged, then pinned: one node each, so what the pin adds alone cannot count
    assert packed == [({long_job(1): 3}, {}), (queued, running)]
    # Chaos seed 5797's case: merged, the queued job goes first and the running one after
    # it, by the 15-min target (one node); pinned, the queued job cannot start by then.
    node = Shape(3600, 16 * GiB, 2, 20 * GiB, False)
    held, waiting = Shape(1454, 2.5 * GiB, 2, 1 * GiB, False), Shape(800, 10 * GiB, 1, GiB, False)
    packed.clear()
    assert _need({held: 1}, [(waiting, 1)], node, policy(target_time=900)) == 2
    assert [(sum(jobs.values()), sum(pins.values())) for jobs, pins in packed] == [
        (2, 0),  # merged: 1 node
        (1, 1),  # pinned: 2 nodes, over the merged count, so the running job alone:
        (0, 1),
        (1, 0),
    ]


def test_a_prefix_over_the_cap_merged_is_not_packed_pinned(monkeypatch) -> None:
    """One 3-core job running and ten 2.5-core ones queued on 4-core nodes: one job a node.
    The floor (cores running at the target) lets the search pack 3 queued jobs under a cap
    of 3 nodes; merged they need 4, over the cap, so their pinned packing is not run (nor
    that of the whole queue, 11 nodes merged)."""
    packed = recorder(monkeypatch)
    running, queued = {long_job(3): 1}, {long_job(2.5): 10}
    d = _TypeDemand(running=running, queued=queued)
    served, overflow, need = _serve(d, NODE, 3, policy())
    assert (served, overflow, need) == ({long_job(2.5): 2}, {long_job(2.5): 8}, 3)
    merged = {tuple(sorted(jobs.items())): binpack(jobs, [NODE]).counts[NODE] for jobs, _ in packed}
    pinned = [jobs for jobs, held in packed if held and jobs]
    assert pinned, "the prefix that fits is packed pinned"
    for jobs in pinned:  # every pinned packing is of jobs whose merged packing fit the cap
        together = dict(jobs)
        for shape, count in running.items():
            together[shape] = together.get(shape, 0) + count
        assert merged[tuple(sorted(together.items()))] <= 3
    # the 3- and the 11-job prefixes were packed merged, over the cap
    assert {sum(jobs.values()) for jobs, held in packed if not held} >= {4, 11}


@settings(
    max_examples=300, deadline=None, database=None, suppress_health_check=[HealthCheck.too_slow]
)
@given(
    node=NODES,
    target=st.sampled_from([0, 600, 3600]),
    queued=st.dictionaries(JOBS, st.sampled_from([1, 2, 3, 7, 40]), min_size=1, max_size=6),
    running=st.dictionaries(JOBS, st.just(1), max_size=6),
    cap=st.integers(0, 12),
    packing=st.sampled_from(["count", "auto"]),
)
def test_need_under_a_cap_answers_as_the_need(node, target, queued, running, cap, packing):
    """Count packing's need is max(merged, pinned - max(0, what the pin adds for the running
    jobs alone)), however few packings ``_need`` runs for it. With ``cap``: the need itself
    when it is at most the cap, over the cap exactly when the need is; so ``_serve`` takes
    the same steps and returns the same need."""
    queued = {job: n for job, n in queued.items() if not job.fits_in(node)}
    running = {job: n for job, n in running.items() if not job.fits_in(node)}
    p = policy(target_time=target, packing=packing)
    exact = _need(running, queued.items(), node, p)
    asked = _need(running, queued.items(), node, p, cap=cap)
    if packing == "count" and (running or queued):

        def count(jobs: dict[Shape, int], pinned: dict[Shape, int]) -> int:
            return binpack(jobs, [node], target, pinned=pinned).counts[node]

        everything = dict(queued)
        for job, n in running.items():
            everything[job] = everything.get(job, 0) + n
        need = count(everything, {})
        if running and queued:
            model = count({}, running) - count(running, {})
            need = max(need, count(queued, running) - max(0, model))
        assert exact == need
    assert (asked <= cap) == (exact <= cap)
    if exact <= cap:
        assert asked == exact
