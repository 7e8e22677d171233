"""Starting `shoal` as a process on loopback, and waiting on it: shared by the e2e and Slurm
tests and bench/footprint.py."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import TypeVar

__all__ = ["free_port", "poll_until", "shoal_argv", "stop_process"]

T = TypeVar("T")


def shoal_argv() -> list[str]:
    """The `shoal` console script of this virtualenv, else `python -m shoal.daemon`."""
    script = Path(sys.executable).with_name("shoal")
    if script.is_file() and os.access(script, os.X_OK):
        return [str(script)]
    return [sys.executable, "-m", "shoal.daemon"]


def free_port() -> int:
    """A port free on 127.0.0.1 now (the daemon binds it a moment later)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def poll_until(
    what: str,
    probe: Callable[[], T | None],
    deadline: float,
    *,
    interval: float = 0.1,
    explain: Callable[[], str] = lambda: "",
    error: Callable[[str], BaseException] = AssertionError,
) -> T:
    """Call ``probe`` every ``interval`` s until it returns something other than None or
    False, and return that; after ``deadline`` s raise ``error`` naming ``what``, followed by
    what ``explain()`` says (a log's tail, say)."""
    end = time.monotonic() + deadline
    while True:
        result = probe()
        if result is not None and result is not False:
            return result
        if time.monotonic() > end:
            raise error(f"timed out after {deadline:.1f}s waiting for {what}\n{explain()}".rstrip())
        time.sleep(interval)


def stop_process(proc: subprocess.Popen[bytes] | None, grace: float = 10.0) -> int | None:
    """SIGTERM, then SIGKILL after ``grace`` seconds; the exit status (None if never started)."""
    if proc is None:
        return None
    if proc.poll() is None:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(timeout=grace)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(timeout=grace)
    return proc.returncode
