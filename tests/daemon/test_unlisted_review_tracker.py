"""Review of a274819, on the tracker alone: how long ``NodeTracker`` remembers a joined node
a listing left out (``_gone``, for ``ledger_ttl``) and what the launch journal keeps of it.

- ``test_forgotten_after_ledger_ttl_while_the_listing_repeats`` and
  ``test_the_journal_drops_a_node_once_forgotten`` pass on a274819; they are here because
  no test caught a mutant that breaks them (observe's "same listing" shortcut taken while
  ``_gone`` is not empty; no version bump when an entry expires: the journal's walk, kept by
  the version, then keeps an expired node in the store).
- ``test_a_restart_does_not_extend_what_is_remembered`` failed on a274819 (fixed: the store
  keeps since when): the store keeps
  (joined_at, missing_since) but not since when a node is unlisted, so a node unlisted
  before a restart is remembered from the first listing after it, for ``ledger_ttl`` again;
  daemons restarting more often than ``ledger_ttl`` remember every unlisted node forever.
"""

from __future__ import annotations

import datetime as dt

from shoal.daemon.durable import DurableStore, LaunchJournal
from shoal.daemon.nodes import NodeTracker, TrackedState
from shoal.providers.base import TAG_AUTOSCALED, Node
from shoal.scaler.model import NodeType
from shoal.scaler.shape import Shape

C5 = NodeType("c5", ("c5.xlarge",), Shape(3600, 1, 4, 1, False))
LAUNCHED = dt.datetime(2026, 1, 1, tzinfo=dt.UTC)
T0 = LAUNCHED.timestamp()
TTL = 100.0


def node(name: str) -> Node:
    return Node(None, "10.0.0.1", name, LAUNCHED, "c5.xlarge", False, {TAG_AUTOSCALED: "true"})


def tracker() -> NodeTracker:
    return NodeTracker([C5], default_zone="z", ledger_ttl=TTL)


def unlisted(t: NodeTracker) -> tuple[Node, Node]:
    """``a`` and ``b`` listed and joined at T0 + 10; ``a`` left out of the listing at
    T0 + 20 (the same ``b`` listed, the same read, so ``b``'s record is kept)."""
    a, b = node("a"), node("b")
    t.observe([a, b], frozenset({"a", "b"}), T0 + 10)
    read = frozenset({"b"})
    t.observe([b], read, T0 + 20)
    assert "a" in t.seen_joined() and t.get("a") is None
    return a, b


def restarted(t: NodeTracker) -> NodeTracker:
    """A new daemon's tracker, given what the store kept of ``t`` (before its first listing)."""
    journal = LaunchJournal(DurableStore(None))
    journal.sync(t)
    restored = LaunchJournal(DurableStore(None))
    restored._load(journal._dump())
    fresh = tracker()
    restored.restore(fresh)
    return fresh


def test_forgotten_after_ledger_ttl_while_the_listing_repeats() -> None:
    t = tracker()
    a, b = unlisted(t)
    read = frozenset({"b"})
    for now in range(30, 130, 10):  # the very same listing and read, past the TTL
        t.observe([b], read, T0 + now)
    assert "a" not in t.seen_joined()
    t.observe([a, b], read, T0 + 130)  # listed again, unread, past nothing: never joined
    assert t.get("a").state is TrackedState.BOOTING  # type: ignore[union-attr]


def test_the_journal_drops_a_node_once_forgotten() -> None:
    t = tracker()
    journal = LaunchJournal(DurableStore(None))
    _, b = unlisted(t)
    journal.sync(t)
    assert "a" in journal._dump()["joined"]
    t.observe([b], frozenset({"b"}), T0 + 20 + TTL)  # nothing else changes
    journal.sync(t)
    assert "a" not in journal._dump()["joined"]


def test_a_restart_does_not_extend_what_is_remembered() -> None:
    t = tracker()
    _, b = unlisted(t)  # a unlisted since T0 + 20
    t = restarted(t)  # at T0 + 100: the new daemon's first listing still leaves a out
    t.observe([b], frozenset({"b"}), T0 + 100)
    # T0 + 125: unlisted for 105 s > ledger_ttl, as a daemon that did not restart
    t.observe([b], frozenset({"b"}), T0 + 125)
    assert "a" not in t.seen_joined()  # a274819: remembered until T0 + 200


def test_after_a_restart_forgotten_at_the_latest_ledger_ttl_after_the_first_listing() -> None:
    """(Passes on a274819; no test caught a mutant that keeps ``_known`` after the first
    listing, so that a node it names is remembered until it is listed again.)"""
    t = tracker()
    a, b = unlisted(t)
    t = restarted(t)
    t.observe([b], frozenset({"b"}), T0 + 100)
    t.observe([b], frozenset({"b"}), T0 + 100 + TTL)
    assert "a" not in t.seen_joined()
    t.observe([a, b], frozenset({"b"}), T0 + 110 + TTL)
    assert t.get("a").joined_at is None  # type: ignore[union-attr]


def test_a_node_terminated_while_unlisted_is_not_taken_back_joined() -> None:
    """Failed on a274819 (low severity; fixed: marking a node terminated forgets it).
    ``Controller.terminate`` (the power saver, the Slurm clean-up loop) awaits
    ``terminateNodes`` outside the pass lock and marks the nodes TERMINATED after it
    returns; a pass whose listing already leaves the node out (shutting-down is not listed)
    runs in between, so the node is in ``_gone`` and the mark is a no-op. A listing that
    shows it again (the eventual consistency ``_gone`` exists for) then takes it back READY,
    joined, as capacity, from a node shoal terminated.
    """
    t = tracker()
    a, b = unlisted(t)  # the pass's listing during terminateNodes
    t.mark("a", TrackedState.TERMINATED)  # terminateNodes returned
    assert "a" not in t.seen_joined()  # a274819: still remembered (and saved) as joined
    t.observe([a, b], frozenset({"b"}), T0 + 40)
    assert t.get("a").state is not TrackedState.READY  # type: ignore[union-attr]
