"""How launched workers join the scheduler: the settings a provisioner needs for worker user data.

The daemon's ``workers`` config section (``daemon.config.WorkersConfig``) satisfies
``WorkerSettings``; providers only read these attributes, so they never import the daemon.

- ``bootstrap``: the user data's dialect: ``"ignition"`` (Flatcar) or ``"cloud-init"`` (a
  stock Debian 12 / Ubuntu 24.04 image); the same files and units either way.
- ``leader``: where the scheduler's leader is: ``address`` given, or ``discover``:
  ``"tag"`` (the instance ``launchCluster`` tagged as this cluster's leader, via ``getLeader``)
  or ``"imds"`` (this machine, shoal running on the leader: ``readClusterSettings``).
- ``kubernetes``: the ``kubeadm join`` values: the bootstrap token (read from ``token_file``,
  never logged), the CA certificate hash and the API server endpoint (default: the leader,
  port 6443).
- ``slurm``: the munge key (read from ``munge_key_file``), the controller slurmd fetches its
  configuration from (default: the leader), and how slurmd registers: ``named`` (``-N``, the
  name from the instance tag ``TAG_SLURM_NODE`` or the metadata service's host name) or
  ``dynamic`` (``-Z --conf "Feature=..."``).

The secret files (the bootstrap token, the munge key) are read once at start: ``shoal run``'s
preflight (``daemon.config.preflight.check``) reads and checks them and hands the values on as
``WorkerSecrets`` to ``prepare_workers``, which reads a file itself only when it is given no
value (a provisioner used on its own).
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Protocol

from shoal.providers.errors import ProviderError
from shoal.providers.hostlist import expand_hostlist

__all__ = [
    "KUBEADM_TOKEN",
    "KUBERNETES_API_PORT",
    "MUNGE_KEY_MAX",
    "MUNGE_KEY_MIN",
    "SHOAL_FEATURE",
    "SLURM_FEATURE",
    "SLURM_RESOURCES",
    "TAG_SLURM_FEATURES",
    "TAG_SLURM_NODE",
    "TAG_SLURM_RESOURCES",
    "KubernetesJoinSettings",
    "LeaderSettings",
    "SlurmWorkerSettings",
    "WorkerSecrets",
    "WorkerSettings",
    "read_kubeadm_token",
    "read_munge_key",
    "slurm_node_tags",
    "slurm_resources",
]

#: The instance tag holding a worker's Slurm node name (``registration: named``,
#: ``node_name: tag``); the worker reads it from the instance metadata service, so its key
#: uses only characters EC2 allows in metadata tag keys.
TAG_SLURM_NODE = "shoal:slurm-node"
#: A gang of power-saving nodes (one multi-node job's nodes, launched all or nothing) is one
#: launch request whose ``TAG_SLURM_NODE`` lists one node name per instance in launch order, as
#: a Slurm hostlist (``a,b,c`` or ``cloud[1-3]``; Slurm node names hold no comma or bracket):
#: see ``slurm_node_tags``.
#: The instance tag holding the features a dynamic node registers with (``slurmd -Z --conf
#: "Feature=..."``), comma-separated: a worker's user data (AWS) and ``providers.local``
#: start its slurmd with them.
TAG_SLURM_FEATURES = "shoal:slurm-features"
#: The instance tag holding the rest of what a dynamic node registers with, as ``shoal
#: slurm-conf`` declares its type: ``CPUs=<n> RealMemory=<MiB> Weight=<n>`` (the planner's
#: usable shape, and the type's rank by price, so Slurm fills the cheapest nodes first).
TAG_SLURM_RESOURCES = "shoal:slurm-resources"
#: What a Slurm node feature may be (it goes into a shell command line, in a comma list).
SLURM_FEATURE = re.compile(r"^[A-Za-z0-9_.-]+$")
#: What ``TAG_SLURM_RESOURCES`` may hold (it goes into a shell command line).
SLURM_RESOURCES = re.compile(r"^CPUs=[1-9][0-9]* RealMemory=[1-9][0-9]* Weight=[0-9]+$")


def slurm_resources(tags: Mapping[str, str]) -> str | None:
    """The ``TAG_SLURM_RESOURCES`` of a launch's ``tags`` (None without it); ValueError
    when it is not ``CPUs=<n> RealMemory=<MiB> Weight=<n>``."""
    value = tags.get(TAG_SLURM_RESOURCES)
    if value is not None and not SLURM_RESOURCES.match(value):
        raise ValueError(
            f"{TAG_SLURM_RESOURCES} {value!r} is not CPUs=<n> RealMemory=<MiB> Weight=<n>"
        )
    return value


#: The Slurm feature every dynamic node shoal launches registers with: the clean-up loop
#: (daemon.slurm.cleanup) knows its nodes by it.
SHOAL_FEATURE = "shoal"
KUBERNETES_API_PORT = 6443
#: A kubeadm bootstrap token: ``[a-z0-9]{6}.[a-z0-9]{16}`` (kubeadm's own format check).
KUBEADM_TOKEN = re.compile(r"^[a-z0-9]{6}\.[a-z0-9]{16}$")
#: munged refuses keys shorter than 32 bytes; mungekey writes 128 by default (1024 bits).
#: The upper bound keeps the key well inside EC2's 16 KiB of user data.
MUNGE_KEY_MIN = 32
MUNGE_KEY_MAX = 1024


def slurm_node_tags(
    tags: Mapping[str, str], count: int, operation: str = "launch"
) -> list[dict[str, str]]:
    """Each of ``count`` instances' tags, launched with ``tags``: instance i of a gang gets
    the i-th name of ``TAG_SLURM_NODE``'s list (a Slurm hostlist: ``a,b,c`` or ``cloud[1-3]``);
    without a list every one gets ``tags``. Raises ProviderError (InvalidParameterValue, of
    ``operation``) when a list does not name exactly ``count`` distinct nodes (one name per
    instance: a node never has two)."""
    names = tags.get(TAG_SLURM_NODE, "")
    if not names:
        return [dict(tags) for _ in range(count)]
    try:
        listed = expand_hostlist(names, allow_duplicates=True)
    except ValueError:
        listed = []
    if len(listed) != count or len(set(listed)) != count or not all(listed):
        raise ProviderError(
            f"{count} instance(s) for Slurm node(s) {names!r}: one name each",
            code="InvalidParameterValue",
            operation=operation,
        )
    return [{**tags, TAG_SLURM_NODE: name} for name in listed]


class LeaderSettings(Protocol):
    @property
    def address(self) -> str | None: ...

    @property
    def discover(self) -> str | None:
        """``"tag"`` or ``"imds"`` (None when ``address`` is given)."""
        ...


class KubernetesJoinSettings(Protocol):
    @property
    def token_file(self) -> Path: ...

    @property
    def ca_cert_hash(self) -> str: ...

    @property
    def api_endpoint(self) -> str | None: ...


class SlurmWorkerSettings(Protocol):
    @property
    def munge_key_file(self) -> Path: ...

    @property
    def conf_server(self) -> str | None: ...

    @property
    def registration(self) -> str:
        """``"named"`` or ``"dynamic"``."""
        ...

    @property
    def node_name(self) -> str:
        """``"tag"`` or ``"hostname"`` (named registration)."""
        ...

    @property
    def features(self) -> Sequence[str]: ...

    @property
    def slurmd(self) -> str: ...

    @property
    def munged(self) -> str: ...


class WorkerSettings(Protocol):
    @property
    def bootstrap(self) -> str:
        """``"ignition"`` (Flatcar) or ``"cloud-init"`` (a stock Debian/Ubuntu image)."""
        ...

    @property
    def leader(self) -> LeaderSettings | None: ...

    @property
    def kubernetes(self) -> KubernetesJoinSettings | None: ...

    @property
    def slurm(self) -> SlurmWorkerSettings | None: ...


@dataclass(frozen=True)
class WorkerSecrets:
    """The join secrets as read from their files at start (None: not read); never shown in a
    repr, a message or a log line."""

    kubeadm_token: str | None = field(default=None, repr=False)
    munge_key: bytes | None = field(default=None, repr=False)


def read_kubeadm_token(path: Path) -> str:
    """The bootstrap token in ``path`` (surrounding whitespace dropped). A ``ValueError`` says
    what is wrong without quoting the file's contents."""
    try:
        token = Path(path).read_text(encoding="utf-8").strip()
    except (OSError, UnicodeDecodeError) as exc:
        raise ValueError(f"cannot read the token file: {type(exc).__name__}") from None
    if not KUBEADM_TOKEN.match(token):
        raise ValueError(
            "the token file does not hold a kubeadm bootstrap token "
            "(6 and 16 lower-case letters or digits joined by a dot, as `kubeadm token create` "
            "prints)"
        )
    return token


def read_munge_key(path: Path) -> bytes:
    """The munge key in ``path``, as bytes. A ``ValueError`` says what is wrong."""
    try:
        key = Path(path).read_bytes()
    except OSError as exc:
        raise ValueError(f"cannot read the munge key file: {type(exc).__name__}") from None
    if not MUNGE_KEY_MIN <= len(key) <= MUNGE_KEY_MAX:
        raise ValueError(
            f"the munge key file holds {len(key)} bytes; munged needs {MUNGE_KEY_MIN} to "
            f"{MUNGE_KEY_MAX} (`mungekey` writes 128)"
        )
    return key
