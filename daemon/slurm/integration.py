"""Wires Slurm into the daemon (``demand.slurm: true`` with a ``slurm`` section).

The first integration (``daemon.integration``): ``SLURM`` (an ``IntegrationKind``) gives the
controller its planner (power_save: ``requests_only_planner``), drain and undrain hooks (external:
``SlurmDrainHook``) and launch tags (external: the dynamic node's features); then
``SlurmIntegration(config, clock, controller, metrics, token=...)`` builds the client, the
demand source, the power saver (power_save mode) and the clean-up loop around that controller;
``add_routes(app)`` adds the hooks' endpoints to the HTTP API, behind the service's one
``BearerToken`` (the spool checks its signatures with the same object); ``run()`` is the
background work (nodes kept DOWN, clean-up, the spool); ``close()`` stops it.

================================  ===========================================================
``POST /v1/slurm/resume``         ``{"nodes": "cloud[1-2]", "resume_file": {...}}``: the
``POST /v1/slurm/suspend``        hooks' requests; 202 once persisted and queued,
``POST /v1/slurm/resume-fail``    400 for a bad body, 401 without the bearer token (when one
                                  is configured), 409 in external mode (no power saving)
                                  (the hooks' ``request_id`` makes a request served once)
``GET /v1/slurm``                 mode, last read, requests in hand, nodes kept DOWN, repairs
================================  ===========================================================

Hook requests the daemon missed wait in the spool (``<state_dir>/spool``, ``spool``): it is
served at start, every poll interval, and at once after any request that reached the daemon,
through the same intake as the HTTP requests (``_accept``). At start it is served before the
first HTTP request is taken (the handler waits for that first scan): a resume spooled while
the daemon was down comes before a suspend of the same node sent once it is back. A spooled
file that cannot be served (``spool.read``: not a regular file, too large, malformed, not
signed, signed with the token before a rotation (``token_rotated``: never served, see
``spool``), refused by the power saver, or failing ``SPOOL_TRIES`` scans in a row) is moved to
the quarantine (``spool.quarantine``), logged and counted in
``shoal_slurm_spool_quarantined_total{reason}``: it never stops the requests after it.

With ``ha`` ``run`` is the leader's (each term starts with a scan of the spool), and a
follower runs ``follow``: its host's spool, which the hooks there fill while no leader answers
through it, is forwarded to the leader's hook endpoint (``daemon.leader.forward``) every poll
interval, each request with its id (the leader answers an id it took before as repeated), and
a file deleted only after the leader's 2xx; no answer is no failure (never quarantined for it).

"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import json
import logging
from collections.abc import Awaitable, Callable, Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

from aiohttp import web
from shoal.daemon.http import BearerToken, bearer_authorized, unauthorized
from shoal.daemon.metrics import ShoalMetrics
from shoal.daemon.slurm import spool
from shoal.daemon.slurm.cleanup import Cleaner
from shoal.daemon.slurm.client import SlurmClient, SlurmCommands
from shoal.daemon.slurm.conf import dynamic_resources, type_features
from shoal.daemon.slurm.constants import TAG_SLURM_FEATURES, TAG_SLURM_RESOURCES
from shoal.daemon.slurm.drain import DrainAdopter, SlurmDrainHook
from shoal.daemon.slurm.errors import SlurmCommandError, SlurmError
from shoal.daemon.slurm.hook import hook_request
from shoal.daemon.slurm.metrics import SlurmMetrics
from shoal.daemon.slurm.names import NodeTypeMap, node_type_keys
from shoal.daemon.slurm.power import PowerSaver, requests_only_planner
from shoal.daemon.slurm.source import SlurmDemandSource, SlurmSnapshot
from shoal.daemon.slurm.weigher import Weigher
from shoal.providers.outcomes import ProviderEvent, TerminationResult
from shoal.runtime.clock import Clock, sleep_or_event
from shoal.scaler.model import NodeType, Policy

if TYPE_CHECKING:
    from shoal.daemon.config import ShoalConfig, SlurmConfig
    from shoal.daemon.demand import DemandSource
    from shoal.daemon.integration import LaunchTags
    from shoal.daemon.leader.forward import LeaderForwarder
    from shoal.daemon.loop import Controller, Planner

__all__ = [
    "SLURM",
    "SlurmIntegration",
    "SlurmKind",
    "slurm_commands",
    "slurm_drain_hook",
    "slurm_features",
    "slurm_planner",
]

log = logging.getLogger(__name__)
Accept = Callable[[str, str, Any, "str | None"], Awaitable[dict[str, Any]]]
MAX_REQUEST_BYTES = spool.MAX_BYTES
SPOOL_TRIES = 5  # scans in a row a spooled file may fail for a passing reason (then quarantined)


class LeaderUnavailable(RuntimeError):
    """A follower could not hand a spooled request to the leader: it waits for the next scan
    (never counted against ``SPOOL_TRIES``: the request is fine)."""


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
        return requests_only_planner
    return None


def slurm_drain_hook(config: ShoalConfig) -> SlurmDrainHook | None:
    """external: drain and undrain with scontrol."""
    if config.slurm is not None and config.slurm.mode == "external":
        return SlurmDrainHook(SlurmClient(slurm_commands(config.slurm)))
    return None


def slurm_features(settings: SlurmConfig, node_type: NodeType) -> tuple[str, ...]:
    """The features a dynamic node of ``node_type`` registers with: "shoal" (the clean-up
    loop's mark), its type's Slurm name and capacity type (as ``shoal slurm-conf`` declares
    them) and the configured ones."""
    configured = settings.features
    found = configured.get(node_type.name)
    if found is None:
        found = next((configured[t] for t in node_type.instance_types if t in configured), ())
    return tuple(dict.fromkeys((*type_features(node_type), *found)))


def slurm_node_types(config: ShoalConfig) -> NodeTypeMap:
    """Slurm node names -> node type, as the hooks' requests meet them: ``slurm.node_types``,
    or the names ``shoal slurm-conf`` declares for each node type when it is absent."""
    return NodeTypeMap.from_config(node_type_keys(config))


def _launch_tags(settings: SlurmConfig, node_type: NodeType, policy: Policy) -> Mapping[str, str]:
    kept = settings.node_weights == "kept"
    return {
        TAG_SLURM_FEATURES: ",".join(slurm_features(settings, node_type)),
        TAG_SLURM_RESOURCES: dynamic_resources(node_type, policy, kept=kept),
    }


class SlurmKind:
    """Slurm before the controller exists (``daemon.integration.IntegrationKind``)."""

    name = "slurm"

    def planner(self, config: ShoalConfig) -> Planner | None:
        return slurm_planner(config)

    def drain_hook(self, config: ShoalConfig) -> SlurmDrainHook | None:
        return slurm_drain_hook(config)

    def undrain_hook(self, config: ShoalConfig) -> SlurmDrainHook | None:
        return slurm_drain_hook(config)

    def launch_tags(self, config: ShoalConfig) -> LaunchTags | None:
        """external: every launch carries what its dynamic node registers with: its
        features, and its type's usable CPUs and memory and its Weight."""
        if config.slurm is not None and config.slurm.mode == "external":
            return functools.partial(_launch_tags, config.slurm)
        return None

    def build(
        self,
        config: ShoalConfig,
        clock: Clock,
        metrics: ShoalMetrics,
        controller: Controller,
        token: BearerToken | None = None,
    ) -> SlurmIntegration:
        return SlurmIntegration(config, clock, controller, metrics, token=token)


SLURM = SlurmKind()


class SlurmIntegration:
    """Slurm's side of one daemon (``daemon.integration.Integration``); see the module
    docstring."""

    def __init__(
        self,
        config: ShoalConfig,
        clock: Clock,
        controller: Controller,
        metrics: ShoalMetrics | None = None,
        *,
        token: BearerToken | None = None,
        client: SlurmClient | None = None,
    ) -> None:
        """``token``: the API's bearer token, the service's one instance (the default, for a
        Slurm side run alone: one over ``api.token_file``); the hooks' endpoints check it
        and the spool's signatures are checked with it. ``client`` talks to slurmctld; the
        default runs the configured commands (the chaos harness gives a simulated
        slurmctld's)."""
        if config.slurm is None:
            raise ValueError("no slurm section in the config")
        self.config = config
        self.settings = settings = config.slurm
        self.clock = clock
        self.controller = controller
        # the Slurm side's own collectors, beside the core ones on the daemon's registry
        self.metrics = SlurmMetrics.on(metrics.registry) if metrics else SlurmMetrics()
        self.client = client or SlurmClient(slurm_commands(settings))
        self.types = slurm_node_types(config)
        self.power: PowerSaver | None = None
        self.adopter: DrainAdopter | None = None  # external mode: Slurm's drains made shoal's
        self.source = SlurmDemandSource(
            self.client,
            clock,
            poll_interval=settings.poll_interval,
            max_age=settings.demand_max_age(),
            partitions=settings.partitions,
            default_wall_time=settings.default_wall_time,
            metrics=self.metrics,
        )
        self.token = token if token is not None else BearerToken(config.api.token_file)
        self.spool_dir: Path | None = None
        if settings.mode == "power_save" and config.state_dir is not None:
            self.spool_dir = spool.spool_dir(config.state_dir)
            spool.prepare(self.spool_dir)
        # the power saver queues the requests the store holds: built after what can fail
        if settings.mode == "power_save":
            self.power = PowerSaver(
                self.client,
                clock,
                self.types,
                controller,
                metrics=self.metrics,
                node_type_of=config.node_type_of,
                retry_interval=settings.poll_interval,
                set_node_addr=settings.set_node_addr,
                all_or_nothing=settings.all_or_nothing,
                on_request=self.source.poke,
            )
            self.source.translate = self.power.instance_id
            self.source.listeners.append(self._note_instances)
        power = self.power
        self.cleaner = Cleaner(
            self.client,
            clock,
            controller,
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
        self._spool_wake = asyncio.Event()
        self._spool_lock = asyncio.Lock()  # one scan at a time
        self._spool_scanned = self.spool_dir is None  # the first scan (HTTP waits for it)
        self._spool_failures: dict[str, int] = {}  # file -> scans in a row it failed
        self._spool_stuck: set[str] = set()  # files that could not even be quarantined
        self._unsubscribe = (
            controller.provider.subscribe(self._on_provider_event)
            if settings.mode == "external"
            else None
        )
        if settings.mode == "external":  # Slurm's drains with shoal's reason are shoal's
            self.adopter = DrainAdopter(controller)
            self.source.listeners.append(self.adopter.observe)
        self.weigher: Weigher | None = None
        if settings.mode == "external":  # power_save's weights are slurm.conf's
            kept = settings.node_weights == "kept"
            self.weigher = Weigher(self.client, controller, self.metrics, kept=kept)
            self.source.listeners.append(self.weigher.observe)

    def _resume_timeout(self) -> float | None:
        return self.settings.resume_timeout or self.source.resume_timeout()

    # -- wiring ---------------------------------------------------------------------------

    def demand_sources(self) -> Sequence[DemandSource]:
        return (self.source,)

    def _note_instances(self, snapshot: SlurmSnapshot) -> None:
        if self.power is not None:
            self.power.note_instances(t.node for t in self.controller.tracker.all())

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

    def add_routes(self, app: web.Application) -> None:
        async def post(request: web.Request) -> web.Response:
            kind = request.match_info["kind"].replace("-", "_")
            if not bearer_authorized(request, self.token):
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
                request_id = body.get("request_id")
                if request_id is not None and not (
                    isinstance(request_id, str) and spool.REQUEST_ID.match(request_id)
                ):
                    raise ValueError("request_id must be 1-100 letters, digits, '-' or '_'")
                if not self._spool_scanned:  # what waited in the spool comes first
                    await self._serve_spool_logged()
                answer = await self._accept(
                    kind, body["nodes"], body.get("resume_file"), request_id
                )
            except ValueError as exc:  # json.JSONDecodeError is one
                return web.json_response({"error": str(exc)}, status=400)
            self._spool_wake.set()  # the daemon is reachable: serve what waited meanwhile
            return web.json_response(answer, status=202)

        async def status(request: web.Request) -> web.Response:
            return web.json_response(self.status())

        app.router.add_post("/v1/slurm/{kind:resume|suspend|resume-fail}", post)
        app.router.add_get("/v1/slurm", status)

    # -- requests -------------------------------------------------------------------------

    async def _accept(
        self, kind: str, nodes: str, resume_file: Any, request_id: str | None
    ) -> dict[str, Any]:
        """The one way a hook's request reaches the power saver (HTTP and spool)."""
        assert self.power is not None
        return await self.power.accept(
            kind,
            nodes,
            resume_file if isinstance(resume_file, dict) else None,
            request_id=request_id,
        )

    async def serve_spool(self, accept: Accept | None = None) -> int:
        """Hand each spooled hook request to the power saver (or to ``accept``: a
        follower's forward to the leader), oldest first, and delete its file once accepted
        (durably: the request id is saved with it, so a file left by a crash right after is
        served once); quarantine the files that cannot be served. How many brought
        something new (not repeats)."""
        directory = self.spool_dir
        if directory is None:
            return 0
        async with self._spool_lock:
            try:
                return await self._serve_spool(directory, accept or self._accept)
            finally:
                self._spool_scanned = self._spool_scanned or accept is None

    async def _serve_spool(self, directory: Path, accept: Accept) -> int:
        if not spool.occupied(directory):  # nearly always: nothing to list or sweep
            return 0
        loop = asyncio.get_running_loop()
        for name in await loop.run_in_executor(None, spool.sweep, directory, self.clock.now()):
            log.warning("event=slurm_spool_swept file=%s reason=hook-died-mid-write", name)
        served = 0
        for path in await loop.run_in_executor(None, spool.pending, directory):
            if path.name in self._spool_stuck:
                continue
            try:
                request = await self._read_spooled(path)
                answer = await accept(
                    request.kind.replace("-", "_"),
                    request.nodes,
                    request.resume_file,
                    request.request_id,
                )
            except FileNotFoundError:  # gone meanwhile
                continue
            except spool.SpoolError as exc:  # never servable
                await self._quarantine(path, exc.reason, exc)
                continue
            except ValueError as exc:  # the power saver refuses it (a malformed hostlist)
                await self._quarantine(path, "refused", exc)
                continue
            except RecursionError as exc:  # whatever deep nesting a check missed
                await self._quarantine(path, "malformed", exc)
                continue
            except LeaderUnavailable as exc:  # a follower's: the next scan tries again
                log.info('event=slurm_spool_waiting file=%s reason="%s"', path.name, exc)
                break
            except Exception as exc:  # unreadable for now, or the state cannot be written
                tries = self._spool_failures.get(path.name, 0) + 1
                self._spool_failures[path.name] = tries
                log.warning(
                    'event=slurm_spool_unreadable file=%s tries=%d error="%r"',
                    path.name,
                    tries,
                    exc,
                )
                if tries >= SPOOL_TRIES:
                    await self._quarantine(path, "failing", exc)
                    continue
                break  # the next scan tries again; the requests after it wait (their order)
            self._spool_failures.pop(path.name, None)
            served += bool(answer.get("accepted"))
            log.info(
                "event=slurm_spool_served request_id=%s kind=%s nodes=%s accepted=%s waited=%.1fs",
                request.request_id,
                request.kind,
                request.nodes,
                ",".join(answer.get("accepted", [])) or "-",
                self.clock.now() - request.spooled_at,
            )
            await loop.run_in_executor(None, spool.remove, path)
        return served

    async def _read_spooled(self, path: Path) -> spool.SpooledRequest:
        """``spool.read`` with the API's token as it is now (a rotation is taken here as by
        the API) and when it was written (a file spooled before: ``token_rotated``)."""
        token = self.token.current()
        return await asyncio.get_running_loop().run_in_executor(
            None, spool.read, path, token, self.token.written_ns()
        )

    async def _quarantine(self, path: Path, reason: str, error: BaseException) -> None:
        self._spool_failures.pop(path.name, None)
        self.metrics.slurm_spool_quarantined.labels(reason=reason).inc()
        try:
            where = await asyncio.get_running_loop().run_in_executor(None, spool.quarantine, path)
        except OSError as exc:  # left where it is, skipped from now on (this process)
            self._spool_stuck.add(path.name)
            log.error(
                'event=slurm_spool_quarantine_failed file=%s reason=%s error="%s"',
                path.name,
                reason,
                exc,
            )
            return
        log.error(
            'event=slurm_spool_quarantined file=%s reason=%s moved_to=%s error="%s"',
            path.name,
            reason,
            where,
            str(error)[:300],
        )

    async def _serve_spool_logged(self, accept: Accept | None = None) -> None:
        try:
            await self.serve_spool(accept)
        except Exception as exc:  # the folder is unreadable: keep trying
            log.error('event=slurm_spool_failed error="%r"', exc)

    async def _serve_spool_forever(self, accept: Accept | None = None) -> None:
        while True:
            self._spool_wake.clear()
            await self._serve_spool_logged(accept)
            await sleep_or_event(self.clock, self.settings.poll_interval, self._spool_wake)

    # -- following (ha) ---------------------------------------------------------------------

    async def follow(self, forwarder: LeaderForwarder) -> None:
        """While this daemon follows: this host's spool (what the hooks spooled while no
        leader could be reached) goes to the leader every poll interval, through the hooks'
        own endpoint with each request's id, so the leader serves each once; a file is
        deleted only after the leader's 2xx (a lost answer: sent again, answered as
        repeated). A daemon that leads serves its spool itself at the start of its term."""
        if self.spool_dir is None:
            return
        self._spool_scanned = False  # the next term's HTTP requests wait for its first scan
        await self._serve_spool_forever(functools.partial(self._forward, forwarder))

    async def forward_spool(self, forwarder: LeaderForwarder) -> int:
        """One scan of this host's spool, each request forwarded to the leader (``follow``
        does this every poll interval); how many brought the leader something new."""
        return await self.serve_spool(functools.partial(self._forward, forwarder))

    async def _forward(
        self,
        forwarder: LeaderForwarder,
        kind: str,
        nodes: str,
        resume_file: Any,
        request_id: str | None,
    ) -> dict[str, Any]:
        """A spooled request, POSTed to the leader as the hook would have; its answer.
        LeaderUnavailable when it should wait (no leader, no answer, 5xx, a token the
        leader refuses), ValueError when the leader refuses the request itself."""
        path, body, headers = hook_request(
            kind.replace("_", "-"), nodes, resume_file, request_id, self.token.current()
        )
        answer = await forwarder.send("POST", path, body, headers)
        if answer is None or answer.status >= 500 or answer.status == 401:
            status = "no answer" if answer is None else f"HTTP {answer.status}"
            raise LeaderUnavailable(f"the leader did not take it ({status})")
        text = answer.body.decode("utf-8", "replace")
        if not 200 <= answer.status < 300:
            raise ValueError(f"the leader refused it: HTTP {answer.status}: {text[:200]}")
        try:
            taken = json.loads(text)
        except ValueError:
            taken = {}
        return taken if isinstance(taken, dict) else {}

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
        if self.spool_dir is not None:
            # what the hooks spooled while the daemon was down comes before the release loop:
            # a resume waiting there for a node kept DOWN drops that entry, and releasing it
            # first would POWER_DOWN a node Slurm is powering up for a job (chaos seed 47)
            await self._serve_spool_logged()
        jobs = [self.cleaner.run()]
        if self.power is not None:
            jobs.append(self.power.run())
        if self.spool_dir is not None:
            jobs.append(self._serve_spool_forever())
        await asyncio.gather(*jobs)

    async def close(self) -> None:
        if self._unsubscribe is not None:
            self._unsubscribe()
        if self.power is not None:
            await self.power.close()
        if self.adopter is not None:
            await self.adopter.close()
        if self.weigher is not None:
            await self.weigher.close()
        for task in list(self._pending):
            task.cancel()
        with contextlib.suppress(Exception):
            await asyncio.gather(*self._pending, return_exceptions=True)
