"""README.md's simulate example is what its command prints today (scripts/readme_simulate.py).

The check runs the README's exact command; a stale table or a picture drawn from another
report fails it. The script's own pieces are checked to catch staleness at all: a table
with one number changed, and a picture stamped with another report's hash.
"""

from __future__ import annotations

import importlib.util
import shutil
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
SCRIPT = ROOT / "scripts" / "readme_simulate.py"


@pytest.fixture(scope="module")
def script():  # type: ignore[no-untyped-def]
    spec = importlib.util.spec_from_file_location("readme_simulate", SCRIPT)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # its dataclass looks itself up there
    spec.loader.exec_module(module)
    return module


@pytest.fixture(scope="module")
def example(script):  # type: ignore[no-untyped-def]
    """The README's command, run once for the module."""
    return script.run_example((ROOT / "README.md").read_text())


def test_readme_table_and_picture_are_current(script, example, monkeypatch) -> None:  # type: ignore[no-untyped-def]
    monkeypatch.setattr(script, "run_example", lambda readme: example)
    problems = script.check(ROOT / "README.md", ROOT / "docs" / "simulate-report.png")
    assert problems == [], (
        "\n".join(problems) + "\nrun: .venv/bin/python scripts/readme_simulate.py"
    )


def test_the_command_is_the_one_shown(script, example) -> None:  # type: ignore[no-untyped-def]
    readme = (ROOT / "README.md").read_text()
    shown = "\n".join(example.command)
    assert "    shoal simulate -c examples/simulate.yaml --trace examples/small.swf" in shown
    assert readme.count(shown) == 1
    assert example.table.splitlines()[0].startswith("variant ")
    assert [row.split()[0] for row in example.table.splitlines()[1:]] == [
        "policy=toil",
        "policy=shoal",
    ]


def test_a_stale_table_or_picture_is_caught(script, example, monkeypatch, tmp_path) -> None:  # type: ignore[no-untyped-def]
    monkeypatch.setattr(script, "run_example", lambda readme: example)
    readme, picture = tmp_path / "README.md", tmp_path / "simulate-report.png"
    shutil.copy(ROOT / "README.md", readme)
    shutil.copy(ROOT / "docs" / "simulate-report.png", picture)
    script.update(readme, picture)
    assert script.check(readme, picture) == []

    text = readme.read_text()
    row = next(line for line in text.splitlines() if line.startswith("    policy=toil "))
    cost = row.split()[1]
    readme.write_text(text.replace(row, row.replace(cost, f"{float(cost) + 1:.2f}", 1)))
    assert [p.split(":")[0] for p in script.check(readme, picture)] == ["README.md"]
    readme.write_text(text)

    png = picture.read_bytes()
    other = script.stamp(script.unstamped(png), "0" * 64, "0.0")
    picture.write_bytes(other)
    problems = script.check(readme, picture)
    assert len(problems) == 1 and "not drawn from the report" in problems[0]
    # Same report and matplotlib, different image bytes: caught too.
    stamps = script.texts(png)
    assert script.unstamped(script.stamp(example.nodes_png, "x", "y")) == example.nodes_png
    tampered = bytearray(script.unstamped(png))
    tampered[-20] ^= 0xFF  # inside the image data, before IEND
    picture.write_bytes(
        script.stamp(bytes(tampered), stamps[script.KEY_REPORT], stamps[script.KEY_MATPLOTLIB])
    )
    problems = script.check(readme, picture)
    assert len(problems) == 1 and "differs from the nodes.png" in problems[0]
