"""review6 (2026-12-08): a hostile read of the day's daemon changes. Each test is a finding
and failed on the code before its fix (of 4d24838 or db37abe); its docstring gives the
severity and the mechanism."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path
from subprocess import CompletedProcess
from typing import TYPE_CHECKING, Any

from ledger_kit import write_intent
from loop_harness import ZONE, config_dict, make_harness
from shoal.daemon.config import parse_config
from shoal.daemon.demand import DemandUpdate
from shoal.daemon.durable import DurableStore, offering_to_json
from shoal.daemon.nodes import INTERRUPTED_MARK
from shoal.providers.node_provider import TAG_DRAINING, client_token
from shoal.providers.outcomes import LaunchRequest
from shoal.providers.simulated import SimulatedProvisioner
from shoal.scaler.model import CapacityType, Demand, Offering, RunningJob, Shape

if TYPE_CHECKING:
    from shoal.runtime.testing import FakeClock

A = Offering("c5.xlarge", ZONE, CapacityType.ON_DEMAND)
ROOT = Path(__file__).resolve().parents[2]
GIB = 1024**3


async def test_a_replay_is_not_held_by_an_interrupted_node_the_planner_leaves_out(
    tmp_path: Path, clock: FakeClock
) -> None:
    """Severity: medium (a 10-minute stall of a whole unit after every restart or failover
    while a node of its type is under an interruption notice; the max it guards is not kept
    either). Mechanism: a c5.xlarge got a scheduled-change notice (AWS Health: retirement
    weeks ahead) and runs its long job to the end, drained, marked interrupted on its drain
    tag; the planner leaves interrupted nodes out of its view and its max (the room they held
    is replaced at once) and launched a unit of 3 in its place (max 3); the daemon died
    before its RunInstances. After the restart the plan wants the 3 whole, but
    ``_replay_intents``'s new ``alive`` counts the interrupted node (DRAINING, not
    terminated): 1 + 3 > 3, so the replay waits, pass after pass, with the 3 placeholders
    standing in for capacity no one launches, until the ledger's TTL (600 s). Then the
    placeholders expire and the planner launches 3 anew beside the same interrupted node:
    the very count the check refused. The replay should follow the planner's max (no
    interrupted node), made at the first pass as before 4d24838."""
    state = tmp_path / "state"
    cloud = SimulatedProvisioner(clusterName="test", zone=ZONE, clock=clock, boot_delay=20.0)
    tags = cloud.worker_tags("c5.xlarge", "shoal-old")
    tags[TAG_DRAINING] = f"{clock.now():.0f} {INTERRUPTED_MARK}"  # a scheduled change's drain
    old = LaunchRequest(A, 1, client_token("shoal-old", A), "shoal-old", None, tags)
    (retiring,) = await cloud.launch_offering(old)
    await clock.advance(600)
    await write_intent(state, "shoal-unit", A, [], at=clock.now(), count=3, node_type="c5.xlarge")

    data = config_dict(state_dir=str(state), node_types=[{"type": "c5.xlarge", "max": 3}])
    h = await make_harness(clock, parse_config(data), cloud)
    made: list[tuple[float, str]] = []  # (seconds after the restart, request id) per launch
    launch, start = cloud.launch_offering, clock.now()

    async def booked(request: LaunchRequest) -> list[str]:
        made.append((clock.now() - start, request.request_id or ""))
        return await launch(request)

    cloud.launch_offering = booked  # type: ignore[method-assign]
    await h.drive(h.controller.reconcile())
    assert h.controller.tracker.interrupted() == {retiring}
    long_job = RunningJob(Shape(36000, 6 * GIB, 4, GIB, False), retiring, elapsed=3600)
    # 12 four-core jobs: the plan wants the max, 3; the retiring node's job runs on
    for _ in range(12):
        queued = h.jobs(12, cores=4).queued
        h.set_demand(Demand(queued=queued, running=(long_job,)), joined={retiring})
        await h.pass_()
        await clock.advance(60)
    assert made, "nothing launched in 12 minutes"
    assert made[0] == (0.0, "shoal-unit"), f"launches (s after restart, request): {made}"


def shoal(args: list[str], *, code: str | None = None, **kwargs: Any) -> CompletedProcess[bytes]:
    """``python -m shoal.daemon args`` (or ``code`` with ``python -c``) as a shell runs it:
    stdout block-buffered into a pipe (no ``PYTHONUNBUFFERED``, which this session sets)."""
    env = {k: v for k, v in os.environ.items() if k != "PYTHONUNBUFFERED"}
    command = ["-c", code] if code is not None else ["-m", "shoal.daemon", *args]
    return subprocess.run(
        [sys.executable, *command], stderr=subprocess.PIPE, cwd=ROOT, env=env, timeout=60, **kwargs
    )


def test_a_reader_that_leaves_gets_no_traceback_for_a_short_output() -> None:
    """Severity: low (the very symptom db37abe fixed, for every output under 8 KiB:
    ``shoal demand-schema``, ``plan``, ``slurm-conf``, ``status``). Mechanism: stdout into
    a pipe is block-buffered, so a short output is still in the buffer when the command
    returns; the flush at exit, outside main's ``try``, meets the closed pipe: Python
    prints "Exception ignored ... BrokenPipeError" and exits 120. db37abe's test passes
    because ``config-schema`` overflows the buffer inside the command (and because this
    session sets ``PYTHONUNBUFFERED``). Python's advice flushes stdout inside the ``try``."""
    read, write = os.pipe()
    os.close(read)
    try:
        res = shoal(["demand-schema"], stdout=write)
    finally:
        os.close(write)
    assert (res.returncode, res.stderr) == (1, b"")


def test_a_daemon_dying_of_a_broken_pipe_elsewhere_says_why() -> None:
    """Severity: low (diagnosis: a crash leaves no trace). Mechanism: ``main`` wraps every
    command, ``shoal run`` included, in ``except BrokenPipeError``: a BrokenPipeError from
    anywhere (a peer's socket, a subprocess's pipe) is taken for stdout's reader leaving,
    stdout is pointed at /dev/null and the process exits 1 with nothing on stderr, where
    before the traceback said what died. Here stdout's reader stays; the daemon's command
    dies of a write to a socket whose peer closed."""
    code = (
        "import socket, sys\n"
        "from shoal.daemon import cli\n"
        "def run(args):\n"
        "    mine, peer = socket.socketpair()\n"
        "    peer.close()\n"
        "    mine.sendall(b'x')\n"
        "cli._cmd_run = run\n"
        "sys.exit(cli.main(['run', '-c', 'shoal.yaml']))\n"
    )
    res = shoal([], code=code, stdout=subprocess.PIPE)
    assert res.returncode != 0
    assert b"BrokenPipeError" in res.stderr, (res.returncode, res.stderr)


async def test_a_replay_counts_the_placeholders_a_settled_intent_leaves_to_the_ttl(
    tmp_path: Path, clock: FakeClock
) -> None:
    """Severity: low (a restart that removes a zone, with two lost units of one type, one
    of them launched in that zone and not listed yet, and a drained node). Mechanism:
    ``alive`` leaves out the placeholders of every intent still to make again (``ahead``),
    and is added to only for those made again; an intent settled without a replay (its
    offering's zone no longer configured: "left to the TTL") keeps its placeholders, which
    ``counted`` takes back (``counted[...] += held``) but ``alive`` does not. Here max is
    3: a c5.xlarge drained before the restart waits for its termination; unit A of 2 was
    launched in us-west-2b (answer lost, the listing lags) and the restart's config has
    us-west-2a alone; unit B of 1 (us-west-2a) was never sent. The first pass settles A,
    counts 1 alive beside B (A's 2 left out) and makes B again before it terminates the
    drained node: 4 c5.xlarge in the cloud of a max of 3, the seed-31 pattern 4d24838
    fixed, through its sibling branch. Adding A's held to ``alive`` as to ``counted``
    waits one pass."""
    state = tmp_path / "state"
    cloud = SimulatedProvisioner(
        clusterName="test", zone=ZONE, clock=clock, boot_delay=20.0, listing_lag=300.0
    )
    tags = cloud.worker_tags("c5.xlarge", "shoal-old")
    tags[TAG_DRAINING] = f"{clock.now():.0f}"  # drained before the restart
    old = LaunchRequest(A, 1, client_token("shoal-old", A), "shoal-old", None, tags)
    (drained,) = await cloud.launch_offering(old)
    await clock.advance(600)
    b_zone = Offering("c5.xlarge", "us-west-2b", CapacityType.ON_DEMAND)
    unit_a = LaunchRequest(
        b_zone,
        2,
        client_token("shoal-a", b_zone),
        "shoal-a",
        None,
        cloud.worker_tags("c5.xlarge", "shoal-a"),
    )
    await cloud.launch_offering(unit_a)  # launched; its answer lost; not listed for 300 s
    replay = {"tags": {}, "gang": False, "cause": "demand"}
    intents = {
        "shoal-a": {"node_type": "c5.xlarge", "count": 2, "offering": offering_to_json(b_zone)},
        "shoal-b": {"node_type": "c5.xlarge", "count": 1, "offering": offering_to_json(A)},
    }
    for body in intents.values():
        body.update({"at": clock.now(), "answered": [], "replay": replay})
    store = DurableStore.open(state)
    store.section("ledger", lambda: {"intents": intents, "entries": []})
    await store.flush()
    store.close()

    data = config_dict(state_dir=str(state), node_types=[{"type": "c5.xlarge", "max": 3}])
    h = await make_harness(clock, parse_config(data), cloud)
    live: list[int] = []
    launch = cloud.launch_offering

    async def counted(request: LaunchRequest) -> list[str]:
        ids = await launch(request)
        live.append(cloud.count("c5.xlarge"))
        return ids

    cloud.launch_offering = counted  # type: ignore[method-assign]
    await h.drive(h.controller.reconcile())
    for _ in range(3):  # 12 four-core jobs: the plan wants the max, 3; the drain is shown
        update = DemandUpdate(
            h.jobs(12, cores=4),
            frozenset(),
            draining_nodes=frozenset({drained}),
            own_drains=frozenset({drained}),
        )
        h.controller.set_demand(update)
        await h.pass_()
        await clock.advance(60)
    assert live, "unit B was never made again"
    assert max(live) <= 3, f"live c5.xlarge after each RunInstances: {live}"
