"""Issue 21: followers take demand pushes and the Slurm hook calls, by forwarding them to the
leader; "a hook call made to a follower during a failover is served exactly once".

Two real ``shoal run`` daemons (``a`` leads, ``b`` follows) on one real etcd (Debian's, as in
``test_e2e_ha``), ``ha.ttl`` 2 s, each in Slurm's power_save mode with its own state folder
(two hosts) and its own simulated cloud. No slurmctld: the hook (``shoal slurm-resume``, the
real console script, run as slurmctld runs it) is what calls the daemons, and the squeue,
sinfo and scontrol the daemons run are stubs that answer nothing (no jobs, no nodes), so the
power saver serves each request from the hook alone. What each daemon served is read from
its ``/v1/slurm`` (the resumes it took and the instance it launched for each node) and its
``/v1/status``, as an operator would.
"""

from __future__ import annotations

import json
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from etcd_server import EtcdServer, etcd_server
from test_e2e_ha import TTL, knows_leader, role, section
from test_e2e_ha import start_pair as start_plain_pair

pytestmark = pytest.mark.e2e


@pytest.fixture
def etcd(tmp_path: Path) -> Iterator[EtcdServer]:
    with etcd_server(tmp_path / "etcd") as server:
        yield server


STUB = "#!/bin/sh\nexit 0\n"  # squeue, sinfo, scontrol: an empty cluster, every change taken


def slurm_stubs(directory: Path) -> dict[str, str]:
    directory.mkdir(exist_ok=True)
    paths = {}
    for name in ("squeue", "sinfo", "scontrol"):
        path = directory / name
        path.write_text(STUB)
        path.chmod(0o755)
        paths[name] = str(path)
    return paths


def start_pair(shoal: Any, e2e: Any, etcd: EtcdServer, tmp_path: Path) -> tuple[Any, Any]:
    """``a`` leads, ``b`` follows, each with its own state folder; returns once both say so."""
    stubs = slurm_stubs(tmp_path / "slurm-bin")
    daemons = []
    for name in ("a", "b"):
        config = e2e.simulated_config(
            e2e.free_port(),
            state_dir=str(tmp_path / f"state-{name}"),
            demand={"slurm": True, "api": False},
            slurm={"mode": "power_save", "node_types": {"cloud": "c5.xlarge"}, **stubs},
            ha={"etcd": [etcd.url], "ttl": f"{TTL:.0f}s", "name": name},
        )
        config["slurm"]["poll_interval"] = "1s"
        daemon = shoal(config, name=name).start(wait_ready=False)
        want = "leader" if name == "a" else "follower"
        e2e.wait_for(
            f"{name} {want}",
            lambda d=daemon, w=want: knows_leader(d, "a", w),
            15.0,
            on_timeout=daemon.tail,
        )
        daemons.append(daemon)
    return daemons[0], daemons[1]


def hook(e2e: Any, daemon: Any, kind: str, hostlist: str) -> subprocess.CompletedProcess[str]:
    """``shoal slurm-<kind> -c <daemon's config> HOSTLIST``, as slurmctld runs it."""
    argv = [*e2e.shoal_argv(), f"slurm-{kind}", "-c", str(daemon.config_path), hostlist]
    return subprocess.run(argv, capture_output=True, text=True, timeout=30, check=False)


def power(daemon: Any) -> dict[str, Any] | None:
    return section(daemon, "/v1/slurm", "power_saving")


def launched_for(daemon: Any, node: str) -> list[str] | None:
    """The instances ``daemon`` launched for ``node`` once it has (None until then)."""
    view = power(daemon)
    found = [i for n, i in (view or {}).get("launched", []) if n == node]
    return found or None


def spooled(daemon: Any) -> list[str]:
    folder = Path(daemon.config["state_dir"]) / "spool"
    return sorted(p.name for p in folder.glob("*.json"))


def test_a_demand_push_to_the_follower_is_served_by_the_leader(
    shoal: Any, e2e: Any, etcd: EtcdServer
) -> None:
    a, b = start_plain_pair(shoal, e2e, etcd)
    pushed = b.put_demand({"jobs": [e2e.job(2)], "running": []})
    assert pushed.status == 200, pushed.text
    assert pushed.headers["X-Shoal-Served-By"] == "a"
    assert a.status()["demand"]["queued_jobs"] == 2
    assert b.status()["demand"]["queued_jobs"] == 0


def test_a_hook_call_to_the_follower_is_served_by_the_leader_and_its_spool_not_stranded(
    shoal: Any, e2e: Any, etcd: EtcdServer, tmp_path: Path
) -> None:
    a, b = start_pair(shoal, e2e, etcd, tmp_path)
    called = hook(e2e, b, "resume", "cloud1")
    assert called.returncode == 0 and "accepted cloud1" in called.stdout, called.stderr
    assert spooled(b) == []
    e2e.wait_for(
        "a launched for cloud1", lambda: launched_for(a, "cloud1"), 10.0, on_timeout=a.tail
    )
    assert power(b) is not None and power(b)["launched"] == []  # type: ignore[index]

    # a request the hook spooled on b's host (no leader answered it then) is not stranded
    # there: b, following, forwards it to a within a poll interval, and deletes its file
    from shoal.daemon.slurm import spool

    spool.write(Path(b.config["state_dir"]) / "spool", "resume", "cloud2", None, "hook-e2e-2")
    e2e.wait_for(
        "a launched for cloud2", lambda: launched_for(a, "cloud2"), 10.0, on_timeout=b.tail
    )
    e2e.wait_for("b's spool empty", lambda: spooled(b) == [], 5.0)
    assert "event=slurm_spool_served request_id=hook-e2e-2" in b.log_path.read_text()


def test_a_hook_call_made_to_a_follower_during_a_failover_is_served_exactly_once(
    shoal: Any, e2e: Any, etcd: EtcdServer, tmp_path: Path
) -> None:
    a, b = start_pair(shoal, e2e, etcd, tmp_path)
    a.kill9()
    killed = time.monotonic()
    called = hook(e2e, b, "resume", "cloud1")  # b still follows the dead a: it spools
    took = time.monotonic() - killed
    assert called.returncode == 0, called.stderr
    path = "spooled" if "spooled to" in called.stderr else "taken"
    print(f"hook call {took:.3f}s after kill -9 of the leader: {path}")

    e2e.wait_for("b leads", lambda: role(b) == "leader", TTL + 2.0, on_timeout=b.tail)
    instances = e2e.wait_for(
        "b launched for cloud1", lambda: launched_for(b, "cloud1"), 10.0, on_timeout=b.tail
    )
    assert spooled(b) == []
    # the cloud lists it (booting: no slurmd joins here)
    e2e.wait_for("b lists it", lambda: b.node_ids() or None, 10.0, on_timeout=b.tail)
    assert launched_for(b, "cloud1") == instances and len(instances) == 1
    assert b.node_ids() == set(instances)  # one instance for the node, on the only cloud acting
    log = b.log_path.read_text()
    served = log.count("event=slurm_request kind=resume nodes=cloud1 accepted=1")
    assert served == 1, json.dumps(power(b))
