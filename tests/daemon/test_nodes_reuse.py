"""NodeTracker keeps a node's record, and its NodeInfo, while a listing changes nothing.

A provider that hands the same ``Node`` object while an instance is unchanged (the simulated
cloud caches one per state) lets ``observe`` keep the record it has and ``infos`` the
``NodeInfo`` it made, instead of building both again for every node on every pass (on a
replay of a real log the tracker's two per-node constructions were ~10 % of the CPU). The
differential below checks the shortcut against a tracker handed fresh copies of every
``Node`` (so it never takes it), over random listings, reads, drains and marks.
"""

from __future__ import annotations

import copy
import dataclasses
import datetime as dt

from hypothesis import given, settings
from hypothesis import strategies as st
from shoal.daemon.nodes import _LISTED, NodeTracker, TrackedNode, TrackedState
from shoal.providers.base import TAG_AUTOSCALED, TAG_DRAINING, Node
from shoal.scaler.model import NodeType
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
        LAUNCHED,
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
    st.sampled_from(["", "mark_drained", "mark_undrained", "mark_ready", "interrupt"]),
    st.sampled_from(NAMES),
)


@settings(max_examples=300, deadline=None)
@given(st.lists(_step, min_size=1, max_size=12))
def test_kept_records_match_records_built_afresh(steps) -> None:
    cached = {
        (n, v): node(n, draining=v == "draining", stopped=v == "stopped")
        for n in NAMES
        for v in ("plain", "draining", "stopped")
    }
    kept, fresh = NodeTracker([C5]), NodeTracker([C5])
    now = 0.0
    for listed, joined, draining, own, unread, mark, name in steps:
        now += 30.0
        workers = [cached[n, v] for n, v in sorted(listed.items())]
        for tracker, nodes in ((kept, workers), (fresh, [copy.copy(w) for w in workers])):
            tracker.observe(nodes, joined, now, draining, own, unread=unread)
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
        assert [fields(t) for t in kept.all()] == [fields(t) for t in fresh.all()]
        assert kept.infos() == fresh.infos()


def test_a_kept_record_compares_every_field_a_listing_sets() -> None:
    """A record is kept when its ``_LISTED`` fields are equal; the others are its ``node``
    (the same object) and the launch ledger's (a ledger entry is never kept). A field added
    to ``TrackedNode`` must join one of them, or a kept record could carry a stale value."""
    ledger = {"accepted_at", "placeholder", "expired"}
    assert {f.name for f in dataclasses.fields(TrackedNode)} == {"node", *_LISTED, *ledger}
