"""The ``workers`` section: how launched workers join the scheduler (leader, kubeadm, munge).

Validation only: the files named here (kubeadm token, munge key) are read by
``preflight`` and by the worker bootstrap, never while the config is validated, so
``shoal check-config`` works away from the leader.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Literal

from pydantic import BaseModel, field_validator, model_validator
from shoal.daemon.config.common import _STRICT, _FieldError
from shoal.providers.workers import SLURM_FEATURE

__all__ = ["KubernetesJoinConfig", "LeaderConfig", "SlurmWorkerConfig", "WorkersConfig"]

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
            raise _FieldError(
                ("address", "discover"),
                "give address: <ip or name>, or discover: tag | imds (one of them)",
            )
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
    """dynamic: node features, besides its node type's (the launch's
    ``shoal:slurm-features``) and the instance type, which are always there."""
    slurmd: str = "/usr/sbin/slurmd"
    """slurmd on the machine image."""
    munged: str = "/usr/sbin/munged"
    """munged on the machine image."""

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
            if not SLURM_FEATURE.match(feature):
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
            raise _FieldError(
                ("registration", "node_name"),
                "node_name applies to registration: named, not dynamic",
            )
        if self.registration == "named" and self.features:
            raise _FieldError(
                ("registration", "features"), "features apply to registration: dynamic, not named"
            )
        return self


class WorkersConfig(BaseModel):
    """How launched workers join the scheduler (the agent follows provider.cluster_type)."""

    model_config = _STRICT
    bootstrap: Literal["ignition", "cloud-init"] = "ignition"
    """The user data workers boot from: ignition (Flatcar: an Ignition 2.2 config; the image
    carries the agents) or cloud-init (a stock Debian 12 / Ubuntu 24.04 image: #cloud-config
    that installs the agents' packages, then writes and starts the same units)."""
    leader: LeaderConfig | None = None
    """Where the leader is (mesos workers need it; the others default to it)."""
    kubernetes: KubernetesJoinConfig | None = None
    """cluster_type kubernetes: the kubeadm join values."""
    slurm: SlurmWorkerConfig | None = None
    """cluster_type slurm: munge and a configless slurmd."""
