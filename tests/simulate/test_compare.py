"""--compare: flags, cross product, overrides validated by the config, the Toil baseline."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
from shoal.daemon.config import ConfigError, load_config
from shoal.daemon.simulate.compare import (
    TOIL_POLICY,
    CompareError,
    apply_override,
    build_variants,
    parse_compare,
    split_values,
)
from toil_oracle import require_toil, run_in_toil

ROOT = Path(__file__).resolve().parents[2]

BASE: dict[str, Any] = {
    "cluster_name": "sim",
    "provider": {"kind": "simulated", "zone": "sim-1a"},
    "node_types": [{"type": "c5.xlarge", "max": 4}, {"type": "r5.large:0.05", "max": 2}],
}

PARSE = [
    pytest.param("scaler.packing=count,cost", ("scaler.packing", ("count", "cost")), id="plain"),
    pytest.param(" scaler.target_time = 30m , 1h", ("scaler.target_time", ("30m", "1h")), id="ws"),
    pytest.param("policy=toil,shoal", ("policy", ("toil", "shoal")), id="policy"),
    pytest.param(
        'node_types="c5.xlarge,r5.large:0.05",c5.xlarge',
        ("node_types", ('"c5.xlarge,r5.large:0.05"', "c5.xlarge")),
        id="quoted-comma",
    ),
    pytest.param("node_types[0].max=1,2", ("node_types[0].max", ("1", "2")), id="index"),
]


@pytest.mark.parametrize(("flag", "expected"), PARSE)
def test_parse_compare(flag: str, expected: tuple[str, tuple[str, ...]]) -> None:
    assert parse_compare(flag) == expected


PARSE_ERRORS = [
    pytest.param("scaler.packing", "expected KEY=V1,V2", id="no-equals"),
    pytest.param("=count", "expected KEY=V1,V2", id="no-key"),
    pytest.param("scaler.packing=count,,cost", "empty value", id="empty-value"),
    pytest.param("scaler.packing=count,count", "given twice", id="repeated-value"),
    pytest.param("policy=toil,karpenter", "unknown policy 'karpenter'", id="policy"),
    pytest.param("scaler..packing=count", "empty part", id="empty-part"),
    pytest.param("scaler.pack-ing=count", "not a dotted config path", id="bad-path"),
    pytest.param('node_types="a,b', "unbalanced", id="unbalanced"),
]


@pytest.mark.parametrize(("flag", "message"), PARSE_ERRORS)
def test_parse_compare_errors_name_the_flag(flag: str, message: str) -> None:
    with pytest.raises(CompareError) as caught:
        parse_compare(flag)
    assert message in str(caught.value)
    assert repr(flag) in str(caught.value)


def test_split_values_keeps_quoted_and_bracketed_commas() -> None:
    assert split_values("a, 'b,c' ,[d, e],{f: 1, g: 2}") == ["a", "'b,c'", "[d, e]", "{f: 1, g: 2}"]


def test_cross_product_in_flag_order_with_typed_values() -> None:
    variants = build_variants(
        BASE, ["scaler.packing=count,cost", "scaler.target_time=30m,1h,1.5h", "log_level=debug"]
    )
    assert [v.name for v in variants] == [
        f"scaler.packing={p}, scaler.target_time={t}, log_level=debug"
        for p in ("count", "cost")
        for t in ("30m", "1h", "1.5h")
    ]
    got = [(v.config.scaler.packing, v.config.scaler.target_time) for v in variants]
    assert got == [(p, t) for p in ("count", "cost") for t in (1800.0, 3600.0, 5400.0)]
    assert {v.config.log_level for v in variants} == {"DEBUG"}
    assert variants[0].overrides == (
        ("scaler.packing", "count"),
        ("scaler.target_time", "30m"),
        ("log_level", "debug"),
    )


def test_no_flags_is_the_config_itself() -> None:
    config = load_config(ROOT / "config.example.yaml")
    (only,) = build_variants(config)
    assert (only.name, only.overrides, only.config) == ("config", (), config)


def test_a_loaded_config_keeps_what_the_file_said() -> None:
    config = load_config(ROOT / "config.example.yaml")
    (variant,) = build_variants(config, ["scaler.cost_ceiling_per_hour=null"])
    assert variant.config == config
    (variant,) = build_variants(config, ["scaler.cost_ceiling_per_hour=2.5"])
    assert variant.config.scaler.cost_ceiling_per_hour == 2.5
    assert variant.config.scaler.unneeded_time == config.scaler.unneeded_time == 60.0


@pytest.mark.parametrize("key", ["node_types[1].max", "node_types.1.max"])
def test_list_items_by_index(key: str) -> None:
    (variant,) = build_variants(BASE, [f"{key}=7"])
    assert [e.max for e in variant.config.node_types] == [4, 7]
    assert BASE["node_types"][1]["max"] == 2  # the base is not changed


def test_override_creates_missing_sections() -> None:
    assert "scaler" not in BASE
    (variant,) = build_variants(BASE, ["scaler.backoff.initial=2m"])
    assert variant.config.scaler.backoff.initial == 120.0


def test_apply_override_out_of_range_names_the_key() -> None:
    with pytest.raises(CompareError, match=r"node_types\[5\]\.max: node_types.5 is out of range"):
        apply_override(BASE, "node_types[5].max", 1)
    with pytest.raises(CompareError, match="not a mapping"):
        apply_override(BASE, "cluster_name.x", 1)


VARIANT_ERRORS = [
    pytest.param("scaler.target_time=0,1h", "scaler.target_time", "greater than 0", id="zero"),
    pytest.param("scaler.packing=count,cheap", "scaler.packing", "'count' or 'cost'", id="enum"),
    pytest.param("scaler.nope=1", "scaler.nope", "unknown key", id="unknown"),
    pytest.param("scaler.beta_inertia=1.5", "scaler.beta_inertia", "less than 1", id="range"),
    pytest.param("node_types[0].max=-1", "node_types[0].max", "greater than or equal", id="idx"),
]


@pytest.mark.parametrize(("flag", "key", "message"), VARIANT_ERRORS)
def test_invalid_variant_names_the_variant_and_key(flag: str, key: str, message: str) -> None:
    with pytest.raises(ConfigError) as caught:
        build_variants(BASE, [flag])
    assert caught.value.source.startswith("variant ")
    (issue,) = caught.value.errors
    assert issue.path == key
    assert message in issue.expected


def test_a_key_given_twice_is_an_error() -> None:
    with pytest.raises(CompareError, match="more than once"):
        build_variants(BASE, ["scaler.packing=count", "scaler.packing=cost"])


def test_policy_toil_and_shoal() -> None:
    data = apply_override(BASE, "scaler", {"packing": "cost", "target_time": "2h"})
    data = apply_override(data, "scaler.cost_ceiling_per_hour", 5)
    toil, shoal = build_variants(data, ["policy=toil,shoal"])
    assert (toil.name, shoal.name) == ("policy=toil", "policy=shoal")
    s = toil.config.scaler
    assert (s.packing, s.target_time, s.beta_inertia, s.cost_ceiling_per_hour) == (
        "count",
        1800.0,
        0.1,
        None,
    )
    assert (s.interval, s.unneeded_time, s.scale_down_budget) == (60.0, 0.0, 1.0)
    assert toil.config.node_types == shoal.config.node_types  # the same cluster
    assert shoal.config.scaler.packing == "cost"
    assert shoal.config.scaler.cost_ceiling_per_hour == 5


def test_explicit_overrides_apply_after_the_policy() -> None:
    variants = build_variants(BASE, ["policy=toil,shoal", "scaler.target_time=10m"])
    assert [(v.name, v.config.scaler.target_time) for v in variants] == [
        ("policy=toil, scaler.target_time=10m", 600.0),
        ("policy=shoal, scaler.target_time=10m", 600.0),
    ]


TOIL_DEFAULTS_SCRIPT = r"""
import json
from toil.common import Config
c = Config()
json.dump({"targetTime": c.targetTime, "betaInertia": c.betaInertia,
           "scaleInterval": c.scaleInterval,
           "preemptibleCompensation": c.preemptibleCompensation}, __import__("sys").stdout)
"""


@pytest.mark.toil
def test_toil_policy_is_toil_9_6s_defaults() -> None:
    require_toil()
    toil = run_in_toil(TOIL_DEFAULTS_SCRIPT, None)
    assert TOIL_POLICY["scaler.target_time"] == toil["targetTime"]
    assert TOIL_POLICY["scaler.beta_inertia"] == toil["betaInertia"]
    assert TOIL_POLICY["scaler.interval"] == toil["scaleInterval"]
    assert TOIL_POLICY["scaler.preemptible_compensation"] == toil["preemptibleCompensation"]
