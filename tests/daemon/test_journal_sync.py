"""The launch journal's nodes seen joined: walked in the tracker's order, written sorted.
Since a listing may leave out a joined node for a while, the nodes seen joined are the
listed ones and those left out in the last ``ledger_ttl`` (``NodeTracker.seen_joined``).

``LaunchJournal.sync`` runs twice a pass; it walked ``NodeTracker.all()`` (sorted by id) to
build the joined nodes, and now walks ``NodeTracker.records()`` (the tracker's own order),
and not at all while the tracker holds the very records of its last walk (since pass5:
while its ``version`` is the same): the section it writes must be the same bytes, and a
listing that only reorders the nodes must not count as a change (no write).
"""

from __future__ import annotations

import datetime as dt
import random
from collections.abc import Collection

from hypothesis import given, settings
from hypothesis import strategies as st
from shoal.daemon.durable import DurableStore, LaunchJournal
from shoal.daemon.nodes import NodeTracker, TrackedState
from shoal.providers.base import TAG_AUTOSCALED, Node
from shoal.scaler.model import NodeType
from shoal.scaler.shape import Shape

C5 = NodeType("c5", ("c5.xlarge",), Shape(3600, 1, 4, 1, False))
LAUNCHED = dt.datetime(2026, 1, 1, tzinfo=dt.UTC)
NAMES = tuple(f"i-{k:02d}" for k in range(12))


def node(name: str) -> Node:
    return Node(None, "10.0.0.1", name, LAUNCHED, "c5.xlarge", False, {TAG_AUTOSCALED: "true"})


TTL = 150.0  # the tracker's ledger_ttl: how long an unlisted joined node is remembered


class Reference:
    """The joined section as the journal wrote it before (from the sorted records: listed,
    joined, not terminated), plus the joined nodes a listing left out in the last ``TTL``
    seconds (not marked terminated), with what their records said when they were last
    listed and the reads since (shown: not missing; left out: missing from the first such
    read), and since when."""

    def __init__(self) -> None:
        self.listed: dict[str, tuple[float, float | None]] = {}
        self.gone: dict[str, tuple[float, float | None, float]] = {}

    def observed(self, tracker: NodeTracker, joined: Collection[str], now: float) -> None:
        """After a listing and a read (before the pass marks nodes terminated)."""
        listed = {t.id: t for t in tracker.all() if t.listed}
        for name, values in self.listed.items():
            if name not in listed:
                self.gone[name] = (*values, now)
        for name, t in listed.items():
            back = self.gone.pop(name, None)
            if back is not None and now - back[2] < TTL:  # listed again: joined as it was
                assert t.joined_at == back[0], (name, t.joined_at, back)
        for name, (joined_at, missing, since) in self.gone.items():
            missing = None if name in joined else (now if missing is None else missing)
            self.gone[name] = (joined_at, missing, since)
        self.gone = {k: v for k, v in self.gone.items() if now - v[2] < TTL}

    def marked(self, tracker: NodeTracker, terminated: Collection[str]) -> None:
        """After the pass marked ``terminated``: what the listed records say."""
        self.listed = {
            t.id: (t.joined_at, t.missing_since)
            for t in tracker.all()
            if t.joined_at is not None and t.listed and t.state is not TrackedState.TERMINATED
        }
        for name in terminated:
            self.gone.pop(name, None)

    def section(self) -> dict[str, list[float | None]]:
        out = {k: list(v) for k, v in self.gone.items()}
        out.update((k, [v[0], v[1], None]) for k, v in self.listed.items())
        return dict(sorted(out.items()))


steps = st.lists(
    st.tuples(
        st.lists(st.sampled_from(NAMES), unique=True, max_size=len(NAMES)),  # listed
        st.lists(st.sampled_from(NAMES), unique=True, max_size=len(NAMES)),  # joined
        st.lists(st.sampled_from(NAMES), max_size=2),  # marked terminated
        st.integers(0, 2**16),  # the listing's order
    ),
    min_size=1,
    max_size=8,
)


@settings(max_examples=150, deadline=None)
@given(steps=steps)
def test_the_joined_section_is_the_sorted_walks_and_a_reorder_writes_nothing(steps):
    tracker = NodeTracker([C5], default_zone="z", ledger_ttl=TTL)
    store = DurableStore(None)
    journal = LaunchJournal(store)
    reference = Reference()
    nodes = {name: node(name) for name in NAMES}
    for now, (listed, joined, terminated, seed) in enumerate(steps, start=1):
        workers = [nodes[name] for name in listed]
        random.Random(seed).shuffle(workers)
        tracker.observe(workers, frozenset(joined), float(now * 60))
        reference.observed(tracker, joined, float(now * 60))
        for name in terminated:
            tracker.mark(name, TrackedState.TERMINATED)
        reference.marked(tracker, terminated)
        journal.sync(tracker)
        dumped = journal._dump()["joined"]
        assert list(dumped.items()) == list(reference.section().items())
        # the same listing in another order (same records, another dict order): no write
        version = store._version
        tracker.observe(list(reversed(workers)), frozenset(joined), float(now * 60))
        for name in terminated:
            tracker.mark(name, TrackedState.TERMINATED)
        journal.sync(tracker)
        assert store._version == version
        assert list(journal._dump()["joined"].items()) == list(dumped.items())
    # the section read again (``DurableStore.reload``) with other nodes: the next sync, on
    # the very records of the last one, still finds the change and writes the tracker's
    journal._load({"joined": {"i-99": [1.0, None]}})
    journal.sync(tracker)
    assert store._version == version + 1
    assert list(journal._dump()["joined"].items()) == list(reference.section().items())
