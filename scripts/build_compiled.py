"""Compile the scaler's hot pure-Python modules with mypyc, in place (opt-in: ``make compiled``).

    .venv/bin/pip install mypy             # mypyc is part of mypy; a C compiler is needed too
    .venv/bin/python scripts/build_compiled.py          # build and put the .so files in scaler/
    .venv/bin/python scripts/build_compiled.py --clean  # remove them: back to pure Python

The modules are the same source: mypyc compiles them to C extension modules that Python
imports before the ``.py`` beside them (an extension suffix comes first in the import
system's search), so an editable install picks them up with nothing else changed, and
removing the ``.so`` files goes back to the pure-Python modules. ``bench/README.md`` ("A
compiled scaler with mypyc") has what it buys and what it costs.

mypyc names a module by its package path, and these modules live in ``scaler/`` but import
as ``shoal.scaler.*`` (pyproject.toml's package-dir). So the sources are copied into
``build/mypyc/shoal/scaler/`` (every scaler module, for the type check), the chosen ones
compiled there, and the extension modules copied back into ``scaler/``: one shim a module
and one shared library, ``shoal.scaler._compiled__mypyc``, holding the code of all of them
(calls between them are C calls).

Nothing imports this script, and nothing fails without it: no compiler, no mypy, or a
module that no longer type-checks leaves the pure-Python modules as they are (the script
exits non-zero and says why). A stale build is the one hazard: a ``.so`` built from an
older ``.py`` is still imported first, so rebuild (or ``--clean``) after editing a compiled
module; ``--check`` says whether the built modules match their sources.
"""

from __future__ import annotations

import argparse
import hashlib
import importlib.machinery
import json
import shutil
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
SCALER = ROOT / "scaler"
STAGE = ROOT / "build" / "mypyc"
GROUP = "shoal.scaler._compiled"  # the shared library: shoal/scaler/_compiled__mypyc.*.so
STAMP = SCALER / "_compiled.json"  # each compiled module's source digest, for --check

# The count packers' hot path (bench/README.md: ~90 % of the synthetic replay's CPU is
# count packing) and the planner that calls them; the rest of the scaler stays Python.
MODULES = ("binpack", "booking", "memo", "patterns", "planner", "resources", "timeline")

SETUP = """\
import sys
from setuptools import setup
from mypyc.build import mypycify

paths = [f"shoal/scaler/{m}.py" for m in sys.argv[1].split(",")]
group = sys.argv[2]
flags = sys.argv[3].split(",")
sys.argv = [sys.argv[0], "build_ext", "--inplace"]
setup(name="shoal-compiled", ext_modules=mypycify([*flags, *paths], group_name=group))
"""


def _digest(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def built(scaler: Path = SCALER, *, every: bool = False) -> list[Path]:
    """The extension modules in ``scaler`` that this Python imports (this build's, or a
    stale one's): a module name and one of its extension suffixes. ``.so`` is one, but a
    build for another Python (``binpack.cpython-312-x86_64-linux-gnu.so`` under 3.11) is
    never imported, so it is left out unless ``every`` (review9)."""
    suffixes = importlib.machinery.EXTENSION_SUFFIXES
    return sorted(
        p
        for p in scaler.iterdir()
        if any(p.name.endswith(s) and (every or p.name[: -len(s)].isidentifier()) for s in suffixes)
    )


def clean() -> None:
    for path in [*built(every=True), STAMP]:
        path.unlink(missing_ok=True)
    shutil.rmtree(STAGE, ignore_errors=True)


def check(scaler: Path = SCALER) -> list[str]:
    """Why the extension modules in ``scaler`` may not be its sources' code (empty: none
    there, or all built from the sources as they are): each compiled module whose source
    changed since the build, or every extension module when the build left no record."""
    stamp = scaler / STAMP.name
    if not stamp.exists():
        return [p.name for p in built(scaler)]
    digests = json.loads(stamp.read_text())
    # a compiled module whose source is gone (removed or renamed) is stale too: its build
    # is still imported under the old name
    return [
        m
        for m, d in sorted(digests.items())
        if not (scaler / f"{m}.py").exists() or _digest(scaler / f"{m}.py") != d
    ]


def describe(scaler: Path = SCALER) -> str:
    """One line saying which scaler a run measures (the bench scripts print it beside their
    figures): pure Python, a compiled build, or a stale one, named with how to mend it."""
    extensions = built(scaler)
    if not extensions:
        return "pure Python"
    stale = check(scaler)
    if stale:
        return (
            f"compiled with mypyc, STALE (old code runs: `make compiled` to rebuild, "
            f"`make compiled-clean` to remove): {', '.join(stale)}"
        )
    n = len(extensions)
    return f"compiled with mypyc ({n} extension module{'' if n == 1 else 's'})"


FLAGS = ("--explicit-package-bases", "--ignore-missing-imports", "--follow-imports=silent")


def _stage(stage: Path) -> Path:
    """Copy every scaler module to ``stage``/shoal/scaler (mypyc names a module by its path)."""
    package = stage / "shoal" / "scaler"
    package.mkdir(parents=True)
    for source in SCALER.glob("*.py"):
        shutil.copy2(source, package / source.name)
    return package


def typecheck(modules: list[str], stage: Path) -> subprocess.CompletedProcess[str]:
    """mypy on ``modules`` as the build checks them (mypyc compiles only code that type-checks;
    a change that does not would make ``make compiled`` fall back to pure Python)."""
    _stage(stage)
    paths = [f"shoal/scaler/{m}.py" for m in modules]
    command = [sys.executable, "-m", "mypy", *FLAGS, *paths]
    return subprocess.run(command, cwd=stage, capture_output=True, text=True, check=False)


def build(modules: list[str]) -> None:
    clean()
    package = _stage(STAGE)
    setup = STAGE / "setup_mypyc.py"
    setup.write_text(SETUP)
    command = [sys.executable, setup.name, ",".join(modules), GROUP, ",".join(FLAGS)]
    subprocess.run(command, cwd=STAGE, check=True)
    suffixes = tuple(importlib.machinery.EXTENSION_SUFFIXES)
    for ext in package.iterdir():
        if ext.name.endswith(suffixes):
            shutil.copy2(ext, SCALER / ext.name)
    # the digests of the copies compiled, not of the sources now: a source edited during the
    # build is then stale at once (review7)
    STAMP.write_text(json.dumps({m: _digest(package / f"{m}.py") for m in modules}, indent=1))


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--clean", action="store_true", help="remove the compiled modules")
    parser.add_argument("--check", action="store_true", help="fail if a build is stale")
    parser.add_argument("--modules", default=",".join(MODULES), help="scaler modules to compile")
    args = parser.parse_args()
    if args.clean:
        clean()
        return 0
    if args.check:
        stale = check()
        if stale:
            print(f"stale compiled modules (rebuild or --clean): {', '.join(stale)}")
        return 1 if stale else 0
    try:
        build(args.modules.split(","))
    except (subprocess.CalledProcessError, OSError) as e:
        clean()  # never half a build: the pure-Python modules stay in charge
        print(f"compiled scaler not built ({e}); the pure-Python modules are used")
        return 1
    print("compiled: " + ", ".join(p.name for p in built()))
    return 0


if __name__ == "__main__":
    sys.exit(main())
