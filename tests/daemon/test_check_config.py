"""`shoal check-config` checks everything that needs no network (issue 20 item 7).

Instance types, the AWS region and zones are checked against what each provider ships, with
"did you mean"; each kind of problem (these, unknown keys, errors across fields) is checked
through the command in a subprocess too: exit status 2, one line per problem.
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest
import yaml
from shoal.daemon.config import parse_config
from test_config_messages import EXAMPLE, ROOT, aws, example, local, put

SHOAL = Path(sys.executable).parent / "shoal"


def issues(data: dict[str, Any]) -> list[str]:
    from shoal.daemon.config.catalogue import catalogue_issues

    return [str(i) for i in catalogue_issues(parse_config(data))]


def test_the_shipped_and_test_configs_name_known_types_and_regions() -> None:
    from slurm.shoal_proc import shoal_config  # the Slurm tests' config (local provider)

    for path in (EXAMPLE, *sorted((ROOT / "examples").glob("*.yaml"))):
        assert issues(yaml.safe_load(path.read_text())) == [], path
    stand_in = SimpleNamespace(conf_path=Path("/etc/slurm/slurm.conf"))
    assert issues(shoal_config(stand_in, Path("/tmp/w"), 8089)) == []  # type: ignore[arg-type]
    assert issues(aws(zones=["us-west-2b", "us-west-2-lax-1a"], zone=None)) == []


def test_simulated_types_come_from_its_catalogue() -> None:
    data = put(
        example(), "node_types", [{"type": "c5.xlarg/c5a.xlarge"}, {"type": "m6i.large:0.05"}]
    )
    data = put(data, "provider.node_storage_overrides", ["i3.large:100", "r5.larg:80"])
    data = put(data, "provider.capacity", {"c5.xlarge": 2, "t3.mediun": 1})
    assert issues(data) == [
        "node_types[0].type: got 'c5.xlarg'; unknown instance type: not in the simulated "
        "cloud's catalogue; did you mean 'c5.xlarge'?",
        "provider.node_storage_overrides[1]: got 'r5.larg'; unknown instance type: not in the "
        "simulated cloud's catalogue; did you mean 'r5.large'?",
        "provider.capacity: got 't3.mediun'; unknown instance type: not in the simulated "
        "cloud's catalogue; did you mean 't3.medium'?",
    ]


def test_aws_types_are_ec2s_not_the_simulated_catalogue() -> None:
    """m7g.large and p5.48xlarge are not among the 36 shipped types, yet EC2 has them."""
    from shoal.daemon.config.catalogue import aws_instance_types

    assert {"m7g.large", "p5.48xlarge", "c5.xlarge"} <= aws_instance_types()
    data = put(aws(), "node_types", [{"type": "m7g.large/p5.48xlarge"}, {"type": "c5.xlarg"}])
    assert issues(data) == [
        "node_types[1].type: got 'c5.xlarg'; unknown instance type: not in EC2's instance "
        "types; did you mean 'c5.xlarge'?"
    ]


def test_local_types_are_its_own() -> None:
    assert issues(local(["small", "big"])) == []
    assert issues(local(["smal"])) == [
        "node_types[0].type: got 'smal'; unknown instance type: not in "
        "provider.instance_types; did you mean 'small'?"
    ]


def test_aws_region_and_zones() -> None:
    from shoal.daemon.config.catalogue import aws_regions

    assert {
        "us-west-2",
        "eu-central-1",
        "cn-north-1",
        "us-gov-west-1",
        "ca-central-1",
    } <= aws_regions()
    assert issues(aws(region="us-wset-2")) == [
        "provider.region: got 'us-wset-2'; unknown AWS region; did you mean 'us-west-2'?"
    ]
    assert issues(aws(region="eu-west-1", zone="us-west-2a")) == [
        "provider.zone: got 'us-west-2a'; not a zone of region eu-west-1 (e.g. eu-west-1a)"
    ]


# --- the command --------------------------------------------------------------------------

# (id, config, the lines after "invalid config FILE:")
COMMAND_CASES = [
    (
        "unknown-key",
        put(example(), "scaler.intervall", "5s"),
        ["scaler.intervall: got '5s'; unknown key in scaler; did you mean 'interval'?"],
    ),
    (
        "across-fields",
        put(
            put(example(), "node_types.0.min", 99), "scaler.backoff", {"initial": "1h", "max": "1m"}
        ),
        [
            "node_types[0].min, node_types[0].max: min (99) is greater than max (10)",
            "scaler.backoff.initial, scaler.backoff.max: initial (3600.0s) is greater than max "
            "(60.0s)",
        ],
    ),
    (
        "instance-type",
        put(example(), "node_types.0.type", "c5.xlarg"),
        [
            "node_types[0].type: got 'c5.xlarg'; unknown instance type: not in the simulated "
            "cloud's catalogue; did you mean 'c5.xlarge'?"
        ],
    ),
    (
        "region",
        aws(region="us-wset-2"),
        ["provider.region: got 'us-wset-2'; unknown AWS region; did you mean 'us-west-2'?"],
    ),
]


@pytest.mark.parametrize(("data", "lines"), [pytest.param(*c[1:], id=c[0]) for c in COMMAND_CASES])
def test_check_config_command(tmp_path: Path, data: dict[str, Any], lines: list[str]) -> None:
    path = tmp_path / "c.yaml"
    path.write_text(yaml.safe_dump(data))
    res = subprocess.run(
        [SHOAL, "check-config", "-c", path], capture_output=True, text=True, timeout=60
    )
    assert (res.returncode, res.stdout) == (2, ""), res.stderr
    assert res.stderr.splitlines() == [f"invalid config {path}:", *(f"  {line}" for line in lines)]


def test_check_config_takes_the_file_once(tmp_path: Path) -> None:
    from shoal.daemon.cli import main

    assert main(["check-config", "-c", str(EXAMPLE)]) == 0
    assert main(["check-config"]) == 2
    assert main(["check-config", "-c", str(EXAMPLE), str(EXAMPLE)]) == 2


def test_cluster_launch_checks_the_leader_type_before_any_call(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """The endpoint is a closed loopback port: without the check, the launch fails there."""
    from shoal.daemon.cli import main

    data = aws(endpoint_url="http://127.0.0.1:9", pricing_endpoint_url="http://127.0.0.1:9")
    data["scaler"] = {"retry": {"attempts": 1, "deadline": "2s"}}
    path = tmp_path / "c.yaml"
    path.write_text(yaml.safe_dump(data))
    argv = ["cluster", "launch", "-c", str(path), "--leader-node-type", "t3.mediun"]
    assert main(argv) == 2
    assert capsys.readouterr().err == (
        "shoal cluster launch: --leader-node-type 't3.mediun': unknown instance type: not in "
        "EC2's instance types; did you mean 't3.medium'?\n"
    )
