"""The hooks' spool: a power-saving request the daemon could not take is left on disk for it.

slurmctld runs the hooks (``shoal-slurm-resume`` ...) as SlurmUser and does not call them
again: a request the daemon misses (down, restarting, not answering) would leave the job
waiting for ResumeTimeout. So when the POST fails for a reason the daemon may be past later
(connection refused, a timeout, an HTTP 5xx) the hook writes the request here and exits 0;
the daemon serves the spool at start and again every poll interval (at once after any
request that reached it), each request exactly once; a scan of an empty folder stops at
``occupied``, which reads no more than its first entry::

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
mode 0644 so a daemon of another user reads them. A file is a header line and the request's
JSON::

    shoal-spool 2 <HMAC-SHA256 of the JSON bytes with api.token_file's token, or "-">
    {"version": 2, "request_id": ..., "kind": ..., "nodes": ..., "resume_file": ...}

When ``api.token_file`` is set the daemon checks the signature on the raw bytes *before* it
parses them (a request whose signature does not match is never parsed, nor served): the
spool is no way round the API's token. The hooks read the token file on every call; the
daemon checks with the token the API checks (its one ``daemon.http.BearerToken``, which
stats the file and reads it again once rotated), so a request signed with a new token is
served as soon as the hook wrote it. Without a token the API is open to every local user,
and so is the spool.

A request signed with the *previous* token (spooled before a rotation the daemon was down
for, or a moment before one) is not served: it is quarantined with reason
``token_rotated`` (spooled, by its file name, before the token file was last written),
logged (``event=slurm_spool_quarantined reason=token_rotated``) and counted in
``shoal_slurm_spool_quarantined_total{reason="token_rotated"}``; its nodes wait for
Slurm's ResumeTimeout. The daemon keeps no old token: a token is rotated because it may
have leaked, and whoever holds the old one may write to the spool (anybody may) and could
stamp any time into a file name. So rotate the token while the daemon runs, or after the
spool is empty. A file that does not match and was spooled after the rotation is
``unsigned``.

Anybody may drop anything in the folder, so the daemon reads a file defensively
(``read``): opened with O_NOFOLLOW and O_NONBLOCK (a symlink to /dev/zero, a FIFO that would
block the read forever), served only if it is a regular file, at most ``MAX_BYTES`` read
(requests are small). A file that cannot be served (not a regular file, too large,
malformed, not signed, nested deep enough to raise RecursionError in the JSON parser, refused
by the power saver) is moved to the quarantine, ``<state_dir>/spool-bad`` (the daemon's
own folder, not the world-writable spool: nobody can plant a symlink there), which keeps the
latest ``QUARANTINE_MAX`` files for an operator to look at. It is never served and never
blocks the requests after it. (No check of the file's owner: the daemon does not know
SlurmUser's uid, and the token is what proves a request came from a hook.)

Standard library only, and little of it at import time: the hooks import this (the daemon's
side imports pathlib and hmac when it runs).
"""

from __future__ import annotations

import contextlib
import errno
import json
import os
import re
import stat
import time
from typing import TYPE_CHECKING, Any, NamedTuple

from shoal.runtime.files import fsync_dir

if TYPE_CHECKING:
    from pathlib import Path

__all__ = [
    "DIR_MODE",
    "FILE_MODE",
    "MAX_BYTES",
    "QUARANTINE_MAX",
    "SpoolError",
    "SpoolSignatureError",
    "SpooledRequest",
    "new_request_id",
    "occupied",
    "pending",
    "prepare",
    "quarantine",
    "quarantine_dir",
    "read",
    "remove",
    "spool_dir",
    "sweep",
    "write",
]

VERSION = 2
MAGIC = b"shoal-spool"
MAX_BYTES = 1024 * 1024  # as the HTTP API's body limit: a request is a few kB
QUARANTINE_MAX = 100  # files kept in the quarantine (the latest)
DIR_MODE = 0o1733
FILE_MODE = 0o644
TEMP_PREFIX = ".tmp-"
TEMP_MAX_AGE = 600.0  # seconds: a temporary file this old is a hook that died mid-write
KINDS = ("resume", "suspend", "resume-fail")
REQUEST_ID = re.compile(r"^[A-Za-z0-9_-]{1,100}$")
_NAME = re.compile(r"^\d{20}-([A-Za-z0-9_-]{1,100})\.json$")


class SpoolError(RuntimeError):
    """A request cannot be spooled, or a spooled file cannot be served (``reason``: a word
    for the metric's label)."""

    def __init__(self, message: str, reason: str = "malformed") -> None:
        super().__init__(message)
        self.reason = reason


class SpoolSignatureError(SpoolError):
    """A spooled file is not signed with the token the daemon has (it may have rotated)."""


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


def _signature(token: str, body: bytes) -> bytes:
    import hashlib
    import hmac

    return hmac.new(token.encode(), body, hashlib.sha256).hexdigest().encode()


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
    body = json.dumps(payload).encode()
    signature = _signature(token, body) if token else b"-"
    content = b"%s %d %s\n%s" % (MAGIC, VERSION, signature, body)
    temp = os.path.join(directory, f"{TEMP_PREFIX}{request_id}")
    final = os.path.join(directory, f"{time.time_ns():020d}-{request_id}.json")
    try:
        fd = os.open(temp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, FILE_MODE)
        try:
            os.fchmod(fd, FILE_MODE)  # whatever the umask: a daemon of another user reads it
            os.write(fd, content)
            os.fsync(fd)
        finally:
            os.close(fd)
        os.rename(temp, final)
    except OSError as exc:
        with contextlib.suppress(OSError):
            os.unlink(temp)
        raise SpoolError(f"cannot spool to {directory}: {exc.strerror or exc}") from None
    fsync_dir(directory)
    return final


def prepare(directory: Path) -> None:
    """The daemon's side: make the folder (mode 1733) if missing. Raises OSError."""
    directory.mkdir(parents=True, exist_ok=True)
    quarantine_dir(directory).mkdir(mode=0o700, exist_ok=True)
    if directory.stat().st_mode & 0o7777 != DIR_MODE:
        os.chmod(directory, DIR_MODE)


def occupied(directory: Path) -> bool:
    """Whether anything is in the folder (a request, a hook's temporary file, junk): one read
    of the folder that stops at its first entry, cheap enough for the event loop. The spool is
    empty nearly always, and then a scan costs no listing."""
    try:
        with os.scandir(directory) as entries:
            return next(entries, None) is not None
    except FileNotFoundError:
        return False


def pending(directory: Path) -> list[Path]:
    """The spooled requests, oldest first (temporary files are not requests yet)."""
    try:
        names = [e.name for e in os.scandir(directory) if _NAME.match(e.name)]
    except FileNotFoundError:
        return []
    return [directory / name for name in sorted(names)]


def _read_regular(path: Path) -> bytes:
    """The bytes of ``path`` if it is a regular file of at most MAX_BYTES (SpoolError if not);
    OSError when it cannot be read for now. Never follows a symlink, never blocks on a FIFO."""
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC)
    except OSError as exc:
        if exc.errno in (errno.ELOOP, errno.EACCES, errno.EPERM, errno.ENXIO, errno.ENODEV):
            raise SpoolError(f"{path.name}: {exc.strerror}", "not_a_file") from None
        raise
    try:
        info = os.fstat(fd)
        if not stat.S_ISREG(info.st_mode):
            raise SpoolError(f"{path.name} is not a regular file", "not_a_file")
        if info.st_size > MAX_BYTES:
            raise SpoolError(f"{path.name} is larger than {MAX_BYTES} bytes", "too_large")
        chunks, size = [], 0
        while size <= MAX_BYTES:
            chunk = os.read(fd, MAX_BYTES + 1 - size)
            if not chunk:
                break
            chunks.append(chunk)
            size += len(chunk)
        if size > MAX_BYTES:  # it grew meanwhile
            raise SpoolError(f"{path.name} is larger than {MAX_BYTES} bytes", "too_large")
        return b"".join(chunks)
    finally:
        os.close(fd)


def read(
    path: Path, token: str | None = None, token_written_ns: int | None = None
) -> SpooledRequest:
    """A spooled request; SpoolError for one that can never be served (not a regular file,
    too large, malformed; SpoolSignatureError: not signed with ``token``, checked before the
    JSON is parsed, with reason ``token_rotated`` when the file's name says it was spooled
    before ``token_written_ns``), OSError when it cannot be read for now (try again later)."""
    import hmac

    raw = _read_regular(path)
    header, newline, body = raw.partition(b"\n")
    fields = header.split(b" ")
    if not newline or len(fields) != 3 or fields[:2] != [MAGIC, str(VERSION).encode()]:
        raise SpoolError(f"{path.name} is not a version {VERSION} spooled request")
    if token and not hmac.compare_digest(fields[2], _signature(token, body)):
        named = _NAME.match(path.name)
        if named and token_written_ns is not None and int(path.name[:20]) < token_written_ns:
            raise SpoolSignatureError(
                f"{path.name} was spooled before api.token_file last changed and is not "
                "signed with the token now in it (the previous token's?): not served, its "
                "nodes wait for ResumeTimeout",
                "token_rotated",
            )
        raise SpoolSignatureError(
            f"{path.name} is not signed with api.token_file's token", "unsigned"
        )
    try:
        data = json.loads(body)
    except (ValueError, RecursionError) as exc:  # RecursionError: "[[[[..." nested too deep
        raise SpoolError(f"{path.name} is not JSON: {exc!r}"[:300]) from None
    if not isinstance(data, dict) or data.get("version") != VERSION:
        raise SpoolError(f"{path.name} is not a version {VERSION} spooled request")
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


def quarantine_dir(directory: Path) -> Path:
    """Where the spool ``directory``'s bad files go: beside it, in the daemon's own folder
    (a folder inside the world-writable spool could be a symlink planted by anybody)."""
    return directory.parent / "spool-bad"


def quarantine(path: Path, keep: int = QUARANTINE_MAX) -> Path:
    """Move a file that cannot be served out of the spool, and keep only the ``keep`` latest
    files in the quarantine; where it went. Raises OSError."""
    bad = quarantine_dir(path.parent)
    bad.mkdir(mode=0o700, exist_ok=True)
    target = bad / f"{time.time_ns():020d}-{path.name}"
    os.rename(path, target)  # the entry itself: a symlink or a FIFO is moved, not opened
    for name in sorted(os.listdir(bad))[:-keep]:
        with contextlib.suppress(OSError):
            old = bad / name
            if old.is_dir() and not old.is_symlink():
                import shutil

                shutil.rmtree(old, ignore_errors=True)
            else:
                os.unlink(old)
    fsync_dir(path.parent)
    return target


def remove(path: Path) -> None:
    """Delete a served (or refused) request, durably."""
    with contextlib.suppress(FileNotFoundError):
        os.unlink(path)
    fsync_dir(path.parent)


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
