"""Slurm node names -> shoal node types, from ``slurm.node_types``.

A key is a hostlist (``cloud[1-4]``, ``a1,a2``), an exact node name, or a prefix (``gpu``
matches ``gpu1``, ``gpu12``...). A name listed by a hostlist or given exactly wins over any
prefix; among prefixes the longest wins (``gpu`` and ``gpubig``: ``gpubig3`` is ``gpubig``'s).

Without ``slurm.node_types`` the mapping is derived from ``node_types`` (``derived_node_types``):
each entry's nodes are ``<slurm name>-[1-<max>]``, its Slurm name (``slurm_name``) the first
instance type in Slurm's alphabet with ``-spot`` for a spot entry (``r5.large:0.05`` ->
``r5-large-spot``). ``shoal slurm-conf`` (``daemon.slurm.conf``) declares the nodes from the
same mapping (``node_type_keys``), so the names Slurm resumes are the names the hooks map.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from types import MappingProxyType
from typing import TYPE_CHECKING

from shoal.daemon.slurm.parse import expand_hostlist
from shoal.scaler.shape import ordered_instance_types, parse_node_types

if TYPE_CHECKING:
    from shoal.daemon.config import NodeTypeEntry, ShoalConfig

__all__ = ["NodeTypeMap", "derived_node_types", "node_type_keys", "slurm_name"]


@dataclass(frozen=True, slots=True)
class NodeTypeMap:
    """Which node type a Slurm node name is launched as."""

    exact: Mapping[str, str] = field(default_factory=lambda: MappingProxyType({}))
    prefixes: tuple[tuple[str, str], ...] = ()  # longest first

    @classmethod
    def from_config(cls, mapping: Mapping[str, str]) -> NodeTypeMap:
        """From ``{key: node type}``; a ValueError names a malformed hostlist or a name two
        keys claim for different types."""
        exact: dict[str, str] = {}
        prefixes: dict[str, str] = {}
        for key, node_type in mapping.items():
            key = key.strip()
            if "[" in key or "," in key:
                for name in expand_hostlist(key):
                    if exact.get(name, node_type) != node_type:
                        raise ValueError(f"node {name!r} is both {exact[name]!r} and {node_type!r}")
                    exact[name] = node_type
            else:
                prefixes[key] = node_type
        ordered = tuple(sorted(prefixes.items(), key=lambda kv: (-len(kv[0]), kv[0])))
        return cls(MappingProxyType(exact), ordered)

    def node_type(self, name: str) -> str | None:
        """The node type of Slurm node ``name``; None when no key matches."""
        found = self.exact.get(name)
        if found is not None:
            return found
        for prefix, node_type in self.prefixes:
            if name == prefix or name.startswith(prefix):
                return node_type
        return None


def slurm_name(entry_type: str) -> str:
    """A node_types entry's name in Slurm (node names, its feature): the first instance type
    lower-cased, every character other than a-z, 0-9 and '-' as '-', and ``-spot`` for a
    spot entry: ``"c5.xlarge/c5a.xlarge"`` -> ``c5-xlarge``, ``"r5.large:0.05"`` ->
    ``r5-large-spot``."""
    name = re.sub(r"[^a-z0-9-]", "-", ordered_instance_types(entry_type)[0].lower())
    return f"{name}-spot" if parse_node_types(entry_type)[0][1] is not None else name


def derived_node_types(entries: Iterable[NodeTypeEntry]) -> dict[str, str]:
    """``slurm.node_types`` when the config gives none: ``{"<slurm name>-[1-<max>]": type}``
    for every entry with a ``max`` above 0. A ValueError names two entries with one name."""
    out: dict[str, str] = {}
    owner: dict[str, str] = {}
    for entry in entries:
        name = slurm_name(entry.type)
        if name in owner:
            raise ValueError(
                f"node types {owner[name]!r} and {entry.type!r} have one Slurm name {name!r}: "
                "give slurm.node_types"
            )
        owner[name] = entry.type
        if entry.max > 0:
            out[f"{name}-[1-{entry.max}]"] = entry.type
    return out


def node_type_keys(config: ShoalConfig) -> dict[str, str]:
    """The mapping in force: ``slurm.node_types``, else the one derived from ``node_types``."""
    given = config.slurm.node_types if config.slurm is not None else {}
    return dict(given) if given else derived_node_types(config.node_types)
