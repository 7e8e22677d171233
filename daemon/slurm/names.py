"""Slurm node names -> shoal node types, from ``slurm.node_types``.

A key is a hostlist (``cloud[1-4]``, ``a1,a2``), an exact node name, or a prefix (``gpu``
matches ``gpu1``, ``gpu12``...). A name listed by a hostlist or given exactly wins over any
prefix; among prefixes the longest wins (``gpu`` and ``gpubig``: ``gpubig3`` is ``gpubig``'s).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from types import MappingProxyType

from shoal.providers.slurm import expand_hostlist

__all__ = ["NodeTypeMap"]


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
