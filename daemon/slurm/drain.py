"""The drain hook of a Slurm cluster in external mode: ``scontrol update`` instead of a command.

``drain(node)`` sets ``State=DRAIN Reason=shoal`` (no new jobs; running ones finish; an
interruption notice's drain gives its own reason, "spot interruption"), and
``undrain(node)`` sets ``State=RESUME`` when demand returns before the node was removed. The
node id is the Slurm node name: in external mode a worker registers as a dynamic node named
after its instance. Slurm's errors become ``DrainError``s (the node is left as it was and the
next plan asks again); a drain that does not finish within the command timeout is a
``DrainTimeout``.

Slurm remembers shoal's drains as well as the instance's ``shoal:draining`` tag does: a node
drained with reason ``shoal`` (exactly) is shoal's, and one drained with any other reason is
not, whatever its tag says (the source reports them as ``DemandUpdate.own_drains``; an admin
who drains a node again, "bad GPU", takes it from shoal). ``DrainAdopter`` (a source
listener, external mode) tags the instance of every such node whose tag is missing (a drain
from before the tag existed, or a tag lost), so the daemon adopts it as its own drain: a
node it terminates once idle or undrains when demand returns. Until then it is draining and
static (not room, not touched), as a node drained by anyone else stays. The adopter tags
under the executor's lock on the node, after checking again that the latest read still
shows the drain and was made after this daemon last undrained the node: a read from before
an undrain, or a tag call retried across one, would otherwise put the mark back on a node
taking work again.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Iterable
from typing import TYPE_CHECKING

from shoal.daemon.drain import INTERRUPTION_REASONS, DrainError, DrainTimeout
from shoal.daemon.nodes import TrackedState
from shoal.providers.base import TAG_AUTOSCALED, TAG_DRAINING
from shoal.providers.slurm import SlurmClient, SlurmError, SlurmNode

if TYPE_CHECKING:
    from shoal.daemon.loop import Controller
    from shoal.daemon.slurm.source import SlurmSnapshot

__all__ = ["DRAIN_REASON", "DrainAdopter", "SlurmDrainHook", "drained_by_shoal"]

log = logging.getLogger(__name__)

DRAIN_REASON = "shoal"  # the clean-up loop deletes dynamic nodes drained with it
NOT_DRAINED = "Invalid node state specified"  # scontrol's answer to resuming a node not drained


def drained_by_shoal(node: SlurmNode) -> bool:
    """Slurm shows the node drained with shoal's reason, exactly ("shoal", or an interruption
    notice's, "spot interruption"): a drain with any other ("shoal-maint", or an admin's
    "bad GPU" over shoal's) is someone else's."""
    return node.drain and (
        node.reason == DRAIN_REASON or node.reason in INTERRUPTION_REASONS.values()
    )


class SlurmDrainHook:
    """Drain and undrain Slurm nodes with scontrol."""

    def __init__(self, client: SlurmClient, reason: str = DRAIN_REASON) -> None:
        self.client = client
        self.reason = reason

    async def drain(self, node: str, reason: str | None = None) -> None:
        try:
            await self.client.drain(node, reason or self.reason)
        except SlurmError as exc:
            raise _drain_error("drain", exc) from exc

    async def undrain(self, node: str) -> None:
        """``State=RESUME``; a node that is not drained (Slurm refuses the resume: "Invalid
        node state specified") is undrained already, as when only shoal's mark said it was
        draining (the drain never made): an undrain, like a drain, may be made twice."""
        try:
            await self.client.resume(node)
        except SlurmError as exc:
            if exc.code != "timeout" and NOT_DRAINED in f"{exc} {exc.stderr}":
                log.info("event=undrain_not_drained node=%s", node)
                return
            raise _drain_error("undrain", exc) from exc


def _drain_error(what: str, exc: SlurmError) -> DrainError:
    if exc.code == "timeout":
        return DrainTimeout(f"slurm {what} timed out: {exc}")
    return DrainError(f"slurm {what} failed: {exc}")


class DrainAdopter:
    """Tags the instances of nodes Slurm shows drained by shoal that lack ``TAG_DRAINING``
    (external mode: a node is named after its instance). ``observe`` is a source listener;
    each tag is one task, through the executor's retry layer; a failure is tried again on a
    later read."""

    def __init__(self, controller: Controller) -> None:
        self.controller = controller
        self._tasks: dict[str, asyncio.Task[None]] = {}
        self._latest: SlurmSnapshot | None = None

    def untagged(self, nodes: Iterable[SlurmNode], at: float | None = None) -> list[str]:
        """Nodes drained by shoal whose listed, autoscaled instance has no draining tag and
        is not shoal's draining node already; with ``at`` (when the read was made), not
        undrained by this daemon since."""
        tracker = self.controller.tracker
        out = []
        for node in nodes:
            tracked = tracker.get(node.name)
            undrained = tracker.undrained_at(node.name)
            if (
                drained_by_shoal(node)
                and tracked is not None
                and tracked.listed
                and tracked.state is not TrackedState.TERMINATED
                and tracked.node.tags.get(TAG_AUTOSCALED) == "true"
                and not (tracked.state is TrackedState.DRAINING and not tracked.static)
                and TAG_DRAINING not in tracked.node.tags
                and (at is None or undrained is None or at > undrained)
            ):
                out.append(node.name)
        return out

    def observe(self, snapshot: SlurmSnapshot) -> None:
        self._latest = snapshot
        for name in self.untagged(snapshot.nodes, snapshot.at):
            if name not in self._tasks:
                task = asyncio.get_running_loop().create_task(self._adopt(name))
                self._tasks[name] = task
                task.add_done_callback(lambda _, name=name: self._tasks.pop(name, None))

    async def _adopt(self, name: str) -> None:
        executor = self.controller.executor
        async with executor.node_lock(name):
            latest = self._latest
            node = latest.node(name) if latest is not None else None
            if node is None or name not in self.untagged([node], latest.at if latest else None):
                log.info(
                    "event=drain_adopt_skipped node=%s reason=no-longer-drained-by-shoal", name
                )
                return
            try:
                await executor.mark_draining(name, self.controller.clock.now())
            except Exception as exc:
                log.warning('event=drain_adopt_failed node=%s error="%r"', name, exc)
            else:
                log.info("event=drain_adopted node=%s reason=slurm-drained-by-shoal", name)

    async def close(self) -> None:
        for task in list(self._tasks.values()):
            task.cancel()
        await asyncio.gather(*self._tasks.values(), return_exceptions=True)
