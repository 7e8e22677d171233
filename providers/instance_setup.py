"""Instance setup: Ignition configs and the systemd services every node boots with.

``InstanceConfiguration`` collects files, systemd units and SSH keys and turns
them into an Ignition spec 2.2.0 config (Flatcar's dialect), the user data a
node boots from. ``InstanceSetupMixin`` is the instance-setup half of the
provisioner interface (``AbstractProvisioner`` inherits it): the base config,
the scratch-volume and node-exporter services, the Toil leader/worker service
and the Kubernetes install/leader/worker services. Behaviour follows Toil 9.6's
``AbstractProvisioner``; the unit files and scripts are shoal's own.

The mixin reads these attributes of the provisioner: ``clusterType``,
``clusterName``, ``_leaderPrivateIP`` (set by ``AbstractProvisioner``) and the
documented class attributes below (``applianceImage``, ``enable_fuse``,
``customInitCommand``); it calls ``getKubernetesCloudProvider()`` and
``getKubernetesAutoscalerSetupCommands(values)``.
"""

from __future__ import annotations

import json
import re
import textwrap
from typing import Any, ClassVar
from urllib.parse import quote

__all__ = [
    "IGNITION_VERSION",
    "KUBERNETES_JOIN_KEYS",
    "UNIT_SUFFIXES",
    "InstanceConfiguration",
    "InstanceSetupMixin",
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

_PLACEHOLDER = re.compile(r"@([A-Z][A-Z0-9_]*)@")


def _render(template: str, values: dict[str, str]) -> str:
    """Dedent ``template`` and replace each ``@NAME@`` with ``values[NAME]``.

    ``@NAME@`` rather than ``{NAME}`` so shell ``${...}`` and YAML braces stay literal.
    """

    def substitute(match: re.Match[str]) -> str:
        name = match.group(1)
        if name not in values:
            raise KeyError(f"template placeholder @{name}@ has no value")
        return str(values[name])

    return _PLACEHOLDER.sub(substitute, textwrap.dedent(template))


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


# Mounts the Toil container gets on every node (host path == container path unless noted).
_TOIL_VOLUMES = (
    "/var/run/docker.sock:/var/run/docker.sock",
    "/run/lock:/run/lock",
    "/var/lib/mesos:/var/lib/mesos",
    "/var/lib/docker:/var/lib/docker",
    "/var/lib/toil:/var/lib/toil",
    "/var/lib/cwl:/var/lib/cwl",
    "/var/tmp:/var/tmp",
    "/tmp:/tmp",
    "/opt:/opt",
    "/etc/kubernetes:/etc/kubernetes",
    "/etc/kubernetes/admin.conf:/root/.kube/config",
)
_SAFE_ARG = re.compile(r"^[A-Za-z0-9_./:@+=,-]+$")


class InstanceSetupMixin:
    """Instance setup methods of the provisioner interface (Toil's names and signatures)."""

    InstanceConfiguration: ClassVar[type[InstanceConfiguration]] = InstanceConfiguration

    #: Docker image the Toil leader/worker service runs (Toil uses ``applianceSelf()``).
    applianceImage: ClassVar[str] = "quay.io/ucsc_cgl/toil:9.6.0"
    #: Run the Toil container privileged so FUSE works in it (Toil's ``enable_fuse``).
    enable_fuse: bool = False
    #: Shell command run on the host before the Toil service starts (Toil's
    #: ``TOIL_CUSTOM_INIT_COMMAND``); empty means none.
    customInitCommand: str = ""
    #: Prometheus node exporter image the node-exporter service runs.
    nodeExporterImage: ClassVar[str] = "quay.io/prometheus/node-exporter:v1.3.1"

    # Provided by AbstractProvisioner.
    clusterName: str | None
    clusterType: str | None
    _leaderPrivateIP: str | None

    # -- base --------------------------------------------------------------

    def getBaseInstanceConfiguration(self) -> InstanceConfiguration:
        """The configuration every node gets, leader or worker, whatever the cluster type."""
        config = self.InstanceConfiguration()
        # Flatcar: stay on the stable channel and never reboot a node on its own for updates.
        config.addFile(
            "/etc/flatcar/update.conf",
            mode="0644",
            contents="GROUP=stable\nREBOOT_STRATEGY=off\n",
        )
        self.addVolumesService(config)
        self.addNodeExporterService(config)
        return config

    def addVolumesService(self, config: InstanceConfiguration) -> None:
        """Add a service that RAID-0s and mounts the ephemeral disks, and bind-mounts
        the work directories (/var/lib/toil, docker, kubelet, ...) onto them."""
        config.addFile(
            "/home/core/volumes.sh",
            mode="0755",
            contents=_render(
                """\
                #!/usr/bin/env bash
                # Collect the ephemeral (instance-store) disks, RAID-0 them when there are
                # several, mount them on /mnt/ephemeral and bind-mount the work directories
                # onto them. With no ephemeral disk, the directories stay on the root disk.
                set -euo pipefail
                directories=(lib/toil lib/mesos lib/docker lib/kubelet lib/cwl tmp)
                scratch=/mnt/ephemeral

                if mountpoint -q "$scratch"; then
                    echo "$scratch already mounted"
                else
                    drives=()
                    shopt -s nullglob
                    for candidate in /dev/xvd[a-z] /dev/nvme[0-9]n1 /dev/nvme[1-2][0-9]n1; do
                        [ -b "$candidate" ] || continue
                        drive="$(readlink -f "$candidate")"
                        case " ${drives[*]-} " in *" $drive "*) continue ;; esac
                        if lsblk -nro MOUNTPOINT "$drive" | grep -q .; then
                            echo "$drive is in use (likely the root disk); skipping"
                            continue
                        fi
                        drives+=("$drive")
                    done
                    echo "ephemeral drives: ${drives[*]-none}"
                    if [ "${#drives[@]}" -eq 0 ]; then
                        for directory in "${directories[@]}"; do
                            mkdir -p "/var/$directory"
                        done
                        exit 0
                    fi
                    if [ "${#drives[@]}" -eq 1 ]; then
                        device="${drives[0]}"
                    else
                        device=/dev/md0
                        for drive in "${drives[@]}"; do
                            wipefs -a "$drive"
                        done
                        mdadm --create --force --run --verbose "$device" --level=0 \\
                            --raid-devices="${#drives[@]}" "${drives[@]}"
                    fi
                    mkfs.ext4 -F "$device"
                    mkdir -p "$scratch"
                    mount "$device" "$scratch"
                fi

                for directory in "${directories[@]}"; do
                    mkdir -p "$scratch/var/$directory" "/var/$directory"
                    mountpoint -q "/var/$directory" || \\
                        mount --bind "$scratch/var/$directory" "/var/$directory"
                done
                """,
                {},
            ),
        )
        config.addUnit(
            "volume-mounting.service",
            contents=_render(
                """\
                [Unit]
                Description=Mount ephemeral volumes and bind-mount the work directories onto them
                DefaultDependencies=no
                After=local-fs.target
                Before=docker.service kubelet.service toil-leader.service toil-worker.service

                [Service]
                Type=oneshot
                RemainAfterExit=yes
                ExecStart=/usr/bin/bash /home/core/volumes.sh

                [Install]
                WantedBy=multi-user.target
                """,
                {},
            ),
        )

    def addNodeExporterService(self, config: InstanceConfiguration) -> None:
        """Add the Prometheus node exporter (port 9100) as a Docker container service."""
        config.addUnit(
            "node-exporter.service",
            contents=_render(
                """\
                [Unit]
                Description=Prometheus node exporter container
                Wants=docker.service
                After=docker.service

                [Service]
                Restart=on-failure
                RestartSec=2
                ExecStartPre=-/usr/bin/docker rm -f node-exporter
                ExecStart=/usr/bin/docker run --rm \\
                    --name node-exporter \\
                    -p 9100:9100 \\
                    -v /proc:/host/proc:ro \\
                    -v /sys:/host/sys:ro \\
                    -v /:/rootfs:ro \\
                    @IMAGE@ \\
                    --path.procfs=/host/proc \\
                    --path.sysfs=/host/sys \\
                    --path.rootfs=/rootfs \\
                    "--collector.filesystem.mount-points-exclude=^/(sys|proc|dev|host|etc)($$|/)"
                ExecStop=/usr/bin/docker stop node-exporter

                [Install]
                WantedBy=multi-user.target
                """,
                {"IMAGE": self.nodeExporterImage},
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
            escaped = self.customInitCommand.replace("\\", "\\\\").replace('"', '\\"')
            escaped = escaped.replace("$", "$$").replace("%", "%%")
            init = f'ExecStartPre=/usr/bin/bash -c "{escaped}"\n'
        volumes = " \\\n".join(f"    -v {volume}" for volume in _TOIL_VOLUMES)
        unit = _render(
            """\
            [Unit]
            Description=Toil @ROLE@ container
            Wants=docker.service
            After=docker.service volume-mounting.service create-kubernetes-cluster.service

            [Service]
            Restart=on-failure
            RestartSec=2
            ExecStartPre=-/usr/bin/docker rm -f toil_@ROLE@
            """,
            {"ROLE": role},
        )
        unit += init
        unit += (
            "ExecStart=/usr/bin/docker run \\\n"
            f"    {self.toil_service_env_options()} \\\n"
            f"    --entrypoint={entrypoint} \\\n"
            "    --net=host \\\n"
            "    --init \\\n"
            f"{volumes} \\\n"
            f"    {isolation} \\\n"
            "    -e TOIL_KUBERNETES_HOST_PATH=/var/lib/toil \\\n"
            "    -e SINGULARITY_CACHEDIR=/var/lib/toil/singularity \\\n"
            "    -e MINIWDL__SINGULARITY__IMAGE_CACHE=/var/lib/toil/miniwdl \\\n"
            f"    --name=toil_{role} \\\n"
            f"    {self.applianceImage}"
            + (f" \\\n    {args}\n" if args else "\n")
            + f"ExecStop=/usr/bin/docker stop toil_{role}\n"
            "\n[Install]\nWantedBy=multi-user.target\n"
        )
        config.addUnit(f"toil-{role}.service", contents=unit)

    # -- Kubernetes --------------------------------------------------------

    def getKubernetesValues(self, architecture: str = "amd64") -> dict[str, str]:
        """Versions and paths of the Kubernetes components, for the Kubernetes templates."""
        cloud_provider = self.getKubernetesCloudProvider()  # type: ignore[attr-defined]
        return {
            "ARCHITECTURE": architecture,
            "CNI_VERSION": "v0.8.2",
            "CRICTL_VERSION": "v1.17.0",
            "CNI_DIR": "/opt/cni/bin",
            "DOWNLOAD_DIR": "/opt/bin",
            "SETUP_STATE_DIR": "/etc/toil/kubernetes",
            # Must stay compatible with the kubelet unit and kubeadm config API below.
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
        config.addUnit(
            "kubelet.service",
            contents=_render(
                """\
                [Unit]
                Description=kubelet: the Kubernetes node agent
                Documentation=https://kubernetes.io/docs/home/
                Wants=network-online.target
                After=network-online.target install-kubernetes.service

                [Service]
                ExecStart=@DOWNLOAD_DIR@/kubelet
                Restart=always
                RestartSec=10
                StartLimitInterval=0

                [Install]
                WantedBy=multi-user.target
                """,
                values,
            ),
        )
        # kubeadm's drop-in: the kubelet reads the flags kubeadm init/join writes.
        config.addFile(
            "/etc/systemd/system/kubelet.service.d/10-kubeadm.conf",
            mode="0644",
            contents=_render(
                """\
                [Service]
                Environment="KUBELET_KUBECONFIG_ARGS=--bootstrap-kubeconfig=/etc/kubernetes/bootstrap-kubelet.conf --kubeconfig=/etc/kubernetes/kubelet.conf"
                Environment="KUBELET_CONFIG_ARGS=--config=/var/lib/kubelet/config.yaml"
                # Written by kubeadm init/join: KUBELET_KUBEADM_ARGS.
                EnvironmentFile=-/var/lib/kubelet/kubeadm-flags.env
                # Operator overrides, last resort: KUBELET_EXTRA_ARGS.
                EnvironmentFile=-/etc/default/kubelet
                ExecStart=
                ExecStart=@DOWNLOAD_DIR@/kubelet $KUBELET_KUBECONFIG_ARGS $KUBELET_CONFIG_ARGS $KUBELET_KUBEADM_ARGS $KUBELET_EXTRA_ARGS
                """,  # noqa: E501
                values,
            ),
        )
        config.addFile(
            "/home/core/install-kubernetes.sh",
            mode="0755",
            contents=_render(
                """\
                #!/usr/bin/env bash
                # Download the CNI plugins, crictl, kubeadm, kubelet and kubectl, once.
                set -euo pipefail
                FLAG_FILE="@SETUP_STATE_DIR@/install-kubernetes.done"

                # kubeadm checks that the container runtime is enabled.
                systemctl enable docker.service

                mkdir -p "@CNI_DIR@" "@DOWNLOAD_DIR@"
                curl -fsSL "https://github.com/containernetworking/plugins/releases/download/@CNI_VERSION@/cni-plugins-linux-@ARCHITECTURE@-@CNI_VERSION@.tgz" \\
                    | tar -C "@CNI_DIR@" -xz
                curl -fsSL "https://github.com/kubernetes-sigs/cri-tools/releases/download/@CRICTL_VERSION@/crictl-@CRICTL_VERSION@-linux-@ARCHITECTURE@.tar.gz" \\
                    | tar -C "@DOWNLOAD_DIR@" -xz
                for tool in kubeadm kubelet kubectl; do
                    curl -fsSL -o "@DOWNLOAD_DIR@/$tool" \\
                        "https://dl.k8s.io/release/@KUBERNETES_VERSION@/bin/linux/@ARCHITECTURE@/$tool"
                    chmod +x "@DOWNLOAD_DIR@/$tool"
                done

                mkdir -p "@SETUP_STATE_DIR@"
                touch "$FLAG_FILE"
                """,  # noqa: E501
                values,
            ),
        )
        config.addUnit(
            "install-kubernetes.service",
            contents=_render(
                """\
                [Unit]
                Description=Install Kubernetes (CNI, crictl, kubeadm, kubelet, kubectl)
                Wants=network-online.target
                After=network-online.target
                Before=kubelet.service
                ConditionPathExists=!@SETUP_STATE_DIR@/install-kubernetes.done

                [Service]
                Type=oneshot
                RemainAfterExit=yes
                ExecStart=/usr/bin/bash /home/core/install-kubernetes.sh
                Restart=on-failure
                RestartSec=5s

                [Install]
                WantedBy=multi-user.target
                RequiredBy=kubelet.service
                """,
                values,
            ),
        )

    def addKubernetesLeader(self, config: InstanceConfiguration) -> None:
        """Add the services that make this node the Kubernetes control plane (kubeadm init,
        networking, CSR approval, autoscaler, metrics server, scaled-in node cleanup)."""
        values = self.getKubernetesValues()
        # Pack pods onto as few nodes as possible, so idle nodes can be scaled in.
        config.addFile(
            "/home/core/scheduler-config.yml",
            mode="0644",
            contents=_render(
                """\
                apiVersion: kubescheduler.config.k8s.io/v1beta1
                kind: KubeSchedulerConfiguration
                clientConnection:
                  kubeconfig: /etc/kubernetes/scheduler.conf
                profiles:
                  - schedulerName: default-scheduler
                    plugins:
                      score:
                        disabled:
                          - name: NodeResourcesLeastAllocated
                        enabled:
                          - name: NodeResourcesMostAllocated
                            weight: 1
                """,
                values,
            ),
        )
        config.addFile(
            "/home/core/kubernetes-leader.yml",
            mode="0644",
            contents=_render(
                """\
                apiVersion: kubeadm.k8s.io/v1beta2
                kind: InitConfiguration
                nodeRegistration:
                  kubeletExtraArgs:
                    volume-plugin-dir: "/opt/libexec/kubernetes/kubelet-plugins/volume/exec/"
                    @CLOUD_PROVIDER_SPEC@
                ---
                apiVersion: kubeadm.k8s.io/v1beta2
                kind: ClusterConfiguration
                clusterName: "@CLUSTER_NAME@"
                controllerManager:
                  extraArgs:
                    flex-volume-plugin-dir: "/opt/libexec/kubernetes/kubelet-plugins/volume/exec/"
                scheduler:
                  extraArgs:
                    config: "/etc/kubernetes/scheduler-config.yml"
                  extraVolumes:
                    - name: schedulerconfig
                      hostPath: "/home/core/scheduler-config.yml"
                      mountPath: "/etc/kubernetes/scheduler-config.yml"
                      readOnly: true
                      pathType: "File"
                networking:
                  serviceSubnet: "10.96.0.0/12"
                  podSubnet: "10.244.0.0/16"
                  dnsDomain: "cluster.local"
                ---
                apiVersion: kubelet.config.k8s.io/v1beta1
                kind: KubeletConfiguration
                serverTLSBootstrap: true
                rotateCertificates: true
                cgroupDriver: systemd
                """,
                values,
            ),
        )
        autoscaler = self.getKubernetesAutoscalerSetupCommands(values)  # type: ignore[attr-defined]
        script = _render(
            """\
            #!/usr/bin/env bash
            # Bootstrap the control plane once, then record how workers join it.
            set -euo pipefail
            FLAG_FILE="@SETUP_STATE_DIR@/create-kubernetes-cluster.done"
            export PATH="$PATH:@DOWNLOAD_DIR@"

            # kubeadm init needs the kubelet running (and restarting) while it works.
            systemctl start kubelet

            # On clouds with a metadata service, use its host name (kubeadm registers the node by it).
            if name="$(curl -fs --max-time 5 http://169.254.169.254/latest/meta-data/hostname)"; then
                hostnamectl set-hostname "$name"
            fi

            if [ ! -e /etc/kubernetes/admin.conf ]; then
                kubeadm init --config /home/core/kubernetes-leader.yml
            fi
            mkdir -p "$HOME/.kube"
            cp /etc/kubernetes/admin.conf "$HOME/.kube/config"
            export KUBECONFIG=/etc/kubernetes/admin.conf

            # Pod network.
            kubectl apply -f "https://raw.githubusercontent.com/flannel-io/flannel/@FLANNEL_VERSION@/Documentation/kube-flannel.yml"

            # Approve kubelet serving-certificate requests (serverTLSBootstrap).
            for manifest in service_account role role_binding operator; do
                kubectl apply -f "https://raw.githubusercontent.com/kontena/kubelet-rubber-stamp/release/@RUBBER_STAMP_VERSION@/deploy/$manifest.yaml"
            done

            """,  # noqa: E501
            values,
        )
        script += autoscaler.rstrip("\n") + "\n\n" if autoscaler.strip() else ""
        script += _render(
            """\
            # Metrics server, for `kubectl top`.
            curl -fsSL "https://github.com/kubernetes-sigs/metrics-server/releases/download/@METRICS_API_VERSION@/components.yaml" \\
                | sed 's/          - --secure-port=4443/          - --secure-port=4443\\n          - --kubelet-preferred-address-types=Hostname/' \\
                | kubectl apply -f -

            # Joining information for workers, in INI form (section DEFAULT).
            hash="$(openssl x509 -pubkey -in /etc/kubernetes/pki/ca.crt \\
                | openssl rsa -pubin -outform der 2>/dev/null | openssl dgst -sha256 -hex | sed 's/^.* //')"
            {
                echo "[DEFAULT]"
                echo "JOIN_TOKEN=$(kubeadm token create --ttl 0)"
                echo "JOIN_CERT_HASH=sha256:$hash"
                echo "JOIN_ENDPOINT=$(hostname):6443"
            } >/etc/kubernetes/worker.ini.new
            mv /etc/kubernetes/worker.ini.new /etc/kubernetes/worker.ini

            mkdir -p "@SETUP_STATE_DIR@"
            touch "$FLAG_FILE"
            """,  # noqa: E501
            values,
        )
        config.addFile("/home/core/create-kubernetes-cluster.sh", mode="0755", contents=script)
        config.addUnit(
            "create-kubernetes-cluster.service",
            contents=_render(
                """\
                [Unit]
                Description=Bootstrap the Kubernetes control plane
                Requires=install-kubernetes.service
                After=install-kubernetes.service docker.service
                Before=toil-leader.service
                # Not Before=kubelet.service: the kubelet must run while kubeadm init works.
                ConditionPathExists=!@SETUP_STATE_DIR@/create-kubernetes-cluster.done

                [Service]
                Type=oneshot
                RemainAfterExit=yes
                ExecStart=/usr/bin/bash /home/core/create-kubernetes-cluster.sh
                Restart=on-failure
                RestartSec=5s

                [Install]
                WantedBy=multi-user.target
                RequiredBy=toil-leader.service
                """,
                values,
            ),
        )
        config.addFile(
            "/home/core/cleanup-nodes.sh",
            mode="0755",
            contents=_render(
                """\
                #!/usr/bin/env bash
                # Delete nodes the cluster autoscaler scaled in that are now gone (unreachable).
                set -uo pipefail
                export PATH="$PATH:@DOWNLOAD_DIR@"
                export KUBECONFIG=/etc/kubernetes/admin.conf
                selector='.items[]
                    | select(any(.spec.taints[]?; .key == "ToBeDeletedByClusterAutoscaler"))
                    | select(any(.spec.taints[]?; .key == "node.kubernetes.io/unreachable"))
                    | select(any(.status.conditions[]?; .type == "Ready" and .status == "Unknown"))
                    | .metadata.name'
                while true; do
                    echo "checking for scaled-in nodes"
                    for node in $(kubectl get nodes -o json | jq -r "$selector"); do
                        echo "node $node was scaled in and is gone; deleting it"
                        kubectl delete node "$node" || true
                    done
                    sleep 300
                done
                """,
                values,
            ),
        )
        config.addUnit(
            "cleanup-nodes.service",
            contents=_render(
                """\
                [Unit]
                Description=Remove scaled-in Kubernetes nodes
                Requires=create-kubernetes-cluster.service
                After=create-kubernetes-cluster.service

                [Service]
                ExecStart=/usr/bin/bash /home/core/cleanup-nodes.sh
                Restart=always
                RestartSec=10
                StartLimitInterval=0

                [Install]
                WantedBy=multi-user.target
                """,
                values,
            ),
        )

    def addKubernetesWorker(
        self,
        config: InstanceConfiguration,
        authVars: dict[str, str],
        preemptible: bool = False,
    ) -> None:
        """Add the services that join this node to the cluster as a worker.

        ``authVars`` holds JOIN_TOKEN, JOIN_CERT_HASH and JOIN_ENDPOINT from the leader.
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
            contents=_render(
                """\
                apiVersion: kubeadm.k8s.io/v1beta2
                kind: JoinConfiguration
                nodeRegistration:
                  kubeletExtraArgs:
                    volume-plugin-dir: "/opt/libexec/kubernetes/kubelet-plugins/volume/exec/"
                    @CLOUD_PROVIDER_SPEC@
                    @WORKER_LABEL_SPEC@
                discovery:
                  bootstrapToken:
                    apiServerEndpoint: "@JOIN_ENDPOINT@"
                    token: "@JOIN_TOKEN@"
                    caCertHashes:
                      - "@JOIN_CERT_HASH@"
                ---
                apiVersion: kubelet.config.k8s.io/v1beta1
                kind: KubeletConfiguration
                cgroupDriver: systemd
                """,
                values,
            ),
        )
        config.addFile(
            "/home/core/join-kubernetes-cluster.sh",
            mode="0755",
            contents=_render(
                """\
                #!/usr/bin/env bash
                # Join the cluster as a worker, once.
                set -euo pipefail
                FLAG_FILE="@SETUP_STATE_DIR@/join-kubernetes-cluster.done"
                export PATH="$PATH:@DOWNLOAD_DIR@"

                # kubeadm join needs the kubelet running (and restarting) while it works.
                systemctl start kubelet

                kubeadm join "@JOIN_ENDPOINT@" --config /home/core/kubernetes-worker.yml

                mkdir -p "@SETUP_STATE_DIR@"
                touch "$FLAG_FILE"
                """,
                values,
            ),
        )
        config.addUnit(
            "join-kubernetes-cluster.service",
            contents=_render(
                """\
                [Unit]
                Description=Join the Kubernetes cluster as a worker
                Requires=install-kubernetes.service
                After=install-kubernetes.service docker.service
                # Not Before=kubelet.service: the kubelet must run while kubeadm join works.
                ConditionPathExists=!@SETUP_STATE_DIR@/join-kubernetes-cluster.done

                [Service]
                Type=oneshot
                RemainAfterExit=yes
                ExecStart=/usr/bin/bash /home/core/join-kubernetes-cluster.sh
                Restart=on-failure
                RestartSec=5s

                [Install]
                WantedBy=multi-user.target
                """,
                values,
            ),
        )
