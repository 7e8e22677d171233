"""Config errors are one line each, `key: message` (issue 20 item 7).

Unknown keys name their section and the closest valid key at every level; errors across
fields name those fields and never dump a section (pydantic's input, a whole section or the
whole config, was printed before). The names a config gives are checked in
test_check_config.py.
"""

from __future__ import annotations

import copy
from pathlib import Path
from typing import Any

import pytest
import yaml
from shoal.daemon.config import ConfigError, parse_config

ROOT = Path(__file__).resolve().parents[2]
EXAMPLE = ROOT / "config.example.yaml"


def example() -> dict[str, Any]:
    return yaml.safe_load(EXAMPLE.read_text())


AWS = {"kind": "aws", "region": "us-west-2", "zone": "us-west-2a", "image_id": "ami-0123abcd"}
LOCAL_TYPES = {"small": {"cores": 2, "memory": "1GiB"}, "big": {"cores": 8, "memory": "8GiB"}}


def aws(**provider: Any) -> dict[str, Any]:
    """The example with an AWS provider (``provider`` replaces or adds keys)."""
    return {**example(), "provider": {**AWS, **provider}}


def local(node_types: list[str], **provider: Any) -> dict[str, Any]:
    """The example with a local provider of types small and big, and ``node_types``."""
    section = {"kind": "local", "state_dir": "/srv/local", "instance_types": LOCAL_TYPES}
    node = [{"type": name} for name in node_types]
    return {**example(), "provider": {**section, **provider}, "node_types": node}


def errors(data: dict[str, Any]) -> list[str]:
    with pytest.raises(ConfigError) as info:
        parse_config(data)
    return [str(e) for e in info.value.errors]


def put(data: dict[str, Any], dotted: str, value: Any) -> dict[str, Any]:
    data = copy.deepcopy(data)
    *parents, last = dotted.split(".")
    at: Any = data
    for part in parents:
        at = at[int(part)] if isinstance(at, list) else at.setdefault(part, {})
    at[last] = value
    return data


# --- unknown keys -------------------------------------------------------------------------

# (id, config, the unknown key's path, the issue's words)
UNKNOWN_KEYS = [
    (
        "top",
        put(example(), "node_type", "c5.xlarge"),
        "node_type",
        "at the top level; did you mean 'node_types'?",
    ),
    (
        "scaler",
        put(example(), "scaler.intervall", "5s"),
        "scaler.intervall",
        "in scaler; did you mean 'interval'?",
    ),
    (
        "nested",
        put(example(), "scaler.backoff.inital", "1m"),
        "scaler.backoff.inital",
        "in scaler.backoff; did you mean 'initial'?",
    ),
    (
        "list-entry",
        put(example(), "node_types.0.mx", 3),
        "node_types[0].mx",
        "in node_types[0]; did you mean 'max'?",
    ),
    (
        "provider-kind",
        put(example(), "provider.boot_dealy", "5s"),
        "provider.boot_dealy",
        "for provider kind 'simulated'; did you mean 'boot_delay'?",
    ),
    (
        "aws",
        aws(regoin="us-east-1"),
        "provider.regoin",
        "for provider kind 'aws'; did you mean 'region'?",
    ),
    (
        "mapping-value",
        local(["small"], instance_types={"small": {"cores": 2, "memory": "1GiB", "prize": 1}}),
        "provider.instance_types.small.prize",
        "in provider.instance_types.small; did you mean 'price'?",
    ),
    (
        "demand",
        put(example(), "demand.slrum", True),
        "demand.slrum",
        "in demand; did you mean 'slurm'?",
    ),
    (
        "no-match",
        put(example(), "scaler.colour", "blue"),
        "scaler.colour",
        "unknown key in scaler; remove it",
    ),
]


@pytest.mark.parametrize(
    ("data", "path", "words"), [pytest.param(*c[1:], id=c[0]) for c in UNKNOWN_KEYS]
)
def test_unknown_key_names_its_section_and_the_closest_key(
    data: dict[str, Any], path: str, words: str
) -> None:
    with pytest.raises(ConfigError) as info:
        parse_config(data)
    (issue,) = info.value.errors
    assert issue.path == path
    assert "unknown key" in issue.expected and issue.expected.endswith(words), issue


def test_unknown_section_is_not_dumped() -> None:
    (text,) = errors(put(example(), "scalr", {"interval": "5s", "debounce": "1s"}))
    assert text == "scalr: unknown key at the top level; did you mean 'scaler'?"


# --- errors across fields -----------------------------------------------------------------

# (id, config, the issue's path: the fields involved, and nothing of the input)
ACROSS_FIELDS = [
    ("min-max", put(example(), "node_types.0.min", 99), "node_types[0].min, node_types[0].max"),
    (
        "backoff",
        put(example(), "scaler.backoff", {"initial": "1h", "max": "1m"}),
        "scaler.backoff.initial, scaler.backoff.max",
    ),
    (
        "retry",
        put(example(), "scaler.retry", {"initial": "1h", "max": "1m"}),
        "scaler.retry.initial, scaler.retry.max",
    ),
    ("listen", put(example(), "api.listen", "0.0.0.0:8089"), "api.listen, api.token_file"),
    ("slurm-without-demand", put(example(), "slurm", {"mode": "external"}), "slurm, demand.slurm"),
    (
        "demand-without-slurm",
        put(example(), "demand", {"slurm": True, "api": False}),
        "demand.slurm, slurm",
    ),
    (
        "aws-image",
        aws(image_name="debian-12", image_owner="136693071363"),
        "provider.image_id, provider.image_name, provider.image_owner",
    ),
    ("aws-no-image", aws(image_id=None, image_name="debian-12"), "provider.image_name"),
    ("local-capacity", local(["small"], capacity={"huge": 1}), "provider.capacity"),
    (
        "slurm-state-file",
        put(put(example(), "demand", {"slurm": True, "api": False}), "slurm", {"state_file": "/x"}),
        "slurm.state_file",
    ),
    (
        "duplicate-type",
        put(example(), "node_types.1.type", "c5.xlarge"),
        "node_types[0].type, node_types[1].type",
    ),
]


@pytest.mark.parametrize(("data", "path"), [pytest.param(*c[1:], id=c[0]) for c in ACROSS_FIELDS])
def test_an_error_across_fields_names_them_and_dumps_nothing(
    data: dict[str, Any], path: str
) -> None:
    """Before: ``(top level): got {'cluster_name': ..., <the whole config>}; ...`` or
    ``node_types[0]: got {'type': ..., 'min': ..., 'max': ...}; ...``."""
    (text,) = errors(data)
    assert text.partition(": ")[0] == path, text
    assert "{" not in text, text
    if ", " in path:  # several fields: no one value to quote
        assert not text.partition(": ")[2].startswith("got"), text


def test_long_lists_and_mappings_are_never_quoted() -> None:
    data = put(example(), "drain.command", [{"argv": "x"}])
    (text,) = errors(data)
    assert text.startswith("drain.command") and "{" not in text, text
    data = put(
        example(),
        "node_types",
        [{"type": f"c5.{i}xlarge", "max": 1, "min": 0, "bogus": i} for i in range(3)],
    )
    for text in errors(data):
        assert "{" not in text, text


def test_a_file_that_is_no_mapping_is_not_quoted_whole() -> None:
    (text,) = errors([{"cluster_name": "x", "provider": {"kind": "simulated"}}])  # type: ignore[arg-type]
    assert text == "(top level): expected a mapping of keys"
    (text,) = errors("just words")  # type: ignore[arg-type]
    assert text == "(top level): got 'just words'; expected a mapping of keys"
