"""Review of a274819 (a joined node a listing leaves out is remembered in ``_gone``): what
the tracker remembers of such a node is its record as last listed; the reads that come
while it is unlisted are not applied to it.

``test_reads_while_unlisted_count`` failed on a274819 (fixed: the reads apply to what is
remembered): a node missing from the reads for a
while (less than ``unhealthy_timeout``), then unlisted for a few minutes while every read
showed it joined again, comes back missing since before it was unlisted; the first read that
leaves it out after it is listed again has it replaced as unhealthy at once, though the
scheduler saw it joined the whole time it was unlisted."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from test_unlisted_joined import _joined_node

if TYPE_CHECKING:
    from loop_harness import Harness


async def _passes(h: Harness, seconds: int, joined: set[str]) -> None:
    """A pass every ten seconds for ``seconds``, each read showing ``joined``; none
    terminates a node."""
    for _ in range(seconds // 10):
        await h.clock.advance(10)
        h.set_demand(h.jobs(0), joined=joined)
        assert (await h.pass_()).terminated == ()


async def test_reads_while_unlisted_count(harness_factory: Any) -> None:
    h: Harness = await harness_factory(scaler={"unneeded_time": "1h"})
    node_id = await _joined_node(h)
    await _passes(h, 100, set())  # missing from the reads for 100 s (unhealthy at 600)
    h.provider.unlist(node_id, 510)  # out of the listings for 510 s ...
    await _passes(h, 500, {node_id})  # ... while every read shows it joined
    assert h.controller.tracker.get(node_id) is None
    await h.clock.advance(20)  # listed again (remembered: unlisted 520 s < ledger_ttl) ...
    h.set_demand(h.jobs(0), joined=set())  # ... and one read flaps
    record = await h.pass_()
    tracked = h.controller.tracker.get(node_id)
    assert tracked is not None and tracked.joined_at is not None
    assert record.terminated == ()  # a274819: terminated as unhealthy at once
    # missing since this read, not since 620 s ago (the reads in between showed it)
    assert tracked.missing_since == h.clock.now()
