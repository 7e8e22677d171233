"""Amazon EC2 provisioner on aiobotocore.

``AWSProvisioner`` implements ``AbstractProvisioner`` against EC2 (and Auto Scaling for
managed nodes). Conventions shared with ``providers.simulated``:

- ``addNodes`` makes one ``RunInstances`` call per instance type (MinCount=1,
  MaxCount=remaining), trying the alternatives in order (caller's order for a list or tuple,
  sorted for a set) while a type has no capacity, and raises ``CapacityError`` (``QuotaError``
  when every failure was an account limit) carrying the offerings tried only when it launched
  nothing. It returns how many instances were launched.
- ``requestId`` becomes the EC2 ``ClientToken`` (one per requestId x instance type x capacity
  type), reused across retries, so a retried or repeated launch creates nothing twice: EC2
  answers a repeated token with the original reservation, whose size is returned again.
  Without a requestId a random token is made per call (still reused across that call's retries).
- Membership is tag based (``TAG_CLUSTER``, ``TAG_ROLE``, ...), so a restarted daemon rebuilds
  its view from EC2 alone.
- Every botocore error is mapped to the ``providers.errors`` hierarchy in ``translate_error``;
  ``retryPredicate`` decides what ``call_with_retry`` retries. botocore's own retries are off
  (``total_max_attempts=1``) so the injected ``RetryPolicy`` and ``sleep`` are the only ones.

``Node.joined`` is always None: EC2 cannot tell whether a node has joined the scheduler.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import hashlib
import logging
import os
import re
import shlex
import uuid
from collections.abc import Awaitable, Callable, Iterable, Sequence
from typing import Any, ClassVar

from aiobotocore.session import get_session
from botocore.config import Config
from botocore.configprovider import ConstantProvider
from botocore.exceptions import (
    BotoCoreError,
    ClientError,
    ConnectionClosedError,
    ConnectTimeoutError,
    EndpointConnectionError,
    ReadTimeoutError,
)
from shoal.providers.base import (
    TAG_AUTOSCALED,
    TAG_CLUSTER,
    TAG_NODE_TYPE,
    TAG_REQUEST_ID,
    TAG_ROLE,
    AbstractProvisioner,
    Node,
)
from shoal.providers.clock import Clock, SystemClock
from shoal.providers.errors import CapacityError, ProviderError, QuotaError, RetryableError
from shoal.providers.retry import RetryPolicy, call_with_retry
from shoal.scaler.model import CapacityType, Offering
from shoal.scaler.shape import Shape

__all__ = [
    "CAPACITY_CODES",
    "NOT_FOUND_CODES",
    "QUOTA_CODES",
    "THROTTLE_CODES",
    "AWSProvisioner",
    "translate_error",
]

log = logging.getLogger(__name__)

GIB = 2**30
MIB = 2**20

THROTTLE_CODES = frozenset(
    {
        "RequestLimitExceeded",
        "Throttling",
        "ThrottlingException",
        "RequestThrottled",
        "RequestThrottledException",
        "TooManyRequestsException",
        "EC2ThrottledException",
    }
)
SERVER_CODES = frozenset(
    {"InternalError", "InternalFailure", "ServiceUnavailable", "Unavailable", "ServerInternal"}
)
# Eventual consistency: an instance just launched may not be visible to the next call yet.
NOT_FOUND_CODES = frozenset({"InvalidInstanceID.NotFound"})
CAPACITY_CODES = frozenset(
    {
        "InsufficientInstanceCapacity",
        "InsufficientCapacity",
        "MaxSpotInstanceCountExceeded",
        "SpotMaxPriceTooLow",
        "Unsupported",  # the type is not offered in this zone
    }
)
QUOTA_CODES = frozenset({"InstanceLimitExceeded", "VcpuLimitExceeded"})
_TRANSPORT_ERRORS = (
    EndpointConnectionError,
    ConnectionClosedError,
    ConnectTimeoutError,
    ReadTimeoutError,
)
_INSTANCE_ID = re.compile(r"i-[0-9a-fA-F]+")
TERMINATE_BATCH = 1000  # TerminateInstances takes at most 1000 ids
LIVE_STATES = ["pending", "running"]
NOT_GONE_STATES = ["pending", "running", "stopping", "stopped", "shutting-down"]


def _error_code(e: BaseException) -> str:
    if isinstance(e, ProviderError):
        return e.code
    if isinstance(e, ClientError):
        return str(e.response.get("Error", {}).get("Code", ""))
    return ""


def _http_status(e: BaseException) -> int:
    if isinstance(e, ClientError):
        meta = e.response.get("ResponseMetadata", {})
        with contextlib.suppress(TypeError, ValueError):
            return int(meta.get("HTTPStatusCode", 0))
    return 0


def translate_error(
    e: BaseException, operation: str, offerings: tuple[Offering, ...] = ()
) -> ProviderError:
    """The one place botocore errors become ``providers.errors``.

    Throttling, 5xx, transport errors and eventual-consistency NotFound are ``RetryableError``;
    capacity codes ``CapacityError`` and account limits ``QuotaError`` (both with
    ``offerings``); anything else a plain ``ProviderError`` with the AWS code.
    """
    if isinstance(e, ProviderError):
        return e
    code = _error_code(e)
    message = f"{operation}: {e}"
    if isinstance(e, _TRANSPORT_ERRORS):
        return RetryableError(message, code=type(e).__name__, operation=operation)
    if code in QUOTA_CODES:
        return QuotaError(message, offerings=offerings, code=code, operation=operation)
    if code in CAPACITY_CODES:
        return CapacityError(message, offerings=offerings, code=code, operation=operation)
    if (
        code in THROTTLE_CODES
        or code in SERVER_CODES
        or code in NOT_FOUND_CODES
        or _http_status(e) >= 500
    ):
        return RetryableError(message, code=code, operation=operation)
    return ProviderError(message, code=code or type(e).__name__, operation=operation)


class AWSProvisioner(AbstractProvisioner):
    """Workers on EC2: shapes from DescribeInstanceTypes, launches with RunInstances, tags for
    membership, Auto Scaling groups for managed nodes. Use ``async with`` or ``await close()``."""

    cloud = "aws"
    # Every API call retries inside the provider, so one RunInstances keeps its ClientToken.
    retries_internally: ClassVar[bool] = True
    #: DescribeInstances page size (EC2 allows 5..1000); smaller in tests to exercise paging.
    describe_page_size = 1000
    #: How often and how long destroyCluster polls for the cluster's instances to be gone.
    destroy_poll_interval = 5.0
    destroy_poll_limit = 120
    #: Kubernetes join variables (JOIN_TOKEN, JOIN_CERT_HASH, JOIN_ENDPOINT) for worker user
    #: data in a kubernetes cluster; without them workers get the base configuration only.
    kubernetes_join_vars: dict[str, str] | None = None

    def __init__(
        self,
        clusterName: str | None = None,
        clusterType: str | None = "mesos",
        zone: str | None = None,
        nodeStorage: int = 50,
        nodeStorageOverrides: list[str] | None = None,
        *,
        region: str | None = None,
        endpoint_url: str | None = None,
        image_id: str | None = None,
        image_name: str | None = None,
        image_owner: str | None = None,
        subnet_id: str | None = None,
        security_group_ids: Sequence[str] = (),
        key_name: str | None = None,
        instance_profile_arn: str | None = None,
        extra_tags: dict[str, str] | None = None,
        retry_policy: RetryPolicy | None = None,
        sleep: Callable[[float], Awaitable[None]] | None = None,
        clock: Clock | None = None,
    ) -> None:
        super().__init__(clusterName, clusterType, zone, nodeStorage, nodeStorageOverrides)
        if image_id and (image_name or image_owner):
            raise ValueError("give image_id, or image_name with image_owner, not both")
        if bool(image_name) != bool(image_owner):
            raise ValueError("image_name and image_owner go together")
        if region is None:
            if zone and zone[-1:].isalpha():
                region = zone[:-1]
            else:
                region = os.environ.get("AWS_REGION") or os.environ.get(
                    "AWS_DEFAULT_REGION", "us-east-1"
                )
        self.region = region
        self.endpoint_url = endpoint_url or os.environ.get("AWS_ENDPOINT_URL") or None
        self.image_id = image_id
        self.image_name = image_name
        self.image_owner = image_owner
        self.subnet_id = subnet_id
        self.security_group_ids = list(security_group_ids)
        self.key_name = key_name
        self.instance_profile_arn = instance_profile_arn
        self.extra_tags = dict(extra_tags or {})
        self.retry_policy = retry_policy or RetryPolicy()
        self.clock: Clock = clock or SystemClock()
        self._sleep = sleep or self.clock.sleep
        self._session = get_session()
        if not os.environ.get("AWS_PROFILE") and not os.environ.get("AWS_DEFAULT_PROFILE"):
            # An empty AWS_PROFILE (set to blank out a user's profile) means no profile, as
            # when unset; botocore would otherwise look for a profile named "".
            self._session.get_component("config_store").set_config_provider(
                "profile", ConstantProvider(None)
            )
        self._clients: dict[str, Any] = {}
        self._stack = contextlib.AsyncExitStack()
        self._client_lock = asyncio.Lock()
        self._type_info: dict[str, dict[str, Any]] = {}
        self._image: tuple[str, str | None] | None = None  # (image id, root device name)
        self._closed = False

    @classmethod
    def from_config(cls, config: Any, *, clock: Clock | None = None) -> AWSProvisioner:
        """Build from a ``daemon.config.ShoalConfig`` whose provider is ``kind: aws``."""
        p = config.provider
        return cls(
            clusterName=config.cluster_name,
            clusterType=p.cluster_type,
            zone=p.zone,
            nodeStorage=p.node_storage,
            nodeStorageOverrides=list(p.node_storage_overrides),
            region=p.region,
            endpoint_url=p.endpoint_url,
            image_id=p.image_id,
            image_name=p.image_name,
            image_owner=p.image_owner,
            subnet_id=p.subnet_id,
            security_group_ids=list(p.security_group_ids),
            key_name=p.key_name,
            instance_profile_arn=p.instance_profile_arn,
            extra_tags=dict(p.extra_tags),
            retry_policy=config.retry_policy(),
            clock=clock,
        )

    # -- client lifecycle ----------------------------------------------------------------

    async def _client(self, service: str) -> Any:
        """The one client per service for this provisioner's lifetime, created on first use."""
        client = self._clients.get(service)
        if client is not None:
            return client
        async with self._client_lock:
            if self._closed:
                raise ProviderError("the provisioner is closed", code="Closed")
            if service not in self._clients:
                config = Config(
                    retries={"total_max_attempts": 1, "mode": "standard"},  # ours retry
                    connect_timeout=10,
                    read_timeout=60,
                    user_agent_extra="shoal",
                )
                self._clients[service] = await self._stack.enter_async_context(
                    self._session.create_client(
                        service,  # type: ignore[call-overload]
                        region_name=self.region,
                        endpoint_url=self.endpoint_url,
                        config=config,
                    )
                )
            return self._clients[service]

    async def close(self) -> None:
        """Close the clients; the provisioner cannot be used afterwards."""
        self._closed = True
        self._clients.clear()
        await self._stack.aclose()

    async def __aenter__(self) -> AWSProvisioner:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()

    async def _call(
        self,
        operation: str,
        kwargs: dict[str, Any],
        *,
        service: str = "ec2",
        offerings: tuple[Offering, ...] = (),
        predicate: Callable[[BaseException], bool] | None = None,
    ) -> dict[str, Any]:
        """One API call (snake_case ``operation``) with retries; errors come out typed."""
        client = await self._client(service)
        method = getattr(client, operation)

        async def once() -> dict[str, Any]:
            try:
                result: dict[str, Any] = await method(**kwargs)
            except (ClientError, BotoCoreError) as e:
                raise translate_error(e, operation, offerings) from e
            return result

        return await call_with_retry(
            once,
            predicate or self.retryPredicate,
            self.retry_policy,
            operation=operation,
            sleep=self._sleep,
        )

    @staticmethod
    def retryPredicate(e: BaseException) -> bool:
        """True for throttling, 5xx, timeouts/connection errors and InvalidInstanceID.NotFound
        (eventual consistency); False for capacity and quota errors and everything else."""
        if isinstance(e, CapacityError):
            return False
        if isinstance(e, RetryableError):
            return True
        if isinstance(e, _TRANSPORT_ERRORS):
            return True
        code = _error_code(e)
        if code in CAPACITY_CODES or code in QUOTA_CODES:
            return False
        if code in THROTTLE_CODES or code in SERVER_CODES or code in NOT_FOUND_CODES:
            return True
        return _http_status(e) >= 500

    # -- settings ------------------------------------------------------------------------

    def supportedClusterTypes(self) -> set[str]:
        return {"mesos", "kubernetes"}

    @property
    def zone(self) -> str | None:
        return self._zone

    async def createClusterSettings(self) -> None:
        """Check the image can be resolved (the rest is given to the constructor)."""
        await self._resolve_image()

    async def readClusterSettings(self) -> None:
        """Resolve the image and learn the leader's private IP from its tags."""
        await self._resolve_image()
        with contextlib.suppress(ProviderError):
            await self.getLeader()

    async def _resolve_image(self) -> tuple[str, str | None]:
        """(image id, root device name): the given id, or the newest image named
        ``image_name`` (wildcards allowed) owned by ``image_owner``."""
        if self._image is not None:
            return self._image
        if self.image_id:
            root: str | None = None
            try:
                resp = await self._call("describe_images", {"ImageIds": [self.image_id]})
                images = resp.get("Images", [])
                if images:
                    root = images[0].get("RootDeviceName")
            except ProviderError as e:  # an id DescribeImages cannot see still launches
                log.warning("event=image_describe_failed image=%s code=%s", self.image_id, e.code)
            self._image = (self.image_id, root)
            return self._image
        if not (self.image_name and self.image_owner):
            raise ProviderError(
                "no image: give image_id, or image_name and image_owner", code="NoImage"
            )
        resp = await self._call(
            "describe_images",
            {
                "Owners": [self.image_owner],
                "Filters": [
                    {"Name": "name", "Values": [self.image_name]},
                    {"Name": "state", "Values": ["available"]},
                ],
            },
        )
        images = resp.get("Images", [])
        if not images:
            raise ProviderError(
                f"no image named {self.image_name!r} owned by {self.image_owner}",
                code="NoImage",
                operation="describe_images",
            )
        newest = max(images, key=lambda i: (i.get("CreationDate", ""), i["ImageId"]))
        self._image = (newest["ImageId"], newest.get("RootDeviceName"))
        log.info("event=image_resolved image=%s name=%s", newest["ImageId"], newest.get("Name"))
        return self._image

    # -- shapes --------------------------------------------------------------------------

    async def _describe_types(self, names: Iterable[str]) -> None:
        missing = sorted({n for n in names if n not in self._type_info})
        for start in range(0, len(missing), 100):
            resp = await self._call(
                "describe_instance_types", {"InstanceTypes": missing[start : start + 100]}
            )
            for info in resp.get("InstanceTypes", []):
                self._type_info[info["InstanceType"]] = info

    async def getNodeShape(self, instance_type: str, preemptible: bool = False) -> Shape:
        """Shape from DescribeInstanceTypes (cached): memory bytes, vCPUs, instance storage or
        nodeStorage (its override) GiB for EBS-only types; wallTime the 3600 s interval."""
        await self._describe_types([instance_type])
        info = self._type_info.get(instance_type)
        if info is None:
            raise ProviderError(
                f"unknown instance type {instance_type!r}",
                code="InvalidInstanceType",
                operation="describe_instance_types",
            )
        storage = info.get("InstanceStorageInfo", {}).get("TotalSizeInGB")
        if info.get("InstanceStorageSupported") and storage:
            disk = int(storage) * GIB
        else:
            disk = self._nodeStorageOverrides.get(instance_type, self._nodeStorage) * GIB
        return Shape(
            wallTime=3600,
            memory=int(info["MemoryInfo"]["SizeInMiB"]) * MIB,
            cores=int(info["VCpuInfo"]["DefaultVCpus"]),
            disk=disk,
            preemptible=preemptible,
        )

    # -- launching -----------------------------------------------------------------------

    @staticmethod
    def _preference(node_types: set[str] | Sequence[str]) -> list[str]:
        if isinstance(node_types, str):
            return [node_types]
        if isinstance(node_types, (set, frozenset)):
            return sorted(node_types)
        return list(dict.fromkeys(node_types))

    def _offering(self, instance_type: str, preemptible: bool) -> Offering:
        kind = CapacityType.SPOT if preemptible else CapacityType.ON_DEMAND
        return Offering(instance_type, self._zone or self.region, kind)

    def _tags(self, role: str, autoscaled: str, **more: str) -> dict[str, str]:
        name = self.clusterName or ""
        return {
            **self.extra_tags,
            "Name": name,
            TAG_CLUSTER: name,
            TAG_ROLE: role,
            TAG_AUTOSCALED: autoscaled,
            **more,
        }

    @staticmethod
    def _tag_list(tags: dict[str, str]) -> list[dict[str, str]]:
        return [{"Key": k, "Value": v} for k, v in tags.items()]

    @staticmethod
    def client_token(request_id: str, instance_type: str, preemptible: bool) -> str:
        """The ClientToken for one requestId x instance type x capacity type (<= 64 ASCII)."""
        kind = "spot" if preemptible else "on-demand"
        digest = hashlib.sha256(f"{request_id}\0{instance_type}\0{kind}".encode()).hexdigest()
        return f"shoal-{digest[:40]}"

    def _user_data(self, role: str, preemptible: bool = False) -> str:
        """Ignition JSON for a worker or the leader (see ``InstanceSetupMixin``)."""
        config = self.getBaseInstanceConfiguration()
        if role == "leader":
            if self.clusterType == "kubernetes":
                self.addKubernetesLeader(config)
            else:
                self.add_toil_service(config, "leader")
        elif self.clusterType == "mesos" and self._leaderPrivateIP:
            self.add_toil_service(config, "worker", preemptible=preemptible)
        elif self.clusterType == "kubernetes" and self.kubernetes_join_vars:
            self.addKubernetesWorker(config, self.kubernetes_join_vars, preemptible=preemptible)
        return config.toIgnitionConfig()

    async def _launch_spec(
        self,
        instance_type: str,
        preemptible: bool,
        spot_bid: float | None,
        tags: dict[str, str],
        user_data: str,
    ) -> dict[str, Any]:
        """RunInstances arguments shared by workers and the leader (counts and token aside)."""
        image, root_device = await self._resolve_image()
        spec: dict[str, Any] = {
            "ImageId": image,
            "InstanceType": instance_type,
            "UserData": user_data,  # botocore base64-encodes it for RunInstances
            "TagSpecifications": [
                {"ResourceType": "instance", "Tags": self._tag_list(tags)},
                {"ResourceType": "volume", "Tags": self._tag_list(tags)},
            ],
        }
        if self._zone:
            spec["Placement"] = {"AvailabilityZone": self._zone}
        if self.subnet_id:
            spec["SubnetId"] = self.subnet_id
        if self.security_group_ids:
            spec["SecurityGroupIds"] = list(self.security_group_ids)
        if self.key_name:
            spec["KeyName"] = self.key_name
        if self.instance_profile_arn:
            spec["IamInstanceProfile"] = {"Arn": self.instance_profile_arn}
        if root_device:
            gib = self._nodeStorageOverrides.get(instance_type, self._nodeStorage)
            spec["BlockDeviceMappings"] = [
                {
                    "DeviceName": root_device,
                    "Ebs": {"VolumeSize": gib, "VolumeType": "gp3", "DeleteOnTermination": True},
                }
            ]
        if preemptible:
            spot: dict[str, Any] = {
                "SpotInstanceType": "one-time",
                "InstanceInterruptionBehavior": "terminate",
            }
            if spot_bid is not None:
                spot["MaxPrice"] = str(spot_bid)
            spec["InstanceMarketOptions"] = {"MarketType": "spot", "SpotOptions": spot}
        return spec

    async def addNodes(
        self,
        nodeTypes: set[str] | Sequence[str],
        numNodes: int,
        preemptible: bool,
        spotBid: float | None = None,
        *,
        requestId: str | None = None,
    ) -> int:
        ordered = self._preference(nodeTypes)
        if numNodes <= 0 or not ordered:
            return 0
        if preemptible and spotBid is None:
            spotBid = self._spotBidsMap.get(frozenset(ordered))
        request = requestId if requestId is not None else uuid.uuid4().hex
        user_data = self._user_data("worker", preemptible)
        launched = 0
        failed: list[tuple[Offering, str]] = []
        for instance_type in ordered:
            remaining = numNodes - launched
            if remaining <= 0:
                break
            offering = self._offering(instance_type, preemptible)
            extra = {TAG_NODE_TYPE: instance_type}
            if requestId is not None:
                extra[TAG_REQUEST_ID] = requestId
            spec = await self._launch_spec(
                instance_type,
                preemptible,
                spotBid,
                self._tags("worker", "true", **extra),
                user_data,
            )
            spec.update(
                MinCount=1,
                MaxCount=remaining,
                ClientToken=self.client_token(request, instance_type, preemptible),
            )
            try:
                resp = await self._call("run_instances", spec, offerings=(offering,))
            except CapacityError as e:
                log.warning(
                    "event=launch_no_capacity offering=%s code=%s request=%s",
                    offering,
                    e.code,
                    requestId,
                )
                failed.append((offering, e.code))
                continue
            count = len(resp.get("Instances", []))
            log.info(
                "event=launched offering=%s count=%d asked=%d request=%s",
                offering,
                count,
                remaining,
                requestId,
            )
            launched += count
        if not launched:
            codes = [code for _, code in failed]
            code = codes[0] if len(set(codes)) == 1 else "InsufficientInstanceCapacity"
            offerings = tuple(o for o, _ in failed)
            message = "no capacity for " + ", ".join(f"{o} ({c})" for o, c in failed)
            error = QuotaError if code in QUOTA_CODES else CapacityError
            raise error(message, offerings=offerings, code=code, operation="addNodes")
        return launched

    async def launchCluster(
        self,
        leaderNodeType: str,
        leaderStorage: int = 50,
        owner: str = "",
        *args: Any,
        userTags: dict[str, str] | None = None,
        **kwargs: Any,
    ) -> None:
        """Create the leader node (tagged role=leader, not autoscaled)."""
        try:
            leader = await self.getLeader()
        except ProviderError as e:
            if e.code != "NoLeader":
                raise
        else:
            raise ProviderError(
                f"cluster {self.clusterName!r} already has a leader {leader.name}",
                code="ClusterExists",
                operation="launchCluster",
            )
        tags = {**dict(userTags or {}), **self._tags("leader", "false")}
        tags[TAG_NODE_TYPE] = leaderNodeType
        if owner:
            tags["Owner"] = owner
        spec = await self._launch_spec(leaderNodeType, False, None, tags, self._user_data("leader"))
        if "BlockDeviceMappings" in spec:
            spec["BlockDeviceMappings"][0]["Ebs"]["VolumeSize"] = leaderStorage
        spec.update(MinCount=1, MaxCount=1, ClientToken=f"shoal-leader-{uuid.uuid4().hex}")
        resp = await self._call(
            "run_instances", spec, offerings=(self._offering(leaderNodeType, False),)
        )
        instance = resp["Instances"][0]
        self._leaderPrivateIP = instance.get("PrivateIpAddress")
        log.info(
            "event=leader_launched instance=%s type=%s", instance["InstanceId"], leaderNodeType
        )

    # -- membership ----------------------------------------------------------------------

    def _cluster_filters(self, role: str | None, states: list[str]) -> list[dict[str, Any]]:
        filters: list[dict[str, Any]] = [
            {"Name": f"tag:{TAG_CLUSTER}", "Values": [self.clusterName or ""]},
            {"Name": "instance-state-name", "Values": states},
        ]
        if role is not None:
            filters.append({"Name": f"tag:{TAG_ROLE}", "Values": [role]})
        return filters

    async def _describe(self, filters: list[dict[str, Any]]) -> list[dict[str, Any]]:
        """Every instance matching ``filters``, page by page (each page retried on its own)."""
        instances: list[dict[str, Any]] = []
        token: str | None = None
        while True:
            kwargs: dict[str, Any] = {"Filters": filters, "MaxResults": self.describe_page_size}
            if token:
                kwargs["NextToken"] = token
            resp = await self._call("describe_instances", kwargs)
            for reservation in resp.get("Reservations", []):
                instances.extend(reservation.get("Instances", []))
            token = resp.get("NextToken")
            if not token:
                return instances

    def _node(self, inst: dict[str, Any]) -> Node:
        return Node(
            publicIP=inst.get("PublicIpAddress"),
            privateIP=inst.get("PrivateIpAddress"),
            name=inst["InstanceId"],
            launchTime=inst["LaunchTime"],
            nodeType=inst.get("InstanceType"),
            preemptible=inst.get("InstanceLifecycle") == "spot",
            tags={t["Key"]: t["Value"] for t in inst.get("Tags", [])},
            zone=inst.get("Placement", {}).get("AvailabilityZone"),
            joined=None,  # EC2 cannot tell whether the node joined the scheduler
        )

    async def getProvisionedWorkers(
        self, instance_type: str | None = None, preemptible: bool | None = None
    ) -> list[Node]:
        filters = self._cluster_filters("worker", LIVE_STATES)
        if instance_type is not None:
            filters.append({"Name": "instance-type", "Values": [instance_type]})
        nodes = [self._node(i) for i in await self._describe(filters)]
        if preemptible is not None:
            nodes = [n for n in nodes if n.preemptible == preemptible]
        return nodes

    async def getLeader(self) -> Node:
        instances = await self._describe(self._cluster_filters("leader", LIVE_STATES))
        if not instances:
            raise ProviderError(
                f"cluster {self.clusterName!r} has no leader",
                code="NoLeader",
                operation="getLeader",
            )
        leader = self._node(min(instances, key=lambda i: (i["LaunchTime"], i["InstanceId"])))
        self._leaderPrivateIP = leader.privateIP
        return leader

    # -- terminating ---------------------------------------------------------------------

    @staticmethod
    def _not_found_retry(e: BaseException) -> bool:
        return AWSProvisioner.retryPredicate(e) and _error_code(e) not in NOT_FOUND_CODES

    async def terminateNodes(self, nodes: Iterable[Node | str]) -> None:
        """Terminate in batches of <= 1000; ids EC2 does not know are skipped, not errors."""
        ids = list(dict.fromkeys(n if isinstance(n, str) else n.name for n in nodes))
        for start in range(0, len(ids), TERMINATE_BATCH):
            await self._terminate_batch(ids[start : start + TERMINATE_BATCH])

    async def _terminate_batch(self, batch: list[str]) -> None:
        while batch:
            try:
                await self._call(
                    "terminate_instances", {"InstanceIds": batch}, predicate=self._not_found_retry
                )
            except RetryableError as e:
                if e.code not in NOT_FOUND_CODES:
                    raise
                # EC2 rejects the whole call when any id is unknown; drop those and go on.
                missing = set(_INSTANCE_ID.findall(str(e))) & set(batch)
                log.info("event=terminate_not_found ids=%s", ",".join(sorted(missing)) or "?")
                if not missing:
                    return
                batch = [i for i in batch if i not in missing]
            else:
                log.info("event=terminated count=%d", len(batch))
                return

    async def destroyCluster(self) -> None:
        """Delete the cluster's Auto Scaling groups and launch templates, terminate every
        instance tagged with the cluster, and wait (bounded) until they are all gone."""
        await self._delete_managed_groups()
        filters = self._cluster_filters(None, NOT_GONE_STATES)
        for _ in range(self.destroy_poll_limit):
            instances = await self._describe(filters)
            live = [i["InstanceId"] for i in instances if i["State"]["Name"] != "shutting-down"]
            if live:
                await self.terminateNodes(live)
            elif not instances:
                self._leaderPrivateIP = None
                log.info("event=cluster_destroyed cluster=%s", self.clusterName)
                return
            await self._sleep(self.destroy_poll_interval)
        raise ProviderError(
            f"cluster {self.clusterName!r}: instances still not terminated",
            code="DestroyTimeout",
            operation="destroyCluster",
        )

    # -- managed nodes (Auto Scaling) -----------------------------------------------------

    def _group_name(self, ordered: list[str], preemptible: bool) -> str:
        digest = hashlib.sha256("/".join(ordered).encode()).hexdigest()[:10]
        kind = "spot" if preemptible else "ondemand"
        return f"shoal-{self.clusterName}-{kind}-{digest}"

    async def addManagedNodes(
        self,
        nodeTypes: set[str] | Sequence[str],
        minNodes: int,
        maxNodes: int,
        preemptible: bool,
        spotBid: float | None = None,
    ) -> None:
        """A launch template plus an Auto Scaling group (mixed instances over the types) at
        [minNodes, maxNodes]; members are tagged autoscaled=false, since AWS scales them."""
        ordered = self._preference(nodeTypes)
        if not ordered:
            raise ValueError("addManagedNodes needs at least one instance type")
        if not 0 <= minNodes <= maxNodes:
            raise ValueError(f"managed group needs 0 <= minNodes <= maxNodes, not {minNodes}..")
        if preemptible and spotBid is None:
            spotBid = self._spotBidsMap.get(frozenset(ordered))
        name = self._group_name(ordered, preemptible)
        tags = self._tags("worker", "false", **{TAG_NODE_TYPE: ordered[0]})
        spec = await self._launch_spec(
            ordered[0], False, None, tags, self._user_data("worker", preemptible)
        )
        data: dict[str, Any] = {
            "ImageId": spec["ImageId"],
            "InstanceType": ordered[0],
            "UserData": base64.b64encode(spec["UserData"].encode()).decode(),
            "TagSpecifications": spec["TagSpecifications"],
        }
        for key in ("SecurityGroupIds", "KeyName", "IamInstanceProfile", "BlockDeviceMappings"):
            if key in spec:
                data[key] = spec[key]
        await self._call(
            "create_launch_template",
            {
                "LaunchTemplateName": name,
                "LaunchTemplateData": data,
                "ClientToken": name,
                "TagSpecifications": [
                    {"ResourceType": "launch-template", "Tags": self._tag_list(tags)}
                ],
            },
        )
        distribution: dict[str, Any] = {
            "OnDemandBaseCapacity": 0,
            "OnDemandPercentageAboveBaseCapacity": 0 if preemptible else 100,
        }
        if preemptible:
            distribution["SpotAllocationStrategy"] = "capacity-optimized"
            if spotBid is not None:
                distribution["SpotMaxPrice"] = str(spotBid)
        group_tags = dict(tags)
        if self.clusterType == "kubernetes":  # cluster-autoscaler auto-discovery
            group_tags["k8s.io/cluster-autoscaler/enabled"] = "true"
            group_tags[f"k8s.io/cluster-autoscaler/{self.clusterName}"] = "owned"
        group: dict[str, Any] = {
            "AutoScalingGroupName": name,
            "MinSize": minNodes,
            "MaxSize": maxNodes,
            "DesiredCapacity": minNodes,
            "MixedInstancesPolicy": {
                "LaunchTemplate": {
                    "LaunchTemplateSpecification": {
                        "LaunchTemplateName": name,
                        "Version": "$Latest",
                    },
                    "Overrides": [{"InstanceType": t} for t in ordered],
                },
                "InstancesDistribution": distribution,
            },
            "Tags": [
                {
                    "Key": k,
                    "Value": v,
                    "PropagateAtLaunch": True,
                    "ResourceId": name,
                    "ResourceType": "auto-scaling-group",
                }
                for k, v in group_tags.items()
            ],
        }
        if self.subnet_id:
            group["VPCZoneIdentifier"] = self.subnet_id
        else:
            group["AvailabilityZones"] = [self._zone or f"{self.region}a"]
        await self._call("create_auto_scaling_group", group, service="autoscaling")
        log.info("event=managed_group_created group=%s types=%s", name, ",".join(ordered))

    async def _delete_managed_groups(self) -> None:
        prefix = f"shoal-{self.clusterName}-"
        token: str | None = None
        names: list[str] = []
        while True:
            kwargs: dict[str, Any] = {
                "Filters": [{"Name": f"tag:{TAG_CLUSTER}", "Values": [self.clusterName or ""]}]
            }
            if token:
                kwargs["NextToken"] = token
            resp = await self._call("describe_auto_scaling_groups", kwargs, service="autoscaling")
            names += [g["AutoScalingGroupName"] for g in resp.get("AutoScalingGroups", [])]
            token = resp.get("NextToken")
            if not token:
                break
        for name in names:
            await self._call(
                "delete_auto_scaling_group",
                {"AutoScalingGroupName": name, "ForceDelete": True},
                service="autoscaling",
            )
            if name.startswith(prefix):
                try:
                    await self._call("delete_launch_template", {"LaunchTemplateName": name})
                except ProviderError as e:
                    log.warning("event=launch_template_delete_failed name=%s code=%s", name, e.code)

    # -- Kubernetes hooks -----------------------------------------------------------------

    def getKubernetesCloudProvider(self) -> str | None:
        return "aws"

    def getKubernetesAutoscalerSetupCommands(self, values: dict[str, str]) -> str:
        """Deploy the upstream cluster autoscaler with auto-discovery of the cluster's
        Auto Scaling groups (tagged by ``addManagedNodes``)."""
        cluster = re.sub(r"[^A-Za-z0-9_.-]", "", values.get("CLUSTER_NAME", self.clusterName or ""))
        version = values.get("AUTOSCALER_VERSION", "1.29.0")
        url = (
            "https://raw.githubusercontent.com/kubernetes/autoscaler/"
            f"cluster-autoscaler-{version}/cluster-autoscaler/cloudprovider/aws/examples/"
            "cluster-autoscaler-autodiscover.yaml"
        )
        return (
            "set -euo pipefail\n"
            f"curl -fsSL {shlex.quote(url)} \\\n"
            f"  | sed -e 's|<YOUR CLUSTER NAME>|{cluster}|g' \\\n"
            "  | kubectl apply -f -\n"
            "kubectl -n kube-system set env deployment/cluster-autoscaler "
            f"AWS_REGION={shlex.quote(self.region)}\n"
        )
