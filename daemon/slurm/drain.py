"""The drain hook of a Slurm cluster in external mode: ``scontrol update`` instead of a command.

``drain(node)`` sets ``State=DRAIN Reason=shoal`` (no new jobs; running ones finish), and
``undrain(node)`` sets ``State=RESUME`` when demand returns before the node was removed. The
node id is the Slurm node name: in external mode a worker registers as a dynamic node named
after its instance. Slurm's errors become ``DrainError``s (the node is left as it was and the
next plan asks again); a drain that does not finish within the command timeout is a
``DrainTimeout``.
"""

from __future__ import annotations

from collections.abc import Awaitable

from shoal.daemon.drain import DrainError, DrainTimeout
from shoal.providers.slurm import SlurmClient, SlurmError

__all__ = ["DRAIN_REASON", "SlurmDrainHook"]

DRAIN_REASON = "shoal"  # the clean-up loop deletes dynamic nodes drained with it


class SlurmDrainHook:
    """Drain and undrain Slurm nodes with scontrol."""

    def __init__(self, client: SlurmClient, reason: str = DRAIN_REASON) -> None:
        self.client = client
        self.reason = reason

    async def drain(self, node: str) -> None:
        await self._update("drain", self.client.drain(node, self.reason))

    async def undrain(self, node: str) -> None:
        await self._update("undrain", self.client.resume(node))

    @staticmethod
    async def _update(what: str, update: Awaitable[None]) -> None:
        try:
            await update
        except SlurmError as exc:
            if exc.code == "timeout":
                raise DrainTimeout(f"slurm {what} timed out: {exc}") from exc
            raise DrainError(f"slurm {what} failed: {exc}") from exc
