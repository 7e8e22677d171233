"""Hostile review (reviewo, 2026-12-07) of b68761d, the launch ledger: a lost answer's
placeholders released one per new listed instance of its request, and a unit's intent naming
the ids its earlier offerings launched. Each test is a finding, marked xfail (strict) while
it is not fixed: it fails on b68761d for the reason its docstring gives. Findings 3, 4 and 5
are fixed (their tests fail on b68761d and pass; 5's first fix, dropping the ids from the
intent once booked, was a regression, review reviewp2: an id is now dropped once a listing
shows it, and a placeholder stands only for instances of its own offering). 1 and 2 are
fixed too: the tracker keeps, per request, the instances that stood for a placeholder, on
disk with the ledger, so one stands for one at most through a flap and a restart (their
nearby cases at the end: each fails before the fix, but for the two guards, so named).

"New" in ``NodeTracker.observe`` means "not in the tracker now", not "never seen before":
an instance a listing showed, then left out (forgotten), then showed again is new twice,
and a restarted daemon's fresh tracker takes every instance of its first listing for new.
And an instance listed before its lost answer was booked is never new after the booking.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import TYPE_CHECKING, Any

from ledger_kit import (
    C5,
    T0,
    ZONE_A,
    ZONE_B,
    ZONE_C,
    A,
    B,
    in_three_zones,
    killed_before,
    listed,
    restart,
    three_zones,
    write_intent,
)
from shoal.daemon.durable import STATE_FILE, DurableStore, LaunchJournal, offering_to_json
from shoal.daemon.executor import Replayable
from shoal.daemon.nodes import NodeTracker
from shoal.providers.node_provider import client_token
from shoal.providers.outcomes import LaunchAttempt, LaunchRequest, RetryableError
from shoal.scaler.model import CapacityType, Offering

if TYPE_CHECKING:
    from loop_harness import Harness
    from shoal.runtime.testing import FakeClock


async def _lost_unit_one_listed(h: Harness) -> list[str]:
    """A plan's unit of 3 c5.xlarge whose every answer was lost (3 placeholders), then a
    pass whose listing shows one of its 3 instances (EC2's listing shows some of a launch
    before the rest: the other two are left out for an hour). Returns the 3 ids, the
    listed one first."""
    await h.drive(h.controller.reconcile())
    h.provider.lose_next_response(4)  # the retry policy's 4 attempts: all lost
    h.set_demand(h.jobs(12))  # one unit of 3 four-core nodes
    await h.pass_()
    assert sum(t.placeholder for t in h.controller.tracker.pending()) == 3
    first, *rest = sorted(h.provider.worker_names())
    for name in rest:
        h.provider.unlist(name, 3600)
    await h.clock.advance(30)
    await h.pass_()  # lists the first: it stands for one placeholder
    tracker = h.controller.tracker
    assert {t.id for t in tracker.all() if t.listed} == {first}
    assert sum(t.placeholder for t in tracker.pending()) == 2
    assert h.provider.count("c5.xlarge") == 3  # nothing launched: 1 listed + 2 held
    return [first, *rest]


async def test_an_instance_listed_before_a_restart_does_not_stand_for_a_placeholder_again(
    tmp_path: Path, harness_factory: Any
) -> None:
    """Finding 1 (review reviewo, medium-high: a duplicate launch): a lost answer of 3,
    one of its instances listed (it took one placeholder away), the daemon restarts. The
    store holds the 2 placeholders left (``entries``); the fresh tracker's first listing
    shows that instance again, new to it, so it takes a second placeholder away: 1 listed
    + 1 held for 3 launched, and the first pass launches one more (4 instances for a plan
    of 3). An ``ha`` term's new tracker does the same. Not a regression: before b68761d the
    first listing released all 3 and launched 2 more, restart or not. An intent's
    placeholders are restored whole (its count), so the listing taking them away again is
    right there; the entries keep only what is left, and what the listed instances already
    stood for is lost with the tracker."""
    state = tmp_path / "state"
    h: Harness = await harness_factory(state_dir=str(state))
    await _lost_unit_one_listed(h)
    await h.settle()  # the 2 placeholders left are written
    fresh: Harness = await harness_factory(state_dir=str(state), provider=h.provider)
    await fresh.drive(fresh.controller.reconcile())
    fresh.set_demand(fresh.jobs(12))
    await fresh.pass_()
    assert h.provider.count("c5.xlarge") == 3  # 4 on b68761d


async def test_an_instance_listed_again_after_a_flap_stands_for_one_placeholder(
    tmp_path: Path, harness_factory: Any
) -> None:
    """Finding 2 (review reviewo, low-medium: a duplicate launch): a lost answer of 3,
    one instance listed (one placeholder gone), then a listing leaves it out for a while
    (EC2's eventual consistency: ``unlist``) and the tracker forgets it (as any listed node:
    not this commit's), then it is listed again: new again, it takes a second placeholder
    away. Demand was lower while it was left out (no launch then), and back to 3 nodes when
    it is listed again: the tracker counts 1 listed + 1 held for the 3 launched, and the pass
    launches one more (4 for 3), where counting it once would launch nothing. (A pass that
    launches while it is left out replaces it, as for any node a listing drops, and the
    second release then hides that extra node instead.)"""
    h: Harness = await harness_factory(state_dir=str(tmp_path / "state"))
    first, *_ = await _lost_unit_one_listed(h)
    h.provider.unlist(first, 40)
    h.set_demand(h.jobs(8))  # two nodes' worth while the listing leaves it out
    await h.clock.advance(30)
    await h.pass_()
    assert h.provider.count("c5.xlarge") == 3
    await h.clock.advance(30)  # listed again
    h.set_demand(h.jobs(12))
    await h.pass_()
    assert first in {t.id for t in h.controller.tracker.all() if t.listed}
    assert h.provider.count("c5.xlarge") == 3  # 4 on b68761d


def test_an_instance_listed_before_its_lost_answer_is_booked_holds_no_placeholder() -> None:
    """Finding 3 (review reviewo, low-medium: capacity held for nothing until the TTL): a
    launch outside a pass (a Slurm resume request: ``Controller.launch`` does not hold the
    pass lock) loses its answers and retries for up to the retry deadline (60 s); a pass
    meanwhile lists its instance, which is new then but has no placeholder to stand for.
    When the launch ends, its placeholder is booked; the instance is no longer new to any
    listing, so the placeholder stays until ``launch_ledger_ttl`` (the power saver finds
    the instance by its node tag and never asks again, so no answer replaces it): a booting
    node counted for nothing, toward the type's max too."""
    offering = Offering("c5.xlarge", "z", CapacityType.ON_DEMAND)
    tracker = NodeTracker([C5], default_zone="z", ledger_ttl=600.0)
    instance = listed("i-1", request_id="slurm-r")
    tracker.observe([instance], None, T0 + 5)  # a pass while the launch retries
    lost = LaunchAttempt("slurm-r", offering, 1, "tok", error=RetryableError("lost"))
    tracker.record_launch([lost], T0 + 20)  # the launch gave up: its answer lost
    tracker.observe([instance], None, T0 + 35)  # the next pass
    assert tracker.pending() == []  # the placeholder stays until T0 + 620


async def test_a_replayed_rest_does_not_send_an_answered_offerings_token_again(
    tmp_path: Path, clock: FakeClock
) -> None:
    """Finding 4 (review reviewo, low: an error and a pass's delay, no duplicate): zone a
    launched 2 of a unit of 3 and kill -9 landed once b's intent (the 1 left, ``answered``:
    a's 2) was on disk. Restarted, b has no room: the replay falls back in order, to a,
    whose token was sent for 3; sent now for 1, EC2 answers IdempotentParameterMismatch,
    which ends the replay before c (the in-process retry excludes an offering that answered,
    review reviewn; the replay, with no events, does not: ``answered`` names a but is not
    used for that). The node left comes a pass later, under a new request id."""
    state, crashed = tmp_path / "state", tmp_path / "crashed"
    cloud = three_zones(clock)
    cloud.set_capacity("c5.xlarge", 2, zone=ZONE_A)
    h = await in_three_zones(clock, state, cloud)
    await h.drive(h.controller.reconcile())
    await killed_before(h, ZONE_B, state, crashed)
    assert cloud.count("c5.xlarge") == 2 and crashed.exists()

    cloud.set_capacity("c5.xlarge", 0, zone=ZONE_B)
    fresh = await in_three_zones(clock, crashed, cloud)
    await fresh.drive(fresh.controller.reconcile())
    fresh.set_demand(fresh.jobs(12))
    record = await fresh.pass_()
    asked = [c.args["offering"].zone for c in fresh.launch_calls()][1:]  # the replay's
    assert not record.errors, record.errors
    assert asked == [ZONE_B, ZONE_C]  # [b, a] on b68761d: a's token refused
    assert cloud.count("c5.xlarge") == 3


async def test_an_answered_id_gone_since_the_first_restart_is_not_booked_by_the_second(
    tmp_path: Path, clock: FakeClock
) -> None:
    """Finding 5 (review reviewo, low-medium: a node counted for nothing until the TTL,
    then a healthy offering backed off as a join timeout): a unit's intent on disk (b, the
    1 left; ``answered``: a's 2). The restarted daemon books a's 2 and keeps the intent, to
    make the rest again once a plan wants it (none does yet). a's 2 are listed; one is
    terminated (an operator, a spot reclaim) and the listings drop it. A second restart
    still finds the intent naming it (``answered`` is never pruned while the intent waits),
    books it again as a booting node the cloud accepted at the intent's time, and counts it:
    the replay then makes the 1 left and the plan nothing, 2 live for a plan of 3 until
    ``launch_ledger_ttl``, when the gone id is terminated as a join timeout (a's offering
    backed off)."""
    state = tmp_path / "state"
    cloud = three_zones(clock)
    a = A
    sent = LaunchRequest(
        offering=a,
        count=3,
        client_token=client_token("shoal-lost", a),
        request_id="shoal-lost",
        spot_bid=None,
        tags=cloud.worker_tags("c5.xlarge", "shoal-lost"),
    )
    cloud.set_capacity("c5.xlarge", 2, zone=ZONE_A)
    gone, kept = await cloud.launch_offering(sent)
    answered = [(gone, a), (kept, a)]
    await write_intent(state, "shoal-lost", B, answered, at=clock.now(), node_type="c5.xlarge")

    first = await in_three_zones(clock, state, cloud)
    await first.drive(first.controller.reconcile())
    first.set_demand(first.jobs(0))  # no plan wants the rest yet: the intent waits
    await clock.advance(61)
    await first.pass_()  # a's 2 listed
    await cloud.terminate_instances([gone])
    await clock.advance(30)
    await first.pass_()
    assert first.controller.tracker.get(gone) is None
    assert len(first.controller.journal.replays) == 1
    await first.settle()

    second = await in_three_zones(clock, state, cloud)
    await second.drive(second.controller.reconcile())
    assert second.controller.tracker.get(gone) is None  # booked again, booting, on b68761d
    second.set_demand(second.jobs(12))
    await second.pass_()
    assert cloud.count("c5.xlarge") == 3  # 2 on b68761d


# Nearby cases of findings 1 and 2 (each fails on the code before their fix: an instance
# stands for a placeholder again once it is new again)

Z = Offering("c5.xlarge", "z", CapacityType.ON_DEMAND)


def _placeholders(tracker: NodeTracker) -> int:
    return sum(t.placeholder for t in tracker.pending())


def test_an_instance_listed_before_its_lost_answer_stands_for_no_placeholder_after_a_flap() -> None:
    """Finding 2 by finding 3's way: i-1 is listed, then the lost answer of 2 is booked,
    with one placeholder (i-1 stands for the other, ``record_launch``'s ``shown``). A
    listing leaves i-1 out and the next shows it again: new to the tracker, it took the
    placeholder that stands for i-2, not listed yet (1 counted for 2 launched)."""
    tracker = NodeTracker([C5], default_zone="z", ledger_ttl=600.0)
    first = listed("i-1", request_id="slurm-r")
    tracker.observe([first], None, T0 + 5)
    lost = LaunchAttempt("slurm-r", Z, 2, "tok", error=RetryableError("lost"))
    tracker.record_launch([lost], T0 + 20)
    assert _placeholders(tracker) == 1
    tracker.observe([], None, T0 + 35)  # EC2's listing leaves i-1 out
    tracker.observe([first], None, T0 + 50)
    assert _placeholders(tracker) == 1  # 0 before the fix
    tracker.observe([first, listed("i-2", request_id="slurm-r")], None, T0 + 65)
    assert _placeholders(tracker) == 0


async def test_an_instance_that_stood_before_a_restart_and_flaps_after_it_stands_once(
    tmp_path: Path,
) -> None:
    """Findings 1 and 2 together: a lost answer of 3, i-1 listed (2 placeholders left),
    a restart; the first listing after it leaves i-1 out (what stood is kept while the
    request has placeholders), the next shows it: it stands for none again. Once the
    placeholders' TTL passes, what stood goes with them, from the state file too."""
    state = tmp_path / "state"
    store = DurableStore.open(state)
    tracker = NodeTracker([C5], default_zone="z", ledger_ttl=600.0)
    journal = LaunchJournal(store)
    lost = LaunchAttempt("shoal-r", Z, 3, "tok", error=RetryableError("lost"))
    tracker.record_launch([lost], T0)
    first = listed("i-1", request_id="shoal-r")
    tracker.observe([first], None, T0 + 30)
    journal.sync(tracker)
    await store.flush()
    store.close()

    tracker, journal, store = restart(state, "z")
    assert _placeholders(tracker) == 2
    tracker.observe([], None, T0 + 60)  # the listing lags after the restart
    tracker.observe([first], None, T0 + 90)
    assert _placeholders(tracker) == 2  # 1 before the fix
    journal.sync(tracker)
    await store.flush()
    assert json.loads((state / STATE_FILE).read_text())["ledger"]["stood"] == {
        "shoal-r": {"i-1": offering_to_json(Z)}
    }
    tracker.expire(T0 + 600)
    journal.sync(tracker)
    await store.flush()
    store.close()
    assert _placeholders(tracker) == 0
    assert json.loads((state / STATE_FILE).read_text())["ledger"]["stood"] == {}


async def test_an_intent_restored_whole_is_stood_for_again_by_its_listed_instance(
    tmp_path: Path,
) -> None:
    """The other side of finding 1's fix: an intent still to make again is restored as
    placeholders of its whole count, so an instance that stood for one before the restart
    stands for one of these again (its offering's ids are dropped when they are booked).
    Kept as what stood, it would leave 3 placeholders beside the listed instance: 4
    counted for 3 launched, until the TTL. (A guard of the fix, which passes before it: it
    fails when what stood is restored after the intents' placeholders.)"""
    state = tmp_path / "state"
    store = DurableStore.open(state)
    journal = LaunchJournal(store)
    await journal.intent("shoal-r", C5, 3, Z, T0, Replayable({}, False, "demand"))
    store.close()  # kill -9 with the launch in flight

    first = listed("i-1", request_id="shoal-r")
    tracker, journal, store = restart(state, "z")
    assert _placeholders(tracker) == 3 and len(journal.replays) == 1
    tracker.observe([first], None, T0 + 30)
    assert _placeholders(tracker) == 2
    journal.sync(tracker)
    await store.flush()
    store.close()

    tracker, journal, store = restart(state, "z")
    store.close()
    assert _placeholders(tracker) == 3
    tracker.observe([first], None, T0 + 60)
    assert _placeholders(tracker) == 2


def test_a_lost_answer_booked_again_is_stood_for_again_by_an_instance_left_out() -> None:
    """The same in one process: a lost answer of 3, i-1 listed (2 placeholders), then left
    out of a listing; the launch's answer is lost again (a replay under the same token),
    booked anew as 3 placeholders (none of its instances listed). When i-1 is listed again
    it stands for one of these: what stood for the old ones is dropped with them
    (``record_launch``), else 3 placeholders beside i-1 until the TTL. (A guard of the fix,
    which passes before it: it fails without that drop.)"""
    tracker = NodeTracker([C5], default_zone="z", ledger_ttl=600.0)
    lost = LaunchAttempt("shoal-r", Z, 3, "tok", error=RetryableError("lost"))
    tracker.record_launch([lost], T0)
    first = listed("i-1", request_id="shoal-r")
    tracker.observe([first], None, T0 + 30)
    tracker.observe([], None, T0 + 60)  # EC2's listing leaves i-1 out
    tracker.record_launch([lost], T0 + 70)
    assert _placeholders(tracker) == 3
    tracker.observe([first], None, T0 + 90)
    assert _placeholders(tracker) == 2
