"""shoal's YAML configuration, validated strictly by pydantic v2 (unknown keys are errors).

``load_config(path)`` returns a ``ShoalConfig`` or raises ``ConfigError`` whose ``errors``
each name the field path (``scaler.beta_inertia``, ``node_types[1].max``), the offending
value and what was expected. ``ShoalConfig.policy(shapes, prices)`` turns the config into
the planner's ``scaler.Policy``; ``retry_policy()`` gives the provider ``RetryPolicy``;
``workers`` is what the provider's ``prepare_workers`` takes (``providers.workers``).
Every key is documented in ``config.example.yaml``.
"""

from __future__ import annotations

import ipaddress
import os
import re
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Annotated, Any, Literal

import yaml
from pydantic import (
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    ValidationError,
    ValidationInfo,
    WithJsonSchema,
    field_validator,
    model_validator,
)
from shoal.daemon.demand import DemandReports
from shoal.daemon.units import DURATION_SCHEMA, SIZE_SCHEMA, parse_duration, parse_size
from shoal.providers.retry import RetryPolicy
from shoal.providers.workers import read_kubeadm_token, read_munge_key
from shoal.scaler.model import NodeType, Policy
from shoal.scaler.shape import Shape, ordered_instance_types, parse_node_types

__all__ = [
    "ApiConfig",
    "AwsProviderConfig",
    "Backoff",
    "ConfigError",
    "ConfigIssue",
    "DemandConfig",
    "DrainConfig",
    "Duration",
    "KubernetesJoinConfig",
    "LeaderConfig",
    "NodeTypeEntry",
    "RetryConfig",
    "ScalerConfig",
    "ShoalConfig",
    "SimulatedProviderConfig",
    "Size",
    "SlurmWorkerConfig",
    "WorkersConfig",
    "load_config",
    "parse_config",
]

Duration = Annotated[float, BeforeValidator(parse_duration), WithJsonSchema(DURATION_SCHEMA)]
"""Seconds; accepts ``30``, ``"30s"``, ``"5m"``, ``"1h30m"``, ``"200ms"``."""
PositiveDuration = Annotated[
    float, BeforeValidator(parse_duration), Field(gt=0), WithJsonSchema(DURATION_SCHEMA)
]
Size = Annotated[int, BeforeValidator(parse_size), WithJsonSchema(SIZE_SCHEMA)]
"""Bytes; accepts ``1073741824``, ``"1GiB"``, ``"512MiB"``, ``"1G"``."""

# the docstring under each field is its description in `shoal config-schema`
_STRICT = ConfigDict(extra="forbid", frozen=True, use_attribute_docstrings=True)


@dataclass(frozen=True, slots=True)
class ConfigIssue:
    """One problem: where (dotted path), the value found, and what was expected."""

    path: str
    value: Any
    expected: str

    def __str__(self) -> str:
        if self.value is _MISSING:
            return f"{self.path}: {self.expected}"
        return f"{self.path}: got {self.value!r}; {self.expected}"


class _Missing:
    def __repr__(self) -> str:
        return "<missing>"


_MISSING: Any = _Missing()


class _FieldError(ValueError):
    """A check across sections, reported at ``path`` (dotted) rather than where it ran."""

    def __init__(self, path: str, message: str) -> None:
        super().__init__(message)
        self.path = path


class ConfigError(Exception):
    """The config cannot be used; ``errors`` lists every problem found."""

    def __init__(self, source: str, errors: list[ConfigIssue]) -> None:
        self.source = source
        self.errors = errors
        lines = "\n".join(f"  {e}" for e in errors)
        super().__init__(f"invalid config {source}:\n{lines}")


# --- provider ------------------------------------------------------------------------------


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
        for item in value:
            name, sep, size = item.partition(":")
            if not (sep and name.strip() and size.strip().isdigit() and int(size) > 0):
                raise ValueError(
                    f"{item!r} is not 'instance_type:GiB' with a positive integer, "
                    'e.g. "i3.large:100"'
                )
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
    cluster_type: Literal["mesos", "kubernetes", "slurm"] = "mesos"
    """The scheduler workers join (Toil's clusterType; slurm: munge and a configless slurmd)."""
    region: str = Field(min_length=1)
    endpoint_url: str | None = None
    """Alternative EC2 endpoint (e.g. a moto server in tests)."""
    metadata_endpoint: str = "http://169.254.169.254"
    """The instance metadata service (IMDSv2) of the machine shoal runs on."""
    image_id: str | None = None
    """AMI id; or give image_name and image_owner to look it up."""
    image_name: str | None = None
    image_owner: str | None = None
    subnet_id: str | None = None
    security_group_ids: tuple[str, ...] = ()
    key_name: str | None = None
    instance_profile_arn: str | None = None
    extra_tags: dict[str, str] = Field(default_factory=dict)
    """Tags added to every instance (besides shoal's membership tags)."""
    price_refresh: bool = True
    """Refresh prices from the AWS Pricing API and spot price history at start and every 12 h
    (the shipped on-demand table stands in until then and on failure)."""
    pricing_endpoint_url: str | None = None
    """Alternative endpoint for the Pricing API and spot price history (tests)."""

    @field_validator("metadata_endpoint")
    @classmethod
    def _metadata_url(cls, value: str) -> str:
        if not value.startswith(("http://", "https://")):
            raise ValueError("expected an http:// URL, e.g. http://169.254.169.254")
        return value

    @model_validator(mode="after")
    def _image(self) -> AwsProviderConfig:
        if self.image_id and (self.image_name or self.image_owner):
            raise ValueError("give image_id, or image_name with image_owner, not both")
        if not self.image_id and not (self.image_name and self.image_owner):
            raise ValueError("an image is required: image_id, or image_name and image_owner")
        return self


class LocalInstanceTypeConfig(BaseModel):
    """A type of local "machine" of the local provider: its slurmd's CPUs and RealMemory."""

    model_config = _STRICT
    cores: int = Field(ge=1, le=4096)
    memory: Size = Field(gt=0)
    price: float | None = Field(default=None, ge=0, allow_inf_nan=False)
    """USD per hour (only cost features need it)."""


class LocalProviderConfig(_ProviderCommon):
    """Local processes for Slurm tests and demos: launching a node starts a slurmd here."""

    kind: Literal["local"]
    cluster_type: Literal["slurm"] = "slurm"  # type: ignore[assignment]
    zone: str | None = Field(default="local", min_length=1)
    state_dir: Path
    """Where the provider keeps its records (instances.json) and the slurmd logs."""
    slurmd: str = Field(default="slurmd", min_length=1)
    """The slurmd program (a name on PATH or in /usr/sbin, or a path)."""
    slurm_conf: Path | None = None
    """SLURM_CONF for the slurmd processes; default slurm.slurm_conf, else slurmd's own."""
    instance_types: dict[str, LocalInstanceTypeConfig] = Field(min_length=1)
    capacity: dict[str, Annotated[int, Field(ge=0)]] = Field(default_factory=dict)
    """Per type limit on instances running at once (absent: unlimited; 0: a stock-out)."""
    launch_delay: Duration = 0.0
    """Time a launch waits before it takes effect (tests)."""
    answer_delay: Duration = 0.0
    """Time a launch waits after it took effect, before it answers (tests)."""
    never_join: tuple[str, ...] = ()
    """Types whose nodes never register: a sleep stands in for their slurmd (tests)."""

    @model_validator(mode="after")
    def _known_types(self) -> LocalProviderConfig:
        for key in ("capacity", "never_join"):
            unknown = sorted(set(getattr(self, key)) - set(self.instance_types))
            if unknown:
                raise ValueError(
                    f"{key} names {', '.join(unknown)}, not in instance_types "
                    f"({', '.join(sorted(self.instance_types))})"
                )
        return self


ProviderConfig = Annotated[
    SimulatedProviderConfig | AwsProviderConfig | LocalProviderConfig,
    Field(discriminator="kind"),
]


# --- workers -------------------------------------------------------------------------------

_LABEL = r"[A-Za-z0-9](?:[A-Za-z0-9-]{0,61}[A-Za-z0-9])?"
_HOST = rf"{_LABEL}(?:\.{_LABEL})*"
_HOST_RE = re.compile(rf"^{_HOST}$")
_ENDPOINT_RE = re.compile(rf"^{_HOST}:[0-9]{{1,5}}$")
_CONTROLLERS_RE = re.compile(rf"^{_HOST}(?::[0-9]{{1,5}})?(?:,{_HOST}(?::[0-9]{{1,5}})?)*$")
_PROGRAM_RE = re.compile(r"^/[A-Za-z0-9_./-]+$")


def _port_ok(value: str) -> bool:
    return all(0 < int(part.rpartition(":")[2]) < 65536 for part in value.split(",") if ":" in part)


class LeaderConfig(BaseModel):
    """Where the scheduler's leader is: ``address``, or ``discover: tag | imds``."""

    model_config = _STRICT
    address: str | None = None
    """The leader's private address (IPv4 or DNS name) as workers reach it."""
    discover: Literal["tag", "imds"] | None = None
    """tag: the instance launchCluster tagged as this cluster's leader; imds: this machine
    (shoal runs on the leader), its private IPv4 from the instance metadata service."""

    @field_validator("address")
    @classmethod
    def _address(cls, value: str | None) -> str | None:
        if value is not None and (len(value) > 253 or not _HOST_RE.match(value)):
            raise ValueError("expected an IPv4 address or a DNS name, without a port")
        return value

    @model_validator(mode="after")
    def _one(self) -> LeaderConfig:
        if (self.address is None) == (self.discover is None):
            raise ValueError("give address: <ip or name>, or discover: tag | imds (one of them)")
        return self


class KubernetesJoinConfig(BaseModel):
    """The ``kubeadm join`` values of a kubernetes worker."""

    model_config = _STRICT
    token_file: Path
    """File holding the bootstrap token (``kubeadm token create``); never logged."""
    ca_cert_hash: str
    """``sha256:<hex>`` of the cluster CA's public key (``--discovery-token-ca-cert-hash``)."""
    api_endpoint: str | None = None
    """host:port of the API server; default: the leader, port 6443."""

    @field_validator("token_file")
    @classmethod
    def _token(cls, value: Path) -> Path:
        if not value.is_file():
            raise ValueError("expected an existing, readable token file")
        read_kubeadm_token(value)  # ValueError saying what is wrong, never the contents
        return value

    @field_validator("ca_cert_hash")
    @classmethod
    def _hash(cls, value: str) -> str:
        if not re.match(r"^sha256:[0-9a-f]{64}$", value):
            raise ValueError("expected sha256:<64 lower-case hex digits>, as kubeadm prints it")
        return value

    @field_validator("api_endpoint")
    @classmethod
    def _endpoint(cls, value: str | None) -> str | None:
        if value is not None and not (_ENDPOINT_RE.match(value) and _port_ok(value)):
            raise ValueError("expected host:port, e.g. 10.0.0.5:6443")
        return value


class SlurmWorkerConfig(BaseModel):
    """munge and a configless slurmd on every worker."""

    model_config = _STRICT
    munge_key_file: Path
    """The cluster's munge key (32..1024 bytes), copied to each worker; never logged."""
    conf_server: str | None = None
    """slurmctld host[:port] (comma-separated, primary first) slurmd fetches slurm.conf
    from; default: the leader."""
    registration: Literal["named", "dynamic"] = "named"
    """named: slurmd -N NAME (a node slurm.conf declares); dynamic: slurmd -Z --conf."""
    node_name: Literal["tag", "hostname"] = "tag"
    """named: NAME from the instance tag shoal:slurm-node, or the metadata host name."""
    features: tuple[str, ...] = ()
    """dynamic: node features, besides the instance type, which is always one."""
    slurmd: str = "/usr/sbin/slurmd"
    """slurmd on the machine image."""
    munged: str = "/usr/sbin/munged"
    """munged on the machine image."""

    @field_validator("munge_key_file")
    @classmethod
    def _key(cls, value: Path) -> Path:
        if not value.is_file():
            raise ValueError("expected an existing, readable munge key file")
        read_munge_key(value)
        return value

    @field_validator("conf_server")
    @classmethod
    def _controllers(cls, value: str | None) -> str | None:
        if value is not None and not (_CONTROLLERS_RE.match(value) and _port_ok(value)):
            raise ValueError("expected host[:port], comma-separated, e.g. 10.0.0.5:6817")
        return value

    @field_validator("features")
    @classmethod
    def _features(cls, value: tuple[str, ...]) -> tuple[str, ...]:
        for feature in value:
            if not re.match(r"^[A-Za-z0-9_.-]+$", feature):
                raise ValueError(f"feature {feature!r}: letters, digits, '_', '.', '-' only")
        return value

    @field_validator("slurmd", "munged")
    @classmethod
    def _program(cls, value: str) -> str:
        if not _PROGRAM_RE.match(value):
            raise ValueError("expected an absolute path without spaces")
        return value

    @model_validator(mode="after")
    def _registration(self) -> SlurmWorkerConfig:
        if self.registration == "dynamic" and "node_name" in self.model_fields_set:
            raise ValueError("node_name applies to registration: named, not dynamic")
        if self.registration == "named" and self.features:
            raise ValueError("features apply to registration: dynamic, not named")
        return self


class WorkersConfig(BaseModel):
    """How launched workers join the scheduler (the agent follows provider.cluster_type)."""

    model_config = _STRICT
    leader: LeaderConfig | None = None
    kubernetes: KubernetesJoinConfig | None = None
    slurm: SlurmWorkerConfig | None = None


# --- node types ----------------------------------------------------------------------------


class NodeTypeEntry(BaseModel):
    """One Toil node-type entry (``"c5.xlarge/c5a.xlarge"``, ``"r5.large:0.05"``) and its limits."""

    model_config = _STRICT

    type: str
    min: int = Field(default=0, ge=0)
    max: int = Field(default=10, ge=0)

    @field_validator("type")
    @classmethod
    def _parse(cls, value: str) -> str:
        value = value.strip()
        if "," in value:
            raise ValueError(f"{value!r} holds several entries; give one entry per list item")
        if not parse_node_types(value):
            raise ValueError("empty node type; expected e.g. 'c5.xlarge' or 'r5.large:0.05'")
        return value

    @model_validator(mode="after")
    def _limits(self) -> NodeTypeEntry:
        if self.min > self.max:
            raise ValueError(f"min ({self.min}) is greater than max ({self.max})")
        return self

    @property
    def instance_types(self) -> tuple[str, ...]:
        return tuple(ordered_instance_types(self.type))

    @property
    def bid(self) -> float | None:
        return parse_node_types(self.type)[0][1]


def _node_types(value: Any) -> Any:
    """A Toil string ``"a/b,c:0.05"`` becomes a list of entries with default limits."""
    if isinstance(value, str):
        parse_node_types(value)  # ValueError quoting the bad part
        value = [{"type": part.strip()} for part in value.split(",")] if value.strip() else []
    # Checked here rather than with min_length: pydantic would also report "at least 1
    # item" for a non-empty list whose only entry is invalid.
    if isinstance(value, list | tuple) and not value:
        raise ValueError("at least one node type is needed")
    return value


# --- scaler, demand, drain, api ------------------------------------------------------------


class Backoff(BaseModel):
    """Backoff of an offering (type x zone x capacity type) after a capacity error."""

    model_config = _STRICT
    initial: PositiveDuration = 180.0
    max: PositiveDuration = 1800.0

    @model_validator(mode="after")
    def _order(self) -> Backoff:
        if self.initial > self.max:
            raise ValueError(f"initial ({self.initial}s) is greater than max ({self.max}s)")
        return self


class RetryConfig(BaseModel):
    """Retries of one provider call on transient errors."""

    model_config = _STRICT
    attempts: int = Field(default=5, ge=1, le=100)
    initial: PositiveDuration = 0.5
    max: PositiveDuration = 20.0
    deadline: PositiveDuration = 120.0

    @model_validator(mode="after")
    def _order(self) -> RetryConfig:
        if self.initial > self.max:
            raise ValueError(f"initial ({self.initial}s) is greater than max ({self.max}s)")
        return self


class ScalerConfig(BaseModel):
    model_config = _STRICT

    interval: PositiveDuration = 30.0
    """Timer wake-up of the control loop; demand changes wake it at once."""
    debounce: Duration = 0.2
    """After a demand change, wait this long for more changes before planning."""
    target_time: PositiveDuration = 3600.0
    """Jobs should start within this time (Toil's targetTime)."""
    beta_inertia: float = Field(default=0.1, ge=0.0, lt=1.0)
    preemptible_compensation: float = Field(default=0.0, ge=0.0, le=1.0)
    """On-demand nodes of the same instance type per missing spot node (Toil's)."""
    compensate_other_types: bool = False
    """Also compensate on another on-demand type when a spot type has no on-demand twin."""
    node_memory_overhead: Size | None = None
    """Memory kept per node for the OS and agents; unset: Toil's reservation by node size."""
    node_disk_overhead: Size | None = None
    """Disk kept per node for the OS; unset: Toil's 5 GB + 5 % of the disk."""
    unneeded_time: Duration = 600.0
    scale_down_budget: float = Field(default=0.1, gt=0.0, le=1.0)
    join_timeout: PositiveDuration = 900.0
    """A node never seen joined is terminated this long after its launch."""
    unhealthy_timeout: PositiveDuration = 600.0
    """A node that joined and then is missing from every read this long is replaced, if it
    runs nothing; meanwhile it counts as capacity."""
    unhealthy_ok_count: int = Field(default=3, ge=0)
    unhealthy_max_fraction: float = Field(default=0.45, ge=0.0, le=1.0)
    """No missing node is replaced while more than max(unhealthy_ok_count,
    unhealthy_max_fraction x nodes) are missing, in the cluster or in their node type (the
    scheduler is likely at fault: Cluster Autoscaler's ok-total-unready-count and
    max-total-unready-percentage)."""
    launch_ledger_ttl: PositiveDuration = 600.0
    """A node the cloud accepted but never lists within this time counts as never joined."""
    cost_ceiling_per_hour: float | None = Field(default=None, gt=0.0, allow_inf_nan=False)
    packing: Literal["auto", "count", "cost"] = "auto"
    """"count": each job to the first node type that fits (Toil's order); "cost": the
    cheapest mix of priced node types, after the room live nodes have; "auto": "cost"
    when every node type has a price, else "count"."""
    solver_time_limit: Duration = Field(default=0.2, ge=0.0)
    """Solver (HiGHS) work per pass for cost packing, in seconds of a reference machine (counted in
    simplex iterations and nodes: the same plan on any machine); 0: the heuristic alone."""
    backoff: Backoff = Field(default_factory=Backoff)
    retry: RetryConfig = Field(default_factory=RetryConfig)


DemandField = Literal["queued", "running", "joined"]


class DemandConfig(BaseModel):
    model_config = _STRICT

    api: bool = True
    """Accept PUT /v1/demand."""
    file: Path | None = None
    """A JSON or YAML demand file, re-read when it changes."""
    demo: bool = False
    """Built-in demo demand: a scale-up then scale-down cycle every few minutes."""
    slurm: bool = False
    """Read squeue and sinfo (settings in the slurm section); reports running and joined."""
    reports: tuple[DemandField, ...] = ("queued", "running")
    """What the pushed demand (API, file) reports: queued jobs always; running jobs per node
    (then a node running none is idle, so bodies must carry "running", [] when none run; a
    pusher that knows only the queue drops it, and idle scale-down then needs a drain hook);
    joined nodes (then bodies must carry "nodes", which decide when a node is ready)."""
    max_age: PositiveDuration = 300.0
    """Pushed demand older than this is stale: nothing is launched or removed until it is
    pushed again (a file is as old as its last write)."""

    @field_validator("reports")
    @classmethod
    def _queued(cls, value: tuple[str, ...]) -> tuple[str, ...]:
        if "queued" not in value:
            raise ValueError("must include queued")
        return tuple(dict.fromkeys(value))

    def pushed_reports(self) -> DemandReports:
        return DemandReports(running="running" in self.reports, joined="joined" in self.reports)

    def sources(self) -> list[str]:
        """The demand sources configured."""
        named = (("api", self.api), ("file", self.file), ("demo", self.demo), ("slurm", self.slurm))
        return [n for n, on in named if on]

    def reports_running(self) -> bool:
        """Some source says which nodes run jobs (so the others are idle)."""
        pushed = (self.api or self.file is not None) and "running" in self.reports
        return pushed or self.demo or self.slurm


class DrainConfig(BaseModel):
    model_config = _STRICT

    command: tuple[str, ...] | None = None
    """argv run before a node is terminated; "{node}" is replaced by the node name."""
    webhook: str | None = None
    """URL sent POST {"node": name} before a node is terminated."""
    undrain_command: tuple[str, ...] | None = None
    """argv run when a draining node is taken back because demand returned."""
    undrain_webhook: str | None = None
    """URL sent POST {"node": name} when a draining node is taken back."""
    timeout: PositiveDuration = 30.0
    """How long the drain or undrain hook may take; past it the hook has failed."""

    @field_validator("command", "undrain_command")
    @classmethod
    def _argv(cls, value: tuple[str, ...] | None) -> tuple[str, ...] | None:
        if value is not None and (not value or not value[0]):
            raise ValueError('expected a non-empty argv list, e.g. ["kubectl", "drain", "{node}"]')
        return value

    @field_validator("webhook", "undrain_webhook")
    @classmethod
    def _url(cls, value: str | None) -> str | None:
        if value is not None and not value.startswith(("http://", "https://")):
            raise ValueError("expected an http:// or https:// URL")
        return value


def _split_listen(value: str) -> tuple[str, int]:
    host, sep, port = value.rpartition(":")
    host = host.strip("[]")
    if not sep or not host or not port.isdigit() or not 0 < int(port) < 65536:
        raise ValueError("expected host:port, e.g. 127.0.0.1:8089")
    return host, int(port)


def _is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


class ApiConfig(BaseModel):
    model_config = _STRICT

    listen: str = "127.0.0.1:8089"
    """host:port of the HTTP listener (metrics, health, status, demand)."""
    token_file: Path | None = None
    """File holding the bearer token for PUT /v1/demand; required off loopback."""

    @field_validator("listen")
    @classmethod
    def _listen(cls, value: str) -> str:
        _split_listen(value)
        return value

    @field_validator("token_file")
    @classmethod
    def _token(cls, value: Path | None) -> Path | None:
        if value is None:
            return value
        if not value.is_file():
            raise ValueError("expected an existing, readable token file")
        if not os.access(value, os.R_OK):
            raise ValueError("token file is not readable")
        if not value.read_text().strip():
            raise ValueError("token file is empty")
        return value

    @model_validator(mode="after")
    def _exposed(self) -> ApiConfig:
        if self.token_file is None and not _is_loopback(self.host):
            raise ValueError(
                f"listen {self.listen!r} is not loopback: set api.token_file so "
                "PUT /v1/demand requires a bearer token"
            )
        return self

    @property
    def host(self) -> str:
        return _split_listen(self.listen)[0]

    @property
    def port(self) -> int:
        return _split_listen(self.listen)[1]

    def token(self) -> str | None:
        """The bearer token (never log it)."""
        return self.token_file.read_text().strip() if self.token_file else None


# --- slurm ---------------------------------------------------------------------------------


class SlurmConfig(BaseModel):
    """Slurm as the demand source and scheduler (``demand.slurm: true``)."""

    model_config = _STRICT
    mode: Literal["power_save", "external"] = "power_save"
    """power_save: Slurm's power saving decides (ResumeProgram/SuspendProgram are shoal's
    hooks) and shoal launches and terminates the named nodes; external: shoal's planner
    decides from the queue, with dynamic nodes (slurmd -Z) it drains and deletes."""
    squeue: str = Field(default="squeue", min_length=1)
    sinfo: str = Field(default="sinfo", min_length=1)
    scontrol: str = Field(default="scontrol", min_length=1)
    slurm_conf: Path | None = None
    """SLURM_CONF for the commands (None: theirs, /etc/slurm/slurm.conf)."""
    command_timeout: PositiveDuration = 30.0
    poll_interval: PositiveDuration = 10.0
    """squeue and sinfo are read this often, and at once after a resume request."""
    max_age: PositiveDuration | None = None
    """Demand older than this is stale (default: 3 poll intervals + the command timeout)."""
    partitions: tuple[Annotated[str, Field(min_length=1)], ...] | None = None
    """Only jobs that may run in one of these partitions count (None: all)."""
    default_wall_time: PositiveDuration = 3600.0
    """The expected run time of a job without a time limit."""
    node_types: dict[Annotated[str, Field(min_length=1)], str] = Field(default_factory=dict)
    """power_save: Slurm node names -> node type (a node_types entry's type, or one of its
    instance types). A key is a hostlist ("cloud[1-4]"), a node name, or a prefix ("gpu"
    matches gpu1, gpu2...); the most specific match wins. Empty: "<name>-[1-<max>]" per
    node type, as `shoal slurm-conf` declares them (c5.xlarge: c5-xlarge-[1-10])."""
    features: dict[str, tuple[Annotated[str, Field(min_length=1)], ...]] = Field(
        default_factory=dict
    )
    """external: node type -> features its dynamic nodes register with (besides "shoal")."""
    resume_timeout: PositiveDuration | None = None
    """A node POWERING_UP longer than this is reset (default: Slurm's ResumeTimeout)."""
    cleanup_interval: PositiveDuration = 60.0
    """How often instances and Slurm's nodes are compared (orphans, stuck nodes)."""
    orphan_grace: PositiveDuration = 120.0
    """An instance this young is never an orphan (its node may not show it yet)."""
    set_node_addr: bool = False
    """Set each resumed node's NodeAddr/NodeHostname to its instance's private address
    (false: slurmctld learns it from the registration, SlurmctldParameters=cloud_reg_addrs)."""

    @model_validator(mode="before")
    @classmethod
    def _no_state_file(cls, data: Any) -> Any:
        if isinstance(data, dict) and "state_file" in data:
            raise ValueError(
                "slurm.state_file was removed: set the top-level state_dir instead (power-save "
                "requests, suspends and holds live in <state_dir>/state.json with the launch "
                "ledger)"
            )
        return data

    def demand_max_age(self) -> float:
        if self.max_age is not None:
            return self.max_age
        return 3 * self.poll_interval + self.command_timeout


class ShoalConfig(BaseModel):
    model_config = _STRICT

    cluster_name: str = Field(min_length=1, pattern=r"^[A-Za-z0-9][A-Za-z0-9_.-]*$")
    provider: ProviderConfig
    node_types: Annotated[tuple[NodeTypeEntry, ...], BeforeValidator(_node_types)]
    scaler: ScalerConfig = Field(default_factory=ScalerConfig)
    demand: DemandConfig = Field(default_factory=DemandConfig)
    drain: DrainConfig = Field(default_factory=DrainConfig, validate_default=True)
    api: ApiConfig = Field(default_factory=ApiConfig)
    workers: WorkersConfig | None = None
    """How launched workers join the scheduler; absent: they join nothing."""
    slurm: SlurmConfig | None = None
    state_dir: Path | None = None
    """Where shoal keeps what must survive a crash (the launch ledger, drains, Slurm
    power-save requests, suspends and holds), written before the action it protects.
    Absent: kept in memory only, so a restart forgets launches in flight."""
    log_level: Literal["DEBUG", "INFO", "WARNING", "ERROR", "CRITICAL"] = "INFO"

    @field_validator("log_level", mode="before")
    @classmethod
    def _upper(cls, value: Any) -> Any:
        return value.upper() if isinstance(value, str) else value

    @field_validator("drain")
    @classmethod
    def _idle_needs_running_or_drain(cls, drain: DrainConfig, info: ValidationInfo) -> DrainConfig:
        demand = info.data.get("demand")
        if demand is None or not demand.sources() or demand.reports_running():
            return drain
        if drain.command or drain.webhook:
            return drain
        raise ValueError(
            "no demand source reports running jobs per node, so shoal cannot tell an idle "
            "node from a busy one: add running to demand.reports (and send running jobs), "
            "or set drain.command or drain.webhook to a hook that returns once the node is empty"
        )

    @model_validator(mode="after")
    def _slurm(self) -> ShoalConfig:
        if not self.demand.slurm:
            if self.slurm is not None:
                raise ValueError("a slurm section needs demand.slurm: true (or remove it)")
            return self
        if self.slurm is None:
            raise ValueError("demand.slurm needs a slurm section (commands, mode, node_types)")
        others = [n for n in self.demand.sources() if n != "slurm"]
        if others:
            raise ValueError(
                f"demand.slurm is the only demand source: turn {', '.join(others)} off "
                "(demand.api: false, demand.file: null, demand.demo: false)"
            )
        if self.slurm.mode == "power_save" and self.state_dir is None:
            raise ValueError(
                "slurm.mode power_save needs state_dir (accepted resume and suspend requests, "
                "held nodes and launches in flight must survive a restart)"
            )
        if self.slurm.mode == "power_save" and not self.slurm.node_types:
            from shoal.daemon.slurm.names import derived_node_types

            try:
                derived_node_types(self.node_types)
            except ValueError as exc:  # two types with one name
                raise _FieldError("slurm.node_types", str(exc)) from None
        names = {e.type for e in self.node_types} | set(self.instance_types())
        for key, what in (
            ("node_types", self.slurm.node_types.values()),
            ("features", self.slurm.features),
        ):
            unknown = sorted(set(what) - names)
            if unknown:
                raise ValueError(
                    f"slurm.{key} names {', '.join(map(repr, unknown))}, which is no node "
                    f"type: use a node_types entry's type or one of its instance types"
                )
        return self

    def node_type_of(self, name: str) -> str:
        """The node_types entry (its type) that ``name`` stands for: the entry itself, or
        the first entry holding ``name`` as an instance type. KeyError otherwise."""
        for entry in self.node_types:
            if entry.type == name:
                return entry.type
        for entry in self.node_types:
            if name in entry.instance_types:
                return entry.type
        raise KeyError(name)

    @field_validator("node_types")
    @classmethod
    def _unique(cls, value: tuple[NodeTypeEntry, ...]) -> tuple[NodeTypeEntry, ...]:
        seen: dict[str, int] = {}
        for index, entry in enumerate(value):
            for name in entry.instance_types:
                key = f"{name}/{'spot' if entry.bid is not None else 'on-demand'}"
                if key in seen:
                    raise ValueError(
                        f"instance type {name!r} appears in node_types[{seen[key]}] and "
                        f"node_types[{index}]; each (type, spot or not) may appear once"
                    )
                seen[key] = index
        return value

    @model_validator(mode="after")
    def _workers_fit_the_cluster(self) -> ShoalConfig:
        """The workers section holds what workers of provider.cluster_type need, and no
        section of another cluster type."""
        w = self.workers
        if w is None:
            return self
        cluster_type = self.provider.cluster_type
        for name in ("kubernetes", "slurm"):
            if getattr(w, name) is not None and cluster_type != name:
                raise _FieldError(
                    f"workers.{name}",
                    f"only for provider.cluster_type {name}; this cluster is {cluster_type}",
                )
        if cluster_type == "mesos" and w.leader is None:
            raise _FieldError("workers.leader", "required: mesos workers join the leader")
        if cluster_type == "kubernetes":
            if w.kubernetes is None:
                raise _FieldError(
                    "workers.kubernetes",
                    "required for kubernetes workers: token_file, ca_cert_hash, api_endpoint",
                )
            if w.kubernetes.api_endpoint is None and w.leader is None:
                raise _FieldError(
                    "workers.kubernetes.api_endpoint",
                    "required unless workers.leader is given (then <leader>:6443)",
                )
        if cluster_type == "slurm":
            if w.slurm is None:
                raise _FieldError(
                    "workers.slurm", "required for slurm workers: munge_key_file, conf_server"
                )
            if w.slurm.conf_server is None and w.leader is None:
                raise _FieldError(
                    "workers.slurm.conf_server",
                    "required unless workers.leader is given (then the leader)",
                )
        return self

    # --- what the runtime needs -------------------------------------------------------------

    def instance_types(self) -> list[str]:
        """Every instance type named, in order of appearance, without repeats."""
        out: list[str] = []
        for entry in self.node_types:
            out.extend(t for t in entry.instance_types if t not in out)
        return out

    def node_type_specs(self) -> list[tuple[set[str], float | None]]:
        """The entries as ``parse_node_types`` gives them (for setAutoscaledNodeTypes)."""
        return [parse_node_types(entry.type)[0] for entry in self.node_types]

    def policy(
        self, shapes: Mapping[str, Shape], prices: Mapping[str, float | None] | None = None
    ) -> Policy:
        """The planner policy. ``shapes``/``prices`` are keyed by instance type; for a spot
        entry, ``prices`` may hold ``"<type>:spot"`` which is preferred to the on-demand price.
        Raises ``KeyError`` naming an instance type with no shape."""
        prices = prices or {}
        node_types = []
        for entry in self.node_types:
            first = entry.instance_types[0]
            if first not in shapes:
                raise KeyError(f"no shape for instance type {first!r}")
            base = shapes[first]
            bid = entry.bid
            shape = Shape(base.wallTime, base.memory, base.cores, base.disk, bid is not None)
            price = prices.get(f"{first}:spot") if bid is not None else None
            if price is None:
                price = prices.get(first)
            node_types.append(
                NodeType(
                    name=entry.type,
                    instance_types=entry.instance_types,
                    shape=shape,
                    price_per_hour=price,
                    bid=bid,
                    min_nodes=entry.min,
                    max_nodes=entry.max,
                    zones=self.provider.launch_zones,
                )
            )
        s = self.scaler
        return Policy(
            node_types=tuple(node_types),
            target_time=s.target_time,
            beta_inertia=s.beta_inertia,
            preemptible_compensation=s.preemptible_compensation,
            compensate_other_types=s.compensate_other_types,
            node_memory_overhead=s.node_memory_overhead,
            node_disk_overhead=s.node_disk_overhead,
            scale_down_unneeded_time=s.unneeded_time,
            scale_down_budget=s.scale_down_budget,
            join_timeout=s.join_timeout,
            unhealthy_timeout=s.unhealthy_timeout,
            unhealthy_ok_count=s.unhealthy_ok_count,
            unhealthy_max_fraction=s.unhealthy_max_fraction,
            cost_ceiling_per_hour=s.cost_ceiling_per_hour,
            packing=s.packing,
            solver_time_limit=s.solver_time_limit,
        )

    def retry_policy(self) -> RetryPolicy:
        r = self.scaler.retry
        return RetryPolicy(
            attempts=r.attempts, initial=r.initial, maximum=r.max, deadline=r.deadline
        )

    def backoff_bounds(self) -> tuple[float, float]:
        """(initial, max) seconds of an offering's backoff after a capacity error."""
        return self.scaler.backoff.initial, self.scaler.backoff.max


# --- loading -------------------------------------------------------------------------------

# The provider union's tags: pydantic puts the chosen one in an error's location.
_PROVIDER_KINDS = ("simulated", "aws", "local")


def _path(loc: tuple[int | str, ...]) -> str:
    out = ""
    for part in loc:
        if isinstance(part, int):
            out += f"[{part}]"
        elif part in _PROVIDER_KINDS and out == "provider":
            continue  # the discriminated union's tag adds nothing for the reader
        elif str(part).startswith(("function-", "tagged-union")):
            continue
        else:
            out += f".{part}" if out else str(part)
    return out or "(top level)"


def _lookup(data: Any, loc: tuple[int | str, ...]) -> Any:
    for part in loc:
        in_map = isinstance(data, Mapping) and part in data
        in_list = isinstance(data, list | tuple) and isinstance(part, int) and part < len(data)
        if in_map or in_list:
            data = data[part]
        elif part in _PROVIDER_KINDS:
            continue
        else:
            return _MISSING
    return data


def _issues(exc: ValidationError, data: Any) -> list[ConfigIssue]:
    issues = []
    for err in exc.errors(include_url=False):
        loc = tuple(err["loc"])
        kind = err["type"]
        msg = err["msg"].removeprefix("Value error, ")
        if kind == "extra_forbidden":
            hint = "unknown key; remove it"
            if loc and loc[0] == "provider" and len(loc) == 3:
                hint = f"unknown key for provider kind {loc[1]!r}; remove it"
            issues.append(ConfigIssue(_path(loc), err["input"], hint))
            continue
        if kind == "missing":
            issues.append(ConfigIssue(_path(loc), _MISSING, "required key is missing"))
            continue
        value = err.get("input", _MISSING)
        if kind == "union_tag_invalid":
            tags = err.get("ctx", {}).get("expected_tags", "")
            issues.append(ConfigIssue(_path(loc) + ".kind", err["ctx"]["tag"], f"expected {tags}"))
            continue
        if kind.startswith("union_tag"):
            value = _lookup(data, loc)
        error = err.get("ctx", {}).get("error")
        if isinstance(error, _FieldError):
            issues.append(ConfigIssue(error.path, _lookup(data, tuple(error.path.split("."))), msg))
            continue
        if kind == "value_error":
            expected = msg
        elif msg.startswith("Input should be "):
            expected = "expected " + msg.removeprefix("Input should be ")
        else:
            expected = f"expected {msg[0].lower()}{msg[1:]}"
        issues.append(ConfigIssue(_path(loc), value, expected))
    return issues


def parse_config(data: Any, source: str = "<config>") -> ShoalConfig:
    """Validate already-parsed YAML; raises ``ConfigError``."""
    if data is None:
        raise ConfigError(source, [ConfigIssue("(top level)", _MISSING, "the config is empty")])
    if not isinstance(data, Mapping):
        raise ConfigError(source, [ConfigIssue("(top level)", data, "expected a mapping of keys")])
    try:
        return ShoalConfig.model_validate(data)
    except ValidationError as exc:
        raise ConfigError(source, _issues(exc, data)) from None


def load_config(path: str | os.PathLike[str]) -> ShoalConfig:
    """Read and validate a YAML config file; raises ``ConfigError`` listing every problem.

    Relative file paths (``api.token_file``, ``demand.file``, ``workers.kubernetes.token_file``,
    ``workers.slurm.munge_key_file``) are taken relative to the config file.
    """
    path = Path(path)
    source = str(path)
    try:
        text = path.read_text()
    except FileNotFoundError:
        raise ConfigError(source, [ConfigIssue(source, _MISSING, "file not found")]) from None
    except OSError as exc:
        raise ConfigError(source, [ConfigIssue(source, _MISSING, f"unreadable: {exc}")]) from None
    try:
        data = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f"line {mark.line + 1}, column {mark.column + 1}" if mark else "unknown position"
        problem = getattr(exc, "problem", None) or str(exc)
        raise ConfigError(
            source, [ConfigIssue(f"{source} {where}", _MISSING, f"YAML syntax error: {problem}")]
        ) from None
    if isinstance(data, dict):
        data = _resolve_paths(data, path.parent)
    return parse_config(data, source)


_RELATIVE_PATHS = (
    ("state_dir",),
    ("api", "token_file"),
    ("demand", "file"),
    ("workers", "kubernetes", "token_file"),
    ("workers", "slurm", "munge_key_file"),
    ("slurm", "slurm_conf"),
    ("provider", "state_dir"),
    ("provider", "slurm_conf"),
)


def _resolve_paths(data: dict[str, Any], base: Path) -> dict[str, Any]:
    for where in _RELATIVE_PATHS:
        data = _resolve_path(data, where, base)
    return data


def _resolve_path(data: dict[str, Any], where: tuple[str, ...], base: Path) -> dict[str, Any]:
    """``data`` with the relative path at ``where`` made relative to ``base`` (copied, never
    changed in place); anything else at ``where`` is left for validation to report."""
    head, *rest = where
    value = data.get(head)
    if not rest:
        if isinstance(value, str) and not os.path.isabs(value):
            return {**data, head: str(base / value)}
        return data
    if not isinstance(value, dict):
        return data
    return {**data, head: _resolve_path(value, tuple(rest), base)}
