"""The drain hook: tell the scheduler to stop sending work to a node before shoal removes it.

Either a command (argv, ``{node}`` replaced by the node name; success is exit status 0) or a
webhook (``POST {"node": name}``; success is a 2xx answer), each bounded by a timeout. With
neither configured draining is only shoal's own bookkeeping. A failed drain raises
``DrainError``; the caller leaves the node as it was and the next plan asks again. A drain
that times out raises ``DrainTimeout``: the node is treated as drained and terminated once no
job runs on it, as the config documents.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Sequence
from typing import Protocol

import aiohttp

__all__ = [
    "CommandDrainHook",
    "DrainError",
    "DrainHook",
    "DrainTimeout",
    "NoDrainHook",
    "WebhookDrainHook",
]

log = logging.getLogger(__name__)


class DrainError(Exception):
    """The drain hook failed."""


class DrainTimeout(DrainError):
    """The drain hook did not finish within its timeout."""


class DrainHook(Protocol):
    async def drain(self, node: str) -> None: ...


class NoDrainHook:
    async def drain(self, node: str) -> None:
        return None


class CommandDrainHook:
    def __init__(self, argv: Sequence[str], timeout: float = 30.0) -> None:
        self.argv = tuple(argv)
        self.timeout = timeout

    async def drain(self, node: str) -> None:
        argv = [part.replace("{node}", node) for part in self.argv]
        proc = await asyncio.create_subprocess_exec(
            *argv,
            stdin=asyncio.subprocess.DEVNULL,
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.STDOUT,
        )
        try:
            output, _ = await asyncio.wait_for(proc.communicate(), self.timeout)
        except TimeoutError:
            proc.kill()
            await proc.wait()
            raise DrainTimeout(
                f"drain command {argv[0]!r} timed out after {self.timeout}s"
            ) from None
        if proc.returncode != 0:
            tail = output.decode(errors="replace").strip()[-200:]
            raise DrainError(f"drain command {argv[0]!r} exited {proc.returncode}: {tail}")


class WebhookDrainHook:
    def __init__(self, url: str, timeout: float = 30.0) -> None:
        self.url = url
        self.timeout = timeout

    async def drain(self, node: str) -> None:
        timeout = aiohttp.ClientTimeout(total=self.timeout)
        try:
            async with (
                aiohttp.ClientSession(timeout=timeout) as session,
                session.post(self.url, json={"node": node}) as response,
            ):
                if not 200 <= response.status < 300:
                    raise DrainError(f"drain webhook answered HTTP {response.status}")
        except TimeoutError:
            raise DrainTimeout(f"drain webhook timed out after {self.timeout}s") from None
        except aiohttp.ClientError as exc:
            raise DrainError(f"drain webhook failed: {exc}") from None
