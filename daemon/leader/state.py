"""The durable state in the election's store while ``ha`` is set: what fences a deposed leader.

With ``ha`` the ``DurableStore`` (``daemon.durable``: the launch ledger, the power saver's
requests, nodes kept DOWN, the nodes seen joined) does not write ``state.json``: a new leader
on another host must find the launches in flight of the last one. Its ``StateBackend`` is
the election's store, one snapshot under one key beside the leader key
(``ha.state_key``: ``/shoal/<cluster>/state``)::

    load()                 kv/range of the state key (None: no leader saved any yet)
    save(snapshot, epoch)  kv/txn: IF the leader key's create_revision == epoch
                                   THEN put the state key
                           not succeeded: ``Fenced`` (another term began)

The epoch is the leader key's create revision (``EtcdElector``), so a write succeeds only
while the key this daemon created still exists: after its lease ran out or another daemon
took the key, every write of the old term is refused, whatever the old leader believes.
Every launch intent is such a write, flushed BEFORE its ``addNodes`` (``LaunchJournal``), so
a deposed leader cannot launch after another term began: its intent is refused, the
executor does not launch, and the store's ``on_fenced`` makes the daemon step down at once
(``daemon.service``). A new leader reads the state at its term's start
(``DurableStore.reload``, ``Controller.begin_term``) as a restarted daemon reads its file.

``MemoryStateBackend`` is the same over ``daemon.leader.memory.MemoryElection`` (the unit
tests' and the chaos harness's store): the same fence (``MemoryElection.holds``), and a
partition makes its calls raise as a lost etcd does. ``state_backend`` picks the one that
goes with an elector.
"""

from __future__ import annotations

import json
from typing import Any

from shoal.daemon.config import ShoalConfig
from shoal.daemon.durable import Fenced, StateBackend, StateError, checked
from shoal.daemon.leader import LeaderElector, LeaderInfo
from shoal.daemon.leader.etcd import EtcdElector, _b64, _unb64
from shoal.daemon.leader.memory import MemoryElection, MemoryElector

__all__ = ["EtcdStateBackend", "MemoryStateBackend", "state_backend"]


def _fenced(where: str, epoch: int | None) -> Fenced:
    return Fenced(f"state write to {where} refused: term {epoch} no longer holds the leader key")


class EtcdStateBackend:
    """The snapshot under ``key`` in etcd, written only while ``elector``'s term holds its key."""

    def __init__(self, elector: EtcdElector, key: str) -> None:
        self.elector = elector
        self.key = key

    async def load(self) -> dict[str, Any] | None:
        kvs = (await self.elector.call("kv/range", {"key": _b64(self.key)})).get("kvs") or []
        if not kvs:
            return None
        try:
            data = json.loads(_unb64(kvs[0].get("value", "")))
        except ValueError as exc:
            raise StateError(f"cannot read the state in etcd key {self.key}: {exc}") from exc
        return checked(data, f"etcd key {self.key}")

    async def save(self, snapshot: dict[str, Any], epoch: int | None) -> None:
        if epoch is None:
            raise _fenced(f"etcd key {self.key}", epoch)
        compare = {
            "key": _b64(self.elector.key),
            "result": "EQUAL",
            "target": "CREATE",
            "create_revision": str(epoch),
        }
        put = {"request_put": {"key": _b64(self.key), "value": _b64(json.dumps(snapshot))}}
        answer = await self.elector.call("kv/txn", {"compare": [compare], "success": [put]})
        if not answer.get("succeeded"):
            raise _fenced(f"etcd key {self.key}", epoch)


class MemoryStateBackend:
    """The snapshot on a ``MemoryElection`` (JSON text, as etcd keeps bytes), written only
    while the term ``epoch`` holds the election's key; ``who`` is the daemon's name there
    (its partitions)."""

    def __init__(self, election: MemoryElection, who: LeaderInfo) -> None:
        self.election = election
        self.who = who
        self.saves = 0

    async def load(self) -> dict[str, Any] | None:
        self.election._reach(self.who)
        text = self.election.state
        return None if text is None else checked(json.loads(text), "the memory election")

    async def save(self, snapshot: dict[str, Any], epoch: int | None) -> None:
        if not self.election.holds(self.who, epoch):
            raise _fenced("the memory election", epoch)
        self.election.state = json.dumps(snapshot)
        self.saves += 1


def state_backend(elector: LeaderElector, config: ShoalConfig) -> StateBackend | None:
    """The backend that goes with ``elector`` (its store), or None (the file in state_dir)."""
    if isinstance(elector, MemoryElector):
        return MemoryStateBackend(elector.election, elector.me)
    if isinstance(elector, EtcdElector) and config.ha is not None:
        return EtcdStateBackend(elector, config.ha.state_key(config.cluster_name))
    return None
