"""What must survive a crash, on disk before the action it protects: one store in ``state_dir``.

Everything the daemon must not forget across ``kill -9`` lives in one JSON file,
``<state_dir>/state.json``, in named sections:

``ledger``  launches in flight (``LaunchJournal``): the intent of every ``addNodes`` call
            (request id, node type, count, offering, time, and for a plan's launch unit
            what makes it again: ``replay``), written again before each
            offering the call tries (its offering that one): one flush each; the instance ids
            it answered, kept until a listing shows them or ``launch_ledger_ttl`` passes
            (``entries``; a placeholder's offering as booked, zoneless or not), the
            instances that stood for a lost answer's placeholders while it has some
            (``stood``: ``NodeTracker.stood``; always written, as a file without it is
            from before it and says nothing of them), and the nodes seen joined (``joined``: id ->
            time first seen joined, and since when it has been missing from the reads),
            written in the background when they change
``slurm``   the power saver's resume requests (with the offering last tried and its
            client token), suspend requests and nodes kept DOWN (``daemon.slurm.state``)

One daemon per ``state_dir``: ``open`` takes an exclusive ``flock`` on ``<state_dir>/lock``
for the life of the process and refuses to start, naming the holder's pid, when another
process holds it (two daemons would each replace the whole file and lose the other's
intents, and both serve the spool). The lock file, with this pid written and fsynced, is
also the start-up probe that ``state_dir`` is writable: ``shoal run`` fails at once on a
read-only or full disk instead of running without its launch ledger. A later open in the
same process (a restart simulated in tests) shares the process's lock, which the last of
its stores releases (``close``, or garbage collection). ``open`` also removes the temporary
files a crash in the middle of a write left behind.

A section no part of the daemon claims (``section``) is dropped from the file by
``drop_unclaimed``, called once every part is built: after power_save -> external ->
power_save, the first switch dropped the ``slurm`` section, so old resume requests and
nodes kept DOWN are not replayed.

Where the snapshot lives is a ``StateBackend`` (``load()``, ``save(snapshot, epoch)``):
``FileBackend``, the file above, without ``ha``; with ``ha``, the etcd key beside the leader
key (``daemon.leader.state``), whose writes are fenced by the term's epoch (a deposed
leader's write raises ``Fenced``; ``on_fenced`` is told) and which a new leader reads at its
term's start (``reload``: each section's owner takes its part again through the ``load``
it gave to ``section``). ``state_dir`` is then only locked (the Slurm spool stays there).

Writes are off the event loop and coalesced::

    change ─► store.changed()          (background: written soon)
          └─► await store.flush()      (returns once the change is on disk)
                    │
                    ▼ one writer task at a time; a snapshot of every section is taken on the
      loop, then written on a thread (asyncio.to_thread): temporary file, fsync, rename, fsync
      of the folder (``runtime.files.write_json_atomic``). Changes made while a write runs
      are all carried by the next one, so a burst of N changes costs two writes, not N, and
      concurrent callers of ``flush`` share them.

A caller awaits ``flush`` before the action the state protects (``addNodes``, answering a
hook); what can be lost without harm (a request done, an entry listed) only calls
``changed``. Without ``state_dir`` the store keeps everything in memory (a warning at start):
a restart then forgets launches in flight.

After a restart ``LaunchJournal.restore`` puts the ledger back into the node tracker before
the first listing is applied: answered ids become ledger entries again (booting, accepted at
their original time), intents without an answer become placeholders found again by the
request-id tag, exactly as a lost launch response. The planner counts both as booting
nodes, so a restarted daemon whose cloud listing lags waits for its launches in flight, or
their TTL, before launching that capacity again; the client tokens (a function of request
id and offering) make any replayed launch return what the cloud already launched. A plan's
intent also holds what makes its launch again (``Replayable``: tags, gang, cause; not one
an earlier offering partly launched): the first pass whose plan wants its nodes on top of
the others of its type (``Controller._replay_intents``; not the placeholders of launches
still to make) sends it again in its last offering, so a launch that
was never sent (the daemon stopped before it, or etcd applied the intent but its answer was
lost) is launched then, not waited for until the TTL; one that was sent gets its instances
back from the token. Its intent stays on disk until then, for a restart to find again. An
intent written before this was kept (no ``replay``) waits as before. It also
gives the tracker the nodes seen joined (``NodeTracker.restore_joined``, with since when a
listing has left one out, if it has; a file from before that was kept has two fields): a
node that joined
before the restart is not timed out as one that never joined when the first read leaves it
out, and one that never joined is not taken for joined when the first listing comes before
any read. A file written before this was kept (no ``joined`` in it), or none at all, tells
nothing: the tracker then takes every node of its first listing for joined (see there).
"""

from __future__ import annotations

import asyncio
import contextlib
import fcntl
import json
import logging
import os
import weakref
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

from shoal.daemon.executor import Replayable
from shoal.daemon.nodes import Kept, NodeTracker, TrackedNode, TrackedState, node_offering
from shoal.providers.base import TAG_REQUEST_ID
from shoal.providers.errors import RetryableError
from shoal.providers.node_provider import client_token
from shoal.providers.outcomes import LaunchAttempt
from shoal.runtime.files import write_json_atomic
from shoal.scaler.model import CapacityType, NodeType, Offering

__all__ = [
    "LOCK_FILE",
    "STATE_FILE",
    "DurableStore",
    "Fenced",
    "FileBackend",
    "LaunchJournal",
    "StateBackend",
    "StateError",
    "checked",
    "offering_from_json",
    "offering_to_json",
]

log = logging.getLogger(__name__)

STATE_FILE = "state.json"
LOCK_FILE = "lock"
VERSION = 1

Writer = Callable[[Path, Any], None]


class StateError(RuntimeError):
    """The state file exists but cannot be read or understood, or ``state_dir`` cannot be
    locked or written."""


@dataclass(slots=True)
class _Lock:
    fd: int
    stores: int  # open stores of this process on the folder


# state_dir (resolved) -> this process's lock on it: released when its last store is gone
_LOCKS: dict[Path, _Lock] = {}


def _lock(folder: Path) -> tuple[Path, bool]:
    """Take ``<folder>/lock`` for this process (see the module docstring); write and fsync
    our pid in it, which proves the folder writable. Returns the lock's key and whether it
    was taken now (False: this process held it already). Raises StateError."""
    folder = folder.resolve()
    if (held := _LOCKS.get(folder)) is not None:
        held.stores += 1
        return folder, False
    path = folder / LOCK_FILE
    try:
        folder.mkdir(parents=True, exist_ok=True)
        fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o644)
    except OSError as exc:
        raise StateError(f"state_dir {folder} is not writable: {exc}") from exc
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            holder = os.pread(fd, 64, 0).decode(errors="replace").strip() or "unknown"
            raise StateError(
                f"state_dir {folder} is in use by another shoal (pid {holder}, holding "
                f"{path}): one daemon per state_dir"
            ) from None
        pid = f"{os.getpid()}\n".encode()
        os.ftruncate(fd, 0)
        if os.pwrite(fd, pid, 0) != len(pid):
            raise OSError(f"short write to {path}")
        os.fsync(fd)
    except OSError as exc:
        os.close(fd)
        raise StateError(f"state_dir {folder} is not writable: {exc}") from exc
    except BaseException:
        os.close(fd)
        raise
    _LOCKS[folder] = _Lock(fd, 1)
    return folder, True


def _unlock(key: Path) -> None:
    """A store on ``key`` is gone: the last one releases the lock."""
    held = _LOCKS.get(key)
    if held is None:
        return
    held.stores -= 1
    if held.stores <= 0:
        del _LOCKS[key]
        os.close(held.fd)  # closing the only descriptor releases the flock


def _sweep(folder: Path) -> None:
    """Remove what a crash in the middle of a write left: ``write_json_atomic``'s temporary
    files (``.state.json.*``) beside the state file."""
    for leftover in folder.glob(f".{STATE_FILE}.*"):
        with contextlib.suppress(OSError):
            leftover.unlink()
            log.info("event=state_temp_removed path=%s", leftover)


def offering_to_json(offering: Offering) -> dict[str, str]:
    return {
        "instance_type": offering.instance_type,
        "zone": offering.zone,
        "capacity": str(offering.capacity_type),
    }


def offering_from_json(data: Mapping[str, Any]) -> Offering:
    return Offering(
        str(data["instance_type"]), str(data["zone"]), CapacityType(str(data["capacity"]))
    )


class DurableStore:
    """Named sections of one state file (or of another ``StateBackend``: etcd with ``ha``),
    written coalesced and off the event loop."""

    def __init__(
        self,
        path: Path | None,
        data: Mapping[str, Any] | None = None,
        *,
        writer: Writer = write_json_atomic,
        backend: StateBackend | None = None,
    ) -> None:
        self.path = path
        self._loaded: dict[str, Any] = {k: v for k, v in (data or {}).items() if k != "version"}
        self._dumps: dict[str, Callable[[], Any]] = {}
        self._loads: dict[str, Callable[[Any], None]] = {}
        # None: memory only; else the file at ``path`` unless another backend is given
        self.backend: StateBackend | None = backend
        if backend is None and path is not None:
            self.backend = FileBackend(path, writer)
        self._writer = writer
        self.epoch: int | None = None  # the term every write is fenced by (``reload``)
        self.on_fenced: list[Callable[[Fenced], None]] = []
        self._version = 0  # bumped by every change
        self._written = 0  # the version on disk
        self._task: asyncio.Task[None] | None = None
        self.writes = 0
        self._release: weakref.finalize[Any, Any] | None = None  # the state_dir lock's

    @property
    def writer(self) -> Writer:
        """How the file backend writes (tests wrap it to inject faults)."""
        return self.backend.writer if isinstance(self.backend, FileBackend) else self._writer

    @writer.setter
    def writer(self, writer: Writer) -> None:
        self._writer = writer
        if isinstance(self.backend, FileBackend):
            self.backend.writer = writer

    @classmethod
    def open(
        cls,
        state_dir: str | Path | None,
        *,
        writer: Writer = write_json_atomic,
        backend: StateBackend | None = None,
    ) -> DurableStore:
        """The store in ``state_dir`` (its file read now; none yet is an empty store), or a
        memory-only store when ``state_dir`` is None. With ``backend`` (etcd, ``ha``) the
        state lives there, read by ``reload`` when a term starts, and ``state_dir`` (when
        set) is only locked. Raises StateError for a damaged file."""
        if backend is not None and state_dir is None:
            return cls(None, backend=backend)
        if state_dir is None:
            log.warning(
                "event=state_in_memory reason=no-state_dir "
                "effect=a-restart-forgets-launches-in-flight-and-slurm-requests"
            )
            return cls(None, writer=writer)
        key, taken = _lock(Path(state_dir))
        try:
            if taken:  # no other store of this process may be writing
                _sweep(Path(state_dir))
            if backend is not None:
                store = cls(None, backend=backend)
            else:
                store = cls(Path(state_dir) / STATE_FILE, _read(Path(state_dir) / STATE_FILE))
        except BaseException:
            _unlock(key)
            raise
        store.writer = writer
        store._release = weakref.finalize(store, _unlock, key)
        return store

    def close(self) -> None:
        """Release ``state_dir``'s lock (the last store of the process on it releases it; so
        does garbage collection, and the process's exit)."""
        if self._release is not None:
            self._release()

    @property
    def durable(self) -> bool:
        return self.backend is not None

    def section(
        self, name: str, dump: Callable[[], Any], load: Callable[[Any], None] | None = None
    ) -> Any:
        """Own section ``name``: ``dump()`` returns its current JSON (new objects: it is written
        on another thread) at every write. Returns what the file held for it, or None;
        ``load(data or None)`` takes it again at each ``reload`` (a term's start)."""
        self._dumps[name] = dump
        if load is not None:
            self._loads[name] = load
        return self._loaded.get(name)

    async def reload(self, epoch: int | None) -> None:
        """A term starts (``ha``): wait for a write in flight, read the backend again and hand
        each section's owner its part (``section(..., load)``); from now on every write is
        fenced by ``epoch`` (refused once another term began). Raises StateError."""
        if self._task is not None:
            with contextlib.suppress(Exception):
                await asyncio.shield(self._task)
        data = await self.backend.load() if self.backend is not None else None
        self.epoch = epoch
        self._loaded = {k: v for k, v in (data or {}).items() if k != "version"}
        self._written = self._version  # what was read is what is stored
        for name, load in self._loads.items():
            load(self._loaded.get(name))
        self.drop_unclaimed()

    def drop_unclaimed(self) -> list[str]:
        """Forget the sections the file held that nothing claimed (call once every part of
        the daemon is built; see the module docstring); returns their names."""
        dropped = sorted(set(self._loaded) - set(self._dumps))
        for name in dropped:
            del self._loaded[name]
            log.warning("event=state_section_dropped section=%s reason=unclaimed", name)
        if dropped and self.durable:
            self.changed()
        return dropped

    def changed(self) -> None:
        """Note a change: it is written soon, in the background, with any others."""
        self._version += 1
        if self.backend is not None and self._task is None:
            self._task = asyncio.get_running_loop().create_task(self._write())
            self._task.add_done_callback(_log_failure)

    async def flush(self) -> None:
        """Note a change and return once it (and every change before it) is on disk; raises
        what the write raised."""
        self.changed()
        target = self._version
        while self.backend is not None and self._written < target:
            if self._task is None:  # the last write failed: try again
                self._task = asyncio.get_running_loop().create_task(self._write())
                self._task.add_done_callback(_log_failure)
            await asyncio.shield(self._task)

    async def _write(self) -> None:
        assert self.backend is not None
        try:
            while self._written < self._version:
                version = self._version
                data = {"version": VERSION, **self._loaded}
                data.update({name: dump() for name, dump in self._dumps.items()})
                try:
                    await self.backend.save(data, self.epoch)
                except Fenced as exc:
                    for callback in list(self.on_fenced):
                        callback(exc)
                    raise
                self.writes += 1
                self._written = version
        finally:
            self._task = None


class Fenced(StateError):
    """A write refused by the backend: the term it was made in is over (another daemon
    leads). Whoever gets it must stop acting at once."""


class StateBackend(Protocol):
    """Where the store's snapshot lives: the file in ``state_dir`` (``FileBackend``), or etcd
    beside the leader key (``daemon.leader.state``)."""

    async def load(self) -> dict[str, Any] | None:
        """The last snapshot saved (with its ``version``), or None. Raises StateError."""
        ...

    async def save(self, snapshot: dict[str, Any], epoch: int | None) -> None:
        """Replace the snapshot; with ``epoch`` only while that term lasts, else ``Fenced``."""
        ...


class FileBackend:
    """``<state_dir>/state.json``, written by ``writer`` on a thread (temporary file, fsync,
    rename, fsync of the folder); one daemon per file, so the epoch fences nothing here."""

    def __init__(self, path: Path, writer: Writer = write_json_atomic) -> None:
        self.path = path
        self.writer = writer

    async def load(self) -> dict[str, Any] | None:
        return await asyncio.to_thread(_read, self.path)

    async def save(self, snapshot: dict[str, Any], epoch: int | None) -> None:
        await asyncio.to_thread(self.writer, self.path, snapshot)


def _read(path: Path) -> dict[str, Any] | None:
    """The state file's sections; None when there is none yet. Raises StateError."""
    try:
        data = json.loads(path.read_text())
    except FileNotFoundError:
        return None
    except (OSError, ValueError) as exc:
        raise StateError(f"cannot read the state file {path}: {exc}") from exc
    return checked(data, f"the state file {path}")


def checked(data: Any, where: str) -> dict[str, Any]:
    """A snapshot read from ``where``, if its version is this daemon's. Raises StateError."""
    if not isinstance(data, dict) or data.get("version") != VERSION:
        version = data.get("version") if isinstance(data, dict) else None
        raise StateError(f"{where} has version {version!r}, expected {VERSION}")
    log.info('event=state_loaded where="%s" sections=%s', where, ",".join(sorted(data)))
    return data


def _log_failure(task: asyncio.Task[None]) -> None:
    if not task.cancelled() and (exc := task.exception()) is not None:
        log.error('event=state_write_failed error="%r"', exc)


@dataclass(frozen=True, slots=True)
class IntentReplay:
    """A plan's launch unit whose intent ``restore`` found with no answer: made again by
    ``Executor.replay`` (its placeholders ``unconfirmed:<request_id>:<i>`` stand for it
    meanwhile)."""

    request_id: str
    node_type: str
    offering: Offering
    count: int
    replay: Replayable
    # the offerings that launched part of the unit before its intent: their tokens have
    # answered (sent again for the rest, EC2 refuses them), so the replay leaves them out
    answered: frozenset[Offering] = frozenset()


class LaunchJournal:
    """The launch ledger's ``ledger`` section: intents before ``addNodes``, then the answered
    launches the cloud does not list yet (see the module docstring)."""

    def __init__(self, store: DurableStore) -> None:
        self.store = store
        self._replays: list[IntentReplay] = []
        self._load(store.section("ledger", self._dump, self._load))
        # the joined nodes of the tracker's records at the last ``sync``, kept while they are
        self._walked: Kept[dict[str, list[float | None]]] = Kept()

    def _load(self, loaded: Any) -> None:
        """Take the section as read (at start, and again by ``DurableStore.reload``)."""
        loaded = loaded or {}
        try:
            self._intents: dict[str, dict[str, Any]] = {
                str(k): dict(v) for k, v in loaded.get("intents", {}).items()
            }
            self._entries: list[dict[str, Any]] = [dict(e) for e in loaded.get("entries", [])]
            for entry in self._entries:
                offering_from_json(entry["offering"])
                float(entry["accepted_at"])
            # request id -> the instances that stood for one of its placeholders (id ->
            # offering: ``NodeTracker.stood``); none in an older file, which says nothing of
            # them (``restore``: its placeholders' instances listed at the start stood)
            self._stood_written = "stood" in loaded or not self._entries
            self._stood: dict[str, dict[str, Offering]] = {
                str(r): {str(i): offering_from_json(o) for i, o in dict(ids).items()}
                for r, ids in dict(loaded.get("stood", {})).items()
            }
            for intent in self._intents.values():
                offering_from_json(intent["offering"])
                int(intent["count"]), float(intent["at"]), str(intent["node_type"])
                _replayable(intent)
                _answered(intent)
            # None: the file told nothing of which nodes joined (none, or an older one)
            self._joined: dict[str, list[float | None]] | None = None
            if "joined" in loaded:
                # [joined_at, missing_since, since when unlisted] (an older file: two)
                self._joined = {
                    str(k): [float(v[0]), _maybe(v[1]), _maybe(v[2]) if len(v) > 2 else None]
                    for k, v in loaded["joined"].items()
                }
        except (AttributeError, IndexError, KeyError, TypeError, ValueError) as exc:
            raise StateError(f"the ledger in {self.store.path} is malformed: {exc}") from exc

    def _dump(self) -> dict[str, Any]:
        return {
            "intents": {k: dict(v) for k, v in sorted(self._intents.items())},
            "entries": [dict(e) for e in self._entries],
            "joined": {k: list(v) for k, v in sorted((self._joined or {}).items())},
            # written even empty: an older shoal's file, which has none, says nothing of them
            "stood": {
                r: {i: offering_to_json(o) for i, o in sorted(ids.items())}
                for r, ids in sorted(self._stood.items())
            },
        }

    @property
    def intents(self) -> dict[str, dict[str, Any]]:
        """Launches asked for and not answered yet, by request id."""
        return dict(self._intents)

    async def intent(
        self,
        request_id: str,
        node_type: NodeType,
        count: int,
        offering: Offering,
        now: float,
        replay: Replayable | None = None,
        answered: tuple[tuple[str, Offering], ...] = (),
    ) -> None:
        """Before each offering ``addNodes`` tries: the launch, with ``offering``, is on disk
        once this returns; with ``replay`` (a plan's launch unit), what makes it again;
        ``answered``, the ids the unit's earlier offerings launched (``count`` is the rest):
        a restart books them and makes only the rest again."""
        intent: dict[str, Any] = {
            "node_type": node_type.name,
            "count": count,
            "offering": offering_to_json(offering),
            "at": now,
        }
        # what an earlier intent of the unit named stays named: a replay's rewrite (a fresh
        # process: no answers of its own yet) would drop it, and a second restart would book
        # those ids no more (review reviewp2)
        named = [dict(a) for a in self._intents.get(request_id, {}).get("answered", [])]
        known = {a["id"] for a in named} | {a.get("listed_id") for a in named}
        named += [{"id": i, "offering": offering_to_json(o)} for i, o in answered if i not in known]
        if named:
            intent["answered"] = named
        if replay is not None:
            intent["replay"] = {
                "tags": dict(replay.tags),
                "gang": replay.gang,
                "cause": replay.cause,
            }
        self._intents[request_id] = intent
        await self.store.flush()

    @property
    def replays(self) -> list[IntentReplay]:
        """The plan launches ``restore`` found as intents with no answer and not settled yet:
        what a pass may make again (``Controller._replay_intents``, ``Executor.replay``)."""
        return list(self._replays)

    def settle_replay(self, request_id: str) -> None:
        """That launch was made again (its answer dropped its intent), or needs no more
        thought (listed, expired, or its node type changed): its intent, kept until now so
        a restart finds it again, goes too."""
        self._replays = [r for r in self._replays if r.request_id != request_id]
        if self._intents.pop(request_id, None) is not None:
            self.store.changed()

    def sync(self, tracker: NodeTracker, answered: Iterable[str] = ()) -> None:
        """After a launch was booked (its intents are answered) or a listing was applied: keep
        the tracker's ledger entries and its nodes seen joined; written in the background
        when they changed. The joined nodes are walked in the tracker's order, not sorted
        (twice a pass): a dict compares equal in any order, and ``_dump`` sorts them; and
        not walked again while the tracker's records are the same (its ``version``)."""
        waiting = {r.request_id for r in self._replays}  # still to make again: kept
        dropped = [
            r for r in answered if r not in waiting and self._intents.pop(r, None) is not None
        ]
        # an answered id a listing shows is the listing's to count from now: the intent
        # keeps its offering (a replay leaves it out) and the id as ``listed_id`` (its
        # ``id`` None), which a later restart does not book again, gone or not (review
        # reviewo, finding 5), and which the unit's next offering's ``intent`` does not name
        # again (it merges by id: an id only set to None was named again, review reviewq3,
        # finding 2). An older shoal reads the None as listed too: a rollback books nothing
        # gone (review review5)
        pruned = False
        for intent in self._intents.values():
            for a in intent.get("answered", []):
                if a["id"] is None:
                    continue
                record = tracker.get(a["id"])
                if record is not None and record.listed:
                    a["listed_id"], a["id"], pruned = a["id"], None, True
        entries = [_entry(t) for t in tracker.pending() if t.state is not TrackedState.TERMINATED]
        stood = tracker.stood()
        joined = self._walked.get((tracker.version,), lambda: _joined(tracker))
        if (
            dropped
            or pruned
            or entries != self._entries
            or stood != self._stood
            or joined != self._joined
        ):
            self._entries, self._stood, self._joined = entries, stood, joined
            self.store.changed()

    def restore(self, tracker: NodeTracker) -> list[TrackedNode]:
        """At start, before the first listing: put the ledger back into ``tracker``; intents
        without an answer become placeholders (found again by their request-id tag); and the
        nodes seen joined (``NodeTracker.restore_joined``)."""
        joined = self._joined
        tracker.restore_joined(
            None if joined is None else {k: (v[0], v[1], v[2]) for k, v in joined.items()}
        )
        restored: list[TrackedNode] = []
        placeholders: dict[tuple[str, str], list[dict[str, Any]]] = {}
        for entry in self._entries:
            intent = self._intents.get(entry["request_id"])
            if entry.get("placeholder") and intent is not None and _replayable(intent) is not None:
                continue  # an intent still to make again: made into placeholders below
            if entry.get("placeholder"):
                placeholders.setdefault((entry["request_id"], entry["token"]), []).append(entry)
                continue
            attempt = LaunchAttempt(
                request_id=str(entry["request_id"]),
                offering=offering_from_json(entry["offering"]),
                requested=1,
                client_token=str(entry.get("token", "")),
                ids=(str(entry["id"]),),
            )
            restored += tracker.record_launch([attempt], float(entry["accepted_at"]))
        for (request_id, token), group in placeholders.items():
            restored += self._placeholders(
                tracker,
                request_id,
                token,
                offering_from_json(group[0]["offering"]),
                len(group),
                float(group[0]["accepted_at"]),
            )
        # the placeholders kept are what is left of their launches: the instances that
        # stood for the others are not new to the first listing (review reviewo, finding 1);
        # an intent's below are its whole count, and they stand for them again. A file from
        # before ``stood`` cannot say which stood: the instances of those requests the first
        # listing shows are taken to have (capacity held until the TTL at worst, where
        # taking them for new launched a node twice: review review5, finding 1)
        unknown = () if self._stood_written else {request for request, _ in placeholders}
        tracker.restore_stood(self._stood, unknown=unknown)
        self._replays = []
        for request_id, intent in self._intents.items():
            offering = offering_from_json(intent["offering"])
            answered = _answered(intent)
            for instance_id, where in answered:  # the unit's earlier offerings'
                if instance_id is None:
                    continue  # listed since: the listing counts it
                token = client_token(request_id, where)
                attempt = LaunchAttempt(request_id, where, 1, token, ids=(instance_id,))
                restored += tracker.record_launch([attempt], float(intent["at"]))
            # kept with the intent while it waits (review reviewp2: dropped here, a write
            # before the first ``sync`` lost them); ``sync`` moves an id to ``listed_id`` once
            # a listing shows it, so a second restart does not book one gone since (reviewo, 5)
            restored += self._placeholders(
                tracker, request_id, request_id, offering, int(intent["count"]), float(intent["at"])
            )
            replay = _replayable(intent)
            if replay is not None:
                self._replays.append(
                    IntentReplay(
                        request_id,
                        str(intent["node_type"]),
                        offering,
                        int(intent["count"]),
                        replay,
                        frozenset(where for _, where in answered),
                    )
                )
        # an intent to make again stays on disk until settled: a restart before then finds it
        self._intents = {r.request_id: self._intents[r.request_id] for r in self._replays}
        return restored

    @staticmethod
    def _placeholders(
        tracker: NodeTracker,
        request_id: str,
        token: str,
        offering: Offering,
        count: int,
        at: float,
    ) -> list[TrackedNode]:
        lost = RetryableError("launch in flight when the daemon stopped")
        attempt = LaunchAttempt(request_id, offering, count, token, error=lost)
        return tracker.record_launch([attempt], at)


def _replayable(intent: Mapping[str, Any]) -> Replayable | None:
    """What makes an intent's launch again, as ``LaunchJournal.intent`` wrote it; None for
    a launch outside a plan (and in files from before it was kept). Raises on a malformed
    one: a gang must be a JSON boolean ("false" would read as true)."""
    if "replay" not in intent:
        return None
    replay = intent["replay"]
    if not isinstance(replay["gang"], bool):
        raise TypeError(f"replay gang {replay['gang']!r} is not true or false")
    tags = {str(k): str(v) for k, v in dict(replay["tags"]).items()}
    return Replayable(tags, replay["gang"], str(replay["cause"]))


def _answered(intent: Mapping[str, Any]) -> list[tuple[str | None, Offering]]:
    """The ids an intent's unit had launched in its earlier offerings, as ``intent`` wrote
    them (none in files from before they were kept), None for one a listing showed since
    (``sync`` moved it to ``listed_id``; an older file set its id to None alone). Raises
    on a malformed one."""
    return [
        (None if a["id"] is None else str(a["id"]), offering_from_json(a["offering"]))
        for a in intent.get("answered", [])
    ]


def _maybe(value: Any) -> float | None:
    return None if value is None else float(value)


def _joined(tracker: NodeTracker) -> dict[str, list[float | None]]:
    """The nodes seen joined (``NodeTracker.seen_joined``): when, and since when missing."""
    return {k: list(v) for k, v in tracker.seen_joined().items()}


def _entry(tracked: TrackedNode) -> dict[str, Any]:
    token = ""
    if tracked.placeholder:  # named unconfirmed:<client token>:<i> by the tracker
        token = tracked.id.split(":")[1]
    return {
        "id": tracked.id,
        "request_id": tracked.node.tags.get(TAG_REQUEST_ID, ""),
        "token": token,
        # as booked: a zoneless offering stays zoneless (the cloud chose the zone), so a
        # restored placeholder is released by its instance in any zone (review reviewq3, 1)
        "offering": offering_to_json(node_offering(tracked.node, "")),
        "accepted_at": tracked.accepted_at,
        "placeholder": tracked.placeholder,
    }
