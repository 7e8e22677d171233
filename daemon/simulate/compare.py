"""``--compare KEY=V1,V2``: the config variants one replay compares.

Each flag names a dotted config path (``scaler.packing``, ``scaler.backoff.initial``,
``node_types[0].max`` or ``node_types.0.max``) and its values, separated by commas. Each
value is read as a YAML scalar, as in the config file (``30m``, ``0.5``, ``null``,
``true``); a value holding a comma is quoted or bracketed (``node_types="a,b:0.05",c``).
Several flags give their cross product, in the order given (the first flag varies
slowest). Every variant is the config with its overrides applied, validated by
``daemon.config.parse_config``: an error names the variant and the key.

``policy`` is a special key: ``policy=toil`` is Toil 9.6's autoscaling policy on the same
cluster (``TOIL_POLICY``: count packing, Toil's defaults for the knobs it has, none of
shoal's own features), ``policy=shoal`` the config as given. The policy is applied first,
then the variant's other overrides, so ``policy=toil,shoal`` x ``scaler.target_time=30m``
runs both policies with a 30-minute target.
"""

from __future__ import annotations

import copy
import itertools
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import yaml
from shoal.daemon.config import ShoalConfig, parse_config

__all__ = [
    "POLICY_KEY",
    "TOIL_POLICY",
    "CompareError",
    "Variant",
    "apply_override",
    "build_variants",
    "parse_compare",
    "split_values",
]

POLICY_KEY = "policy"
POLICIES = ("toil", "shoal")

TOIL_POLICY: Mapping[str, Any] = {
    # Toil 9.6's defaults (toil/options/common.py; tests check them against Toil itself).
    "scaler.target_time": 1800.0,  # --targetTime 1800
    "scaler.beta_inertia": 0.1,  # --betaInertia 0.1
    "scaler.interval": 60.0,  # --scaleInterval 60
    "scaler.preemptible_compensation": 0.0,  # --preemptibleCompensation 0.0
    # Toil bin-packs each job onto the first node type that fits (shoal's "count").
    "scaler.packing": "count",
    # Toil has no cost ceiling.
    "scaler.cost_ceiling_per_hour": None,
    # Toil removes surplus nodes as soon as its estimate drops (no unneeded period) and
    # all of them in one go (no budget); busy ones are drained first.
    "scaler.unneeded_time": 0.0,
    "scaler.scale_down_budget": 1.0,
}
"""What ``policy=toil`` sets. Node types, their limits, overhead, timeouts and the
provider stay as configured: the same cluster, Toil's way of scaling it."""

_PART = re.compile(r"([A-Za-z_][A-Za-z0-9_]*)|\[(\d+)\]|(\d+)")


class CompareError(ValueError):
    """A ``--compare`` flag that cannot be used; the message names the flag."""


@dataclass(frozen=True, slots=True, eq=False)
class Variant:
    """One config to replay: ``name`` is its overrides as written (``"config"`` when none)."""

    name: str
    overrides: tuple[tuple[str, str], ...]  # (key, value as written), in flag order
    config: ShoalConfig


def split_values(text: str) -> list[str]:
    """Split at commas outside quotes and brackets: ``'a,"b,c",[d,e]'`` -> 3 values."""
    values: list[str] = []
    depth = 0
    quote = ""
    current: list[str] = []
    for char in text:
        if quote:
            if char == quote:
                quote = ""
        elif char in "\"'":
            quote = char
        elif char in "[{":
            depth += 1
        elif char in "]}":
            depth -= 1
        elif char == "," and depth == 0:
            values.append("".join(current).strip())
            current = []
            continue
        current.append(char)
    if quote or depth:
        raise CompareError(f"unbalanced quotes or brackets in {text!r}")
    values.append("".join(current).strip())
    return values


def _path(key: str) -> list[str | int]:
    parts: list[str | int] = []
    for piece in key.split("."):
        pos = 0
        while pos < len(piece):
            match = _PART.match(piece, pos)
            if not match:
                raise CompareError(
                    f"{key!r} is not a dotted config path (e.g. scaler.target_time, "
                    "node_types[0].max)"
                )
            name, index, bare = match.groups()
            parts.append(name if name is not None else int(index or bare))
            pos = match.end()
        if not piece:
            raise CompareError(f"{key!r} has an empty part")
    return parts


def parse_compare(flag: str) -> tuple[str, tuple[str, ...]]:
    """``"scaler.packing=count,cost"`` -> ``("scaler.packing", ("count", "cost"))``."""
    key, sep, rest = flag.partition("=")
    key = key.strip()
    if not sep or not key:
        raise CompareError(
            f"--compare {flag!r}: expected KEY=V1,V2 (e.g. scaler.packing=count,cost)"
        )
    try:
        values = tuple(split_values(rest))
        if key != POLICY_KEY:
            _path(key)
    except CompareError as exc:
        raise CompareError(f"--compare {flag!r}: {exc}") from None
    if any(not v for v in values):
        raise CompareError(f"--compare {flag!r}: empty value; expected KEY=V1,V2")
    if len(set(values)) != len(values):
        raise CompareError(f"--compare {flag!r}: a value is given twice")
    if key == POLICY_KEY:
        unknown = [v for v in values if v not in POLICIES]
        if unknown:
            raise CompareError(
                f"--compare {flag!r}: unknown policy {unknown[0]!r}; expected toil or shoal"
            )
    return key, values


def _thaw(value: Any) -> Any:
    """A plain, mutable copy: tuples become lists, mappings dicts."""
    if isinstance(value, Mapping):
        return {k: _thaw(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_thaw(v) for v in value]
    return copy.copy(value)


def apply_override(data: Mapping[str, Any], key: str, value: Any) -> dict[str, Any]:
    """A copy of ``data`` with the dotted ``key`` set to ``value`` (missing mappings are
    created; a list index must exist). Raises ``CompareError`` naming the key."""
    out = _thaw(data)
    parts = _path(key)
    node: Any = out
    for depth, part in enumerate(parts):
        last = depth == len(parts) - 1
        where = ".".join(str(p) for p in parts[: depth + 1])
        if isinstance(part, int):
            if not isinstance(node, list) or part >= len(node):
                size = len(node) if isinstance(node, list) else 0
                raise CompareError(f"{key}: {where} is out of range (the list has {size} items)")
        elif not isinstance(node, dict):
            raise CompareError(f"{key}: {where} is inside a value that is not a mapping")
        if last:
            node[part] = value
        else:
            child = node[part] if isinstance(part, int) else node.get(part)
            if child is None:
                child = {} if isinstance(parts[depth + 1], str) else []
                node[part] = child
            node = child
    return out


def _scalar(text: str) -> Any:
    try:
        return yaml.safe_load(text)
    except yaml.YAMLError:
        return text


def _base_data(config: ShoalConfig | Mapping[str, Any]) -> dict[str, Any]:
    if isinstance(config, ShoalConfig):
        return _thaw(config.model_dump(exclude_unset=True))
    return _thaw(config)


def build_variants(
    config: ShoalConfig | Mapping[str, Any],
    flags: Sequence[str | tuple[str, tuple[str, ...]]] = (),
) -> tuple[Variant, ...]:
    """The variants for ``--compare`` ``flags`` over ``config`` (a validated config or its
    raw mapping). A flag is its text or ``parse_compare``'s result (as ``args.compare``
    holds). No flags: one variant, the config itself, named ``"config"``.

    Raises ``CompareError`` for a malformed or repeated flag, ``ConfigError`` (source:
    ``variant <name>``, issues naming each key) for a variant that does not validate."""
    parsed = [parse_compare(flag) if isinstance(flag, str) else flag for flag in flags]
    keys = [key for key, _ in parsed]
    for key in keys:
        if keys.count(key) > 1:
            raise CompareError(f"--compare {key}: given more than once; list all values in one")
    base = _base_data(config)
    variants: list[Variant] = []
    for combo in itertools.product(*(values for _, values in parsed)):
        overrides = tuple(zip(keys, combo, strict=True))
        name = ", ".join(f"{k}={v}" for k, v in overrides) or "config"
        data = base
        policy = dict(overrides).get(POLICY_KEY)
        if policy == "toil":
            for key, value in TOIL_POLICY.items():
                data = apply_override(data, key, value)
        for key, text in overrides:
            if key != POLICY_KEY:
                data = apply_override(data, key, _scalar(text))
        source = f"variant {name}"
        if isinstance(config, ShoalConfig) and not overrides:
            variants.append(Variant(name, overrides, config))
            continue
        variants.append(Variant(name, overrides, parse_config(data, source)))
    return tuple(variants)
