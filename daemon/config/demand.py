"""The ``demand`` and ``drain`` sections: where demand comes from, and the hooks that empty a
node before it is terminated."""

from __future__ import annotations

from pathlib import Path
from typing import Literal

from pydantic import BaseModel, field_validator
from shoal.daemon.config.common import _STRICT
from shoal.daemon.units import PositiveDuration

__all__ = ["DemandConfig", "DemandField", "DrainConfig"]

DemandField = Literal["queued", "running", "joined"]


class DemandConfig(BaseModel):
    """Where demand comes from (docs/demand-api.md)."""

    model_config = _STRICT

    api: bool = True
    """Accept PUT /v1/demand."""
    file: Path | None = None
    """A JSON or YAML demand file, re-read when it changes."""
    demo: bool = False
    """Built-in demo demand: a scale-up then scale-down cycle every few minutes."""
    slurm: bool = False
    """Read squeue and sinfo (settings in the slurm section); reports running and joined."""
    reports: tuple[DemandField, ...] = ("queued", "running")
    """What the pushed demand (API, file) reports: queued jobs always; running jobs per node
    (then a node running none is idle, so bodies must carry "running", [] when none run; a
    pusher that knows only the queue drops it, and idle scale-down then needs a drain hook);
    joined nodes (then bodies must carry "nodes", which decide when a node is ready)."""
    max_age: PositiveDuration = 300.0
    """Pushed demand older than this is stale: nothing is launched or removed until it is
    pushed again (a file is as old as its last write)."""

    @field_validator("reports")
    @classmethod
    def _queued(cls, value: tuple[str, ...]) -> tuple[str, ...]:
        if "queued" not in value:
            raise ValueError("must include queued")
        return tuple(dict.fromkeys(value))

    def sources(self) -> list[str]:
        """The demand sources configured."""
        named = (("api", self.api), ("file", self.file), ("demo", self.demo), ("slurm", self.slurm))
        return [n for n, on in named if on]

    def reports_running(self) -> bool:
        """Some source says which nodes run jobs (so the others are idle)."""
        pushed = (self.api or self.file is not None) and "running" in self.reports
        return pushed or self.demo or self.slurm


class DrainConfig(BaseModel):
    """Hooks run before a node is terminated, and when a draining node is taken back."""

    model_config = _STRICT

    command: tuple[str, ...] | None = None
    """argv run before a node is terminated; "{node}" is replaced by the node name, "{reason}"
    by "shoal" or an interruption notice's reason ("spot interruption")."""
    webhook: str | None = None
    """URL sent POST {"node": name} before a node is terminated (with "reason" for an
    interruption notice's drain)."""
    undrain_command: tuple[str, ...] | None = None
    """argv run when a draining node is taken back because demand returned."""
    undrain_webhook: str | None = None
    """URL sent POST {"node": name} when a draining node is taken back."""
    timeout: PositiveDuration = 30.0
    """How long the drain or undrain hook may take; past it the hook has failed."""

    @field_validator("command", "undrain_command")
    @classmethod
    def _argv(cls, value: tuple[str, ...] | None) -> tuple[str, ...] | None:
        if value is not None and (not value or not value[0]):
            raise ValueError('expected a non-empty argv list, e.g. ["kubectl", "drain", "{node}"]')
        return value

    @field_validator("webhook", "undrain_webhook")
    @classmethod
    def _url(cls, value: str | None) -> str | None:
        if value is not None and not value.startswith(("http://", "https://")):
            raise ValueError("expected an http:// or https:// URL")
        return value
