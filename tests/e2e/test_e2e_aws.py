"""`shoal run` with the aws provider against a moto server in this process.

The moto server (ThreadedMotoServer on 127.0.0.1, port 0) runs in the test process, so the
faults below are patches of moto's EC2 handlers here; the daemon is a subprocess that only
sees an EC2 endpoint (``provider.endpoint_url``) and fake credentials in its environment.
Every test checks the cloud itself (instances tagged for the cluster) against what the
daemon reports and what the demand needs.
"""

from __future__ import annotations

import importlib.util
import threading
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

pytestmark = pytest.mark.e2e

boto3 = pytest.importorskip("boto3", reason="boto3 (moto[server]) not installed")
pytest.importorskip("moto.server", reason="moto[server] not installed")

import botocore.config  # noqa: E402
from moto.ec2.exceptions import EC2ClientError  # noqa: E402
from moto.ec2.responses.instances import InstanceResponse  # noqa: E402

REGION = "us-west-2"
ZONE = "us-west-2a"
TAG_CLUSTER = "shoal:cluster"
TAG_AUTOSCALED = "shoal:autoscaled"
LIVE = ["pending", "running"]
OBSERVER = "shoal-e2e-observer"  # user agent of the test's own EC2 client (never faulted)


def _aws_provider_present() -> bool:
    return importlib.util.find_spec("providers.aws") is not None


needs_aws = pytest.mark.skipif(
    not _aws_provider_present(), reason="providers/aws.py (the aws provider) is not there yet"
)


class Moto:
    """A moto EC2 endpoint plus a boto3 client on it, and a counter of RunInstances calls."""

    def __init__(self, url: str) -> None:
        self.url = url
        self.ec2 = boto3.client(
            "ec2",
            region_name=REGION,
            endpoint_url=url,
            aws_access_key_id="testing",
            aws_secret_access_key="testing",
            config=botocore.config.Config(user_agent_extra=OBSERVER),
        )
        self.run_calls: list[dict[str, Any]] = []
        self.image_id = self.ec2.describe_images(Owners=["amazon"])["Images"][0]["ImageId"]
        subnets = self.ec2.describe_subnets(
            Filters=[{"Name": "availability-zone", "Values": [ZONE]}]
        )["Subnets"]
        self.subnet_id = subnets[0]["SubnetId"]

    def instances(self, cluster: str, states: list[str] | None = None) -> list[dict[str, Any]]:
        filters = [{"Name": f"tag:{TAG_CLUSTER}", "Values": [cluster]}]
        if states is not None:
            filters.append({"Name": "instance-state-name", "Values": states})
        out: list[dict[str, Any]] = []
        for page in self.ec2.get_paginator("describe_instances").paginate(Filters=filters):
            for reservation in page["Reservations"]:
                out.extend(reservation["Instances"])
        return out

    def live_ids(self, cluster: str) -> set[str]:
        return {i["InstanceId"] for i in self.instances(cluster, LIVE)}


@pytest.fixture
def moto(monkeypatch: pytest.MonkeyPatch) -> Iterator[Moto]:
    """A moto server on a free loopback port, in this process; stopped at teardown."""
    from moto.server import ThreadedMotoServer

    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "testing")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "testing")
    server = ThreadedMotoServer(ip_address="127.0.0.1", port=0, verbose=False)
    server.start()
    try:
        host, port = server.get_host_and_port()
        url = f"http://{host}:{port}"
        urllib.request.urlopen(urllib.request.Request(f"{url}/moto-api/reset", method="POST"))
        moto = Moto(url)
        original = InstanceResponse.run_instances

        def counting(self: InstanceResponse) -> Any:
            moto.run_calls.append(
                {
                    "type": self._get_param("InstanceType"),
                    "min": self._get_param("MinCount"),
                    "max": self._get_param("MaxCount"),
                    "token": self._get_param("ClientToken"),
                }
            )
            return original(self)

        monkeypatch.setattr(InstanceResponse, "run_instances", counting)
        yield moto
    finally:
        server.stop()


def aws_config(e2e: Any, moto: Moto, cluster: str, **overrides: Any) -> dict[str, Any]:
    base = e2e.simulated_config(e2e.free_port(), scaler={"interval": "500ms"})
    base["cluster_name"] = cluster
    base["provider"] = {
        "kind": "aws",
        "zone": ZONE,
        "region": REGION,
        "endpoint_url": moto.url,
        "image_id": moto.image_id,
        "subnet_id": moto.subnet_id,
    }
    base["node_types"] = [{"type": "c5.xlarge/c5a.xlarge", "min": 0, "max": 10}]
    return e2e.merge(base, overrides)


def aws_env(tmp_path: Path) -> dict[str, str]:
    """Fake credentials; nothing from the user's AWS files or an instance metadata service."""
    return {
        "AWS_ACCESS_KEY_ID": "testing",
        "AWS_SECRET_ACCESS_KEY": "testing",
        "AWS_DEFAULT_REGION": REGION,
        "AWS_CONFIG_FILE": str(tmp_path / "no-aws-config"),
        "AWS_SHARED_CREDENTIALS_FILE": str(tmp_path / "no-aws-credentials"),
        "AWS_EC2_METADATA_DISABLED": "true",
        "AWS_PROFILE": "",
    }


def daemon_ids(daemon: Any) -> set[str]:
    return daemon.node_ids() - daemon.node_ids("terminated")


@needs_aws
def test_demand_launches_tagged_instances_in_ec2(
    shoal: Any, e2e: Any, moto: Moto, tmp_path: Path
) -> None:
    cluster = "e2e-launch"
    daemon = shoal(aws_config(e2e, moto, cluster)).start(env=aws_env(tmp_path))
    assert moto.live_ids(cluster) == set()

    start = time.monotonic()
    assert daemon.put_demand({"jobs": [e2e.job(3, cores=4)]}).status == 200

    def three() -> set[str] | None:
        ids = moto.live_ids(cluster)
        return ids if len(ids) >= 3 else None

    ids = e2e.wait_for("3 instances in EC2", three, 15.0, 0.05, on_timeout=daemon.tail)
    print(
        f"\ndemand -> 3 instances in EC2: {(time.monotonic() - start) * 1000:.0f} ms, "
        f"{len(moto.run_calls)} RunInstances call(s): {moto.run_calls}"
    )
    assert len(ids) == 3, ids
    for instance in moto.instances(cluster, LIVE):
        tags = {t["Key"]: t["Value"] for t in instance.get("Tags", [])}
        assert tags.get(TAG_AUTOSCALED) == "true", tags
        assert instance["InstanceType"] == "c5.xlarge", instance["InstanceType"]
        assert instance["Placement"]["AvailabilityZone"] == ZONE
    e2e.wait_for(
        "the daemon to list the same 3",
        lambda: daemon_ids(daemon) == ids,
        5.0,
        0.05,
        on_timeout=lambda: f"{daemon.status()['nodes']}\n{daemon.tail()}",
    )
    # Steady: a few more passes launch nothing more.
    time.sleep(1.5)
    assert moto.live_ids(cluster) == ids
    assert e2e.metric(daemon.metrics(), "shoal_scale_ups_total") == 3


@needs_aws
def test_kill9_during_scale_up_then_restart_no_duplicates_no_orphans(
    shoal: Any, e2e: Any, moto: Moto, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    cluster = "e2e-crash"
    created = threading.Event()
    release = threading.Event()
    inner = InstanceResponse.run_instances  # the counting wrapper

    def slow_response(self: InstanceResponse) -> Any:
        """EC2 has made the instances; the daemon dies before it hears back."""
        result = inner(self)
        created.set()
        release.wait(timeout=30)
        return result

    monkeypatch.setattr(InstanceResponse, "run_instances", slow_response)
    config = aws_config(e2e, moto, cluster, scaler={"unneeded_time": "1s"})
    first = shoal(config, name="first").start(env=aws_env(tmp_path))
    demand = {"jobs": [e2e.job(3, cores=4)]}
    assert first.put_demand(demand).status == 200
    if not created.wait(timeout=15):
        pytest.fail(f"no RunInstances within 15 s\n{first.tail()}")
    first.kill9()  # mid-call: instances exist, the daemon never saw the reply
    release.set()
    launched_by_first = moto.live_ids(cluster)
    assert launched_by_first, "the interrupted RunInstances created nothing"
    print(f"\nkilled mid-RunInstances; EC2 holds {len(launched_by_first)} instance(s)")

    monkeypatch.setattr(InstanceResponse, "run_instances", inner)
    second = shoal(config, name="second").start(env=aws_env(tmp_path))
    # The new daemon adopts the tagged instances before planning anything.
    status = second.status()
    assert daemon_ids(second) == launched_by_first, status["nodes"]
    assert second.put_demand(demand).status == 200

    def settled() -> set[str] | None:
        ids = moto.live_ids(cluster)
        return ids if len(ids) == 3 and daemon_ids(second) == ids else None

    ids = e2e.wait_for("3 instances, all known", settled, 15.0, 0.1, on_timeout=second.tail)
    time.sleep(1.5)  # a few more passes
    assert moto.live_ids(cluster) == ids, "a duplicate launch after the restart"
    assert daemon_ids(second) == ids
    assert launched_by_first <= ids
    ups = e2e.metric(second.metrics(), "shoal_scale_ups_total")
    assert ups == 3 - len(launched_by_first), f"relaunched {ups}, adopted {launched_by_first}"

    # No orphans: with no demand, the restarted daemon removes what the dead one launched.
    assert second.put_demand({"jobs": []}).status == 200
    e2e.wait_for(
        "every instance terminated",
        lambda: not moto.live_ids(cluster),
        15.0,
        0.1,
        on_timeout=lambda: f"{moto.live_ids(cluster)}\n{second.tail()}",
    )


@needs_aws
def test_throttling_and_capacity_faults_are_survived_and_counted(
    shoal: Any, e2e: Any, moto: Moto, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    cluster = "e2e-faults"
    throttled = threading.Event()
    throttled.set()
    no_capacity = {"c5.xlarge", "c5a.xlarge"}
    run = InstanceResponse.run_instances
    describe = InstanceResponse.describe_instances

    def run_instances(self: InstanceResponse) -> Any:
        instance_type = self._get_param("InstanceType")
        if instance_type in no_capacity:
            raise EC2ClientError(
                "InsufficientInstanceCapacity",
                f"We currently do not have sufficient {instance_type} capacity in the "
                f"Availability Zone you requested ({ZONE}).",
            )
        return run(self)

    def describe_instances(self: InstanceResponse) -> Any:
        if throttled.is_set() and OBSERVER not in self.headers.get("User-Agent", ""):
            raise EC2ClientError("RequestLimitExceeded", "Request limit exceeded.")
        return describe(self)

    config = aws_config(
        e2e,
        moto,
        cluster,
        node_types=[
            {"type": "c5.xlarge/c5a.xlarge", "min": 0, "max": 10},
            {"type": "m5.xlarge", "min": 0, "max": 10},
        ],
        scaler={
            "interval": "300ms",
            "backoff": {"initial": "1m", "max": "5m"},
            "retry": {"attempts": 2, "initial": "50ms", "max": "100ms", "deadline": "1s"},
        },
    )
    daemon = shoal(config).start(env=aws_env(tmp_path))  # reconcile before the faults
    monkeypatch.setattr(InstanceResponse, "describe_instances", describe_instances)
    monkeypatch.setattr(InstanceResponse, "run_instances", run_instances)

    # 1. Throttled listing: passes are skipped, counted, and the daemon stays up.
    def throttle_counted() -> float | None:
        samples = daemon.metrics()
        errors = e2e.metric(samples, "shoal_provider_errors_total", code="RequestLimitExceeded")
        skipped = e2e.metric(samples, "shoal_passes_total", outcome="skipped")
        return errors if errors >= 1 and skipped >= 1 else None

    e2e.wait_for("throttling in /metrics", throttle_counted, 20.0, 0.1, on_timeout=daemon.tail)
    assert daemon.alive()
    assert "RequestLimitExceeded" in daemon.status()["last_pass"]["reason"]
    throttled.clear()

    # 2. No capacity for c5.xlarge nor c5a.xlarge: both offerings back off, m5.xlarge serves.
    assert daemon.put_demand({"jobs": [e2e.job(2, cores=4)]}).status == 200

    def m5_launched() -> list[dict[str, Any]] | None:
        live = moto.instances(cluster, LIVE)
        return live if len(live) >= 2 else None

    live = e2e.wait_for("m5.xlarge instances", m5_launched, 20.0, 0.1, on_timeout=daemon.tail)
    assert {i["InstanceType"] for i in live} == {"m5.xlarge"}, live
    assert len(live) == 2
    samples = daemon.metrics()
    failures = e2e.metric(
        samples, "shoal_scale_up_failures_total", node_type="c5.xlarge/c5a.xlarge"
    )
    assert failures >= 1, daemon.get("/metrics").text
    assert e2e.metric(samples, "shoal_offerings_in_backoff") == 2
    assert e2e.metric(samples, "shoal_scale_ups_total", node_type="m5.xlarge") == 2
    backoff = daemon.status()["backoff"]
    assert {b["instance_type"] for b in backoff} == no_capacity, backoff
    assert all("InsufficientInstanceCapacity" in b["reason"] for b in backoff), backoff

    # 3. Still going: passes succeed again and the daemon reports healthy.
    before = e2e.metric(daemon.metrics(), "shoal_passes_total", outcome="ok")
    e2e.wait_for(
        "more ok passes",
        lambda: e2e.metric(daemon.metrics(), "shoal_passes_total", outcome="ok") > before + 2,
        5.0,
        0.1,
        on_timeout=daemon.tail,
    )
    assert daemon.get("/healthz").status == 200
    assert daemon.alive()
