"""The hooks' spool: a power-saving request the daemon could not take is left on disk for it.

slurmctld runs the hooks (``shoal-slurm-resume`` ...) as SlurmUser and does not call them
again: a request the daemon misses (down, restarting, not answering) would leave the job
waiting for ResumeTimeout. So when the POST fails for a reason the daemon may be past later
(connection refused, a timeout, an HTTP 5xx) the hook writes the request here and exits 0;
the daemon serves the spool at start and again every poll interval (at once after any
request that reached it), each request exactly once::

    hook: temporary file ".tmp-<id>" ─► write, fsync ─► rename to "<ns>-<id>.json" (atomic:
          the daemon sees the whole request or none) ─► fsync the folder (when readable)
    daemon: every "<ns>-<id>.json" in name order (the time it was spooled) ─► accept, which
          records <id> in the power saver's state with the request (one fsynced write) ─►
          delete the file

A crash between accept and delete leaves the file; the next scan finds ``<id>`` accepted
already and only deletes it. The hook also sends ``<id>`` with its POST, so a request the
daemon took but answered too late to the hook (which spooled it too) is served once.

Folder and files: ``<state_dir>/spool``, made by the daemon with mode 1733 (sticky,
writable by everyone, listable only by the daemon's user): SlurmUser creates files in it
whatever user the daemon runs as, nobody else can list, rename or delete them. Files are
mode 0644 so a daemon of another user reads them. When ``api.token_file`` is set the hook
signs the request (HMAC-SHA256 with the token) and the daemon drops a request whose
signature does not match: the spool is no way round the API's token. Without a token the
API is open to every local user, and so is the spool.

Standard library only, and little of it at import time: the hooks import this (the daemon's
side imports pathlib and hmac when it runs).
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import time
from typing import TYPE_CHECKING, Any, NamedTuple

if TYPE_CHECKING:
    from pathlib import Path

__all__ = [
    "DIR_MODE",
    "FILE_MODE",
    "SpoolError",
    "SpooledRequest",
    "new_request_id",
    "pending",
    "prepare",
    "read",
    "remove",
    "spool_dir",
    "sweep",
    "write",
]

VERSION = 1
DIR_MODE = 0o1733
FILE_MODE = 0o644
TEMP_PREFIX = ".tmp-"
TEMP_MAX_AGE = 600.0  # seconds: a temporary file this old is a hook that died mid-write
KINDS = ("resume", "suspend", "resume-fail")
REQUEST_ID = re.compile(r"^[A-Za-z0-9_-]{1,100}$")
_NAME = re.compile(r"^\d{20}-([A-Za-z0-9_-]{1,100})\.json$")


class SpoolError(RuntimeError):
    """A request cannot be spooled, or a spooled file cannot be served."""


class SpooledRequest(NamedTuple):
    """One hook call the daemon did not take: ``kind`` as in the URL (``resume-fail``)."""

    request_id: str
    kind: str
    nodes: str
    resume_file: Any
    spooled_at: float
    path: Path


def spool_dir(state_dir: str | os.PathLike[str]) -> Path:
    from pathlib import Path

    return Path(state_dir) / "spool"


def new_request_id() -> str:
    return f"hook-{os.urandom(16).hex()}"


def _signature(token: str, payload: dict[str, Any]) -> str:
    import hashlib
    import hmac

    body = json.dumps(payload, sort_keys=True, separators=(",", ":")).encode()
    return hmac.new(token.encode(), body, hashlib.sha256).hexdigest()


def _fsync_dir(directory: str | os.PathLike[str]) -> None:
    """Make a rename or unlink in ``directory`` durable; needs read access to the folder,
    which the daemon has and a hook of another user has not (its file is fsynced)."""
    with contextlib.suppress(OSError):
        fd = os.open(directory, os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)


def write(
    directory: str | os.PathLike[str],
    kind: str,
    nodes: str,
    resume_file: Any,
    request_id: str,
    token: str | None = None,
) -> str:
    """Spool one request atomically; its path. Raises SpoolError."""
    if kind not in KINDS or not REQUEST_ID.match(request_id):
        raise SpoolError(f"cannot spool kind {kind!r} with request id {request_id!r}")
    payload: dict[str, Any] = {
        "version": VERSION,
        "request_id": request_id,
        "kind": kind,
        "nodes": nodes,
        "resume_file": resume_file,
        "spooled_at": time.time(),
    }
    if token:
        payload["signature"] = _signature(token, payload)
    temp = os.path.join(directory, f"{TEMP_PREFIX}{request_id}")
    final = os.path.join(directory, f"{time.time_ns():020d}-{request_id}.json")
    try:
        fd = os.open(temp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, FILE_MODE)
        try:
            os.fchmod(fd, FILE_MODE)  # whatever the umask: a daemon of another user reads it
            os.write(fd, json.dumps(payload).encode())
            os.fsync(fd)
        finally:
            os.close(fd)
        os.rename(temp, final)
    except OSError as exc:
        with contextlib.suppress(OSError):
            os.unlink(temp)
        raise SpoolError(f"cannot spool to {directory}: {exc.strerror or exc}") from None
    _fsync_dir(directory)
    return final


def prepare(directory: Path) -> None:
    """The daemon's side: make the folder (mode 1733) if missing. Raises OSError."""
    directory.mkdir(parents=True, exist_ok=True)
    if directory.stat().st_mode & 0o7777 != DIR_MODE:
        os.chmod(directory, DIR_MODE)


def pending(directory: Path) -> list[Path]:
    """The spooled requests, oldest first (temporary files are not requests yet)."""
    try:
        names = [e.name for e in os.scandir(directory) if _NAME.match(e.name)]
    except FileNotFoundError:
        return []
    return [directory / name for name in sorted(names)]


def read(path: Path, token: str | None = None) -> SpooledRequest:
    """A spooled request; SpoolError for one that is malformed or not signed with ``token``
    (never served: delete it), OSError when it cannot be read (try again later)."""
    raw = path.read_bytes()
    try:
        data = json.loads(raw)
    except ValueError as exc:
        raise SpoolError(f"{path.name} is not JSON: {exc}") from None
    if not isinstance(data, dict) or data.get("version") != VERSION:
        raise SpoolError(f"{path.name} is not a version {VERSION} spooled request")
    import hmac

    signature = data.pop("signature", None)
    if token and not (
        isinstance(signature, str) and hmac.compare_digest(signature, _signature(token, data))
    ):
        raise SpoolError(f"{path.name} is not signed with api.token_file's token")
    request_id, kind, nodes = data.get("request_id"), data.get("kind"), data.get("nodes")
    named = _NAME.match(path.name)
    if (
        not isinstance(request_id, str)
        or named is None
        or named.group(1) != request_id
        or kind not in KINDS
        or not isinstance(nodes, str)
    ):
        raise SpoolError(f"{path.name} is malformed")
    spooled_at = data.get("spooled_at")
    return SpooledRequest(
        request_id,
        kind,
        nodes,
        data.get("resume_file"),
        float(spooled_at) if isinstance(spooled_at, int | float) else 0.0,
        path,
    )


def remove(path: Path) -> None:
    """Delete a served (or refused) request, durably."""
    with contextlib.suppress(FileNotFoundError):
        os.unlink(path)
    _fsync_dir(path.parent)


def sweep(directory: Path, now: float, max_age: float = TEMP_MAX_AGE) -> list[str]:
    """Delete temporary files older than ``max_age`` (hooks that died mid-write); their names."""
    swept = []
    try:
        entries = list(os.scandir(directory))
    except FileNotFoundError:
        return swept
    for entry in entries:
        if entry.name.startswith(TEMP_PREFIX):
            try:
                if now - entry.stat().st_mtime > max_age:
                    os.unlink(entry.path)
                    swept.append(entry.name)
            except OSError:
                continue
    return swept
