"""Amazon EC2 provisioner on aiobotocore: the provider primitives over EC2's API.

``AWSProvisioner`` implements the primitives of ``AbstractProvisioner`` (the base class writes
``addNodes``/``terminateNodes`` once, for every cloud):

- ``launch_offering``: one ``RunInstances`` in one zone, MinCount=1 and MaxCount=n (EC2 launches
  what capacity allows; a gang's request has MinCount = MaxCount = n, and EC2 launches all of
  them or none), with the request's ``ClientToken``, so a retried or repeated launch
  creates nothing twice: EC2 answers a repeated token with the original reservation. A capacity
  code is a ``CapacityError`` (``QuotaError`` for account limits) carrying the offering.
  The ids come back in launch order (AmiLaunchIndex).
- Slurm gangs: a power-save launch of N named nodes tags all N instances with the list of
  names as a Slurm hostlist in launch order, ``TAG_SLURM_NODE="cloud[1-3]"``
  (``providers.hostlist.compress_in_order``: a gang of consecutive names fits EC2's 256
  characters of a tag value however large; RunInstances gives every instance the same tags),
  then CreateTags gives instance i (AmiLaunchIndex i) name i, so ids and names pair in order.
  The worker waits for a name without a comma or a bracket before it starts slurmd. The list
  on the instances is the durable intent: a retry or a restart's replay (same client token,
  same instances) names them again, and ``list_instances`` names any member it finds still
  carrying a list, so a daemon stopped between the two calls leaves no instance without its
  node.
  With ``request.placement_group`` (a strategy: "cluster") the instances go into the cluster's
  placement group for their type and zone, ``shoal-<cluster>-<type>-<zone>``, created on first
  use tagged with the cluster and deleted by ``destroyCluster``.
- ``terminate_instances``: one ``TerminateInstances`` per batch of <= 1000. EC2 rejects the whole
  call when any id is unknown (``InvalidInstanceID.NotFound``): the ids its message names are
  already gone and the rest is sent again; when the message names none, each id is tried alone,
  so every id ends terminated, already gone, or failed with its error.
- ``list_instances``: DescribeInstances by the cluster's tags, page by page, so a restarted
  daemon rebuilds its view from EC2 alone. EC2 documents it as eventually consistent: a new
  instance may be missing for a while (the daemon's launch ledger covers that gap). It lists
  pending, running, stopping and stopped instances with their state (``Node.cloud_state``):
  a stopped worker still costs its EBS volumes and the daemon terminates it; shutting-down
  ones are already on their way out and left out.
- ``tag_instances``/``untag_instances``: CreateTags/DeleteTags (the draining mark).
- ``describe_instance_types``: DescribeInstanceTypes for shapes, priced from a ``PriceBook``
  (``providers.aws_pricing``): the shipped on-demand table, refreshed by ``start()`` at once and
  every 12 h from the Pricing API and spot price history, as Karpenter does. A spot price not
  yet known is bounded by the on-demand price; an on-demand price nobody has stays unknown.

Every botocore error is mapped to the ``providers.errors`` hierarchy by ``_call``, through
``providers.aws_errors.translate_error`` (the one AWS code table, shared with the price refresh);
``retryPredicate`` decides on those typed errors what the daemon's one retry layer
(``providers.retry``) retries.
Each API call here is made once: botocore's own retries are off (``total_max_attempts=1``).

``Node.joined`` is always None: EC2 cannot tell whether a node has joined the scheduler.

Workers join the scheduler through their user data (``_user_data``): the agent of the cluster
type (``addWorkerAgent``) once ``prepare_workers`` knows the leader and the join values; it runs
at most once before the first launch if the daemon has not called it. ``readClusterSettings``
reads the instance shoal runs on (the leader) from the instance metadata service with IMDSv2
(``providers.aws_imds``; the endpoint is configurable, a fake in tests).
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import dataclasses
import hashlib
import logging
import os
import re
import shlex
import uuid
from collections.abc import Awaitable, Callable, Collection, Mapping, Sequence
from typing import Any, ClassVar

from aiobotocore.session import get_session
from botocore.config import Config
from botocore.configprovider import ConstantProvider
from botocore.exceptions import BotoCoreError, ClientError
from shoal.providers.aws_errors import NOT_FOUND_CODES, translate_error
from shoal.providers.aws_imds import DEFAULT_ENDPOINT, InstanceMetadataClient
from shoal.providers.aws_pricing import (
    SOURCE_PRICING_API,
    PriceBook,
    PricingRefresher,
    RefreshResult,
    pricing_endpoint_region,
)
from shoal.providers.base import (
    GIB,
    TAG_AUTOSCALED,
    TAG_CLUSTER,
    TAG_INSTANCE_TYPE,
    TAG_ROLE,
    AbstractProvisioner,
    Node,
    ordered_types,
)
from shoal.providers.errors import ProviderError, is_retryable
from shoal.providers.hostlist import compress_in_order, expand_hostlist
from shoal.providers.outcomes import (
    InstanceTypeInfo,
    LaunchRequest,
    PricesUpdated,
    TerminationStatus,
)
from shoal.providers.workers import TAG_SLURM_NODE, WorkerSettings, slurm_node_tags
from shoal.runtime.clock import Clock, SystemClock
from shoal.scaler.model import CapacityType, Offering

__all__ = [
    "MAX_USER_DATA",
    "AWSProvisioner",
]

log = logging.getLogger(__name__)

MIB = 2**20
MAX_USER_DATA = 16384  # EC2's limit on user data, in bytes before base64
MAX_TAG_VALUE = 256  # EC2's limit on a tag value, in characters

# Tag keys EC2 allows when instance tags are readable from the metadata service.
_IMDS_TAG_KEY = re.compile(r"^(?!\.{1,2}$|_index$)[A-Za-z0-9+\-=.,_:@]{1,128}$")
LIVE_STATES = ["pending", "running"]
# What list_instances shows: every state an instance can leave only by being terminated (or
# started again). Not "shutting-down": that instance is already being terminated, has nothing
# left for shoal to do, and must not count as capacity.
LISTED_STATES = ["pending", "running", "stopping", "stopped"]
NOT_GONE_STATES = ["pending", "running", "stopping", "stopped", "shutting-down"]


# A TAG_SLURM_NODE value naming more than one node (a hostlist: a list or a range).
_LISTS_NAMES = re.compile(r"[,\[]")


def _tags_of(inst: dict[str, Any]) -> dict[str, str]:
    return {t["Key"]: t["Value"] for t in inst.get("Tags", [])}


def _launch_index(inst: dict[str, Any]) -> int:
    """The instance's place in its launch (EC2's AmiLaunchIndex, 0-based)."""
    return int(inst.get("AmiLaunchIndex", 0))


def _gang_names(tags: Mapping[str, str]) -> list[str]:
    """The Slurm node names ``TAG_SLURM_NODE`` holds in launch order when it names a gang: a
    hostlist of more than one (``g[1-3]`` as EC2 holds it, ``g1,g2,g3`` as the power saver asks
    for it), else [] (one name, or a value that is no hostlist)."""
    value = tags.get(TAG_SLURM_NODE, "")
    if not _LISTS_NAMES.search(value):
        return []
    try:
        names = expand_hostlist(value)
    except ValueError:
        return []
    return names if len(names) > 1 else []


def _gang_tag(request: LaunchRequest) -> str | None:
    """The ``TAG_SLURM_NODE`` value a gang's instances are launched with: its names (one
    distinct name per instance, in launch order) as a hostlist, so a gang of consecutive
    names (``cloud[1-100]``) fits in one EC2 tag value; None when the request lists no names.
    Raises ProviderError (InvalidParameterValue) before any launch when the gang cannot be
    launched all or nothing or its names do not fit even so."""
    value = request.tags.get(TAG_SLURM_NODE, "")
    if not _LISTS_NAMES.search(value):
        return None
    own = slurm_node_tags(request.tags, request.count, "launch")  # one distinct name each
    try:
        tag = compress_in_order([t[TAG_SLURM_NODE] for t in own])
    except ValueError as e:
        raise ProviderError(str(e), code="InvalidParameterValue", operation="launch") from None
    problem = ""
    if request.min_count != request.count:
        problem = "a gang's named instances are launched all or nothing (MinCount=MaxCount)"
    elif len(tag) > MAX_TAG_VALUE:
        problem = (
            f"the gang's names, even as a hostlist ({len(tag)} characters), are over EC2's "
            f"{MAX_TAG_VALUE} characters of a tag value"
        )
    if problem:
        raise ProviderError(
            f"{problem}: {tag[:80]!r}", code="InvalidParameterValue", operation="launch"
        )
    return tag


class AWSProvisioner(AbstractProvisioner):
    """Workers on EC2: shapes from DescribeInstanceTypes, launches with RunInstances, tags for
    membership, Auto Scaling groups for managed nodes. Use ``async with`` or ``await close()``."""

    cloud = "aws"
    terminate_batch_size: ClassVar[int] = 1000  # TerminateInstances takes at most 1000 ids
    #: DescribeInstances page size (EC2 allows 5..1000); smaller in tests to exercise paging.
    describe_page_size = 1000
    #: How often and how long destroyCluster polls for the cluster's instances to be gone.
    destroy_poll_interval = 5.0
    destroy_poll_limit = 120

    def __init__(
        self,
        clusterName: str | None = None,
        clusterType: str | None = "mesos",
        zone: str | None = None,
        nodeStorage: int = 50,
        nodeStorageOverrides: list[str] | None = None,
        *,
        zones: Sequence[str] = (),
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
        metadata_endpoint: str | None = None,
        metadata_timeout: float = 2.0,
        workers: WorkerSettings | None = None,
        sleep: Callable[[float], Awaitable[None]] | None = None,
        clock: Clock | None = None,
        price_refresh: bool = False,
        pricing_endpoint_url: str | None = None,
    ) -> None:
        super().__init__(
            clusterName, clusterType, zone, nodeStorage, nodeStorageOverrides, zones=zones
        )
        zone = self._zone
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
        self.clock: Clock = clock or SystemClock()
        self._sleep = sleep or self.clock.sleep
        self._imds = InstanceMetadataClient(
            metadata_endpoint or DEFAULT_ENDPOINT, timeout=metadata_timeout, clock=self.clock
        )
        self.bootstrap.worker_settings = workers
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
        self._image: tuple[str, str | None] | None = None  # (image id, root device name)
        self.prices = PriceBook(region)
        self.price_refresh = price_refresh
        # Pricing API and spot price history endpoint (a local fake in tests); None: AWS's.
        self.pricing_endpoint_url = pricing_endpoint_url
        self.refresher: PricingRefresher | None = None
        self._refresh_task: asyncio.Task[None] | None = None
        self._closed = False
        self._placement_groups: set[str] = set()  # known to exist (made or found)

    @classmethod
    def from_config(cls, config: Any, *, clock: Clock | None = None) -> AWSProvisioner:
        """Build from a ``daemon.config.ShoalConfig`` whose provider is ``kind: aws``."""
        p = config.provider
        return cls(
            clusterName=config.cluster_name,
            clusterType=p.cluster_type,
            zones=p.launch_zones,
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
            metadata_endpoint=p.metadata_endpoint,
            workers=config.workers,
            clock=clock,
            price_refresh=p.price_refresh,
            pricing_endpoint_url=p.pricing_endpoint_url,
        )

    # -- client lifecycle ----------------------------------------------------------------

    async def _client(
        self, service: str, *, region: str | None = None, endpoint_url: str | None = None
    ) -> Any:
        """The one client per (service, region, endpoint) for this provisioner's lifetime,
        created on first use; by default in this region at ``endpoint_url``."""
        key = f"{service}@{region or ''}@{endpoint_url or ''}"
        client = self._clients.get(key)
        if client is not None:
            return client
        async with self._client_lock:
            if self._closed:
                raise ProviderError("the provisioner is closed", code="Closed")
            if key not in self._clients:
                config = Config(
                    retries={"total_max_attempts": 1, "mode": "standard"},  # ours retry
                    connect_timeout=10,
                    read_timeout=60,
                    user_agent_extra="shoal",
                )
                self._clients[key] = await self._stack.enter_async_context(
                    self._session.create_client(
                        service,  # type: ignore[call-overload]
                        region_name=region or self.region,
                        endpoint_url=endpoint_url or self.endpoint_url,
                        config=config,
                    )
                )
            return self._clients[key]

    async def sqs_client(self) -> Any:
        """The SQS client in this provisioner's region, at its endpoint (the interruption
        queue's, ``providers.aws_interruptions``); shared, closed with the provisioner."""
        return await self._client("sqs")

    async def start(self) -> None:
        """Refresh prices now and every 12 h after, in the background; the shipped table
        stands in until the first refresh answers."""
        if not self.price_refresh or self._refresh_task is not None:
            return
        refresher = await self._refresher()
        self._refresh_task = asyncio.create_task(refresher.run(), name="shoal-prices")

    async def _refresher(self) -> PricingRefresher:
        if self.refresher is None:
            pricing_region = pricing_endpoint_region(self.region)
            pricing = None
            if pricing_region is not None:
                pricing = await self._client(
                    "pricing", region=pricing_region, endpoint_url=self.pricing_endpoint_url
                )
            ec2 = await self._client("ec2", endpoint_url=self.pricing_endpoint_url)
            self.refresher = PricingRefresher(
                self.prices,
                ec2=ec2,
                pricing=pricing,
                instance_types=sorted(self._catalogue) or None,
                clock=self.clock,
                on_refresh=self._prices_refreshed,
            )
        return self.refresher

    def _prices_refreshed(self, result: RefreshResult) -> None:
        """Reprice what the catalogue holds and tell the listeners."""
        if self.refresher is not None:
            self.refresher.instance_types = sorted(self._catalogue) or None
        self.update_catalogue({name: self._priced(info) for name, info in self._catalogue.items()})
        errors = [*result.on_demand_errors, *result.spot_errors]
        self._emit(
            PricesUpdated(
                ok=result.ok,
                at=result.finished_at,
                source=SOURCE_PRICING_API,
                error="; ".join(str(e) for e in errors)[:500],
            )
        )

    def _priced(self, info: InstanceTypeInfo) -> InstanceTypeInfo:
        on_demand = self.prices.on_demand(info.name)
        spot = {
            zone: price
            for zone in self.zones or (f"{self.region}a",)
            if (price := self.prices.spot_or_on_demand(info.name, zone)) is not None
        }
        return dataclasses.replace(info, on_demand_price=on_demand, spot_prices=spot)

    async def close(self) -> None:
        """Stop the price refresh and close the clients; the provisioner cannot be used
        afterwards."""
        if self._refresh_task is not None:
            self._refresh_task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._refresh_task
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
    ) -> dict[str, Any]:
        """One API call (snake_case ``operation``), made once; errors come out typed."""
        client = await self._client(service)
        try:
            result: dict[str, Any] = await getattr(client, operation)(**kwargs)
        except (ClientError, BotoCoreError) as e:
            raise translate_error(e, operation, offerings) from e
        return result

    @staticmethod
    def retryPredicate(e: BaseException) -> bool:
        """True for what ``_call`` translated as transient (throttling, 5xx, transport errors,
        InvalidInstanceID.NotFound); capacity, quota, auth and other errors are not retried.
        Every AWS error reaches the retry layer translated (``providers.aws_errors``)."""
        return is_retryable(e)

    # -- settings ------------------------------------------------------------------------

    def supportedClusterTypes(self) -> set[str]:
        return {"mesos", "kubernetes", "slurm"}

    @property
    def zone(self) -> str | None:
        return self._zone

    async def createClusterSettings(self) -> None:
        """Check the image can be resolved (the rest is given to the constructor)."""
        await self._resolve_image()

    async def readClusterSettings(self) -> None:
        """Initialise from the instance shoal runs on, the leader: its private IP (the address
        workers join) and zone (the launch zone when none is configured), read
        from the instance metadata service with IMDSv2; then resolve the image."""
        identity = await self._imds.identity()
        self._leaderPrivateIP = identity.private_ip
        if not self.zones:
            self.zones = (identity.zone,)
            self._zone = identity.zone
        log.info(
            "event=cluster_settings_read instance=%s private_ip=%s zone=%s",
            identity.instance_id,
            identity.private_ip,
            identity.zone,
        )
        await self._resolve_image()

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

    # -- primitives ----------------------------------------------------------------------

    async def describe_instance_types(self, names: Sequence[str]) -> dict[str, InstanceTypeInfo]:
        """Shapes from DescribeInstanceTypes (100 names a call): memory, vCPUs, instance
        storage; prices from the price book."""
        out: dict[str, InstanceTypeInfo] = {}
        wanted = sorted(set(names))
        for start in range(0, len(wanted), 100):
            try:
                resp = await self._call(
                    "describe_instance_types", {"InstanceTypes": wanted[start : start + 100]}
                )
            except ProviderError as e:
                if e.code != "InvalidInstanceType":
                    raise
                resp = await self._describe_known(wanted[start : start + 100])
            for info in resp.get("InstanceTypes", []):
                storage = info.get("InstanceStorageInfo", {}).get("TotalSizeInGB")
                disk = int(storage) * GIB if info.get("InstanceStorageSupported") and storage else 0
                out[info["InstanceType"]] = self._priced(
                    InstanceTypeInfo(
                        name=info["InstanceType"],
                        cores=int(info["VCpuInfo"]["DefaultVCpus"]),
                        memory=int(info["MemoryInfo"]["SizeInMiB"]) * MIB,
                        disk=disk,
                    )
                )
        return out

    async def _describe_known(self, names: list[str]) -> dict[str, Any]:
        """EC2 rejects a whole DescribeInstanceTypes for one unknown name: ask one by one."""
        found: list[dict[str, Any]] = []
        for name in names:
            try:
                resp = await self._call("describe_instance_types", {"InstanceTypes": [name]})
            except ProviderError as e:
                if e.code != "InvalidInstanceType":
                    raise
                continue
            found += resp.get("InstanceTypes", [])
        return {"InstanceTypes": found}

    async def launch_offering(self, request: LaunchRequest) -> list[str]:
        """One RunInstances in the offering's zone (MinCount=min_count, MaxCount=count) with
        the request's ClientToken; returns the instance ids in launch order, so a gang's id i
        is the instance named with its i-th name (``_name_gang``): the power saver pairs them so."""
        offering = request.offering
        gang_tag = _gang_tag(request)
        if self.bootstrap.worker_settings is not None and not self.bootstrap.prepared:
            await self.prepare_workers()
        user_data, metadata_options = self._worker_user_data(request)
        tags = {**self.extra_tags, **request.tags}
        if gang_tag is not None:
            tags[TAG_SLURM_NODE] = gang_tag
        spec = await self._launch_spec(
            offering.instance_type,
            request.preemptible,
            request.spot_bid,
            tags,
            user_data,
            zone=offering.zone,
        )
        if metadata_options:
            spec["MetadataOptions"] = metadata_options
        if request.placement_group:
            group = await self._placement_group(offering, request.placement_group)
            spec["Placement"] = {**spec.get("Placement", {}), "GroupName": group}
        spec.update(
            MinCount=request.min_count, MaxCount=request.count, ClientToken=request.client_token
        )
        resp = await self._call("run_instances", spec, offerings=(offering,))
        instances = sorted(resp.get("Instances", []), key=_launch_index)
        if names := _gang_names(request.tags):
            await self._name_gang(instances, names, request.client_token)
        return [i["InstanceId"] for i in instances]

    async def _name_gang(
        self, instances: list[dict[str, Any]], names: list[str], token: str
    ) -> None:
        """Give each instance of a gang launch (in launch order) its own Slurm node name.
        A transient error is raised as it is: the retry (or a restart's replay) repeats the
        launch with its client token, which returns these instances, and names them again
        (the same names: CreateTags is idempotent). Any other error (IAM refusing the tag, say)
        leaves no instance billing that no node owns: they are terminated, then it is raised."""
        try:
            for inst, name in zip(instances, names, strict=False):
                await self._write_name(inst, name)
        except ProviderError as e:
            if not is_retryable(e):
                ids = [i["InstanceId"] for i in instances]
                log.error(
                    "event=gang_naming_failed token=%s code=%s terminating=%s",
                    token,
                    e.code,
                    ",".join(ids),
                )
                try:
                    await self.terminate_instances(ids)
                except ProviderError as undo:  # the listing names them; the clean-up ends them
                    log.error(
                        "event=gang_terminate_failed ids=%s code=%s", ",".join(ids), undo.code
                    )
            raise

    async def _write_name(self, inst: dict[str, Any], name: str) -> None:
        """CreateTags of ``inst``'s Slurm node name; ``inst``'s tags show it from now on,
        whether the call succeeds or not (the caller decides what a failure means)."""
        inst["Tags"] = [
            *(t for t in inst.get("Tags", []) if t["Key"] != TAG_SLURM_NODE),
            {"Key": TAG_SLURM_NODE, "Value": name},
        ]
        await self._call(
            "create_tags",
            {"Resources": [inst["InstanceId"]], "Tags": [{"Key": TAG_SLURM_NODE, "Value": name}]},
        )

    async def _placement_group(self, offering: Offering, strategy: str) -> str:
        """The cluster's placement group of ``strategy`` for the offering's type and zone
        (one per pair: a cluster group holds one zone), created tagged with the cluster the
        first time; one that exists already (another daemon's start, a lost answer) is used."""
        name = f"shoal-{self.clusterName}-{offering.instance_type}-{offering.zone or self._zone}"
        if name in self._placement_groups:
            return name
        try:
            await self._call(
                "create_placement_group",
                {
                    "GroupName": name,
                    "Strategy": strategy,
                    "TagSpecifications": [
                        {
                            "ResourceType": "placement-group",
                            "Tags": self._tag_list({TAG_CLUSTER: self.clusterName or ""}),
                        }
                    ],
                },
            )
            log.info("event=placement_group_created group=%s strategy=%s", name, strategy)
        except ProviderError as e:
            if e.code != "InvalidPlacementGroup.Duplicate":
                raise
        self._placement_groups.add(name)
        return name

    async def _delete_placement_groups(self) -> None:
        """Delete the placement groups tagged with the cluster (its instances are gone)."""
        resp = await self._call(
            "describe_placement_groups",
            {"Filters": [{"Name": f"tag:{TAG_CLUSTER}", "Values": [self.clusterName or ""]}]},
        )
        for group in resp.get("PlacementGroups", []):
            with contextlib.suppress(ProviderError):  # gone already: nothing left to do
                await self._call("delete_placement_group", {"GroupName": group["GroupName"]})
                log.info("event=placement_group_deleted group=%s", group["GroupName"])
        self._placement_groups.clear()

    async def terminate_instances(
        self, ids: Sequence[str]
    ) -> Mapping[str, TerminationStatus | ProviderError]:
        """TerminateInstances for one batch. EC2 fails a whole call for one bad id: ids the
        error names get its outcome (NotFound: already gone; anything else: that error) and
        the rest is sent again; an error naming no id fails every id (NotFound: each id is
        asked alone to learn which are gone). Throttling and 5xx are raised for the retry
        layer."""
        out: dict[str, TerminationStatus | ProviderError] = {}
        batch = list(ids)
        while batch:
            try:
                await self._call("terminate_instances", {"InstanceIds": batch})
            except ProviderError as e:
                if is_retryable(e) and e.code not in NOT_FOUND_CODES:
                    raise
                gone = e.code in NOT_FOUND_CODES
                named = [i for i in batch if re.search(rf"\b{re.escape(i)}\b", str(e))]
                log.info("event=terminate_refused code=%s ids=%s", e.code, ",".join(named) or "?")
                if not named:
                    if gone and len(batch) > 1:  # which ids are unknown? ask for each alone
                        for one in batch:
                            out.update(await self.terminate_instances([one]))
                    else:
                        out.update(
                            dict.fromkeys(batch, TerminationStatus.ALREADY_GONE if gone else e)
                        )
                    return out
                out.update(dict.fromkeys(named, TerminationStatus.ALREADY_GONE if gone else e))
                batch = [i for i in batch if i not in named]
            else:
                out.update(dict.fromkeys(batch, TerminationStatus.TERMINATED))
                return out
        return out

    async def list_instances(self) -> list[Node]:
        """The cluster's workers. A gang member still carrying its launch's list of names
        (the daemon stopped, or every answer was lost, between RunInstances and its naming)
        is named now, and listed with its own name even when that CreateTags fails (logged;
        the next listing tries again): its Slurm node is never left without its instance."""
        filters = self._cluster_filters("worker", LISTED_STATES)
        instances = await self._describe(filters)
        for inst in instances:
            names, index = _gang_names(_tags_of(inst)), _launch_index(inst)
            if not names or index >= len(names):  # (never: a gang has one name per instance)
                continue
            try:
                await self._write_name(inst, names[index])
            except ProviderError as e:
                log.warning(
                    "event=gang_naming_deferred instance=%s code=%s", inst["InstanceId"], e.code
                )
            else:
                log.info(
                    "event=gang_member_named instance=%s node=%s", inst["InstanceId"], names[index]
                )
        return [self._node(i) for i in instances]

    async def tag_instances(self, ids: Sequence[str], tags: Mapping[str, str]) -> None:
        await self._call(
            "create_tags", {"Resources": list(ids), "Tags": self._tag_list(dict(tags))}
        )

    async def untag_instances(self, ids: Sequence[str], keys: Collection[str]) -> None:
        await self._call(
            "delete_tags", {"Resources": list(ids), "Tags": [{"Key": k} for k in keys]}
        )

    # -- launching -----------------------------------------------------------------------

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

    def _user_data(
        self,
        role: str,
        preemptible: bool = False,
        instance_type: str | None = None,
        tags: Mapping[str, str] | None = None,
    ) -> str:
        """User data for a worker or the leader: Ignition JSON, or #cloud-config with
        ``workers.bootstrap: cloud-init`` (``WorkerBootstrap.user_data``).

        A worker gets the agent of the cluster type (``addWorkerAgent``) when the leader and
        join values are known; when ``workers`` is configured and they are not, this raises
        ``ProviderError`` (``WorkerJoinIncomplete``) rather than launch a worker that joins
        nothing. User data over EC2's 16 KiB raises ``UserDataTooLarge``.
        """
        config = self.getBaseInstanceConfiguration()
        if role == "leader":
            if self.clusterType == "kubernetes":
                self.addKubernetesLeader(config)
            elif self.clusterType == "mesos":
                self.add_toil_service(config, "leader")
            # slurm: the controller is the operator's; the leader gets the base config
        elif self.bootstrap.workerJoinKnown():
            self.bootstrap.addWorkerAgent(config, preemptible, instance_type, tags)
        elif self.bootstrap.worker_settings is not None:
            raise ProviderError(
                f"a {self.clusterType} worker would join nothing: the leader or join values "
                "are not known (prepare_workers failed or was not called)",
                code="WorkerJoinIncomplete",
                operation="launch",
            )
        data = self.bootstrap.user_data(config)
        if len(data.encode()) > MAX_USER_DATA:
            raise ProviderError(
                f"{role} user data is {len(data.encode())} bytes; EC2 allows {MAX_USER_DATA}",
                code="UserDataTooLarge",
                operation="launch",
            )
        return data

    def _worker_user_data(self, request: LaunchRequest) -> tuple[str, dict[str, str]]:
        """A worker's user data and the MetadataOptions its launch needs: a Slurm worker named
        by its tag reads that tag from the metadata service, so tags must be on there, and
        each such launch carries its name (a gang's: one per instance, see ``_name_gang``)."""
        options: dict[str, str] = {}
        settings = self.bootstrap.worker_settings
        slurm = settings.slurm if settings is not None else None
        named_by_tag = (
            self.clusterType == "slurm"
            and slurm is not None
            and slurm.registration == "named"
            and slurm.node_name == "tag"
        )
        if named_by_tag:
            if not request.tags.get(TAG_SLURM_NODE):
                raise ProviderError(
                    f"a Slurm worker named by its tag is launched with its {TAG_SLURM_NODE} "
                    "tag (a power-save resume names it); use registration: dynamic or "
                    "node_name: hostname for workers the planner launches",
                    code="SlurmNodeNameMissing",
                    operation="launch",
                )
            # EC2 refuses to launch with metadata tags on when a tag key has other characters.
            bad = [k for k in {**self.extra_tags, **request.tags} if not _IMDS_TAG_KEY.match(k)]
            if bad:
                raise ProviderError(
                    f"tag key(s) {', '.join(map(repr, bad))} cannot be read from instance "
                    "metadata (letters, digits and + - = . , _ : @ only), which a Slurm worker "
                    "named by its tag needs",
                    code="InvalidTagKey",
                    operation="launch",
                )
            options["InstanceMetadataTags"] = "enabled"
        user_data = self._user_data(
            "worker", request.preemptible, request.offering.instance_type, request.tags
        )
        return user_data, options

    async def _launch_spec(
        self,
        instance_type: str,
        preemptible: bool,
        spot_bid: float | None,
        tags: dict[str, str],
        user_data: str,
        zone: str | None = None,
    ) -> dict[str, Any]:
        """RunInstances arguments shared by workers and the leader (counts and token aside)."""
        zone = zone or self._zone
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
        if zone:
            spec["Placement"] = {"AvailabilityZone": zone}
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

    async def launchCluster(
        self,
        leaderNodeType: str,
        leaderStorage: int = 50,
        owner: str = "",
        *args: Any,
        userTags: dict[str, str] | None = None,
        **kwargs: Any,
    ) -> None:
        """Create the cluster, as Toil's ``launch-cluster``: its security group (every node
        in it reaches every other) and the leader node in it, tagged with the cluster
        (role=leader, not autoscaled), in this provisioner's zone. A cluster that already has a
        leader is refused (``ClusterExists``); a security group left by an earlier launch is
        reused. ``destroyCluster`` deletes both."""
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
        tags[TAG_INSTANCE_TYPE] = leaderNodeType
        if owner:
            tags["Owner"] = owner
        spec = await self._launch_spec(leaderNodeType, False, None, tags, self._user_data("leader"))
        group = await self._cluster_security_group(create=True)
        assert group is not None
        spec["SecurityGroupIds"] = [*spec.get("SecurityGroupIds", []), group]
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

    async def _cluster_security_group(self, *, create: bool = False) -> str | None:
        """The id of the cluster's security group (tagged with the cluster), or None; with
        ``create``, made if missing, in the subnet's VPC (the default VPC without a subnet),
        open to traffic from its own members only."""
        resp = await self._call(
            "describe_security_groups",
            {"Filters": [{"Name": f"tag:{TAG_CLUSTER}", "Values": [self.clusterName or ""]}]},
        )
        for found in resp.get("SecurityGroups", []):
            group = str(found["GroupId"])
            pairs = [
                pair.get("GroupId")
                for rule in found.get("IpPermissions", [])
                if rule.get("IpProtocol") == "-1"
                for pair in rule.get("UserIdGroupPairs", [])
            ]
            if create and group not in pairs:  # a launch died before the rule: add it now
                await self._allow_members(group)
            return group
        if not create:
            return None
        name = f"shoal-{self.clusterName}"
        kwargs: dict[str, Any] = {
            "GroupName": name,
            "Description": f"shoal cluster {self.clusterName}: its nodes reach one another",
            "TagSpecifications": [
                {
                    "ResourceType": "security-group",
                    "Tags": self._tag_list({"Name": name, TAG_CLUSTER: self.clusterName or ""}),
                }
            ],
        }
        if self.subnet_id:
            subnets = await self._call("describe_subnets", {"SubnetIds": [self.subnet_id]})
            kwargs["VpcId"] = subnets["Subnets"][0]["VpcId"]
        group = str((await self._call("create_security_group", kwargs))["GroupId"])
        await self._allow_members(group)
        log.info("event=security_group_created cluster=%s group=%s", self.clusterName, group)
        return group

    async def _allow_members(self, group: str) -> None:
        """The cluster group's one rule: all traffic from its own members."""
        await self._call(
            "authorize_security_group_ingress",
            {
                "GroupId": group,
                "IpPermissions": [{"IpProtocol": "-1", "UserIdGroupPairs": [{"GroupId": group}]}],
            },
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
            cloud_state=inst.get("State", {}).get("Name"),
        )

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

    # -- cluster ---------------------------------------------------------------------------

    async def destroyCluster(self) -> None:
        """Delete the cluster's Auto Scaling groups and launch templates, terminate every
        instance tagged with the cluster (leader and workers), wait (bounded) until they are
        all gone, then delete the security group ``launchCluster`` made and the cluster's
        placement groups. EC2 refuses to delete the security group (``DependencyViolation``)
        for a while after its instances terminate, until their network interfaces detach: it
        is asked again within the same bound, and a group still held at the end is named in
        the ``DestroyTimeout`` error. What is already gone
        is skipped, so a second call (or one after a failed call) finishes the job."""
        await self._delete_managed_groups()
        filters = self._cluster_filters(None, NOT_GONE_STATES)
        problem = "instances still not terminated"
        for _ in range(self.destroy_poll_limit):
            instances = await self._describe(filters)
            live = [i["InstanceId"] for i in instances if i["State"]["Name"] != "shutting-down"]
            if live:
                log.info("event=cluster_terminating instances=%s", ",".join(live))
                await self.terminateNodes(live)
            elif not instances:
                self._leaderPrivateIP = None
                held = await self._delete_security_group()
                if held is None:
                    await self._delete_placement_groups()
                    log.info("event=cluster_destroyed cluster=%s", self.clusterName)
                    return
                problem = (
                    f"security group {held} still has a dependent object (EC2's "
                    "DependencyViolation: its instances' network interfaces not yet detached)"
                )
            await self._sleep(self.destroy_poll_interval)
        raise ProviderError(
            f"cluster {self.clusterName!r}: {problem} after {self.destroy_poll_limit} polls "
            f"{self.destroy_poll_interval:g} s apart; run the destroy again later",
            code="DestroyTimeout",
            operation="destroyCluster",
        )

    async def _delete_security_group(self) -> str | None:
        """Delete the cluster's security group (if any); returns its id while EC2 refuses with
        ``DependencyViolation`` (the terminated instances' network interfaces still hold it)."""
        group = await self._cluster_security_group()
        if group is None:
            return None
        try:
            await self._call("delete_security_group", {"GroupId": group})
        except ProviderError as e:
            if e.code != "DependencyViolation":
                raise
            log.info("event=security_group_held group=%s", group)
            return group
        log.info("event=security_group_deleted group=%s", group)
        return None

    async def cluster_exists(self) -> bool:
        """Whether anything of the cluster is left: an instance tagged with it (not yet
        terminated) or the security group ``launchCluster`` made."""
        if await self._describe(self._cluster_filters(None, NOT_GONE_STATES)):
            return True
        return await self._cluster_security_group() is not None

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
        ordered = ordered_types(nodeTypes)
        if not ordered:
            raise ValueError("addManagedNodes needs at least one instance type")
        if not 0 <= minNodes <= maxNodes:
            raise ValueError(f"managed group needs 0 <= minNodes <= maxNodes, not {minNodes}..")
        if preemptible and spotBid is None:
            spotBid = self._spotBidsMap.get(frozenset(ordered))
        name = self._group_name(ordered, preemptible)
        tags = self._tags("worker", "false", **{TAG_INSTANCE_TYPE: ordered[0]})
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
            group["AvailabilityZones"] = list(self.zones) or [f"{self.region}a"]
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
