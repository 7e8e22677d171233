from __future__ import annotations

import copy
import re
from pathlib import Path
from typing import Any

import pytest
import yaml
from pydantic import BaseModel
from shoal.daemon import wiring
from shoal.daemon.cli import main
from shoal.daemon.config import ConfigError, ShoalConfig, load_config, parse_config
from shoal.daemon.config.preflight import preflight
from shoal.daemon.demand import DemandReports
from shoal.providers.retry import RetryPolicy
from shoal.scaler.model import GiB
from shoal.scaler.shape import Shape

ROOT = Path(__file__).resolve().parents[2]
EXAMPLE = ROOT / "config.example.yaml"


def example() -> dict[str, Any]:
    return yaml.safe_load(EXAMPLE.read_text())


def test_example_config_loads() -> None:
    config = load_config(EXAMPLE)
    assert config.cluster_name == "demo"
    assert config.provider.kind == "simulated"
    assert config.demand.demo and config.demand.api
    assert (config.api.host, config.api.port) == ("127.0.0.1", 8089)
    assert wiring.api_token(config) is None
    assert [e.type for e in config.node_types] == ["c5.xlarge/c5a.xlarge", "r5.large:0.05"]
    assert config.scaler.interval == 10.0
    assert config.scaler.debounce == pytest.approx(0.2)
    assert config.scaler.node_memory_overhead is None  # Toil's reservation by node size
    assert config.scaler.packing == "auto" and config.scaler.solver_time_limit == 0.2
    assert config.drain.undrain_command is None and config.drain.undrain_webhook is None
    assert wiring.retry_policy(config) == RetryPolicy(
        attempts=5, initial=0.5, maximum=20.0, deadline=120
    )
    backoff = wiring.backoff_policy(config)
    assert (backoff.initial, backoff.maximum, backoff.quota_initial) == (60.0, 600.0, 300.0)
    assert config.instance_types() == ["c5.xlarge", "c5a.xlarge", "r5.large"]


def test_every_example_key_is_commented() -> None:
    for number, line in enumerate(EXAMPLE.read_text().splitlines(), 1):
        stripped = line.strip()
        if not stripped or stripped.startswith("#") or stripped.endswith(":"):
            continue  # comments and section headers (each section is commented below)
        assert "#" in line or stripped.startswith(("min:", "max:")), f"line {number}: {line}"


def example_comments(text: str) -> dict[str, str]:
    """Dotted path of every key config.example.yaml sets (not those commented out) -> its
    comment, with the comment lines that continue it (a "#" in the same column below)."""
    comments: dict[str, str] = {}
    stack: list[tuple[int, str]] = []
    lines = text.splitlines()
    for number, line in enumerate(lines):
        key = line.split("#", 1)[0].rstrip()
        if not key or key.lstrip().startswith("-") or ":" not in key:
            continue
        indent = len(key) - len(key.lstrip())
        while stack and stack[-1][0] >= indent:
            stack.pop()
        name = key.strip().split(":", 1)[0]
        path = ".".join([p for _, p in stack] + [name])
        stack.append((indent, name))
        column = line.find("#")
        said = [line[column:]] if column >= 0 else []
        for below in lines[number + 1 :]:
            if column < 0 or below.find("#") != column or below[:column].strip():
                break
            said.append(below[column:])
        comments[path] = " ".join(said)
    return comments


def changed_from_defaults(model: BaseModel, data: dict[str, Any], prefix: str = "") -> list[str]:
    """Dotted paths of the keys ``data`` sets to a value other than the model's default."""
    changed = []
    for key, value in data.items():
        field = type(model).model_fields[key]
        current = getattr(model, key)
        if isinstance(current, BaseModel) and isinstance(value, dict):
            changed += changed_from_defaults(current, value, f"{prefix}{key}.")
        elif not field.is_required() and current != field.get_default(call_default_factory=True):
            changed.append(prefix + key)
    return changed


def test_every_example_value_is_the_default_or_says_its_default() -> None:
    """README: "Every key, with its default, is in config.example.yaml". A value the demo
    tunes (a fast simulated cloud, short timeouts) says so, or an operator who starts from
    the example takes it for the default."""
    text = EXAMPLE.read_text()
    comments = example_comments(text)
    changed = changed_from_defaults(load_config(EXAMPLE), yaml.safe_load(text))
    assert "scaler.interval" in changed  # the demo's 10s; the default is 30s
    unsaid = [p for p in changed if not re.search(r"\b(default|required)\b", comments[p])]
    assert unsaid == []


def test_minimal_config_and_toil_string() -> None:
    config = parse_config(
        {
            "cluster_name": "c",
            "provider": {"kind": "simulated", "zone": "z"},
            "node_types": "c5.xlarge/c5a.xlarge, r5.large:0.05",
        }
    )
    assert [(e.type, e.min, e.max) for e in config.node_types] == [
        ("c5.xlarge/c5a.xlarge", 0, 10),
        ("r5.large:0.05", 0, 10),
    ]
    assert config.node_types[1].bid == 0.05
    assert wiring.node_type_specs(config) == [
        ({"c5.xlarge", "c5a.xlarge"}, None),
        ({"r5.large"}, 0.05),
    ]


async def test_storage_overrides_the_config_accepts_reach_the_provider() -> None:
    """The config and the provider read node_storage_overrides with one parser: an override
    the config accepts (blanks around the parts) sizes the root volume; before, the config
    accepted "r5.large: 100" and the provider refused it at start."""
    from shoal.daemon.service import build_provider
    from shoal.runtime.testing import FakeClock

    data = example()
    data["provider"]["node_storage_overrides"] = ["r5.large: 100", " c5.xlarge :70"]
    provider = build_provider(parse_config(data), FakeClock())
    try:
        await provider.catalogue(["r5.large", "c5.xlarge"])
        assert provider.node_shape("r5.large").disk == 100 * GiB
        assert provider.node_shape("c5.xlarge").disk == 70 * GiB
    finally:
        await provider.close()


def test_aws_provider() -> None:
    data = example()
    data["provider"] = {
        "kind": "aws",
        "zone": "us-west-2a",
        "region": "us-west-2",
        "image_name": "flatcar",
        "image_owner": "075585003325",
        "security_group_ids": ["sg-1"],
        "extra_tags": {"team": "x"},
    }
    config = parse_config(data)
    assert config.provider.kind == "aws"
    assert config.provider.region == "us-west-2"


def _set(path: str, value: Any):
    def mutate(data: dict[str, Any]) -> None:
        *parents, last = path.split(".")
        node: Any = data
        for part in parents:
            node = node[int(part)] if part.isdigit() else node.setdefault(part, {})
        if value is _DELETE:
            del node[last]
        else:
            node[int(last) if last.isdigit() else last] = value

    return mutate


_DELETE = object()

# (id, mutation, field path in the error, text of the value, expectation fragment)
MALFORMED = [
    ("beta-too-big", _set("scaler.beta_inertia", 1.5), "scaler.beta_inertia", "1.5", "less than 1"),
    (
        "beta-negative",
        _set("scaler.beta_inertia", -0.1),
        "scaler.beta_inertia",
        "-0.1",
        "greater than or equal to 0",
    ),
    (
        "compensation",
        _set("scaler.preemptible_compensation", 2),
        "preemptible_compensation",
        "2",
        "less than or equal to 1",
    ),
    (
        "budget-zero",
        _set("scaler.scale_down_budget", 0),
        "scaler.scale_down_budget",
        "0",
        "greater than 0",
    ),
    (
        "max-negative",
        _set("node_types.1.max", -1),
        "node_types[1].max",
        "-1",
        "greater than or equal to 0",
    ),
    (
        "min-negative",
        _set("node_types.0.min", -2),
        "node_types[0].min",
        "-2",
        "greater than or equal to 0",
    ),
    (
        "min-above-max",
        _set("node_types.1.min", 9),
        "node_types[1].min, node_types[1].max",
        "",
        "min (9) is greater than max (5)",
    ),
    (
        "empty-type-name",
        _set("node_types.0.type", "c5.xlarge/:0.1"),
        "node_types[0].type",
        "c5.xlarge/:0.1",
        "empty instance type",
    ),
    (
        "two-bids",
        _set("node_types", "c5.xlarge:1:2"),
        "node_types",
        "c5.xlarge:1:2",
        "more than one bid",
    ),
    (
        "bad-bid",
        _set("node_types.1.type", "r5.large:cheap"),
        "node_types[1].type",
        "r5.large:cheap",
        "r5.large:cheap",
    ),
    ("no-node-types", _set("node_types", []), "node_types", "[]", "at least one node type"),
    (
        "duplicate-type",
        lambda d: d["node_types"].append({"type": "c5.xlarge"}),
        "node_types[0].type, node_types[2].type",
        "c5.xlarge",
        "appears in node_types[0] and node_types[2]",
    ),
    (
        "comma-in-entry",
        _set("node_types.0.type", "a,b"),
        "node_types[0].type",
        "a,b",
        "several entries",
    ),
    ("unknown-kind", _set("provider.kind", "gcp"), "provider.kind", "gcp", "'simulated', 'aws'"),
    (
        "aws-key-on-simulated",
        _set("provider.region", "us-east-1"),
        "provider.region",
        "us-east-1",
        "unknown key for provider kind 'simulated'",
    ),
    ("missing-zone", _set("provider.zone", _DELETE), "provider.zones", "", "give zone: <zone>"),
    (
        "zone-and-zones",
        _set("provider.zones", ["sim-1b"]),
        "provider.zones",
        "sim-1b",
        "not both",
    ),
    (
        "zones-repeat",
        lambda d: (d["provider"].pop("zone"), d["provider"].update(zones=["a", "b", "a"])),
        "provider.zones",
        "",
        "a zone appears twice",
    ),
    ("missing-cluster-name", _set("cluster_name", _DELETE), "cluster_name", "", "required"),
    (
        "open-listen",
        _set("api.listen", "0.0.0.0:8089"),
        "api.listen, api.token_file",
        "0.0.0.0",
        "without a bearer token",
    ),
    ("bad-listen", _set("api.listen", "localhost"), "api.listen", "localhost", "host:port"),
    ("bad-duration", _set("scaler.interval", "5x"), "scaler.interval", "5x", "duration"),
    ("zero-interval", _set("scaler.interval", 0), "scaler.interval", "0", "greater than 0"),
    (
        "negative-duration",
        _set("scaler.unneeded_time", "-1m"),
        "scaler.unneeded_time",
        "-1m",
        "duration",
    ),
    (
        "bad-size",
        _set("scaler.node_memory_overhead", "1QB"),
        "scaler.node_memory_overhead",
        "1QB",
        "size",
    ),
    ("cluster-name-chars", _set("cluster_name", "my cluster!"), "cluster_name", "", "pattern"),
    ("zone-empty", _set("provider.zone", ""), "provider.zone", "", "at least 1 character"),
    (
        "node-storage-zero",
        _set("provider.node_storage", 0),
        "provider.node_storage",
        "0",
        "greater than or equal to 1",
    ),
    (
        "boot-delay-word",
        _set("provider.boot_delay", "soon"),
        "provider.boot_delay",
        "soon",
        "not a duration",
    ),
    (
        "capacity-negative",
        _set("provider.capacity", {"c5.xlarge": -1}),
        "provider.capacity.c5.xlarge",
        "-1",
        "greater than or equal to 0",
    ),
    (
        "aws-no-region",
        _set("provider", {"kind": "aws", "zone": "us-west-2a", "image_id": "ami-12345678"}),
        "provider.region",
        "",
        "required",
    ),
    ("type-empty", _set("node_types.0.type", ""), "node_types[0].type", "", "empty"),
    ("demand-api", _set("demand.api", "maybe"), "demand.api", "maybe", "boolean"),
    # unknown keys: test_config_messages.py's UNKNOWN_KEYS, with the closest key suggested
    (
        "backoff-order",
        _set("scaler.backoff", {"initial": "1h", "max": "1m"}),
        "scaler.backoff.initial, scaler.backoff.max",
        "",
        "initial (3600.0s) is greater than max (60.0s)",
    ),
    (
        "retry-attempts",
        _set("scaler.retry.attempts", 0),
        "scaler.retry.attempts",
        "0",
        "greater than or equal to 1",
    ),
    ("log-level", _set("log_level", "LOUD"), "log_level", "LOUD", "'DEBUG'"),
    (
        "cluster-type",
        _set("provider.cluster_type", "slurm"),
        "provider.cluster_type",
        "slurm",
        "'mesos' or 'kubernetes'",
    ),
    (
        "storage-override",
        _set("provider.node_storage_overrides", ["i3.large"]),
        "provider.node_storage_overrides",
        "i3.large",
        "INSTANCE_TYPE:GIB",
    ),
    (
        "spot-rate",
        _set("provider.spot_interruption_rate", 3),
        "provider.spot_interruption_rate",
        "3",
        "less than or equal to 1",
    ),
    ("drain-webhook", _set("drain.webhook", "ftp://x"), "drain.webhook", "ftp://x", "http"),
    ("drain-command", _set("drain.command", []), "drain.command", "[]", "non-empty argv"),
    (
        "cost-ceiling",
        _set("scaler.cost_ceiling_per_hour", -5),
        "scaler.cost_ceiling_per_hour",
        "-5",
        "greater than 0",
    ),
    (
        "premium-infinite",
        _set("scaler.node_size_premium", float("inf")),
        "scaler.node_size_premium",
        "inf",
        "finite number",
    ),
    (
        "premium-huge",
        _set("scaler.node_size_premium", 1e308),
        "scaler.node_size_premium",
        "1e+308",
        "less than or equal to 1",
    ),
    ("provider-not-mapping", _set("provider", "simulated"), "provider", "simulated", "dictionary"),
    (
        "packing",
        _set("scaler.packing", "cheapest"),
        "scaler.packing",
        "cheapest",
        "'auto', 'count' or 'cost'",
    ),
    (
        "undrain-webhook",
        _set("drain.undrain_webhook", "ftp://x"),
        "drain.undrain_webhook",
        "ftp://x",
        "http",
    ),
    ("undrain-command", _set("drain.undrain_command", []), "drain.undrain_command", "[]", "argv"),
    (
        "solver-time-limit",
        _set("scaler.solver_time_limit", -1),
        "scaler.solver_time_limit",
        "-1",
        "is negative",
    ),
]


@pytest.mark.parametrize(
    ("mutate", "path", "value", "expected"),
    [pytest.param(m, p, v, e, id=i) for i, m, p, v, e in MALFORMED],
)
def test_malformed_config(mutate: Any, path: str, value: str, expected: str) -> None:
    data = example()
    mutate(data)
    with pytest.raises(ConfigError) as info:
        parse_config(data)
    texts = [str(e) for e in info.value.errors]
    matching = [e for e in info.value.errors if e.path.endswith(path) or e.path == path]
    assert matching, texts
    text = str(matching[0])
    assert value in text, text
    assert expected in text, text


def test_aws_needs_an_image_and_rejects_simulated_keys() -> None:
    data = example()
    data["provider"].update(kind="aws", region="us-east-1")
    with pytest.raises(ConfigError) as info:
        parse_config(data)
    texts = "\n".join(str(e) for e in info.value.errors)
    assert "provider.boot_delay" in texts and "unknown key for provider kind 'aws'" in texts
    data["provider"] = {"kind": "aws", "zone": "a", "region": "r"}
    with pytest.raises(ConfigError, match="an image is required"):
        parse_config(data)
    data["provider"].update(image_id="ami-1", image_name="n", image_owner="o")
    with pytest.raises(ConfigError, match="not both"):
        parse_config(data)


def test_token_file_makes_open_listen_valid(tmp_path: Path) -> None:
    token = tmp_path / "token"
    token.write_text("s3cret\n")
    data = example()
    data["api"] = {"listen": "0.0.0.0:9000", "token_file": "token"}
    (tmp_path / "c.yaml").write_text(yaml.safe_dump(data))
    config = load_config(tmp_path / "c.yaml")  # token_file relative to the config file
    assert wiring.api_token(config) == "s3cret"
    assert config.api.port == 9000
    assert preflight(config) == []
    token.write_text("  \n")
    (issue,) = preflight(load_config(tmp_path / "c.yaml"))
    assert (issue.path, issue.expected) == ("api.token_file", "token file is empty")


def test_file_problems(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="file not found"):
        load_config(tmp_path / "missing.yaml")
    (tmp_path / "empty.yaml").write_text("")
    with pytest.raises(ConfigError, match="empty"):
        load_config(tmp_path / "empty.yaml")
    (tmp_path / "list.yaml").write_text("- 1\n")
    with pytest.raises(ConfigError, match="mapping"):
        load_config(tmp_path / "list.yaml")
    (tmp_path / "bad.yaml").write_text("cluster_name: x\nprovider: [1,\n  kind: 2\n")
    with pytest.raises(ConfigError) as info:
        load_config(tmp_path / "bad.yaml")
    assert "YAML syntax error" in str(info.value)
    assert "bad.yaml line 4, column 1" in str(info.value)


def test_policy_from_shapes() -> None:
    config = load_config(EXAMPLE)
    shapes = {
        "c5.xlarge": Shape(3600, 8 * GiB, 4, 50 * GiB, False),
        "c5a.xlarge": Shape(3600, 8 * GiB, 4, 50 * GiB, False),
        "r5.large": Shape(3600, 16 * GiB, 2, 50 * GiB, False),
    }
    prices = {"c5.xlarge": 0.17, "c5a.xlarge": 0.154, "r5.large": 0.126, "r5.large:spot": 0.04}
    policy = wiring.planner_policy(config, shapes, prices)
    first, spot = policy.node_types
    assert first.name == "c5.xlarge/c5a.xlarge"
    assert first.instance_types == ("c5.xlarge", "c5a.xlarge")
    assert first.shape == shapes["c5.xlarge"] and not first.preemptible
    assert first.price_per_hour == 0.17
    assert (first.min_nodes, first.max_nodes, first.zones) == (0, 10, ("sim-1a",))
    assert spot.name == "r5.large:0.05" and spot.bid == 0.05
    assert spot.shape == Shape(3600, 16 * GiB, 2, 50 * GiB, True)
    assert spot.price_per_hour == 0.04
    assert policy.scale_down_unneeded_time == 60.0
    assert policy.scale_down_budget == 0.5
    assert policy.join_timeout == 300.0
    assert policy.unhealthy_timeout == 600.0
    assert (policy.unhealthy_ok_count, policy.unhealthy_max_fraction) == (3, 0.45)
    assert policy.node_disk_overhead is None and policy.node_memory_overhead is None
    assert policy.packing == "auto" and policy.solver_time_limit == 0.2
    assert policy.node_size_premium == 0.04
    assert not policy.compensate_other_types
    data = example()
    data["scaler"] |= {
        "packing": "cost",
        "node_memory_overhead": "1GiB",
        "node_disk_overhead": "4GiB",
        "solver_time_limit": "50ms",
        "node_size_premium": 0.04,
        "compensate_other_types": True,
        "unhealthy_timeout": "7m",
        "unhealthy_ok_count": 5,
        "unhealthy_max_fraction": 0.3,
    }
    flat = wiring.planner_policy(parse_config(data), shapes, prices)
    assert flat.unhealthy_timeout == 420.0
    assert (flat.unhealthy_ok_count, flat.unhealthy_max_fraction) == (5, 0.3)
    assert flat.packing == "cost" and flat.solver_time_limit == pytest.approx(0.05)
    assert flat.node_size_premium == 0.04
    assert (flat.node_memory_overhead, flat.node_disk_overhead) == (GiB, 4 * GiB)
    assert flat.compensate_other_types
    # no spot price: the on-demand price stands in
    assert (
        wiring.planner_policy(config, shapes, {"r5.large": 0.126}).node_types[1].price_per_hour
        == 0.126
    )
    with pytest.raises(KeyError, match=r"c5\.xlarge"):
        wiring.planner_policy(config, {}, {})


def test_check_config_main(capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    assert main(["check-config", str(EXAMPLE)]) == 0
    assert capsys.readouterr().out.strip() == "OK"
    data = example()
    data["scaler"]["beta_inertia"] = 7
    data["node_types"][1]["max"] = -1
    bad = tmp_path / "bad.yaml"
    bad.write_text(yaml.safe_dump(data))
    assert main(["check-config", str(bad)]) == 2
    err = capsys.readouterr().err
    assert "scaler.beta_inertia: got 7; expected less than 1" in err
    assert "node_types[1].max: got -1" in err


def test_check_config_is_the_same_anywhere_preflight_checks_the_files(
    capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    """A config naming secret files absent from this machine validates (check-config checks
    the file alone); --preflight and `shoal run` refuse it, naming each key and file."""
    data = example()
    missing = tmp_path / "secrets"
    data["api"] = {"listen": "127.0.0.1:8089", "token_file": str(missing / "api-token")}
    data["state_dir"] = str(tmp_path / "state")
    path = tmp_path / "c.yaml"
    path.write_text(yaml.safe_dump(data))
    assert main(["check-config", str(path)]) == 0
    assert capsys.readouterr().out.strip() == "OK"
    for argv in (["check-config", "--preflight", str(path)], ["run", "-c", str(path)]):
        assert main(argv) == 2, argv
        err = capsys.readouterr().err
        assert f"api.token_file: got '{missing / 'api-token'}'; expected an existing" in err, err
    (missing).mkdir()
    (missing / "api-token").write_text("s3cret\n")
    assert main(["check-config", "--preflight", str(path)]) == 0
    assert capsys.readouterr().out.strip() == "OK"


def test_preflight_state_dir_must_be_writable(tmp_path: Path) -> None:
    data = example()
    (tmp_path / "file").write_text("")
    data["state_dir"] = str(tmp_path / "file" / "state")
    (issue,) = preflight(parse_config(data))
    assert issue.path == "state_dir"
    assert issue.expected == f"expected a directory; {tmp_path / 'file'} is not one"
    data["state_dir"] = str(tmp_path / "new" / "state")  # made at start
    assert preflight(parse_config(data)) == []


def test_run_with_invalid_config_exits_2(tmp_path: Path) -> None:
    bad = tmp_path / "bad.yaml"
    bad.write_text("cluster_name: x\n")
    assert main(["run", "-c", str(bad)]) == 2


def test_schema_describes_every_key() -> None:
    """`shoal config-schema` is what operators read: every key and section says what it is
    (a duration or size key more than the unit's generic text)."""
    from shoal.daemon.units import DURATION_SCHEMA, SIZE_SCHEMA

    schema = ShoalConfig.model_json_schema()
    generic = {None, DURATION_SCHEMA["description"], SIZE_SCHEMA["description"]}
    undescribed = []
    for name, model in [("ShoalConfig", schema), *schema["$defs"].items()]:
        if "description" not in model:
            undescribed.append(name)
        for key, field in model.get("properties", {}).items():
            ref = field.get("$ref", "").removeprefix("#/$defs/")
            described = field.get("description") or schema["$defs"].get(ref, {}).get("description")
            if described in generic:
                undescribed.append(f"{name}.{key}")
    assert undescribed == []


def test_schema_forbids_extra_keys() -> None:
    schema = ShoalConfig.model_json_schema()
    assert schema["additionalProperties"] is False
    assert set(schema["required"]) == {"cluster_name", "provider", "node_types"}


def test_config_is_immutable() -> None:
    config = load_config(EXAMPLE)
    with pytest.raises(Exception, match="frozen"):
        config.cluster_name = "x"  # type: ignore[misc]
    assert copy.deepcopy(config) == config


def test_idle_scale_down_needs_running_jobs_or_a_drain_hook() -> None:
    data = example()
    data["demand"] = {"api": True, "demo": False, "reports": ["queued"]}
    with pytest.raises(ConfigError) as info:
        parse_config(data)
    (issue,) = info.value.errors
    assert issue.path == "drain"
    assert "add running to demand.reports" in str(issue) and "drain.command" in str(issue)
    data["drain"] = {"command": ["kubectl", "drain", "{node}"]}
    assert wiring.demand_reports(parse_config(data).demand) == DemandReports(running=False)
    data["demand"] = {"api": True, "reports": ["running"]}
    with pytest.raises(ConfigError, match="must include queued"):
        parse_config(data)
