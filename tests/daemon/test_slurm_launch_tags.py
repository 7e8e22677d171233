"""External mode's launch tags under a changing policy (review of b0378e9): each launch
carries the Weight of the policy in force when it is made, so a reload that reprices the
types (``Controller.set_policy``) changes the next launch's ``shoal:slurm-resources``."""

from __future__ import annotations

import dataclasses

import pytest
from loop_harness import GIB, config_dict, make_harness
from shoal.daemon.config import parse_config
from shoal.daemon.slurm.conf import weights
from shoal.providers.workers import TAG_SLURM_RESOURCES
from shoal.runtime.testing import FakeClock
from shoal.scaler.model import Demand, QueuedJobs
from shoal.scaler.shape import Shape


def resources(tags: dict[str, str]) -> dict[str, str]:
    return dict(kv.split("=") for kv in tags[TAG_SLURM_RESOURCES].split())


@pytest.mark.parametrize("swap", [False, True])
async def test_a_reload_that_reprices_changes_the_next_launchs_weight(swap: bool) -> None:
    clock = FakeClock()
    raw = config_dict(
        node_types=[{"type": "c5.xlarge", "max": 3}, {"type": "m5.large", "max": 3}],
        demand={"slurm": True, "api": False, "reports": None},
        slurm={"mode": "external"},
    )
    h = await make_harness(clock, parse_config(raw))
    policy = h.controller.policy
    before = weights(policy)
    assert sorted(before.values()) == [1, 2]
    if swap:  # the reload: the same types, the prices swapped
        prices = {t.name: t.price_per_hour for t in policy.node_types}
        a, b = (t.name for t in policy.node_types)
        types = tuple(
            dataclasses.replace(t, price_per_hour=prices[b if t.name == a else a])
            for t in policy.node_types
        )
        h.controller.set_policy(dataclasses.replace(policy, node_types=types))
    expected = weights(h.controller.policy)
    assert (expected != before) == swap
    big = Shape(3600, 5 * GIB, 4, 0, False)  # c5.xlarge only (m5.large: 2 cores, 8 GiB)
    h.set_demand(Demand(queued=(QueuedJobs(big, 1),)))
    assert (await h.pass_()).launched == 1
    (node,) = await h.drive(h.provider.list_instances())
    assert resources(dict(node.tags))["Weight"] == str(expected["c5.xlarge"])
