"""When the loop wakes and what a pass lists: only changes that can change a plan wake a pass,
and one listing of the cloud is shared until it is too old or an action retires it."""

from __future__ import annotations

import asyncio
from typing import TYPE_CHECKING, Any

import pytest
from shoal.daemon.demand import DemandUpdate
from shoal.daemon.loop import WAKE_SLACK
from shoal.scaler.model import (
    CapacityType,
    Demand,
    Offering,
    PlannerState,
    QueuedJobs,
    RunningJob,
)
from shoal.scaler.shape import Shape
from waits import wait_for_pass

if TYPE_CHECKING:
    from loop_harness import Harness

GIB = 1024**3
SHAPE = Shape(3600, GIB, 1, GIB, False)


def polled(elapsed: float, *on: str, queued: int = 0) -> DemandUpdate:
    """What a polling source (squeue) reads: jobs on nodes ``on`` that started at the same
    time, ``elapsed`` seconds ago, and ``queued`` queued jobs."""
    return DemandUpdate(
        Demand(
            queued=(QueuedJobs(SHAPE, queued),) if queued else (),
            running=tuple(RunningJob(SHAPE, node, elapsed) for node in on),
        ),
        frozenset(on),
    )


def describes(h: Harness) -> int:
    return sum(1 for c in h.provider.calls if c.operation == "DescribeInstances")


async def wakes(h: Harness, update: DemandUpdate, passes: int) -> None:
    """``update`` wakes a pass: the loop's ``passes``-th comes after the debounce."""
    h.controller.set_demand(update)
    await h.settle()
    await h.clock.advance(0.5)  # the debounce
    await asyncio.wait_for(wait_for_pass(h.controller, passes), 1)
    await h.settle()


async def run_loop(h: Harness, first: DemandUpdate) -> asyncio.Task[None]:
    """The loop running, after the pass that ``first`` (a change) woke."""
    task = asyncio.create_task(h.controller.run())
    await wait_for_pass(h.controller, 1)
    await h.settle()  # waiting for the interval or a demand change
    await wakes(h, first, 2)
    return task


async def stop_loop(h: Harness, task: asyncio.Task[None]) -> None:
    h.controller.stop()
    await asyncio.wait_for(task, 1)


async def test_polls_that_only_move_elapsed_times_wake_no_pass(harness: Harness) -> None:
    h = harness
    task = await run_loop(h, polled(60, "w-1", "w-2"))
    listed = describes(h)
    for poll in range(1, 11):  # squeue every 2 s for 20 s: only the elapsed times move
        await h.clock.advance(2)
        h.controller.set_demand(polled(60 + 2 * poll, "w-1", "w-2"))
        await h.settle()
    await h.clock.advance(1)  # past any debounce
    assert h.controller.passes == 2
    assert describes(h) == listed  # and no listing of the cloud either
    # the demand is still the newest read: the next timer pass plans with it
    assert {r.elapsed for r in h.controller.demand.running} == {80}
    assert h.controller.demand_at == h.clock.now() - 1
    await h.clock.advance(9)  # the timer, 30 s after the last pass
    await asyncio.wait_for(wait_for_pass(h.controller, 3), 1)
    await stop_loop(h, task)


async def test_a_job_moving_to_another_node_wakes_a_pass(harness: Harness) -> None:
    h = harness
    task = await run_loop(h, polled(60, "w-1", "w-2"))
    await h.clock.advance(2)
    await wakes(h, polled(62, "w-1", "w-3"), 3)  # same count, another node
    await stop_loop(h, task)


async def test_a_queued_job_or_a_joined_node_wakes_a_pass(harness: Harness) -> None:
    h = harness
    task = await run_loop(h, polled(60, "w-1"))
    await h.clock.advance(2)
    await wakes(h, polled(62, "w-1", queued=1), 3)
    joined = polled(63, "w-1", queued=1)
    await wakes(h, DemandUpdate(joined.demand, frozenset({"w-1", "w-9"})), 4)
    await stop_loop(h, task)


async def test_one_listing_serves_callers_within_its_max_age(harness: Harness) -> None:
    h = harness
    h.set_demand(h.jobs(4))
    await h.pass_()  # launches: the listing it took is retired
    before = describes(h)
    record = await h.pass_()
    assert record.launched == 0
    assert describes(h) == before + 1
    listing = await h.controller.list_workers(max_age=5)  # the pass's listing
    assert describes(h) == before + 1
    assert sorted(n.name for n in listing) == sorted(t.id for t in h.controller.tracker.all())
    await h.clock.advance(6)
    await h.controller.list_workers(max_age=5)  # too old now
    assert describes(h) == before + 2


async def test_an_action_retires_the_shared_listing(harness: Harness) -> None:
    h = harness
    h.set_demand(h.jobs(4))
    await h.pass_()
    await h.pass_()
    ids = [t.id for t in h.controller.tracker.all()]
    assert len(ids) == 1
    before = describes(h)
    await h.drive(h.controller.terminate(ids))
    listing = await h.drive(h.controller.list_workers(max_age=60))
    assert describes(h) == before + 1  # listed again: the termination came after
    assert listing == []


async def test_a_listing_in_flight_across_an_action_is_not_shared(harness: Harness) -> None:
    h = harness
    h.set_demand(h.jobs(4))
    await h.pass_()
    await h.pass_()
    ids = [t.id for t in h.controller.tracker.all()]
    h.provider.api_latency = 1.0
    terminate = asyncio.create_task(h.controller.terminate(ids))
    await h.clock.advance(0.5)
    listing = asyncio.create_task(h.controller.list_workers())  # asked before it ended
    await h.clock.advance(0.6)
    assert terminate.done()  # answered at 1.0
    await h.clock.advance(1)
    await listing  # answered at 1.5, after the termination
    before = describes(h)
    await h.drive(h.controller.list_workers(max_age=60))
    assert describes(h) == before + 1


# --- one wake policy: the loop wakes for the next deadline -----------------------------


async def test_the_loop_wakes_when_an_unneeded_node_ripens(harness_factory: Any) -> None:
    """unneeded_time 100 s, interval 30 s: the drain comes at the deadline, not at the timer
    pass after it (120 s)."""
    h: Harness = await harness_factory(scaler={"unneeded_time": "100s"})
    h.set_demand(h.jobs(1))
    task = asyncio.create_task(h.controller.run())
    await wait_for_pass(h.controller, 1)
    await h.clock.advance(60)  # booted and joined; two timer passes
    await h.settle()
    (node,) = [t.id for t in h.controller.tracker.all()]
    h.set_demand(Demand())  # the job is gone: the node is unneeded from the next pass
    await h.settle()
    await h.clock.advance(0.5)
    await h.settle()
    marked = h.controller.state.unneeded_since[node]
    assert h.controller.next_deadline() == marked + 100
    await h.clock.advance(marked + 100 - h.clock.now() - 0.01)
    assert h.controller.tracker.get(node).state.value == "ready"  # type: ignore[union-attr]
    await h.clock.advance(0.02)
    await h.settle()
    assert h.controller.tracker.get(node).state.value == "draining"  # type: ignore[union-attr]
    assert h.controller.last_pass is not None
    assert h.controller.last_pass.drained == (node,)
    assert h.controller.last_pass.started_at == pytest.approx(marked + 100 + WAKE_SLACK)
    await stop_loop(h, task)


async def test_next_deadline_is_the_earliest_of_every_timer(harness: Harness) -> None:
    h = harness
    c = h.controller
    now = h.clock.now()
    assert c.next_deadline() is None
    c.state = PlannerState(unneeded_since={"i-1": now - 10})
    assert c.next_deadline() == now - 10 + c.policy.scale_down_unneeded_time
    offering = Offering("c5.xlarge", "us-west-2a", CapacityType.ON_DEMAND)
    c.backoff = c.backoff.record_failure(offering, now - 120)  # blocked for 180 s
    assert c.next_deadline() == now + 60
    c.deadline_sources.append(lambda at: now + 5 if now + 5 > at else None)
    assert c.next_deadline() == now + 5
    assert c.next_deadline(after=now + 5) == now + 60  # each source: only after ``after``
    await h.clock.advance(61)
    assert c.next_deadline() == now - 10 + c.policy.scale_down_unneeded_time


async def test_the_tracker_deadlines_are_join_timeouts_and_ledger_ttls(harness: Harness) -> None:
    h = harness
    c = h.controller
    h.provider.listing_lag = 1000.0  # launched, but only in the ledger
    h.set_demand(h.jobs(4))
    start = h.clock.now()
    await h.pass_()
    ttl, join, sick = c.tracker.ledger_ttl, c.policy.join_timeout, c.policy.unhealthy_timeout
    assert c.tracker.next_deadline(join, sick, start) == start + min(ttl, join)
    later = start + min(ttl, join)
    assert c.tracker.next_deadline(join, sick, later) == start + max(ttl, join)
    await h.clock.advance(ttl)
    await h.pass_()  # never listed within the TTL: expired and terminated, no timer left
    assert c.tracker.next_deadline(join, sick, h.clock.now()) is None


async def test_a_joined_node_missing_from_reads_has_its_unhealthy_timer(harness: Harness) -> None:
    h = harness
    c = h.controller
    h.set_demand(h.jobs(1))
    await h.pass_()
    await h.clock.advance(h.provider.boot_delay + h.provider.join_delay + h.provider.listing_lag)
    (node,) = [t.id for t in c.tracker.all()]
    h.set_demand(h.jobs(1), joined={node})
    await h.pass_()
    join, sick = c.policy.join_timeout, c.policy.unhealthy_timeout
    assert c.tracker.next_deadline(join, sick, h.clock.now()) is None  # joined: no timer
    gone = h.clock.now()
    h.set_demand(h.jobs(1), joined=set())  # a read leaves it out
    await h.pass_()
    assert c.tracker.next_deadline(join, sick, h.clock.now()) == gone + sick


async def test_a_changed_queue_wakes_a_pass_and_an_unchanged_one_does_not(
    harness: Harness,
) -> None:
    h = harness
    task = await run_loop(h, polled(60, "w-1", queued=2))
    again = polled(61, "w-1", queued=2)  # an equal queue in another tuple
    for update in (again, again):  # then the very same tuple handed again
        await h.clock.advance(1)
        h.controller.set_demand(update)
        await h.settle()
    await h.clock.advance(1)  # past any debounce
    assert h.controller.passes == 2
    await wakes(h, polled(63, "w-1", queued=3), 3)  # one more queued job
    await h.clock.advance(1)
    await wakes(h, polled(64, "w-1", queued=2), 4)  # and back: a change from the held queue
    await stop_loop(h, task)


async def test_a_queued_entry_of_no_jobs_wakes_no_pass(harness: Harness) -> None:
    # the wake keys compare as dicts (``_same_wake``: Counter's == walked both in Python at
    # every read), where a count of 0 would make two equal queues differ: such an entry is
    # left out of the key, as Counter's == took it for a missing one
    h = harness
    task = await run_loop(h, polled(60, "w-1", queued=2))
    other = Shape(60, GIB, 2, GIB, False)
    for queued in ((QueuedJobs(SHAPE, 2), QueuedJobs(other, 0)), (QueuedJobs(SHAPE, 2),)):
        await h.clock.advance(1)
        read = Demand(queued=queued, running=(RunningJob(SHAPE, "w-1", 61),))
        h.controller.set_demand(DemandUpdate(read, frozenset({"w-1"})))
        await h.settle()
    await h.clock.advance(1)  # past any debounce
    assert h.controller.passes == 2
    await stop_loop(h, task)


async def test_a_queue_changed_in_place_and_handed_again_wakes_a_pass(harness: Harness) -> None:
    # not a tuple: it may change after it came, so it is counted at each read and compared
    # with the count the held demand had when it came
    h = harness
    queued = [QueuedJobs(SHAPE, 1)]
    running = (RunningJob(SHAPE, "w-1", 60),)
    read = DemandUpdate(Demand(queued, running), frozenset({"w-1"}))  # type: ignore[arg-type]
    task = await run_loop(h, read)
    await h.clock.advance(1)
    queued.append(QueuedJobs(SHAPE, 1))
    await wakes(h, read, 3)
    await stop_loop(h, task)


async def test_a_queued_job_turned_gang_of_its_shape_wakes_a_pass(harness: Harness) -> None:
    # the same per-node shape and count, now 4 nodes wide (a job cancelled and a gang
    # submitted between two reads): another plan, so the read wakes a pass
    h = harness
    task = await run_loop(h, polled(60, "w-1", queued=1))
    await h.clock.advance(2)
    wide = Demand(
        queued=(QueuedJobs(SHAPE, 1, node_count=4),), running=(RunningJob(SHAPE, "w-1", 62),)
    )
    await wakes(h, DemandUpdate(wide, frozenset({"w-1"})), 3)
    await h.clock.advance(2)
    wider = Demand(queued=(QueuedJobs(SHAPE, 1, node_count=8),), running=wide.running)
    await wakes(h, DemandUpdate(wider, frozenset({"w-1"})), 4)
    await stop_loop(h, task)


class _Reads(tuple):  # type: ignore[type-arg]
    """A queued tuple that counts how often it is read through."""

    reads = 0

    def __iter__(self):  # type: ignore[no-untyped-def]
        self.reads += 1
        return super().__iter__()


def test_each_queue_a_source_hands_is_counted_once_for_the_wake(harness: Harness) -> None:
    # set_demand compares the new read's key with the last one's: the last read's queue
    # was counted when it came, so a replay whose queue changes at every read counts each
    # queue once (not once as the new read and again as the last one)
    c = harness.controller
    queues = [_Reads((QueuedJobs(SHAPE, k + 1),)) for k in range(4)]
    for queue in queues:
        c.set_demand(Demand(queued=queue))
        c.set_demand(Demand(queued=queue))  # the same queue read again: counted already
    assert [q.reads for q in queues] == [1, 1, 1, 1]


async def test_two_controllers_in_one_process_keep_their_own_wake_keys(
    harness_factory: Any,
) -> None:
    # each controller holds its own demand's key: another controller's reads in between
    # (two daemons, or a replay's variants, in one process) do not make it count again
    a = (await harness_factory()).controller
    b = (await harness_factory()).controller
    queues = [_Reads((QueuedJobs(SHAPE, k + 1),)) for k in range(2)]
    for _ in range(3):
        a.set_demand(Demand(queued=queues[0]))
        b.set_demand(Demand(queued=queues[1]))
    assert [q.reads for q in queues] == [1, 1]
    assert a.demand.queued is queues[0] and b.demand.queued is queues[1]
