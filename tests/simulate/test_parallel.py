"""``shoal simulate -j N``: variants in worker processes, the same report as one by one."""

from __future__ import annotations

import io
import multiprocessing
import time
from pathlib import Path

import pytest
from shoal.daemon.cli import build_parser, main
from shoal.daemon.config import load_config
from shoal.daemon.simulate import parallel
from shoal.daemon.simulate.command import run
from shoal.daemon.simulate.compare import build_variants
from shoal.daemon.simulate.engine import ReplayOptions
from shoal.daemon.simulate.progress import ReplayProgress
from shoal.daemon.simulate.synthetic import SyntheticSpec, generate, write_swf

ROOT = Path(__file__).resolve().parents[2]
CONFIG = ROOT / "examples" / "simulate.yaml"
FILES = ("report.json", "report.csv", "index.html", "nodes.png", "wait_cdf.png", "cost.png")


@pytest.fixture(scope="module")
def tiny_trace(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """12 jobs over 3 hours: under a second a variant."""
    path = tmp_path_factory.mktemp("trace") / "tiny.swf"
    write_swf(generate(SyntheticSpec(jobs=12, days=0.125, seed=4, mean_burst=4)), path)
    return path


@pytest.fixture
def workers_used(monkeypatch: pytest.MonkeyPatch) -> list[int]:
    """How many workers each replay_variants call started (none: replayed in this process)."""
    calls: list[int] = []
    real = parallel._replay_in_workers

    def spy(trace, variants, options, workers, bar):  # type: ignore[no-untyped-def]
        calls.append(workers)
        return real(trace, variants, options, workers, bar)

    monkeypatch.setattr(parallel, "_replay_in_workers", spy)
    return calls


def test_parallel_and_sequential_reports_are_the_same_bytes(
    tiny_trace: Path, tmp_path: Path, workers_used: list[int]
) -> None:
    """Three variants on two workers (the third goes to whichever is free first): every
    file of the report is byte-identical to the one-by-one run, variants in flag order."""
    outs = {}
    for jobs in ("1", "2"):
        outs[jobs] = tmp_path / f"j{jobs}"
        argv = ["simulate", "-c", str(CONFIG), "--trace", str(tiny_trace), "--out",
                str(outs[jobs]), "-j", jobs, "--compare", "scaler.target_time=30m,2h",
                "--compare", "policy=toil"]  # fmt: skip
        assert main(argv) == 0
    assert workers_used == [2]  # -j 1 stayed in this process; -j 2 used two workers
    for name in FILES:
        assert (outs["1"] / name).read_bytes() == (outs["2"] / name).read_bytes(), name
    assert '"scaler.target_time=30m, policy=toil"' in (outs["2"] / "report.json").read_text()


@pytest.mark.parametrize("jobs", ["1", "2"])
def test_a_failing_variant_is_named(
    jobs: str, tiny_trace: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """The second variant names an instance type the simulated cloud does not know: the
    worker's error comes back with the variant's name, exit 2, no report."""
    argv = ["simulate", "-c", str(CONFIG), "--trace", str(tiny_trace), "--out",
            str(tmp_path / "r"), "-j", jobs, "--compare",
            "node_types[1].type=r5.xlarge,c5.mega"]  # fmt: skip
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert "shoal simulate: variant node_types[1].type=c5.mega: " in err and "c5.mega" in err
    assert "r5.xlarge:" not in err
    assert not (tmp_path / "r" / "report.json").exists()


def test_progress_rows_per_variant_from_the_workers(tiny_trace: Path, tmp_path: Path) -> None:
    class Terminal(io.StringIO):
        def isatty(self) -> bool:
            return True

    argv = ["simulate", "-c", str(CONFIG), "--trace", str(tiny_trace), "--out", str(tmp_path),
            "-j", "2", "--compare", "policy=toil,shoal"]  # fmt: skip
    args = build_parser().parse_args(argv)
    terminal = Terminal()
    assert run(args, io.StringIO(), terminal) == 0
    text = terminal.getvalue()
    assert "policy=toil" in text and "policy=shoal" in text
    assert text.count("100%") >= 2  # each row, when its variant is done


def test_interrupt_stops_the_workers(tmp_path: Path) -> None:
    """Ctrl-C while workers replay (here: the parent's progress update raises it, as the
    signal would in the parent's loop): the call ends at once, not when the replays would,
    and no worker is left running."""
    trace = generate(SyntheticSpec(jobs=3000, days=6, seed=11))
    variants = build_variants(load_config(CONFIG), ["policy=toil,shoal"])

    class Interrupt(ReplayProgress):
        interrupted_at = 0.0

        def update(self, done: float, row: int = 0) -> None:
            if done > 0 and not self.interrupted_at:
                self.interrupted_at = time.monotonic()
                raise KeyboardInterrupt

    bar = Interrupt(trace.span, [v.name for v in variants], enabled=True, stream=io.StringIO())
    before = set(multiprocessing.active_children())  # another test's, still exiting: not ours
    with bar, pytest.raises(KeyboardInterrupt):
        parallel.replay_variants(trace, variants, ReplayOptions(), jobs=2, progress=bar)
    assert bar.interrupted_at, "the workers sent no progress"
    stopped_in = time.monotonic() - bar.interrupted_at
    # One of these variants replays in about 10 s of CPU; stopping takes milliseconds.
    assert stopped_in < 3.0
    assert set(multiprocessing.active_children()) - before == set()


def test_jobs_must_be_positive(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exit_:
        build_parser().parse_args(["simulate", "-c", "x", "--trace", "y", "-j", "0"])
    assert exit_.value.code == 2
    assert "must be at least 1" in capsys.readouterr().err
