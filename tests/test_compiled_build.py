"""The opt-in mypyc build of the scaler (scripts/build_compiled.py, ``make compiled``) is
never stale: an extension module in ``scaler/`` is imported before the ``.py`` beside it, so
a build older than its source would run old code in every test and in the daemon."""

from __future__ import annotations

import importlib.machinery
import importlib.util
import json
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def _script():
    spec = importlib.util.spec_from_file_location(
        "build_compiled", ROOT / "scripts" / "build_compiled.py"
    )
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_the_scaler_has_no_stale_compiled_module() -> None:
    stale = _script().check()
    assert stale == [], f"rebuild (make compiled) or remove (make compiled-clean): {stale}"


def test_check_names_a_module_edited_after_its_build(tmp_path: Path) -> None:
    script = _script()
    source = tmp_path / "binpack.py"
    source.write_text("X = 1\n")
    (tmp_path / "_compiled.json").write_text(json.dumps({"binpack": script._digest(source)}))
    assert script.check(tmp_path) == []
    source.write_text("X = 2\n")
    assert script.check(tmp_path) == ["binpack"]


def test_check_names_an_extension_module_no_build_recorded(tmp_path: Path) -> None:
    script = _script()
    (tmp_path / "binpack.py").write_text("X = 1\n")
    assert script.check(tmp_path) == []
    extension = "binpack" + importlib.machinery.EXTENSION_SUFFIXES[0]
    (tmp_path / extension).write_bytes(b"")
    assert script.check(tmp_path) == [extension]


def test_check_names_a_compiled_module_whose_source_is_gone(tmp_path: Path) -> None:
    # a module renamed after a build (git mv): its old build is still imported by the old
    # name, and check() named nothing (it raised FileNotFoundError)
    script = _script()
    source = tmp_path / "memo.py"
    source.write_text("X = 1\n")
    (tmp_path / "_compiled.json").write_text(json.dumps({"memo": script._digest(source)}))
    source.rename(tmp_path / "memos.py")
    assert script.check(tmp_path) == ["memo"]


def test_describe_says_pure_compiled_or_stale_with_how_to_mend(tmp_path: Path) -> None:
    # the bench scripts print it beside their figures (bench/scaler_build.py): a stale build
    # times old code, and without the line a reader could not tell which scaler ran
    script = _script()
    source = tmp_path / "binpack.py"
    source.write_text("X = 1\n")
    assert script.describe(tmp_path) == "pure Python"
    (tmp_path / ("binpack" + importlib.machinery.EXTENSION_SUFFIXES[0])).write_bytes(b"")
    (tmp_path / "_compiled.json").write_text(json.dumps({"binpack": script._digest(source)}))
    assert script.describe(tmp_path) == "compiled with mypyc (1 extension module)"
    source.write_text("X = 2\n")
    stale = script.describe(tmp_path)
    assert stale.startswith("compiled with mypyc, STALE") and stale.endswith(": binpack")
    assert "make compiled" in stale and "make compiled-clean" in stale


def test_the_bench_scripts_say_which_scaler_they_measure(capsys) -> None:
    import sys

    sys.path.insert(0, str(ROOT))
    from bench.scaler_build import announce

    announce()
    out = capsys.readouterr()
    assert out.out == f"scaler: {_script().describe()}\n"
    assert ("STALE" in out.out) == ("warning" in out.err)


def test_the_compiled_modules_type_check_as_mypyc_needs(tmp_path: Path) -> None:
    # mypyc compiles only code that type-checks: a change that does not (lanestop once
    # reused a loop variable with another type) made `make compiled` print a warning and
    # fall back to pure Python, which nothing else here notices
    script = _script()
    result = script.typecheck(list(script.MODULES), tmp_path)
    assert result.returncode == 0, result.stdout + result.stderr


def test_a_build_for_another_python_is_not_taken_for_the_one_imported(tmp_path: Path) -> None:
    # review9: ``.so`` is an extension suffix, but this Python never imports
    # ``binpack.cpython-0-other.so``: the pure module runs, and describe said "STALE (old code
    # runs ...)"; clean still removes it
    script = _script()
    (tmp_path / "binpack.py").write_text("X = 1\n")
    (tmp_path / "binpack.cpython-0-other.so").write_bytes(b"")
    assert script.describe(tmp_path) == "pure Python"
    assert script.check(tmp_path) == []
    assert [p.name for p in script.built(tmp_path, every=True)] == ["binpack.cpython-0-other.so"]


def test_the_bench_describes_the_scaler_it_imports(tmp_path: Path, monkeypatch) -> None:
    # review9: a bench script run by another tree's venv imports that tree's shoal.scaler;
    # the line must describe that one, not the scaler/ beside the script
    import sys
    import types

    sys.path.insert(0, str(ROOT))
    from bench import scaler_build

    (tmp_path / "__init__.py").write_text("")
    (tmp_path / ("binpack" + importlib.machinery.EXTENSION_SUFFIXES[0])).write_bytes(b"")
    package = types.ModuleType("shoal.scaler")
    package.__file__ = str(tmp_path / "__init__.py")
    monkeypatch.setitem(sys.modules, "shoal.scaler", package)
    assert scaler_build.describe() == _script().describe(tmp_path)
    assert "STALE" in scaler_build.describe()
