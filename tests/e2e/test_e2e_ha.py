"""Issue 21, first slice: two `shoal run` daemons on one real etcd, exactly one leading.

etcd is Debian's (``etcd_server``: free loopback client and peer ports, the test's own data
dir, stopped by pid); the daemons are real processes on the simulated cloud with ``ha.ttl``
2 s (etcd's minimum). Who leads is read from each daemon's ``/v1/status`` and ``/metrics``,
as an operator would. The waits poll those over loopback (the processes run on real time);
the bounds are the issue's: failover after kill -9 within TTL + 1 s, a SIGTERM handover in
under 100 ms (timed by the daemons' own logs), and a leader that loses etcd for 7 s stepping
down before its lease could move, with no launch by either daemon until one leads again.
"""

from __future__ import annotations

import asyncio
import signal
import time
from collections.abc import Iterator
from datetime import datetime
from pathlib import Path
from typing import Any

import pytest
from etcd_server import EtcdCluster, EtcdServer, etcd_cluster, etcd_server

pytestmark = pytest.mark.e2e

TTL = 2.0
MARGIN = 0.5  # daemon.leader.lease_margin(2)
CLUSTER_TTL = 10.0  # the 3-member etcd's test (ha.ttl's default): see there


@pytest.fixture
def etcd(tmp_path: Path) -> Iterator[EtcdServer]:
    with etcd_server(tmp_path / "etcd") as server:
        yield server


def section(daemon: Any, path: str, key: str) -> Any:
    """``key`` of the daemon's answer to GET ``path``; None while it does not answer 200."""
    try:
        result = daemon.get(path, timeout=1.0)
    except OSError:
        return None
    return result.json()[key] if result.status == 200 else None


def leadership(daemon: Any) -> dict[str, Any] | None:
    return section(daemon, "/v1/status", "leadership")


def role(daemon: Any) -> str | None:
    view = leadership(daemon)
    return view["role"] if view is not None else None


def knows_leader(daemon: Any, name: str, its_role: str) -> bool:
    view = leadership(daemon)
    leader = view["leader"] if view is not None else None
    return view is not None and view["role"] == its_role and (leader or {}).get("name") == name


def leader_gauge(daemon: Any, e2e: Any) -> float:
    return float(e2e.metric(daemon.metrics(), "shoal_leader"))


def start_pair(
    shoal: Any,
    e2e: Any,
    etcd: EtcdServer | EtcdCluster,
    ttl: float = TTL,
    urls: list[str] | None = None,
) -> tuple[Any, Any]:
    """``a`` starts first and leads; ``b`` follows. Returns (a, b) once both say so. Both
    list ``urls`` as ``ha.etcd`` (the cluster's members in their order, by default)."""
    daemons = []
    if urls is None:
        urls = etcd.urls if isinstance(etcd, EtcdCluster) else [etcd.url]
    for name in ("a", "b"):
        config = e2e.simulated_config(
            e2e.free_port(), ha={"etcd": urls, "ttl": f"{ttl:.0f}s", "name": name}
        )
        daemon = shoal(config, name=name).start(wait_ready=False)
        want = "leader" if name == "a" else "follower"
        e2e.wait_for(f"{name} {want}", lambda d=daemon, w=want: knows_leader(d, "a", w), 15.0)
        daemons.append(daemon)
    a, b = daemons
    assert (leader_gauge(a, e2e), leader_gauge(b, e2e)) == (1, 0)
    assert b.get("/healthz").status == 200 and b.get("/readyz").status == 503
    forwarded = b.put_demand({"jobs": [], "running": []})  # to the leader (test_e2e_ha_forward)
    assert forwarded.status == 200 and forwarded.headers["X-Shoal-Served-By"] == "a"
    return a, b


def test_kill9_of_the_leader_fails_over_within_ttl_plus_one_second(
    shoal: Any, e2e: Any, etcd: EtcdServer
) -> None:
    a, b = start_pair(shoal, e2e, etcd)
    killed = time.monotonic()
    a.kill9()
    e2e.wait_for("b leads", lambda: role(b) == "leader", TTL + 1.0, on_timeout=b.tail)
    took = time.monotonic() - killed
    print(f"failover after kill -9: {took:.3f}s (ttl {TTL:.0f}s)")
    assert took <= TTL + 1.0
    b.wait_ready()  # the new leader reconciled and takes demand
    assert leader_gauge(b, e2e) == 1


def logged_at(daemon: Any, event: str) -> float:
    """When the daemon logged ``event`` first (its log's own timestamp, milliseconds: the
    daemons share the host's clock), in epoch seconds."""
    for line in daemon.log_path.read_text().splitlines():
        if event in line:
            stamp = datetime.strptime(line[:23], "%Y-%m-%d %H:%M:%S,%f")
            return stamp.timestamp()
    raise AssertionError(f"{event!r} not in {daemon.log_path}")


def test_sigterm_of_the_leader_hands_over_in_under_100ms(
    shoal: Any, e2e: Any, etcd: EtcdServer
) -> None:
    """Timed from the daemons' own logs: a's ``event=stopping reason=SIGTERM`` to b's
    ``event=leading`` (the issue's bound, 100 ms; measured 6-9 ms here). Polling b's /v1/status
    from outside adds the test's HTTP round trips on a loaded host, so it only bounds the
    handover seen by a client (0.5 s)."""
    a, b = start_pair(shoal, e2e, etcd)
    signalled = time.monotonic()
    a.signal(signal.SIGTERM)
    e2e.wait_for("b leads", lambda: role(b) == "leader", 1.0, interval=0.002, on_timeout=b.tail)
    seen = time.monotonic() - signalled
    assert a.proc.wait(timeout=10) == 0  # the one SIGTERM: a clean exit
    assert "event=lease_revoked name=a" in a.log_path.read_text()
    took = logged_at(b, "event=leading name=b") - logged_at(a, "event=stopping reason=SIGTERM")
    print(f"handover after SIGTERM: {took * 1000:.0f}ms logged, {seen * 1000:.0f}ms polled")
    assert 0 <= took < 0.1
    assert seen < 0.5


OUTAGE = 7.0  # the issue's: longer than two TTLs, so the lease has run out on etcd's side


def launched(daemon: Any, e2e: Any) -> float:
    """Nodes this daemon launched (``shoal_scale_ups_total``; each daemon has its own
    simulated cloud, so the sum over both is every launch)."""
    return float(e2e.metric(daemon.metrics(), "shoal_scale_ups_total"))


def test_an_etcd_outage_of_seven_seconds_stops_the_leader_and_nothing_launches(
    shoal: Any, e2e: Any, etcd: EtcdServer
) -> None:
    """etcd stops answering for 7 s while demand asks for capacity: the leader, which takes
    the demand before it knows, cannot write its launch's intent (fenced, in etcd), steps
    down before its lease could move, and neither daemon launches anything until one leads
    again; then the new leader launches what the demand needs, once."""
    a, b = start_pair(shoal, e2e, etcd)
    assert (launched(a, e2e), launched(b, e2e)) == (0, 0)
    etcd.pause()
    paused = time.monotonic()
    demand = {"jobs": [e2e.job(8)], "running": []}
    pushed = a.put_demand(demand)
    assert pushed.status == 200 and pushed.headers["X-Shoal-Served-By"] == "a"
    # a's last confirmed renewal was sent at most ttl/3 before the pause; it steps down
    # ttl - margin after it: before etcd could let the lease expire (ttl after it received it)
    e2e.wait_for("a steps down", lambda: leader_gauge(a, e2e) == 0, TTL, interval=0.01)
    stepped_down = time.monotonic() - paused
    print(f"leader stepped down {stepped_down:.3f}s into the etcd outage (ttl {TTL:.0f}s)")
    assert stepped_down < TTL - MARGIN + 0.1
    # a follower now: none of the cluster its term saw is shown (its gauges emptied when the
    # term ended, ShoalMetrics.forget_cluster); that the demand reached its planner, which
    # asked for capacity, is in its log below (plan_launch, then launch_not_journaled)
    assert e2e.metric(a.metrics(), "shoal_jobs_queued") == 0
    polls = 0
    while time.monotonic() - paused < OUTAGE:  # the outage goes on: nobody leads or launches
        assert (leader_gauge(a, e2e), leader_gauge(b, e2e)) == (0, 0)
        assert role(a) == role(b) == "follower"
        assert (launched(a, e2e), launched(b, e2e)) == (0, 0)
        polls += 1
        time.sleep(0.05)
    assert polls > 20  # watched throughout, not once
    log = a.log_path.read_text()
    assert "reason=renewal-deadline" in log
    assert "event=plan_launch" in log  # the demand reached a's planner
    assert "event=launch_not_journaled" in log  # it tried, and did not launch unjournaled
    etcd.resume()

    def one_leader() -> bool:
        return sorted([role(a), role(b)], key=str) == ["follower", "leader"]

    both = lambda: a.tail() + "\n" + b.tail()  # noqa: E731
    e2e.wait_for("one leader again", one_leader, 3 * TTL, on_timeout=both)
    assert b.put_demand(demand).status == 200  # to whichever leads now (b forwards)

    def some_launched() -> float | None:
        total = launched(a, e2e) + launched(b, e2e)
        return total if total > 0 else None

    first = e2e.wait_for("the new leader launches", some_launched, 10.0, on_timeout=both)
    leader, follower = (a, b) if role(a) == "leader" else (b, a)
    passes = leader.status()["passes"]
    # the same need (a longer wall time changes no plan), pushed again: one more pass
    again = {"jobs": [e2e.job(8, wall_time="3h")], "running": []}
    assert b.put_demand(again).status == 200

    def passed() -> bool:
        last = leader.status()["last_pass"]
        return last is not None and last["number"] > passes

    e2e.wait_for("one more pass", passed, 10.0, on_timeout=leader.tail)
    assert launched(follower, e2e) == 0
    assert launched(leader, e2e) == first == e2e.metric(leader.metrics(), "shoal_target_nodes")


async def test_a_leader_whose_key_is_deleted_by_hand_steps_down_at_its_next_renewal(
    etcd: EtcdServer,
) -> None:
    """`etcdctl del` of the key leaves the lease alive: renewing alone would keep this daemon
    leading while another takes the free key. The renewal checks the key too."""
    import aiohttp
    from shoal.daemon.leader import LeaderInfo
    from shoal.daemon.leader.etcd import EtcdElector, _b64
    from shoal.runtime.clock import SystemClock

    key = "/shoal/e2e/leader"
    a = EtcdElector([etcd.url], key, LeaderInfo("a"), TTL, SystemClock())
    b = EtcdElector([etcd.url], key, LeaderInfo("b"), TTL, SystemClock())
    try:
        await a.campaign()
        async with aiohttp.ClientSession() as http:
            url = f"{etcd.url}/v3/kv/deleterange"
            async with http.post(url, json={"key": _b64(key)}) as response:
                assert (await response.json())["deleted"] == "1"
        deleted = time.monotonic()
        await asyncio.wait_for(a.lost(), TTL / 3 + 1.0)
        assert a._term is not None and a._term.reason == "lease-expired"
        print(f"stepped down {time.monotonic() - deleted:.3f}s after the key was deleted")
        await asyncio.wait_for(b.campaign(), TTL)
        assert b.is_leader and not a.is_leader
    finally:
        await a.close()
        await b.close()


@pytest.mark.parametrize(
    ("victim", "fault"),
    [
        ("a follower", "kill -9"),
        ("the raft leader", "kill -9"),
        ("the raft leader, listed first", "SIGSTOP"),
    ],
)
def test_the_loss_of_one_of_three_etcd_members_changes_no_shoal_leader(
    shoal: Any, e2e: Any, tmp_path: Path, victim: str, fault: str
) -> None:
    """A 3-member etcd on loopback (three processes, their own ports and data dirs) loses one
    member: the shoal leader stays the same daemon in the same epoch, watched for more than
    two TTLs, and the follower keeps following it. Both daemons list all three client URLs
    (``ha.etcd``); a call moves on from a member that cannot serve it.

    kill -9 refuses connections at once. SIGSTOP is a member whose host is powered off or cut
    off: connections hang. Listed first, before the calls started at the member that answered
    last, every call waited one timeout on it (two per renewal) and the leader stepped down,
    then held each new term for 2.5 s of every 25 s (``reason=renewal-deadline``).

    TTL 10 s here, ``ha.ttl``'s default: losing the raft leader stalls every renewal for
    etcd's own election (its election timeout is 1 s by default; 2.4 s and more on a loaded
    machine, seen here), and a leader rides out an outage of about ``ttl`` x 2/5 when each
    failed call fails fast (3.9 s at 10 s, 1.96 s at 5 s). With a 5 s lease the shoal leader
    stepped down by design under load (``reason=renewal-deadline``: once in CI, and 2 runs in
    18 with three busy loops beside the test, against 0 in 12 at 10 s); with 2 s, every time."""
    with etcd_cluster(tmp_path / "etcd") as cluster:
        raft = cluster.leader()
        assert raft is not None
        target = (
            raft if "raft leader" in victim else next(m for m in cluster.members if m is not raft)
        )
        urls = [target.url] + [u for u in cluster.urls if u != target.url]
        a, b = start_pair(shoal, e2e, cluster, ttl=CLUSTER_TTL, urls=urls)
        before = leadership(a)
        assert before is not None and before["role"] == "leader"
        if fault == "kill -9":
            target.kill9()
        else:
            target.pause()
        lost = time.monotonic()
        while time.monotonic() - lost < 2 * CLUSTER_TTL + 1.0:
            assert leadership(a) == before, (victim, fault, leadership(a), before)
            assert knows_leader(b, "a", "follower")
            assert (leader_gauge(a, e2e), leader_gauge(b, e2e)) == (1, 0)
            time.sleep(0.05)
        survivors = [m for m in cluster.members if m is not target]
        assert all(m.healthy() for m in survivors)
        print(f"{fault} of {victim}: shoal leader a, epoch {before['epoch']}, unchanged")
        assert "event=leadership_lost" not in a.log_path.read_text()
