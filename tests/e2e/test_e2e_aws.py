"""`shoal run` with the aws provider against a moto server in this process.

The moto server (ThreadedMotoServer on 127.0.0.1, port 0) runs in the test process, so the
faults below are patches of moto's EC2 handlers here; the daemon is a subprocess that only
sees an EC2 endpoint (``provider.endpoint_url``) and fake credentials in its environment.
Every test checks the cloud itself (instances tagged for the cluster) against what the
daemon reports and what the demand needs.
"""

from __future__ import annotations

import contextlib
import threading
import time
from collections.abc import Callable, Iterator
from typing import Any

import boto3
import botocore.config
import configs
import moto_fixtures as fixtures
import pytest
from moto.ec2.exceptions import EC2ClientError
from moto.ec2.responses.instances import InstanceResponse

pytestmark = pytest.mark.e2e

REGION = "us-west-2"
ZONE = "us-west-2a"
TAG_CLUSTER = "shoal:cluster"
TAG_AUTOSCALED = "shoal:autoscaled"
LIVE = ["pending", "running"]
OBSERVER = "shoal-e2e-observer"  # user agent of the test's own EC2 client (never faulted)


@contextlib.contextmanager
def patched(
    owner: type, name: str, replacement: Callable[..., Any]
) -> Iterator[Callable[..., Any]]:
    """Replace ``owner.name`` for a block and always put back what was there (which may be
    ec2_behaviour's own patch: monkeypatch could restore in the wrong order with it)."""
    original = getattr(owner, name)
    setattr(owner, name, replacement)
    try:
        yield original
    finally:
        setattr(owner, name, original)


@contextlib.contextmanager
def daemon_listings_throttled() -> Iterator[None]:
    """For a block, every DescribeInstances but the test's own answers RequestLimitExceeded."""
    describe = InstanceResponse.describe_instances

    def throttled_describe(self: InstanceResponse) -> Any:
        if OBSERVER not in self.headers.get("User-Agent", ""):
            raise EC2ClientError("RequestLimitExceeded", "Request limit exceeded.")
        return describe(self)

    with patched(InstanceResponse, "describe_instances", throttled_describe):
        yield


class Moto:
    """The moto EC2 endpoint, a boto3 client on it (marked as the observer) and EC2 behaviour."""

    def __init__(self, url: str, behaviour: Any) -> None:
        self.url = url
        self.behaviour = behaviour
        self.ec2 = boto3.client(
            "ec2",
            region_name=REGION,
            endpoint_url=url,
            aws_access_key_id="testing",
            aws_secret_access_key="testing",
            config=botocore.config.Config(user_agent_extra=OBSERVER),
        )
        self.image_id = self.ec2.describe_images(Owners=["amazon"])["Images"][0]["ImageId"]
        subnets = self.ec2.describe_subnets(
            Filters=[{"Name": "availability-zone", "Values": [ZONE]}]
        )["Subnets"]
        self.subnet_id = subnets[0]["SubnetId"]

    @property
    def run_calls(self) -> list[dict[str, Any]]:
        return list(self.behaviour.requests)

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
def moto(moto_url: str, ec2_behaviour: Any) -> Moto:
    """moto_fixtures' server (reset for this test, fake credentials in the environment) with
    EC2's RunInstances behaviour (MaxCount, ClientToken, capacity) patched in."""
    return Moto(moto_url, ec2_behaviour)


def aws_config(e2e: Any, moto: Moto, cluster: str, **overrides: Any) -> dict[str, Any]:
    base = e2e.simulated_config(e2e.free_port(), scaler={"interval": "500ms"})
    base["cluster_name"] = cluster
    # moto has no Pricing API and one fake spot price for everything: aws_provider turns the
    # refresh off, and the shipped table prices the fleet
    base["provider"] = configs.aws_provider(
        moto.url, zone=ZONE, region=REGION, image_id=moto.image_id, subnet_id=moto.subnet_id
    )
    base["node_types"] = [{"type": "c5.xlarge/c5a.xlarge", "min": 0, "max": 10}]
    return e2e.merge(base, overrides)


def daemon_env() -> dict[str, str]:
    """Fake credentials only (aws_env put them in this process's environment, which the
    daemon inherits, with the user's AWS files and the metadata service switched off)."""
    return dict(fixtures.FAKE_CREDENTIALS)


def daemon_ids(daemon: Any) -> set[str]:
    return daemon.node_ids() - daemon.node_ids("terminated")


def test_demand_launches_tagged_instances_in_ec2(shoal: Any, e2e: Any, moto: Moto) -> None:
    cluster = "e2e-launch"
    daemon = shoal(aws_config(e2e, moto, cluster)).start(env=daemon_env())
    assert moto.live_ids(cluster) == set()

    start = time.monotonic()
    assert daemon.put_demand({"jobs": [e2e.job(3, cores=4)], "running": []}).status == 200

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
    daemon.wait_passes(3)
    assert moto.live_ids(cluster) == ids
    assert e2e.metric(daemon.metrics(), "shoal_scale_ups_total") == 3


def kill9_mid_runinstances(shoal: Any, config: Any, demand: dict[str, Any]) -> None:
    """Start a daemon, push ``demand`` and kill -9 it while EC2's RunInstances is answering:
    EC2 has made the instances, the daemon never hears back."""
    created = threading.Event()
    release = threading.Event()
    first = shoal(config, name="first").start(env=daemon_env())
    inner = InstanceResponse.run_instances  # ec2_behaviour's RunInstances

    def slow_response(self: InstanceResponse) -> Any:
        result = inner(self)
        created.set()
        release.wait(timeout=30)
        return result

    with patched(InstanceResponse, "run_instances", slow_response):
        try:
            assert first.put_demand(demand).status == 200
            if not created.wait(timeout=15):
                pytest.fail(f"no RunInstances within 15 s\n{first.tail()}")
            first.kill9()
        finally:
            release.set()


def test_kill9_during_scale_up_then_restart_no_duplicates_no_orphans(
    shoal: Any, e2e: Any, moto: Moto
) -> None:
    cluster = "e2e-crash"
    config = aws_config(e2e, moto, cluster, scaler={"unneeded_time": "1s"})
    demand = {"jobs": [e2e.job(3, cores=4)], "running": []}
    kill9_mid_runinstances(shoal, config, demand)
    launched_by_first = moto.live_ids(cluster)
    print(f"\nkilled mid-RunInstances; EC2 holds {len(launched_by_first)} instance(s)")
    assert len(launched_by_first) == 3, "the interrupted RunInstances did not launch 3"

    second = shoal(config, name="second").start(env=daemon_env())
    # The restarted daemon adopts the tagged instances before it plans anything.
    assert daemon_ids(second) == launched_by_first, second.status()["nodes"]
    assert second.put_demand(demand).status == 200

    def settled() -> set[str] | None:
        ids = moto.live_ids(cluster)
        return ids if len(ids) >= 3 and daemon_ids(second) == ids else None

    ids = e2e.wait_for("3 instances, all known", settled, 15.0, 0.1, on_timeout=second.tail)
    second.wait_passes(3)
    assert moto.live_ids(cluster) == ids == launched_by_first, "a duplicate after the restart"
    assert daemon_ids(second) == ids
    assert e2e.metric(second.metrics(), "shoal_scale_ups_total") == 0
    assert len(moto.run_calls) == 1, moto.run_calls

    # No orphans: with no demand, the restarted daemon removes what the dead one launched.
    assert second.put_demand({"jobs": [], "running": []}).status == 200
    e2e.wait_for(
        "every instance terminated",
        lambda: not moto.live_ids(cluster),
        15.0,
        0.1,
        on_timeout=lambda: f"{moto.live_ids(cluster)}\n{second.tail()}",
    )
    # The counter moves when terminateNodes returns, a moment after EC2 shows them gone.
    e2e.wait_for(
        "3 scale-downs counted",
        lambda: e2e.metric(second.metrics(), "shoal_scale_downs_total") == 3,
        5.0,
        0.05,
        on_timeout=second.tail,
    )
    assert e2e.metric(second.metrics(), "shoal_scale_downs_total") == 3


def test_kill9_after_runinstances_on_a_lagging_listing_launches_nothing_twice(
    shoal: Any, e2e: Any, moto: Moto, tmp_path: Any
) -> None:
    """Issue 17, bug 4: as above, but EC2's listing lags 8 s, so the restarted daemon cannot
    adopt the instances yet. The launch's intent in state_dir (written before RunInstances)
    stands for them: its first pass that wants the 3 nodes makes the launch again under the
    same ClientToken, and EC2 answers with the 3 it made (so the daemon knows their ids
    before any listing shows them): 3 instances for 3 nodes of demand, not 6."""
    cluster = "e2e-crash-lag"
    moto.behaviour.listing_lag = 8.0
    config = aws_config(e2e, moto, cluster, state_dir=str(tmp_path / "state"))
    demand = {"jobs": [e2e.job(3, cores=4)], "running": []}
    kill9_mid_runinstances(shoal, config, demand)
    launched_by_first = set(moto.behaviour._launched_at)  # every id EC2 made, listed or not
    assert len(launched_by_first) == 3

    second = shoal(config, name="second").start(env=daemon_env())
    # not listed yet: the launch in flight stands as 3 placeholders from the intent on disk
    placeholders = daemon_ids(second)
    assert len(placeholders) == 3 and all(i.startswith("unconfirmed:") for i in placeholders)
    assert second.put_demand(demand).status == 200
    second.wait_passes(4)  # passes every 500 ms, all within the listing lag
    assert set(moto.behaviour._launched_at) == launched_by_first, "launched again"
    assert daemon_ids(second) == launched_by_first  # known by id: the replay's answer
    calls = moto.run_calls
    assert len(calls) == 2 and calls[0]["ClientToken"] == calls[1]["ClientToken"], calls
    e2e.wait_for(
        "the instances listed",
        lambda: moto.live_ids(cluster) == launched_by_first,
        15.0,
        0.1,
        on_timeout=second.tail,
    )
    second.wait_passes(3)
    assert moto.live_ids(cluster) == daemon_ids(second) == launched_by_first
    assert set(moto.behaviour._launched_at) == launched_by_first and len(moto.run_calls) == 2
    # counted once, by the daemon that booked them (the first died before its answer)
    assert e2e.metric(second.metrics(), "shoal_scale_ups_total") == 3


def test_throttling_and_capacity_faults_are_survived_and_counted(
    shoal: Any, e2e: Any, moto: Moto
) -> None:
    cluster = "e2e-faults"
    retry = {"attempts": 2, "initial": "50ms", "max": "100ms", "deadline": "1s"}
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
            "retry": retry,
        },
    )
    daemon = shoal(config).start(env=daemon_env())  # reconciled before the faults

    # 1. Every listing throttled: passes are skipped and counted; the daemon stays up.
    with daemon_listings_throttled():
        start = time.monotonic()

        def throttle_counted() -> bool:
            samples = daemon.metrics()
            errors = e2e.metric(samples, "shoal_provider_errors_total", code="RequestLimitExceeded")
            skipped = e2e.metric(samples, "shoal_passes_total", outcome="skipped")
            return errors >= 1 and skipped >= 1

        e2e.wait_for("throttling in /metrics", throttle_counted, 60.0, 0.05, on_timeout=daemon.tail)
        took = time.monotonic() - start
        retries = daemon.log_path.read_text().count("event=retry operation=describe_instances")
        print(f"\nthrottled listing given up after {took:.1f}s, {retries} provider-level retries")
        # the configured retry bounds the call: 2 tries within 1 s, plus one 300 ms interval
        assert took < 3.0, f"{took:.1f}s with retry {retry}\n{daemon.tail()}"
        assert daemon.alive()
        last = daemon.status()["last_pass"]
        assert last["outcome"] == "skipped" and "RequestLimitExceeded" in last["reason"], last

    # 2. Throttled launches, then no capacity for c5.xlarge nor c5a.xlarge: both offerings
    #    back off and m5.xlarge serves the demand.
    moto.behaviour.fail_next("RequestLimitExceeded", "Request limit exceeded.", times=1)
    moto.behaviour.capacity.update({"c5.xlarge": 0, "c5a.xlarge": 0})
    assert daemon.put_demand({"jobs": [e2e.job(2, cores=4)], "running": []}).status == 200

    def two_live() -> list[dict[str, Any]] | None:
        live = moto.instances(cluster, LIVE)
        return live if len(live) >= 2 else None

    live = e2e.wait_for("m5.xlarge instances", two_live, 30.0, 0.1, on_timeout=daemon.tail)
    daemon.wait_passes(3)  # nothing more launched
    live = moto.instances(cluster, LIVE)
    assert sorted(i["InstanceType"] for i in live) == ["m5.xlarge", "m5.xlarge"], live
    calls = [(c["InstanceType"], c["MaxCount"]) for c in moto.run_calls]
    print(f"RunInstances calls: {calls}")
    assert {"c5.xlarge", "c5a.xlarge", "m5.xlarge"} <= {t for t, _ in calls}, calls
    samples = daemon.metrics()
    text = daemon.get("/metrics").text
    capacity_failures = e2e.metric(
        samples, "shoal_scale_up_failures_total", node_type="c5.xlarge/c5a.xlarge"
    )
    assert capacity_failures >= 1, text
    assert e2e.metric(samples, "shoal_offerings_in_backoff") == 2, text
    assert e2e.metric(samples, "shoal_scale_ups_total", node_type="m5.xlarge") == 2, text
    backoff = daemon.status()["backoff"]
    assert {b["instance_type"] for b in backoff} == {"c5.xlarge", "c5a.xlarge"}, backoff
    assert all("capacity" in b["reason"].lower() for b in backoff), backoff

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
