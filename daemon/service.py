"""``shoal run``: wire config, provider, demand sources, controller and HTTP; handle signals.

Lifecycle::

    build_provider (simulated | aws) ─► build_controller (catalogue: shapes and prices ─►
      policy ─► executor, controller; integrations' planner, drain hooks, launch tags)
      ─► integrations built around the controller (daemon.integration) ─► HTTP listener
      ─► controller.run(): reconcile ─► READY=1 ─► passes (WATCHDOG=1 after each healthy one)
    SIGHUP          reload the config file; an invalid one (or one whose files fail
                    ``preflight``) is refused and the old one kept; a changed
                    ``provider.capacity`` applies at once (``apply_capacity``); a changed
                    ``ha`` section is warned about and kept (its elector needs a restart)
    SIGTERM/SIGINT  STOPPING=1, finish the current pass, launch nothing new, exit 0 (< 10 s)

With ``ha`` (``daemon.leader``) the controller's loop and the integrations' background work
(the Slurm power saver, clean-up and spool, the interruption reader) run only while this
daemon leads (``Service._lead``): a follower campaigns, serves HTTP (``leader.gate``: writes
forwarded to the leader) and runs the integrations' ``follow`` (``Follower``). On
loss the integrations are cancelled at once and the controller is stopped (no new launch)
with half the lease's margin for the pass in flight to book what it launched, then
cancelled; a stop resigns after the last pass, so another daemon leads at once. Each term
begins by reading the durable state from etcd (``daemon.leader.state``: the launches in
flight of the last leader) and ends at once when a write of it is fenced.

systemd notifications are datagrams to ``$NOTIFY_SOCKET`` (``@`` = abstract namespace),
sent only when it is set; ``WATCHDOG=1`` only when ``$WATCHDOG_USEC`` is set too.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import functools
import logging
import os
import signal
import socket
from collections.abc import AsyncIterator, Callable, Mapping
from pathlib import Path
from typing import Any

from shoal.daemon.config import (
    ConfigError,
    ConfigIssue,
    LocalProviderConfig,
    ProviderConfig,
    ShoalConfig,
    SimulatedProviderConfig,
    load_config,
)
from shoal.daemon.config.ha import ha_changes
from shoal.daemon.config.preflight import check
from shoal.daemon.demand import (
    DemandFailure,
    DemandSource,
    DemandUpdate,
    DemoDemandSource,
    FileDemandSource,
)
from shoal.daemon.drain import (
    CommandDrainHook,
    DrainHook,
    NoDrainHook,
    UndrainHook,
    WebhookDrainHook,
    make_undrain_hook,
)
from shoal.daemon.durable import DurableStore, Fenced, StateBackend
from shoal.daemon.executor import Executor
from shoal.daemon.http import (
    BearerToken,
    InsecureListenError,
    check_listen,
    make_app,
    start_http,
)
from shoal.daemon.integration import Follower, Integration, integration_kinds
from shoal.daemon.leader import LeaderElector
from shoal.daemon.leader.forward import LeaderForwarder
from shoal.daemon.leader.gate import LeaderGauge, build_elector, follower_middleware
from shoal.daemon.leader.state import state_backend
from shoal.daemon.loop import Controller, ControllerSettings, PassRecord, Planner
from shoal.daemon.metrics import ShoalMetrics
from shoal.daemon.nodes import TrackedState
from shoal.daemon.wiring import (
    backoff_policy,
    demand_reports,
    node_type_specs,
    planner_policy,
    retry_policy,
)
from shoal.providers.base import AbstractProvisioner, FleetProvisioner
from shoal.providers.node_provider import Catalogue, CataloguedProvisioner
from shoal.providers.workers import WorkerSecrets
from shoal.runtime.clock import Clock, SystemClock
from shoal.scaler.backoff import BackoffTable
from shoal.scaler.model import Policy

__all__ = [
    "SHUTDOWN_TIMEOUT",
    "Service",
    "SystemdNotifier",
    "apply_config",
    "build_controller",
    "build_drain_hook",
    "build_policy",
    "build_provider",
    "reload_policy_config",
    "run",
]

log = logging.getLogger(__name__)
SHUTDOWN_TIMEOUT = 8.0  # seconds to let the current pass finish before cancelling it


class SystemdNotifier:
    """``sd_notify(3)`` without libsystemd: one datagram per state change."""

    def __init__(self, environ: Mapping[str, str] | None = None) -> None:
        env = os.environ if environ is None else environ
        self.address = env.get("NOTIFY_SOCKET") or None
        usec = env.get("WATCHDOG_USEC", "")
        pid = env.get("WATCHDOG_PID", "")
        watchdog_ok = usec.isdigit() and int(usec) > 0 and (not pid or pid == str(os.getpid()))
        self.watchdog_seconds = int(usec) / 1e6 if watchdog_ok else None

    @property
    def enabled(self) -> bool:
        return self.address is not None

    def notify(self, state: str) -> bool:
        if self.address is None:
            return False
        address = self.address
        if address.startswith("@"):
            address = "\0" + address[1:]
        try:
            with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as sock:
                sock.sendto(state.encode(), address)
        except OSError as exc:
            log.warning('event=sd_notify_failed state=%s error="%s"', state.split("\n")[0], exc)
            return False
        return True

    def watchdog(self) -> bool:
        return self.watchdog_seconds is not None and self.notify("WATCHDOG=1")


def build_provider(config: ShoalConfig, clock: Clock) -> FleetProvisioner:
    """The configured cloud: the simulated one, local slurmd processes, or EC2."""
    p = config.provider
    if p.kind == "local":
        return build_local_provider(config, clock)
    if p.kind == "simulated":
        from shoal.providers.simulated import SimulatedProvisioner

        return SimulatedProvisioner(
            clusterName=config.cluster_name,
            clusterType=p.cluster_type,
            zones=p.launch_zones,
            nodeStorage=p.node_storage,
            nodeStorageOverrides=list(p.node_storage_overrides),
            clock=clock,
            boot_delay=p.boot_delay,
            join_delay=p.join_delay,
            listing_lag=p.listing_lag,
            capacity=dict(p.capacity),
            spot_interruption_rate=p.spot_interruption_rate,
            seed=p.seed,
        )
    from shoal.providers.aws import AWSProvisioner

    return AWSProvisioner.from_config(config, clock=clock)


def build_local_provider(config: ShoalConfig, clock: Clock) -> FleetProvisioner:
    """Local slurmd processes (providers.local), for Slurm tests and demos."""
    from shoal.daemon.config import LocalProviderConfig
    from shoal.providers.local import LocalInstanceType, LocalProvisioner

    p = config.provider
    assert isinstance(p, LocalProviderConfig)
    slurm_conf = p.slurm_conf or (config.slurm.slurm_conf if config.slurm else None)
    return LocalProvisioner(
        clusterName=config.cluster_name,
        zones=p.launch_zones,
        nodeStorage=p.node_storage,
        nodeStorageOverrides=list(p.node_storage_overrides),
        state_dir=p.state_dir,
        instance_types=[
            LocalInstanceType(name, t.cores, t.memory, t.price)
            for name, t in p.instance_types.items()
        ],
        slurmd=p.slurmd,
        slurm_conf=str(slurm_conf) if slurm_conf is not None else None,
        capacity=dict(p.capacity),
        launch_delay=p.launch_delay,
        answer_delay=p.answer_delay,
        never_join=p.never_join,
        clock=clock,
        listing_lag=p.listing_lag,
    )


def apply_capacity(
    old: ProviderConfig, new: ProviderConfig, provider: FleetProvisioner
) -> ProviderConfig:
    """A reload's changed ``provider.capacity`` applies at once to the local and simulated
    providers (a stock-out ends, or starts, without a restart); the running provider section
    with it. Any other provider, or a change of kind, keeps ``old`` (a restart applies it)."""
    from shoal.providers.local import LocalProvisioner
    from shoal.providers.simulated import SimulatedProvisioner

    if (
        not isinstance(provider, LocalProvisioner | SimulatedProvisioner)
        or not isinstance(old, LocalProviderConfig | SimulatedProviderConfig)
        or not isinstance(new, LocalProviderConfig | SimulatedProviderConfig)
        or new.kind != old.kind
        or new.capacity == old.capacity
    ):
        return old
    for name in sorted((old.capacity.keys() | new.capacity.keys()) & provider.types.keys()):
        provider.set_capacity(name, new.capacity.get(name))  # (a limit on no type limits none)
    limits = ",".join(f"{name}={n}" for name, n in sorted(new.capacity.items()))
    log.info("event=capacity_applied capacity=%s", limits or "unlimited")
    return old.model_copy(update={"capacity": new.capacity})


def apply_config(
    controller: Controller,
    policy: Policy,
    old: ShoalConfig,
    new: ShoalConfig,
    provider: FleetProvisioner,
) -> ProviderConfig:
    """What a reload (``Service.reload``; the chaos harness's ``reload`` fault) changes in a
    running controller, once ``new`` checked and its ``policy`` built: the policy and the
    loop's settings (from the next pass), where later price refreshes take the policy
    from, the retry, drain and backoff policies, and ``provider.capacity`` where it applies
    at once (``apply_capacity``). Returns the provider section now in force."""
    section = apply_capacity(old.provider, new.provider, provider)
    controller.set_policy(policy, controller_settings(new))
    policy_config = reload_policy_config(old, new)  # as ``policy`` was built
    controller.policy_source = functools.partial(catalogue_policy, policy_config, provider)
    controller.executor.retry = retry_policy(new)
    controller.executor.drain_hook = build_drain_hook(new)
    controller.executor.undrain_hook = build_undrain_hook(new)
    controller.backoff = dataclasses.replace(controller.backoff, policy=backoff_policy(new))
    return section


def reload_policy_config(old: ShoalConfig, new: ShoalConfig) -> ShoalConfig:
    """The config a reload builds its policy from: ``new`` with the running provider
    section, which a restart applies (its zones too: the policy's offerings must be the
    ones the provider's fleet walks; its capacity, which applies at once, no policy reads)."""
    return new.model_copy(update={"provider": old.provider})


def catalogue_policy(config: ShoalConfig, provider: Catalogue) -> Policy:
    """The planner policy from the provider's catalogue (which holds every configured type):
    shapes, and prices where known (a spot entry at its spot price)."""
    types = config.instance_types()
    shapes = {t: provider.node_shape(t) for t in types}
    prices: dict[str, float | None] = {}
    for t in types:
        prices[t] = provider.instancePrice(t, False)
        prices[f"{t}:spot"] = provider.instancePrice(t, True)
    return planner_policy(config, shapes, prices)


async def build_policy(config: ShoalConfig, provider: Catalogue) -> Policy:
    """Look the configured types up in the provider's catalogue; the planner policy."""
    await provider.setAutoscaledNodeTypes(node_type_specs(config))
    await provider.catalogue(config.instance_types())
    return catalogue_policy(config, provider)


def _cost_features(config: ShoalConfig) -> list[tuple[str, Any]]:
    s = config.scaler
    used = []
    if s.packing == "cost":
        used.append(("scaler.packing", s.packing))
    if s.cost_ceiling_per_hour is not None:
        used.append(("scaler.cost_ceiling_per_hour", s.cost_ceiling_per_hour))
    return used


def price_issues(config: ShoalConfig, unpriced: list[str], where: str) -> list[ConfigIssue]:
    """Cost features need a price for every node type: one issue per feature that is on
    while some type has none (``unpriced``), naming the types."""
    if not unpriced:
        return []
    names = ", ".join(unpriced)
    return [
        ConfigIssue(path, value, f"needs a price for every node type; {where} has none for {names}")
        for path, value in _cost_features(config)
    ]


def unpriced_offline(config: ShoalConfig) -> list[str]:
    """Instance types with no known on-demand price, from what the provider ships (no cloud
    call): the simulated cloud's catalogue, or the shipped AWS price table for the region."""
    p = config.provider
    if p.kind == "local":
        return [
            t
            for t in config.instance_types()
            if t not in p.instance_types or p.instance_types[t].price is None
        ]
    if p.kind == "simulated":
        from shoal.providers.simulated import load_catalogue

        catalogue = load_catalogue()
        return [t for t in config.instance_types() if t not in catalogue]
    from shoal.providers.aws_pricing import PriceBook

    return PriceBook(p.region).missing_on_demand(config.instance_types())


def unpriced_node_types(policy: Policy) -> list[str]:
    return [t.name for t in policy.node_types if t.price_per_hour is None]


def build_undrain_hook(config: ShoalConfig) -> UndrainHook:
    """The configured undrain command or webhook; in Slurm's external mode, scontrol."""
    d = config.drain
    if not (d.undrain_command or d.undrain_webhook):
        for kind in integration_kinds(config):
            hook = kind.undrain_hook(config)
            if hook is not None:
                return hook
    return make_undrain_hook(d.undrain_command, d.undrain_webhook, d.timeout)


def build_drain_hook(config: ShoalConfig) -> DrainHook:
    d = config.drain
    if d.command:
        return CommandDrainHook(d.command, d.timeout)
    if d.webhook:
        return WebhookDrainHook(d.webhook, d.timeout)
    for kind in integration_kinds(config):
        hook = kind.drain_hook(config)
        if hook is not None:
            return hook
    return NoDrainHook()


def controller_settings(config: ShoalConfig) -> ControllerSettings:
    retry = retry_policy(config)
    return ControllerSettings(
        interval=config.scaler.interval,
        debounce=config.scaler.debounce,
        # listing, launches and terminations may each sit through a full retry deadline
        stuck_after=3 * retry.deadline + config.scaler.interval,
        ledger_ttl=config.scaler.launch_ledger_ttl,
    )


async def build_controller(
    config: ShoalConfig,
    provider: CataloguedProvisioner,
    clock: Clock,
    *,
    metrics: ShoalMetrics | None = None,
    planner: Planner | None = None,
    durable: bool = True,
    state_backend: StateBackend | None = None,
) -> Controller:
    """The one wiring of a controller, for ``shoal run``, ``shoal plan`` and the tests: the
    policy from the provider's catalogue (looked up through the retry layer), the executor with
    the configured retries and drain hook, the backoff policy and the loop's settings.
    ``durable`` False (``shoal plan``, ``shoal slurm-conf``): ``state_dir`` is neither locked
    nor read. ``state_backend`` (``ha``: etcd) keeps the durable state in place of
    ``state_dir``'s file."""
    metrics = metrics or ShoalMetrics()
    kinds = integration_kinds(config)
    executor = Executor(
        provider,
        clock,
        metrics,
        retry=retry_policy(config),
        drain_hook=build_drain_hook(config),
        undrain_hook=build_undrain_hook(config),
        launch_tags=next(filter(None, (k.launch_tags(config) for k in kinds)), None),
    )

    async def policy() -> Policy:
        return await build_policy(config, provider)

    if planner is None:
        planner = next(filter(None, (k.planner(config) for k in kinds)), None)

    return Controller(
        provider,
        await executor.call("describe_instance_types", policy),
        clock=clock,
        metrics=metrics,
        executor=executor,
        settings=controller_settings(config),
        backoff=BackoffTable(backoff_policy(config)),
        planner=planner,
        zone=config.provider.launch_zones[0],
        policy_source=functools.partial(catalogue_policy, config, provider),
        # off the event loop: the lock file's write is fsynced (the start-up probe); a
        # one-shot command's store is memory-only without the daemon's warning about it
        store=(
            await asyncio.to_thread(
                functools.partial(DurableStore.open, backend=state_backend), config.state_dir
            )
            if durable
            else DurableStore(None)
        ),
    )


def fence_handler(elector: LeaderElector, epoch: int) -> Callable[[Fenced], None]:
    """What a refused state write does in the term ``epoch``: step down at once, unless that
    term is over already (a write of an earlier term, refused after this daemon led again)."""

    def fenced(exc: Fenced) -> None:
        log.error('event=state_fenced epoch=%s error="%s"', epoch, exc)
        if elector.epoch == epoch:
            elector.step_down("fenced")

    return fenced


async def start_term(elector: LeaderElector, controller: Controller, clock: Clock) -> int | None:
    """A term's start, before its first pass (``Service._act``, and each daemon of the chaos
    harness's ha mode): the durable state as the last leader left it (``Controller.begin_term``),
    a fenced state write ending the term (``fence_handler``), then ``Controller.resume``.
    Returns the epoch; None when the term could not begin (the read failed, or the term ended
    first): acting without the last leader's state could launch twice, so the lease is given
    back and the caller campaigns again a renewal period later."""
    epoch = elector.epoch
    try:
        if epoch is None:
            raise RuntimeError("no epoch: the term ended before it began")
        await controller.begin_term(epoch)
    except Exception as exc:
        log.error('event=term_not_begun epoch=%s error="%r"', epoch, exc)
        with contextlib.suppress(Exception):  # else the lease expires by itself
            await elector.resign()
        await clock.sleep(getattr(elector, "renew_every", 1.0))
        return None
    controller.store.on_fenced[:] = [fence_handler(elector, epoch)]
    controller.resume()
    return epoch


async def term_grace(
    elector: LeaderElector, controller: Controller, clock: Clock, work: asyncio.Future[Any]
) -> None:
    """The term ended with ``work`` (the controller's loop, or one pass) in flight: launch
    nothing new (``Controller.stop``) and give it half the lease's margin to finish (the lease
    can pass to another daemon ``margin`` after the term ended); the caller cancels it if it
    is still running then."""
    controller.stop()
    if work.done():
        return
    grace = asyncio.ensure_future(clock.sleep(getattr(elector, "margin", 0.0) / 2))
    try:
        await asyncio.wait({work, grace}, return_when=asyncio.FIRST_COMPLETED)
    finally:
        grace.cancel()


class Service:
    """One running daemon. ``await serve()`` until a stop signal; returns the exit code."""

    def __init__(
        self,
        config: ShoalConfig,
        config_path: str | os.PathLike[str] | None,
        *,
        clock: Clock | None = None,
        provider: FleetProvisioner | None = None,
        notifier: SystemdNotifier | None = None,
        install_signals: bool = True,
        elector: LeaderElector | None = None,
        secrets: WorkerSecrets | None = None,
    ) -> None:
        """``secrets``: the workers' secrets ``shoal run``'s preflight read (None: the
        provider reads the files)."""
        self.config = config
        self.secrets = secrets
        self.config_path = Path(config_path) if config_path is not None else None
        self.clock: Clock = clock or SystemClock()
        self.provider = provider
        self.notifier = notifier or SystemdNotifier()
        self.install_signals = install_signals
        self.metrics = ShoalMetrics()
        self.controller: Controller | None = None
        self.integrations: list[Integration] = []  # built around the controller
        self.port: int | None = None
        self.started = asyncio.Event()  # HTTP listening, controller running
        self._stop = asyncio.Event()
        self._tasks: list[asyncio.Task[Any]] = []
        self.reloads = 0  # reload attempts finished
        self.last_reload_ok: bool | None = None
        self._demo: asyncio.Task[None] | None = None  # demand.demo's pump, until a push
        self.elector = elector or build_elector(config, self.clock)  # None: acts alone
        # a follower's writes go to the leader (None: no ha)
        self.forwarder = LeaderForwarder(self.elector) if self.elector is not None else None

    # -- control ----------------------------------------------------------------------------

    def stop(self, reason: str = "requested") -> None:
        if self._stop.is_set():
            return
        log.info("event=stopping reason=%s", reason)
        self.notifier.notify("STOPPING=1")
        if self.controller is not None:
            self.controller.stop()
        self._stop.set()

    async def reload(self) -> bool:
        """Re-read the config file; refuse (and keep the running config) if it is invalid."""
        if self.config_path is None or self.controller is None:
            return False
        self.notifier.notify("RELOADING=1")
        ok = False
        try:
            try:
                new = load_config(self.config_path)
                issues, secrets = check(new)
                if issues:
                    raise ConfigError(str(self.config_path), issues)
            except ConfigError as exc:
                issues = "; ".join(str(e) for e in exc.errors)
                log.error('event=reload_refused path=%s errors="%s"', self.config_path, issues)
                return False
            try:
                policy = await build_policy(
                    reload_policy_config(self.config, new), self._provider()
                )
                issues = price_issues(new, unpriced_node_types(policy), "the provider's catalogue")
                if issues:
                    raise ConfigError(str(self.config_path), issues)
            except Exception as exc:
                log.error('event=reload_refused path=%s error="%s"', self.config_path, exc)
                with contextlib.suppress(Exception):  # restore the provider's node types
                    await build_policy(self.config, self._provider())
                return False
            logging.getLogger().setLevel(new.log_level)
            provider = apply_config(self.controller, policy, self.config, new, self._provider())
            self.config = self.config.model_copy(update={"provider": provider})
            sections = [
                name
                for name in (
                    "cluster_name",
                    "provider",
                    "api",
                    "demand",
                    "slurm",
                    "state_dir",
                    "workers",
                )
                if getattr(new, name) != getattr(self.config, name)
            ]
            # the running sections stay what the config in force says: a later reload, the
            # file unchanged, still finds them different and says so again
            new = new.model_copy(update={name: getattr(self.config, name) for name in sections})
            restart = list(sections)
            if self.secrets is not None and secrets != self.secrets:  # prepared at start only
                restart.append("workers.secrets")
            if restart:
                log.warning("event=reload_needs_restart sections=%s", ",".join(restart))
            ha_changed = ha_changes(self.config.ha, new.ha)
            if ha_changed:  # the running elector keeps its term: the old section stays
                log.warning(
                    "event=reload_ha_needs_restart changed=%s action=kept_old_ha",
                    ",".join(ha_changed),
                )
                new = new.model_copy(update={"ha": self.config.ha})
            self.config = new
            log.info(
                "event=reloaded path=%s node_types=%d", self.config_path, len(policy.node_types)
            )
            ok = True
            return True
        finally:
            self.reloads += 1
            self.last_reload_ok = ok
            self.notifier.notify("READY=1")

    def _provider(self) -> FleetProvisioner:
        assert self.provider is not None
        return self.provider

    # -- running ----------------------------------------------------------------------------

    async def serve(self) -> int:
        """Run until a stop signal; the provider is closed however this ends."""
        try:
            return await self._serve()
        finally:
            if self.provider is not None:
                await self.provider.close()

    async def _serve(self) -> int:
        config = self.config
        try:
            token = BearerToken(config.api.token_file)  # read again when rotated
            check_listen(config.api.host, token.current())
        except (InsecureListenError, OSError, ValueError) as exc:  # never an open API
            log.error('event=startup_failed error="%s"', exc)
            return 2
        if self.provider is None:
            self.provider = build_provider(config, self.clock)
        try:
            # leader, join values: at start, with the secrets preflight read
            if isinstance(self.provider, AbstractProvisioner):  # clouds that boot workers
                await self.provider.prepare_workers(config.workers, self.secrets)
            backend = state_backend(self.elector, config) if self.elector is not None else None
            controller = await build_controller(
                config, self.provider, self.clock, metrics=self.metrics, state_backend=backend
            )
        except Exception as exc:
            log.error('event=startup_failed stage=policy error="%r"', exc)
            return 1
        policy = controller.policy
        issues = price_issues(
            config, unpriced_node_types(policy), f"the {config.provider.kind} catalogue"
        )
        if issues:
            for issue in issues:
                log.error('event=startup_failed stage=prices error="%s"', issue)
            return 2
        for kind in integration_kinds(config):
            try:
                self.integrations.append(
                    kind.build(config, self.clock, self.metrics, controller, token)
                )
            except Exception as exc:
                log.error('event=startup_failed stage=%s error="%s"', kind.name, exc)
                await self._close_integrations()
                return 1
        controller.store.drop_unclaimed()  # e.g. the slurm section after power_save is off
        await self.provider.start()
        self.controller = controller
        controller.on_ready.append(self._ready)
        controller.on_pass.append(self._after_pass)
        app = make_app(
            controller,
            token=token,
            accept_demand=config.demand.api,
            reports=demand_reports(config.demand),
            max_age=config.demand.max_age,
            on_push=self._stop_demo,
        )
        for integration in self.integrations:
            integration.add_routes(app)
        if self.elector is not None:
            app.middlewares.append(follower_middleware(self.elector, self.forwarder))
        try:
            runner, self.port = await start_http(app, config.api.host, config.api.port)
        except OSError as exc:
            log.error(
                'event=startup_failed stage=http listen=%s error="%s"', config.api.listen, exc
            )
            await self._close_integrations()
            return 1
        loop = asyncio.get_running_loop()
        if self.install_signals:
            loop.add_signal_handler(signal.SIGTERM, self.stop, "SIGTERM")
            loop.add_signal_handler(signal.SIGINT, self.stop, "SIGINT")
            loop.add_signal_handler(signal.SIGHUP, self._on_sighup)
        self._watchdog_warning()
        log.info(
            "event=started cluster=%s provider=%s listen=%s:%d node_types=%d",
            config.cluster_name,
            config.provider.kind,
            config.api.host,
            self.port,
            len(policy.node_types),
        )
        run_task = asyncio.create_task(
            controller.run() if self.elector is None else self._lead(self.elector, controller),
            name="shoal-controller",
        )
        for source in self._demand_sources(config):
            task = asyncio.create_task(self._pump(source), name=f"shoal-demand-{source.name}")
            self._tasks.append(task)
            if isinstance(source, DemoDemandSource):
                self._demo = task
        if self.notifier.watchdog_seconds is not None:
            self._tasks.append(asyncio.create_task(self._heartbeat(), name="shoal-watchdog"))
        for i, integration in enumerate(self.integrations if self.elector is None else ()):
            self._tasks.append(
                asyncio.create_task(integration.run(), name=f"shoal-integration-{i}")
            )
        self.started.set()
        try:
            stop_wait = asyncio.create_task(self._stop.wait())
            await asyncio.wait({run_task, stop_wait}, return_when=asyncio.FIRST_COMPLETED)
            stop_wait.cancel()
            if not self._stop.is_set():  # the controller ended by itself: a bug
                log.error("event=controller_exited error=%r", run_task.exception())
                self.stop("controller-exited")
            try:
                await asyncio.wait_for(asyncio.shield(run_task), SHUTDOWN_TIMEOUT)
            except TimeoutError:
                log.warning("event=shutdown_timeout waited=%.0fs action=cancel", SHUTDOWN_TIMEOUT)
                run_task.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await run_task
        finally:
            for task in self._tasks:
                task.cancel()
            for task in self._tasks:
                with contextlib.suppress(asyncio.CancelledError, Exception):
                    await task
            await self._close_integrations()
            if self.elector is not None:
                await self.elector.close()
            if self.forwarder is not None:
                await self.forwarder.close()
            if self.install_signals:
                for sig in (signal.SIGTERM, signal.SIGINT, signal.SIGHUP):
                    loop.remove_signal_handler(sig)
            await runner.cleanup()
        log.info("event=stopped passes=%d", controller.passes)
        return 0

    async def _lead(self, elector: LeaderElector, controller: Controller) -> None:
        """With ``ha``: campaign; while leading, act; on loss, stop acting and campaign
        again; on stop, resign once the last pass is done. Returns when the controller's
        loop ends by itself (a bug: ``_serve`` stops the daemon)."""
        gauge = LeaderGauge(self.metrics.registry)
        gauge.set(False)
        self.notifier.notify("READY=1")  # a follower is up too (systemd's Type=notify)
        stop = asyncio.create_task(self._stop.wait())
        try:
            while not self._stop.is_set():
                campaign = asyncio.create_task(elector.campaign(), name="shoal-campaign")
                following = self._follow()
                await asyncio.wait({campaign, stop}, return_when=asyncio.FIRST_COMPLETED)
                for task in following:  # before this term's own work starts
                    task.cancel()
                await asyncio.gather(*following, return_exceptions=True)
                if not campaign.done():
                    campaign.cancel()
                    break
                campaign.result()
                gauge.set(True)
                try:
                    if await self._act(elector, controller):
                        return
                finally:
                    gauge.set(False)
                    self.metrics.forget_cluster()  # the next leader's to show
        finally:
            stop.cancel()
            try:
                await elector.resign()
            except Exception as exc:  # the lease expires by itself
                log.warning('event=resign_failed error="%r"', exc)

    def _follow(self) -> list[asyncio.Task[None]]:
        """What the integrations do while this daemon follows (``Follower``: the Slurm
        spool of this host, forwarded to the leader)."""
        assert self.forwarder is not None
        return [
            asyncio.create_task(integration.follow(self.forwarder), name=f"shoal-follow-{i}")
            for i, integration in enumerate(self.integrations)
            if isinstance(integration, Follower)
        ]

    async def _act(self, elector: LeaderElector, controller: Controller) -> bool:
        """One term: the durable state read (``Controller.begin_term``), then the controller's
        loop and the integrations' background work until the term ends (a state write fenced
        ends it too) or the daemon stops, then no more; True when the loop ended by itself."""
        if await start_term(elector, controller, self.clock) is None:
            return False
        run = asyncio.create_task(controller.run(), name="shoal-controller-term")
        actors = [
            asyncio.create_task(integration.run(), name=f"shoal-integration-{i}")
            for i, integration in enumerate(self.integrations)
        ]
        ended = [asyncio.create_task(elector.lost()), asyncio.create_task(self._stop.wait())]
        try:
            await asyncio.wait({run, *ended}, return_when=asyncio.FIRST_COMPLETED)
            for task in actors:  # what the integrations do is not a pass: stopped now
                task.cancel()
            controller.stop()  # launch nothing new; the pass in flight books what it did
            if run.done():
                return not self._stop.is_set() and elector.is_leader
            if self._stop.is_set() and elector.is_leader:
                await asyncio.shield(run)  # _serve bounds it by SHUTDOWN_TIMEOUT
            else:
                await term_grace(elector, controller, self.clock, run)
            return False
        finally:
            for task in (run, *actors, *ended):
                task.cancel()
            await asyncio.gather(run, *actors, *ended, return_exceptions=True)

    async def _close_integrations(self) -> None:
        for integration in self.integrations:
            await integration.close()

    def _on_sighup(self) -> None:
        log.info("event=reload_requested signal=SIGHUP path=%s", self.config_path)
        self._tasks.append(asyncio.create_task(self.reload(), name="shoal-reload"))

    def _ready(self) -> None:
        self.notifier.notify("READY=1")
        log.info("event=ready")

    def _after_pass(self, record: PassRecord) -> None:
        assert self.controller is not None
        if self.controller.alive():
            self.notifier.watchdog()

    async def _heartbeat(self) -> None:
        """Feed the systemd watchdog while the loop is alive, also during a long pass that
        waits out provider retries; stop feeding it once the loop is wedged."""
        seconds = self.notifier.watchdog_seconds
        assert seconds is not None and self.controller is not None
        while True:
            await self.clock.sleep(seconds / 3)
            following = self.elector is not None and not self.elector.is_leader
            if following or self.controller.alive():
                self.notifier.watchdog()

    def _watchdog_warning(self) -> None:
        seconds = self.notifier.watchdog_seconds
        if seconds is not None and seconds < self.config.scaler.interval:
            log.warning(
                "event=watchdog_too_short watchdog=%.0fs interval=%.0fs",
                seconds,
                self.config.scaler.interval,
            )

    def _demand_sources(self, config: ShoalConfig) -> list[DemandSource]:
        sources: list[DemandSource] = []
        d = config.demand
        if d.file is not None:
            sources.append(
                FileDemandSource(d.file, self.clock, reports=demand_reports(d), max_age=d.max_age)
            )
        if config.demand.demo:
            sources.append(DemoDemandSource(self.clock, node_names=self._ready_nodes))
        for integration in self.integrations:
            sources.extend(integration.demand_sources())
        return sources

    def _stop_demo(self) -> None:
        """Pushed demand wins: the demo stops for good at the first accepted PUT, so it never
        overwrites what was pushed."""
        if self._demo is not None and not self._demo.done():
            self._demo.cancel()
            log.info("event=demo_stopped reason=pushed_demand")
        self._demo = None

    def _ready_nodes(self) -> list[str]:
        """Joined autoscaled nodes, for the demo demand to keep busy."""
        if self.controller is None:
            return []
        return [
            t.id
            for t in self.controller.tracker.all()
            if t.state is TrackedState.READY and not t.static
        ]

    async def _pump(self, source: DemandSource) -> None:
        assert self.controller is not None
        updates: AsyncIterator[DemandUpdate | DemandFailure] = source.updates()
        last: tuple[int, int, int] | None = None
        async for update in updates:
            if isinstance(update, DemandUpdate):
                update = dataclasses.replace(update, source=source.name)
            self.controller.set_demand(update)
            if isinstance(update, DemandUpdate):
                # a polled source sends every read (running jobs' elapsed times move): log
                # at INFO only when the counts change
                counts = (
                    sum(q.count for q in update.demand.queued),
                    len(update.demand.running),
                    len(update.joined_nodes or ()),
                )
                same, last = counts == last, counts
                log.log(
                    logging.DEBUG if same else logging.INFO,
                    "event=demand_updated source=%s queued=%d running=%d",
                    source.name,
                    *counts[:2],
                )


def run(
    config: ShoalConfig,
    config_path: str | os.PathLike[str] | None = None,
    secrets: WorkerSecrets | None = None,
) -> int:
    """Run the daemon until SIGTERM/SIGINT; returns the process exit code. ``secrets``: what
    the preflight read (``daemon.config.preflight.check``)."""
    if not logging.getLogger().handlers:
        logging.basicConfig(
            level=config.log_level, format="%(asctime)s %(levelname)s %(name)s %(message)s"
        )
    return asyncio.run(Service(config, config_path, secrets=secrets).serve())
