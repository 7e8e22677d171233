"""Integrations: what a scheduler (Slurm is the first) adds to the daemon, in two steps.

An ``IntegrationKind`` is asked before the controller exists, for what the controller is built
with: a planner that replaces shoal's (Slurm's power saving: ``requests_only_planner``), a
drain and an undrain hook (``scontrol``), extra tags for every launch (a dynamic node's
features). Then ``build(config, clock, metrics, controller, token)`` makes the
``Integration`` around that controller (``token``: the service's one ``BearerToken``, which its
endpoints check): everything it needs is in its constructor, nothing is set on it or
by it afterwards. The
``Service`` iterates over its integrations for their demand sources, HTTP routes, background
work and close::

    kinds = integration_kinds(config)
    controller = build_controller(...)          # planner, drain hooks, launch tags from kinds
    integrations = [k.build(config, clock, metrics, controller, token) for k in kinds]
    for i in integrations: i.demand_sources(), i.add_routes(app), i.run(), i.close()

With ``ha`` ``run`` is the leader's work, for each term; an integration that is also a
``Follower`` has ``follow`` run while its daemon follows.

A new integration is a module with one ``IntegrationKind`` and an entry in
``integration_kinds``; the service needs no change.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from typing import TYPE_CHECKING, Protocol, runtime_checkable

if TYPE_CHECKING:
    from aiohttp import web
    from shoal.daemon.config import ShoalConfig
    from shoal.daemon.demand import DemandSource
    from shoal.daemon.drain import DrainHook, UndrainHook
    from shoal.daemon.http import BearerToken
    from shoal.daemon.leader.forward import LeaderForwarder
    from shoal.daemon.loop import Controller, Planner
    from shoal.daemon.metrics import ShoalMetrics
    from shoal.runtime.clock import Clock
    from shoal.scaler.model import NodeType, Policy

__all__ = ["Follower", "Integration", "IntegrationKind", "LaunchTags", "integration_kinds"]

# the tags of every launch of a node type, under the policy in force
LaunchTags = Callable[["NodeType", "Policy"], Mapping[str, str]]


class Integration(Protocol):
    """One integration in a running daemon, built around its controller."""

    def demand_sources(self) -> Sequence[DemandSource]:
        """Sources the service pumps into the controller."""
        ...

    def add_routes(self, app: web.Application) -> None:
        """Its HTTP endpoints, behind the API's bearer token (given to ``build``) where they
        change anything."""
        ...

    async def run(self) -> None:
        """Its background work, until cancelled."""
        ...

    async def close(self) -> None:
        """Stop what ``run`` and its requests started."""
        ...


@runtime_checkable
class Follower(Protocol):
    """An integration with work to do while this daemon follows (``ha``): ``follow`` runs
    from the start of each campaign until this daemon leads or stops (then it is
    cancelled), with the forwarder to the leader (``daemon.leader.forward``)."""

    async def follow(self, forwarder: LeaderForwarder) -> None: ...


class IntegrationKind(Protocol):
    """An integration before the controller exists; ``None`` answers leave shoal's own."""

    name: str  # in logs: event=startup_failed stage=<name>

    def planner(self, config: ShoalConfig) -> Planner | None: ...

    def drain_hook(self, config: ShoalConfig) -> DrainHook | None: ...

    def undrain_hook(self, config: ShoalConfig) -> UndrainHook | None: ...

    def launch_tags(self, config: ShoalConfig) -> LaunchTags | None: ...

    def build(
        self,
        config: ShoalConfig,
        clock: Clock,
        metrics: ShoalMetrics,
        controller: Controller,
        token: BearerToken | None = None,
    ) -> Integration: ...


def integration_kinds(config: ShoalConfig) -> list[IntegrationKind]:
    """The integrations ``config`` turns on, in the order the service runs them."""
    kinds: list[IntegrationKind] = []
    if config.demand.slurm and config.slurm is not None:
        from shoal.daemon.slurm.integration import SLURM

        kinds.append(SLURM)
    if getattr(config.provider, "interruption_queue", None):
        from shoal.daemon.interruptions import INTERRUPTIONS

        kinds.append(INTERRUPTIONS)
    return kinds
