"""The ``provider`` section: which cloud workers launch in (simulated, aws, local).

Validation only; ``daemon.service.build_provider`` turns a section into a provisioner.
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Literal

from pydantic import BaseModel, Field, ValidationInfo, field_validator, model_validator
from shoal.daemon.config.common import _STRICT, _FieldError
from shoal.daemon.units import Duration, Size
from shoal.scaler.shape import parse_storage_overrides

__all__ = [
    "AwsProviderConfig",
    "LocalInstanceTypeConfig",
    "LocalProviderConfig",
    "ProviderConfig",
    "SimulatedProviderConfig",
]


class _ProviderCommon(BaseModel):
    model_config = _STRICT

    cluster_type: Literal["mesos", "kubernetes"] = "mesos"
    """The scheduler workers join (Toil's clusterType)."""
    zone: str | None = Field(default=None, min_length=1)
    """Availability zone the workers launch in (or give ``zones``)."""
    zones: tuple[Annotated[str, Field(min_length=1)], ...] = Field(
        default=(), validate_default=True
    )
    """Availability zones in preference order: a capacity error in one falls back to the next
    in the same pass."""
    node_storage: int = Field(default=50, ge=1)
    """Root volume GiB for types without instance storage (Toil's nodeStorage)."""
    node_storage_overrides: tuple[str, ...] = ()
    """Per-type root volume GiB, ``"i3.large:100"`` (Toil's nodeStorageOverrides)."""

    @field_validator("node_storage_overrides")
    @classmethod
    def _overrides(cls, value: tuple[str, ...]) -> tuple[str, ...]:
        parse_storage_overrides(value, minimum=1)  # ValueError quoting the bad item
        return value

    @field_validator("zones")
    @classmethod
    def _zones(cls, value: tuple[str, ...], info: ValidationInfo) -> tuple[str, ...]:
        zone = info.data.get("zone")
        if zone is None and not value and "zone" in info.data:
            raise ValueError("give zone: <zone> or zones: [<zone>, ...]")
        if zone is not None and value:
            raise ValueError(f"give zone ({zone!r}) or zones, not both")
        if len(set(value)) != len(value):
            raise ValueError("a zone appears twice")
        return value

    @property
    def launch_zones(self) -> tuple[str, ...]:
        """The zones workers launch in, in preference order."""
        return self.zones or ((self.zone,) if self.zone else ())


class SimulatedProviderConfig(_ProviderCommon):
    """The in-process simulated cloud (catalogue of AWS-like types, prices, boot delays)."""

    kind: Literal["simulated"]
    """The in-process simulated cloud."""
    boot_delay: Duration = 20.0
    """Time from launch until the instance is running."""
    join_delay: Duration = 10.0
    """Time from running until the node joins the scheduler."""
    listing_lag: Duration = 0.0
    """How long a new instance is missing from the listing (EC2's is eventually consistent)."""
    capacity: dict[str, Annotated[int, Field(ge=0)]] = Field(default_factory=dict)
    """Per instance type limit on instances that can run at once (absent: unlimited)."""
    spot_interruption_rate: float = Field(default=0.0, ge=0.0, le=1.0)
    """Probability per hour that a spot instance is interrupted."""
    seed: int = 0
    """Seed of the simulated cloud's random draws (spot interruption times)."""


class AwsProviderConfig(_ProviderCommon):
    """Amazon EC2 (aiobotocore); credentials come from the usual AWS chain, never from here."""

    kind: Literal["aws"]
    """Amazon EC2."""
    cluster_type: Literal["mesos", "kubernetes", "slurm"] = "mesos"
    """The scheduler workers join (Toil's clusterType; slurm: munge and a configless slurmd)."""
    region: str = Field(min_length=1)
    """The EC2 region, e.g. us-west-2."""
    endpoint_url: str | None = None
    """Alternative EC2 endpoint (e.g. a moto server in tests)."""
    metadata_endpoint: str = "http://169.254.169.254"
    """The instance metadata service (IMDSv2) of the machine shoal runs on."""
    image_id: str | None = None
    """AMI id; or give image_name and image_owner to look it up."""
    image_name: str | None = None
    """AMI name to look up (with image_owner); the newest match is used."""
    image_owner: str | None = None
    """Account id (or alias) that owns the AMI named by image_name."""
    subnet_id: str | None = None
    """Subnet workers launch in (absent: the default subnet of the zone)."""
    security_group_ids: tuple[str, ...] = ()
    """Security groups of every worker."""
    key_name: str | None = None
    """EC2 key pair for SSH to the workers."""
    instance_profile_arn: str | None = None
    """IAM instance profile of the workers."""
    extra_tags: dict[str, str] = Field(default_factory=dict)
    """Tags added to every instance (besides shoal's membership tags)."""
    price_refresh: bool = True
    """Refresh prices from the AWS Pricing API and spot price history at start and every 12 h
    (the shipped on-demand table stands in until then and on failure)."""
    pricing_endpoint_url: str | None = None
    """Alternative endpoint for the Pricing API and spot price history (tests)."""
    interruption_queue: str | None = Field(default=None, min_length=1)
    """SQS queue (URL, or name in this region) fed by EventBridge with spot interruption
    warnings, rebalance recommendations, instance state changes and AWS Health scheduled
    changes (deploy/interruption-queue.yaml creates it); absent: no interruption handling."""

    @field_validator("metadata_endpoint")
    @classmethod
    def _metadata_url(cls, value: str) -> str:
        if not value.startswith(("http://", "https://")):
            raise ValueError("expected an http:// URL, e.g. http://169.254.169.254")
        return value

    @model_validator(mode="after")
    def _image(self) -> AwsProviderConfig:
        by_name = [k for k in ("image_name", "image_owner") if getattr(self, k)]
        if self.image_id and by_name:
            raise _FieldError(
                ("image_id", *by_name), "give image_id, or image_name with image_owner, not both"
            )
        if not self.image_id and len(by_name) < 2:
            raise _FieldError(
                by_name or "image_id",
                "an image is required: image_id, or image_name and image_owner",
            )
        return self


class LocalInstanceTypeConfig(BaseModel):
    """A type of local "machine" of the local provider: its slurmd's CPUs and RealMemory."""

    model_config = _STRICT
    cores: int = Field(ge=1, le=4096)
    """CPUs the node's slurmd reports."""
    memory: Size = Field(gt=0)
    """RealMemory the node's slurmd reports."""
    price: float | None = Field(default=None, ge=0, allow_inf_nan=False)
    """USD per hour (only cost features need it)."""


class LocalProviderConfig(_ProviderCommon):
    """Local processes for Slurm tests and demos: launching a node starts a slurmd here."""

    kind: Literal["local"]
    """slurmd processes on this machine (Slurm tests and demos)."""
    cluster_type: Literal["slurm"] = "slurm"  # type: ignore[assignment]
    """The local provider runs Slurm workers only."""
    zone: str | None = Field(default="local", min_length=1)
    """The zone name its nodes report."""
    state_dir: Path
    """Where the provider keeps its records (instances.json) and the slurmd logs."""
    slurmd: str = Field(default="slurmd", min_length=1)
    """The slurmd program (a name on PATH or in /usr/sbin, or a path)."""
    slurm_conf: Path | None = None
    """SLURM_CONF for the slurmd processes; default slurm.slurm_conf, else slurmd's own."""
    instance_types: dict[str, LocalInstanceTypeConfig] = Field(min_length=1)
    """The local "machines" by type name: what each slurmd reports."""
    capacity: dict[str, Annotated[int, Field(ge=0)]] = Field(default_factory=dict)
    """Per type limit on instances running at once (absent: unlimited; 0: a stock-out)."""
    launch_delay: Duration = 0.0
    """Time a launch waits before it takes effect (tests)."""
    answer_delay: Duration = 0.0
    """Time a launch waits after it took effect, before it answers (tests)."""
    never_join: tuple[str, ...] = ()
    """Types whose nodes never register: a sleep stands in for their slurmd (tests)."""
    listing_lag: Duration = 0.0
    """Time a launched instance stays out of the listings (tests: a lagging cloud)."""

    @model_validator(mode="after")
    def _known_types(self) -> LocalProviderConfig:
        for key in ("capacity", "never_join"):
            unknown = sorted(set(getattr(self, key)) - set(self.instance_types))
            if unknown:
                raise _FieldError(
                    key,
                    f"{key} names {', '.join(unknown)}, not in instance_types "
                    f"({', '.join(sorted(self.instance_types))})",
                )
        return self


ProviderConfig = Annotated[
    SimulatedProviderConfig | AwsProviderConfig | LocalProviderConfig,
    Field(discriminator="kind"),
]
