"""Wires Slurm into the daemon (``demand.slurm: true`` with a ``slurm`` section).

``SlurmIntegration(config, clock, metrics)`` builds the client, the demand source, the power
saver (power_save mode) and the clean-up loop; ``attach(controller)`` connects them to the
controller; ``add_routes(app, token)`` adds the hooks' endpoints to the HTTP API; ``run()`` is
the background work (held nodes, clean-up); ``close()`` stops it.

================================  ===========================================================
``POST /v1/slurm/resume``         ``{"nodes": "cloud[1-2]", "resume_file": {...}}``: the
``POST /v1/slurm/suspend``        hooks' requests; 202 once persisted (resume) and queued,
``POST /v1/slurm/resume-fail``    400 for a bad body, 401 without the bearer token (when one
                                  is configured), 409 in external mode (no power saving)
``GET /v1/slurm``                 mode, last read, requests in hand, held nodes, last repairs
================================  ===========================================================

``slurm_planner(config)`` is the planner the controller uses (power_save: ``hold_planner``),
and ``slurm_drain_hook(config)`` its drain hook (external: ``SlurmDrainHook``).
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

from aiohttp import web
from shoal.daemon.http import bearer_authorized, unauthorized
from shoal.daemon.metrics import ShoalMetrics
from shoal.daemon.slurm.cleanup import Cleaner
from shoal.daemon.slurm.conf import type_features
from shoal.daemon.slurm.drain import SlurmDrainHook
from shoal.daemon.slurm.names import NodeTypeMap, node_type_keys
from shoal.daemon.slurm.power import PowerSaver, hold_planner
from shoal.daemon.slurm.source import SlurmDemandSource, SlurmSnapshot
from shoal.daemon.slurm.state import PowerState
from shoal.providers.clock import Clock
from shoal.providers.outcomes import ProviderEvent, TerminationResult
from shoal.providers.slurm import (
    TAG_SLURM_FEATURES,
    SlurmClient,
    SlurmCommandError,
    SlurmCommands,
    SlurmError,
)
from shoal.scaler.model import NodeType

if TYPE_CHECKING:
    from shoal.daemon.config import ShoalConfig, SlurmConfig
    from shoal.daemon.loop import Controller, Planner

__all__ = ["SlurmIntegration", "slurm_commands", "slurm_drain_hook", "slurm_planner"]

log = logging.getLogger(__name__)
MAX_REQUEST_BYTES = 1024 * 1024


def slurm_commands(settings: SlurmConfig) -> SlurmCommands:
    return SlurmCommands(
        squeue=settings.squeue,
        sinfo=settings.sinfo,
        scontrol=settings.scontrol,
        slurm_conf=str(settings.slurm_conf) if settings.slurm_conf is not None else None,
        timeout=settings.command_timeout,
    )


def slurm_planner(config: ShoalConfig) -> Planner | None:
    """power_save: Slurm decides, the plan launches and removes nothing."""
    if config.slurm is not None and config.slurm.mode == "power_save":
        return hold_planner
    return None


def slurm_drain_hook(config: ShoalConfig) -> SlurmDrainHook | None:
    """external: drain and undrain with scontrol."""
    if config.slurm is not None and config.slurm.mode == "external":
        return SlurmDrainHook(SlurmClient(slurm_commands(config.slurm)))
    return None


class SlurmIntegration:
    """Slurm's side of one daemon; see the module docstring."""

    def __init__(
        self, config: ShoalConfig, clock: Clock, metrics: ShoalMetrics | None = None
    ) -> None:
        if config.slurm is None:
            raise ValueError("no slurm section in the config")
        self.config = config
        self.settings = settings = config.slurm
        self.clock = clock
        self.metrics = metrics or ShoalMetrics()
        self.client = SlurmClient(slurm_commands(settings))
        self.types = NodeTypeMap.from_config(node_type_keys(config))
        self.controller: Controller | None = None
        self.power: PowerSaver | None = None
        self.source = SlurmDemandSource(
            self.client,
            clock,
            poll_interval=settings.poll_interval,
            max_age=settings.demand_max_age(),
            partitions=settings.partitions,
            default_wall_time=settings.default_wall_time,
            metrics=self.metrics,
        )
        if settings.mode == "power_save":
            assert settings.state_file is not None  # the config demands it
            self.power = PowerSaver(
                self.client,
                clock,
                PowerState.load(settings.state_file),
                self.types,
                metrics=self.metrics,
                node_type_of=config.node_type_of,
                retry_interval=settings.poll_interval,
                set_node_addr=settings.set_node_addr,
                on_request=self.source.poke,
            )
            self.source.translate = self.power.instance_id
            self.source.listeners.append(self._note_instances)
        power = self.power
        self.cleaner = Cleaner(
            self.client,
            clock,
            mode=settings.mode,
            interval=settings.cleanup_interval,
            grace=settings.orphan_grace,
            metrics=self.metrics,
            managed=lambda name: self.types.node_type(name) is not None,
            busy=(lambda: power.busy) if power is not None else frozenset,
            lock=power.lock if power is not None else None,
            resume_timeout=self._resume_timeout,
        )
        self.source.listeners.append(self.cleaner.observe)
        self._pending: set[asyncio.Task[None]] = set()

    def _resume_timeout(self) -> float | None:
        return self.settings.resume_timeout or self.source.resume_timeout()

    # -- wiring ---------------------------------------------------------------------------

    def attach(self, controller: Controller) -> None:
        self.controller = controller
        if self.power is not None:
            self.power.attach(controller)
        self.cleaner.attach(controller)
        if self.settings.mode == "external":
            controller.executor.launch_tags = self._launch_tags
            controller.provider.subscribe(self._on_provider_event)

    def _note_instances(self, snapshot: SlurmSnapshot) -> None:
        if self.power is not None and self.controller is not None:
            self.power.note_instances(t.node for t in self.controller.tracker.all())

    def features(self, node_type: NodeType) -> tuple[str, ...]:
        """The features a dynamic node of ``node_type`` registers with: "shoal" (the clean-up
        loop's mark), its type's Slurm name and capacity type (as ``shoal slurm-conf``
        declares them) and the configured ones."""
        configured = self.settings.features
        found = configured.get(node_type.name)
        if found is None:
            found = next((configured[t] for t in node_type.instance_types if t in configured), ())
        return tuple(dict.fromkeys((*type_features(node_type), *found)))

    def _launch_tags(self, node_type: NodeType) -> Mapping[str, str]:
        return {TAG_SLURM_FEATURES: ",".join(self.features(node_type))}

    def _on_provider_event(self, event: ProviderEvent) -> None:
        """External mode: a terminated worker's dynamic node is deleted from Slurm at once
        (the clean-up loop catches any that fail)."""
        if isinstance(event, TerminationResult) and event.done:
            task = asyncio.get_running_loop().create_task(self._delete(event.done))
            self._pending.add(task)
            task.add_done_callback(self._pending.discard)

    async def _delete(self, names: tuple[str, ...]) -> None:
        for name in names:
            try:
                await self.client.delete_nodes(name)
            except SlurmCommandError as exc:  # never registered, or deleted already
                log.info('event=slurm_node_not_deleted node=%s reason="%s"', name, exc.stderr)
            except SlurmError as exc:
                log.warning('event=slurm_delete_failed node=%s error="%s"', name, exc)
            else:
                log.info("event=slurm_node_deleted node=%s", name)

    # -- HTTP -----------------------------------------------------------------------------

    def add_routes(self, app: web.Application, token: str | None) -> None:
        async def post(request: web.Request) -> web.Response:
            kind = request.match_info["kind"].replace("-", "_")
            if not bearer_authorized(request, token):
                log.warning("event=slurm_request_rejected status=401 kind=%s", kind)
                return unauthorized()
            if self.power is None:
                return web.json_response(
                    {"error": "slurm.mode is external: shoal's planner decides, no hooks"},
                    status=409,
                )
            try:
                raw = await request.content.read(MAX_REQUEST_BYTES + 1)
                if len(raw) > MAX_REQUEST_BYTES:
                    raise ValueError(f"body larger than {MAX_REQUEST_BYTES} bytes")
                body = json.loads(raw)
                if not isinstance(body, dict) or not isinstance(body.get("nodes"), str):
                    raise ValueError('expected {"nodes": "<hostlist>", "resume_file": ...}')
                resume_file = body.get("resume_file")
                answer = self.power.accept(
                    kind, body["nodes"], resume_file if isinstance(resume_file, dict) else None
                )
            except ValueError as exc:  # json.JSONDecodeError is one
                return web.json_response({"error": str(exc)}, status=400)
            return web.json_response(answer, status=202)

        async def status(request: web.Request) -> web.Response:
            return web.json_response(self.status())

        app.router.add_post("/v1/slurm/{kind:resume|suspend|resume-fail}", post)
        app.router.add_get("/v1/slurm", status)

    def status(self) -> dict[str, Any]:
        last = self.source.last
        return {
            "mode": self.settings.mode,
            "last_read": None if last is None else last.at,
            "read_error": self.source.last_error,
            "nodes": None if last is None else {n.name: n.state_text for n in last.nodes},
            "power_saving": None if self.power is None else self.power.status(),
            "cleanup": {
                "runs": self.cleaner.runs,
                "last": [
                    {
                        "kind": r.kind.value,
                        "node": r.node,
                        "instances": list(r.instances),
                        "reason": r.reason,
                    }
                    for r in self.cleaner.last
                ],
            },
        }

    # -- background -------------------------------------------------------------------------

    async def run(self) -> None:
        jobs = [self.cleaner.run()]
        if self.power is not None:
            jobs.append(self.power.run())
        await asyncio.gather(*jobs)

    async def close(self) -> None:
        if self.power is not None:
            await self.power.close()
        for task in list(self._pending):
            task.cancel()
        with contextlib.suppress(Exception):
            await asyncio.gather(*self._pending, return_exceptions=True)
