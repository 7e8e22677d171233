"""Writing state files that must survive a crash (the local provider's records, the Slurm
power-saving state)."""

from __future__ import annotations

import contextlib
import json
import os
import tempfile
from pathlib import Path
from typing import Any

__all__ = ["fsync_dir", "write_json_atomic"]


def write_json_atomic(path: Path, data: Any, *, sort_keys: bool = False) -> None:
    """Replace ``path`` with ``data`` as JSON, atomically: a temporary file beside it,
    fsynced, renamed over it, then the folder fsynced so the rename survives a power loss.
    A reader sees the old file or the new one, never a part; the folder is made if missing."""
    # one write of the whole text: json.dump would write each of its many small pieces in
    # turn (a state file is rewritten on every change); on one line, as only the C encoder
    # writes (an indent takes the pure-Python one, four times slower: most of a Slurm
    # daemon's state write); `jq .` shows it
    text = json.dumps(data, sort_keys=sort_keys).encode()
    try:
        fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.")
    except FileNotFoundError:  # the folder is made once, not checked at every write
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.")
    try:
        try:
            view = memoryview(text)
            while view:
                view = view[os.write(fd, view) :]
            os.fsync(fd)
        finally:
            os.close(fd)
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        raise
    fsync_dir(path.parent)


def fsync_dir(directory: str | os.PathLike[str]) -> None:
    """Make a rename or unlink in ``directory`` durable. Best effort: it needs read access to
    the folder (a Slurm hook spooling as another user has none; its file is fsynced)."""
    with contextlib.suppress(OSError):
        fd = os.open(directory, os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)
