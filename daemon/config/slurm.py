"""The ``slurm`` section: Slurm as the demand source and scheduler (``demand.slurm: true``)."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any, Literal

from pydantic import BaseModel, Field, field_validator, model_validator
from shoal.daemon.config.common import _STRICT, _FieldError
from shoal.daemon.units import PositiveDuration
from shoal.providers.workers import SLURM_FEATURE

__all__ = ["SlurmConfig"]


class SlurmConfig(BaseModel):
    """Slurm as the demand source and scheduler (``demand.slurm: true``)."""

    model_config = _STRICT
    mode: Literal["power_save", "external"] = "power_save"
    """power_save: Slurm's power saving decides (ResumeProgram/SuspendProgram are shoal's
    hooks) and shoal launches and terminates the named nodes; external: shoal's planner
    decides from the queue, with dynamic nodes (slurmd -Z) it drains and deletes."""
    squeue: str = Field(default="squeue", min_length=1)
    """The squeue command (a name on PATH or a path)."""
    sinfo: str = Field(default="sinfo", min_length=1)
    """The sinfo command (a name on PATH or a path)."""
    scontrol: str = Field(default="scontrol", min_length=1)
    """The scontrol command (a name on PATH or a path)."""
    slurm_conf: Path | None = None
    """SLURM_CONF for the commands (None: theirs, /etc/slurm/slurm.conf)."""
    command_timeout: PositiveDuration = 30.0
    """A Slurm command still running after this long is killed; the read failed."""
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
    node_weights: Literal["price", "kept"] = "price"
    """Slurm's node Weight (the lowest that fits takes a job): price, each node its type's
    rank by price, as `shoal slurm-conf` declares it (external mode: kept up to date when a
    reload or a price refresh reorders the types); kept (external mode): within that rank,
    less the longer a node's running jobs hold it (updated at every read), so new jobs go to
    nodes kept anyway and the ones about to empty can be removed."""
    resume_timeout: PositiveDuration | None = None
    """A node POWERING_UP longer than this is reset (default: Slurm's ResumeTimeout)."""
    cleanup_interval: PositiveDuration = 60.0
    """How often instances and Slurm's nodes are compared (orphans, stuck nodes)."""
    orphan_grace: PositiveDuration = 120.0
    """An instance this young is never an orphan (its node may not show it yet)."""
    set_node_addr: bool = False
    """Set each resumed node's NodeAddr/NodeHostname to its instance's private address
    (false: slurmctld learns it from the registration, SlurmctldParameters=cloud_reg_addrs)."""
    all_or_nothing: bool = True
    """power_save: launch the nodes a multi-node job is resumed on (SLURM_RESUME_FILE) all or
    nothing; when they cannot all launch, none stays running and every one is set DOWN with
    the reason, then powered down (Slurm requeues the job at once). false: node by node."""

    @field_validator("features")
    @classmethod
    def _features(cls, value: dict[str, tuple[str, ...]]) -> dict[str, tuple[str, ...]]:
        # they go on slurmd's command line (a worker's user data) and into a comma list
        for feature in (f for features in value.values() for f in features):
            if not SLURM_FEATURE.match(feature):
                raise ValueError(f"feature {feature!r}: letters, digits, '_', '.', '-' only")
        return value

    @model_validator(mode="before")
    @classmethod
    def _no_state_file(cls, data: Any) -> Any:
        if isinstance(data, dict) and "state_file" in data:
            raise _FieldError(
                "state_file",
                "slurm.state_file was removed: set the top-level state_dir instead (power-save "
                "requests, suspends and holds live in <state_dir>/state.json with the launch "
                "ledger)",
            )
        return data

    @model_validator(mode="after")
    def _kept_is_external(self) -> SlurmConfig:
        if self.node_weights == "kept" and self.mode != "external":
            raise _FieldError(
                "node_weights",
                "kept applies to mode: external (power_save's nodes weigh as slurm.conf "
                "declares them)",
            )
        return self

    def demand_max_age(self) -> float:
        if self.max_age is not None:
            return self.max_age
        return 3 * self.poll_interval + self.command_timeout
