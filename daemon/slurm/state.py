"""The power saver's state file: resume requests accepted but not yet launched, and nodes held
DOWN after a failed launch. Both must survive a restart (``kill -9`` included):

- a request is written (and fsynced) before the hook is answered, and removed once its launch
  returned instance ids; a request found at start is launched again with the same request id,
  so the provider's idempotency (the client token is a function of request id and offering)
  returns the instances a launch that died with the daemon may have made, and launches nothing
  twice;
- a hold is written when a launch failed and removed once the node was powered down, so a
  node is never left DOWN because the daemon restarted;
- the ids of the latest hook requests accepted (``accepted_ids``, the last
  ``ACCEPTED_IDS_KEPT``), written with the request they carry: a hook's request found again in
  the spool (``spool``) after a crash between its accept and its deletion is not served twice.

Writes replace the file atomically (temporary file, fsync, rename). The format is JSON::

    {"version": 1,
     "accepted_ids": ["hook-..."],
     "requests": {"cloud1": {"request_id": "slurm-...", "accepted_at": 1700000000.0,
                             "jobs": ["12"]}},
     "holds": {"cloud2": {"until": 1700000180.0, "reason": "shoal: no capacity ...",
                          "marked": true}}}
"""

from __future__ import annotations

import json
import os
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from shoal.providers.files import write_json_atomic

__all__ = ["Hold", "PowerState", "ResumeRequest", "StateError"]

VERSION = 1
ACCEPTED_IDS_KEPT = 1024  # far more than requests in flight between an accept and its delete


class StateError(RuntimeError):
    """The state file exists but cannot be read or understood."""


@dataclass(frozen=True, slots=True)
class ResumeRequest:
    """Slurm asked for ``node``; ``request_id`` names its launch (and its client tokens)."""

    request_id: str
    accepted_at: float
    jobs: tuple[str, ...] = ()  # the jobs waiting for the node (from SLURM_RESUME_FILE)


@dataclass(frozen=True, slots=True)
class Hold:
    """``node`` stays DOWN with ``reason`` until ``until``, then is powered down."""

    until: float
    reason: str
    marked: bool = False  # DOWN is set in Slurm


class PowerState:
    """Requests and holds by Slurm node name, kept in ``path``."""

    def __init__(self, path: str | os.PathLike[str]) -> None:
        self.path = Path(path)
        self.requests: dict[str, ResumeRequest] = {}
        self.holds: dict[str, Hold] = {}
        self.accepted_ids: list[str] = []  # oldest first, at most ACCEPTED_IDS_KEPT

    def note_accepted(self, request_id: str) -> None:
        """Remember a hook request id as accepted (saved by the next ``save``)."""
        self.accepted_ids = [*self.accepted_ids, request_id][-ACCEPTED_IDS_KEPT:]

    @classmethod
    def load(cls, path: str | os.PathLike[str]) -> PowerState:
        """The state in ``path``; empty when the file does not exist."""
        state = cls(path)
        try:
            data = json.loads(state.path.read_text())
        except FileNotFoundError:
            return state
        except (OSError, ValueError) as exc:
            raise StateError(f"cannot read the Slurm state file {state.path}: {exc}") from exc
        try:
            if data.get("version") != VERSION:
                raise ValueError(f"version {data.get('version')!r}, expected {VERSION}")
            state.requests = {
                node: ResumeRequest(
                    str(r["request_id"]), float(r["accepted_at"]), tuple(r.get("jobs", ()))
                )
                for node, r in data.get("requests", {}).items()
            }
            state.accepted_ids = [str(i) for i in data.get("accepted_ids", [])]
            state.holds = {
                node: Hold(float(h["until"]), str(h["reason"]), bool(h.get("marked", False)))
                for node, h in data.get("holds", {}).items()
            }
        except (AttributeError, KeyError, TypeError, ValueError) as exc:
            raise StateError(f"the Slurm state file {state.path} is malformed: {exc}") from exc
        return state

    def to_json(self) -> dict[str, Any]:
        return {
            "version": VERSION,
            "requests": {
                n: {**asdict(r), "jobs": list(r.jobs)} for n, r in sorted(self.requests.items())
            },
            "holds": {n: asdict(h) for n, h in sorted(self.holds.items())},
            "accepted_ids": list(self.accepted_ids),
        }

    def save(self) -> None:
        """Replace the file atomically with the current state (fsynced before it returns)."""
        write_json_atomic(self.path, self.to_json())
