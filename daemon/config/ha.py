"""The ``ha`` section: two or three daemons for one cluster, one leading (``daemon.leader``).

Absent, shoal runs alone and acts at once, as it always did. Present, each daemon campaigns
for one key in etcd, held with a lease of ``ttl`` seconds; only the holder plans and acts.
"""

from __future__ import annotations

from typing import Annotated

from pydantic import BaseModel, Field, field_validator
from shoal.daemon.config.common import _STRICT
from shoal.daemon.units import Duration

__all__ = ["MIN_TTL", "HaConfig", "ha_changes"]

MIN_TTL = 2  # seconds: etcd's minimum lease TTL


class HaConfig(BaseModel):
    """Leader election on etcd: only the leader plans and acts."""

    model_config = _STRICT
    etcd: tuple[Annotated[str, Field(pattern=r"^https?://[^/\s]+/?$")], ...] = Field(min_length=1)
    """etcd's client URLs (http://host:2379), tried in order; the v3 JSON gateway of etcd
    3.4 or later."""
    ttl: Duration = 10.0
    """The leader's lease, whole seconds (at least 2). A leader that could not renew it
    stops acting before it expires (after ttl minus a margin); another daemon leads about
    one ttl after a leader's host died, at once after a clean stop."""
    key: str | None = Field(default=None, pattern=r"^/\S+$")
    """The election key; null: /shoal/<cluster_name>/leader."""
    name: str | None = Field(default=None, min_length=1)
    """This daemon's name in the election and /v1/status; null: <hostname>:<pid>."""
    advertise: str | None = Field(default=None, min_length=1)
    """The URL followers forward demand pushes and Slurm hook calls to while this daemon
    leads (and name in their 503 when it does not answer); null: http://<api.listen>."""

    @field_validator("ttl")
    @classmethod
    def _whole_seconds(cls, ttl: float) -> float:
        if ttl != int(ttl) or ttl < MIN_TTL:
            raise ValueError(f"expected whole seconds, at least {MIN_TTL}s (etcd's minimum lease)")
        return ttl

    def leader_key(self, cluster_name: str) -> str:
        return self.key or f"/shoal/{cluster_name}/leader"

    def state_key(self, cluster_name: str) -> str:
        """Where the leader keeps the durable state: /shoal/<cluster_name>/state, or
        <key>/state beside a configured election key."""
        return f"{self.key}/state" if self.key else f"/shoal/{cluster_name}/state"


def ha_changes(old: HaConfig | None, new: HaConfig | None) -> list[str]:
    """What differs between two ``ha`` sections, as dotted keys (``ha`` when one is absent):
    a running daemon's elector cannot take them (a reload keeps the old, a restart applies)."""
    if old is None or new is None:
        return [] if old is new else ["ha"]
    return [f"ha.{key}" for key in HaConfig.model_fields if getattr(old, key) != getattr(new, key)]
