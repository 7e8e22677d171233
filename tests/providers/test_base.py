"""AbstractProvisioner's own bookkeeping, through a minimal concrete subclass (conftest)."""

from __future__ import annotations

import datetime as dt
from typing import Any

import pytest
import shoal.providers.base as base
from shoal.providers.base import AbstractProvisioner, ManagedNodesNotSupportedException, Node
from shoal.providers.errors import RetryableError
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
