"""Fixtures for daemon tests: the simulated cloud on a FakeClock, real config, real planner
(``loop_harness``)."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import pytest
from loop_harness import Harness, config_dict, make_harness
from shoal.daemon.config import parse_config
from shoal.runtime.testing import FakeClock

if TYPE_CHECKING:
    from shoal.providers.simulated import SimulatedProvisioner


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock()


@pytest.fixture
async def harness(clock: FakeClock) -> Harness:
    return await make_harness(clock, parse_config(config_dict()))


@pytest.fixture
def harness_factory(clock: FakeClock) -> Any:
    """``await harness_factory(config overrides..., provider=..., planner=...)``."""

    async def factory(
        provider: SimulatedProvisioner | None = None, planner: Any = None, **overrides: Any
    ) -> Harness:
        kwargs = {"planner": planner} if planner is not None else {}
        return await make_harness(clock, parse_config(config_dict(**overrides)), provider, **kwargs)

    return factory
