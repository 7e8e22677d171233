"""Hostile review (review5, 2026-12-08) of ledger5 (2b58e6b, d242f11, 741c919): the launch
ledger's ``stood`` (the instances that stood for a lost answer's placeholders, kept per
request and on disk), zoneless entries, and answered ids flagged ``listed``. Each test is a
finding: it fails on e2e7fdd for the reason its docstring gives. Finding 1 is fixed: a file
with no ``stood`` takes the instances of its placeholders' requests that the first listing
shows to have stood."""

from __future__ import annotations

import json
from pathlib import Path
from typing import TYPE_CHECKING, Any

from ledger_kit import C5, T0, listed, restart
from shoal.daemon.durable import STATE_FILE, DurableStore, LaunchJournal
from shoal.daemon.nodes import NodeTracker
from shoal.providers.outcomes import LaunchAttempt, RetryableError
from shoal.scaler.model import CapacityType, Offering
from test_ledger_review_o import _lost_unit_one_listed

if TYPE_CHECKING:
    from loop_harness import Harness

Z = Offering("c5.xlarge", "z", CapacityType.ON_DEMAND)


async def test_an_upgrade_with_a_lost_answer_in_doubt_does_not_count_a_listed_instance_twice(
    tmp_path: Path, harness_factory: Any
) -> None:
    """Finding 1 (low: a duplicate launch, once, at the upgrade): a lost answer of 3, one of
    its instances listed (it stood for one placeholder), and the daemon is upgraded to
    e2e7fdd with the other 2 placeholders in ``entries``. The file, written by 53c672f, has
    no ``stood``: the fresh tracker's first listing takes the instance for new, it stands
    for a second placeholder, 1 listed + 1 held for 3 launched, and the first pass launches
    a 4th (reviewo finding 1, fixed for files written since). The file cannot say which
    instance stood; a fix is a trade: with no ``stood`` section, the first listing's
    instances of a request with restored placeholders could stand for none (capacity held
    until the TTL instead of a node launched twice)."""
    state = tmp_path / "state"
    h: Harness = await harness_factory(state_dir=str(state))
    await _lost_unit_one_listed(h)
    await h.settle()  # the 2 placeholders left are written
    data = json.loads((state / STATE_FILE).read_text())
    del data["ledger"]["stood"]  # as 53c672f wrote it: no such section
    (state / STATE_FILE).write_text(json.dumps(data))

    fresh: Harness = await harness_factory(state_dir=str(state), provider=h.provider)
    await fresh.drive(fresh.controller.reconcile())
    fresh.set_demand(fresh.jobs(12))
    await fresh.pass_()
    assert h.provider.count("c5.xlarge") == 3  # 4 on e2e7fdd: the listed instance stood twice


async def test_a_file_written_with_stood_releases_a_placeholder_for_a_new_instance(
    tmp_path: Path,
) -> None:
    """Finding 1's fix, the other side: a file from this shoal always has ``stood`` (empty
    too), so an instance of a lost answer that no listing showed before the restart stands
    for one placeholder at the first listing after it (only a file from before ``stood``
    takes those instances to have stood already)."""
    state = tmp_path / "state"
    store = DurableStore.open(state)
    tracker = NodeTracker([C5], default_zone="z", ledger_ttl=600.0)
    journal = LaunchJournal(store)
    lost = LaunchAttempt("shoal-r", Z, 2, "tok", error=RetryableError("lost"))
    tracker.record_launch([lost], T0)
    journal.sync(tracker)
    await store.flush()
    store.close()
    assert json.loads((state / STATE_FILE).read_text())["ledger"]["stood"] == {}

    tracker, _, store = restart(state, "z")
    store.close()
    tracker.observe([listed("i-1", request_id="shoal-r")], None, T0 + 30)
    assert sum(t.placeholder for t in tracker.pending()) == 1
