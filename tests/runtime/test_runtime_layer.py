"""``runtime`` is the bottom layer beside ``scaler``: providers and the daemon both use it,
so it may use neither (nor anything outside the standard library)."""

from __future__ import annotations

import ast
import sys
from pathlib import Path

import shoal.runtime

RUNTIME = Path(shoal.runtime.__file__).parent


def test_runtime_imports_only_the_standard_library() -> None:
    found = {}
    for path in sorted(RUNTIME.glob("*.py")):
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.Import):
                names = [alias.name for alias in node.names]
            elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
                names = [node.module]
            else:
                continue
            for name in names:
                top = name.split(".")[0]
                if top != "__future__" and top not in sys.stdlib_module_names:
                    found[f"{path.name}:{node.lineno}"] = name
    assert found == {}
    assert {p.name for p in RUNTIME.glob("*.py")} >= {"clock.py", "files.py", "testing.py"}


def test_the_helpers_left_providers() -> None:
    providers = RUNTIME.parent / "providers"
    assert not (providers / "clock.py").exists() and not (providers / "files.py").exists()
