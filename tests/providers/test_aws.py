"""The AWS provisioner through aiobotocore against a local moto server (127.0.0.1 only).

EC2 behaviour moto 5.2 lacks (launching up to MaxCount, ClientToken idempotency, capacity,
instance limits) and faults come from ``moto_fixtures.Ec2Behaviour``, patched into moto's
RunInstances. The provider makes each call once; retries are the daemon's one retry layer
(``call_with_retry`` driven by ``AWSProvisioner.retryPredicate``), exercised here through
``Env.retry`` with an injected fake sleep, so nothing waits for real.
"""

from __future__ import annotations

import base64
import dataclasses
import json
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path
from typing import Any, TypeVar

import pytest
from aiobotocore.session import get_session
from botocore.exceptions import ClientError, EndpointConnectionError, ReadTimeoutError
from fake_imds import FakeImds
from moto.ec2.responses.instances import InstanceResponse
from moto_fixtures import Ec2Behaviour
from shoal.providers.aws import AWSProvisioner
from shoal.providers.aws_errors import error_code, translate_error
from shoal.providers.base import (
    TAG_AUTOSCALED,
    TAG_CLUSTER,
    TAG_DRAINING,
    TAG_INSTANCE_TYPE,
    TAG_REQUEST_ID,
    TAG_ROLE,
    client_token,
)
from shoal.providers.errors import (
    AuthError,
    CapacityError,
    ProviderError,
    QuotaError,
    RetryableError,
    TerminationError,
)
from shoal.providers.outcomes import TerminationResult
from shoal.providers.retry import RetryPolicy, call_with_retry
from shoal.scaler.model import CapacityType, Offering
from shoal.scaler.shape import Shape

GIB = 2**30
IMAGE = "ami-12c6146b"  # moto accepts any id; DescribeImages not finding it is tolerated
ZONE = "us-east-1a"
T = TypeVar("T")


@dataclasses.dataclass
class Env:
    url: str
    behaviour: Ec2Behaviour
    sleeps: list[float]

    async def fake_sleep(self, seconds: float) -> None:
        self.sleeps.append(seconds)

    def provisioner(self, cluster: str = "demo", **kwargs: Any) -> AWSProvisioner:
        kwargs.setdefault("zone", ZONE)
        kwargs.setdefault("image_id", IMAGE)
        kwargs.setdefault("endpoint_url", self.url)
        return AWSProvisioner(
            cluster, kwargs.pop("clusterType", "mesos"), sleep=self.fake_sleep, **kwargs
        )

    async def retry(self, fn: Callable[[], Awaitable[T]]) -> T:
        """``fn`` through the retry layer the daemon uses, with fake sleeps."""
        return await call_with_retry(
            fn,
            AWSProvisioner.retryPredicate,
            RetryPolicy(attempts=4, initial=1.0, maximum=2.0),
            sleep=self.fake_sleep,
        )

    def client(self, service: str) -> Any:
        return get_session().create_client(
            service,  # type: ignore[call-overload]
            region_name="us-east-1",
            endpoint_url=self.url,
        )


@pytest.fixture
def env(moto_url: str, ec2_behaviour: Ec2Behaviour) -> Env:
    return Env(moto_url, ec2_behaviour, [])


@pytest.fixture
async def aws(env: Env) -> AsyncIterator[AWSProvisioner]:
    async with env.provisioner() as provisioner:
        yield provisioner


async def test_launch_list_terminate(aws: AWSProvisioner, env: Env) -> None:
    assert await aws.addNodes({"t3.micro"}, 3, False, requestId="req-1") == 3
    (request,) = env.behaviour.requests  # one call for three nodes
    assert (request["MinCount"], request["MaxCount"]) == (1, 3)
    workers = await aws.getProvisionedWorkers()
    assert len(workers) == 3
    node = workers[0]
    assert node.name.startswith("i-")
    assert node.nodeType == "t3.micro"
    assert node.preemptible is False
    assert node.zone == ZONE
    assert node.joined is None
    assert node.privateIP
    assert node.tags[TAG_CLUSTER] == "demo"
    assert node.tags["Name"] == "demo"
    assert node.tags[TAG_ROLE] == "worker"
    assert node.tags[TAG_AUTOSCALED] == "true"
    assert node.tags[TAG_INSTANCE_TYPE] == "t3.micro"
    assert node.tags[TAG_REQUEST_ID] == "req-1"
    assert await aws.getProvisionedWorkers(instance_type="m5.large") == []

    await aws.terminateNodes(workers[:2])
    assert {n.name for n in await aws.getProvisionedWorkers()} == {workers[2].name}
    # Terminated again, plus an id EC2 never knew: neither is an error.
    await aws.terminateNodes([workers[0], "i-0123456789abcdef0", workers[2].name])
    assert await aws.getProvisionedWorkers() == []


async def test_worker_user_data_is_ignition(aws: AWSProvisioner, env: Env) -> None:
    await aws.addNodes(["t3.micro"], 1, False)
    (node,) = await aws.getProvisionedWorkers()
    async with env.client("ec2") as ec2:
        attr = await ec2.describe_instance_attribute(InstanceId=node.name, Attribute="userData")
    ignition = json.loads(base64.b64decode(attr["UserData"]["Value"]))
    assert ignition["ignition"]["version"] == "2.2.0"


async def test_other_clusters_and_leader_are_not_workers(env: Env) -> None:
    async with env.provisioner("demo") as demo, env.provisioner("other") as other:
        await demo.launchCluster("t3.medium", owner="me")
        await other.addNodes(["t3.micro"], 2, False)
        await demo.addNodes(["t3.micro"], 1, False)
        assert len(await demo.getProvisionedWorkers()) == 1
        assert len(await other.getProvisionedWorkers()) == 2
        leader = await demo.getLeader()
        assert leader.tags[TAG_ROLE] == "leader"
        assert leader.tags[TAG_AUTOSCALED] == "false"
        assert leader.tags["Owner"] == "me"
        assert demo._leaderPrivateIP == leader.privateIP
        with pytest.raises(ProviderError) as info:
            await demo.launchCluster("t3.medium")
        assert info.value.code == "ClusterExists"
        with pytest.raises(ProviderError) as info:
            await other.getLeader()
        assert info.value.code == "NoLeader"


async def test_spot_request_reaches_moto(aws: AWSProvisioner, env: Env) -> None:
    assert await aws.addNodes(["m5.large"], 2, True, spotBid=0.05) == 2
    market = env.behaviour.requests[-1]["InstanceMarketOptions"]
    assert market["MarketType"] == "spot"
    assert market["SpotOptions"]["MaxPrice"] == "0.05"
    workers = await aws.getProvisionedWorkers(preemptible=True)
    assert len(workers) == 2 and all(n.preemptible for n in workers)
    assert await aws.getProvisionedWorkers(preemptible=False) == []


async def test_spot_bid_comes_from_autoscaled_node_types(aws: AWSProvisioner, env: Env) -> None:
    await aws.setAutoscaledNodeTypes([({"m5.large"}, 0.07)])
    await aws.addNodes({"m5.large"}, 1, True)
    assert env.behaviour.requests[-1]["InstanceMarketOptions"]["SpotOptions"]["MaxPrice"] == "0.07"


async def test_shapes_from_describe_instance_types(env: Env) -> None:
    async with env.provisioner(nodeStorage=60, nodeStorageOverrides=["c5.large:100"]) as aws:
        assert await aws.getNodeShape("m5.large") == Shape(3600, 8 * GIB, 2, 60 * GIB, False)
        assert await aws.getNodeShape("c5.large", True) == Shape(3600, 4 * GIB, 2, 100 * GIB, True)
        # Instance storage wins over nodeStorage.
        assert await aws.getNodeShape("m5d.large") == Shape(3600, 8 * GIB, 2, 75 * GIB, False)
        with pytest.raises(ProviderError):
            await aws.getNodeShape("no.such-type")


async def test_throttling_is_retried_then_succeeds(aws: AWSProvisioner, env: Env) -> None:
    env.behaviour.fail_next("RequestLimitExceeded", "Request limit exceeded.", times=2)

    async def add() -> int:
        return await aws.addNodes(["t3.micro"], 2, False, requestId="req-1")

    assert await env.retry(add) == 2
    assert len(env.behaviour.requests) == 3  # two throttled, one through
    assert len(env.sleeps) == 2  # backed off twice, through the injected sleep
    assert len({r["ClientToken"] for r in env.behaviour.requests}) == 1
    assert len(await aws.getProvisionedWorkers()) == 2


async def test_insufficient_capacity_falls_back_to_the_next_type(
    aws: AWSProvisioner, env: Env
) -> None:
    env.behaviour.fail_next("InsufficientInstanceCapacity", instance_type="c5.large")
    assert await aws.addNodes(["c5.large", "c5a.large"], 2, False) == 2
    assert [r["InstanceType"] for r in env.behaviour.requests] == ["c5.large", "c5a.large"]
    assert env.sleeps == []  # capacity errors are not retried
    assert {n.nodeType for n in await aws.getProvisionedWorkers()} == {"c5a.large"}


async def test_partial_capacity_fills_from_the_alternative(aws: AWSProvisioner, env: Env) -> None:
    env.behaviour.capacity["c5.large"] = 1
    assert await aws.addNodes(["c5.large", "c5a.large"], 3, False) == 3
    types = sorted(n.nodeType or "" for n in await aws.getProvisionedWorkers())
    assert types == ["c5.large", "c5a.large", "c5a.large"]
    assert env.behaviour.requests[1]["MaxCount"] == 2


async def test_no_capacity_anywhere_is_a_capacity_error(aws: AWSProvisioner, env: Env) -> None:
    env.behaviour.capacity.update({"c5.large": 0, "c5a.large": 0})
    with pytest.raises(CapacityError) as info:
        await aws.addNodes({"c5a.large", "c5.large"}, 2, True, spotBid=0.1)
    assert not isinstance(info.value, QuotaError)
    assert info.value.code == "InsufficientInstanceCapacity"
    assert info.value.offerings == (
        Offering("c5.large", ZONE, CapacityType.SPOT),
        Offering("c5a.large", ZONE, CapacityType.SPOT),
    )


async def test_instance_limit_is_a_quota_error(aws: AWSProvisioner, env: Env) -> None:
    env.behaviour.instance_limit = 2
    assert await aws.addNodes(["t3.micro"], 5, False) == 2  # EC2 launches what the limit allows
    with pytest.raises(QuotaError) as info:
        await aws.addNodes(["t3.micro"], 1, False)
    assert info.value.code == "InstanceLimitExceeded"
    assert info.value.offerings == (Offering("t3.micro", ZONE, CapacityType.ON_DEMAND),)
    assert env.sleeps == []


async def test_lost_response_is_retried_with_the_same_client_token(
    aws: AWSProvisioner, env: Env
) -> None:
    env.behaviour.lose_next_response()

    async def add() -> int:
        return await aws.addNodes(["t3.micro"], 3, False, requestId="req-7")

    assert await env.retry(add) == 3
    first, second = env.behaviour.requests
    assert first["ClientToken"] == second["ClientToken"]
    assert len(env.sleeps) == 1
    assert len(await aws.getProvisionedWorkers()) == 3  # launched once, not twice
    # The daemon repeating the request after a restart launches nothing new either.
    assert await aws.addNodes(["t3.micro"], 3, False, requestId="req-7") == 3
    assert len(await aws.getProvisionedWorkers()) == 3


async def test_client_tokens_differ_per_request_and_type(aws: AWSProvisioner, env: Env) -> None:
    await aws.addNodes(["t3.micro"], 1, False)
    await aws.addNodes(["t3.micro"], 1, False)
    assert len(await aws.getProvisionedWorkers()) == 2  # random tokens: two launches
    micro = Offering("t3.micro", ZONE, CapacityType.ON_DEMAND)
    others = [
        Offering("t3.small", ZONE, CapacityType.ON_DEMAND),
        Offering("t3.micro", ZONE, CapacityType.SPOT),
        Offering("t3.micro", "us-east-1b", CapacityType.ON_DEMAND),
    ]
    assert all(client_token("r", micro) != client_token("r", o) for o in others)
    assert client_token("r", micro) != client_token("s", micro)
    assert client_token("r", micro) == client_token("r", micro)
    assert len(client_token("x" * 200, micro)) <= 64


async def test_listing_pages_and_terminating_batches_past_1000(
    aws: AWSProvisioner, env: Env, monkeypatch: pytest.MonkeyPatch
) -> None:
    """EC2's limits scaled down (1000 ids a TerminateInstances, 5 to 1000 a page): 1001
    instances in moto took 80 s; 17 show the same pages and batches."""
    assert AWSProvisioner.terminate_batch_size == 1000  # EC2's limit
    monkeypatch.setattr(aws, "terminate_batch_size", 10)
    describe_calls: list[int] = []
    terminate_sizes: list[int] = []
    original_describe = InstanceResponse.describe_instances
    original_terminate = InstanceResponse.terminate_instances

    def describe(self: InstanceResponse) -> Any:
        describe_calls.append(1)
        return original_describe(self)

    def terminate(self: InstanceResponse) -> Any:
        terminate_sizes.append(len(self._get_param("InstanceIds", [])))
        return original_terminate(self)

    monkeypatch.setattr(InstanceResponse, "describe_instances", describe)
    monkeypatch.setattr(InstanceResponse, "terminate_instances", terminate)

    assert await aws.addNodes(["t3.micro"], 11, False) == 11  # EC2 launches MaxCount
    for _ in range(6):
        await aws.addNodes(["t3.nano"], 1, False)
    aws.describe_page_size = 5  # moto pages by reservation: 7 reservations make 2 pages
    workers = await aws.getProvisionedWorkers()
    assert len(workers) == 17
    assert len(describe_calls) == 2
    await aws.terminateNodes(workers)
    assert terminate_sizes == [10, 7]
    assert await aws.getProvisionedWorkers() == []


async def test_managed_nodes_are_an_auto_scaling_group(env: Env) -> None:
    async with env.provisioner(clusterType="kubernetes") as aws:
        await aws.addManagedNodes(["t3.micro", "t3a.micro"], 1, 3, True, spotBid=0.02)
        async with env.client("autoscaling") as autoscaling:
            (group,) = (await autoscaling.describe_auto_scaling_groups())["AutoScalingGroups"]
        assert (group["MinSize"], group["MaxSize"], group["DesiredCapacity"]) == (1, 3, 1)
        policy = group["MixedInstancesPolicy"]
        overrides = policy["LaunchTemplate"]["Overrides"]
        assert [o["InstanceType"] for o in overrides] == ["t3.micro", "t3a.micro"]
        assert policy["InstancesDistribution"]["SpotMaxPrice"] == "0.02"
        tags = {t["Key"]: t["Value"] for t in group["Tags"]}
        assert tags[TAG_CLUSTER] == "demo"
        assert tags[TAG_AUTOSCALED] == "false"
        assert tags["k8s.io/cluster-autoscaler/demo"] == "owned"
        async with env.client("ec2") as ec2:
            templates = (await ec2.describe_launch_templates())["LaunchTemplates"]
        assert [t["LaunchTemplateName"] for t in templates] == [group["AutoScalingGroupName"]]
        # destroyCluster removes the group and its template too.
        await aws.destroyCluster()
        async with env.client("autoscaling") as autoscaling:
            groups = (await autoscaling.describe_auto_scaling_groups())["AutoScalingGroups"]
        assert groups == []


async def _cluster_groups(env: Env, cluster: str) -> list[dict[str, Any]]:
    async with env.client("ec2") as ec2:
        resp = await ec2.describe_security_groups(
            Filters=[{"Name": f"tag:{TAG_CLUSTER}", "Values": [cluster]}]
        )
    return list(resp["SecurityGroups"])


async def test_launch_then_destroy_a_cluster_as_toil_does(env: Env) -> None:
    """launchCluster makes the cluster's security group and its leader in it; destroyCluster
    terminates the leader and every worker, of this cluster only, deletes the group, and can
    be called again."""
    async with env.provisioner("demo") as demo, env.provisioner("other") as other:
        await demo.launchCluster("t3.medium", userTags={"team": "x"})
        (group,) = await _cluster_groups(env, "demo")
        leader = await demo.getLeader()
        assert (leader.nodeType, leader.zone) == ("t3.medium", ZONE)
        assert leader.tags[TAG_ROLE] == "leader" and leader.tags["team"] == "x"
        async with env.client("ec2") as ec2:
            described = await ec2.describe_instances(InstanceIds=[leader.name])
        (instance,) = described["Reservations"][0]["Instances"]
        assert group["GroupId"] in {g["GroupId"] for g in instance["SecurityGroups"]}
        (rule,) = group["IpPermissions"]  # members reach members, nothing else gets in
        assert [p["GroupId"] for p in rule["UserIdGroupPairs"]] == [group["GroupId"]]
        with pytest.raises(ProviderError) as info:
            await demo.launchCluster("t3.medium")
        assert info.value.code == "ClusterExists"

        await demo.addNodes(["t3.micro"], 3, False)
        await other.addNodes(["t3.micro"], 1, False)
        await demo.destroyCluster()
        assert await demo.getProvisionedWorkers() == []
        with pytest.raises(ProviderError):
            await demo.getLeader()
        assert await _cluster_groups(env, "demo") == []
        assert len(await other.getProvisionedWorkers()) == 1
        await demo.destroyCluster()  # nothing left: a no-op
        assert len(await other.getProvisionedWorkers()) == 1


async def test_destroy_cluster_gives_up_after_its_poll_limit(
    aws: AWSProvisioner, env: Env, monkeypatch: pytest.MonkeyPatch
) -> None:
    await aws.addNodes(["t3.micro"], 1, False)
    # An instance that never goes away (TerminateInstances answered, nothing done).
    monkeypatch.setattr(
        "moto.ec2.models.instances.InstanceBackend.terminate_instances",
        lambda self, ids: [],
    )
    aws.destroy_poll_limit = 3
    with pytest.raises(ProviderError) as info:
        await aws.destroyCluster()
    assert info.value.code == "DestroyTimeout"
    assert env.sleeps == [aws.destroy_poll_interval] * 3


async def test_destroy_waits_for_ec2_to_free_the_security_group(env: Env) -> None:
    """EC2 answers DependencyViolation to DeleteSecurityGroup for a while after the group's
    instances terminate (their network interfaces detach later): destroyCluster asks again
    within its bounded poll and finishes."""
    async with env.provisioner("demo") as demo:
        await demo.launchCluster("t3.medium")
        await demo.addNodes(["t3.micro"], 2, False)
        env.behaviour.hold_security_groups(3)
        await demo.destroyCluster()
        assert await _cluster_groups(env, "demo") == []
        assert not await demo.cluster_exists()
        # a sleep after the termination and after each of the three refusals
        assert env.sleeps == [demo.destroy_poll_interval] * 4


async def test_destroy_names_the_security_group_ec2_never_frees(env: Env) -> None:
    async with env.provisioner("demo") as demo:
        await demo.launchCluster("t3.medium")
        (group,) = await _cluster_groups(env, "demo")
        env.behaviour.hold_security_groups(1000)
        demo.destroy_poll_limit = 4
        with pytest.raises(ProviderError) as info:
            await demo.destroyCluster()
        assert info.value.code == "DestroyTimeout"
        assert group["GroupId"] in str(info.value) and "dependent object" in str(info.value)
        assert len(env.sleeps) == 4
        assert await demo.getProvisionedWorkers() == []  # the instances did go
        assert await _cluster_groups(env, "demo") == [group]  # a later destroy finishes it


async def test_cluster_settings_and_close(env: Env) -> None:
    async with env.provisioner() as launcher:
        await launcher.createClusterSettings()
        await launcher.launchCluster("t3.medium")
        leader = await launcher.getLeader()
    async with env.client("ec2") as ec2:
        described = await ec2.describe_instances(InstanceIds=[leader.name])
    # On the leader, readClusterSettings reads this machine from the metadata service.
    imds = FakeImds.of_instance(described["Reservations"][0]["Instances"][0])
    try:
        on_leader = env.provisioner(metadata_endpoint=await imds.start())
        await on_leader.readClusterSettings()
    finally:
        await imds.stop()
    assert on_leader._leaderPrivateIP == leader.privateIP
    await on_leader.close()
    with pytest.raises(ProviderError) as info:
        await on_leader.getProvisionedWorkers()
    assert info.value.code == "Closed"


async def test_image_lookup_picks_the_newest_match(env: Env) -> None:
    async with env.client("ec2") as ec2:
        images = (await ec2.describe_images(Owners=["amazon"]))["Images"]
    named = [i for i in images if i.get("Name", "").startswith("amzn")]
    assert named, "moto ships Amazon images"
    newest = max(named, key=lambda i: (i.get("CreationDate", ""), i["ImageId"]))
    async with env.provisioner(image_id=None, image_name="amzn*", image_owner="amazon") as aws:
        await aws.addNodes(["t3.micro"], 1, False)
        assert aws._image is not None and aws._image[0] == newest["ImageId"]
    async with env.provisioner(image_id=None, image_name="nope-*", image_owner="amazon") as aws:
        with pytest.raises(ProviderError) as info:
            await aws.addNodes(["t3.micro"], 1, False)
        assert info.value.code == "NoImage"


def test_constructor_checks_and_defaults(monkeypatch: pytest.MonkeyPatch) -> None:
    with pytest.raises(ValueError):
        AWSProvisioner("c", image_id="ami-1", image_name="x", image_owner="y")
    with pytest.raises(ValueError):
        AWSProvisioner("c", clusterType="pbs")
    monkeypatch.setenv("AWS_ENDPOINT_URL", "http://127.0.0.1:1")
    aws = AWSProvisioner("c", zone="eu-west-2b", image_id="ami-1")
    assert (aws.region, aws.endpoint_url) == ("eu-west-2", "http://127.0.0.1:1")
    assert aws.cloud == "aws"
    assert aws.supportedClusterTypes() == {"mesos", "kubernetes", "slurm"}
    assert aws._imds.endpoint == "http://169.254.169.254"
    assert aws.getKubernetesCloudProvider() == "aws"
    commands = aws.getKubernetesAutoscalerSetupCommands({"CLUSTER_NAME": "c; rm -rf /"})
    assert "kubectl apply" in commands and "rm -rf" not in commands


def test_from_config(tmp_path: Path) -> None:
    """Built from a real daemon config, as the service builds it: every provider key
    reaches the provisioner."""
    from shoal.daemon.config import parse_config  # the contract with the daemon, not a stand-in

    (tmp_path / "token").write_text("abcdef.0123456789abcdef")
    k8s = {"token_file": str(tmp_path / "token"), "ca_cert_hash": "sha256:" + "0" * 64}

    config = parse_config(
        {
            "cluster_name": "c",
            "provider": {
                "kind": "aws",
                "cluster_type": "kubernetes",
                "zones": ["us-west-2a", "us-west-2c"],
                "node_storage": 80,
                "node_storage_overrides": ["m5.large:10"],
                "region": "us-west-2",
                "endpoint_url": "http://127.0.0.1:9",
                "image_id": "ami-1",
                "subnet_id": "subnet-1",
                "security_group_ids": ["sg-1"],
                "key_name": "k",
                "extra_tags": {"team": "x"},
                "metadata_endpoint": "http://127.0.0.1:8",
            },
            "node_types": [{"type": "m5.large", "max": 3}],
            "workers": {"leader": {"address": "10.0.0.5"}, "kubernetes": k8s},
            "scaler": {"retry": {"attempts": 2, "initial": "50ms", "max": "1s", "deadline": "3s"}},
        }
    )
    aws = AWSProvisioner.from_config(config)
    assert (aws.clusterName, aws.clusterType, aws.region) == ("c", "kubernetes", "us-west-2")
    assert aws.security_group_ids == ["sg-1"] and aws.extra_tags == {"team": "x"}
    assert aws.zones == ("us-west-2a", "us-west-2c")
    assert aws._imds.endpoint == "http://127.0.0.1:8"
    assert aws.bootstrap.worker_settings is config.workers


def _client_error(code: str, status: int = 400) -> ClientError:
    return ClientError(
        {"Error": {"Code": code, "Message": "m"}, "ResponseMetadata": {"HTTPStatusCode": status}},
        "RunInstances",
    )


# Each class of AWS error code as AWS documents it ("Error codes for the Amazon EC2 API",
# the Pricing API's GetProducts errors), with the HTTP status AWS answers it with.
@pytest.mark.parametrize(
    ("error", "retry", "typed"),
    [
        # throttling
        (_client_error("RequestLimitExceeded", 503), True, RetryableError),
        (_client_error("Throttling"), True, RetryableError),
        (_client_error("ThrottlingException"), True, RetryableError),
        (_client_error("RequestThrottled"), True, RetryableError),
        (_client_error("EC2ThrottledException"), True, RetryableError),
        # server errors, and any 5xx
        (_client_error("InternalError", 500), True, RetryableError),
        (_client_error("InternalFailure", 500), True, RetryableError),
        (_client_error("Unavailable", 503), True, RetryableError),
        (_client_error("ServiceUnavailable", 503), True, RetryableError),
        (_client_error("InternalErrorException", 500), True, RetryableError),
        (_client_error("RequestTimeout"), True, RetryableError),
        (_client_error("Whatever", 503), True, RetryableError),
        # transport
        (EndpointConnectionError(endpoint_url="http://127.0.0.1:1"), True, RetryableError),
        (ReadTimeoutError(endpoint_url="http://127.0.0.1:1"), True, RetryableError),
        # eventual consistency; other not-found codes are final
        (_client_error("InvalidInstanceID.NotFound"), True, RetryableError),
        (_client_error("InvalidAMIID.NotFound"), False, ProviderError),
        (_client_error("NotFoundException"), False, ProviderError),
        # capacity: EC2 answers 500, but the same offering is backed off, not retried
        (_client_error("InsufficientInstanceCapacity", 500), False, CapacityError),
        (_client_error("InsufficientCapacity", 500), False, CapacityError),
        (_client_error("MaxSpotInstanceCountExceeded"), False, CapacityError),
        (_client_error("SpotMaxPriceTooLow"), False, CapacityError),
        (_client_error("Unsupported"), False, CapacityError),
        # account quotas
        (_client_error("InstanceLimitExceeded"), False, QuotaError),
        (_client_error("VcpuLimitExceeded"), False, QuotaError),
        # credentials and permissions
        (_client_error("AuthFailure", 401), False, AuthError),
        (_client_error("UnauthorizedOperation", 403), False, AuthError),
        (_client_error("OptInRequired", 401), False, AuthError),
        (_client_error("AccessDeniedException"), False, AuthError),
        (_client_error("ExpiredToken"), False, AuthError),
        # anything else
        (_client_error("InvalidParameterValue"), False, ProviderError),
        (ValueError("x"), False, ProviderError),
    ],
)
def test_retry_predicate_and_error_mapping(
    error: BaseException, retry: bool, typed: type[ProviderError]
) -> None:
    offering = Offering("t3.micro", ZONE, CapacityType.ON_DEMAND)
    mapped = translate_error(error, "run_instances", (offering,))
    assert type(mapped) is typed
    assert mapped.code == (error_code(error) or type(error).__name__)
    assert AWSProvisioner.retryPredicate(mapped) is retry
    if isinstance(mapped, CapacityError):
        assert mapped.offerings == (offering,)


@pytest.mark.parametrize(
    ("code", "typed", "calls"),
    [
        ("RequestLimitExceeded", RetryableError, 2),
        ("Unavailable", RetryableError, 2),
        ("InsufficientInstanceCapacity", CapacityError, 1),
        ("VcpuLimitExceeded", QuotaError, 1),
        ("UnauthorizedOperation", AuthError, 1),
        ("InvalidParameterValue", ProviderError, 1),
    ],
)
async def test_ec2_errors_on_the_wire_are_typed_and_retried_by_class(
    aws: AWSProvisioner, env: Env, code: str, typed: type[ProviderError], calls: int
) -> None:
    """moto answers RunInstances with the code; a transient one is retried once and the launch
    goes through, any other reaches the caller typed after one call."""
    env.behaviour.fail_next(code, "injected")

    async def add() -> int:
        return await aws.addNodes(["t3.micro"], 1, False)

    if typed is RetryableError:
        assert await env.retry(add) == 1
    else:
        with pytest.raises(ProviderError) as info:
            await env.retry(add)
        assert type(info.value) is typed and info.value.code == code
    assert len(env.behaviour.requests) == calls


async def test_empty_aws_profile_means_no_profile(
    env: Env, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("AWS_PROFILE", "")  # as set to blank out a user's profile
    async with env.provisioner() as aws:
        assert await aws.addNodes(["t3.micro"], 1, False) == 1


# -- terminations: every EC2 error shape ends in an outcome per id -----------------------------


async def _two_workers(aws: AWSProvisioner) -> list[str]:
    await aws.addNodes(["t3.micro"], 2, False)
    return sorted(n.name for n in await aws.getProvisionedWorkers())


async def _terminate(aws: AWSProvisioner, ids: list[str]) -> dict[str, str]:
    """Each id's outcome: "terminated", "already-gone" or the error code it failed with."""
    outcomes: dict[str, str] = {}

    def listen(event: Any) -> None:
        if isinstance(event, TerminationResult):
            outcomes.update(dict.fromkeys(event.terminated, "terminated"))
            outcomes.update(dict.fromkeys(event.already_gone, "already-gone"))

    aws.subscribe(listen)
    try:
        await aws.terminateNodes(ids)
    except TerminationError as e:
        outcomes.update({i: err.code for i, err in e.failed.items()})
    assert set(outcomes) == set(ids), "an id was dropped"  # nothing silently dropped
    return outcomes


async def test_terminate_an_unknown_id_named_by_ec2_counts_as_gone(
    aws: AWSProvisioner, env: Env
) -> None:
    a, b = await _two_workers(aws)
    unknown = "i-0123456789abcdef0"
    assert await _terminate(aws, [a, unknown, b]) == {
        a: "terminated",
        b: "terminated",
        unknown: "already-gone",
    }
    # moto named the unknown id; it was dropped from the call and the rest sent again
    assert env.behaviour.terminations == [[a, unknown, b], [a, b]]
    assert await aws.getProvisionedWorkers() == []


async def test_terminate_not_found_naming_no_id_asks_each_alone(
    aws: AWSProvisioner, env: Env
) -> None:
    a, b = await _two_workers(aws)
    env.behaviour.fail_next_terminate(
        "InvalidInstanceID.NotFound", "One or more of the instance IDs do not exist"
    )
    assert await _terminate(aws, [a, b]) == {a: "terminated", b: "terminated"}
    assert env.behaviour.terminations == [[a, b], [a], [b]]


async def test_terminate_a_malformed_id_fails_that_id_only(aws: AWSProvisioner, env: Env) -> None:
    a, b = await _two_workers(aws)
    env.behaviour.fail_next_terminate("InvalidInstanceID.Malformed", f'Invalid id: "{a}"')
    assert await _terminate(aws, [a, b]) == {a: "InvalidInstanceID.Malformed", b: "terminated"}
    assert [n.name for n in await aws.getProvisionedWorkers()] == [a]


async def test_terminate_a_protected_instance_fails_it_and_the_rest_goes(
    aws: AWSProvisioner, env: Env
) -> None:
    a, b = await _two_workers(aws)
    async with env.client("ec2") as ec2:  # termination protection, as an operator sets it
        await ec2.modify_instance_attribute(InstanceId=a, DisableApiTermination={"Value": True})
    outcomes = await _terminate(aws, [a, b])
    assert outcomes == {a: "OperationNotPermitted", b: "terminated"}
    assert [n.name for n in await aws.getProvisionedWorkers()] == [a]


async def test_terminate_an_error_naming_no_id_fails_every_id(
    aws: AWSProvisioner, env: Env
) -> None:
    a, b = await _two_workers(aws)
    env.behaviour.fail_next_terminate("UnauthorizedOperation", "You are not authorized.")
    with pytest.raises(TerminationError) as info:
        await aws.terminateNodes([a, b])
    assert set(info.value.failed) == {a, b} and not info.value.retryable
    assert not AWSProvisioner.retryPredicate(info.value)
    assert len(await aws.getProvisionedWorkers()) == 2


async def test_terminate_throttled_is_retried_whole(aws: AWSProvisioner, env: Env) -> None:
    a, b = await _two_workers(aws)
    env.behaviour.fail_next_terminate("RequestLimitExceeded", "Request limit exceeded.")

    async def terminate() -> None:
        await aws.terminateNodes([a, b])

    await env.retry(terminate)
    assert env.behaviour.terminations == [[a, b], [a, b]] and len(env.sleeps) == 1
    assert await aws.getProvisionedWorkers() == []


# -- zones and the listing ----------------------------------------------------------------------


async def test_a_zone_out_of_capacity_falls_back_to_the_next_zone(env: Env) -> None:
    env.behaviour.capacity[("c5.large", "us-east-1a")] = 0
    async with env.provisioner(zone=None, zones=["us-east-1a", "us-east-1b"]) as aws:
        attempts: list[Any] = []
        aws.subscribe(attempts.append)
        assert await aws.addNodes(["c5.large", "c5a.large"], 2, False, requestId="r") == 2
        assert [(r["InstanceType"], r["Zone"]) for r in env.behaviour.requests] == [
            ("c5.large", "us-east-1a"),
            ("c5.large", "us-east-1b"),
        ]
        assert [a.capacity_error for a in attempts] == [True, False]
        assert {n.zone for n in await aws.getProvisionedWorkers()} == {"us-east-1b"}


async def test_a_gang_launches_whole_in_one_zone_or_not_at_all(env: Env) -> None:
    """A 4-node gang in a zone with room for 3 launches nothing there (RunInstances with
    MinCount = MaxCount = 4), then all 4 in the next zone; no listing taken between the calls
    ever shows part of it. What the fleet does with a cloud that answers part of a gang is
    test_fleet's (test_part_of_a_gang_a_cloud_answers_is_terminated_at_once)."""
    env.behaviour.capacity[("c5.large", "us-east-1a")] = 3
    async with env.provisioner(zone=None, zones=["us-east-1a", "us-east-1b"]) as aws:
        attempts: list[Any] = []
        aws.subscribe(attempts.append)
        seen: list[int] = []

        async def before_offering(offering: Offering, token: str) -> None:
            seen.append(len(await aws.getProvisionedWorkers()))

        launched = await aws.addNodes(
            ["c5.large"],
            4,
            False,
            requestId="g",
            all_or_nothing=True,
            before_offering=before_offering,
        )
        assert launched == 4
        assert [(r["Zone"], r["MinCount"], r["MaxCount"]) for r in env.behaviour.requests] == [
            ("us-east-1a", 4, 4),
            ("us-east-1b", 4, 4),
        ]
        assert [a.capacity_error for a in attempts] == [True, False]
        assert seen == [0, 0]  # nothing of the gang in the full zone, before or after
        workers = await aws.getProvisionedWorkers()
        assert len(workers) == 4 and {n.zone for n in workers} == {"us-east-1b"}
        assert env.behaviour.capacity[("c5.large", "us-east-1a")] == 3  # untouched


async def test_a_cluster_placement_group_per_type_and_zone_made_once_deleted_on_destroy(
    env: Env,
) -> None:
    """``placement_group="cluster"``: RunInstances names the cluster's group for the type and
    zone, made once (tagged with the cluster) and reused; a group another daemon made is used
    as it is; destroyCluster deletes them once the instances are gone."""
    env.behaviour.capacity[("c5.large", "us-east-1a")] = 1
    async with env.provisioner(zone=None, zones=["us-east-1a", "us-east-1b"]) as aws:
        assert await aws.addNodes(["c5.large"], 2, False, placement_group="cluster") == 2
        assert await aws.addNodes(["c5.large"], 1, False, placement_group="cluster") == 1
        assert [(r["Zone"], r["PlacementGroup"]) for r in env.behaviour.requests] == [
            ("us-east-1a", "shoal-demo-c5.large-us-east-1a"),
            ("us-east-1b", "shoal-demo-c5.large-us-east-1b"),
            ("us-east-1a", "shoal-demo-c5.large-us-east-1a"),
            ("us-east-1b", "shoal-demo-c5.large-us-east-1b"),
        ]
        groups = env.behaviour.placement_groups
        assert sorted(groups) == [
            "shoal-demo-c5.large-us-east-1a",
            "shoal-demo-c5.large-us-east-1b",
        ]
        assert all(g["Strategy"] == "cluster" for g in groups.values())
        assert all({"Key": TAG_CLUSTER, "Value": "demo"} in g["Tags"] for g in groups.values())
        assert await aws.addNodes(["t3.micro"], 1, False) == 1  # no group asked: none used
        assert env.behaviour.requests[-1]["PlacementGroup"] == ""
    async with env.provisioner(zone=None, zones=["us-east-1b"]) as again:  # a new daemon
        assert await again.addNodes(["c5.large"], 1, False, placement_group="cluster") == 1
        assert env.behaviour.requests[-1]["PlacementGroup"] == "shoal-demo-c5.large-us-east-1b"
        await again.destroyCluster()
        assert env.behaviour.placement_groups == {}


async def test_the_listing_is_eventually_consistent(aws: AWSProvisioner, env: Env) -> None:
    now = [1000.0]
    env.behaviour.now = lambda: now[0]
    env.behaviour.listing_lag = 5.0
    assert await aws.addNodes(["t3.micro"], 2, False) == 2
    assert await aws.getProvisionedWorkers() == []
    now[0] += 5.0
    assert len(await aws.getProvisionedWorkers()) == 2


async def test_tags_round_trip_through_ec2(aws: AWSProvisioner, env: Env) -> None:
    """CreateTags/DeleteTags: the draining mark shows in the next listing and goes again."""
    assert await aws.addNodes(["t3.micro"], 2, False) == 2
    first, second = sorted(n.name for n in await aws.getProvisionedWorkers())
    await aws.tag_instances([first], {TAG_DRAINING: "1700000000"})
    tags = {n.name: n.tags for n in await aws.getProvisionedWorkers()}
    assert tags[first][TAG_DRAINING] == "1700000000" and TAG_DRAINING not in tags[second]
    assert tags[first][TAG_AUTOSCALED] == "true"  # the other tags stay
    await aws.untag_instances([first, second], [TAG_DRAINING])  # absent on one: no error
    tags = {n.name: n.tags for n in await aws.getProvisionedWorkers()}
    assert TAG_DRAINING not in tags[first] and tags[first][TAG_AUTOSCALED] == "true"


async def test_stopped_and_stopping_workers_are_listed_with_their_state(
    aws: AWSProvisioner, env: Env
) -> None:
    assert await aws.addNodes(["t3.micro"], 2, False) == 2
    stopped, running = sorted(n.name for n in await aws.getProvisionedWorkers())
    async with env.client("ec2") as ec2:
        await ec2.stop_instances(InstanceIds=[stopped])  # an operator, or EC2 for a spot node
    nodes = {n.name: n for n in await aws.getProvisionedWorkers()}
    assert set(nodes) == {stopped, running}  # still the cluster's, still costing for EBS
    assert nodes[stopped].cloud_state in ("stopping", "stopped") and nodes[stopped].stopped
    assert nodes[running].cloud_state == "running" and not nodes[running].stopped
    await aws.terminateNodes([stopped])
    assert [n.name for n in await aws.getProvisionedWorkers()] == [running]
