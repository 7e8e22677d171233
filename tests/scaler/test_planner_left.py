"""Cost packing: the queued jobs the packer leaves beyond every type's max (``Packing.left``).

They are served by free live room of types in backoff that fit them, then by types that can
still grow within their max (as the planner counts them); the rest wait
"max-nodes", counted in the raw need of every type that can launch and fits them (so
smoothing heads each to its max). Each test of a defect fails on the planner before this
change; the tests after "what a first attempt broke" pass on it, and guard what an earlier
attempt at this change broke (an extra launch, a type in backoff not taking back its
draining nodes, a type's target below its max while jobs it holds wait).
"""

from __future__ import annotations

from dataclasses import replace

import pytest
from builders import (
    NOW,
    backed_off,
    job,
    launched,
    node,
    node_type,
    policy,
    queued,
    running,
    snapshot,
    unsched,
)
from recorded import case
from shoal.scaler.model import NodeState, PlannerState
from shoal.scaler.planner import REASON_MAX_NODES, plan, usable_shape

EMPTY = PlannerState()
MAX = (REASON_MAX_NODES,)


def test_left_jobs_run_on_idle_nodes_of_a_type_in_backoff():
    # a (one node, its max) holds one 4-core job; b is in backoff, its idle node holds two
    a = node_type("a", cores=4, mem_gib=9, disk_gib=20, price=0.2, max_nodes=1)
    b = node_type("b", cores=8, mem_gib=17, disk_gib=36, price=0.4, max_nodes=3)
    four = job(4, 2)
    snap = snapshot([node("a1", a), node("b1", b)], [queued(four, 3)], unavailable=backed_off(b))
    p = plan(snap, policy(a, b, packing="cost"), EMPTY, NOW)
    assert unsched(p) == {}
    assert launched(p) == {}
    assert dict(p.targets) == {"a": 1, "b": 1}


def test_left_jobs_do_not_push_out_the_jobs_the_packer_fitted():
    # two nodes at most: eight 1-core jobs or two 4-core ones; the packer serves the eight
    a = node_type("a", cores=4, mem_gib=9, disk_gib=20, price=0.2, max_nodes=2)
    small, large = job(1, 1), job(4, 2)
    snap = snapshot(queue=[queued(small, 8), queued(large, 2)])
    p = plan(snap, policy(a, packing="cost"), EMPTY, NOW)
    assert unsched(p) == {(large, MAX): 2}
    assert launched(p) == {"a": 2}


def test_the_capped_types_raw_need_counts_the_jobs_left_so_smoothing_heads_to_its_max():
    # b (cheap, max 2) takes four jobs, a (dear, Toil's first, max 1) one: five are left.
    # With betaInertia 0.5 from 0, b's raw need of only its own 2 nodes smoothed to 1.
    a = node_type("a", cores=4, mem_gib=9, disk_gib=20, price=1.0, max_nodes=1)
    b = node_type("b", cores=8, mem_gib=17, disk_gib=36, price=0.2, max_nodes=2)
    four = job(4, 2)
    pol = policy(a, b, packing="cost", beta_inertia=0.5)
    p = plan(snapshot(queue=[queued(four, 10)]), pol, EMPTY, NOW)
    assert unsched(p) == {(four, MAX): 5}
    assert dict(p.targets) == {"a": 1, "b": 2}
    b_launch = next(la for la in p.launches if la.node_type == "b")
    # its own 4 and the 5 left, which every type that fits them counts: the message says so
    assert "9 queued jobs need 5 x b (5 of them wait past every max);" in b_launch.message


def test_a_type_the_recount_leaves_below_its_max_takes_left_jobs():
    # The packer's limit for b is its max less the nodes its running job needs alone (1),
    # so it puts two 3-core jobs on one new b; but they fit beside the running 1-core job
    # on the live node, so b needs 1 node for all that, below its max of 2.
    a = node_type("a", cores=4, mem_gib=9, disk_gib=20, price=0.2, max_nodes=1)
    b = node_type("b", cores=8, mem_gib=17, disk_gib=36, price=0.3, max_nodes=2)
    three = job(3, 2)
    snap = snapshot(
        [node("b1", b)], [queued(three, 8)], [running(job(1, 1, wall=660), "b1", elapsed=60)]
    )
    p = plan(snap, policy(a, b, packing="cost"), EMPTY, NOW)
    assert dict(p.targets) == {"a": 1, "b": 2}
    assert unsched(p) == {(three, MAX): 3}  # a holds 1, b's two nodes 4 (beside the 1-core job)


@pytest.mark.parametrize("solver", [0.0, 0.2])
def test_289_fills_the_capped_type_to_its_max(solver):
    # recorded seed 289 (bench/README.md): c5.2xlarge stopped at 19 of 20 while 141 jobs
    # that fit it waited (138 with the solver on)
    snap, pol, state, now = case(289)
    p = plan(snap, replace(pol, solver_time_limit=solver), state, now)
    assert p.targets["c5.2xlarge"] == 20
    assert sum(u.count for u in p.unschedulable if u.reasons == MAX) < 138


def test_the_dearer_of_two_types_of_one_shape_takes_the_spill_of_the_cheaper():
    cheap = node_type("a", cores=4, mem_gib=9, disk_gib=20, price=0.2, max_nodes=2)
    dear = node_type("a2", cores=4, mem_gib=9, disk_gib=20, price=0.3, max_nodes=3)
    four = job(4, 2)
    p = plan(snapshot(queue=[queued(four, 6)]), policy(cheap, dear, packing="cost"), EMPTY, NOW)
    assert launched(p) == {"a": 2, "a2": 3}
    assert unsched(p) == {(four, MAX): 1}


@pytest.mark.parametrize("case_", ["twins", "recount", "backoff"])
def test_a_second_pass_with_the_launches_booting_launches_nothing(case_):
    # the step stays stable: the nodes launched (or taken back) for left jobs, booting, hold
    # them on the next pass, and nothing more is launched
    a = node_type("a", cores=4, mem_gib=9, disk_gib=20, price=0.2, max_nodes=2)
    a2 = node_type("a2", cores=4, mem_gib=9, disk_gib=20, price=0.3, max_nodes=3)
    b = node_type("b", cores=8, mem_gib=17, disk_gib=36, price=0.3, max_nodes=2)
    three, four = job(3, 2), job(4, 2)
    nodes, runs, off = [], [], None
    if case_ == "twins":
        types, queue = (a, a2), [queued(four, 6)]
    elif case_ == "recount":
        types, queue = (a, b), [queued(three, 8)]
        nodes, runs = [node("b1", b)], [running(job(1, 1, wall=660), "b1", elapsed=60)]
    else:
        types, queue = (a, b), [queued(four, 5)]
        nodes = [node("a1", a), node("b1", b), node("b2", b, NodeState.DRAINING)]
        off = backed_off(b)
    pol = policy(*types, packing="cost")
    first = plan(snapshot(nodes, queue, runs, off), pol, EMPTY, NOW)
    assert first.launches or first.undrains
    taken = {x.node_id for x in first.undrains}
    booted = [n if n.id not in taken else replace(n, state=NodeState.READY) for n in nodes]
    by_name = {t.name: t for t in types}
    for la in first.launches:
        t = by_name[la.node_type]
        booted += [node(f"{t.name}-new{i}", t, NodeState.BOOTING, age=30) for i in range(la.count)]
    again = plan(snapshot(booted, queue, runs, off), pol, first.state, NOW)
    assert again.launches == () and again.undrains == ()
    assert dict(again.targets) == dict(first.targets)
    assert unsched(again) == unsched(first)


# -- what a first attempt broke -------------------------------------------------------------


def test_a_type_in_backoff_taking_left_jobs_launches_nothing_more():
    # b is in backoff with one idle node and one draining: the left jobs its idle node
    # holds run there; nothing is launched for them anywhere, and no more than before
    a = node_type("a", cores=4, mem_gib=9, disk_gib=20, price=0.2, max_nodes=1)
    b = node_type("b", cores=8, mem_gib=17, disk_gib=36, price=0.4, max_nodes=3)
    c = node_type("c", cores=16, mem_gib=33, disk_gib=68, price=0.9, max_nodes=0)
    four = job(4, 2)
    nodes = [node("a1", a), node("b1", b), node("b2", b, NodeState.DRAINING)]
    snap = snapshot(nodes, [queued(four, 3)], unavailable=backed_off(b))
    p = plan(snap, policy(a, b, c, packing="cost"), EMPTY, NOW)
    assert p.launches == ()
    assert p.undrains == ()
    assert p.targets["b"] == 1


def test_a_type_in_backoff_takes_back_its_draining_nodes_for_its_own_jobs_beyond_max():
    # b (Toil's first for these 8-core jobs, in backoff) has 1 live and 1 draining node; its
    # jobs beyond what they hold still count in its raw need, so the draining one comes back
    b = node_type("b", cores=8, mem_gib=17, disk_gib=36, price=0.4, max_nodes=2)
    c = node_type("c", cores=16, mem_gib=33, disk_gib=68, price=0.9, max_nodes=1)
    eight = job(8, 4)
    nodes = [node("b1", b), node("b2", b, NodeState.DRAINING), node("c1", c)]
    snap = snapshot(nodes, [queued(eight, 6)], unavailable=backed_off(b))
    p = plan(snap, policy(b, c, packing="cost"), EMPTY, NOW)
    assert [a.node_id for a in p.undrains] == ["b2"]
    assert p.targets["b"] == 2


# recorded.case seeds with cost packing: on main each of the first seven left a type below
# its max (at 19 of 20, say, in 289) while jobs it could hold waited; 1602 with the solver
# did not, and fell to 37 of 40 when the largest prefix ``_serve`` finds was taken once
# (the count is not monotone in the jobs); 89 and 245 guard the other two ways an
# attempt went wrong (below)
UNDER_MAX = [(38, 0.2), (175, 0.2), (286, 0.2), (887, 0.2), (1438, 0.2), (1848, 0.2)]


@pytest.mark.parametrize(("seed", "solver"), [*UNDER_MAX, (1602, 0.0), (1602, 0.2)])
def test_a_type_is_not_left_below_its_max_while_jobs_it_holds_wait(seed, solver):
    # Without inertia a type that can launch (not in backoff, no cost ceiling) is at its
    # max whenever a job that fits it waits "max-nodes" (draining nodes count toward it).
    snap, pol, state, now = case(seed)
    pol = replace(
        pol, packing="cost", solver_time_limit=solver, beta_inertia=0.0, cost_ceiling_per_hour=None
    )
    p = plan(snap, pol, state, now)
    blocked = {t.name for t in pol.node_types if any(o in snap.unavailable for o in t.offerings())}
    for t in pol.node_types:
        usable = usable_shape(t, pol)
        fits = [u for u in p.unschedulable if u.reasons == MAX and not u.shape.fits_in(usable)]
        if not fits or t.name in blocked:
            continue
        mine = [n for n in snap.nodes if n.node_type == t.name]
        drained = sum(1 for n in mine if n.state is NodeState.DRAINING)
        undrained = sum(1 for a in p.undrains if a.node_type == t.name)
        assert p.targets[t.name] + drained - undrained >= t.max_nodes, t.name


def test_a_type_whose_count_is_at_its_max_still_takes_jobs_that_fit_beside():
    # recorded seed 89: a spot type above its max; its 3 queued jobs fit its nodes beside the
    # running ones without a node more (a gate "need below the max" left one waiting)
    p = plan(*case(89))
    assert not [u for u in p.unschedulable if u.reasons == MAX]


def test_a_types_own_jobs_past_its_max_stay_in_its_raw_need():
    # recorded seed 245 (betaInertia 0.1): m5.4xlarge's own jobs need 50 nodes, max 40; in
    # its raw need they keep it at 40 (without them: raw 40, smoothed to 36)
    p = plan(*case(245))
    assert p.targets["m5.4xlarge"] == 40


# -- review10: what the review found --------------------------------------------------------


def test_586_a_second_pass_with_the_launches_booting_launches_nothing():
    # recorded seed 586 in cost packing, no inertia: the first pass launches 11 c5.xlarge (and
    # takes one back), and 17 c5.xlarge hold their 181 jobs. On the second, the same queue
    # with those nodes booting, the idle step splits the jobs otherwise (r5, in backoff, and
    # c5's booting room), and c5's count of its 172 jobs is 18 but 24 with one 1-core job
    # more (the mixed heuristic in ``_need``): the grow step stops at 18 of 20 with 5 jobs
    # left, they wait "max-nodes", and in c5's raw need (24) they lift its target to its max:
    # 3 more launched for jobs that 17 nodes held a pass before (the third pass: none wait).
    # Fixed (leftjobs3): a type that can launch takes such jobs only in the grow step, within
    # its reach, which booting nodes do not change; it still ends at 20 with 5 waiting, from
    # the first pass on (the count: 18 nodes for its 172 jobs, 24 for one 1-core job more).
    snap, pol, state, now = case(586)
    pol = replace(pol, packing="cost", solver_time_limit=0.0, beta_inertia=0.0)
    first = plan(snap, pol, state, now)
    assert first.launches
    gone = {a.node_id for a in first.terminations}
    taken = {a.node_id for a in first.undrains}
    nodes = [n for n in snap.nodes if n.id not in gone]
    nodes = [replace(n, state=NodeState.READY) if n.id in taken else n for n in nodes]
    by_name = {t.name: t for t in pol.node_types}
    for la in first.launches:
        t = by_name[la.node_type]
        nodes += [
            node(f"{t.name}-new{i}", t, NodeState.BOOTING, age=0, now=now) for i in range(la.count)
        ]
    again = plan(replace(snap, nodes=tuple(nodes)), pol, first.state, now + 10)
    assert again.launches == () and again.undrains == ()
    assert dict(again.targets) == dict(first.targets)
    assert unsched(again) == unsched(first)


def test_jobs_past_every_max_that_a_type_held_by_the_cost_ceiling_fits_wait_cost_ceiling():
    # recorded seed 110's case made small: a (max 2) holds 2 of the 3 jobs; the third is past
    # every max; but the $0.2/h ceiling holds a at 1 of 2 nodes: the ceiling is the limit
    # the jobs meet first (a larger max runs none of them), so all wait "cost-ceiling"
    a = node_type("a", cores=4, mem_gib=9, disk_gib=20, price=0.2, max_nodes=2)
    four = job(4, 2)
    pol = policy(a, packing="cost", cost_ceiling_per_hour=0.2)
    p = plan(snapshot(queue=[queued(four, 3)]), pol, EMPTY, NOW)
    assert launched(p) == {"a": 1}
    assert unsched(p) == {(four, ("cost-ceiling",)): 2}


def test_each_launch_message_says_how_many_of_its_queued_jobs_wait_past_every_max():
    # review10: three types of max 1 and ten 4-core jobs; a holds 1, b 2, c 4 and 3 wait.
    # Each type counts the 3 in its raw need, so each message counts them: it says so
    # (before: 4 + 5 + 7 = 16 "queued" jobs for a queue of 10).
    a = node_type("a", cores=4, mem_gib=9, disk_gib=20, price=0.2, max_nodes=1)
    b = node_type("b", cores=8, mem_gib=17, disk_gib=36, price=0.3, max_nodes=1)
    c = node_type("c", cores=16, mem_gib=33, disk_gib=68, price=0.9, max_nodes=1)
    four = job(4, 2)
    p = plan(snapshot(queue=[queued(four, 10)]), policy(a, b, c, packing="cost"), EMPTY, NOW)
    assert unsched(p) == {(four, MAX): 3}
    said = {la.node_type: la.message.split(";")[0] for la in p.launches}
    assert said == {
        "a": "4 queued jobs need 4 x a (3 of them wait past every max)",
        "b": "5 queued jobs need 3 x b (3 of them wait past every max)",
        "c": "7 queued jobs need 2 x c (3 of them wait past every max)",
    }


# -- review11: what the review of the fixes found -------------------------------------------


def test_jobs_past_every_max_a_larger_max_of_an_uncut_type_would_run_are_not_cost_ceiling():
    # review11: a (cheap, max 1) holds one 4-core job, b (dear, max 1) four, one is past every
    # max. The $0.6/h ceiling cuts b to 0 (it gives way first), so its four wait
    # "cost-ceiling"; but the one past every max fits a, which the ceiling does not cut:
    # with a's max at 6 all six run for $0.60/h, within the same ceiling. A larger max runs
    # it, so it waits "max-nodes" (3bce7de says "cost-ceiling", as if no max could help).
    a = node_type("a", cores=4, mem_gib=9, disk_gib=20, price=0.1, max_nodes=1)
    b = node_type("b", cores=16, mem_gib=33, disk_gib=68, price=1.0, max_nodes=1)
    four = job(4, 2)
    pol = policy(a, b, packing="cost", cost_ceiling_per_hour=0.6)
    roomier = policy(replace(a, max_nodes=6), b, packing="cost", cost_ceiling_per_hour=0.6)
    assert unsched(plan(snapshot(queue=[queued(four, 6)]), roomier, EMPTY, NOW)) == {}
    p = plan(snapshot(queue=[queued(four, 6)]), pol, EMPTY, NOW)
    assert launched(p) == {"a": 1}
    assert unsched(p) == {(four, ("cost-ceiling",)): 4, (four, MAX): 1}


def test_a_launch_message_does_not_say_jobs_wait_past_every_max_that_wait_cost_ceiling():
    # review11: the case of test_jobs_past_every_max_that_a_type_held_by_the_cost_ceiling_...:
    # the plan reports both jobs that do not run "cost-ceiling" (3bce7de), yet a's launch
    # message says one of its queued jobs waits past every max (3661698), and counts 2
    # queued jobs for a raw need of 3 nodes of one job each (the one the ceiling cut is gone
    # from the count, the one past every max is still in it)
    a = node_type("a", cores=4, mem_gib=9, disk_gib=20, price=0.2, max_nodes=2)
    four = job(4, 2)
    pol = policy(a, packing="cost", cost_ceiling_per_hour=0.2)
    p = plan(snapshot(queue=[queued(four, 3)]), pol, EMPTY, NOW)
    assert unsched(p) == {(four, ("cost-ceiling",)): 2}
    (la,) = p.launches
    assert "past every max" not in la.message
