"""The HTTP API (aiohttp), one listener, loopback by default.

==================  =====================================================================
``PUT /v1/demand``  replace the demand (JSON); bearer token when one is configured;
                    400 with ``{"error": ..., "details": [...]}`` for a malformed body
                    (demand unchanged), 401 without/with a wrong token, 413 when too large
``GET /v1/status``  nodes by type and state, demand summary, last plan with its reasons,
                    offerings in backoff, unschedulable jobs, last pass outcome
``GET /metrics``    Prometheus text exposition
``GET /healthz``    200 while passes complete (within 3 x the scale interval), else 503
``GET /readyz``     200 once the first reconcile with the cloud is done, else 503
==================  =====================================================================

With Slurm (``demand.slurm``), ``daemon.slurm.integration`` adds ``POST /v1/slurm/resume``,
``/suspend``, ``/resume-fail`` (the power-saving hooks, same bearer token) and
``GET /v1/slurm``.

``check_listen`` (the config's listener rule, ``daemon.config.api``) refuses a listener beyond
loopback without a token. Tokens are compared in
constant time and never logged. The token comes from ``api.token_file`` through
``BearerToken``, which stats the file at each request and reads it again only when it
changed (replaced or rewritten: rotated), so a rotation needs no restart: the hooks and
pushes, which read the file on every call, carry the new token at once. A file that is
missing, unreadable or empty for a moment (a rotation in progress) keeps the last token:
never no token at all.
"""

from __future__ import annotations

import hmac
import logging
import os
from collections.abc import Callable
from dataclasses import replace
from pathlib import Path
from typing import Any

from aiohttp import web
from shoal.daemon.config.api import InsecureListenError, check_listen
from shoal.daemon.demand import MAX_BODY_BYTES, DemandError, DemandReports, parse_demand
from shoal.daemon.loop import Controller
from shoal.daemon.metrics import CONTENT_TYPE_LATEST
from shoal.daemon.views import status_json

__all__ = [
    "HTTP_SHUTDOWN_TIMEOUT",
    "MAX_BODY_BYTES",
    "BearerToken",
    "InsecureListenError",
    "bearer_authorized",
    "check_listen",
    "make_app",
    "start_http",
    "unauthorized",
]

log = logging.getLogger(__name__)
HTTP_SHUTDOWN_TIMEOUT = 1.0  # seconds requests in flight get to finish when shoal stops
CONTROLLER: web.AppKey[Controller] = web.AppKey("controller", Controller)


class BearerToken:
    """The API's bearer token from ``path`` (None: no token), read again when the file
    changes (its inode, size or mtime): one ``stat`` per request, a read only after a
    rotation. Keeps the last token while the file cannot be read, is not text or is empty.
    A file that is empty or not text at start raises ``ValueError`` (OSError when it cannot
    be read): with a token file named, the API is never open, even for a moment."""

    def __init__(self, path: Path | None) -> None:
        self.path = path
        self._key: tuple[int, int, int, int] | None = None
        self._token: str | None = None
        if path is not None:
            self._key = self._stat()  # before the read: a file replaced between is read again
            try:
                self._token = path.read_text().strip()  # OSError at start: a config error
            except UnicodeDecodeError:
                raise ValueError(f"api.token_file {path} is not text") from None
            if not self._token:
                raise ValueError(f"api.token_file {path} is empty")

    def _stat(self) -> tuple[int, int, int, int] | None:
        assert self.path is not None
        try:
            st = os.stat(self.path)
        except OSError:
            return None
        return (st.st_dev, st.st_ino, st.st_size, st.st_mtime_ns)

    def current(self) -> str | None:
        if self.path is None:
            return None
        key = self._stat()
        if key is None or key == self._key:
            return self._token
        try:
            token = self.path.read_text().strip()
        except (OSError, UnicodeDecodeError) as exc:  # never quote the file's bytes
            error = getattr(exc, "strerror", None) or type(exc).__name__
            log.warning('event=api_token_unreadable error="%s"', error)
            return self._token
        if token:  # an empty file (a rotation half done) is read again at the next request
            if token != self._token:
                log.info("event=api_token_reloaded reason=token-file-changed")
            self._token, self._key = token, key
        return self._token

    def written_ns(self) -> int | None:
        """When the token in force was written (the file's mtime, ns), as of the last
        ``current``; None without a token file."""
        return None if self._key is None else self._key[3]


def bearer_authorized(request: web.Request, token: str | BearerToken | None) -> bool:
    """The request carries ``Authorization: Bearer <token>`` (always true without a token);
    compared in constant time."""
    if isinstance(token, BearerToken):
        token = token.current()
    if not token:
        return True
    scheme, _, given = request.headers.get("Authorization", "").partition(" ")
    if scheme.lower() != "bearer":
        return False
    return hmac.compare_digest(given.strip().encode(), token.encode())


def unauthorized() -> web.Response:
    """401 for a missing or wrong bearer token."""
    return web.json_response(
        {"error": "missing or wrong bearer token"},
        status=401,
        headers={"WWW-Authenticate": 'Bearer realm="shoal"'},
    )


def _error(status: int, message: str, details: list[str] | None = None) -> web.Response:
    body: dict[str, Any] = {"error": message}
    if details:
        body["details"] = details
    return web.json_response(body, status=status)


def make_app(
    controller: Controller,
    *,
    token: str | BearerToken | None = None,
    accept_demand: bool = True,
    reports: DemandReports | None = None,
    max_age: float | None = None,
    max_body: int = MAX_BODY_BYTES,
    on_push: Callable[[], None] | None = None,
) -> web.Application:
    """The daemon's aiohttp application over ``controller``. Pushed demand must carry what
    ``reports`` promises and goes stale ``max_age`` seconds after it arrived; ``on_push`` is
    called after each accepted body (the service stops the demo then)."""

    async def put_demand(request: web.Request) -> web.Response:
        if not accept_demand:
            return _error(404, "demand over HTTP is disabled (demand.api: false)")
        if not bearer_authorized(request, token):
            log.warning("event=demand_rejected status=401 peer=%s", request.remote)
            return unauthorized()
        if request.content_length is not None and request.content_length > max_body:
            return _error(413, f"body larger than {max_body} bytes")
        try:
            raw = await request.content.read(max_body + 1)
        except Exception as exc:
            return _error(400, f"could not read the body: {exc}")
        if len(raw) > max_body:
            return _error(413, f"body larger than {max_body} bytes")
        try:
            update = replace(parse_demand(raw, reports), max_age=max_age, source="push")
        except DemandError as exc:
            details = list(exc.messages)
            log.info('event=demand_rejected status=400 error="%s"', exc)
            return _error(400, str(exc), details)
        controller.set_demand(update)
        if on_push is not None:
            on_push()
        demand = controller.demand
        queued = sum(q.count for q in demand.queued)
        log.info(
            "event=demand_updated source=api queued=%d running=%d", queued, len(demand.running)
        )
        return web.json_response(
            {"accepted": True, "queued_jobs": queued, "running_jobs": len(demand.running)}
        )

    async def status(request: web.Request) -> web.Response:
        return web.json_response(status_json(controller))

    async def metrics(request: web.Request) -> web.Response:
        response = web.Response(body=controller.metrics.render())
        response.headers["Content-Type"] = CONTENT_TYPE_LATEST
        return response

    async def healthz(request: web.Request) -> web.Response:
        if controller.healthy():
            return web.json_response({"healthy": True})
        return web.json_response(
            {"healthy": False, "reason": "no pass completed within 3 scale intervals"},
            status=503,
        )

    async def readyz(request: web.Request) -> web.Response:
        reason = None
        if controller.stopping:
            reason = "stopping"
        elif not controller.ready:
            reason = "first reconcile not done"
        else:
            reason = controller.demand_stale()
        if reason is None:
            return web.json_response({"ready": True})
        return web.json_response({"ready": False, "reason": reason}, status=503)

    app = web.Application(client_max_size=max_body)
    app[CONTROLLER] = controller
    app.router.add_put("/v1/demand", put_demand)
    app.router.add_get("/v1/status", status)
    app.router.add_get("/metrics", metrics)
    app.router.add_get("/healthz", healthz)
    app.router.add_get("/readyz", readyz)
    return app


async def start_http(app: web.Application, host: str, port: int) -> tuple[web.AppRunner, int]:
    """Start listening; returns the runner (``await runner.cleanup()`` to stop) and the port.

    On cleanup, requests in flight get ``HTTP_SHUTDOWN_TIMEOUT`` to finish (aiohttp's own
    default is 60 s): a client that holds a request open must not hold SIGTERM up."""
    runner = web.AppRunner(app, access_log=None, shutdown_timeout=HTTP_SHUTDOWN_TIMEOUT)
    await runner.setup()
    site = web.TCPSite(runner, host, port)
    await site.start()
    server = site._server
    sockets = getattr(server, "sockets", None) or []
    bound = sockets[0].getsockname()[1] if sockets else port
    log.info("event=http_listening host=%s port=%d", host, bound)
    return runner, bound
