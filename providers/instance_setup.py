"""Instance setup: Ignition configs and the systemd services every node boots with.

``InstanceConfiguration`` collects files, systemd units and SSH keys and turns
them into an Ignition spec 2.2.0 config (Flatcar's dialect), the user data a
node boots from. ``WorkerBootstrap`` builds what a node boots with: the base config,
the scratch-volume and node-exporter services, the Toil leader/worker service
and the Kubernetes install/leader/worker services, and holds the join secrets. A provisioner
has one (``AbstractProvisioner.bootstrap``, composed, not inherited); the seed's
instance-setup methods on ``AbstractProvisioner`` hand over to it. Behaviour follows Toil 9.6's
``AbstractProvisioner``; the unit files and scripts are shoal's own, kept as templates in
the ``shoal.providers.ignition`` package (this module decides where each one goes).

Workers that join: ``prepare_workers(settings)`` learns what a worker's user data needs (the
leader's address, given or discovered; the Kubernetes join values; the munge key) from the
``workers`` settings (``providers.workers.WorkerSettings``), and ``addWorkerAgent`` adds the
scheduler agent of the cluster type: the Toil/Mesos worker service, the Kubernetes install
and join services, or munge and a configless slurmd. Each config is self-contained: a unit
``Requires=`` only units of the same config (or the operating system's).

The bootstrap asks its provisioner (a ``BootstrapHost``: what ``AbstractProvisioner`` is) for
``clusterType``, ``clusterName`` and ``_leaderPrivateIP``, the Kubernetes answers
(``getKubernetesCloudProvider()``, ``getKubernetesAutoscalerSetupCommands(values)``) and, to
find the leader, ``getLeader()`` and ``readClusterSettings()``. Its own settings are the
documented attributes below (``applianceImage``, ``enable_fuse``, ``customInitCommand``...).
"""

from __future__ import annotations

import json
import logging
import re
import shlex
from collections.abc import Mapping
from typing import Any, ClassVar, Protocol
from urllib.parse import quote

from shoal.providers import cloud_init, ignition
from shoal.providers.errors import ProviderError
from shoal.providers.workers import (
    KUBERNETES_API_PORT,
    SHOAL_FEATURE,
    SLURM_FEATURE,
    TAG_SLURM_FEATURES,
    TAG_SLURM_NODE,
    SlurmWorkerSettings,
    WorkerSecrets,
    WorkerSettings,
    read_kubeadm_token,
    read_munge_key,
    slurm_resources,
)

__all__ = [
    "IGNITION_VERSION",
    "KUBERNETES_JOIN_KEYS",
    "MUNGE_KEY_PATH",
    "UNIT_SUFFIXES",
    "BootstrapHost",
    "InstanceConfiguration",
    "WorkerBootstrap",
]

IGNITION_VERSION = "2.2.0"
# Every systemd unit type (systemd.unit(5)); a unit name must end in one of these.
UNIT_SUFFIXES = (
    ".service",
    ".socket",
    ".device",
    ".mount",
    ".automount",
    ".swap",
    ".target",
    ".path",
    ".timer",
    ".slice",
    ".scope",
)
# What addKubernetesWorker needs from the leader (as Toil's worker.ini holds them).
KUBERNETES_JOIN_KEYS = ("JOIN_TOKEN", "JOIN_CERT_HASH", "JOIN_ENDPOINT")
#: Where a Slurm worker's munge key lands (root only); munge.service installs it for munged.
MUNGE_KEY_PATH = "/etc/shoal/munge.key"

log = logging.getLogger(__name__)


def _data_url(contents: str | bytes) -> str:
    """An RFC 2397 ``data:`` URL holding exactly ``contents`` (text is UTF-8 encoded)."""
    raw = contents.encode("utf-8") if isinstance(contents, str) else bytes(contents)
    # Percent-encode everything outside RFC 3986's unreserved set, so '%', ',', '#', '/',
    # newlines and non-ASCII bytes all survive any URL parser.
    return "data:," + quote(raw, safe="")


def _parse_mode(mode: str | int) -> int:
    if isinstance(mode, bool):
        raise ValueError(f"file mode {mode!r} is not an octal string or an integer")
    if isinstance(mode, str):
        try:
            value = int(mode, 8)
        except ValueError:
            raise ValueError(f"file mode {mode!r} is not an octal number like '0644'") from None
    elif isinstance(mode, int):
        value = mode
    else:
        raise ValueError(f"file mode {mode!r} is not an octal string or an integer")
    if not 0 <= value <= 0o7777:
        raise ValueError(f"file mode {mode!r} is outside 0..0o7777")
    return value


class InstanceConfiguration:
    """The initial setup of an instance, turned into an Ignition config for its user data."""

    def __init__(self) -> None:
        # Ignition storage.files entries, systemd.units entries, and "ssh-rsa KEY" strings.
        self.files: list[dict[str, Any]] = []
        self.units: list[dict[str, Any]] = []
        self.sshPublicKeys: list[str] = []
        # For a stock image (cloud-init): the Debian/Ubuntu packages that provide what the
        # units run, and the programs to check before starting them. A Flatcar image
        # (Ignition) must carry them already: Ignition installs nothing.
        self.packages: list[str] = []
        self.programs: list[str] = []

    def addPackages(self, *names: str, programs: tuple[str, ...] = ()) -> None:
        """Need the packages ``names`` on a stock image, and ``programs`` (absolute paths)
        present and executable before the units start."""
        for name in names:
            if not re.match(r"^[a-z0-9][a-z0-9.+-]+$", name):
                raise ValueError(f"package name {name!r} is not a Debian package name")
        for path in programs:
            if not _PROGRAM_PATH.match(path):
                raise ValueError(f"program path {path!r} must be absolute, without spaces")
        self.packages.extend(n for n in names if n not in self.packages)
        self.programs.extend(p for p in programs if p not in self.programs)

    def addFile(
        self,
        path: str,
        filesystem: str = "root",
        mode: str | int = "0755",
        contents: str = "",
        append: bool = False,
    ) -> None:
        """Make a file on the instance with the given filesystem, mode and contents.

        ``mode`` is an octal string (``"0644"``) or an int (``0o644``). ``append``
        appends to an existing file instead of replacing it. See ``storage.files`` in
        https://github.com/kinvolk/ignition/blob/flatcar-master/doc/configuration-v2_2.md
        """
        if not isinstance(path, str) or not path.startswith("/"):
            raise ValueError(f"file path {path!r} must be absolute")
        if not isinstance(filesystem, str) or not filesystem:
            raise ValueError(f"filesystem {filesystem!r} must be a non-empty name like 'root'")
        if not isinstance(contents, str | bytes):
            raise ValueError(f"contents of {path} must be str or bytes")
        self.files.append(
            {
                "filesystem": filesystem,
                "path": path,
                "mode": _parse_mode(mode),
                "contents": {"source": _data_url(contents)},
                "append": bool(append),
            }
        )

    def addUnit(self, name: str, enabled: bool = True, contents: str = "") -> None:
        """Make a systemd unit ``name`` (with its suffix, e.g. ``.service``), enabled by default.

        On the node: ``systemctl status NAME`` or ``journalctl -xe`` show how it went.
        """
        if not isinstance(name, str) or "/" in name or not name.endswith(UNIT_SUFFIXES):
            raise ValueError(
                f"unit name {name!r} must be a file name ending in one of "
                f"{', '.join(UNIT_SUFFIXES)}"
            )
        if name.startswith(".") or name in UNIT_SUFFIXES:
            raise ValueError(f"unit name {name!r} has no name before its suffix")
        self.units.append({"name": name, "enabled": bool(enabled), "contents": contents})

    def addSSHRSAKey(self, keyData: str) -> None:
        """Authorize the given bare, base64-encoded RSA key (without ``ssh-rsa``) for ``core``."""
        key = keyData.strip() if isinstance(keyData, str) else ""
        if not key or any(c.isspace() for c in key):
            raise ValueError(
                f"SSH key {keyData!r} must be the bare base64 key data, without 'ssh-rsa' "
                "or a comment"
            )
        self.sshPublicKeys.append("ssh-rsa " + key)

    def hasUnit(self, name: str) -> bool:
        """True if the config already holds a unit named ``name``."""
        return any(unit["name"] == name for unit in self.units)

    def toIgnitionConfig(self) -> str:
        """The Ignition 2.2.0 JSON config describing this setup."""
        config: dict[str, Any] = {
            "ignition": {"version": IGNITION_VERSION},
            "storage": {"files": self.files},
            "systemd": {"units": self.units},
        }
        if self.sshPublicKeys:
            config["passwd"] = {
                "users": [{"name": "core", "sshAuthorizedKeys": list(self.sshPublicKeys)}]
            }
        return json.dumps(config, separators=(",", ":"))

    def toCloudConfig(self) -> str:
        """The same setup as #cloud-config user data for a stock Debian/Ubuntu image
        (``providers.cloud_init``)."""
        return cloud_init.cloud_config(self)


# Characters allowed in a Toil service argument or a Kubernetes join value (no quoting needed).
_SAFE_ARG = re.compile(r"^[A-Za-z0-9_./:@+=,-]+$")
# slurmd's --conf-server: controllers as host[:port], comma-separated, the primary first.
_CONF_SERVER = re.compile(r"^[A-Za-z0-9.-]+(:[0-9]{1,5})?(,[A-Za-z0-9.-]+(:[0-9]{1,5})?)*$")
_PROGRAM_PATH = re.compile(r"^/[A-Za-z0-9_./-]+$")


def _requires_install(config: InstanceConfiguration) -> str:
    """The ``Requires=`` line on install-kubernetes.service, when the config holds that unit
    (``addKubernetesServices``); otherwise nothing, so the config stays self-contained."""
    if config.hasUnit("install-kubernetes.service"):
        return "Requires=install-kubernetes.service\n"
    return ""


class _Addressed(Protocol):
    @property
    def privateIP(self) -> str | None: ...


class BootstrapHost(Protocol):
    """What a ``WorkerBootstrap`` asks of the provisioner it serves (``AbstractProvisioner``)."""

    clusterName: str | None
    clusterType: str | None
    _leaderPrivateIP: str | None

    def getKubernetesCloudProvider(self) -> str | None: ...

    def getKubernetesAutoscalerSetupCommands(self, values: dict[str, str]) -> str: ...

    async def getLeader(self) -> _Addressed: ...

    async def readClusterSettings(self) -> None: ...


class WorkerBootstrap:
    """What a node boots with, for the provisioner ``host`` (Toil's method names and
    signatures, as the seed's ``AbstractProvisioner`` lists them), and the worker join values.

    ``settings`` is how workers join (the daemon's ``workers`` section); ``prepare_workers``
    may also set it.
    """

    #: Docker image the Toil leader/worker service runs (Toil uses ``applianceSelf()``).
    applianceImage: ClassVar[str] = "quay.io/ucsc_cgl/toil:9.6.0"
    #: Run the Toil container privileged so FUSE works in it (Toil's ``enable_fuse``).
    enable_fuse: bool = False
    #: Shell command run on the host before the Toil service starts (Toil's
    #: ``TOIL_CUSTOM_INIT_COMMAND``); empty means none.
    customInitCommand: str = ""
    #: Prometheus node exporter image the node-exporter service runs.
    nodeExporterImage: ClassVar[str] = "quay.io/prometheus/node-exporter:v1.3.1"

    #: The instance tag a named Slurm worker reads its node name from.
    slurmNodeNameTag: ClassVar[str] = TAG_SLURM_NODE

    #: How workers join the scheduler (the daemon's ``workers`` section); None: they join
    #: nothing unless the values below are set directly.
    worker_settings: WorkerSettings | None = None
    #: Kubernetes join variables (JOIN_TOKEN, JOIN_CERT_HASH, JOIN_ENDPOINT) for workers of a
    #: kubernetes cluster; set by ``prepare_workers``.
    kubernetes_join_vars: dict[str, str] | None = None
    _munge_key: bytes | None = None
    _slurm_conf_server: str | None = None
    _workers_prepared: bool = False

    def __init__(self, host: BootstrapHost, settings: WorkerSettings | None = None) -> None:
        self.host = host
        if settings is not None:
            self.worker_settings = settings

    # The cluster's identity and leader are the provisioner's.
    @property
    def clusterName(self) -> str | None:
        return self.host.clusterName

    @property
    def clusterType(self) -> str | None:
        return self.host.clusterType

    @property
    def _leaderPrivateIP(self) -> str | None:
        return self.host._leaderPrivateIP

    @_leaderPrivateIP.setter
    def _leaderPrivateIP(self, address: str | None) -> None:
        self.host._leaderPrivateIP = address

    @property
    def prepared(self) -> bool:
        """True once ``prepare_workers`` has learnt the join values."""
        return self._workers_prepared

    # -- base --------------------------------------------------------------

    @property
    def dialect(self) -> str:
        """The user data's dialect, from ``workers.bootstrap``: ``"ignition"`` (Flatcar, the
        default) or ``"cloud-init"`` (a stock Debian/Ubuntu image)."""
        settings = self.worker_settings
        return getattr(settings, "bootstrap", None) or "ignition"

    def user_data(self, config: InstanceConfiguration) -> str:
        """``config`` as the user data of the configured dialect."""
        if self.dialect == "cloud-init":
            return config.toCloudConfig()
        return config.toIgnitionConfig()

    def getBaseInstanceConfiguration(self) -> InstanceConfiguration:
        """The configuration every node gets, leader or worker, whatever the cluster type."""
        config = InstanceConfiguration()
        if self.dialect == "ignition":
            # Flatcar: stay on the stable channel; never reboot a node on its own for updates.
            config.addFile(
                "/etc/flatcar/update.conf",
                mode="0644",
                contents=ignition.render("config/update.conf", {}),
            )
        self.addVolumesService(config)
        self.addNodeExporterService(config)
        return config

    def addVolumesService(self, config: InstanceConfiguration) -> None:
        """Add a service that RAID-0s and mounts the ephemeral disks, and bind-mounts
        the work directories (/var/lib/toil, docker, kubelet, ...) onto them."""
        config.addPackages("mdadm")  # RAIDs several disks (Flatcar ships it)
        config.addFile(
            "/home/core/volumes.sh", mode="0755", contents=ignition.render("scripts/volumes.sh", {})
        )
        config.addUnit(
            "volume-mounting.service",
            contents=ignition.render("units/volume-mounting.service", {}),
        )

    def addNodeExporterService(self, config: InstanceConfiguration) -> None:
        """Add the Prometheus node exporter (port 9100): a Docker container service on
        Flatcar; Debian's package (its own service, same port) on a stock image."""
        if self.dialect == "cloud-init":
            config.addPackages("prometheus-node-exporter")
            return
        config.addUnit(
            "node-exporter.service",
            contents=ignition.render(
                "units/node-exporter.service", {"IMAGE": self.nodeExporterImage}
            ),
        )

    # -- Toil service ------------------------------------------------------

    def toil_service_env_options(self) -> str:
        """Extra ``docker run`` options for the Toil container (temp files on /var/tmp)."""
        return "-e TMPDIR=/var/tmp"

    def add_toil_service(
        self,
        config: InstanceConfiguration,
        role: str,
        keyPath: str | None = None,
        preemptible: bool = False,
    ) -> None:
        """Add the Toil leader or worker container service.

        Mesos clusters run the Mesos master (leader) or agent (worker, which needs the
        leader's private IP). Kubernetes clusters only have a leader service, which
        sleeps to give users a place to shell into. With ``keyPath`` the container waits
        until that file exists (copied in after boot) before starting its entry point.
        ``preemptible`` is the worker's ``preemptible`` Mesos attribute.
        """
        if role not in ("leader", "worker"):
            raise ValueError(f"unknown role {role!r}; expected 'leader' or 'worker'")
        if self.clusterType == "mesos":
            if role == "leader":
                command = [
                    "mesos-master",
                    "--log_dir=/var/lib/mesos",
                    "--registry=in_memory",
                    f"--cluster={self.clusterName}",
                ]
            else:
                if not self._leaderPrivateIP:
                    raise ValueError(
                        "a Mesos worker needs the leader's private IP; it is not known yet"
                    )
                command = [
                    "mesos-agent",
                    "--log_dir=/var/lib/mesos",
                    "--work_dir=/var/lib/mesos",
                    f"--master={self._leaderPrivateIP}:5050",
                    f"--attributes=preemptible:{bool(preemptible)}",
                    "--no-hostname_lookup",
                    "--no-systemd_enable_support",
                ]
        elif self.clusterType == "kubernetes":
            if role != "leader":
                raise ValueError(
                    "a Toil worker service is not used in a kubernetes cluster; "
                    "use addKubernetesWorker"
                )
            command = ["sleep", "infinity"]
        else:
            raise ValueError(f"no Toil service for cluster type {self.clusterType!r}")

        for arg in command:
            if not _SAFE_ARG.match(arg):
                raise ValueError(f"unsafe character in Toil service argument {arg!r}")
        # Every command above has arguments, so ARGS is never empty.
        if keyPath:
            if not keyPath.startswith("/") or not _SAFE_ARG.match(keyPath):
                raise ValueError(
                    f"key path {keyPath!r} must be an absolute path without spaces or quotes"
                )
            # The key is copied into the running container, so the wait happens inside it.
            script = f"until [ -e {keyPath} ]; do sleep 1; done; exec {' '.join(command)}"
            entrypoint, args = "/bin/sh", f'-c "{script}"'
        else:
            entrypoint, args = command[0], " ".join(command[1:])

        if self.enable_fuse:
            isolation = "-e TOIL_KUBERNETES_PRIVILEGED=True --privileged"
        else:
            isolation = "--security-opt seccomp=unconfined --security-opt systempaths=unconfined"
        init = ""
        if self.customInitCommand:
            # systemd unquotes \\ and \" and expands $ and % in ExecStartPre: escape them.
            escaped = self.customInitCommand.replace("\\", "\\\\").replace('"', '\\"')
            escaped = escaped.replace("$", "$$").replace("%", "%%")
            init = f'ExecStartPre=/usr/bin/bash -c "{escaped}"\n'
        unit = ignition.render(
            "units/toil.service",
            {
                "ROLE": role,
                "CUSTOM_INIT": init,
                "ENV_OPTIONS": self.toil_service_env_options(),
                "ENTRYPOINT": entrypoint,
                "ISOLATION": isolation,
                "IMAGE": self.applianceImage,
                "ARGS": args,
            },
        )
        config.addPackages("docker.io", programs=("/usr/bin/docker",))
        config.addUnit(f"toil-{role}.service", contents=unit)

    # -- Kubernetes --------------------------------------------------------

    def getKubernetesValues(self, architecture: str = "amd64") -> dict[str, str]:
        """Versions and paths of the Kubernetes components, for the Kubernetes templates."""
        cloud_provider = self.host.getKubernetesCloudProvider()
        return {
            "ARCHITECTURE": architecture,
            "CNI_VERSION": "v0.8.2",
            "CRICTL_VERSION": "v1.17.0",
            "CNI_DIR": "/opt/cni/bin",
            "DOWNLOAD_DIR": "/opt/bin",
            "SETUP_STATE_DIR": "/etc/toil/kubernetes",
            # Must stay compatible with the kubelet unit and kubeadm config API templates.
            "KUBERNETES_VERSION": "v1.19.3",
            "FLANNEL_VERSION": "v0.13.0",
            "RUBBER_STAMP_VERSION": "v0.3.1",
            "AUTOSCALER_VERSION": "1.19.0",
            "METRICS_API_VERSION": "v0.3.7",
            "CLUSTER_NAME": self.clusterName,  # type: ignore[dict-item]
            # YAML line telling the kubelet its cloud provider, when there is one.
            "CLOUD_PROVIDER_SPEC": f"cloud-provider: {cloud_provider}" if cloud_provider else "",
        }

    def addKubernetesServices(
        self, config: InstanceConfiguration, architecture: str = "amd64"
    ) -> None:
        """Add the Kubernetes install (CNI, crictl, kubeadm, kubelet, kubectl) and the kubelet
        service, which restarts until kubeadm configures it. Same on leaders and workers."""
        values = self.getKubernetesValues(architecture)
        # what Flatcar ships and kubeadm's preflight checks want (1.19: Docker's runtime)
        config.addPackages(
            "docker.io",
            "conntrack",
            "socat",
            "ebtables",
            "ethtool",
            "curl",
            programs=("/usr/bin/docker",),
        )
        config.addUnit("kubelet.service", contents=ignition.render("units/kubelet.service", values))
        # kubeadm's drop-in: the kubelet reads the flags kubeadm init/join writes.
        config.addFile(
            "/etc/systemd/system/kubelet.service.d/10-kubeadm.conf",
            mode="0644",
            contents=ignition.render("units/kubelet.service.d/10-kubeadm.conf", values),
        )
        config.addFile(
            "/home/core/install-kubernetes.sh",
            mode="0755",
            contents=ignition.render("scripts/install-kubernetes.sh", values),
        )
        config.addUnit(
            "install-kubernetes.service",
            contents=ignition.render("units/install-kubernetes.service", values),
        )

    def addKubernetesLeader(self, config: InstanceConfiguration) -> None:
        """Add the services that make this node the Kubernetes control plane (kubeadm init,
        networking, CSR approval, autoscaler, metrics server, scaled-in node cleanup)."""
        values = self.getKubernetesValues()
        # Pack pods onto as few nodes as possible, so idle nodes can be scaled in.
        config.addFile(
            "/home/core/scheduler-config.yml",
            mode="0644",
            contents=ignition.render("config/scheduler-config.yml", values),
        )
        config.addFile(
            "/home/core/kubernetes-leader.yml",
            mode="0644",
            contents=ignition.render("config/kubernetes-leader.yml", values),
        )
        autoscaler = self.host.getKubernetesAutoscalerSetupCommands(values)
        setup = autoscaler.rstrip("\n") + "\n\n" if autoscaler.strip() else ""
        config.addFile(
            "/home/core/create-kubernetes-cluster.sh",
            mode="0755",
            contents=ignition.render(
                "scripts/create-kubernetes-cluster.sh", {**values, "AUTOSCALER_SETUP": setup}
            ),
        )
        config.addUnit(
            "create-kubernetes-cluster.service",
            contents=ignition.render(
                "units/create-kubernetes-cluster.service",
                {**values, "REQUIRES_INSTALL": _requires_install(config)},
            ),
        )
        config.addFile(
            "/home/core/cleanup-nodes.sh",
            mode="0755",
            contents=ignition.render("scripts/cleanup-nodes.sh", values),
        )
        config.addUnit(
            "cleanup-nodes.service", contents=ignition.render("units/cleanup-nodes.service", values)
        )

    def addKubernetesWorker(
        self,
        config: InstanceConfiguration,
        authVars: dict[str, str],
        preemptible: bool = False,
    ) -> None:
        """Add the services that join this node to the cluster as a worker.

        ``authVars`` holds JOIN_TOKEN, JOIN_CERT_HASH and JOIN_ENDPOINT from the leader.
        The join service requires install-kubernetes.service only when ``config`` already holds
        it (call ``addKubernetesServices`` first, as ``addWorkerAgent`` does).
        A preemptible worker carries the ``eks.amazonaws.com/capacityType=SPOT`` label
        (the label Toil uses, which its batch system understands).
        """
        missing = [key for key in KUBERNETES_JOIN_KEYS if not authVars.get(key)]
        if missing:
            raise ValueError(
                f"Kubernetes worker authVars lack {', '.join(missing)}; "
                f"need {', '.join(KUBERNETES_JOIN_KEYS)} from the leader's worker.ini"
            )
        for key in KUBERNETES_JOIN_KEYS:
            if not _SAFE_ARG.match(str(authVars[key])):
                raise ValueError(f"authVars {key} has characters not allowed in a join value")
        values = {**self.getKubernetesValues(), **{k: str(authVars[k]) for k in authVars}}
        values["WORKER_LABEL_SPEC"] = (
            'node-labels: "eks.amazonaws.com/capacityType=SPOT"' if preemptible else ""
        )
        config.addFile(
            "/home/core/kubernetes-worker.yml",
            mode="0644",
            contents=ignition.render("config/kubernetes-worker.yml", values),
        )
        config.addFile(
            "/home/core/join-kubernetes-cluster.sh",
            mode="0755",
            contents=ignition.render("scripts/join-kubernetes-cluster.sh", values),
        )
        config.addUnit(
            "join-kubernetes-cluster.service",
            contents=ignition.render(
                "units/join-kubernetes-cluster.service",
                {**values, "REQUIRES_INSTALL": _requires_install(config)},
            ),
        )

    # -- Slurm ---------------------------------------------------------------

    def addSlurmWorker(
        self,
        config: InstanceConfiguration,
        settings: SlurmWorkerSettings,
        mungeKey: bytes,
        confServer: str,
        instanceType: str | None = None,
        launchTags: Mapping[str, str] | None = None,
    ) -> None:
        """Add munge (with ``mungeKey``) and slurmd in configless mode, fetching its
        configuration from ``confServer`` (``host[:port]``, comma-separated controllers).

        ``settings.registration`` ``named`` starts ``slurmd -N NAME``, the name read at boot
        from the instance tag ``slurmNodeNameTag`` (``node_name: tag``) or the metadata
        service's host name (``node_name: hostname``); ``dynamic`` starts ``slurmd -Z -N
        <instance id> --conf "CPUs=.. RealMemory=.. Weight=.. Feature=shoal,..."``: named
        after its instance, as shoal's Slurm integration finds it, with the
        ``TAG_SLURM_RESOURCES`` of its launch (``launchTags``: its type's usable shape and
        Weight, as ``shoal slurm-conf`` declares them; without it slurmd reports the
        machine's), and the features of its launch's ``TAG_SLURM_FEATURES`` (its type's, and
        the daemon's ``slurm.features``), ``settings.features`` and ``instanceType``.
        The machine image provides munged and slurmd (``settings.munged``/``settings.slurmd``)
        and a ``munge`` user, as Slurm's packages do.
        """
        if not _CONF_SERVER.match(confServer):
            raise ValueError(f"Slurm controller {confServer!r} is not host[:port][,host[:port]]")
        for name, path in (("slurmd", settings.slurmd), ("munged", settings.munged)):
            if not _PROGRAM_PATH.match(path):
                raise ValueError(f"{name} path {path!r} must be absolute, without spaces")
        if settings.registration not in ("named", "dynamic"):
            raise ValueError(f"unknown Slurm registration {settings.registration!r}")
        if settings.node_name not in ("tag", "hostname"):
            raise ValueError(f"unknown Slurm node name source {settings.node_name!r}")
        # SHOAL_FEATURE marks a dynamic node as shoal's (its clean-up loop looks for it)
        tags = launchTags or {}
        tagged = [f for f in tags.get(TAG_SLURM_FEATURES, "").split(",") if f]
        features = list(
            dict.fromkeys(
                [SHOAL_FEATURE, *tagged, *settings.features, *filter(None, [instanceType])]
            )
        )
        resources = slurm_resources(tags) or ""
        for feature in features:
            if not SLURM_FEATURE.match(feature):
                raise ValueError(
                    f"Slurm feature {feature!r} has characters other than A-Za-z0-9_.-"
                )
        if not isinstance(mungeKey, bytes) or not mungeKey:
            raise ValueError("the munge key must be non-empty bytes")
        dynamic_conf = ""
        if settings.registration == "dynamic":
            dynamic_conf = " ".join(filter(None, [resources, f"Feature={','.join(features)}"]))
        # Debian 12 and Ubuntu 24.04 name them so; start-slurmd.sh asks IMDS with curl
        config.addPackages("munge", "slurmd", "curl", programs=(settings.munged, settings.slurmd))
        config.addFile(MUNGE_KEY_PATH, mode="0400", contents=mungeKey)
        config.addUnit(
            "munge.service",
            contents=ignition.render(
                "units/munge.service", {"MUNGED": settings.munged, "KEY_SOURCE": MUNGE_KEY_PATH}
            ),
        )
        config.addFile(
            "/home/core/start-slurmd.sh",
            mode="0755",
            contents=ignition.render(
                "scripts/start-slurmd.sh",
                {
                    "SLURMD": shlex.quote(settings.slurmd),
                    "CONF_SERVER": shlex.quote(confServer),
                    "REGISTRATION": settings.registration,
                    "NODE_NAME": settings.node_name,
                    "NODE_NAME_TAG": self.slurmNodeNameTag,
                    "DYNAMIC_CONF": shlex.quote(dynamic_conf),
                },
            ),
        )
        config.addUnit(
            "slurmd.service",
            contents=ignition.render("units/slurmd.service", {"CONF_SERVER": confServer}),
        )

    # -- workers that join ---------------------------------------------------

    def workerJoinKnown(self) -> bool:
        """True when ``addWorkerAgent`` has what it needs for this cluster type."""
        if self.clusterType == "mesos":
            return bool(self._leaderPrivateIP)
        if self.clusterType == "kubernetes":
            return bool(self.kubernetes_join_vars)
        if self.clusterType == "slurm":
            settings = self.worker_settings
            return bool(
                settings is not None
                and settings.slurm is not None
                and self._munge_key
                and self._slurm_conf_server
            )
        return False

    def addWorkerAgent(
        self,
        config: InstanceConfiguration,
        preemptible: bool = False,
        instanceType: str | None = None,
        launchTags: Mapping[str, str] | None = None,
    ) -> None:
        """Add the agent that joins this worker to the cluster's scheduler: the Toil worker
        service (a Mesos agent of the leader), the Kubernetes install, kubelet and join
        services, or munge and slurmd. Raises ``ValueError`` when the join values are not
        known (``prepare_workers`` learns them)."""
        if not self.workerJoinKnown():
            raise ValueError(
                f"a {self.clusterType} worker cannot join: the leader or join values are not "
                "known (configure `workers` and call prepare_workers)"
            )
        if self.clusterType == "mesos":
            self.add_toil_service(config, "worker", preemptible=preemptible)
        elif self.clusterType == "kubernetes":
            assert self.kubernetes_join_vars is not None
            if not config.hasUnit("install-kubernetes.service"):
                self.addKubernetesServices(config)
            self.addKubernetesWorker(config, self.kubernetes_join_vars, preemptible=preemptible)
        else:
            settings = self.worker_settings
            assert settings is not None and settings.slurm is not None
            assert self._munge_key is not None and self._slurm_conf_server is not None
            self.addSlurmWorker(
                config,
                settings.slurm,
                self._munge_key,
                self._slurm_conf_server,
                instanceType,
                launchTags,
            )

    async def prepare_workers(
        self, settings: WorkerSettings | None = None, secrets: WorkerSecrets | None = None
    ) -> None:
        """Learn what worker user data needs, before the first launch.

        ``settings`` is the daemon's ``workers`` section (default: the one the provisioner was
        built with; None anywhere: workers join nothing). Takes the Kubernetes token and the
        munge key from ``secrets`` (what the daemon's preflight read), or reads them from
        their files when not given, then finds the leader: the given address, the
        instance tagged as leader (``getLeader``), or this machine (``readClusterSettings``).
        Raises ``ProviderError`` naming the setting that is missing or wrong; the secrets
        never appear in a message or a log line.
        """
        if settings is not None:
            self.worker_settings = settings
        settings = self.worker_settings
        if settings is None:
            return
        cluster_type = self.clusterType or ""

        def incomplete(message: str) -> ProviderError:
            return ProviderError(message, code="WorkerJoinIncomplete", operation="prepareWorkers")

        k8s, slurm = settings.kubernetes, settings.slurm
        token: str | None = None
        key: bytes | None = None
        needs_leader = cluster_type == "mesos"
        if cluster_type == "kubernetes":
            if k8s is None:
                raise incomplete("workers.kubernetes is needed for kubernetes workers to join")
            try:
                token = secrets.kubeadm_token if secrets else None
                token = token or read_kubeadm_token(k8s.token_file)
            except ValueError as exc:
                raise incomplete(f"workers.kubernetes.token_file: {exc}") from None
            needs_leader = not k8s.api_endpoint
        elif cluster_type == "slurm":
            if slurm is None:
                raise incomplete("workers.slurm is needed for slurm workers to join")
            try:
                key = secrets.munge_key if secrets else None
                key = key or read_munge_key(slurm.munge_key_file)
            except ValueError as exc:
                raise incomplete(f"workers.slurm.munge_key_file: {exc}") from None
            needs_leader = not slurm.conf_server

        leader = await self._find_leader(settings)
        if needs_leader and not leader:
            raise incomplete(f"workers.leader is needed for {cluster_type} workers to join")
        if k8s is not None and token is not None:
            self.kubernetes_join_vars = {
                "JOIN_TOKEN": token,
                "JOIN_CERT_HASH": k8s.ca_cert_hash,
                "JOIN_ENDPOINT": k8s.api_endpoint or f"{leader}:{KUBERNETES_API_PORT}",
            }
        if slurm is not None and key is not None:
            self._munge_key = key
            self._slurm_conf_server = slurm.conf_server or leader
        self._workers_prepared = True
        log.info(
            "event=workers_prepared cluster_type=%s leader=%s source=%s",
            cluster_type,
            leader or "-",
            self._leader_source(settings),
        )

    @staticmethod
    def _leader_source(settings: WorkerSettings) -> str:
        if settings.leader is None:
            return "none"
        return "address" if settings.leader.address else f"discover-{settings.leader.discover}"

    async def _find_leader(self, settings: WorkerSettings) -> str | None:
        """The leader's address per ``settings.leader`` (also kept as ``_leaderPrivateIP``)."""
        how = settings.leader
        if how is None:
            return None
        if how.address:
            address: str | None = how.address
        elif how.discover == "tag":
            leader = await self.host.getLeader()
            address = leader.privateIP
        elif how.discover == "imds":
            await self.host.readClusterSettings()
            address = self._leaderPrivateIP
        else:
            raise ValueError(f"unknown leader discovery {how.discover!r}")
        if not address:
            raise ProviderError(
                f"the leader found by {self._leader_source(settings)} has no private address",
                code="LeaderUnknown",
                operation="prepareWorkers",
            )
        self._leaderPrivateIP = address
        return address
