"""What leadership changes in a running daemon, besides which tasks run (``daemon.service``).

- ``build_elector(config, clock)``: the configured elector (``ha`` section), or None.
- ``LeaderGauge``: ``shoal_leader`` 1 while this daemon leads, 0 while it follows.
- ``leadership_view``: the ``leadership`` section of ``/v1/status``: this daemon's name, its
  role, the epoch while it leads, and the leader as last seen.
- ``follower_middleware``: a follower serves ``/metrics``, ``/v1/status`` and every other
  GET as it is; ``/healthz`` is 200 (a follower is healthy: it campaigns, ready to lead;
  its controller runs no passes to judge it by), ``/readyz`` 503 (it takes no demand); and
  every request that changes something (``PUT /v1/demand``, the Slurm hooks' POSTs) is
  forwarded to the leader and its answer returned (``leader.forward``). 503 with the
  leader's name and address when that cannot be done (no leader known, the leader not
  answering) and for a request that was forwarded already (the hop guard); the hook spools
  on a 5xx (``daemon.slurm.hook``). The leader marks every write it serves with
  ``X-Shoal-Served-By``.
"""

from __future__ import annotations

import json
from collections.abc import Awaitable, Callable
from typing import Any

from aiohttp import web
from prometheus_client import CollectorRegistry, Gauge
from shoal.daemon.config import ShoalConfig
from shoal.daemon.leader import LeaderElector, LeaderInfo, default_name
from shoal.daemon.leader.forward import FORWARDED_BY, SERVED_BY, LeaderForwarder
from shoal.runtime.clock import Clock

__all__ = ["LeaderGauge", "build_elector", "follower_middleware", "leadership_view"]

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


def build_elector(config: ShoalConfig, clock: Clock) -> LeaderElector | None:
    ha = config.ha
    if ha is None:
        return None
    from shoal.daemon.leader.etcd import EtcdElector

    me = LeaderInfo(ha.name or default_name(), ha.advertise or f"http://{config.api.listen}")
    return EtcdElector(ha.etcd, ha.leader_key(config.cluster_name), me, ha.ttl, clock)


class LeaderGauge:
    def __init__(self, registry: CollectorRegistry) -> None:
        self.gauge = Gauge(
            "shoal_leader", "1 while this daemon leads (ha), 0 while it follows.", registry=registry
        )

    def set(self, leading: bool) -> None:
        self.gauge.set(1 if leading else 0)


def leadership_view(elector: LeaderElector) -> dict[str, Any]:
    leader = elector.leader
    return {
        "name": elector.me.name,
        "role": "leader" if elector.is_leader else "follower",
        "epoch": elector.epoch,
        "leader": leader.to_json() if leader is not None else None,
    }


def _follower_answer(
    elector: LeaderElector, error: str = "this daemon follows; the leader acts"
) -> web.Response:
    leader = elector.leader
    return web.json_response(
        {
            "error": error,
            "leader": leader.to_json() if leader is not None else None,
        },
        status=503,
        headers={"Retry-After": "1"},
    )


def follower_middleware(
    elector: LeaderElector, forwarder: LeaderForwarder | None = None
) -> Callable[..., Awaitable[web.StreamResponse]]:
    @web.middleware
    async def middleware(request: web.Request, handler: Handler) -> web.StreamResponse:
        writes = request.method not in ("GET", "HEAD")
        if not elector.is_leader:
            if writes and FORWARDED_BY in request.headers:  # never forwarded twice
                return _follower_answer(
                    elector, "this daemon follows; a forwarded request is not forwarded again"
                )
            if writes:
                answer = await forwarder.forward(request) if forwarder is not None else None
                return answer if answer is not None else _follower_answer(elector)
            if request.path == "/healthz":
                return web.json_response({"healthy": True, "role": "follower"})
            if request.path == "/readyz":
                return web.json_response({"ready": False, "reason": "follower"}, status=503)
        response = await handler(request)
        if request.path == "/v1/status" and isinstance(response, web.Response):
            assert response.body is not None
            body = json.loads(bytes(response.body))  # type: ignore[arg-type]
            body["leadership"] = leadership_view(elector)
            return web.json_response(body, status=response.status)
        if writes and not response.prepared:
            response.headers[SERVED_BY] = elector.me.name
        return response

    return middleware
