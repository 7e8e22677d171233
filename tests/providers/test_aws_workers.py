"""Workers the AWS provider launches join the scheduler: their user data, read back from a
local moto server (DescribeInstanceAttribute userData) and decoded, holds the agent unit of
the cluster type, enabled, pointing at the configured leader, and every unit verifies.

The provisioner is built from a real daemon config (``AWSProvisioner.from_config``), as the
service builds it; the leader is found as configured: its address, the instance
``launchCluster`` tagged in moto, or the instance metadata service (a fake IMDSv2 serving the
leader's metadata as moto describes the instance). ``readClusterSettings`` reads the fake.
"""

from __future__ import annotations

import base64
import dataclasses
import hashlib
import json
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import configs
import pytest
from aiobotocore.session import get_session
from fake_imds import FakeImds
from moto_fixtures import Ec2Behaviour
from shoal.daemon.config import ShoalConfig, parse_config
from shoal.providers.aws import MAX_USER_DATA, AWSProvisioner
from shoal.providers.base import client_token
from shoal.providers.errors import ProviderError
from shoal.providers.outcomes import LaunchRequest
from shoal.providers.workers import TAG_SLURM_NODE
from shoal.scaler.model import CapacityType, Offering
from systemd_verify import assert_units_verify, files_of, needs_systemd_analyze, units_of
from test_ignition import check_ignition_2_2

IMAGE = "ami-12c6146b"
ZONE = "us-east-1a"
MUNGE_KEY = hashlib.sha512(b"moto munge").digest() * 2


@dataclasses.dataclass
class Env:
    url: str
    behaviour: Ec2Behaviour
    tmp: Path
    imds_url: str = "http://127.0.0.1:9"  # nothing listens: a test that reads it says so

    def config(self, cluster_type: str, workers: dict[str, Any] | None, **provider: Any) -> Any:
        (self.tmp / "munge.key").write_bytes(MUNGE_KEY)
        aws = {"cluster_type": cluster_type, "zone": ZONE, "metadata_endpoint": self.imds_url}
        section = configs.aws_provider(self.url, image_id=IMAGE, price_refresh=None, **aws)
        return parse_config(
            configs.config(
                cluster_name="demo",
                provider=configs.merge(section, provider),
                node_types=[{"type": "c5.xlarge", "max": 5}],
                workers=workers,  # None: no workers section
            )
        )

    def slurm(self, **extra: Any) -> dict[str, Any]:
        return {"munge_key_file": str(self.tmp / "munge.key"), **extra}

    async def describe(self, instance_id: str) -> dict[str, Any]:
        async with self.client() as ec2:
            resp = await ec2.describe_instances(InstanceIds=[instance_id])
        return resp["Reservations"][0]["Instances"][0]

    async def user_data(self, instance_id: str) -> dict[str, Any]:
        async with self.client() as ec2:
            attr = await ec2.describe_instance_attribute(
                InstanceId=instance_id, Attribute="userData"
            )
        raw = base64.b64decode(attr["UserData"]["Value"])
        assert len(raw) <= MAX_USER_DATA
        assert check_ignition_2_2(raw.decode()) == []
        return json.loads(raw)

    def client(self) -> Any:
        return get_session().create_client(
            "ec2",  # type: ignore[call-overload]
            region_name="us-east-1",
            endpoint_url=self.url,
        )


@pytest.fixture
def env(moto_url: str, ec2_behaviour: Ec2Behaviour, tmp_path: Path) -> Env:
    return Env(moto_url, ec2_behaviour, tmp_path)


@pytest.fixture
async def leader(env: Env) -> dict[str, Any]:
    """The cluster's leader, launched and tagged by launchCluster in moto."""
    async with AWSProvisioner.from_config(env.config("mesos", None)) as launcher:
        await launcher.launchCluster("t3.medium")
        node = await launcher.getLeader()
    return await env.describe(node.name)


@pytest.fixture
async def imds(env: Env, leader: dict[str, Any]) -> AsyncIterator[FakeImds]:
    """IMDSv2 of the leader instance (shoal runs there); env's configs point at it."""
    fake = FakeImds.of_instance(leader)
    env.imds_url = await fake.start()
    try:
        yield fake
    finally:
        await fake.stop()


async def add_one(aws: AWSProvisioner) -> str:
    """Launch one worker as the planner does (addNodes); its instance id."""
    assert await aws.addNodes(["c5.xlarge"], 1, False, requestId="join-1") == 1
    (node,) = await aws.getProvisionedWorkers()
    return node.name


async def launch_one(config: ShoalConfig) -> tuple[AWSProvisioner, str]:
    """A provisioner built from ``config`` (closed again) and the worker it launched."""
    async with AWSProvisioner.from_config(config) as aws:
        return aws, await add_one(aws)


# -- the agent in the user data of a launched worker --------------------------------------


@needs_systemd_analyze
@pytest.mark.parametrize("source", ["tag", "imds"])
async def test_mesos_worker_runs_the_agent_of_the_leader(
    source: str, env: Env, leader: dict[str, Any], imds: FakeImds, tmp_path: Path
) -> None:
    """The leader discovered in moto (its tag) or the fake IMDS; a given address is
    test_worker_join's (test_prepare_learns_the_leader_a_mesos_agent_joins[address])."""
    leader_ip = leader["PrivateIpAddress"]
    how = {"discover": source}
    aws, worker = await launch_one(env.config("mesos", {"leader": how}))  # prepared on launch
    assert aws._leaderPrivateIP == leader_ip
    doc = await env.user_data(worker)
    (unit,) = [u for u in doc["systemd"]["units"] if u["name"] == "toil-worker.service"]
    assert unit["enabled"] is True
    assert f"--master={leader_ip}:5050" in unit["contents"]
    assert "--entrypoint=mesos-agent" in unit["contents"]
    assert_units_verify(tmp_path, doc)
    imds_reads = [p for m, p, _ in imds.requests if m == "GET"]
    assert bool(imds_reads) == (source == "imds")


async def test_named_slurm_worker_is_launched_one_by_one_with_its_tag(env: Env) -> None:
    config = env.config(
        "slurm", {"slurm": env.slurm(conf_server="ctl.internal:6817", node_name="tag")}
    )
    async with AWSProvisioner.from_config(config) as aws:
        # The planner's launches carry no node name: refused before anything is launched.
        with pytest.raises(ProviderError) as info:
            await aws.addNodes(["c5.xlarge"], 2, False)
        assert info.value.code == "SlurmNodeNameMissing"
        assert env.behaviour.requests == []
        await aws.catalogue(["c5.xlarge"])
        offering = Offering("c5.xlarge", ZONE, CapacityType.ON_DEMAND)
        request = LaunchRequest(
            offering=offering,
            count=1,
            client_token=client_token("resume-1", offering),
            request_id="resume-1",
            spot_bid=None,
            tags={**aws.worker_tags("c5.xlarge", "resume-1"), TAG_SLURM_NODE: "aws-c5-1"},
        )
        (worker,) = await aws.launch_offering(request)
    instance = await env.describe(worker)
    tags = {t["Key"]: t["Value"] for t in instance["Tags"]}
    assert tags[TAG_SLURM_NODE] == "aws-c5-1"
    assert instance["MetadataOptions"]["InstanceMetadataTags"] == "enabled"
    script = files_of(await env.user_data(worker))["/home/core/start-slurmd.sh"]
    assert "conf_server=ctl.internal:6817\n" in script and "node_name=tag" in script


# -- a Slurm gang: one all-or-nothing launch, one node name per instance (issue 18) ---------

GANG = ("aws-c5-1", "aws-c5-2", "aws-c5-3")


def gang_request(aws: AWSProvisioner, names: tuple[str, ...] = GANG, **kw: Any) -> LaunchRequest:
    """A power-save gang's request, as ``Fleet.addNodes(all_or_nothing=True)`` makes it."""
    offering = Offering("c5.xlarge", ZONE, CapacityType.ON_DEMAND)
    fields: dict[str, Any] = {
        "offering": offering,
        "count": len(names),
        "client_token": client_token("resume-7", offering),
        "request_id": "resume-7",
        "spot_bid": None,
        "tags": {**aws.worker_tags("c5.xlarge", "resume-7"), TAG_SLURM_NODE: ",".join(names)},
        "min_count": len(names),
    }
    return LaunchRequest(**{**fields, **kw})


def named_tag_config(env: Env) -> ShoalConfig:
    return env.config("slurm", {"slurm": env.slurm(conf_server="ctl", node_name="tag")})


async def slurm_names(env: Env, ids: list[str]) -> list[str]:
    """Each instance's Slurm node tag, as EC2 holds it (not as the provider listed it)."""
    return [
        {t["Key"]: t["Value"] for t in (await env.describe(i))["Tags"]}[TAG_SLURM_NODE] for i in ids
    ]


async def test_a_gang_is_one_run_instances_and_each_instance_gets_its_own_name(
    env: Env,
) -> None:
    async with AWSProvisioner.from_config(named_tag_config(env)) as aws:
        await aws.catalogue(["c5.xlarge"])
        ids = await aws.launch_offering(gang_request(aws))
        listed = {n.name: n.tags[TAG_SLURM_NODE] for n in await aws.list_instances()}
    assert [(r["MinCount"], r["MaxCount"]) for r in env.behaviour.requests] == [(3, 3)]
    assert len(set(ids)) == 3
    # ids in launch order, instance i tagged with name i: the power saver pairs them so
    assert [(await env.describe(i))["AmiLaunchIndex"] for i in ids] == [0, 1, 2]
    assert await slurm_names(env, ids) == list(GANG)
    assert listed == dict(zip(ids, GANG, strict=True))
    for i in ids:  # each reads its own name from the metadata service
        assert (await env.describe(i))["MetadataOptions"]["InstanceMetadataTags"] == "enabled"


async def test_a_100_node_gang_fits_its_names_in_one_tag_as_a_hostlist(env: Env) -> None:
    """Slurm resumes ``g[1-100]`` for one job: the names, comma-separated, are far over EC2's
    256 characters of a tag value; as a hostlist they fit. One RunInstances of 100, launched
    tagged ``g[1-100]`` (the naming is held back to see it), then each instance gets its own
    name: the one its launch index gives it."""
    names = tuple(f"g{i}" for i in range(1, 101))
    assert len(",".join(names)) > 256
    env.behaviour.fail_next_create_tags("RequestLimitExceeded")
    async with AWSProvisioner.from_config(named_tag_config(env)) as aws:
        await aws.catalogue(["c5.xlarge"])
        with pytest.raises(ProviderError) as throttled:
            await aws.launch_offering(gang_request(aws, names))
        assert aws.retryPredicate(throttled.value)
        async with env.client() as ec2:
            resp = await ec2.describe_instances()
        launched = sorted(
            (i for r in resp["Reservations"] for i in r["Instances"]),
            key=lambda i: i["AmiLaunchIndex"],
        )
        assert len(launched) == 100
        ids = [i["InstanceId"] for i in launched]
        assert set(await slurm_names(env, ids[1:3])) == {"g[1-100]"}
        # the retry (same client token) gets the same 100 back and names them
        assert await aws.launch_offering(gang_request(aws, names)) == ids
        listed = {n.name: n.tags[TAG_SLURM_NODE] for n in await aws.list_instances()}
    assert [(r["MinCount"], r["MaxCount"]) for r in env.behaviour.requests] == [(100, 100)] * 2
    assert await slurm_names(env, ids) == list(names)
    assert listed == dict(zip(ids, names, strict=True))


async def test_a_gang_whose_answer_was_lost_is_named_when_replayed(env: Env) -> None:
    """RunInstances launched but its answer was lost: the replay (same client token) gets the
    same three instances back, launches none more, and names them."""
    env.behaviour.lose_next_response()
    async with AWSProvisioner.from_config(named_tag_config(env)) as aws:
        await aws.catalogue(["c5.xlarge"])
        with pytest.raises(ProviderError) as lost:
            await aws.launch_offering(gang_request(aws))
        assert aws.retryPredicate(lost.value)
        ids = await aws.launch_offering(gang_request(aws))
        assert len(await aws.list_instances()) == 3
    assert len(env.behaviour.requests) == 2
    assert await slurm_names(env, ids) == list(GANG)


async def test_a_daemon_stopped_before_naming_a_gang_names_it_after_its_restart(
    env: Env,
) -> None:
    """The launch's CreateTags all failed (throttled, then the daemon stopped): the instances
    carry the list of names. The restarted daemon's first listing names each from its launch
    index (no power-save request needed), and a replay of the request launches nothing."""
    env.behaviour.fail_next_create_tags("RequestLimitExceeded")
    async with AWSProvisioner.from_config(named_tag_config(env)) as aws:
        await aws.catalogue(["c5.xlarge"])
        with pytest.raises(ProviderError) as throttled:
            await aws.launch_offering(gang_request(aws))
        assert aws.retryPredicate(throttled.value)
    async with env.client() as ec2:
        resp = await ec2.describe_instances()
    launched = [i for r in resp["Reservations"] for i in r["Instances"]]
    ids = [i["InstanceId"] for i in sorted(launched, key=lambda i: i["AmiLaunchIndex"])]
    assert await slurm_names(env, ids) == ["aws-c5-[1-3]"] * 3  # not named yet: a hostlist

    async with AWSProvisioner.from_config(named_tag_config(env)) as restarted:
        env.behaviour.fail_next_create_tags("RequestLimitExceeded")  # the first one fails...
        listed = {n.name: n.tags[TAG_SLURM_NODE] for n in await restarted.list_instances()}
        # ...the node is listed with its own name all the same, and the next listing writes it
        assert listed == dict(zip(ids, GANG, strict=True))
        assert await slurm_names(env, ids) == ["aws-c5-[1-3]", *GANG[1:]]
        await restarted.list_instances()
        assert await slurm_names(env, ids) == list(GANG)
        await restarted.catalogue(["c5.xlarge"])
        assert await restarted.launch_offering(gang_request(restarted)) == ids
    assert len(env.behaviour.requests) == 2 and len(launched) == 3


async def test_a_gang_that_cannot_be_named_is_terminated(env: Env) -> None:
    """CreateTags refused for good (an IAM policy without the naming statement): no instance
    is left billing under a list of names; the error is raised, not retried."""
    env.behaviour.fail_next_create_tags("UnauthorizedOperation")
    async with AWSProvisioner.from_config(named_tag_config(env)) as aws:
        await aws.catalogue(["c5.xlarge"])
        with pytest.raises(ProviderError) as refused:
            await aws.launch_offering(gang_request(aws))
        assert not aws.retryPredicate(refused.value)
        assert await aws.list_instances() == []
    (terminated,) = env.behaviour.terminations
    assert len(terminated) == 3


@pytest.mark.parametrize(
    ("names", "fields", "message"),
    [
        (GANG, {"count": 2, "min_count": 2}, "one name each"),
        (("a", "a"), {}, "one name each"),
        (GANG, {"min_count": 1}, "all or nothing"),
        # no run of numbers to merge: 20 names over 256 characters even as a hostlist
        (tuple(f"compute-{i:03}-node" for i in range(20)), {}, "256 characters"),
    ],
    ids=["count", "twice", "not-all-or-nothing", "too-long"],
)
async def test_a_gang_that_cannot_be_named_is_refused_before_launching(
    names: tuple[str, ...], fields: dict[str, Any], message: str, env: Env
) -> None:
    async with AWSProvisioner.from_config(named_tag_config(env)) as aws:
        await aws.catalogue(["c5.xlarge"])
        with pytest.raises(ProviderError, match=message) as info:
            await aws.launch_offering(gang_request(aws, names, **fields))
    assert info.value.code == "InvalidParameterValue"
    assert env.behaviour.requests == []


async def test_tag_keys_imds_cannot_serve_are_refused(env: Env) -> None:
    config = env.config(
        "slurm",
        {"slurm": env.slurm(conf_server="ctl")},
        extra_tags={"kubernetes.io/cluster/x": "owned"},
    )
    async with AWSProvisioner.from_config(config) as aws:
        await aws.catalogue(["c5.xlarge"])
        offering = Offering("c5.xlarge", ZONE, CapacityType.ON_DEMAND)
        request = LaunchRequest(offering, 1, "tok-1", "r-1", None, {TAG_SLURM_NODE: "aws-c5-1"})
        with pytest.raises(ProviderError) as info:
            await aws.launch_offering(request)
    assert info.value.code == "InvalidTagKey"
    assert "'kubernetes.io/cluster/x'" in str(info.value)
    assert env.behaviour.requests == []


# -- nothing launches that could not join ------------------------------------------------


async def test_no_leader_to_discover_launches_nothing(env: Env) -> None:
    config = env.config("mesos", {"leader": {"discover": "tag"}})
    async with AWSProvisioner.from_config(config) as aws:
        with pytest.raises(ProviderError) as info:
            await aws.prepare_workers()
        assert info.value.code == "NoLeader"
        with pytest.raises(ProviderError) as info:
            await aws.addNodes(["c5.xlarge"], 1, False)
        assert info.value.code == "NoLeader"
        assert await aws.getProvisionedWorkers() == []
    assert env.behaviour.requests == []


async def test_without_workers_section_workers_get_the_base_config(env: Env) -> None:
    """No ``workers`` section: as before, the worker boots the base config (the daemon can
    still be used with images that join by themselves)."""
    _, worker = await launch_one(env.config("kubernetes", None))
    assert set(units_of(await env.user_data(worker))) == {
        "volume-mounting.service",
        "node-exporter.service",
    }


async def test_user_data_over_the_ec2_limit_is_refused(env: Env) -> None:
    aws = AWSProvisioner.from_config(env.config("mesos", {"leader": {"address": "10.0.0.5"}}))
    async with aws:
        aws.bootstrap.customInitCommand = "echo " + "x" * MAX_USER_DATA
        with pytest.raises(ProviderError) as info:
            await aws.addNodes(["c5.xlarge"], 1, False)
    assert info.value.code == "UserDataTooLarge"
    assert env.behaviour.requests == []


# -- readClusterSettings (IMDSv2) -----------------------------------------------------------


async def test_read_cluster_settings_reads_the_leader_from_imds(
    env: Env, leader: dict[str, Any], imds: FakeImds
) -> None:
    aws = AWSProvisioner(
        "demo", "mesos", endpoint_url=env.url, image_id=IMAGE, metadata_endpoint=imds.url
    )
    async with aws:
        assert aws.zones == ()
        await aws.readClusterSettings()
        assert aws._leaderPrivateIP == leader["PrivateIpAddress"]
        assert aws.zones == (leader["Placement"]["AvailabilityZone"],)
    methods = [m for m, _, _ in imds.requests]
    assert methods == ["PUT", "GET", "GET", "GET"]


async def test_read_cluster_settings_keeps_the_configured_zones(env: Env, imds: FakeImds) -> None:
    aws = AWSProvisioner.from_config(env.config("mesos", None, zone=None, zones=["us-east-1c"]))
    async with aws:
        await aws.readClusterSettings()
    assert aws.zones == ("us-east-1c",)


async def test_read_cluster_settings_off_ec2_fails_clearly(env: Env) -> None:
    aws = AWSProvisioner.from_config(env.config("mesos", None))
    async with aws:
        with pytest.raises(ProviderError) as info:
            await aws.readClusterSettings()
    assert info.value.code == "InstanceMetadataUnavailable"
    assert env.imds_url in str(info.value)
