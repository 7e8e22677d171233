"""The power saver's durable state: resume requests accepted but not yet launched (with the
offering chosen for each and its client token), suspend requests not yet served, and nodes
kept DOWN after a failed launch. All of it must survive a restart (``kill -9`` included), so
it lives in the ``slurm`` section of the daemon's one state file (``daemon.durable``):

- a resume or suspend request is on disk before the hook is answered, and removed once it was
  served; a request found at start is served again (suspends first: a suspend accepted
  drops the node's older resume, so a resume on disk beside a suspend came after it);
- before a resume's launch tries an offering, that offering and its client token are on
  disk (each offering tried, not only the first: a launch that falls through to the next
  offering saves that one before trying it); a replay tries the saved offering with the same
  token first, so the cloud returns what it launched, whatever the backoff table (memory
  only) says now and whatever capacity the offerings tried before it have again;
- a node kept DOWN is on disk before it is set DOWN and removed once it was powered down
  or dropped, so a node is never left DOWN because the daemon restarted.
- a multi-node job's nodes (``gang``, from SLURM_RESUME_FILE) are each a request naming the
  whole gang: one of them (the first still requested) launches them all, all or nothing;
- the ids of the latest hook requests accepted (``accepted_ids``, the last
  ``ACCEPTED_IDS_KEPT``), written with the request they carry: a hook's request found again in
  the spool (``spool``) after a crash between its accept and its deletion is not served twice.

The section's JSON::

    {"accepted_ids": ["hook-..."],
     "requests": {"cloud1": {"request_id": "slurm-...", "accepted_at": 1700000000.0,
                             "jobs": ["12"],
                             "offering": {"instance_type": "c5.xlarge", "zone": "us-west-2a",
                                          "capacity": "on-demand"},
                             "client_token": "shoal-...",
                             "gang": ["cloud1", "cloud2"]}},
     "suspends": {"cloud3": {"kind": "suspend", "accepted_at": 1700000100.0}},
     "kept_down": {"cloud2": {"until": 1700000180.0, "reason": "shoal: no capacity ...",
                              "marked": true}}}

A file written before the section was renamed has ``"holds"`` for ``"kept_down"``: it is
read all the same.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any

from shoal.daemon.durable import DurableStore, StateError, offering_from_json, offering_to_json
from shoal.scaler.model import Offering

__all__ = ["KeptDown", "PowerState", "ResumeRequest", "StateError", "SuspendRequest"]

SECTION = "slurm"
ACCEPTED_IDS_KEPT = 1024  # far more than requests in flight between an accept and its delete


@dataclass(frozen=True, slots=True)
class ResumeRequest:
    """Slurm asked for ``node``; ``request_id`` names its launch (and its client tokens)."""

    request_id: str
    accepted_at: float
    jobs: tuple[str, ...] = ()  # the jobs waiting for the node (from SLURM_RESUME_FILE)
    offering: Offering | None = None  # the last tried, saved before its launch; a replay's first
    client_token: str = ""  # the offering's client token, for the logs and the operator
    # the nodes launched all or nothing with this one (a multi-node job's, sorted, this one
    # among them); () for a node launched on its own
    gang: tuple[str, ...] = ()


@dataclass(frozen=True, slots=True)
class SuspendRequest:
    """Slurm suspended ``node`` (``suspend``), or it never registered (``resume_fail``)."""

    kind: str
    accepted_at: float


@dataclass(frozen=True, slots=True)
class KeptDown:
    """``node`` stays DOWN with ``reason`` until ``until``, then is powered down."""

    until: float
    reason: str
    marked: bool = False  # DOWN is set in Slurm


class PowerState:
    """Requests, suspends and nodes kept DOWN by Slurm node name, kept in ``store`` (memory
    only when none is given)."""

    def __init__(self, store: DurableStore | None = None) -> None:
        self.store = store or DurableStore(None)
        self.requests: dict[str, ResumeRequest] = {}
        self.suspends: dict[str, SuspendRequest] = {}
        self.kept_down: dict[str, KeptDown] = {}
        self.accepted_ids: list[str] = []  # oldest first, at most ACCEPTED_IDS_KEPT
        data = self.store.section(SECTION, self.to_json, lambda data: self._parse(data or {}))
        if data is not None:
            self._parse(data)

    def note_accepted(self, request_id: str) -> None:
        """Remember a hook request id as accepted (saved by the next ``save``)."""
        self.accepted_ids = [*self.accepted_ids, request_id][-ACCEPTED_IDS_KEPT:]

    def _parse(self, data: Any) -> None:
        try:
            self.requests = {
                node: ResumeRequest(
                    str(r["request_id"]),
                    float(r["accepted_at"]),
                    tuple(r.get("jobs", ())),
                    offering_from_json(r["offering"]) if r.get("offering") else None,
                    str(r.get("client_token", "")),
                    tuple(str(n) for n in r.get("gang", ())),
                )
                for node, r in data.get("requests", {}).items()
            }
            self.accepted_ids = [str(i) for i in data.get("accepted_ids", [])]
            self.suspends = {
                node: SuspendRequest(str(s["kind"]), float(s["accepted_at"]))
                for node, s in data.get("suspends", {}).items()
            }
            kept_down = data.get("kept_down", data.get("holds", {}))  # "holds": older files
            self.kept_down = {
                node: KeptDown(float(k["until"]), str(k["reason"]), bool(k.get("marked", False)))
                for node, k in kept_down.items()
            }
        except (AttributeError, KeyError, TypeError, ValueError) as exc:
            raise StateError(
                f"the Slurm section of the state file {self.store.path} is malformed: {exc}"
            ) from exc

    def to_json(self) -> dict[str, Any]:
        def request(r: ResumeRequest) -> dict[str, Any]:
            offering = offering_to_json(r.offering) if r.offering is not None else None
            return {**asdict(r), "jobs": list(r.jobs), "offering": offering, "gang": list(r.gang)}

        return {
            "requests": {n: request(r) for n, r in sorted(self.requests.items())},
            "suspends": {n: asdict(s) for n, s in sorted(self.suspends.items())},
            "kept_down": {n: asdict(k) for n, k in sorted(self.kept_down.items())},
            "accepted_ids": list(self.accepted_ids),
        }

    async def save(self) -> None:
        """Return once the current state is on disk (coalesced with other changes)."""
        await self.store.flush()

    def changed(self) -> None:
        """Write the current state soon, in the background (what may be lost without harm:
        a request served, a node kept DOWN released)."""
        self.store.changed()
