"""Serving an aiohttp app on loopback for a test's fake endpoint."""

from __future__ import annotations

from aiohttp import web

__all__ = ["serve"]


async def serve(app: web.Application) -> tuple[web.AppRunner, str]:
    """Serve ``app`` on 127.0.0.1 at a free port; the runner (``await runner.cleanup()`` to
    stop) and the base URL."""
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    await web.TCPSite(runner, "127.0.0.1", 0).start()
    return runner, f"http://127.0.0.1:{runner.addresses[0][1]}"
