"""deploy/iam-policy.json against what the code really calls.

One run of every AWS operation the provider has (image lookup, shapes, prices, launch, list,
terminate, the leader, a managed group, destroy, the interruption queue) on moto and the fake
Pricing API, with every call recorded by a botocore event hook (``aws_actions``). The policy
must allow each recorded action and hold nothing else but the two permissions AWS checks
without an API call of their own (tag-on-create, passing the workers' role); the scenario must
reach every operation the provider's source names; and every write must be held to this
cluster's tag where EC2 allows it (the interruption queue, which has no tags to check, to its
own ARN), with the recorded requests carrying that tag.
"""

from __future__ import annotations

import asyncio
import json
import re
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import botocore.session
import pytest
from aiobotocore.session import get_session
from aws_actions import ActionRecorder
from botocore import xform_name
from fake_aws_pricing import FakeAwsPricing, SpotRecord, ec2_product
from moto_fixtures import Ec2Behaviour
from shoal.providers.aws import AWSProvisioner
from shoal.providers.aws_interruptions import InterruptionQueue
from shoal.providers.base import TAG_CLUSTER, TAG_DRAINING
from shoal.providers.workers import TAG_SLURM_NODE

ROOT = Path(__file__).resolve().parents[2]
POLICY = ROOT / "deploy" / "iam-policy.json"
SOURCES = [
    ROOT / "providers" / "aws.py",
    ROOT / "providers" / "aws_pricing.py",
    ROOT / "providers" / "aws_interruptions.py",
]
CLUSTER = "demo"
CLUSTER_PLACEHOLDER = "SHOAL_CLUSTER_NAME"
# deploy/interruption-queue.yaml's queue for the cluster: SQS scopes by the queue's ARN
QUEUE = f"shoal-{CLUSTER}-interruptions"
QUEUE_ARN = f"arn:aws:sqs:*:SHOAL_ACCOUNT_ID:shoal-{CLUSTER_PLACEHOLDER}-interruptions"
# What IAM checks without an API call of its own, and why the code needs it. (CreateTags is
# also checked that way, for RunInstances and CreateLaunchTemplate tagging what they create,
# but the draining mark calls it too, so the scenario records it.)
IMPLICIT = {
    "iam:PassRole": "RunInstances and the launch template pass the workers' instance profile",
}
# Reads EC2 and the Pricing API cannot limit to resources or tags.
UNSCOPED = {
    "ec2:DescribeImages",
    "ec2:DescribeInstanceTypes",
    "ec2:DescribeInstances",
    "ec2:DescribePlacementGroups",
    "ec2:DescribeSecurityGroups",
    "ec2:DescribeSpotPriceHistory",
    "ec2:DescribeSubnets",
    "autoscaling:DescribeAutoScalingGroups",
    "pricing:GetProducts",
}


def policy() -> dict[str, Any]:
    return json.loads(POLICY.read_text())


def policy_actions(document: dict[str, Any]) -> set[str]:
    out: set[str] = set()
    for statement in document["Statement"]:
        assert statement["Effect"] == "Allow"
        actions = statement["Action"]
        out.update([actions] if isinstance(actions, str) else actions)
    return out


def source_actions() -> set[str]:
    """The IAM actions of every API operation the provider's source calls by name."""
    session = botocore.session.get_session()
    found: set[str] = set()
    for path in SOURCES:
        text = path.read_text()
        calls = re.findall(r'_call\(\s*"(\w+)"(?:[^)]*service="(\w+)")?', text)
        calls += [("get_products", "pricing") for _ in re.findall(r"\.get_products\(", text)]
        calls += [(op, "ec2") for op in re.findall(r"\bec2\.(describe_\w+)\(", text)]
        calls += [(op, "sqs") for op in re.findall(r'_sqs\(\s*"(\w+)"', text)]
        for operation, service in calls:
            model = session.get_service_model(service or "ec2")
            names = {xform_name(name): name for name in model.operation_names}
            found.add(f"{model.signing_name}:{names[operation]}")
    return found


@pytest.fixture
async def recorded(moto_url: str, ec2_behaviour: Ec2Behaviour) -> AsyncIterator[ActionRecorder]:
    """Every operation of the provider once, recorded."""
    fake = FakeAwsPricing()
    pricing_url = await fake.start()
    fake.set_products([ec2_product("t3.micro", "us-east-1", "0.0104000000")])
    fake.spot = [SpotRecord("t3.micro", "us-east-1a", "0.003100", fake_now())]
    async with get_session().create_client(
        "iam", region_name="us-east-1", endpoint_url=moto_url
    ) as iam:
        await iam.create_role(RoleName="shoal-worker", AssumeRolePolicyDocument="{}")
        profile = await iam.create_instance_profile(InstanceProfileName="shoal-worker")
        await iam.add_role_to_instance_profile(
            InstanceProfileName="shoal-worker", RoleName="shoal-worker"
        )
    async with get_session().create_client(
        "ec2", region_name="us-east-1", endpoint_url=moto_url
    ) as ec2:  # a subnet given: the cluster's security group goes in its VPC
        subnets = await ec2.describe_subnets(
            Filters=[{"Name": "availability-zone", "Values": ["us-east-1a"]}]
        )
    subnet = subnets["Subnets"][0]["SubnetId"]
    async with get_session().create_client(
        "sqs", region_name="us-east-1", endpoint_url=moto_url
    ) as sqs:  # the queue deploy/interruption-queue.yaml makes, with one notice in it
        url = (await sqs.create_queue(QueueName=QUEUE))["QueueUrl"]
        await sqs.send_message(QueueUrl=url, MessageBody="{}")
    sleeps: list[float] = []

    async def sleep(seconds: float) -> None:
        sleeps.append(seconds)

    recorder = ActionRecorder()
    try:
        with recorder.installed():
            async with AWSProvisioner(
                CLUSTER,
                "kubernetes",
                zone="us-east-1a",
                subnet_id=subnet,
                image_name="amzn*",
                image_owner="amazon",
                endpoint_url=moto_url,
                instance_profile_arn=profile["InstanceProfile"]["Arn"],
                pricing_endpoint_url=pricing_url,
                price_refresh=True,
                sleep=sleep,
            ) as aws:
                await aws.catalogue(["t3.micro"])
                await aws.start()  # the first price refresh, at once
                assert aws.refresher is not None
                await asyncio.wait_for(aws.refresher.wait_for_attempts(1), 30)
                assert await aws.addNodes(["t3.micro"], 2, False) == 2
                # a gang into the cluster placement group of its type and zone
                assert (
                    await aws.addNodes(
                        ["t3.micro"], 2, False, all_or_nothing=True, placement_group="cluster"
                    )
                    == 2
                )
                # a Slurm gang: each instance gets its own node name after the launch
                gang = {TAG_SLURM_NODE: "cloud1,cloud2"}
                assert await aws.addNodes(["t3.micro"], 2, False, all_or_nothing=True, tags=gang)
                workers = await aws.getProvisionedWorkers()
                marked = [workers[1].name]
                await aws.tag_instances(marked, {TAG_DRAINING: "1700000000"})  # a drain
                await aws.untag_instances(marked, [TAG_DRAINING])  # an undrain
                await aws.terminateNodes(workers[:1])
                await aws.launchCluster("t3.medium")
                await aws.getLeader()
                await aws.addManagedNodes(["t3.micro"], 0, 2, False)
                await aws.destroyCluster()
                queue = InterruptionQueue.for_provider(aws, QUEUE, wait_time=0)  # by name
                for message in await queue.receive():
                    await queue.delete(message)
        yield recorder
    finally:
        await fake.stop()


def fake_now() -> Any:
    from datetime import UTC, datetime, timedelta

    return datetime.now(UTC) - timedelta(hours=1)


def test_the_policy_allows_every_recorded_action_and_holds_nothing_unused(
    recorded: ActionRecorder,
) -> None:
    allowed = policy_actions(policy())
    assert recorded.actions - allowed == set()  # every call the code made is allowed
    assert allowed - recorded.actions == set(IMPLICIT)  # and nothing it never needs


def test_the_scenario_reaches_every_operation_the_provider_names(
    recorded: ActionRecorder,
) -> None:
    named = source_actions()
    assert len(named) >= 12
    assert named - recorded.actions == set()


def test_the_recorder_sees_only_shoals_clients(recorded: ActionRecorder) -> None:
    """The fixture's own iam calls (another user agent) are not shoal's."""
    assert not any(a.startswith("iam:") for a in recorded.actions)


def test_writes_are_held_to_the_cluster_tag_where_ec2_allows_it() -> None:
    for statement in policy()["Statement"]:
        actions = statement["Action"]
        actions = {actions} if isinstance(actions, str) else set(actions)
        if actions <= UNSCOPED:
            continue
        condition = json.dumps(statement.get("Condition", {}))
        resources = statement["Resource"]
        resources = [resources] if isinstance(resources, str) else resources
        if actions == {"iam:PassRole"}:
            assert "*" not in resources[0] and "iam:PassedToService" in condition
            continue
        if all(a.startswith("sqs:") for a in actions):  # SQS has no tags to condition on
            assert resources == [QUEUE_ARN], statement["Sid"]
            continue
        if f'/{TAG_CLUSTER}": "{CLUSTER_PLACEHOLDER}"' in condition:
            continue
        # RunInstances also names what it launches from; these carry no tags of ours
        assert actions == {"ec2:RunInstances"}, statement["Sid"]
        assert not any(r.split(":")[5].startswith(("instance/", "volume/")) for r in resources)


def test_a_for_all_values_condition_also_requires_its_key() -> None:
    """``ForAllValues`` is true when the request has no value for the key at all: a DeleteTags
    without Tags (which removes every user tag of the instance) passed the draining mark's
    ``ForAllValues:StringEquals aws:TagKeys [shoal:draining]``. Each such condition needs
    ``"Null": {key: "false"}`` beside it."""
    checked = 0
    for statement in policy()["Statement"]:
        condition = statement.get("Condition", {})
        for operator, keys in condition.items():
            if not operator.startswith("ForAllValues:"):
                continue
            for key in keys:
                checked += 1
                assert condition.get("Null", {}).get(key) == "false", (statement["Sid"], key)
    assert checked >= 1  # the draining mark's statement has one


def test_the_recorded_writes_carry_the_tag_the_conditions_ask_for(
    recorded: ActionRecorder,
) -> None:
    def tags(specs: list[dict[str, Any]], kind: str) -> dict[str, str]:
        (spec,) = [s for s in specs if s["ResourceType"] == kind]
        return {t["Key"]: t["Value"] for t in spec["Tags"]}

    runs = recorded.of("ec2:RunInstances")
    assert len(runs) == 4  # the workers, a gang in a placement group, a Slurm gang, the leader
    for run in runs:
        for kind in ("instance", "volume"):
            assert tags(run["TagSpecifications"], kind)[TAG_CLUSTER] == CLUSTER
    (template,) = recorded.of("ec2:CreateLaunchTemplate")
    assert tags(template["TagSpecifications"], "launch-template")[TAG_CLUSTER] == CLUSTER
    (placement,) = recorded.of("ec2:CreatePlacementGroup")
    assert tags(placement["TagSpecifications"], "placement-group")[TAG_CLUSTER] == CLUSTER
    deleted_groups = [p["GroupName"] for p in recorded.of("ec2:DeletePlacementGroup")]
    assert deleted_groups == [placement["GroupName"]]
    # the draining mark adds and removes that one key only; a gang's naming adds its own
    names = [c for c in recorded.of("ec2:CreateTags") if c["Tags"][0]["Key"] == TAG_SLURM_NODE]
    assert [(len(c["Resources"]), c["Tags"]) for c in names] == [
        (1, [{"Key": TAG_SLURM_NODE, "Value": name}]) for name in ("cloud1", "cloud2")
    ]
    drains = [*recorded.of("ec2:CreateTags"), *recorded.of("ec2:DeleteTags")]
    for call in (c for c in drains if c not in names):
        assert [t["Key"] for t in call["Tags"]] == [TAG_DRAINING]
    (security_group,) = recorded.of("ec2:CreateSecurityGroup")
    assert tags(security_group["TagSpecifications"], "security-group")[TAG_CLUSTER] == CLUSTER
    (group,) = recorded.of("autoscaling:CreateAutoScalingGroup")
    assert {t["Key"]: t["Value"] for t in group["Tags"]}[TAG_CLUSTER] == CLUSTER
    # what is terminated or deleted was created with that tag
    launched_groups = {group["AutoScalingGroupName"]}
    deleted = {p["AutoScalingGroupName"] for p in recorded.of("autoscaling:DeleteAutoScalingGroup")}
    assert deleted == launched_groups


async def test_moto_accepts_the_policy_document(moto_url: str) -> None:
    """moto's IAM validates policy grammar (versions, effects, actions, ARNs, conditions)."""
    async with get_session().create_client(
        "iam", region_name="us-east-1", endpoint_url=moto_url
    ) as iam:
        created = await iam.create_policy(PolicyName="shoal", PolicyDocument=POLICY.read_text())
        assert created["Policy"]["PolicyName"] == "shoal"
        with pytest.raises(iam.exceptions.MalformedPolicyDocumentException):
            await iam.create_policy(
                PolicyName="broken", PolicyDocument=POLICY.read_text().replace("Allow", "Permit")
            )
