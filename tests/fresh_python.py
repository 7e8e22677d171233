"""Run a script in a fresh interpreter of this venv: what a process imports, or does under
another load, without this test process's state."""

from __future__ import annotations

import subprocess
import sys


def fresh_python(script: str, *argv: str, timeout: float = 120) -> subprocess.CompletedProcess[str]:
    """``python -c script argv...``, its output captured as text (not checked: see returncode)."""
    return subprocess.run(
        [sys.executable, "-c", script, *argv], capture_output=True, text=True, timeout=timeout
    )
