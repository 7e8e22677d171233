"""`shoal run` on AWS (a moto server in this process) launches workers that join the leader.

A leader instance is launched in moto first, tagged as ``launchCluster`` tags it. The daemon
is a subprocess configured with a ``workers`` section: it learns the leader at start from
the instance metadata service of "its" machine, and on demand launches a worker. The test
reads the worker's user data back from EC2 (DescribeInstanceAttribute), decodes the Ignition
config and finds the Kubernetes join, enabled, pointing at the leader, with the token read
from a file relative to the config and never logged. The fake IMDSv2 (tests/fake_imds.py)
runs on 127.0.0.1 in a thread of this process, serving the leader's metadata.

This is the one end-to-end join. The other cluster types and leader sources are shown
where they can be: the units in tests/providers/test_worker_join.py, the Mesos agent with a
leader found by its tag or by IMDS and the dynamic Slurm worker on moto in
tests/providers/test_aws_workers.py.
"""

from __future__ import annotations

import asyncio
import base64
import json
import threading
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any
from urllib.parse import unquote_to_bytes

import pytest
from fake_imds import FakeImds
from test_e2e_aws import TAG_CLUSTER, Moto, aws_config, daemon_env, moto  # noqa: F401

pytestmark = pytest.mark.e2e

TOKEN = "abcdef.0123456789abcdef"
CA_HASH = "sha256:" + "e0" * 32


@pytest.fixture
def leader(moto: Moto) -> Callable[[str], dict[str, Any]]:  # noqa: F811
    """The cluster's leader in moto, tagged as launchCluster tags it."""

    def launch(cluster: str) -> dict[str, Any]:
        tags = [
            {"Key": TAG_CLUSTER, "Value": cluster},
            {"Key": "shoal:role", "Value": "leader"},
            {"Key": "shoal:autoscaled", "Value": "false"},
        ]
        (instance,) = moto.ec2.run_instances(
            ImageId=moto.image_id,
            InstanceType="t3.medium",
            MinCount=1,
            MaxCount=1,
            SubnetId=moto.subnet_id,
            TagSpecifications=[{"ResourceType": "instance", "Tags": tags}],
        )["Instances"]
        return instance

    return launch


@pytest.fixture
def imds_of() -> Iterator[Any]:
    """Start a fake IMDSv2 serving an instance, on a loop in its own thread; its URL."""
    started: list[tuple[Any, asyncio.AbstractEventLoop, threading.Thread]] = []

    def start(instance: dict[str, Any]) -> str:
        fake = FakeImds.of_instance(instance)
        loop = asyncio.new_event_loop()
        thread = threading.Thread(target=loop.run_forever, name="fake-imds", daemon=True)
        thread.start()
        started.append((fake, loop, thread))
        return str(asyncio.run_coroutine_threadsafe(fake.start(), loop).result(timeout=10))

    try:
        yield start
    finally:
        for fake, loop, thread in started:
            asyncio.run_coroutine_threadsafe(fake.stop(), loop).result(timeout=10)
            loop.call_soon_threadsafe(loop.stop)
            thread.join(timeout=10)
            loop.close()


def user_data(cloud: Moto, instance_id: str) -> dict[str, Any]:
    attr = cloud.ec2.describe_instance_attribute(InstanceId=instance_id, Attribute="userData")
    return json.loads(base64.b64decode(attr["UserData"]["Value"]))


def file_text(doc: dict[str, Any], path: str) -> str:
    (entry,) = [f for f in doc["storage"]["files"] if f["path"] == path]
    return unquote_to_bytes(entry["contents"]["source"].split(",", 1)[1]).decode()


def test_launched_worker_runs_the_agent_of_the_leader(
    shoal: Any,
    e2e: Any,
    moto: Moto,  # noqa: F811
    leader: Any,
    imds_of: Any,
    tmp_path: Path,
) -> None:
    cluster_type, cluster = "kubernetes", "e2e-join"
    the_leader = leader(cluster)
    leader_ip = the_leader["PrivateIpAddress"]
    # shoal runs on the leader: its metadata says so
    provider = {"cluster_type": cluster_type, "metadata_endpoint": imds_of(the_leader)}
    (tmp_path / "kubeadm-token").write_text(TOKEN + "\n")
    workers = {
        "leader": {"discover": "imds"},
        "kubernetes": {"token_file": "kubeadm-token", "ca_cert_hash": CA_HASH},
    }
    config = aws_config(e2e, moto, cluster, provider=provider, workers=workers)
    daemon = shoal(config).start(env=daemon_env())
    assert f"event=workers_prepared cluster_type={cluster_type} leader={leader_ip}" in (
        daemon.log_path.read_text()
    ), daemon.tail()
    assert daemon.put_demand({"jobs": [e2e.job(1, cores=2)], "running": []}).status == 200

    def one_worker() -> set[str] | None:
        ids = moto.live_ids(cluster) - {the_leader["InstanceId"]}
        return ids or None

    (worker,) = e2e.wait_for("a worker in EC2", one_worker, 15.0, 0.05, on_timeout=daemon.tail)
    doc = user_data(moto, worker)
    units = {u["name"]: u for u in doc["systemd"]["units"]}
    agent = units["join-kubernetes-cluster.service"]
    assert units["install-kubernetes.service"]["enabled"]
    script = file_text(doc, "/home/core/join-kubernetes-cluster.sh")
    assert f'kubeadm join "{leader_ip}:6443"' in script
    assert f'token: "{TOKEN}"' in file_text(doc, "/home/core/kubernetes-worker.yml")
    assert TOKEN not in daemon.log_path.read_text()
    assert agent["enabled"] is True
    print(f"\n{cluster_type}: worker {worker} boots {agent['name']} joining {leader_ip}")


def test_no_leader_to_discover_stops_the_daemon_at_start(
    shoal: Any,
    e2e: Any,
    moto: Moto,  # noqa: F811
) -> None:
    """Workers that could not join are never launched: without a tagged leader the daemon
    refuses to start and says why."""
    config = aws_config(e2e, moto, "e2e-no-leader", workers={"leader": {"discover": "tag"}})
    daemon = shoal(config).start(env=daemon_env(), wait_ready=False)
    assert daemon.proc is not None
    assert daemon.proc.wait(timeout=30) == 1, daemon.tail()
    log = daemon.log_path.read_text()
    assert "event=startup_failed" in log and "has no leader" in log, daemon.tail()
    assert moto.live_ids("e2e-no-leader") == set()
