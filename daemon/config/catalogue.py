"""``catalogue_issues(config)``: the instance types and the region a config names, checked
against what shoal ships, without the network; ``shoal check-config`` reports them.

Which names are known depends on the provider, because each provider takes its types from
a different place:

- ``simulated``: the simulated cloud's catalogue (``providers/catalogue/instance_types.json``);
  any other type fails its first launch.
- ``local``: the types ``provider.instance_types`` defines (the config's own catalogue).
- ``aws``: EC2's instance types as the installed botocore's EC2 model lists them (the SDK
  shoal calls EC2 with; the list ships with it, so no call is made), and the types of the
  shipped price table. The 36 types of the simulated catalogue would be far too few: EC2
  describes any type at run time.

Every place a config names an instance type is checked: ``node_types`` (each instance type
of an entry), ``provider.node_storage_overrides`` and the simulated ``provider.capacity``.
(``provider.capacity`` and ``never_join`` of the local provider, and ``slurm.node_types`` and
``slurm.features``, are already checked against these by validation.)

The AWS region must be one botocore knows in any partition (aws, aws-cn, aws-us-gov...) or
one of the shipped price table; a region the price table lacks but EC2 has is valid (its
prices come from the Pricing API). Each launch zone must be a zone of that region.
Each issue names the key, the value and the closest known name (``difflib``).
"""

from __future__ import annotations

import functools
from collections.abc import Collection
from typing import TYPE_CHECKING

from shoal.daemon.config.common import ConfigIssue
from shoal.daemon.config.suggest import did_you_mean
from shoal.scaler.shape import parse_storage_overrides

if TYPE_CHECKING:
    from shoal.daemon.config import ShoalConfig

__all__ = ["aws_instance_types", "aws_regions", "catalogue_issues"]


def catalogue_issues(config: ShoalConfig) -> list[ConfigIssue]:
    """Every instance type, region and zone ``config`` names that its provider does not know
    (empty: none)."""
    p = config.provider
    known, where = _known_types(config)
    issues: list[ConfigIssue] = []

    def check(key: str, name: str) -> None:
        if name not in known:
            hint = did_you_mean(name, known)
            issues.append(ConfigIssue(key, name, f"unknown instance type: not in {where}{hint}"))

    for index, entry in enumerate(config.node_types):
        for name in entry.instance_types:
            check(f"node_types[{index}].type", name)
    for index, item in enumerate(p.node_storage_overrides):
        for name in parse_storage_overrides([item]):
            check(f"provider.node_storage_overrides[{index}]", name)
    if p.kind == "simulated":
        for name in p.capacity:
            check("provider.capacity", name)
    if p.kind == "aws":
        regions = aws_regions()
        if p.region not in regions:
            hint = did_you_mean(p.region, regions)
            issues.append(ConfigIssue("provider.region", p.region, f"unknown AWS region{hint}"))
            return issues  # its zones cannot be checked
        key = "provider.zones" if p.zones else "provider.zone"
        for zone in p.launch_zones:
            if not zone.startswith(p.region):
                issues.append(
                    ConfigIssue(key, zone, f"not a zone of region {p.region} (e.g. {p.region}a)")
                )
    return issues


def _known_types(config: ShoalConfig) -> tuple[Collection[str], str]:
    """The instance types the config's provider knows, and where they come from."""
    p = config.provider
    if p.kind == "local":
        return p.instance_types, "provider.instance_types"
    if p.kind == "simulated":
        from shoal.providers.simulated import load_catalogue

        return load_catalogue(), "the simulated cloud's catalogue"
    return aws_instance_types(), "EC2's instance types"


@functools.cache
def aws_instance_types() -> frozenset[str]:
    """EC2's instance types, from botocore's EC2 model and the shipped price table."""
    import botocore.session
    from shoal.providers.aws_pricing import load_price_table

    model = botocore.session.get_session().get_service_model("ec2")
    names = set(model.shape_for("InstanceType").enum)
    for prices in load_price_table().regions.values():
        names.update(prices)
    return frozenset(names)


@functools.cache
def aws_regions() -> frozenset[str]:
    """AWS regions with EC2 in every partition botocore knows, and the shipped price table's."""
    import botocore.session
    from shoal.providers.aws_pricing import load_price_table

    session = botocore.session.get_session()
    names = set(load_price_table().regions)
    for partition in session.get_available_partitions():
        names.update(session.get_available_regions("ec2", partition_name=partition))
    return frozenset(names)
