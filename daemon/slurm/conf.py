"""slurm.conf lines for the configured node types: ``shoal slurm-conf -c CONFIG``.

Slurm and shoal must agree on what a node offers, or Slurm places jobs the planner thinks do
not fit (or the other way round). So the lines come from the planner's own policy (shapes and
prices from the provider's catalogue, ``service.build_policy``, as the daemon builds it):

- ``CPUs`` is the node's cores; ``RealMemory`` (MiB) is ``scaler.planner.usable_shape``'s
  memory: the instance's less shoal's overhead (``scaler.node_memory_overhead``, else Toil's
  reservation by node size), which is also below what slurmd measures, so the node registers;
- ``Features``: ``shoal``, the type's Slurm name (``names.slurm_name``: ``c5-xlarge``,
  ``r5-large-spot``), its instance type when it has no alternatives, and ``spot`` or
  ``on-demand``;
- ``Weight`` ranks the types by price per hour, cheapest first (Slurm allocates the lowest
  weight first; a type without a price comes last);
- power_save: one ``NodeName`` line per key of the node-name mapping in force
  (``names.node_type_keys``: ``slurm.node_types``, else ``<name>-[1-<max>]`` per type), so
  the names Slurm resumes are the names the hooks map back, checked here name by name; the
  power-saving settings (the hooks, ``SuspendTime`` from ``scaler.unneeded_time``,
  ``ResumeTimeout`` from ``slurm.resume_timeout`` or ``scaler.join_timeout``) and one
  partition of every node;
- external: ``MaxNodeCount`` (the sum of the types' ``max``), a ``NodeSet`` of the feature
  ``shoal`` every dynamic node registers with and its partition; per type, a comment with
  what its nodes offer. Dynamic nodes register with ``type_features`` (``SlurmIntegration
  .features``), so ``--constraint=c5-xlarge`` picks a type in both modes, and with the
  type's ``CPUs``, ``RealMemory`` and ``Weight`` (``dynamic_resources``: the launch tags
  carry them to the worker), so Slurm sees the usable shape and the price order there too.

The output is a fragment for ``Include`` in slurm.conf (or to paste): the cluster's own
settings (``ClusterName``, ``SlurmctldHost``, auth, paths) stay the operator's.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import TYPE_CHECKING

from shoal.daemon.slurm.constants import SHOAL_FEATURE
from shoal.daemon.slurm.hook import COMMANDS, DEFAULT_CONFIG
from shoal.daemon.slurm.names import NodeTypeMap, node_type_keys, slurm_name
from shoal.daemon.slurm.parse import expand_hostlist
from shoal.scaler.model import NodeType, Policy
from shoal.scaler.order import idle_weight
from shoal.scaler.planner import usable_shape

if TYPE_CHECKING:
    from shoal.daemon.config import ShoalConfig

__all__ = [
    "DEFAULT_PARTITION",
    "NodeLine",
    "dynamic_resources",
    "node_lines",
    "render",
    "type_features",
    "weights",
]

DEFAULT_PARTITION = "shoal"
MIB = 1 << 20

# Slurm's power saving as shoal's hooks need it (README, "slurm.conf (power_save)")
POWER_SAVE_SETTINGS = {
    "SuspendTimeout": "60",
    "ResumeRate": "0",
    "SuspendRate": "0",
    "ReturnToService": "2",
    "TreeWidth": "65533",
    "PrivateData": "cloud",  # otherwise powered-down cloud nodes are hidden from sinfo
    # enable_configless: shoal's workers fetch this slurm.conf (slurmd --conf-server)
    "SlurmctldParameters": "enable_configless,idle_on_node_suspend,cloud_reg_addrs",
    "CommunicationParameters": "NoAddrCache",  # cloud nodes change address between power-ups
}


def type_features(node_type: NodeType) -> tuple[str, ...]:
    """The features every node of ``node_type`` has: ``shoal``, its Slurm name, and its
    capacity type (``spot`` or ``on-demand``)."""
    return (SHOAL_FEATURE, slurm_name(node_type.name), node_type.capacity_type.value)


def weights(policy: Policy) -> dict[str, int]:
    """Node type -> Weight: 1 for the cheapest price per hour, 2 for the next price, ...;
    types without a price after every priced one."""
    prices = sorted({t.price_per_hour for t in policy.node_types if t.price_per_hour is not None})
    rank = {price: index + 1 for index, price in enumerate(prices)}
    return {
        t.name: rank[t.price_per_hour] if t.price_per_hour is not None else len(prices) + 1
        for t in policy.node_types
    }


@dataclass(frozen=True, slots=True)
class NodeLine:
    """What slurm.conf declares for one node type (``hostlist`` None: dynamic nodes)."""

    node_type: NodeType
    hostlist: str | None
    cpus: int
    real_memory: int  # MiB
    features: tuple[str, ...]
    weight: int

    def render(self) -> str:
        return (
            f"NodeName={self.hostlist} CPUs={self.cpus} RealMemory={self.real_memory} "
            f"Features={','.join(self.features)} Weight={self.weight} State=CLOUD"
        )

    def resources(self) -> str:
        """``CPUs``, ``RealMemory`` and ``Weight``, as ``slurmd -Z --conf`` takes them."""
        return f"CPUs={self.cpus} RealMemory={self.real_memory} Weight={self.weight}"

    def dynamic_conf(self) -> str:
        """What a dynamic node of this type offers, as ``slurmd -Z --conf`` takes it."""
        return f"{self.resources()} Feature={','.join(self.features)}"


def _line(node_type: NodeType, policy: Policy, hostlist: str | None, weight: int) -> NodeLine:
    usable = usable_shape(node_type, policy)
    features = list(type_features(node_type))
    if len(node_type.instance_types) == 1:  # alternatives: the node may be any of them
        features.insert(2, node_type.instance_types[0])
    return NodeLine(
        node_type=node_type,
        hostlist=hostlist,
        cpus=int(usable.cores),
        real_memory=math.floor(usable.memory / MIB),
        features=tuple(features),
        weight=weight,
    )


def _dynamic_weight(rank: int, kept: bool) -> int:
    """A dynamic node's Weight as it registers: its type's rank by price, or with
    ``slurm.node_weights: kept`` the last of that rank (``scaler.order.idle_weight``: the
    weigher sets it lower while the node runs jobs)."""
    return idle_weight(rank) if kept else rank


def dynamic_resources(node_type: NodeType, policy: Policy, *, kept: bool = False) -> str:
    """What a dynamic node of ``node_type`` registers with besides its features (the
    ``TAG_SLURM_RESOURCES`` of its launch): ``NodeLine.resources``, as ``shoal slurm-conf``
    declares the type."""
    weight = _dynamic_weight(weights(policy)[node_type.name], kept)
    return _line(node_type, policy, None, weight).resources()


def node_lines(config: ShoalConfig, policy: Policy) -> list[NodeLine]:
    """One line per node-name key (power_save) or per node type (external), in the policy's
    order. A ValueError names a generated node the hooks would map to another type."""
    by_name = {t.name: t for t in policy.node_types}
    weight = weights(policy)
    if config.slurm is None or config.slurm.mode == "external":
        kept = config.slurm is not None and config.slurm.node_weights == "kept"
        return [
            _line(t, policy, None, _dynamic_weight(weight[t.name], kept)) for t in policy.node_types
        ]
    keys = node_type_keys(config)
    types = NodeTypeMap.from_config(keys)
    lines = []
    for key, configured in keys.items():
        node_type = by_name[config.node_type_of(configured)]
        hostlist = key if "[" in key or "," in key else f"{key}[1-{node_type.max_nodes}]"
        for name in expand_hostlist(hostlist):
            mapped = types.node_type(name)
            if mapped is None or config.node_type_of(mapped) != node_type.name:
                raise ValueError(
                    f"node {name} of {hostlist} would be launched as {mapped!r}, not "
                    f"{node_type.name!r}: make slurm.node_types' keys hostlists"
                )
        lines.append(_line(node_type, policy, hostlist, weight[node_type.name]))
    return sorted(lines, key=lambda line: list(by_name).index(line.node_type.name))


def _price(node_type: NodeType) -> str:
    price = node_type.price_per_hour
    return "no price" if price is None else f"{price:.4f} USD/h"


def render(
    config: ShoalConfig,
    policy: Policy,
    *,
    bin_dir: str,
    partition: str = DEFAULT_PARTITION,
    source: str | None = None,
) -> str:
    """The slurm.conf fragment for ``config`` (see the module docstring). ``bin_dir`` holds
    the hook programs (``shoal-slurm-resume``...); ``source`` is the config file's path."""
    mode = config.slurm.mode if config.slurm is not None else "external"
    lines = node_lines(config, policy)
    out = [
        f"# shoal slurm-conf: cluster {config.cluster_name}, slurm.mode {mode}"
        + (f", from {source}" if source else ""),
        "# Generated: regenerate after changing node_types or the scaler's overheads.",
        "# RealMemory is what shoal's planner packs (the instance's memory less its overhead);",
        "# Weight orders the node types by price, cheapest first.",
    ]
    if mode == "power_save":
        if source is not None and source != DEFAULT_CONFIG:
            out.append(f"# The hooks read {DEFAULT_CONFIG}: install this config there, or point")
            out.append("# the programs at wrappers running `shoal slurm-resume -c CONFIG` etc.")
        settings = ("ResumeProgram", "SuspendProgram", "ResumeFailProgram")
        for setting, command in zip(settings, COMMANDS, strict=True):
            out.append(f"{setting}={bin_dir.rstrip('/')}/shoal-{command}")
        slurm = config.slurm
        resume = slurm.resume_timeout if slurm and slurm.resume_timeout else None
        out.append(f"SuspendTime={max(1, math.ceil(config.scaler.unneeded_time))}")
        out.append(f"ResumeTimeout={math.ceil(resume or config.scaler.join_timeout)}")
        out.extend(f"{key}={value}" for key, value in POWER_SAVE_SETTINGS.items())
        for line in lines:
            out.append(f"# {line.node_type.name}: {_price(line.node_type)}")
            out.append(line.render())
        nodes = ",".join(line.hostlist for line in lines if line.hostlist)
        out.append(f"PartitionName={partition} Nodes={nodes} Default=YES MaxTime=INFINITE State=UP")
        return "\n".join(out) + "\n"
    total = sum(t.max_nodes for t in policy.node_types)
    out.append("# shoal's workers fetch slurm.conf (slurmd --conf-server): SlurmctldParameters")
    out.append("# must hold enable_configless.")
    out.append(f"MaxNodeCount={total}")
    for line in lines:
        t = line.node_type
        out.append(f"# {t.name}: {_price(t)}, up to {t.max_nodes} nodes: {line.dynamic_conf()}")
    out.append(f"NodeSet={partition}-nodes Feature={SHOAL_FEATURE}")
    out.append(
        f"PartitionName={partition} Nodes={partition}-nodes Default=YES MaxTime=INFINITE State=UP"
    )
    return "\n".join(out) + "\n"
