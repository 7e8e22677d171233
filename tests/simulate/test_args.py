"""The simulate command line and the bundled example config."""

from __future__ import annotations

import argparse
from pathlib import Path

import pytest
from shoal.daemon.config import load_config
from shoal.daemon.simulate.args import add_arguments, replay_options, trace_options
from shoal.daemon.simulate.cluster import Cluster
from shoal.daemon.simulate.compare import build_variants
from shoal.daemon.simulate.engine import ReplayOptions
from shoal.daemon.simulate.trace import GiB, TraceOptions, read_trace
from shoal.daemon.wiring import planner_policy
from shoal.providers.simulated import load_catalogue
from shoal.scaler.planner import usable_shape
from shoal.scaler.shape import Shape

ROOT = Path(__file__).resolve().parents[2]


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="shoal simulate")
    add_arguments(p)
    return p


def test_every_flag() -> None:
    args = parser().parse_args(
        [
            "-c", "c.yaml",
            "--trace", "t.swf.gz",
            "--out", "out",
            "--compare", "scaler.packing=count,cost",
            "--compare", "policy=toil,shoal",
            "--seed", "42",
            "--skip-bad-lines",
            "--memory-per-core", "2GiB",
            "--preemptible",
            "--trace-format", "swf",
            "--cores-per-node", "12",
            "--preemptible-queues", "2,5",
        ]
    )  # fmt: skip
    assert (args.config, args.trace, args.out, args.seed, args.trace_format) == (
        "c.yaml",
        "t.swf.gz",
        "out",
        42,
        "swf",
    )
    assert args.compare == [
        ("scaler.packing", ("count", "cost")),
        ("policy", ("toil", "shoal")),
    ]
    assert trace_options(args) == TraceOptions(
        skip_bad_lines=True,
        memory_per_core=2 * GiB,
        preemptible=True,
        cores_per_node=12,
        preemptible_queues=frozenset({2, 5}),
    )


def test_parsed_compare_flags_build_the_variants() -> None:
    args = parser().parse_args(
        ["-c", "c.yaml", "--trace", "t.swf", "--compare", "policy=toil,shoal",
         "--compare", "scaler.target_time=30m,2h"]
    )  # fmt: skip
    config = load_config(ROOT / "examples" / "simulate.yaml")
    from_args = build_variants(config, args.compare)
    from_text = build_variants(config, ["policy=toil,shoal", "scaler.target_time=30m,2h"])
    assert [v.name for v in from_args] == [v.name for v in from_text]
    assert [v.config for v in from_args] == [v.config for v in from_text]
    assert len(from_args) == 4


def test_defaults() -> None:
    args = parser().parse_args(["-c", "c.yaml", "--trace", "t.swf"])
    assert (args.out, args.compare, args.seed, args.trace_format) == (
        "simulate-report",
        [],
        None,  # the config's provider.seed
        None,
    )
    assert trace_options(args) == TraceOptions()
    assert replay_options(args) == ReplayOptions()  # per-second billing, 60 s minimum


def test_replay_options() -> None:
    argv = ["-c", "c.yaml", "--trace", "t.swf", "--billing-interval", "1h", "--seed", "5"]
    args = parser().parse_args(
        [*argv, "--billing-minimum", "0", "--tail", "2d", "--no-skip", "--placement", "best-fit",
         "--node-weights", "price"]
    )  # fmt: skip
    assert replay_options(args) == ReplayOptions(
        billing_interval=3600,
        billing_minimum=0,
        tail=2 * 86400,
        skip=False,
        seed=5,
        placement="best-fit",
        node_weights="price",
    )
    with pytest.raises(ValueError, match="placement must be one of first-fit, best-fit"):
        ReplayOptions(placement="worst-fit")
    with pytest.raises(ValueError, match="node_weights must be one of equal, price"):
        ReplayOptions(node_weights="random")


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        pytest.param(["--compare", "scaler.packing"], "expected KEY=V1,V2", id="compare"),
        pytest.param(["--compare", "policy=slurm"], "unknown policy", id="policy"),
        pytest.param(["--memory-per-core", "lots"], "size", id="size"),
        pytest.param(["--cores-per-node", "0"], "at least 1", id="cores-per-node"),
        pytest.param(["--preemptible-queues", "2,x"], "queue numbers", id="queues"),
        pytest.param(["--preemptible-queues", "-1"], ">= 0", id="negative-queue"),
        pytest.param(["--placement", "worst-fit"], "invalid choice", id="placement"),
        pytest.param(["--node-weights", "size"], "invalid choice", id="node-weights"),
    ],
)
def test_bad_flags_stop_argparse(
    argv: list[str], message: str, capsys: pytest.CaptureFixture[str]
) -> None:
    with pytest.raises(SystemExit) as caught:
        parser().parse_args(["-c", "c.yaml", "--trace", "t.swf", *argv])
    assert caught.value.code == 2
    assert message in capsys.readouterr().err


def test_every_job_of_the_bundled_trace_fits_a_node_type_of_the_bundled_config() -> None:
    config = load_config(ROOT / "examples" / "simulate.yaml")
    catalogue = load_catalogue()
    shapes = {
        name: Shape(3600, t.memory_gib * GiB, t.cores, config.provider.node_storage * GiB, False)
        for name, t in catalogue.items()
    }
    policy = planner_policy(config, shapes)
    cluster = Cluster(usable_shape(t, policy) for t in policy.node_types)
    for job in read_trace(ROOT / "examples" / "small.swf"):
        cluster.submit(job.index, job.shape, job.run_time, job.submit)
    assert cluster.unschedulable_count == 0
    assert len({t.shape.preemptible for t in policy.node_types}) == 2
