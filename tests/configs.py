"""The one builder of test configs: a valid config as a dict, changed by deep-merged overrides.

Every test folder builds its configs here, so a new required key or a renamed one is fixed in
one place. ``config()`` is the smallest valid config (the simulated cloud, one on-demand
c5.xlarge type); a test states only what it needs on top, as keyword sections that merge
into the base (a nested dict merges key by key, ``None`` deletes a key; a provider section
that names its ``kind`` replaces the simulated one whole). ``aws_provider()``
is the provider section for moto's EC2, and ``write()`` puts a config in a YAML file for
the code paths that read one (``shoal run``, ``Service``, ``check-config``).
"""

from __future__ import annotations

import copy
from pathlib import Path
from typing import Any

import yaml

__all__ = ["ZONE", "aws_provider", "changed", "config", "merge", "write"]

ZONE = "us-west-2a"


def merge(base: dict[str, Any], overrides: dict[str, Any]) -> dict[str, Any]:
    """Deep-merge ``overrides`` into a copy of ``base``; a None value deletes the key."""
    out = dict(base)
    for key, value in overrides.items():
        if value is None:
            out.pop(key, None)
        elif isinstance(value, dict) and isinstance(out.get(key), dict):
            out[key] = merge(out[key], value)
        else:
            out[key] = value
    return out


def config(**overrides: Any) -> dict[str, Any]:
    """The smallest valid config, with ``overrides`` merged in (see ``merge``)."""
    base: dict[str, Any] = {
        "cluster_name": "test",
        "provider": {"kind": "simulated", "zone": ZONE},
        "node_types": [{"type": "c5.xlarge", "max": 10}],
    }
    if "kind" in (overrides.get("provider") or {}):
        del base["provider"]
    return merge(base, overrides)


def changed(data: dict[str, Any], **dotted: Any) -> dict[str, Any]:
    """A copy of ``data`` with each dotted key (``"slurm.mode"``) set to its value, which
    replaces what was there (unlike ``merge``, a dict is not merged into the old one); None
    deletes the key."""
    out = copy.deepcopy(data)
    for path, value in dotted.items():
        *parents, last = path.split(".")
        node = out
        for key in parents:
            node = node.setdefault(key, {})
        if value is None:
            node.pop(last, None)
        else:
            node[last] = value
    return out


def aws_provider(url: str | None, **fields: Any) -> dict[str, Any]:
    """The ``provider`` section for EC2 at ``url`` (a moto server), with ``fields`` merged in."""
    base: dict[str, Any] = {
        "kind": "aws",
        "region": "us-east-1",
        "zones": ["us-east-1a"],
        "image_id": "ami-12c6146b",
        "price_refresh": False,
    }
    if url is not None:
        base["endpoint_url"] = url
    if "zone" in fields:  # one zone named instead of the list
        del base["zones"]
    return merge(base, fields)


def write(path: Path, data: dict[str, Any]) -> Path:
    """Write ``data`` as YAML to ``path``; return the path."""
    path.write_text(yaml.safe_dump(data, sort_keys=False))
    return path
