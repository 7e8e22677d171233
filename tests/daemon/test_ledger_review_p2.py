"""Hostile review (reviewp2, 2026-12-07) of 2b1ce88, the launch ledger's fixes of review
reviewo's findings 3-5. Each test is a finding; all four are fixed (each fails on 2b1ce88
for the reason its docstring gives): the intent keeps ``answered`` (a replay's rewrite
too), and a zoneless offering takes the instance's zone. Findings 1 and 4 are
regressions of 2b1ce88 (they pass on its parent): both come from ``restore`` dropping an
intent's ``answered`` in memory. Findings 2 and 3 fail on its parent too: its fixes of
reviewo's findings 3 and 4 miss a zoneless offering and a second restart."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

from ledger_kit import (
    C5,
    T0,
    ZONE_B,
    ZONE_C,
    A,
    B,
    in_three_zones,
    listed,
    restart,
    three_zones,
    write_intent,
)
from shoal.daemon.durable import DurableStore, LaunchJournal
from shoal.daemon.nodes import NodeTracker
from shoal.providers.node_provider import client_token
from shoal.providers.outcomes import LaunchAttempt, LaunchRequest, RetryableError
from shoal.scaler.model import CapacityType, Offering

if TYPE_CHECKING:
    from shoal.runtime.testing import FakeClock


async def _unit_intent(state: Path) -> None:
    """On disk: a unit's intent for b (the 1 left), ``answered``: a's i-1 and i-2, launched
    and not listed yet; no entries (kill -9 landed once b's intent was written)."""
    await write_intent(state, "shoal-unit", B, [("i-1", A), ("i-2", A)])


def _booked(state: Path) -> set[str]:
    """What a daemon restarted on ``state`` books (its journal restored into a new tracker)."""
    tracker, _, store = restart(state, ttl=3600.0)
    store.close()
    return {t.id for t in tracker.pending() if not t.placeholder}


async def test_a_write_between_restore_and_the_first_sync_keeps_the_answered_ids(
    tmp_path: Path,
) -> None:
    """Finding 1 (review reviewp2, medium: a duplicate launch after a second crash): the
    restored journal drops the intent's ``answered`` ids in memory at ``restore``, but its
    ``entries`` are what the file held until ``sync`` (the first, in ``reconcile``, after a
    listing). Any write of the store before then writes the intent without its ids and the
    entries without them either: the Slurm section's change, a Slurm resume's intent
    (``Controller.launch`` holds no pass lock), an ``ha`` term's ``_confirm_term``; and
    ``reconcile`` retries each interval while the cloud's listing fails at start. A crash
    then (the daemon restarts again) finds no trace of a's 2: nothing books them, the plan
    launches 2 more while the listing lags, and when they are listed they take the rest's
    placeholders (their request tag) away. On 2b1ce88's parent the ids stayed on disk with
    the intent."""
    state = tmp_path / "state"
    await _unit_intent(state)
    store = DurableStore.open(state)
    tracker = NodeTracker([C5], default_zone="us-west-2a", ledger_ttl=3600.0)
    LaunchJournal(store).restore(tracker)
    assert {t.id for t in tracker.pending() if not t.placeholder} == {"i-1", "i-2"}
    await store.flush()  # another section's write, before the first ``sync``
    store.close()  # kill -9
    assert _booked(state) == {"i-1", "i-2"}  # set() on 2b1ce88


def test_an_instance_listed_before_a_zoneless_lost_answer_holds_no_placeholder() -> None:
    """Finding 2 (review reviewp2, low-medium: capacity held for nothing until the TTL):
    review reviewo's finding 3 with no zone configured (``provider.zone`` and ``zones``
    unset: ``launch_zones`` is empty, so the offering's zone is "" and EC2 picks a subnet's).
    The listed instance has its zone (``Placement.AvailabilityZone``), so
    ``node_offering(t.node, "")`` is (c5.xlarge, us-west-2a) where the attempt's offering is
    (c5.xlarge, ""): not counted as shown, the placeholder is booked, and no later listing
    releases it (the instance is not new to it)."""
    zoneless = Offering("c5.xlarge", "", CapacityType.ON_DEMAND)
    tracker = NodeTracker([C5], default_zone="", ledger_ttl=600.0)
    instance = listed("i-1", "us-west-2a")
    tracker.observe([instance], None, T0 + 5)  # a pass while the launch retries
    lost = LaunchAttempt("slurm-r", zoneless, 1, "tok", error=RetryableError("lost"))
    tracker.record_launch([lost], T0 + 20)
    tracker.observe([instance], None, T0 + 35)
    assert tracker.pending() == []  # the placeholder stays until T0 + 620 on 2b1ce88


async def test_a_second_restart_replays_the_rest_without_the_answered_offerings_token(
    tmp_path: Path, clock: FakeClock
) -> None:
    """Finding 3 (review reviewp2, low: an error and a pass's delay, no duplicate): review
    reviewo's finding 4 comes back after a second restart. ``restore`` drops the intent's
    ``answered`` once booked, and the intent waits on disk for a plan that wants its rest
    (none yet); the first ``sync`` writes it without them. Restarted again, its
    ``IntentReplay.answered`` is empty: b has no room, the replay falls back to a, whose
    token was sent for 3, and EC2 refuses it for 1 (IdempotentParameterMismatch) before c.
    (2) drops what (3) needs: the answered offerings are not kept with the intent."""
    state = tmp_path / "state"
    cloud = three_zones(clock)
    cloud.set_capacity("c5.xlarge", 2, zone=A.zone)
    sent = LaunchRequest(
        offering=A,
        count=3,
        client_token=client_token("shoal-unit", A),
        request_id="shoal-unit",
        spot_bid=None,
        tags=cloud.worker_tags("c5.xlarge", "shoal-unit"),
    )
    ids = await cloud.launch_offering(sent)
    answered = [(i, A) for i in ids]
    await write_intent(state, "shoal-unit", B, answered, at=clock.now(), node_type="c5.xlarge")

    first = await in_three_zones(clock, state, cloud)
    await first.drive(first.controller.reconcile())
    first.set_demand(first.jobs(0))  # no plan wants the rest yet: the intent waits
    await first.pass_()
    assert len(first.controller.journal.replays) == 1
    await first.settle()

    cloud.set_capacity("c5.xlarge", 0, zone=ZONE_B)
    second = await in_three_zones(clock, state, cloud)
    await second.drive(second.controller.reconcile())
    second.set_demand(second.jobs(12))
    record = await second.pass_()
    asked = [c.args["offering"].zone for c in second.launch_calls()][1:]  # the replay's
    assert not record.errors, record.errors  # a's token refused on 2b1ce88
    assert asked == [ZONE_B, ZONE_C]  # [b, a] on 2b1ce88


async def test_an_answered_instance_listed_after_a_second_restart_holds_no_placeholder_away(
    tmp_path: Path, clock: FakeClock
) -> None:
    """Finding 4 (review reviewp2, medium: a duplicate launch): a unit of 3, a launched 2,
    then b's intent (the 1 left) was written and b's launch reached the cloud, and kill -9
    landed before its answer was written. The first restart books a's 2 by id (the
    intent's ``answered``; they vouch for no placeholder when listed) and holds b's 1 as a
    placeholder while no plan wants the rest. ``restore`` dropped ``answered``, and a's 2,
    listed, leave the entries: a second restart before b's instance is listed finds them
    nowhere, so its first listing takes them for new instances of the request, and one of
    them takes b's placeholder away. The plan then launches a fourth node for 3, and b's
    instance is listed a little later. On 2b1ce88's parent a's 2 were booked by id again:
    b's placeholder stayed and the replay of b's token got b's instance back."""
    state = tmp_path / "state"
    cloud = three_zones(clock)
    cloud.set_capacity("c5.xlarge", 2, zone=A.zone)

    def sent(offering: Offering, count: int) -> LaunchRequest:
        return LaunchRequest(
            offering=offering,
            count=count,
            client_token=client_token("shoal-unit", offering),
            request_id="shoal-unit",
            spot_bid=None,
            tags=cloud.worker_tags("c5.xlarge", "shoal-unit"),
        )

    ids = await cloud.launch_offering(sent(A, 3))
    await clock.advance(50)
    answered = [(i, A) for i in ids]
    await write_intent(state, "shoal-unit", B, answered, at=clock.now(), node_type="c5.xlarge")
    await cloud.launch_offering(sent(B, 1))  # its answer never written: kill -9

    first = await in_three_zones(clock, state, cloud)
    await first.drive(first.controller.reconcile())
    first.set_demand(first.jobs(0))  # no plan wants the rest yet: the intent waits
    await clock.advance(15)
    await first.pass_()  # a's 2 listed, b's not yet (the listing's lag)
    assert {t.id for t in first.controller.tracker.all() if t.listed} == set(ids)
    await first.settle()

    second = await in_three_zones(clock, state, cloud)
    await second.drive(second.controller.reconcile())
    second.set_demand(second.jobs(12))
    await second.pass_()
    assert cloud.count("c5.xlarge") == 3  # 4 on 2b1ce88
