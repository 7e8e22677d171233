"""``shoal simulate`` through the command line: the report files, determinism, exit codes."""

from __future__ import annotations

import io
import json
import os
import struct
import subprocess
import sys
import zlib
from pathlib import Path

import pytest
import yaml
from fresh_python import fresh_python
from shoal.daemon.cli import main
from shoal.daemon.simulate.synthetic import SyntheticSpec, generate, write_swf

ROOT = Path(__file__).resolve().parents[2]
CONFIG = ROOT / "examples" / "simulate.yaml"


@pytest.fixture(scope="module")
def small_trace(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """40 jobs over 12 hours: a few seconds of replay for two variants."""
    path = tmp_path_factory.mktemp("trace") / "small.swf"
    write_swf(generate(SyntheticSpec(jobs=40, days=0.5, seed=4, mean_burst=10)), path)
    return path


@pytest.fixture(scope="module")
def tiny_trace(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """12 jobs over 3 hours, for the cases that replay it several times."""
    path = tmp_path_factory.mktemp("trace") / "tiny.swf"
    write_swf(generate(SyntheticSpec(jobs=12, days=0.125, seed=4, mean_burst=4)), path)
    return path


def simulate(*argv: str | Path) -> int:
    return main(["simulate", *map(str, argv)])


def png_size(path: Path) -> tuple[int, int]:
    """Width and height of a valid PNG: signature, IHDR first, every chunk's CRC right."""
    data = path.read_bytes()
    assert data[:8] == b"\x89PNG\r\n\x1a\n", f"{path.name} is not a PNG"
    pos, chunks = 8, []
    while pos < len(data):
        (length,) = struct.unpack(">I", data[pos : pos + 4])
        kind = data[pos + 4 : pos + 8]
        body = data[pos + 8 : pos + 8 + length]
        (crc,) = struct.unpack(">I", data[pos + 8 + length : pos + 12 + length])
        assert zlib.crc32(kind + body) == crc, f"{path.name}: bad CRC in {kind!r}"
        chunks.append(kind)
        pos += 12 + length
    assert chunks[0] == b"IHDR" and chunks[-1] == b"IEND" and b"IDAT" in chunks
    width, height = struct.unpack(">II", data[16:24])
    return width, height


def test_the_placement_is_recorded(small_trace: Path, tmp_path: Path) -> None:
    out = tmp_path / "report"
    assert simulate("-c", CONFIG, "--trace", small_trace, "--out", out,
                    "--placement", "best-fit", "--node-weights", "price") == 0  # fmt: skip
    report = json.loads((out / "report.json").read_text())
    assert (report["placement"], report["node_weights"]) == ("best-fit", "price")


def test_report_files_and_table(
    small_trace: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    out = tmp_path / "report"
    assert simulate("-c", CONFIG, "--trace", small_trace, "--out", out, "--compare",
                    "policy=toil,shoal") == 0  # fmt: skip
    stdout = capsys.readouterr().out
    assert "policy=toil" in stdout and "policy=shoal" in stdout and "index.html" in stdout
    report = json.loads((out / "report.json").read_text())
    assert [v["name"] for v in report["variants"]] == ["policy=toil", "policy=shoal"]
    assert report["trace"]["jobs"] == 40 and report["seed"] == 0
    assert (report["placement"], report["node_weights"]) == ("first-fit", "equal")
    for variant in report["variants"]:
        assert variant["jobs"]["completed"] == 40
        assert variant["cost"]["total"] > 0 and variant["events"]["launches"] > 0
    rows = (out / "report.csv").read_text().splitlines()
    assert len(rows) == 3 and rows[1].startswith("policy=toil,")
    page = (out / "index.html").read_text()
    for name in ("nodes.png", "wait_cdf.png", "cost.png"):
        width, height = png_size(out / name)
        assert width > 300 and height > 200
        assert f'<img src="{name}"' in page


def test_same_input_same_report_bytes(tiny_trace: Path, tmp_path: Path) -> None:
    """Two separate processes (different hash seeds) write byte-identical report.json."""
    procs, outs = [], []
    for hash_seed in ("1", "2"):  # both at once: most of the time is starting Python
        out = tmp_path / f"run{hash_seed}"
        env = {**os.environ, "PYTHONHASHSEED": hash_seed}
        cmd = [sys.executable, "-m", "shoal.daemon", "simulate", "-c", str(CONFIG),
               "--trace", str(tiny_trace), "--out", str(out), "--seed", "3",
               "--compare", "scaler.target_time=30m,2h"]  # fmt: skip
        procs.append(
            (
                out,
                subprocess.Popen(
                    cmd, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True
                ),
            )
        )
    for out, proc in procs:
        try:
            _, err = proc.communicate(timeout=120)
        finally:
            if proc.poll() is None:
                proc.kill()
        assert proc.returncode == 0, err
        outs.append((out / "report.json").read_bytes())
    assert outs[0] == outs[1]
    first = json.loads(outs[0])
    assert [v["name"] for v in first["variants"]] == [
        "scaler.target_time=30m",
        "scaler.target_time=2h",
    ]


def test_progress_bar_on_a_terminal(tiny_trace: Path, tmp_path: Path) -> None:
    from shoal.daemon.cli import build_parser
    from shoal.daemon.simulate.command import run

    class Terminal(io.StringIO):
        def isatty(self) -> bool:
            return True

    args = build_parser().parse_args(
        ["simulate", "-c", str(CONFIG), "--trace", str(tiny_trace), "--out", str(tmp_path)]
    )
    stdout, terminal, pipe = io.StringIO(), Terminal(), io.StringIO()
    assert run(args, stdout, terminal) == 0
    assert "simulated days" in terminal.getvalue() and "config" in terminal.getvalue()
    assert run(args, stdout, pipe) == 0
    assert "simulated days" not in pipe.getvalue()


def test_jobs_that_fit_no_node_type_are_named(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    trace = tmp_path / "t.csv"
    trace.write_text("submit,cores,memory,run_time\n0,1,1GiB,60\n5,64,1GiB,60\n")
    assert simulate("-c", CONFIG, "--trace", trace, "--out", tmp_path / "r") == 0
    err = capsys.readouterr().err
    assert "1 jobs fit no node type" in err and f"{trace} line 3: 64 cores" in err
    report = json.loads((tmp_path / "r" / "report.json").read_text())
    assert report["variants"][0]["jobs"]["unschedulable"] == 1


CASES = (
    "config-key",
    "trace-line",
    "unknown-instance-type",
    "aws-provider",
    "compare-key",
    "billing",
    "missing-trace",
)


def _config(tmp_path: Path, **changes: object) -> Path:
    data = yaml.safe_load(CONFIG.read_text())
    for key, value in changes.items():
        section, _, name = key.partition("__")
        if name:
            data[section][name] = value
        else:
            data[section] = value
    path = tmp_path / "config.yaml"
    path.write_text(yaml.safe_dump(data))
    return path


@pytest.mark.parametrize(
    ("case", "expected"),
    [
        ("config-key", "scaler.target_time"),
        ("trace-line", "line 3, cores"),
        ("unknown-instance-type", "c5.mega"),
        ("aws-provider", "provider.kind"),
        ("compare-key", "scaler.nope"),
        ("billing", "billing_interval"),
        ("missing-trace", "cannot read trace"),
    ],
    ids=lambda v: v if v in CASES else "",
)
def test_bad_input_exits_2_naming_it(
    case: str, expected: str, small_trace: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    config, trace, extra = CONFIG, small_trace, []
    if case == "config-key":
        config = _config(tmp_path, scaler__target_time=0)
    elif case == "trace-line":
        trace = tmp_path / "bad.csv"
        trace.write_text("submit,cores,memory,run_time\n0,1,1GiB,60\n5,lots,1GiB,60\n")
    elif case == "unknown-instance-type":
        config = _config(tmp_path, node_types=[{"type": "c5.mega"}])
    elif case == "aws-provider":
        config = _config(
            tmp_path,
            provider={
                "kind": "aws",
                "region": "us-west-2",
                "zone": "us-west-2a",
                "image_id": "ami-1",
            },
        )
    elif case == "compare-key":
        extra = ["--compare", "scaler.nope=1,2"]
    elif case == "billing":
        extra = ["--billing-interval", "0s"]
    elif case == "missing-trace":
        trace = tmp_path / "absent.swf"
    code = simulate("-c", config, "--trace", trace, "--out", tmp_path / "r", *extra)
    assert code == 2
    assert expected in capsys.readouterr().err
    assert not (tmp_path / "r").exists()


def test_malformed_compare_flag_stops_argparse(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exc:
        simulate("-c", CONFIG, "--trace", "x.swf", "--compare", "no-equals-sign")
    assert exc.value.code == 2
    assert "--compare" in capsys.readouterr().err


def test_jobs_that_fit_no_node_type_are_counted_by_gang_size(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    trace = tmp_path / "t.csv"
    trace.write_text(
        "submit,cores,memory,run_time,nodes\n"
        "0,1,1GiB,60,\n"
        "5,64,1GiB,60,\n"
        "6,64,1GiB,60,4\n"
        "7,32,1GiB,60,4\n"
    )
    assert simulate("-c", CONFIG, "--trace", trace, "--out", tmp_path / "r") == 0
    err = capsys.readouterr().err
    assert "3 jobs fit no node type" in err
    assert "by gang size: 1 of 1 node, 2 of 4 nodes" in err
    assert f"{trace} line 4: 4 nodes of 64 cores" in err


def test_the_readme_gang_example_runs_every_job(tmp_path: Path) -> None:
    trace = ROOT / "examples" / "gangs.csv"
    assert "examples/gangs.csv" in (ROOT / "README.md").read_text()
    assert simulate("-c", CONFIG, "--trace", trace, "--out", tmp_path) == 0
    [variant] = json.loads((tmp_path / "report.json").read_text())["variants"]
    assert (variant["jobs"]["never_started"], variant["jobs"]["completed"]) == (0, 6)


# --- the replay is an optional extra: pip install 'shoal[simulate]' ------------------------

_WITHOUT_EXTRA = (
    "import sys\n"
    "sys.modules['matplotlib'] = None\n"  # import matplotlib / rich now raise ImportError,
    "sys.modules['rich'] = None\n"  # as where the [simulate] extra is not installed
    "from shoal.daemon.cli import main\n"
    "sys.exit(main(sys.argv[1:]))\n"
)


def test_simulate_without_the_extra_exits_2_saying_how_to_install_it(
    tiny_trace: Path, tmp_path: Path
) -> None:
    argv = ["simulate", "-c", str(CONFIG), "--trace", str(tiny_trace), "--out", str(tmp_path)]
    out = fresh_python(_WITHOUT_EXTRA, *argv)
    assert out.returncode == 2, out.stderr
    assert out.stderr.splitlines() == [
        "shoal simulate needs matplotlib and rich: pip install 'shoal[simulate]'"
    ]
    assert not any(tmp_path.iterdir())


def test_run_imports_neither_matplotlib_nor_rich() -> None:
    """What ``shoal run`` imports, through building the controller and the service on the
    simulated provider, loads neither of the replay's extras."""
    script = (
        "import asyncio, sys\n"
        "import shoal.daemon.cli\n"
        "from shoal.daemon.config import load_config\n"
        "from shoal.daemon import service\n"
        "from shoal.runtime.clock import SystemClock\n"
        f"config = load_config({str(CONFIG)!r})\n"
        "async def build():\n"
        "    provider = service.build_provider(config, SystemClock())\n"
        "    service.Service(config, None, provider=provider)\n"
        "    await service.build_controller(config, provider, SystemClock(), durable=False)\n"
        "asyncio.run(build())\n"
        "print(sorted({m.split('.')[0] for m in sys.modules} & {'matplotlib', 'rich'}))\n"
    )
    out = fresh_python(script)
    assert out.stdout.split() == ["[]"], out.stderr
