"""shoal's YAML configuration, validated strictly by pydantic v2 (unknown keys are errors).

``load_config(path)`` returns a ``ShoalConfig`` or raises ``ConfigError`` whose ``errors``
each name the field path (``scaler.beta_inertia``, ``node_types[1].max``), the offending
value and what was expected. One module a section (``provider``, ``workers``, ``scaler``,
``demand``, ``api``, ``slurm``, ``ha``); this package re-exports them and holds the checks across
sections and the loading.

Validation only, on the file alone: the same answer on any machine. The files the config
names (token files, munge key, state directories) are checked by ``preflight.preflight``,
which ``shoal run`` calls at start; ``daemon.wiring`` turns the config into the planner's
``Policy``, the ``RetryPolicy`` and the backoff policy. Every key is documented in
``config.example.yaml``.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from pathlib import Path
from typing import Annotated, Any, Literal

import yaml
from pydantic import (
    BaseModel,
    BeforeValidator,
    Field,
    ValidationError,
    ValidationInfo,
    field_validator,
    model_validator,
)
from shoal.daemon.config.api import ApiConfig
from shoal.daemon.config.common import _MISSING, _STRICT, ConfigError, ConfigIssue, _FieldError
from shoal.daemon.config.demand import DemandConfig, DrainConfig
from shoal.daemon.config.ha import HaConfig
from shoal.daemon.config.provider import (
    AwsProviderConfig,
    LocalInstanceTypeConfig,
    LocalProviderConfig,
    ProviderConfig,
    SimulatedProviderConfig,
)
from shoal.daemon.config.scaler import (
    Backoff,
    NodeTypeEntry,
    RetryConfig,
    ScalerConfig,
    _node_types,
)
from shoal.daemon.config.slurm import SlurmConfig
from shoal.daemon.config.suggest import did_you_mean, keys_at
from shoal.daemon.config.workers import (
    KubernetesJoinConfig,
    LeaderConfig,
    SlurmWorkerConfig,
    WorkersConfig,
)
from shoal.daemon.units import Duration, Size

__all__ = [
    "ApiConfig",
    "AwsProviderConfig",
    "Backoff",
    "ConfigError",
    "ConfigIssue",
    "DemandConfig",
    "DrainConfig",
    "Duration",
    "HaConfig",
    "KubernetesJoinConfig",
    "LeaderConfig",
    "LocalInstanceTypeConfig",
    "LocalProviderConfig",
    "NodeTypeEntry",
    "RetryConfig",
    "ScalerConfig",
    "ShoalConfig",
    "SimulatedProviderConfig",
    "Size",
    "SlurmConfig",
    "SlurmWorkerConfig",
    "WorkersConfig",
    "load_config",
    "parse_config",
]


class ShoalConfig(BaseModel):
    """shoal's configuration file (every key: config.example.yaml)."""

    model_config = _STRICT

    cluster_name: str = Field(min_length=1, pattern=r"^[A-Za-z0-9][A-Za-z0-9_.-]*$")
    """Names this cluster; tags every instance shoal launches."""
    provider: ProviderConfig
    """The cloud workers launch in: kind simulated, aws or local."""
    node_types: Annotated[tuple[NodeTypeEntry, ...], BeforeValidator(_node_types)]
    """Node types with their limits: a list of entries, or a Toil string
    "c5.xlarge/c5a.xlarge,r5.large:0.05" (entries with default limits)."""
    scaler: ScalerConfig = Field(default_factory=ScalerConfig)
    """Planning and scaling: timers, Toil's estimate, scale-down, health, packing, backoff,
    retries."""
    demand: DemandConfig = Field(default_factory=DemandConfig)
    """Where demand comes from."""
    drain: DrainConfig = Field(default_factory=DrainConfig, validate_default=True)
    """Hooks that empty a node before it is terminated."""
    api: ApiConfig = Field(default_factory=ApiConfig)
    """The HTTP listener."""
    workers: WorkersConfig | None = None
    """How launched workers join the scheduler; absent: they join nothing."""
    slurm: SlurmConfig | None = None
    """Slurm as the demand source and scheduler (with demand.slurm: true)."""
    state_dir: Path | None = None
    """Where shoal keeps what must survive a crash (the launch ledger, drains, Slurm
    power-save requests, suspends and holds), written before the action it protects.
    Absent: kept in memory only, so a restart forgets launches in flight."""
    ha: HaConfig | None = None
    """Leader election on etcd among two or three daemons; absent: this daemon acts alone."""
    log_level: Literal["DEBUG", "INFO", "WARNING", "ERROR", "CRITICAL"] = "INFO"
    """Logging threshold (case-insensitive)."""

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
                raise _FieldError(
                    ("slurm", "demand.slurm"),
                    "a slurm section needs demand.slurm: true (or remove it)",
                )
            return self
        if self.slurm is None:
            raise _FieldError(
                ("demand.slurm", "slurm"),
                "demand.slurm needs a slurm section (commands, mode, node_types)",
            )
        others = [n for n in self.demand.sources() if n != "slurm"]
        if others:
            raise _FieldError(
                ["demand.slurm", *(f"demand.{name}" for name in others)],
                f"demand.slurm is the only demand source: turn {', '.join(others)} off "
                "(demand.api: false, demand.file: null, demand.demo: false)",
            )
        if self.slurm.mode == "power_save" and self.state_dir is None:
            raise _FieldError(
                ("slurm.mode", "state_dir"),
                "slurm.mode power_save needs state_dir (accepted resume and suspend requests, "
                "held nodes and launches in flight must survive a restart)",
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
                raise _FieldError(
                    f"slurm.{key}",
                    f"slurm.{key} names {', '.join(map(repr, unknown))}, which is no node "
                    f"type: use a node_types entry's type or one of its instance types",
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
                    raise _FieldError(
                        (f"[{seen[key]}].type", f"[{index}].type"),
                        f"instance type {name!r} appears in node_types[{seen[key]}] and "
                        f"node_types[{index}]; each (type, spot or not) may appear once",
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


def _shown(value: Any) -> Any:
    """``value`` as an issue quotes it: a scalar or a short list of scalars. A section, an
    entry or a long list is never dumped (``_MISSING``): the path says where to look."""
    scalar = (str, int, float, bool, type(None))
    if isinstance(value, list | tuple) and all(isinstance(v, scalar) for v in value):
        return value if len(repr(value)) <= 80 else _MISSING
    return value if isinstance(value, scalar) else _MISSING


def _unknown_key(loc: tuple[int | str, ...], value: Any) -> ConfigIssue:
    """An unknown key, its section, and the closest key valid there."""
    section = _path(loc[:-1])
    where = "at the top level" if section == "(top level)" else f"in {section}"
    if loc[:1] == ("provider",) and len(loc) == 3:
        where = f"for provider kind {loc[1]!r}"
    close = did_you_mean(str(loc[-1]), keys_at(ShoalConfig, loc[:-1]))
    return ConfigIssue(_path(loc), _shown(value), f"unknown key {where}{close or '; remove it'}")


def _issues(exc: ValidationError, data: Any) -> list[ConfigIssue]:
    issues = []
    for err in exc.errors(include_url=False):
        loc = tuple(err["loc"])
        kind = err["type"]
        msg = err["msg"].removeprefix("Value error, ")
        if kind == "extra_forbidden":
            issues.append(_unknown_key(loc, err["input"]))
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
            locs = [loc + where for where in error.locs]
            value = _lookup(data, locs[0]) if len(locs) == 1 else _MISSING
            issues.append(ConfigIssue(", ".join(map(_path, locs)), _shown(value), msg))
            continue
        if kind == "value_error":
            expected = msg
        elif msg.startswith("Input should be "):
            expected = "expected " + msg.removeprefix("Input should be ")
        else:
            expected = f"expected {msg[0].lower()}{msg[1:]}"
        issues.append(ConfigIssue(_path(loc), _shown(value), expected))
    return issues


def parse_config(data: Any, source: str = "<config>") -> ShoalConfig:
    """Validate already-parsed YAML; raises ``ConfigError``."""
    if data is None:
        raise ConfigError(source, [ConfigIssue("(top level)", _MISSING, "the config is empty")])
    if not isinstance(data, Mapping):
        raise ConfigError(
            source, [ConfigIssue("(top level)", _shown(data), "expected a mapping of keys")]
        )
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
