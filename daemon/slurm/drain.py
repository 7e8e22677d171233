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

The other way round, an admin's ``scontrol update State=RESUME`` over shoal's drain means
"don't drain this node": once a read has shown shoal's drain of a node whose drain the
daemon holds as confirmed (``drain_confirmed``), a later read that shows the node neither
drained nor shoal's drops the drain (``drain_dropped`` in the log): its tag is removed and
the tracker takes it as undrained (ready, room again). A read must have shown the drain
first, and after this daemon's last undrain of the node: a read made before the drain took
effect shows the node undrained too, and is no admin's resume.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Coroutine, Iterable
from typing import TYPE_CHECKING, Any

from shoal.daemon.drain import INTERRUPTION_REASONS, DrainError, DrainTimeout
from shoal.daemon.nodes import TrackedState
from shoal.daemon.slurm.client import SlurmClient
from shoal.daemon.slurm.constants import DRAIN_REASON, NOT_DRAINED
from shoal.daemon.slurm.errors import SlurmError
from shoal.daemon.slurm.parse import SlurmNode
from shoal.providers.base import TAG_AUTOSCALED, TAG_DRAINING

if TYPE_CHECKING:
    from shoal.daemon.loop import Controller
    from shoal.daemon.slurm.source import SlurmSnapshot

__all__ = ["DrainAdopter", "SlurmDrainHook", "drained_by_shoal"]

log = logging.getLogger(__name__)


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
        # node -> when the latest read showing shoal's confirmed drain of it was made
        self._shown: dict[str, float] = {}

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

    def resumed(self, nodes: Iterable[SlurmNode], at: float) -> list[str]:
        """Nodes whose drain shoal holds as confirmed that a read made at ``at`` shows no
        longer drained by shoal, after an earlier read (made since this daemon last undrained
        them) showed that drain: an admin resumed them. Notes the reads showing the drain."""
        tracker = self.controller.tracker
        out = []
        for node in nodes:
            tracked = tracker.get(node.name)
            if (
                tracked is None
                or tracked.static
                or tracked.state is not TrackedState.DRAINING
                or not tracked.drain_confirmed
            ):
                self._shown.pop(node.name, None)
                continue
            if drained_by_shoal(node):
                self._shown[node.name] = at
                continue
            shown = self._shown.get(node.name)
            undrained = tracker.undrained_at(node.name)
            if shown is not None and at > shown and (undrained is None or shown > undrained):
                out.append(node.name)
        return out

    def observe(self, snapshot: SlurmSnapshot) -> None:
        self._latest = snapshot
        for name in self.untagged(snapshot.nodes, snapshot.at):
            self._spawn(name, self._adopt(name))
        for name in self.resumed(snapshot.nodes, snapshot.at):
            self._spawn(name, self._drop(name))
        listed = {n.name for n in snapshot.nodes}  # dynamic nodes come and go
        self._shown = {k: v for k, v in self._shown.items() if k in listed}

    def _spawn(self, name: str, work: Coroutine[Any, Any, None]) -> None:
        if name in self._tasks:
            work.close()
            return
        task = asyncio.get_running_loop().create_task(work)
        self._tasks[name] = task
        task.add_done_callback(lambda _, name=name: self._tasks.pop(name, None))

    async def _drop(self, name: str) -> None:
        """An admin resumed ``name``: drop shoal's drain (the tag, then the tracker's
        state), under the executor's lock on the node, if the latest read still says so."""
        executor = self.controller.executor
        async with executor.node_lock(name):
            latest = self._latest
            node = latest.node(name) if latest is not None else None
            if latest is None or node is None or name not in self.resumed([node], latest.at):
                return
            try:
                await executor.mark_draining(name, None)
            except Exception as exc:  # the next read tries again
                log.warning('event=drain_drop_failed node=%s error="%r"', name, exc)
                return
            self.controller.tracker.mark_undrained(name, self.controller.clock.now())
            self._shown.pop(name, None)
            log.info("event=drain_dropped node=%s reason=resumed-in-slurm", name)

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
