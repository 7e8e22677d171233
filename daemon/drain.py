"""The drain and undrain hooks: tell the scheduler to stop (or resume) sending work to a node.

The drain hook runs before shoal removes a node; the undrain hook when the planner takes a
draining node back because demand returned (``Plan.undrains``), before it is marked ready.
Each is either a command (argv, ``{node}`` replaced by the node name; success is exit
status 0) or a webhook (``POST {"node": name}``; success is a 2xx answer), each bounded by
a timeout. A drain may carry a reason (an interruption notice's: ``INTERRUPTION_REASONS``):
a command's ``{reason}`` is replaced by it ("shoal" when none is given), a webhook's body
gets ``"reason"``, and Slurm records it as the drain's reason. With neither configured
draining and undraining are only shoal's own bookkeeping. A failed hook raises
``DrainError``; the caller leaves the node as it was and the next plan asks again. A hook
that times out raises ``DrainTimeout``: a drain is then treated as done (the node is
terminated once no job runs on it, as the config documents), an undrain as failed.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Sequence
from typing import Protocol

import aiohttp

__all__ = [
    "INTERRUPTION_REASONS",
    "CommandDrainHook",
    "CommandUndrainHook",
    "DrainError",
    "DrainHook",
    "DrainTimeout",
    "NoDrainHook",
    "NoUndrainHook",
    "UndrainHook",
    "WebhookDrainHook",
    "WebhookUndrainHook",
    "make_undrain_hook",
]

log = logging.getLogger(__name__)

# The drain reason of a node the cloud is about to take away, by notice kind
# (providers.aws_interruptions.NoticeKind); the scheduler shows it (Slurm: scontrol's Reason).
INTERRUPTION_REASONS = {
    "spot_interruption": "spot interruption",
    "scheduled_change": "scheduled change",
}


class DrainError(Exception):
    """The drain or undrain hook failed or timed out."""


class DrainTimeout(DrainError):
    """The drain or undrain hook did not finish within its timeout."""


class DrainHook(Protocol):
    async def drain(self, node: str, reason: str | None = None) -> None: ...


class UndrainHook(Protocol):
    async def undrain(self, node: str) -> None: ...


async def _run_command(
    argv: Sequence[str], node: str, timeout: float, what: str, reason: str | None = None
) -> None:
    argv = [part.replace("{node}", node).replace("{reason}", reason or "shoal") for part in argv]
    proc = await asyncio.create_subprocess_exec(
        *argv,
        stdin=asyncio.subprocess.DEVNULL,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.STDOUT,
    )
    try:
        output, _ = await asyncio.wait_for(proc.communicate(), timeout)
    except TimeoutError:
        proc.kill()
        await proc.wait()
        raise DrainTimeout(f"{what} command {argv[0]!r} timed out after {timeout}s") from None
    if proc.returncode != 0:
        tail = output.decode(errors="replace").strip()[-200:]
        raise DrainError(f"{what} command {argv[0]!r} exited {proc.returncode}: {tail}")


async def _post(url: str, node: str, timeout: float, what: str, reason: str | None = None) -> None:
    body = {"node": node} if reason is None else {"node": node, "reason": reason}
    try:
        async with (
            aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=timeout)) as session,
            session.post(url, json=body) as response,
        ):
            if not 200 <= response.status < 300:
                raise DrainError(f"{what} webhook answered HTTP {response.status}")
    except TimeoutError:
        raise DrainTimeout(f"{what} webhook timed out after {timeout}s") from None
    except aiohttp.ClientError as exc:
        raise DrainError(f"{what} webhook failed: {exc}") from None


class NoDrainHook:
    async def drain(self, node: str, reason: str | None = None) -> None:
        return None


class CommandDrainHook:
    def __init__(self, argv: Sequence[str], timeout: float = 30.0) -> None:
        self.argv = tuple(argv)
        self.timeout = timeout

    async def drain(self, node: str, reason: str | None = None) -> None:
        await _run_command(self.argv, node, self.timeout, "drain", reason)


class WebhookDrainHook:
    def __init__(self, url: str, timeout: float = 30.0) -> None:
        self.url = url
        self.timeout = timeout

    async def drain(self, node: str, reason: str | None = None) -> None:
        await _post(self.url, node, self.timeout, "drain", reason)


class NoUndrainHook:
    async def undrain(self, node: str) -> None:
        return None


class CommandUndrainHook:
    def __init__(self, argv: Sequence[str], timeout: float = 30.0) -> None:
        self.argv = tuple(argv)
        self.timeout = timeout

    async def undrain(self, node: str) -> None:
        await _run_command(self.argv, node, self.timeout, "undrain")


class WebhookUndrainHook:
    def __init__(self, url: str, timeout: float = 30.0) -> None:
        self.url = url
        self.timeout = timeout

    async def undrain(self, node: str) -> None:
        await _post(self.url, node, self.timeout, "undrain")


def make_undrain_hook(
    command: Sequence[str] | None, webhook: str | None, timeout: float = 30.0
) -> UndrainHook:
    """The undrain hook the config asks for (``drain.undrain_command`` or
    ``drain.undrain_webhook``), or none: then undraining is shoal's bookkeeping alone."""
    if command:
        return CommandUndrainHook(command, timeout)
    if webhook:
        return WebhookUndrainHook(webhook, timeout)
    return NoUndrainHook()
