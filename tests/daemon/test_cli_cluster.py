"""``shoal cluster launch|destroy`` against the moto server: what Toil's launch-cluster and
destroy-cluster do, through the CLI, checked against EC2's own view."""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

import configs
import pytest
from aiobotocore.session import get_session
from moto_fixtures import Ec2Behaviour
from shoal.daemon.cli import main
from shoal.providers.base import TAG_CLUSTER, TAG_ROLE

IMAGE = "ami-12c6146b"


def write_config(path: Path, url: str, cluster: str = "demo", **provider: Any) -> str:
    body = configs.config(
        cluster_name=cluster,
        provider=configs.aws_provider(url, zones=["us-east-1b"], image_id=IMAGE, **provider),
        node_types=[{"type": "t3.micro", "max": 3}],
    )
    return str(configs.write(path, body))


def ec2_view(url: str, cluster: str) -> tuple[list[dict[str, Any]], list[str]]:
    """The cluster's instances not terminated, and its security groups' ids, as EC2 has them."""

    async def read() -> tuple[list[dict[str, Any]], list[str]]:
        tag = [{"Name": f"tag:{TAG_CLUSTER}", "Values": [cluster]}]
        async with get_session().create_client(
            "ec2", region_name="us-east-1", endpoint_url=url
        ) as ec2:
            reservations = (await ec2.describe_instances(Filters=tag))["Reservations"]
            groups = (await ec2.describe_security_groups(Filters=tag))["SecurityGroups"]
        instances = [
            i
            for r in reservations
            for i in r["Instances"]
            if i["State"]["Name"] not in ("terminated", "shutting-down")
        ]
        return instances, [g["GroupId"] for g in groups]

    return asyncio.run(read())


def run_workers(url: str, cluster: str, count: int) -> None:
    """Workers of the cluster, as the daemon tags them (role=worker)."""

    async def launch() -> None:
        from shoal.providers.aws import AWSProvisioner

        async with AWSProvisioner(
            cluster, "mesos", zone="us-east-1b", image_id=IMAGE, endpoint_url=url
        ) as aws:
            assert await aws.addNodes(["t3.micro"], count, False) == count

    asyncio.run(launch())


def test_launch_then_destroy(
    moto_url: str, ec2_behaviour: Ec2Behaviour, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    config = write_config(tmp_path / "shoal.yaml", moto_url)
    args = ["cluster", "launch", "-c", config, "--leader-node-type", "t3.medium"]
    assert main([*args, "--owner", "me", "-t", "team=x"]) == 0
    err = capsys.readouterr().err
    assert "launching cluster demo: leader t3.medium in us-east-1b" in err
    (leader,), (group,) = ec2_view(moto_url, "demo")
    tags = {t["Key"]: t["Value"] for t in leader["Tags"]}
    assert (tags[TAG_ROLE], tags["Owner"], tags["team"]) == ("leader", "me", "x")
    assert leader["Placement"]["AvailabilityZone"] == "us-east-1b"
    assert group in {g["GroupId"] for g in leader["SecurityGroups"]}
    assert f"cluster demo launched: leader {leader['InstanceId']}" in err

    assert main(args) == 1  # a second leader is refused, and nothing is launched
    assert "already has a leader" in capsys.readouterr().err
    assert len(ec2_view(moto_url, "demo")[0]) == 1

    run_workers(moto_url, "demo", 2)
    other = write_config(tmp_path / "other.yaml", moto_url, cluster="other")
    assert main(["cluster", "launch", "-c", other, "--leader-node-type", "t3.micro"]) == 0
    assert len(ec2_view(moto_url, "demo")[0]) == 3
    capsys.readouterr()

    assert main(["cluster", "destroy", "-c", config]) == 0
    err = capsys.readouterr().err
    assert "destroying cluster demo" in err and "cluster demo is gone" in err
    assert ec2_view(moto_url, "demo") == ([], [])  # leader, workers and group
    assert len(ec2_view(moto_url, "other")[0]) == 1  # another cluster is left alone

    assert main(["cluster", "destroy", "-c", config]) == 1
    assert "cluster demo does not exist" in capsys.readouterr().err


def test_destroy_finishes_what_a_launch_left(
    moto_url: str, ec2_behaviour: Ec2Behaviour, tmp_path: Path
) -> None:
    """Workers without a leader or group (a launch that failed half-way, or a leader someone
    terminated) are still the cluster's: destroy terminates them."""
    run_workers(moto_url, "demo", 2)
    assert main(["cluster", "destroy", "-c", write_config(tmp_path / "s.yaml", moto_url)]) == 0
    assert ec2_view(moto_url, "demo") == ([], [])


def test_bad_input_is_refused_before_any_call(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    simulated = tmp_path / "sim.yaml"
    configs.write(simulated, configs.config(node_types=[{"type": "t3.micro", "max": 3}]))
    assert main(["cluster", "destroy", "-c", str(simulated)]) == 2
    assert "need kind: aws" in capsys.readouterr().err
    # nothing listens there: a tag that is not KEY=VALUE fails before any call is made
    config = write_config(tmp_path / "shoal.yaml", "http://127.0.0.1:9")
    launch = ["cluster", "launch", "-c", config, "--leader-node-type", "t3.medium"]
    assert main([*launch, "-t", "novalue"]) == 2
    assert "is not KEY=VALUE" in capsys.readouterr().err


def test_a_group_left_without_its_rule_gets_it_when_reused(
    moto_url: str, ec2_behaviour: Ec2Behaviour, tmp_path: Path
) -> None:
    """A launch that died between CreateSecurityGroup and AuthorizeSecurityGroupIngress left
    the cluster's group without its rule: the next launch reuses the group, and the nodes in
    it must still reach one another."""

    async def half_made() -> str:
        async with get_session().create_client(
            "ec2", region_name="us-east-1", endpoint_url=moto_url
        ) as ec2:
            answer = await ec2.create_security_group(
                GroupName="shoal-demo",
                Description="left by a launch that died",
                TagSpecifications=[
                    {
                        "ResourceType": "security-group",
                        "Tags": [{"Key": TAG_CLUSTER, "Value": "demo"}],
                    }
                ],
            )
            return str(answer["GroupId"])

    group = asyncio.run(half_made())
    config = write_config(tmp_path / "shoal.yaml", moto_url)
    assert main(["cluster", "launch", "-c", config, "--leader-node-type", "t3.medium"]) == 0

    async def rules() -> list[dict[str, Any]]:
        async with get_session().create_client(
            "ec2", region_name="us-east-1", endpoint_url=moto_url
        ) as ec2:
            (found,) = (await ec2.describe_security_groups(GroupIds=[group]))["SecurityGroups"]
            return list(found["IpPermissions"])

    (leader,), (listed,) = ec2_view(moto_url, "demo")
    assert listed == group and group in {g["GroupId"] for g in leader["SecurityGroups"]}
    assert [
        (p["IpProtocol"], [pair["GroupId"] for pair in p["UserIdGroupPairs"]])
        for p in asyncio.run(rules())
    ] == [("-1", [group])]
    # and a launch after a complete one (the rule there already) is not refused for it
    assert main(["cluster", "destroy", "-c", config]) == 0
    assert main(["cluster", "launch", "-c", config, "--leader-node-type", "t3.medium"]) == 0
    assert main(["cluster", "destroy", "-c", config]) == 0
