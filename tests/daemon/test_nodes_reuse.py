"""NodeTracker keeps a node's record, and its NodeInfo, while a listing changes nothing.

A provider that hands the same ``Node`` object while an instance is unchanged (the simulated
cloud caches one per state) lets ``observe`` keep the record it has and ``infos`` the
``NodeInfo`` it made, instead of building both again for every node on every pass (on a
replay of a real log the tracker's two per-node constructions were ~10 % of the CPU). The
differential below checks the shortcut against a tracker handed fresh copies of every
``Node`` (so it never takes it), over random listings, reads, drains and marks. Since
speed4 a record the last listing kept is kept again unexamined when the listing hands the
same ``Node`` with the same read and drains, and ``infos`` and ``next_deadline`` are kept
while no record changed: checked here too, and against every record afresh. Since pass5 the
tracker has a ``version`` that changes whenever a record is replaced, added or dropped:
``infos``, ``next_deadline``, ``counts``, ``pending`` and the sorted filters are kept by it,
and a listing of the very same ``Node`` objects with equal reads, after one that kept every
record it lists, is not walked at all (the differential now applies each listing twice).
"""

from __future__ import annotations

import copy
import dataclasses
import datetime as dt
from collections import Counter

from hypothesis import example, given, settings
from hypothesis import strategies as st
from shoal.daemon.nodes import _LISTED, NodeTracker, TrackedNode, TrackedState
from shoal.providers.base import TAG_AUTOSCALED, TAG_DRAINING, Node
from shoal.providers.outcomes import LaunchAttempt, RetryableError
from shoal.scaler.model import CapacityType, NodeType, Offering
from shoal.scaler.shape import Shape

C5 = NodeType("c5", ("c5.xlarge",), Shape(3600, 1, 4, 1, False))
LAUNCHED = dt.datetime(2026, 1, 1, tzinfo=dt.UTC)
NAMES = ("a", "b", "c", "d", "e")


def node(name: str, *, draining: bool = False, stopped: bool = False) -> Node:
    tags = {TAG_AUTOSCALED: "true"}
    if draining:
        tags[TAG_DRAINING] = "shoal"
    return Node(
        None,
        "10.0.0.1",
        name,
        LAUNCHED + dt.timedelta(minutes=NAMES.index(name)),  # join timeouts in turn
        "c5.xlarge",
        False,
        tags,
        zone="z",
        cloud_state="stopped" if stopped else "running",
    )


def fields(t: TrackedNode) -> tuple[object, ...]:
    return (
        t.id,
        t.node.tags,
        t.node.cloud_state,
        t.node_type,
        t.state,
        t.static,
        t.zone,
        t.accepted_at,
        t.placeholder,
        t.expired,
        t.joined_at,
        t.missing_since,
        t.drain_confirmed,
        t.drained_by_others,
    )


def test_an_unchanged_listing_keeps_each_record_and_its_info() -> None:
    tracker = NodeTracker([C5])
    workers = [node("a"), node("b")]
    tracker.observe(workers, joined={"a"}, now=10.0)
    records = {t.id: t for t in tracker.all()}
    infos = tracker.infos()
    tracker.observe(workers, joined={"a"}, now=20.0)  # the same Node objects, the same read
    assert all(t is records[t.id] for t in tracker.all())
    again = tracker.infos()
    assert again == infos and all(x is y for x, y in zip(again, infos, strict=True))
    # a read that leaves "a" out changes its record (missing since 30) and its info
    tracker.observe(workers, joined=set(), now=30.0)
    info = {i.id: i for i in tracker.infos()}
    assert info["a"].missing_since == 30.0 and info["a"] is not infos[0]
    assert tracker.get("b") is records["b"]  # booting before and after: kept


# one step: which nodes are listed (and in which variant), the read, and a mark
_variant = st.sampled_from(["plain", "draining", "stopped"])
_step = st.tuples(
    st.dictionaries(st.sampled_from(NAMES), _variant),  # listed nodes
    st.one_of(st.none(), st.sets(st.sampled_from(NAMES))),  # joined (None: no read)
    st.sets(st.sampled_from(NAMES)),  # drained, as the scheduler shows it
    st.one_of(st.none(), st.sets(st.sampled_from(NAMES))),  # drains of shoal's reason
    st.booleans(),  # unread
    st.sampled_from(
        ["", "mark_drained", "mark_undrained", "mark_ready", "interrupt", "launch", "lost", "ttl"]
    ),
    st.sampled_from(NAMES),
)
OFFERING = Offering("c5.xlarge", "z", CapacityType.ON_DEMAND)


def by_every_record(t: NodeTracker, join: float, unhealthy: float, now: float) -> float | None:
    """``next_deadline`` from every record afresh (the tracker keeps the times it made)."""
    times = []
    for r in t.all():
        live = r.state is not TrackedState.TERMINATED and not r.expired
        never_joined = r.state is TrackedState.BOOTING and r.joined_at is None
        timers = (  # (runs, falls due at)
            (never_joined and not r.static, r.node.launchTime.timestamp() + join),
            (r.missing_since is not None and not r.static, (r.missing_since or 0.0) + unhealthy),
            (r.accepted_at is not None, (r.accepted_at or 0.0) + t.ledger_ttl),
        )
        times += [at for runs, at in timers if live and runs]
    return min((x for x in times if x > now), default=None)


def check(t: NodeTracker, now: float) -> None:
    """The planner's view and the deadlines as every record gives them afresh: whatever
    the tracker kept from an earlier read (before a mark, a launch, a TTL change) is not
    served once it is stale."""
    gone = t.interrupted()
    afresh = tuple(
        r.info()
        for r in t.all()
        if r.state is not TrackedState.TERMINATED
        and not r.expired
        and not r.node.stopped
        and r.id not in gone
    )
    assert t.infos() == afresh
    for join, unhealthy in ((600.0, 300.0), (60.0, 30.0)):
        assert t.next_deadline(join, unhealthy, now) == by_every_record(t, join, unhealthy, now)
    records = t.all()
    counts = Counter((r.node_type or "unmanaged", r.state.value) for r in records)
    assert dict(t.counts()) == dict(counts)
    assert sorted(r.id for r in t.pending()) == [r.id for r in records if not r.listed]
    draining = [r for r in records if r.state is TrackedState.DRAINING]
    stopped = [r for r in records if r.node.stopped and not r.static]
    assert t.stopped() == [r for r in stopped if r.state is not TrackedState.TERMINATED]
    assert t.unconfirmed_drains() == [r for r in draining if not r.static and not r.drain_confirmed]
    assert t.drained_by_others() == [r for r in draining if r.drained_by_others]


def views(t: NodeTracker, now: float) -> tuple[object, ...]:
    """What the loop reads of a tracker each pass, besides ``all()``."""
    return (
        t.infos(),
        t.next_deadline(600.0, 300.0, now),
        t.next_deadline(900.0, 300.0, now - 45.0),
        [fields(r) for r in t.stopped()],
        [fields(r) for r in t.unconfirmed_drains()],
        [fields(r) for r in t.drained_by_others()],
        [fields(r) for r in t.interrupted_idle({"a"})],
    )


@settings(max_examples=300, deadline=None)
@given(st.lists(_step, min_size=1, max_size=12))
@example(  # the drain reasons read at last: a record kept with none read is not kept as is
    steps=[
        ({"a": "plain"}, None, {"a"}, None, False, "", "a"),
        ({"a": "plain"}, None, {"a"}, None, True, "", "a"),  # kept
        ({"a": "plain"}, None, {"a"}, {"a"}, True, "", "a"),  # drained by shoal's reason
    ]
)
def test_kept_records_match_records_built_afresh(steps) -> None:
    cached = {
        (n, v): node(n, draining=v == "draining", stopped=v == "stopped")
        for n in NAMES
        for v in ("plain", "draining", "stopped")
    }
    kept, fresh = NodeTracker([C5]), NodeTracker([C5])
    now = LAUNCHED.timestamp()  # the deadlines (join timeouts, TTLs) fall among the steps
    for listed, joined, draining, own, unread, mark, name in steps:
        now += 30.0
        workers = [cached[n, v] for n, v in sorted(listed.items())]
        for tracker, nodes in ((kept, workers), (fresh, [copy.copy(w) for w in workers])):
            tracker.observe(nodes, joined, now, draining, own, unread=unread)
            check(tracker, now)
            # the same again (the kept tracker: the very same Nodes, maybe not walked)
            again = nodes if tracker is kept else [copy.copy(w) for w in workers]
            assert tracker.observe(again, joined, now + 1.0, draining, own, unread=unread) == []
            check(tracker, now + 1.0)
            if tracker.get(name) is None:
                continue
            if mark == "mark_drained":
                tracker.mark_drained(name)
            elif mark == "mark_undrained":
                tracker.mark_undrained(name, now)
            elif mark == "mark_ready":
                tracker.mark(name, TrackedState.READY)
            elif mark == "interrupt":
                tracker.mark_interrupted(name, now)
            elif mark in ("launch", "lost"):  # a ledger entry, or a lost launch's placeholder
                ids = (f"new-{now:.0f}",) if mark == "launch" else ()
                error = RetryableError("lost") if mark == "lost" else None
                attempt = LaunchAttempt(f"r{now:.0f}", OFFERING, 1, f"tok{now:.0f}", ids, error)
                tracker.record_launch([attempt], now)
            elif mark == "ttl":
                tracker.ledger_ttl = 100.0
            tracker.expire(now)
            check(tracker, now)
        assert [fields(t) for t in kept.all()] == [fields(t) for t in fresh.all()]
        assert views(kept, now) == views(fresh, now)


def test_a_kept_record_compares_every_field_a_listing_sets() -> None:
    """A record is kept when its ``_LISTED`` fields are equal; the others are its ``node``
    (the same object) and the launch ledger's (a ledger entry is never kept). A field added
    to ``TrackedNode`` must join one of them, or a kept record could carry a stale value."""
    ledger = {"accepted_at", "placeholder", "expired"}
    assert {f.name for f in dataclasses.fields(TrackedNode)} == {"node", *_LISTED, *ledger}


def test_what_the_tracker_keeps_follows_each_change_that_leaves_the_records_as_many() -> None:
    """``infos`` and ``next_deadline`` are kept while no record changed: a record replaced
    by a mark (as many records), a node marked interrupted (no record changed) and a new
    ledger TTL (no record changed) each make them anew."""
    tracker = NodeTracker([C5])
    now = LAUNCHED.timestamp() + 300.0
    tracker.observe([node("a"), node("b")], {"a"}, now)  # b booting: its join timeout
    tracker.record_launch([LaunchAttempt("r", OFFERING, 1, "tok", ("new",))], now)
    changes = (
        lambda: tracker.mark("b", TrackedState.READY),  # b's join timeout is gone
        lambda: tracker.mark_interrupted("a", now),  # a leaves the planner's view
        lambda: setattr(tracker, "ledger_ttl", 100.0),  # the ledger entry's TTL comes sooner
    )
    for change in changes:
        check(tracker, now)
        before = (tracker.infos(), tracker.next_deadline(600.0, 300.0, now))
        change()
        check(tracker, now)
        assert (tracker.infos(), tracker.next_deadline(600.0, 300.0, now)) != before


def test_a_still_listed_drain_tag_counts_again_after_the_grace_on_the_same_node_object():
    # The listing fast path must not keep an undrained node's record once the undrain's
    # grace (ledger_ttl) is over and the draining tag is still listed (review3: deleting
    # the _stale_tag condition passed every other tracker test).
    c5 = NodeType("c5", ("c5.xlarge",), Shape(3600, 8, 4, 10, False))
    tracker = NodeTracker([c5], default_zone="z", ledger_ttl=600.0)
    # one Node object, handed again by every listing (its facts do not change: the tag stays)
    node = Node(
        None,
        "10.0.0.1",
        "i-1",
        dt.datetime(2026, 1, 1, tzinfo=dt.UTC),
        "c5.xlarge",
        False,
        {TAG_AUTOSCALED: "true", TAG_DRAINING: "1767225600"},
    )
    tracker.observe([node], frozenset({"i-1"}), 100.0)
    assert tracker.get("i-1").state is TrackedState.DRAINING
    tracker.mark_undrained("i-1", 110.0)
    tracker.observe([node], frozenset({"i-1"}), 120.0)  # tag ignored: the removal may lag
    tracker.observe([node], frozenset({"i-1"}), 130.0)  # same inputs again (record kept)
    assert tracker.get("i-1").state is TrackedState.READY
    tracker.observe([node], frozenset({"i-1"}), 110.0 + 600.0 + 1)  # grace over, tag listed
    assert tracker.get("i-1").state is TrackedState.DRAINING


class _CountingTags(dict):
    """A node's tags that count the listing's reads of them: a walk reads every node's."""

    reads = 0

    def get(self, *args):  # type: ignore[override]
        _CountingTags.reads += 1
        return super().get(*args)


def counted(name: str) -> Node:
    made = node(name)
    made.tags = _CountingTags(made.tags)
    return made


def walks(tracker: NodeTracker, *args, **kwargs) -> bool:
    """Whether ``observe`` walked the listing (read any node's tags)."""
    before = _CountingTags.reads
    tracker.observe(*args, **kwargs)
    return _CountingTags.reads > before


def test_a_listing_like_the_last_is_not_walked_until_something_changes() -> None:
    """The second of two equal listings is walked (its first kept every record only then),
    the third not; each change since, of the records, the listing or the reads, walks it
    again, and what it finds is what a walk finds."""
    tracker = NodeTracker([C5], ledger_ttl=600.0)
    workers = [counted("a"), counted("b")]
    joined = {"a"}  # a caller's set, changed in place below
    now = LAUNCHED.timestamp()
    assert walks(tracker, workers, joined, now)  # new records
    assert walks(tracker, workers, joined, now + 1)  # each kept: settled only now
    assert not walks(tracker, workers, joined, now + 2)
    assert not walks(tracker, list(workers), frozenset({"a"}), now + 3)  # equal, not the same
    changes = (
        lambda: tracker.mark("b", TrackedState.READY),  # a record replaced
        lambda: tracker.record_launch([LaunchAttempt("r", OFFERING, 1, "t", ("new",))], now),
        lambda: tracker.expire(now + 700.0),  # the ledger entry expires (replaced)
        lambda: tracker.forget("new"),  # dropped
        lambda: joined.discard("a"),  # the read, changed in place: a is missing now
        lambda: workers.reverse(),  # another order
        lambda: workers.append(counted("c")),  # another node
        lambda: tracker.restore_joined({"a": (1.0, None, None)}),  # a restart's knowledge
        lambda: tracker.set_node_types([C5]),  # a reload
    )
    for change in changes:
        change()
        assert walks(tracker, workers, joined, now + 4)
        walks(tracker, workers, joined, now + 5)  # settles again
        check(tracker, now + 5)
        assert not walks(tracker, workers, joined, now + 6)
    assert tracker.get("a").missing_since is not None  # the in-place change was seen


def test_a_listing_is_walked_while_an_undrained_nodes_tag_is_ignored() -> None:
    """After an undrain the draining tag listings still show is ignored for ``ledger_ttl``
    at most: each listing looks at it again, so the one after the grace counts it."""
    tracker = NodeTracker([C5], ledger_ttl=600.0)
    workers = [counted("a")]
    workers[0].tags[TAG_DRAINING] = "shoal"
    now = LAUNCHED.timestamp()
    for k in range(2):
        tracker.observe(workers, {"a"}, now + k)
    assert not walks(tracker, workers, {"a"}, now + 2)
    tracker.mark_undrained("a", now + 2)
    for k in range(3, 6):
        assert walks(tracker, workers, {"a"}, now + k)
        assert tracker.get("a").state is TrackedState.READY
    assert walks(tracker, workers, {"a"}, now + 700)
    assert tracker.get("a").state is TrackedState.DRAINING


def test_observe_skips_its_walk_on_a_same_listing_with_the_drains_equal() -> None:
    tracker = NodeTracker([C5])
    workers = [counted("a")]
    now = LAUNCHED.timestamp()
    for _ in range(2):
        tracker.observe(workers, {"a"}, now, ["a"], None)
    assert not walks(tracker, workers, {"a"}, now, ("a",), None)  # the same drains
    assert walks(tracker, workers, {"a"}, now, (), None)  # not drained any more
    assert tracker.get("a").state is TrackedState.READY
    tracker.observe(workers, {"a"}, now, (), None)
    assert walks(tracker, workers, {"a"}, now, (), {"a"})  # drain reasons read now
    tracker.observe(workers, {"a"}, now, (), {"a"})
    assert walks(tracker, workers, {"a"}, now, (), {"a"}, unread=True)


def test_versions_are_never_shared_by_two_trackers() -> None:
    """A reader that keeps a value by a tracker's version (the launch journal) must not take
    a new tracker's (a restart, a new term) for the old one's."""
    first, second = NodeTracker([C5]), NodeTracker([C5])
    assert first.version != second.version
    first.observe([node("a")], {"a"}, 10.0)
    second.observe([node("b")], {"b"}, 10.0)
    assert first.version != second.version


def test_a_listing_naming_a_node_twice_changes_what_the_tracker_keeps() -> None:
    """A listing may name an instance twice (a paginated listing across a change): the
    record the second makes replaces the kept one, so the version moves and the views are
    made again."""
    tracker = NodeTracker([C5])
    plain = node("a")
    now = LAUNCHED.timestamp()
    for k in range(2):
        tracker.observe([plain], {"a"}, now + k)
    check(tracker, now + 1)
    version = tracker.version
    tracker.observe([plain, node("a", draining=True)], {"a"}, now + 2)
    assert tracker.get("a").state is TrackedState.DRAINING
    assert tracker.version != version
    check(tracker, now + 2)
