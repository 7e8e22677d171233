"""Which scaler a bench run measures: pure Python or the opt-in mypyc build
(``scripts/build_compiled.py``), printed beside the figures, and a warning when the build
is stale: an extension module is imported before the ``.py`` beside it, so a stale build
would time (and plan with) old code."""

from __future__ import annotations

import importlib
import importlib.util
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def describe() -> str:
    spec = importlib.util.spec_from_file_location(
        "build_compiled", ROOT / "scripts" / "build_compiled.py"
    )
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    # the package imported, not this tree's scaler/: another tree's venv imports its own
    package = Path(importlib.import_module("shoal.scaler").__file__ or "").parent
    return str(module.describe(package))


def announce() -> None:
    """Print ``scaler: <what>``; a stale build is said on stderr too."""
    what = describe()
    print(f"scaler: {what}")
    if "STALE" in what:
        print(f"warning: scaler {what}", file=sys.stderr)
