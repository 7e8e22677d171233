"""Leader election's lease logic (``daemon.leader``) on the in-memory store and a FakeClock.

The store (``MemoryElection``) expires a lease ``ttl`` after its last renewal, as etcd does;
the tests check the daemon's side: one leader, failover within one TTL after a crash, a
handover at once after a resignation, and the split-brain guard: a leader whose renewals stop
(the store cut off, or the renewer dead without a word) steps down on its own clock BEFORE
its lease can pass to another daemon.
"""

from __future__ import annotations

import asyncio
import itertools
import logging

import configs
import pytest
from shoal.daemon.leader import lease_margin
from shoal.daemon.leader.memory import MemoryElection, MemoryElector
from shoal.runtime.testing import FakeClock

TTL = 10.0
CAMPAIGNS: set[asyncio.Task[None]] = set()  # the followers' campaigns, referenced


async def two(clock: FakeClock) -> tuple[MemoryElection, MemoryElector, MemoryElector]:
    """Two electors campaigning; ``a`` leads (it asked first)."""
    election = MemoryElection(clock, TTL)
    a, b = election.elector("a", "http://a"), election.elector("b", "http://b")
    await clock.run_until(a.campaign())
    campaign = asyncio.create_task(b.campaign())
    CAMPAIGNS.add(campaign)
    campaign.add_done_callback(CAMPAIGNS.discard)
    await clock.settle()
    assert a.is_leader and not b.is_leader
    assert b.leader is not None and b.leader.name == "a"  # the follower knows who leads
    return election, a, b


async def when_leading(clock: FakeClock, elector: MemoryElector) -> float:
    await clock.run_until(elector.campaign(), limit=10 * TTL)
    return clock.monotonic()


async def test_one_leader_for_a_long_time_and_epochs_grow() -> None:
    clock = FakeClock()
    election, a, b = await two(clock)
    await clock.advance(20 * TTL)  # many renewals
    assert a.is_leader and not b.is_leader and a.epoch == 1 and b.epoch is None
    await a.resign()
    await clock.run_until(b.campaign())
    assert b.epoch is not None and b.epoch > 1
    assert [name for name, _ in election.grants] == ["a", "b"]
    await b.close()


async def test_a_crashed_leader_is_replaced_within_one_ttl() -> None:
    clock = FakeClock()
    _, a, b = await two(clock)
    await clock.advance(TTL / 2)
    crashed_at = clock.monotonic()
    a.crash()
    led_at = await when_leading(clock, b)
    assert 0 < led_at - crashed_at <= TTL
    await b.close()


async def test_a_resigning_leader_hands_over_at_once() -> None:
    clock = FakeClock()
    _, a, b = await two(clock)
    await clock.advance(3.0)
    resigned_at = clock.monotonic()
    await a.resign()
    assert await when_leading(clock, b) == resigned_at
    await a.close()
    await b.close()


@pytest.mark.parametrize("fault", ["store-unreachable", "renewer-died"])
async def test_a_leader_that_cannot_renew_steps_down_before_its_lease_can_pass(
    fault: str,
) -> None:
    """The split brain seen when the keepalive task died silently: the guard, reading only
    the clock, ends the term ``margin`` before the store could give the key to ``b``."""
    clock = FakeClock()
    election, a, b = await two(clock)
    await clock.advance(TTL)
    lost = asyncio.ensure_future(a.lost())
    if fault == "store-unreachable":
        election.partition("a")
    else:
        term = a._term
        assert term is not None
        term.tasks[0].cancel()  # the renewer, gone without a word; the guard still runs
    await clock.run_until(asyncio.shield(lost), limit=2 * TTL)
    stepped_down = clock.monotonic()
    assert not a.is_leader and a.epoch is None
    led_at = await when_leading(clock, b)
    assert led_at - stepped_down >= lease_margin(TTL) - 1e-9
    election.heal("a")
    await b.close()
    await a.close()


async def test_a_leader_rides_out_a_store_outage_that_ends_before_its_deadline() -> None:
    """An etcd electing a new raft leader answers no renewal for a second or two. A failed
    renewal is tried again soon, not a whole ``renew_every`` later, so an outage that ends
    before the deadline (``ttl - margin`` after the last renewal sent) keeps the leader; the
    wait of ``renew_every`` stepped down here (its next try fell after the deadline)."""
    clock = FakeClock()
    election, a, b = await two(clock)
    await clock.advance(TTL)
    term = a._term
    assert term is not None
    last_sent = term.deadline - (TTL - a.margin)
    await clock.advance(last_sent + 0.01 - clock.monotonic())  # just after a renewal
    assert term.deadline - (TTL - a.margin) == last_sent  # no renewal since
    election.partition("a")
    await clock.advance(term.deadline - 0.5 - clock.monotonic())  # every try fails
    assert a.is_leader and term.deadline == last_sent + TTL - a.margin  # none got through
    election.heal("a")
    await clock.advance(0.4)
    assert a.is_leader and a.epoch == 1 and term.deadline > last_sent + TTL - a.margin
    await clock.advance(3 * TTL)
    assert a.is_leader and not b.is_leader and [n for n, _ in election.grants] == ["a"]
    await a.close()
    await b.close()


async def test_renewals_are_sent_every_renew_every_however_slow_the_answers() -> None:
    """A renewal that takes a while to answer (a member timing out before the next one
    serves it) does not push the next one back: they are sent ``renew_every`` apart. Before,
    the wait began at the answer, so a 2.5 s answer made the period 5.8 s at ttl 10, and a
    leader whose every renewal met a hung member passed its 7.5 s deadline."""
    clock = FakeClock()
    election = MemoryElection(clock, TTL)
    sends: list[float] = []

    class Slow(MemoryElector):
        async def _renew(self, lease: object) -> bool:
            sends.append(clock.monotonic())
            await clock.sleep(0.75 * self.renew_every)
            return await super()._renew(lease)

    a = Slow(election, election.elector("a").me)
    await clock.run_until(a.campaign())
    await clock.advance(5 * TTL)
    gaps = [later - earlier for earlier, later in itertools.pairwise(sends)]
    assert len(gaps) >= 10 and all(abs(g - a.renew_every) < 1e-6 for g in gaps), gaps
    assert a.is_leader
    await a.close()


async def test_one_warning_per_run_of_failed_renewals_and_one_line_when_it_ends(
    caplog: pytest.LogCaptureFixture,
) -> None:
    """Retried every ``retry_every``, a store outage would log a warning 10 times a second;
    the first failure is the warning, the rest debug, and the renewal that ends the run says
    how many failed and for how long."""
    clock = FakeClock()
    election, a, b = await two(clock)
    await clock.advance(TTL)
    caplog.set_level(logging.DEBUG, logger="shoal.daemon.leader")
    caplog.clear()
    election.partition("a")
    await clock.advance(a.renew_every + 4 * a.retry_every)
    election.heal("a")
    await clock.advance(a.retry_every)
    assert a.is_leader
    failed = [r for r in caplog.records if "event=lease_renew_failed" in r.getMessage()]
    assert len(failed) >= 4
    assert [r.levelno for r in failed] == [logging.WARNING] + [logging.DEBUG] * (len(failed) - 1)
    renewed = [r.getMessage() for r in caplog.records if "event=lease_renewed" in r.getMessage()]
    assert len(renewed) == 1 and f"failures={len(failed)} " in renewed[0], renewed
    await a.close()
    await b.close()


async def test_a_renewal_the_store_refuses_ends_the_term_at_once() -> None:
    """The lease is gone on the store's side (deleted, expired while this daemon was
    stopped): the next renewal says so and the term ends then, not at the deadline."""
    clock = FakeClock()
    election, a, b = await two(clock)
    election._drop()  # the key and its lease gone, as `etcdctl lease revoke` does
    await clock.advance(a.renew_every)
    assert not a.is_leader
    assert a._term is not None and a._term.reason == "lease-expired"
    await clock.run_until(b.campaign())
    await a.close()
    await b.close()


def test_the_ha_section_default_key_and_ttl_rules() -> None:
    from shoal.daemon.config import ConfigError, parse_config
    from shoal.daemon.leader.etcd import EtcdElector
    from shoal.daemon.leader.gate import build_elector

    assert parse_config(configs.config()).ha is None
    assert build_elector(parse_config(configs.config()), FakeClock()) is None  # acts alone
    config = parse_config(configs.config(ha={"etcd": ["http://127.0.0.1:2379"], "name": "x"}))
    elector = build_elector(config, FakeClock())
    assert isinstance(elector, EtcdElector)
    assert elector.key == f"/shoal/{config.cluster_name}/leader" and elector.ttl == 10.0
    assert elector.me.name == "x" and elector.me.address == f"http://{config.api.listen}"
    for ttl in ("1s", "2.5s"):
        with pytest.raises(ConfigError, match=r"ha.ttl: .*whole seconds, at least 2s"):
            parse_config(configs.config(ha={"etcd": ["http://127.0.0.1:2379"], "ttl": ttl}))
    with pytest.raises(ConfigError, match=r"ha.etcd"):
        parse_config(configs.config(ha={"etcd": []}))


def test_the_commented_ha_block_of_the_example_loads() -> None:
    from pathlib import Path

    import yaml
    from shoal.daemon.config import parse_config

    lines = (Path(__file__).resolve().parents[2] / "config.example.yaml").read_text()
    block = lines.split("\n# ha:\n", 1)[1].split("\n\n", 1)[0]
    text = "ha:\n" + "\n".join(line.removeprefix("#") for line in block.splitlines())
    ha = yaml.safe_load(text)["ha"]
    assert set(ha) == {"etcd", "ttl", "key", "name", "advertise"}
    assert parse_config(configs.config(ha=ha)).ha is not None
