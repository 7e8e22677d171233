"""AbstractProvisioner's own bookkeeping, through a minimal concrete subclass (conftest)."""

from __future__ import annotations

import datetime as dt
import inspect
from typing import Any

import pytest
import shoal.providers.base as base
from shoal.providers.base import (
    TAG_AUTOSCALED,
    TAG_REQUEST_ID,
    AbstractProvisioner,
    ManagedNodesNotSupportedException,
    Node,
)
from shoal.providers.errors import (
    CapacityError,
    ProviderError,
    QuotaError,
    RetryableError,
    TerminationError,
)
from shoal.providers.outcomes import InstanceTypeInfo, TerminationResult
from shoal.scaler.model import CapacityType, Offering
from shoal.scaler.shape import Shape, parse_node_types

GIB = 2**30


def test_module_attributes() -> None:
    assert base.a_short_time == 5
    assert base.LEADER_HOME_DIR == "/root/"
    assert AbstractProvisioner.LEADER_HOME_DIR == "/root/"
    assert issubclass(ManagedNodesNotSupportedException, RuntimeError)
    for name in ("a_short_time", "LEADER_HOME_DIR", "AbstractProvisioner", "Node", "Shape"):
        assert name in base.__all__


def test_abstract_provisioner_cannot_be_instantiated() -> None:
    with pytest.raises(TypeError, match="abstract"):
        AbstractProvisioner()  # type: ignore[abstract]


def test_constructor_keeps_its_arguments(make_provisioner: Any) -> None:
    p = make_provisioner(clusterName="demo", clusterType="kubernetes", zone="us-west-2a")
    assert (p.clusterName, p.clusterType, p._zone, p._nodeStorage) == (
        "demo",
        "kubernetes",
        "us-west-2a",
        50,
    )
    assert p._leaderPrivateIP is None
    assert make_provisioner().clusterType == "mesos"  # Toil's default


@pytest.mark.parametrize("cluster_type", ["slurm", "", None, "Mesos"])
def test_unsupported_cluster_type_is_rejected(make_provisioner: Any, cluster_type: Any) -> None:
    with pytest.raises(ValueError, match="does not support cluster type") as info:
        make_provisioner(clusterType=cluster_type)
    message = str(info.value)
    assert repr(cluster_type) in message
    assert "kubernetes, mesos" in message  # says what is supported
    assert "MinimalProvisioner" in message


def test_supported_cluster_types_come_from_the_subclass(make_provisioner: Any) -> None:
    class MesosOnly(make_provisioner):  # type: ignore[misc, valid-type]
        supported = {"mesos"}  # noqa: RUF012

    MesosOnly(clusterType="mesos")
    with pytest.raises(ValueError, match=r"supported: mesos$"):
        MesosOnly(clusterType="kubernetes")


def test_node_storage_overrides(make_provisioner: Any) -> None:
    p = make_provisioner(nodeStorage=80, nodeStorageOverrides=["t2.large:100", "c5.4xlarge:0"])
    assert p._nodeStorage == 80
    assert p._nodeStorageOverrides == {"t2.large": 100, "c5.4xlarge": 0}
    assert make_provisioner(nodeStorageOverrides=None)._nodeStorageOverrides == {}
    assert make_provisioner(nodeStorageOverrides=[])._nodeStorageOverrides == {}


@pytest.mark.parametrize(
    "override", ["t2.large", "t2.large:", ":100", "t2.large:abc", "t2.large:-5", "t2.large:1.5"]
)
def test_bad_node_storage_override_is_rejected(make_provisioner: Any, override: str) -> None:
    with pytest.raises(ValueError, match="INSTANCE_TYPE:GIB") as info:
        make_provisioner(nodeStorageOverrides=["m5.large:10", override])
    assert repr(override) in str(info.value)


async def test_autoscaled_node_types(make_provisioner: Any) -> None:
    p = make_provisioner()
    assert not p.hasAutoscaledNodeTypes()
    assert p.getAutoscaledInstanceShapes() == {}
    await p.setAutoscaledNodeTypes(parse_node_types("c5.4xlarge/c5a.4xlarge:0.42,t2.large"))
    assert p.hasAutoscaledNodeTypes()
    shapes = p.getAutoscaledInstanceShapes()
    # The conftest provisioner sizes a shape by the type name's length.
    assert shapes == {
        Shape(3600, 10 * GIB, 10, 20 * GIB, True): "c5.4xlarge",
        Shape(3600, 11 * GIB, 11, 22 * GIB, True): "c5a.4xlarge",
        Shape(3600, 8 * GIB, 8, 16 * GIB, False): "t2.large",
    }
    # A bid makes the type preemptible; no bid, on-demand.
    assert {name: s.preemptible for s, name in shapes.items()} == {
        "c5.4xlarge": True,
        "c5a.4xlarge": True,
        "t2.large": False,
    }
    assert p._spotBidsMap == {frozenset({"c5.4xlarge", "c5a.4xlarge"}): 0.42}
    # The result is a copy: callers cannot corrupt the provisioner's view.
    shapes.clear()
    assert len(p.getAutoscaledInstanceShapes()) == 3


async def test_setting_node_types_again_replaces_them(make_provisioner: Any) -> None:
    p = make_provisioner()
    await p.setAutoscaledNodeTypes(parse_node_types("t2.large:0.1"))
    await p.setAutoscaledNodeTypes(parse_node_types("m5.xlarge"))
    assert list(p.getAutoscaledInstanceShapes().values()) == ["m5.xlarge"]
    assert p._spotBidsMap == {}
    await p.setAutoscaledNodeTypes(parse_node_types(""))
    assert not p.hasAutoscaledNodeTypes()


def test_retry_predicate_is_false_by_default(make_provisioner: Any) -> None:
    p = make_provisioner()
    for error in (RuntimeError("boom"), RetryableError("throttled"), TimeoutError()):
        assert AbstractProvisioner.retryPredicate(error) is False
        assert p.retryPredicate(error) is False


async def test_add_managed_nodes_is_not_supported_by_default(make_provisioner: Any) -> None:
    with pytest.raises(ManagedNodesNotSupportedException, match="MinimalProvisioner"):
        await make_provisioner().addManagedNodes({"t2.large"}, 0, 5, False)


# -- Node ---------------------------------------------------------------------


def node(**kwargs: Any) -> Node:
    args: dict[str, Any] = {
        "publicIP": "203.0.113.7",
        "privateIP": "10.0.0.7",
        "name": "i-0abc",
        "launchTime": "2026-11-25T06:00:00Z",
        "nodeType": "t2.large",
        "preemptible": False,
    }
    args.update(kwargs)
    return Node(**args)


@pytest.mark.parametrize(
    "launch_time",
    [
        "2026-11-25T06:00:00Z",
        "2026-11-25T06:00:00+00:00",
        "2026-11-25T07:00:00+01:00",
        "2026-11-25T06:00:00.000Z",
        dt.datetime(2026, 11, 25, 6, 0),  # naive means UTC
        dt.datetime(2026, 11, 25, 6, 0, tzinfo=dt.UTC),
        dt.datetime(2026, 11, 25, 1, 0, tzinfo=dt.timezone(dt.timedelta(hours=-5))),
    ],
)
def test_node_launch_time_is_an_aware_datetime(launch_time: Any) -> None:
    launched = node(launchTime=launch_time).launchTime
    assert launched.tzinfo is not None
    assert launched == dt.datetime(2026, 11, 25, 6, 0, tzinfo=dt.UTC)


def test_node_launch_time_rejects_garbage() -> None:
    with pytest.raises(ValueError):
        node(launchTime="yesterday")


def test_node_effective_ip() -> None:
    assert node().effectiveIP == "203.0.113.7"
    assert node(use_private_ip=True).effectiveIP == "10.0.0.7"
    assert node(publicIP=None).effectiveIP == "10.0.0.7"
    assert str(node()) == "i-0abc at 203.0.113.7"


def test_node_fields() -> None:
    n = node(preemptible=True, tags={"shoal:role": "worker"}, zone="us-west-2a", joined=True)
    assert (n.name, n.nodeType, n.preemptible, n.zone, n.joined) == (
        "i-0abc",
        "t2.large",
        True,
        "us-west-2a",
        True,
    )
    assert n.tags == {"shoal:role": "worker"}
    assert node().tags == {} and node().joined is None
    assert "i-0abc" in repr(n) and "t2.large" in repr(n)


def test_node_equality_is_by_name() -> None:
    a = node()
    b = node(publicIP=None, privateIP="10.9.9.9", nodeType="m5.large", preemptible=True)
    assert a == b and hash(a) == hash(b)
    assert len({a, b}) == 1
    assert a != node(name="i-0def")
    assert a != "i-0abc"


# -- addNodes and terminateNodes, written once over the primitives ---------------------------


def od(instance_type: str, zone: str = "z1") -> Offering:
    return Offering(instance_type, zone, CapacityType.ON_DEMAND)


@pytest.fixture
def cloud(make_provisioner: Any) -> Any:
    p = make_provisioner(clusterName="demo", zones=["z1", "z2"])
    p.events = []
    p.subscribe(p.events.append)
    return p


async def test_alternatives_in_the_callers_order_each_in_every_zone(cloud: Any) -> None:
    assert cloud.zones == ("z1", "z2")
    cloud.capacity.update({("m5.xlarge", "z1"): 0, ("m5.xlarge", "z2"): 0})
    assert await cloud.addNodes(["m5.xlarge", "c5.xlarge"], 2, False, requestId="r") == 2
    tried = [r.offering for r in cloud.launches]
    assert tried == [od("m5.xlarge", "z1"), od("m5.xlarge", "z2"), od("c5.xlarge", "z1")]
    assert {n.nodeType for n in await cloud.getProvisionedWorkers()} == {"c5.xlarge"}
    # a set keeps the seed's meaning, any of these, tried in a fixed (sorted) order
    cloud.launches.clear()
    await cloud.addNodes({"m5.xlarge", "c5.xlarge"}, 1, False)
    assert cloud.launches[0].offering == od("c5.xlarge", "z1")


async def test_a_capacity_error_falls_back_to_the_next_zone_in_the_same_call(cloud: Any) -> None:
    cloud.capacity[("c5.xlarge", "z1")] = 0
    assert await cloud.addNodes(["c5.xlarge"], 3, False, requestId="r") == 3
    failed, launched = cloud.events
    assert failed.offering == od("c5.xlarge", "z1") and failed.capacity_error
    assert not failed.uncertain and failed.ids == ()
    assert launched.offering == od("c5.xlarge", "z2") and len(launched.ids) == 3
    assert {e.request_id for e in cloud.events} == {"r"}
    assert all(n.zone == "z2" for n in await cloud.getProvisionedWorkers())


async def test_a_partial_fill_takes_the_rest_from_the_next_offering(cloud: Any) -> None:
    cloud.capacity[("c5.xlarge", "z1")] = 2
    assert await cloud.addNodes(["c5.xlarge"], 5, False) == 5
    assert [(r.offering.zone, r.count) for r in cloud.launches] == [("z1", 5), ("z2", 3)]
    assert [len(e.ids) for e in cloud.events] == [2, 3]


async def test_excluded_offerings_are_not_asked(cloud: Any) -> None:
    await cloud.addNodes(["c5.xlarge", "m5.xlarge"], 1, False, exclude={od("c5.xlarge", "z1")})
    assert [r.offering for r in cloud.launches] == [od("c5.xlarge", "z2")]


async def test_a_first_offering_is_tried_first_even_if_excluded(cloud: Any) -> None:
    first = od("c5.xlarge", "z2")
    await cloud.addNodes(["c5.xlarge"], 1, False, exclude={first}, first=first)
    assert [r.offering for r in cloud.launches] == [first]


async def test_a_first_offering_no_longer_among_the_types_offerings_is_ignored(
    cloud: Any, caplog: pytest.LogCaptureFixture
) -> None:
    """A replayed resume saved the offering it chose; the config changed since (a zone or an
    instance type removed): that offering is not launched."""
    for gone in (
        od("c5.xlarge", "z9"),
        od("r5.large", "z1"),
        Offering("c5.xlarge", "z1", CapacityType.SPOT),
    ):
        cloud.launches.clear()
        assert await cloud.addNodes(["c5.xlarge"], 1, False, first=gone) == 1
        assert [r.offering for r in cloud.launches] == [od("c5.xlarge", "z1")]
    assert "event=launch_first_ignored" in caplog.text


async def test_each_offering_is_announced_before_it_is_tried(cloud: Any) -> None:
    """A caller saves each offering and its client token before it is tried (a power-save
    request's replay must start at the last offering that may have launched)."""
    cloud.capacity[("c5.xlarge", "z1")] = 0
    seen: list[tuple[Offering, str, int]] = []

    async def before(offering: Offering, token: str) -> None:
        seen.append((offering, token, len(cloud.launches)))

    assert await cloud.addNodes(["c5.xlarge"], 1, False, requestId="r", before_offering=before)
    tokens = [r.client_token for r in cloud.launches]
    assert seen == [
        (od("c5.xlarge", "z1"), tokens[0], 0),
        (od("c5.xlarge", "z2"), tokens[1], 1),
    ]
    assert tokens == [base.client_token("r", o) for o, _, _ in seen]

    async def refuse(offering: Offering, token: str) -> None:
        raise OSError("disk full")

    cloud.launches.clear()
    with pytest.raises(OSError):
        await cloud.addNodes(["c5.xlarge"], 1, False, before_offering=refuse)
    assert cloud.launches == []  # nothing tried that was not saved


async def test_no_capacity_anywhere_is_one_error_naming_every_offering(cloud: Any) -> None:
    cloud.capacity.update({("c5.xlarge", "z1"): 0, ("c5.xlarge", "z2"): 0})
    with pytest.raises(CapacityError) as info:
        await cloud.addNodes(["c5.xlarge"], 1, False)
    assert not isinstance(info.value, QuotaError)
    assert info.value.offerings == (od("c5.xlarge", "z1"), od("c5.xlarge", "z2"))
    assert [e.capacity_error for e in cloud.events] == [True, True]
    # every offering at an account limit: a QuotaError
    for zone in ("z1", "z2"):
        cloud.capacity[("c5.xlarge", zone)] = 5
        cloud.errors[od("c5.xlarge", zone)] = QuotaError(
            "limit", offerings=(od("c5.xlarge", zone),), code="InstanceLimitExceeded"
        )
    with pytest.raises(QuotaError) as quota_info:
        await cloud.addNodes(["c5.xlarge"], 1, False)
    assert quota_info.value.code == "InstanceLimitExceeded"
    assert quota_info.value.offerings == (od("c5.xlarge", "z1"), od("c5.xlarge", "z2"))


async def test_a_transient_error_is_raised_and_a_retry_launches_nothing_twice(cloud: Any) -> None:
    cloud.capacity[("c5.xlarge", "z1")] = 2
    cloud.errors[od("c5.xlarge", "z2")] = RetryableError("lost", code="InternalError")
    with pytest.raises(RetryableError):
        await cloud.addNodes(["c5.xlarge"], 4, False, requestId="r")
    assert [e.uncertain for e in cloud.events] == [False, True]
    assert len(cloud.instances) == 2
    # the retry (same requestId) gets the first offering's instances back by its token
    assert await cloud.addNodes(["c5.xlarge"], 4, False, requestId="r") == 4
    assert len(cloud.instances) == 4
    tokens = [r.client_token for r in cloud.launches]
    assert tokens[0] == tokens[2] and tokens[1] == tokens[3] and tokens[0] != tokens[1]
    assert all(n.tags[TAG_REQUEST_ID] == "r" for n in cloud.instances.values())
    assert all(n.tags[TAG_AUTOSCALED] == "true" for n in cloud.instances.values())


async def test_an_unknown_type_fails_before_anything_launches(cloud: Any) -> None:
    with pytest.raises(ProviderError, match=r"no\.such"):
        await cloud.addNodes(["c5.xlarge", "no.such"], 1, False)
    assert cloud.launches == []
    assert await cloud.addNodes(["c5.xlarge"], 0, False) == 0


async def test_terminate_in_batches_gone_ids_count_failures_are_all_named(cloud: Any) -> None:
    await cloud.addNodes(["c5.xlarge"], 5, False)
    ids = sorted(cloud.instances)
    cloud.termination_errors[ids[1]] = RetryableError("throttled", code="RequestLimitExceeded")
    with pytest.raises(TerminationError) as info:
        await cloud.terminateNodes([*ids, "i-gone", ids[0]], requestId="t")
    assert cloud.terminations == [ids[:3], [*ids[3:], "i-gone"]]  # batches of 3, deduplicated
    assert set(info.value.failed) == {ids[1]}
    assert info.value.retryable and AbstractProvisioner.retryPredicate(info.value) is False
    results = [e for e in cloud.events if isinstance(e, TerminationResult)]
    assert [r.request_id for r in results] == ["t", "t"]
    assert {i for r in results for i in r.done} == {*ids[:1], *ids[2:], "i-gone"}
    assert results[1].already_gone == ("i-gone",)
    assert set(cloud.instances) == {ids[1]}
    del cloud.termination_errors[ids[1]]
    await cloud.terminateNodes(ids)  # again: the rest are gone, which is fine
    assert cloud.instances == {}


async def test_prices_are_part_of_the_catalogue_and_may_be_unknown(cloud: Any) -> None:
    assert cloud.instancePrice("c5.xlarge") is None  # never looked up
    await cloud.catalogue(["c5.xlarge"])
    assert cloud.instancePrice("c5.xlarge") == pytest.approx(0.09)
    assert cloud.instancePrice("c5.xlarge", preemptible=True) is None  # no spot price known
    cloud.update_catalogue(
        {"c5.xlarge": InstanceTypeInfo("c5.xlarge", 4, 8 * GIB, 0, 0.17, {"z2": 0.05})}
    )
    assert cloud.instancePrice("c5.xlarge", preemptible=True) == 0.05  # first zone with a price
    with pytest.raises(ProviderError, match=r"no\.such"):
        await cloud.catalogue(["no.such"])


def test_instance_type_tag_keeps_its_key() -> None:
    # Running instances carry this key: the constant was renamed for what it holds (the
    # instance type), its value must not change or they would lose their type on a restart.
    assert base.TAG_INSTANCE_TYPE == "shoal:node-type"
    assert "TAG_INSTANCE_TYPE" in base.__all__


# The seed's AbstractProvisioner methods (Toil's provider interface), with their parameters
# in order; shoal may add keyword-only parameters or **options after them.
SEED_METHODS = {
    "supportedClusterTypes": [],
    "createClusterSettings": [],
    "readClusterSettings": [],
    "setAutoscaledNodeTypes": ["nodeTypes"],
    "hasAutoscaledNodeTypes": [],
    "getAutoscaledInstanceShapes": [],
    "launchCluster": ["args", "kwargs"],
    "addNodes": ["nodeTypes", "numNodes", "preemptible", "spotBid"],
    "addManagedNodes": ["nodeTypes", "minNodes", "maxNodes", "preemptible", "spotBid"],
    "terminateNodes": ["nodes"],
    "getLeader": [],
    "getProvisionedWorkers": ["instance_type", "preemptible"],
    "getNodeShape": ["instance_type", "preemptible"],
    "destroyCluster": [],
    "getBaseInstanceConfiguration": [],
    "addVolumesService": ["config"],
    "addNodeExporterService": ["config"],
    "toil_service_env_options": [],
    "add_toil_service": ["config", "role", "keyPath", "preemptible"],
    "getKubernetesValues": ["architecture"],
    "addKubernetesServices": ["config", "architecture"],
    "getKubernetesAutoscalerSetupCommands": ["values"],
    "getKubernetesCloudProvider": [],
    "addKubernetesLeader": ["config"],
    "addKubernetesWorker": ["config", "authVars", "preemptible"],
}


@pytest.mark.parametrize("name", sorted(SEED_METHODS))
def test_the_seed_surface_is_whole(name: str) -> None:
    params = list(inspect.signature(getattr(AbstractProvisioner, name)).parameters.values())
    positional = [p.name for p in params[1:] if p.kind is not p.KEYWORD_ONLY]
    assert positional[: len(SEED_METHODS[name])] == SEED_METHODS[name]
    assert not positional[len(SEED_METHODS[name]) :] or positional[-1] in ("options", "kwargs")


@pytest.mark.parametrize(
    "cls",
    [
        AbstractProvisioner,
        pytest.param("shoal.providers.aws:AWSProvisioner", id="aws"),
        pytest.param("shoal.providers.local:LocalProvisioner", id="local"),
        pytest.param("shoal.providers.simulated:SimulatedProvisioner", id="simulated"),
    ],
)
def test_every_provisioner_is_what_the_daemon_takes(cls: Any) -> None:
    """The daemon takes a ``CataloguedProvisioner`` (``providers.node_provider``): each
    provisioner has every member, and its methods accept the calls the protocols describe
    (``addNodes`` with the four positionals the executor passes and its keyword options)."""
    from shoal.providers.node_provider import Catalogue, CataloguedProvisioner, Provisioner

    if isinstance(cls, str):
        module, name = cls.split(":")
        cls = getattr(__import__(module, fromlist=[name]), name)
    assert issubclass(cls, CataloguedProvisioner)
    members = [n for p in (Provisioner, Catalogue) for n in vars(p) if not n.startswith("_")]
    assert len(members) == 11
    for member in members:
        wanted = inspect.signature(getattr(CataloguedProvisioner, member))
        got = inspect.signature(getattr(cls, member))
        args = [
            p.name
            for p in wanted.parameters.values()
            if p.kind in (p.POSITIONAL_ONLY, p.POSITIONAL_OR_KEYWORD)
        ]
        keywords = {p.name: None for p in wanted.parameters.values() if p.kind is p.KEYWORD_ONLY}
        if isinstance(inspect.getattr_static(cls, member), staticmethod):
            args = args[1:]  # called on an instance all the same: no self
        got.bind(*args, **keywords)  # raises TypeError where the provisioner cannot be called so
    options = ("requestId", "exclude", "tags", "first", "before_offering", "all_or_nothing")
    inspect.signature(cls.addNodes).bind(
        "self", ["m5.large"], 1, False, None, **dict.fromkeys(options), placement_group=None
    )
