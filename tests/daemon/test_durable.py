"""The durable store (daemon/durable.py): coalesced writes off the event loop, and the launch
ledger surviving a crash of the daemon on a cloud whose listing lags (issue 17, bug 4)."""

from __future__ import annotations

import asyncio
import json
import os
import shutil
import subprocess
import sys
import threading
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Any

import configs
import pytest
from ledger_kit import killed_before
from loop_harness import config_dict, make_harness
from shoal.daemon.config import load_config, parse_config
from shoal.daemon.demand import DemandFailure
from shoal.daemon.durable import (
    LOCK_FILE,
    STATE_FILE,
    DurableStore,
    LaunchJournal,
    StateError,
    offering_to_json,
)
from shoal.daemon.service import Service
from shoal.providers.node_provider import TAG_REQUEST_ID, client_token
from shoal.providers.outcomes import LaunchRequest
from shoal.providers.simulated import SimulatedProvisioner
from shoal.runtime.files import write_json_atomic
from shoal.runtime.testing import FakeClock
from shoal.scaler.model import AddCause, CapacityType, Launch, Offering

if TYPE_CHECKING:
    from loop_harness import Harness

ZONE_A, ZONE_B = "us-west-2a", "us-west-2b"


async def test_concurrent_changes_share_writes_and_the_write_runs_off_the_loop(
    tmp_path: Path,
) -> None:
    """A burst of 200 flushes costs two writes (the one running, and one for every change
    made meanwhile); the writes run on another thread, and the loop keeps serving while one
    is blocked (a stalled disk does not stall /healthz)."""
    loop_thread = threading.get_ident()
    release = threading.Event()
    threads: list[int] = []

    def slow_writer(path: Path, data: Any) -> None:
        threads.append(threading.get_ident())
        release.wait(10)
        write_json_atomic(path, data)

    store = DurableStore.open(tmp_path, writer=slow_writer)
    counter = {"n": 0}
    store.section("test", lambda: {"n": counter["n"]})

    async def change() -> None:
        counter["n"] += 1
        await store.flush()

    first = asyncio.ensure_future(change())
    await asyncio.sleep(0.05)  # the first write has started and is blocked on the "disk"
    assert threads and store.writes == 0
    rest = [asyncio.ensure_future(change()) for _ in range(199)]
    pings = 0
    for _ in range(5):  # the loop is free while the write blocks
        await asyncio.sleep(0)
        pings += 1
    assert pings == 5 and not first.done()
    release.set()
    await asyncio.wait_for(asyncio.gather(first, *rest), 10)
    assert store.writes == 2
    assert all(t != loop_thread for t in threads)
    assert json.loads((tmp_path / STATE_FILE).read_text())["test"] == {"n": 200}


async def test_without_a_state_dir_nothing_is_written(tmp_path: Path) -> None:
    calls: list[Path] = []
    store = DurableStore.open(None, writer=lambda path, data: calls.append(path))
    store.section("test", dict)
    await store.flush()
    assert calls == [] and store.writes == 0


async def _launch_crashes_after_answer(h: Harness, state: Path, crashed: Path) -> None:
    """Run one pass whose launch is answered by the cloud; ``crashed`` gets a copy of
    ``state`` as it is right after the answer: what disk holds when kill -9 lands then."""
    real = h.provider.launch_offering

    async def launch_then_crash(request: LaunchRequest) -> list[str]:
        ids = await real(request)
        if state.exists():
            shutil.copytree(state, crashed)
        else:
            crashed.mkdir()
        return ids

    h.provider.launch_offering = launch_then_crash  # type: ignore[method-assign]
    h.set_demand(h.jobs(12))  # 3 four-core nodes
    record = await h.pass_()
    h.provider.launch_offering = real  # type: ignore[method-assign]
    assert record.launched == 3


async def test_a_restart_right_after_runinstances_answered_launches_nothing_twice(
    tmp_path: Path, harness_factory: Any
) -> None:
    """kill -9 right after the cloud answered (ids not booked yet), restart while the listing
    still lags: the intent on disk stands for the launch (placeholders found again by the
    request-id tag), so the restarted daemon waits for it instead of launching 3 more."""
    state, crashed = tmp_path / "state", tmp_path / "crashed"
    h: Harness = await harness_factory(state_dir=str(state))
    h.provider.listing_lag = 8.0
    await _launch_crashes_after_answer(h, state, crashed)
    assert await h.provider.getProvisionedWorkers() == []  # not listed yet

    await h.clock.advance(1)
    fresh: Harness = await harness_factory(state_dir=str(crashed), provider=h.provider)
    launched = set(h.provider.worker_names())
    await fresh.drive(fresh.controller.reconcile())
    fresh.set_demand(fresh.jobs(12))
    assert (await fresh.pass_()).launched == 3  # the replay's 3 (the plan launched none)
    # the intent was made again by that pass: its client token returned the 3 launched
    assert {t.id for t in fresh.controller.tracker.pending()} == launched
    await fresh.clock.advance(10)  # now listed: the ledger entries give way to the instances
    assert (await fresh.pass_()).launched == 0
    assert len(await h.provider.getProvisionedWorkers()) == 3
    assert fresh.controller.tracker.pending() == []
    saved = json.loads((crashed / STATE_FILE).read_text())["ledger"]
    assert (saved["intents"], saved["entries"]) == ({}, [])  # nothing in flight any more


async def test_a_restart_after_the_answer_was_booked_keeps_the_ids(
    tmp_path: Path, harness_factory: Any
) -> None:
    state = tmp_path / "state"
    h: Harness = await harness_factory(state_dir=str(state))
    h.provider.listing_lag = 8.0
    h.set_demand(h.jobs(12))
    assert (await h.pass_()).launched == 3
    await h.settle()  # the booked ids are written in the background
    launched = {t.id for t in h.controller.tracker.pending()}
    assert len(launched) == 3
    entries = json.loads((state / STATE_FILE).read_text())["ledger"]["entries"]
    assert {e["id"] for e in entries} == launched

    fresh: Harness = await harness_factory(state_dir=str(state), provider=h.provider)
    await fresh.drive(fresh.controller.reconcile())
    assert {t.id for t in fresh.controller.tracker.pending()} == launched
    fresh.set_demand(fresh.jobs(12))
    assert (await fresh.pass_()).launched == 0
    assert len(h.launch_calls()) == 1


async def test_an_intent_whose_launch_never_happened_holds_capacity_until_the_ttl(
    tmp_path: Path, harness_factory: Any
) -> None:
    """Crash after the intent was written but before addNodes reached the cloud: nothing is
    ever listed, so the placeholders hold that capacity only until launch_ledger_ttl."""
    state = tmp_path / "state"
    store = DurableStore.open(state)
    store.section(
        "ledger",
        lambda: {
            "intents": {
                "shoal-lost": {
                    "node_type": "c5.xlarge",
                    "count": 3,
                    "offering": {
                        "instance_type": "c5.xlarge",
                        "zone": "us-west-2a",
                        "capacity": "on-demand",
                    },
                    "at": 1_700_000_000.0,
                }
            },
            "entries": [],
        },
    )
    await store.flush()
    h: Harness = await harness_factory(
        state_dir=str(state), scaler={"launch_ledger_ttl": "5m", "interval": "30s"}
    )
    await h.drive(h.controller.reconcile())
    h.set_demand(h.jobs(12))
    assert (await h.pass_()).launched == 0  # waits for the launch in flight
    await h.clock.advance(301)
    assert (await h.pass_()).launched == 3  # its TTL passed: launched now


def _plan_intent(tags: dict[str, str] | None = None, gang: bool = False) -> dict[str, Any]:
    """A plan's launch unit of 3 c5.xlarge in us-west-2a, on disk with no answer."""
    return {
        "node_type": "c5.xlarge",
        "count": 3,
        "offering": {"instance_type": "c5.xlarge", "zone": ZONE_A, "capacity": "on-demand"},
        "at": 1_700_000_000.0,
        "replay": {"tags": tags or {}, "gang": gang, "cause": "demand"},
    }


async def _with_intent(state: Path, intent: dict[str, Any]) -> None:
    store = DurableStore.open(state)
    store.section("ledger", lambda: {"intents": {"shoal-lost": intent}, "entries": []})
    await store.flush()
    store.close()


async def test_a_plan_intent_whose_launch_never_happened_is_launched_at_the_first_pass(
    tmp_path: Path, harness_factory: Any
) -> None:
    """The intent of a plan's launch unit was written and the daemon stopped (or its
    store's answer was lost: etcd applied a write whose client gave up) before addNodes
    reached the cloud. The restarted daemon makes the unit again under its own client
    token: launched now, not held as placeholders for the ledger's TTL while jobs wait."""
    state = tmp_path / "state"
    await _with_intent(state, _plan_intent({"team": "hpc"}))
    h: Harness = await harness_factory(
        state_dir=str(state), scaler={"launch_ledger_ttl": "5m", "interval": "30s"}
    )
    await h.drive(h.controller.reconcile())
    assert h.launch_calls() == []  # reconcile launches nothing
    h.set_demand(h.jobs(12))
    assert (await h.pass_()).launched == 3  # the replay's 3 (the plan launched none)
    (call,) = h.launch_calls()  # the replay, before that plan
    assert call.kwargs["client_token"] == client_token(
        "shoal-lost", Offering("c5.xlarge", ZONE_A, CapacityType.ON_DEMAND)
    )
    pending = h.controller.tracker.pending()
    assert len(pending) == 3 and not any(t.placeholder for t in pending)
    await h.clock.advance(60)
    alive = await h.provider.getProvisionedWorkers()
    assert len(alive) == 3
    assert {n.tags["team"] for n in alive} == {"hpc"}  # the tags as first sent
    assert {n.tags[TAG_REQUEST_ID] for n in alive} == {"shoal-lost"}


async def test_a_replayed_intent_whose_launch_happened_launches_nothing_more(
    tmp_path: Path, harness_factory: Any
) -> None:
    """The same intent, but the cloud did launch it (the answer was what was lost): the
    replay's client token returns those 3 instances, and nothing more is launched, even
    with the offering out of capacity now."""
    state = tmp_path / "state"
    await _with_intent(state, _plan_intent())
    h: Harness = await harness_factory(state_dir=str(state))
    first = await _launched_lost(h.provider, ZONE_A)
    h.provider.set_capacity("c5.xlarge", 0, zone=ZONE_A)
    h.provider.listing_lag = 3600.0  # the listing does not show them
    await h.drive(h.controller.reconcile())
    h.set_demand(h.jobs(12))
    assert (await h.pass_()).launched == 3  # the replay's 3 (the plan launched none)
    assert {t.id for t in h.controller.tracker.pending()} == set(first)
    assert len(h.provider.worker_names()) == 3


def _offering(zone: str) -> Offering:
    return Offering("c5.xlarge", zone, CapacityType.ON_DEMAND)


async def _launched_lost(cloud: SimulatedProvisioner, zone: str, count: int = 3) -> list[str]:
    """What ``_plan_intent``'s unit launched in ``zone`` before its answer was lost: 3
    c5.xlarge (``count``) under its client token there, sent as the daemon sends it (the
    cloud answers a token sent again with other arguments with IdempotentParameterMismatch)."""
    offering = _offering(zone)
    request = LaunchRequest(
        offering=offering,
        count=count,
        client_token=client_token("shoal-lost", offering),
        request_id="shoal-lost",
        spot_bid=None,
        tags=cloud.worker_tags("c5.xlarge", "shoal-lost"),
    )
    return await cloud.launch_offering(request)


async def _restarted_unwanted(state: Path, harness_factory: Any) -> Harness:
    """A daemon started on a plan's intent with no answer (``_plan_intent``), reconciled,
    and one pass with no demand (no plan wants the intent's nodes) made."""
    await _with_intent(state, _plan_intent())
    h: Harness = await harness_factory(state_dir=str(state))
    await h.drive(h.controller.reconcile())
    h.set_demand(h.jobs(0))
    await h.pass_()
    return h


async def test_an_intent_is_made_again_only_once_a_plan_wants_its_nodes(
    tmp_path: Path, harness_factory: Any
) -> None:
    """While no plan wants the 3 nodes the placeholders stand for (no demand: the plan's
    target is 0), the intent is not made again: replayed then, it would launch nodes no plan
    wants. Once demand wants them, the next pass makes it again."""
    state = tmp_path / "state"
    h = await _restarted_unwanted(state, harness_factory)
    assert h.launch_calls() == []
    assert len(h.controller.journal.replays) == 1
    h.set_demand(h.jobs(12))
    assert (await h.pass_()).launched == 3  # the replay's 3 (the plan launched none)
    assert len(h.launch_calls()) == 1 and h.controller.journal.replays == []
    assert len(h.provider.worker_names()) == 3


async def test_an_intent_whose_type_changed_keeps_its_placeholders(
    tmp_path: Path, harness_factory: Any
) -> None:
    """An intent for an offering its node type no longer has (a reload changed the type's
    instance types) is not made again: its token would launch outside the type; its
    placeholders hold until the TTL, as an intent from before replays were kept does."""
    state = tmp_path / "state"
    intent = _plan_intent()
    intent["offering"]["capacity"] = "spot"
    await _with_intent(state, intent)
    h: Harness = await harness_factory(state_dir=str(state))
    await h.drive(h.controller.reconcile())
    await h.pass_()
    assert h.launch_calls() == []
    assert [t.placeholder for t in h.controller.tracker.pending()] == [True] * 3


@pytest.mark.parametrize(
    ("field", "value"),
    [
        ("count", None),
        ("offering", "c5.xlarge"),
        ("at", "soon"),
        ("replay", {"gang": "false"}),
        ("answered", [{"id": "i-1"}]),  # the ids an earlier offering launched: where
    ],
)
async def test_a_malformed_intent_is_refused_at_start_naming_the_file(
    tmp_path: Path, field: str, value: Any
) -> None:
    """A hand-edited (or truncated) intent stops the daemon at start with the file named,
    not with a KeyError in the middle of restoring the ledger; a replay's gang must be a
    JSON boolean ("false" would read as true, and a gang launched all or nothing)."""
    intent = _plan_intent()
    if field == "replay":
        intent["replay"] = {**intent["replay"], **value}
    else:
        intent[field] = value
    await _with_intent(tmp_path, intent)
    store = DurableStore.open(tmp_path)
    try:
        with pytest.raises(StateError, match=r"the ledger in .* is malformed"):
            LaunchJournal(store)
    finally:
        store.close()


HOLDER = """
import sys
from shoal.daemon.durable import DurableStore
store = DurableStore.open(sys.argv[1])  # held while the store lives
print("locked", flush=True)
sys.stdin.read()  # hold the lock until the test closes our stdin
"""


def test_a_second_daemon_on_the_same_state_dir_is_refused(tmp_path: Path) -> None:
    """Issue 17 review, 3: two daemons on one state_dir would each replace the whole file
    and both serve the spool. The second is refused, naming the holder's pid; once the
    holder exits, the lock is free."""
    with subprocess.Popen(
        [sys.executable, "-c", HOLDER, str(tmp_path)],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
    ) as holder:
        try:
            assert holder.stdout is not None and holder.stdout.readline() == "locked\n"
            with pytest.raises(StateError, match=rf"in use by another shoal \(pid {holder.pid}"):
                DurableStore.open(tmp_path)
        finally:
            assert holder.stdin is not None
            holder.stdin.close()
            assert holder.wait(10) == 0
    store = DurableStore.open(tmp_path)  # the holder exited: its lock went with it
    assert store.durable
    assert (tmp_path / LOCK_FILE).read_text() == f"{os.getpid()}\n"


def test_leftover_temporary_files_are_removed_at_open(tmp_path: Path) -> None:
    """Issue 17 review, 5a: a crash in the middle of a write leaves write_json_atomic's
    temporary file; the next open removes it (and nothing else)."""
    (tmp_path / f".{STATE_FILE}.k2j4h1x9").write_text('{"version": 1, "led')
    (tmp_path / "other").write_text("kept")
    DurableStore.open(tmp_path)
    assert sorted(p.name for p in tmp_path.iterdir()) == [LOCK_FILE, "other"]


def service_config(tmp_path: Path, state_dir: Path) -> Path:
    """A config for ``Service``: the simulated cloud, no Slurm, ``state_dir``."""
    data = configs.config(
        cluster_name="svc", node_types=[{"type": "c5.xlarge", "max": 5}], state_dir=str(state_dir)
    )
    return configs.write(tmp_path / "shoal.yaml", data)


@pytest.fixture
def unwritable(tmp_path: Path) -> Iterator[Path]:
    """An existing folder nothing can write into, even root (immutable: chattr +i)."""
    folder = tmp_path / "state"
    folder.mkdir()
    if os.geteuid() != 0:
        folder.chmod(0o555)
        yield folder
        folder.chmod(0o755)
        return
    if subprocess.run(["chattr", "+i", str(folder)], capture_output=True).returncode != 0:
        pytest.skip("chattr +i is not available here")
    try:
        yield folder
    finally:
        subprocess.run(["chattr", "-i", str(folder)], check=True)


async def test_an_unwritable_state_dir_fails_the_start(
    tmp_path: Path, unwritable: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """Issue 17 review, 4: a state_dir shoal cannot write (the base unit's read-only /var/lib
    before StateDirectory=) would make every launch intent fail while the daemon reports
    READY. shoal run fails at start instead, saying why."""
    path = service_config(tmp_path, unwritable)
    service = Service(load_config(path), path, install_signals=False)
    assert await asyncio.wait_for(service.serve(), 10) == 1
    assert not service.started.is_set()
    assert f"state_dir {unwritable} is not writable" in caplog.text


async def test_a_section_nothing_claims_is_dropped_at_start(tmp_path: Path) -> None:
    """Issue 17 review, 5c: power_save, then a restart without it (external mode, or no
    Slurm): the slurm section (resume requests, holds) is dropped, not carried to replay
    stale requests when power_save comes back. The ledger is kept."""
    state = tmp_path / "state"
    ledger = {"intents": {}, "entries": [], "joined": {}, "stood": {}}
    requests = {"requests": {"cloud1": {"at": 1.0}}, "suspends": {}, "holds": {}}
    write_json_atomic(state / STATE_FILE, {"version": 1, "ledger": ledger, "slurm": requests})
    path = service_config(tmp_path, state)
    service = Service(load_config(path), path, install_signals=False)
    task = asyncio.create_task(service.serve())
    try:
        await asyncio.wait_for(service.started.wait(), 10)
        assert service.controller is not None
        await asyncio.wait_for(service.controller.store.flush(), 10)
        saved = json.loads((state / STATE_FILE).read_text())
        assert "slurm" not in saved and saved["ledger"] == ledger
    finally:
        service.stop()
        assert await asyncio.wait_for(task, 10) == 0


def test_the_lock_is_released_with_the_last_store_of_the_process(tmp_path: Path) -> None:
    """A restart in the same process (tests, the chaos harness) shares the lock; it is
    released when the last store goes, so thousands of simulated seeds hold no descriptor."""
    first, second = DurableStore.open(tmp_path), DurableStore.open(tmp_path)
    probe = [sys.executable, "-c", HOLDER.replace("sys.stdin.read()", "pass"), str(tmp_path)]
    first.close()
    assert subprocess.run(probe, capture_output=True).returncode != 0  # still held
    second.close()
    assert subprocess.run(probe, capture_output=True, text=True).stdout == "locked\n"


async def test_the_intent_on_disk_names_the_offering_being_tried(
    tmp_path: Path, clock: FakeClock, harness_factory: Any
) -> None:
    """Zone a has no capacity, so the launch falls through to zone b: when b is launched, the
    intent on disk names b (the placeholders a restart makes stand for the launch that may
    have happened). An intent that cannot be written stops the launch before its offering is
    tried, and the failure on a before it is still booked (backoff)."""
    state = tmp_path / "state"
    cloud = SimulatedProvisioner(clusterName="test", zones=[ZONE_A, ZONE_B], clock=clock)
    h: Harness = await harness_factory(state_dir=str(state), provider=cloud)
    await h.drive(h.controller.reconcile())
    h.provider.set_unavailable("c5.xlarge", zone=ZONE_A)
    on_disk: list[str] = []
    real = h.provider.launch_offering

    async def launch(request: LaunchRequest) -> list[str]:
        intents = json.loads((state / STATE_FILE).read_text())["ledger"]["intents"]
        on_disk.extend(i["offering"]["zone"] for i in intents.values())
        return await real(request)

    h.provider.launch_offering = launch  # type: ignore[method-assign]
    (node_type,) = h.controller.policy.node_types
    report = await h.drive(
        h.controller.launch(node_type, Launch("c5.xlarge", 1, AddCause.DEMAND, "test"))
    )
    assert report.launched == 1 and on_disk == [ZONE_A, ZONE_B]

    await h.clock.advance(3600)  # a's backoff ended: tried first again, still no capacity
    write = h.controller.journal.intent

    async def refused(
        request_id: str, nt: Any, count: int, offering: Any, now: float, *rest: Any
    ) -> None:
        if offering.zone == ZONE_B:
            raise OSError("No space left on device")
        await write(request_id, nt, count, offering, now, *rest)

    h.controller.journal.intent = refused  # type: ignore[method-assign]
    on_disk.clear()
    report = await h.drive(
        h.controller.launch(node_type, Launch("c5.xlarge", 1, AddCause.DEMAND, "test"))
    )
    assert report.launched == 0 and on_disk == [ZONE_A]  # b never tried
    assert "state not written" in report.launches[0].error
    assert [e.offering.zone for e in report.failed_offerings] == [ZONE_A]
    assert report.failed_offerings[0].offering in h.controller.backoff.unavailable(h.clock.now())


async def _in_both_zones(clock: FakeClock, state: Path, cloud: SimulatedProvisioner) -> Harness:
    """A daemon on ``cloud`` whose config names zones a and b, as the cloud it would build."""
    data = config_dict(state_dir=str(state))
    data["provider"] = {**data["provider"], "zone": None, "zones": [ZONE_A, ZONE_B]}
    config = parse_config(data)
    return await make_harness(clock, config, cloud)


async def test_a_unit_partly_launched_before_a_crash_is_not_launched_twice(
    tmp_path: Path, clock: FakeClock, harness_factory: Any
) -> None:
    """Zone a had room for 2 of a plan's unit of 3: they launched, and kill -9 landed once the
    intent for zone b (the last offering, asked for the 1 left) was on disk, before b was
    asked. The restarted daemon must not make the unit's 3 again (the listing lags: the 2 in
    a are not listed yet): the intent names a's 2 (booked at the restore) and counts the 1
    left, which the first pass makes again under b's client token: 3 instances in all, as
    planned, at once (it once waited for the listing of a's 2, which released every
    placeholder of the unit, b's unsent one included)."""
    state, crashed = tmp_path / "state", tmp_path / "crashed"
    cloud = SimulatedProvisioner(
        clusterName="test", zones=[ZONE_A, ZONE_B], clock=clock, listing_lag=60.0
    )
    cloud.set_capacity("c5.xlarge", 2, zone=ZONE_A)
    h: Harness = await harness_factory(state_dir=str(state), provider=cloud)
    await h.drive(h.controller.reconcile())
    await killed_before(h, ZONE_B, state, crashed)
    assert len(cloud.worker_names()) == 2 and crashed.exists()

    fresh = await _in_both_zones(clock, crashed, cloud)
    await fresh.drive(fresh.controller.reconcile())
    booked = {t.id for t in fresh.controller.tracker.pending() if not t.placeholder}
    assert booked == set(cloud.worker_names())  # a's 2, from the intent
    fresh.set_demand(fresh.jobs(12))
    await fresh.pass_()
    assert len(cloud.worker_names()) == 3  # the 1 left, made again; a's 2 not twice
    b = Offering("c5.xlarge", ZONE_B, CapacityType.ON_DEMAND)
    (replay,) = [c for c in fresh.launch_calls() if c.args["offering"] == b]
    assert (replay.args["count"], replay.args["client_token"]) == (
        1,
        client_token(replay.args["requestId"], b),
    )
    await fresh.clock.advance(61)  # all listed: nothing more
    await fresh.pass_()
    assert len(cloud.worker_names()) == 3


async def test_a_restart_before_an_intent_was_made_again_still_makes_it_again(
    tmp_path: Path, harness_factory: Any
) -> None:
    """The restarted daemon found a plan's intent with no answer, but no plan wanted its
    nodes yet, and it stopped again before one did. Its state must still name the launch as
    one to make again: the next daemon makes it once demand wants the nodes, instead of
    holding its placeholders for the ledger's TTL (what the replay was made to end)."""
    state = tmp_path / "state"
    h = await _restarted_unwanted(state, harness_factory)
    await h.settle()  # its ledger (the placeholders) written
    assert h.launch_calls() == [] and len(h.controller.journal.replays) == 1

    fresh: Harness = await harness_factory(state_dir=str(state), provider=h.provider)
    await fresh.drive(fresh.controller.reconcile())
    assert len(fresh.controller.tracker.pending()) == 3  # the placeholders, not 6
    fresh.set_demand(fresh.jobs(12))
    assert (await fresh.pass_()).launched == 3  # the replay's 3 (the plan launched none)
    (call,) = h.launch_calls()
    assert call.kwargs["client_token"] == client_token(
        "shoal-lost", Offering("c5.xlarge", ZONE_A, CapacityType.ON_DEMAND)
    )
    assert len(h.provider.worker_names()) == 3


async def test_an_intent_for_a_zone_no_longer_configured_is_not_made_elsewhere(
    tmp_path: Path, clock: FakeClock, harness_factory: Any
) -> None:
    """The intent names zone b, where the cloud did launch the unit (its answer was lost);
    the daemon restarts with zone b gone from its zones. Its token cannot be asked in b any
    more (addNodes ignores a ``first`` that is not an offering now), so a replay would
    launch the unit again in a under a new token: it is not made again, and its placeholders
    wait for b's instances to be listed, as before replays."""
    state = tmp_path / "state"
    intent = _plan_intent()
    intent["offering"]["zone"] = ZONE_B
    await _with_intent(state, intent)
    cloud = SimulatedProvisioner(clusterName="test", zones=[ZONE_A], clock=clock, listing_lag=60)
    await _launched_lost(cloud, ZONE_B)
    h: Harness = await harness_factory(state_dir=str(state), provider=cloud)
    await h.drive(h.controller.reconcile())
    h.set_demand(h.jobs(12))
    await h.pass_()
    assert len(cloud.worker_names()) == 3


async def test_an_intent_is_made_again_only_by_a_pass_that_may_launch(
    tmp_path: Path, harness_factory: Any
) -> None:
    """A replay is a launch: a pass that may launch nothing (the demand is stale: its
    source failed; or the daemon is stopping, an ha term ending) does not make it either,
    as it makes none of its plan's launches; the next pass that may launch does."""
    state = tmp_path / "state"
    await _with_intent(state, _plan_intent())
    h: Harness = await harness_factory(state_dir=str(state))
    await h.drive(h.controller.reconcile())
    h.set_demand(h.jobs(12))
    h.controller.set_demand(DemandFailure("squeue: connection refused", h.clock.now()))
    await h.pass_()
    assert h.launch_calls() == []
    h.set_demand(h.jobs(12))
    h.controller.stopping = True  # stop() also ends run: the flag is what a pass reads
    await h.pass_()
    assert h.launch_calls() == []
    h.controller.stopping = False
    await h.pass_()
    assert len(h.launch_calls()) == 1


async def test_a_replay_whose_intent_could_not_be_written_is_made_again_later(
    tmp_path: Path, harness_factory: Any
) -> None:
    """The replay's own intent write failed (etcd did not answer in time, a full disk):
    nothing was asked of the cloud, so nothing settles it. The next pass makes it again,
    and until then its intent stays on disk for a restart; it is not dropped to leave its
    placeholders holding that capacity for the ledger's TTL (the CI failure once more)."""
    state = tmp_path / "state"
    await _with_intent(state, _plan_intent())
    h: Harness = await harness_factory(state_dir=str(state))
    await h.drive(h.controller.reconcile())
    write = h.controller.journal.intent
    failures = [OSError("etcd: context deadline exceeded")]

    async def flaky(*args: Any) -> None:
        if failures:
            raise failures.pop()
        await write(*args)

    h.controller.journal.intent = flaky  # type: ignore[method-assign]
    h.set_demand(h.jobs(12))
    await h.pass_()
    await h.settle()
    assert h.launch_calls() == []
    saved = json.loads((state / STATE_FILE).read_text())["ledger"]
    assert "replay" in saved["intents"]["shoal-lost"]
    await h.pass_()
    assert len(h.launch_calls()) == 1 and len(h.provider.worker_names()) == 3


async def test_of_two_intents_a_plan_wanting_one_more_than_either_makes_one_again(
    tmp_path: Path, harness_factory: Any
) -> None:
    """review (reviewy): two plan units of 3 found with no answer (6 placeholders), and a
    plan that wants 5 nodes: fewer than the 6 counted, so neither was made again, and the 5
    nodes of demand waited for the ledger's TTL (what the replay was made to end). The
    first is made again (the plan wants its 3 on top of nothing real); the second, which
    would make a sixth node no plan wants, waits as before."""
    state = tmp_path / "state"
    store = DurableStore.open(state)
    intents = {"shoal-lost": _plan_intent(), "shoal-lost-2": _plan_intent()}
    store.section("ledger", lambda: {"intents": intents, "entries": []})
    await store.flush()
    store.close()
    h: Harness = await harness_factory(state_dir=str(state))
    await h.drive(h.controller.reconcile())
    h.set_demand(h.jobs(20))  # 5 nodes of 4 jobs
    assert (await h.pass_()).launched == 3  # the replay's 3 (the plan launched none)
    (call,) = h.launch_calls()
    assert call.kwargs["client_token"] == client_token(
        "shoal-lost", Offering("c5.xlarge", ZONE_A, CapacityType.ON_DEMAND)
    )
    assert [r.request_id for r in h.controller.journal.replays] == ["shoal-lost-2"]
    assert len(h.provider.worker_names()) == 3


async def test_a_replay_that_ec2_refuses_as_a_parameter_mismatch_launches_nowhere_else(
    tmp_path: Path, clock: FakeClock, harness_factory: Any
) -> None:
    """The unit was launched (its answer lost) and the daemon restarts with its type's
    launch settings changed (a placement group added), so its replay sends the same client
    token with other arguments. EC2 answers IdempotentParameterMismatch, which it gives
    only for a token whose request succeeded: the 3 instances exist. So nothing is launched
    in another offering or under a new token, and the placeholders hold their capacity
    until the listing shows the 3, which then stand for them."""
    state = tmp_path / "state"
    await _with_intent(state, _plan_intent())
    cloud = SimulatedProvisioner(
        clusterName="test", zones=[ZONE_A, ZONE_B], clock=clock, listing_lag=120
    )
    first = await _launched_lost(cloud, ZONE_A)
    h: Harness = await harness_factory(
        state_dir=str(state),
        provider=cloud,
        node_types=[{"type": "c5.xlarge", "max": 10, "placement_group": "cluster"}],
    )
    await h.drive(h.controller.reconcile())
    h.set_demand(h.jobs(12))
    record = await h.pass_()
    assert record.launched == 0
    token = client_token("shoal-lost", Offering("c5.xlarge", ZONE_A, CapacityType.ON_DEMAND))
    lost, replay = h.launch_calls()  # the lost launch, and the replay's one call: no other zone
    assert lost.args["client_token"] == replay.args["client_token"] == token
    assert (lost.args["placement_group"], replay.args["placement_group"]) == (None, "cluster")
    assert any("sent with other arguments" in e for e in record.errors)
    assert sorted(h.provider.worker_names()) == sorted(first)
    assert sum(t.placeholder for t in h.controller.tracker.pending()) == 3
    assert h.controller.journal.replays == []  # settled: not sent again at every pass
    await h.pass_()
    assert len(h.launch_calls()) == 2 and sorted(h.provider.worker_names()) == sorted(first)
    await h.clock.advance(121)  # listed now: the instances stand for the placeholders
    await h.pass_()
    assert sorted(h.provider.worker_names()) == sorted(first)
    assert {t.id for t in h.controller.tracker.all()} == set(first)


def _room_for_one_in_a(
    clock: FakeClock, fault: Callable[[SimulatedProvisioner], None]
) -> SimulatedProvisioner:
    """A cloud of zones a and b, room for one c5.xlarge in a, and ``fault`` armed for the
    first RunInstances in b (a lost answer, a throttle)."""
    cloud = SimulatedProvisioner(
        clusterName="test", zones=[ZONE_A, ZONE_B], clock=clock, listing_lag=120
    )
    cloud.set_capacity("c5.xlarge", 1, zone=ZONE_A)
    launch = cloud.launch_offering
    armed: list[str] = []

    async def faulted_in_b(request: LaunchRequest) -> list[str]:
        if request.offering.zone == ZONE_B and not armed:
            armed.append(request.client_token)
            fault(cloud)
        return await launch(request)

    cloud.launch_offering = faulted_in_b  # type: ignore[method-assign]
    return cloud


async def test_a_retry_after_a_partial_unit_and_a_lost_answer_launches_nothing_twice(
    tmp_path: Path, clock: FakeClock, harness_factory: Any
) -> None:
    """A unit of 3: zone a has room for 1, zone b launches the other 2 and its answer is
    lost. The retry starts at b and asks it for the 2 still wanted, as its token was first
    sent (review reviewm: it asked for 3, which EC2 answers IdempotentParameterMismatch, and
    b's 2 were placeholders until the listing showed them): the token returns b's 2, so all
    3 are booked by id, and the next passes launch nothing while the plan wants 3."""
    cloud = _room_for_one_in_a(clock, lambda c: c.lose_next_response())
    h: Harness = await harness_factory(state_dir=str(tmp_path / "state"), provider=cloud)
    await h.drive(h.controller.reconcile())
    h.set_demand(h.jobs(12))
    record = await h.pass_()
    asked = [(c.args["offering"].zone, c.args["count"]) for c in h.launch_calls()]
    assert asked == [(ZONE_A, 3), (ZONE_B, 2), (ZONE_B, 2)]  # a: 1 of 3; b: 2, lost; retry
    assert not record.errors and record.launched == 3
    assert cloud.count("c5.xlarge") == 3
    pending = h.controller.tracker.pending()
    assert {t.id for t in pending} == set(cloud.worker_names())  # no placeholder
    for _ in range(3):
        await h.clock.advance(30)
        await h.pass_()
        assert cloud.count("c5.xlarge") == 3
    await h.clock.advance(121)
    await h.pass_()
    assert cloud.count("c5.xlarge") == 3
    assert {t.id for t in h.controller.tracker.all()} == set(cloud.worker_names())


async def test_a_retry_after_a_partial_unit_and_a_throttled_offering_launches_the_rest_only(
    tmp_path: Path, clock: FakeClock, harness_factory: Any
) -> None:
    """Finding (review reviewm, 2026-12-07): a unit of 3, zone a has room for 1 and zone b's
    first answer is a throttle (RequestLimitExceeded: nothing launched, but retryable, so
    the attempt is uncertain). The retry starts at b, as it should, but asked for the whole
    unit (3) although a's 1 is known: 4 instances for a plan of 3. It must ask b for the 2
    still wanted, which is also what b's token was first sent with (a lost answer's retry
    then returns its instances instead of EC2's IdempotentParameterMismatch)."""
    cloud = _room_for_one_in_a(clock, lambda c: c.throttle_next(1, "RunInstances"))
    h: Harness = await harness_factory(state_dir=str(tmp_path / "state"), provider=cloud)
    await h.drive(h.controller.reconcile())
    h.set_demand(h.jobs(12))
    record = await h.pass_()
    assert cloud.count("c5.xlarge") == 3  # not 4: a's 1, b's 2
    assert record.launched == 3
    asked = [(c.args["offering"].zone, c.args["count"]) for c in h.launch_calls()]
    assert asked == [(ZONE_A, 3), (ZONE_B, 2), (ZONE_B, 2)]  # a: 1 of 3; b: throttled; retry


async def test_a_retry_falls_back_past_an_offering_that_launched_part_of_the_unit(
    tmp_path: Path, clock: FakeClock, harness_factory: Any
) -> None:
    """Finding (review reviewn, 2026-12-07): a unit of 3, zone a has room for 1, zone b's
    first answer is a throttle and then b has no room, zone c has room. The retry asks b for
    the 2 still wanted (b0d5959) and, b out of capacity, falls back in order: to a, whose
    token was first sent for 3. Sent now for 2, EC2 answers IdempotentParameterMismatch, an
    error that ends the unit, so c is never tried: 1 instance for a plan of 3 and an error
    (before b0d5959 a's token, sent for 3 again, returned its 1 and c launched 2). An
    offering whose token launched in an earlier try has answered: the retry must not send
    it again."""
    zone_c = "us-west-2c"
    cloud = SimulatedProvisioner(
        clusterName="test", zones=[ZONE_A, ZONE_B, zone_c], clock=clock, listing_lag=120
    )
    cloud.set_capacity("c5.xlarge", 1, zone=ZONE_A)
    launch = cloud.launch_offering
    armed: list[str] = []

    async def throttled_then_full_in_b(request: LaunchRequest) -> list[str]:
        if request.offering.zone == ZONE_B and not armed:
            armed.append(request.client_token)
            cloud.throttle_next(1, "RunInstances")
            cloud.set_capacity("c5.xlarge", 0, zone=ZONE_B)
        return await launch(request)

    cloud.launch_offering = throttled_then_full_in_b  # type: ignore[method-assign]
    h: Harness = await harness_factory(state_dir=str(tmp_path / "state"), provider=cloud)
    await h.drive(h.controller.reconcile())
    h.set_demand(h.jobs(12))
    record = await h.pass_()
    assert not record.errors
    assert record.launched == 3 and cloud.count("c5.xlarge") == 3  # a's 1, c's 2
    asked = [(c.args["offering"].zone, c.args["count"]) for c in h.launch_calls()]
    assert asked == [(ZONE_A, 3), (ZONE_B, 2), (ZONE_B, 2), (zone_c, 2)]


async def test_a_retried_unit_logs_what_the_unit_launched_not_its_last_try(
    tmp_path: Path, clock: FakeClock, harness_factory: Any, caplog: pytest.LogCaptureFixture
) -> None:
    """Finding (review reviewn, 2026-12-07): a unit of 3 whose retry asks for the 2 still
    wanted (a launched 1, b was throttled) logged ``event=scaled_up launched=2 requested=3``,
    the retry's own count, while the unit launched its 3 (its outcome and metrics said 3)."""
    cloud = _room_for_one_in_a(clock, lambda c: c.throttle_next(1, "RunInstances"))
    h: Harness = await harness_factory(state_dir=str(tmp_path / "state"), provider=cloud)
    await h.drive(h.controller.reconcile())
    h.set_demand(h.jobs(12))
    caplog.set_level("INFO", logger="shoal.daemon.executor")
    assert (await h.pass_()).launched == 3
    (line,) = [r.getMessage() for r in caplog.records if "event=scaled_up" in r.getMessage()]
    assert "launched=3 requested=3" in line


async def test_a_listed_instance_of_the_unit_does_not_stand_for_another_offering_in_doubt(
    tmp_path: Path, clock: FakeClock, harness_factory: Any
) -> None:
    """Finding (review reviewn, 2026-12-07): a unit of 3, zone a launches 1 (booked by id),
    zone b is throttled and then launches the other 2 with every answer lost: 2
    placeholders. When the listing shows a's instance (launched a second before b's), the
    placeholders gave way to it as if b's were listed, so the pass launched 2 more: 5
    instances for a plan of 3. An instance already booked by id vouches for no lost answer."""

    def throttled_then_lost(cloud: SimulatedProvisioner) -> None:
        cloud.throttle_next(1, "RunInstances")
        cloud.lose_next_response(3)  # the retry policy's other attempts

    cloud = _room_for_one_in_a(clock, throttled_then_lost)
    h: Harness = await harness_factory(state_dir=str(tmp_path / "state"), provider=cloud)
    await h.drive(h.controller.reconcile())
    start = clock.now()
    h.set_demand(h.jobs(12))
    await h.pass_()
    assert sum(t.placeholder for t in h.controller.tracker.pending()) == 2
    await clock.advance(start + 120.3 - clock.now())  # a's instance listed, b's not yet
    assert len(await cloud.list_instances()) == 1
    await h.pass_()
    assert cloud.count("c5.xlarge") == 3
    await clock.advance(2)  # all listed
    await h.pass_()
    assert cloud.count("c5.xlarge") == 3
    assert {t.id for t in h.controller.tracker.all()} == set(cloud.worker_names())


async def test_a_restart_in_a_units_retry_holds_the_offering_in_doubt_until_it_is_listed(
    tmp_path: Path, clock: FakeClock, harness_factory: Any
) -> None:
    """Finding (review reviewn, 2026-12-07): the daemon stops while a unit of 3 retries:
    zone a launched 1, and the retry's intent (zone b, no replay: a launched part) is on
    disk, b's 2 launched a second later, no answer booked. Restored, the intent is 3
    placeholders of the request; a's instance, listed first, takes them all away, and the
    pass launches 2 more while b's are not listed yet: 5 instances for a plan of 3.
    Not fixed: a's id is in no intent nor entry, so nothing tells a's instance from b's.
    Holding the placeholders for b alone instead holds capacity for nothing until the TTL
    when the daemon stopped before b was sent; the intent would have to name the ids the
    unit's earlier offerings answered and the count still wanted, so the unit's rest can be
    made again (its replay, off when an earlier offering launched part of it)."""
    state = tmp_path / "state"
    intent = {**_plan_intent(), "offering": offering_to_json(_offering(ZONE_B))}
    del intent["replay"]  # an earlier offering launched part of the unit
    await _with_intent(state, intent)
    cloud = SimulatedProvisioner(
        clusterName="test", zones=[ZONE_A, ZONE_B], clock=clock, listing_lag=120
    )
    start = clock.now()
    await _launched_lost(cloud, ZONE_A, 1)
    await clock.advance(1)
    await _launched_lost(cloud, ZONE_B, 2)
    h: Harness = await harness_factory(state_dir=str(state), provider=cloud)
    await h.drive(h.controller.reconcile())
    h.set_demand(h.jobs(12))
    assert (await h.pass_()).launched == 0  # 3 placeholders
    await clock.advance(start + 120.3 - clock.now())  # a's instance listed, b's not yet
    assert len(await cloud.list_instances()) == 1
    await h.pass_()
    assert cloud.count("c5.xlarge") == 3
