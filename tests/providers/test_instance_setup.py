"""The node services are real unit files: ``systemd-analyze verify`` accepts every one
(see ``systemd_verify`` for the root it builds), and each config is self-contained.

Scripts the config ships are also checked with ``bash -n``.
"""

from __future__ import annotations

import json
import subprocess
from pathlib import Path
from typing import Any

import pytest
import yaml
from shoal.providers.instance_setup import InstanceConfiguration
from systemd_verify import (
    assert_units_verify,
    build_root,
    files_of,
    needs_systemd_analyze,
    parsed,
    units_of,
    verify,
)

AUTH = {
    "JOIN_TOKEN": "abcdef.0123456789abcdef",
    "JOIN_CERT_HASH": "sha256:" + "ab" * 32,
    "JOIN_ENDPOINT": "ip-10-0-0-1.ec2.internal:6443",
}


# -- configurations under test ------------------------------------------------


def base(p: Any) -> InstanceConfiguration:
    return p.getBaseInstanceConfiguration()


def only(method: str, *args: Any, **kwargs: Any) -> Any:
    def build(p: Any) -> InstanceConfiguration:
        config = InstanceConfiguration()
        getattr(p, method)(config, *args, **kwargs)
        return config

    return build


def user_data(role: str, preemptible: bool = False, keyPath: str | None = None) -> Any:
    """Everything a node of ``role`` gets, in the order Toil's _getIgnitionUserData adds it."""

    def build(p: Any) -> InstanceConfiguration:
        config = p.getBaseInstanceConfiguration()
        if p.clusterType == "kubernetes":
            p.addKubernetesServices(config)
            if role == "leader":
                p.addKubernetesLeader(config)
                p.add_toil_service(config, role, keyPath, preemptible)
            else:
                p.addKubernetesWorker(config, AUTH, preemptible=preemptible)
        else:
            p.add_toil_service(config, role, keyPath, preemptible)
        return config

    return build


CASES = {
    "base": ("mesos", base),
    "volumes": ("mesos", only("addVolumesService")),
    "node-exporter": ("mesos", only("addNodeExporterService")),
    "mesos-leader": ("mesos", only("add_toil_service", "leader")),
    "mesos-leader-key": ("mesos", only("add_toil_service", "leader", "/root/.sshSuccess")),
    "mesos-worker": ("mesos", only("add_toil_service", "worker", preemptible=True)),
    "mesos-worker-key": ("mesos", only("add_toil_service", "worker", "/var/lib/key")),
    "k8s-toil-leader": ("kubernetes", only("add_toil_service", "leader")),
    "k8s-services": ("kubernetes", only("addKubernetesServices")),
    "k8s-services-arm64": ("kubernetes", only("addKubernetesServices", "arm64")),
    "k8s-leader-node": ("kubernetes", user_data("leader")),
    "k8s-worker-node": ("kubernetes", user_data("worker", preemptible=True)),
    "mesos-leader-node": ("mesos", user_data("leader")),
    "mesos-worker-node": ("mesos", user_data("worker", keyPath="/var/lib/key")),
    # Self-contained without addKubernetesServices: no Requires= on a unit not in the config.
    "k8s-worker-alone": ("kubernetes", only("addKubernetesWorker", AUTH)),
    "k8s-leader-alone": ("kubernetes", only("addKubernetesLeader")),
}


@pytest.fixture
def provisioner(make_provisioner: Any) -> Any:
    def make(cluster_type: str, **attrs: Any) -> Any:
        p = make_provisioner(clusterName="demo", clusterType=cluster_type)
        p._leaderPrivateIP = "10.0.0.1"
        for name, value in attrs.items():
            # the bootstrap's settings, or the provisioner's (its Kubernetes answers)
            setattr(p.bootstrap if hasattr(p.bootstrap, name) else p, name, value)
        return p

    return make


@needs_systemd_analyze
@pytest.mark.parametrize("case", list(CASES))
def test_units_pass_systemd_analyze_verify(case: str, provisioner: Any, tmp_path: Path) -> None:
    cluster_type, build = CASES[case]
    assert_units_verify(tmp_path, build(provisioner(cluster_type)))


@needs_systemd_analyze
def test_units_verify_with_fuse_and_custom_init(provisioner: Any, tmp_path: Path) -> None:
    p = provisioner("mesos", enable_fuse=True, customInitCommand='echo "$HOME" 100% ok')
    config = InstanceConfiguration()
    p.add_toil_service(config, "leader")
    assert_units_verify(tmp_path, config)
    unit = units_of(config)["toil-leader.service"]
    assert "--privileged" in unit
    assert 'ExecStartPre=/usr/bin/bash -c "echo \\"$$HOME\\" 100%% ok"' in unit


@needs_systemd_analyze
@pytest.mark.parametrize(
    ("contents", "complaint"),
    [
        ("[Service]\nExecStart=/usr/bin/not-on-flatcar --flag\n", "not-on-flatcar"),
        ("[Service]\nExecStart=relative/path\n", "relative"),
        ("[Service]\nType=sometimes\nExecStart=/usr/bin/docker ps\n", ""),
        (
            "[Unit]\nRequires=nonexistent-unit.service\n[Service]\nExecStart=/usr/bin/docker ps\n",
            "",
        ),
    ],
)
def test_verify_fails_on_a_broken_unit(
    contents: str, complaint: str, provisioner: Any, tmp_path: Path
) -> None:
    """The check can fail: the same root, with one broken unit added, does not verify."""
    config = provisioner("mesos").getBaseInstanceConfiguration()
    config.addUnit("broken.service", contents=contents)
    names = build_root(tmp_path / "root", config)
    result = verify(tmp_path / "root", names)
    assert result.returncode != 0 or result.stderr.strip(), "verify accepted a broken unit"
    assert "broken.service" in result.stderr
    assert complaint in result.stderr


# -- content ------------------------------------------------------------------


def test_base_configuration(provisioner: Any) -> None:
    config = provisioner("mesos").getBaseInstanceConfiguration()
    files = files_of(config)
    assert "REBOOT_STRATEGY=off" in files["/etc/flatcar/update.conf"]
    assert set(units_of(config)) == {"volume-mounting.service", "node-exporter.service"}
    assert all(u["enabled"] for u in parsed(config)["systemd"]["units"])
    assert "passwd" not in parsed(config)
    script = files["/home/core/volumes.sh"]
    assert "mdadm --create" in script and "--level=0" in script
    for directory in ("lib/toil", "lib/docker", "lib/kubelet", "lib/mesos", "lib/cwl", "tmp"):
        assert directory in script
    assert (
        "ExecStart=/usr/bin/bash /home/core/volumes.sh"
        in units_of(config)["volume-mounting.service"]
    )
    exporter = units_of(config)["node-exporter.service"]
    assert "-p 9100:9100" in exporter and "node-exporter:" in exporter


def test_toil_service_env_options(provisioner: Any) -> None:
    p = provisioner("mesos")
    assert p.toil_service_env_options() == "-e TMPDIR=/var/tmp"
    config = InstanceConfiguration()
    p.add_toil_service(config, "leader")
    assert "-e TMPDIR=/var/tmp" in units_of(config)["toil-leader.service"]


def test_mesos_leader_and_worker(provisioner: Any) -> None:
    p = provisioner("mesos")
    config = InstanceConfiguration()
    p.add_toil_service(config, "leader")
    p.add_toil_service(config, "worker")
    units = units_of(config)
    leader, worker = units["toil-leader.service"], units["toil-worker.service"]
    assert "--entrypoint=mesos-master" in leader and "--cluster=demo" in leader
    assert "mesos-agent" not in leader
    assert "--entrypoint=mesos-agent" in worker and "--master=10.0.0.1:5050" in worker
    assert "--attributes=preemptible:False" in worker
    assert "--name=toil_leader" in leader and "--name=toil_worker" in worker
    assert p.bootstrap.applianceImage in leader and p.bootstrap.applianceImage in worker


def test_mesos_worker_preemptible_attribute(provisioner: Any) -> None:
    config = InstanceConfiguration()
    provisioner("mesos").add_toil_service(config, "worker", preemptible=True)
    assert "--attributes=preemptible:True" in units_of(config)["toil-worker.service"]


def test_key_path_wait_only_with_key_path(provisioner: Any) -> None:
    p = provisioner("mesos")
    with_key, without_key = InstanceConfiguration(), InstanceConfiguration()
    p.add_toil_service(with_key, "worker", keyPath="/var/lib/toil/key")
    p.add_toil_service(without_key, "worker")
    waiting = units_of(with_key)["toil-worker.service"]
    plain = units_of(without_key)["toil-worker.service"]
    assert "until [ -e /var/lib/toil/key ]" in waiting
    assert "exec mesos-agent" in waiting and "--entrypoint=/bin/sh" in waiting
    assert "until" not in plain and "/var/lib/toil/key" not in plain


def test_kubernetes_toil_service_is_leader_only(provisioner: Any) -> None:
    p = provisioner("kubernetes")
    config = InstanceConfiguration()
    p.add_toil_service(config, "leader")
    leader = units_of(config)["toil-leader.service"]
    assert "--entrypoint=sleep" in leader and "infinity" in leader
    assert "mesos" not in leader.replace("/var/lib/mesos", "")
    with pytest.raises(ValueError, match="addKubernetesWorker"):
        p.add_toil_service(InstanceConfiguration(), "worker")


@pytest.mark.parametrize(
    ("cluster_type", "role", "kwargs", "message"),
    [
        ("mesos", "master", {}, "unknown role 'master'"),
        ("mesos", "worker", {"_leaderPrivateIP": None}, "leader's private IP"),
        ("mesos", "leader", {"keyPath": "relative/key"}, "absolute"),
        ("mesos", "leader", {"keyPath": "/key; rm -rf /"}, "absolute path without spaces"),
    ],
)
def test_add_toil_service_errors(
    cluster_type: str, role: str, kwargs: dict[str, Any], message: str, provisioner: Any
) -> None:
    p = provisioner(cluster_type)
    if "_leaderPrivateIP" in kwargs:
        p._leaderPrivateIP = kwargs.pop("_leaderPrivateIP")
    with pytest.raises(ValueError, match=message.replace("(", r"\(")):
        p.add_toil_service(InstanceConfiguration(), role, **kwargs)


def test_kubernetes_values(provisioner: Any) -> None:
    p = provisioner("kubernetes")
    values = p.getKubernetesValues()
    assert values["ARCHITECTURE"] == "amd64"
    assert values["CLUSTER_NAME"] == "demo"
    assert values["CLOUD_PROVIDER_SPEC"] == ""
    assert values["KUBERNETES_VERSION"].startswith("v1.")
    for key in ("CNI_VERSION", "CRICTL_VERSION", "CNI_DIR", "DOWNLOAD_DIR", "SETUP_STATE_DIR"):
        assert values[key]
    for key in ("FLANNEL_VERSION", "RUBBER_STAMP_VERSION", "AUTOSCALER_VERSION"):
        assert values[key]
    assert p.getKubernetesValues("arm64")["ARCHITECTURE"] == "arm64"
    p.cloudProvider = "aws"
    assert p.getKubernetesValues()["CLOUD_PROVIDER_SPEC"] == "cloud-provider: aws"


def test_kubernetes_services(provisioner: Any) -> None:
    config = InstanceConfiguration()
    provisioner("kubernetes").addKubernetesServices(config, "arm64")
    units, files = units_of(config), files_of(config)
    assert set(units) == {"kubelet.service", "install-kubernetes.service"}
    assert "ExecStart=/opt/bin/kubelet" in units["kubelet.service"]
    assert "RequiredBy=kubelet.service" in units["install-kubernetes.service"]
    install = files["/home/core/install-kubernetes.sh"]
    assert "linux-arm64" in install and "/bin/linux/arm64/" in install and "amd64" not in install
    assert "$KUBELET_KUBEADM_ARGS" in files["/etc/systemd/system/kubelet.service.d/10-kubeadm.conf"]


def test_kubernetes_leader(provisioner: Any) -> None:
    p = provisioner("kubernetes", cloudProvider="aws")
    config = InstanceConfiguration()
    p.addKubernetesLeader(config)
    files, units = files_of(config), units_of(config)
    assert set(units) == {"create-kubernetes-cluster.service", "cleanup-nodes.service"}
    create = files["/home/core/create-kubernetes-cluster.sh"]
    assert "kubeadm init --config /home/core/kubernetes-leader.yml" in create
    assert "echo set up the autoscaler for demo" in create  # getKubernetesAutoscalerSetupCommands
    for key in ("JOIN_TOKEN=", "JOIN_CERT_HASH=sha256:", "JOIN_ENDPOINT="):
        assert key in create
    init, cluster, kubelet = yaml.safe_load_all(files["/home/core/kubernetes-leader.yml"])
    assert init["kind"] == "InitConfiguration"
    assert init["nodeRegistration"]["kubeletExtraArgs"]["cloud-provider"] == "aws"
    assert cluster["clusterName"] == "demo"
    assert kubelet["serverTLSBootstrap"] is True
    scheduler = yaml.safe_load(files["/home/core/scheduler-config.yml"])
    score = scheduler["profiles"][0]["plugins"]["score"]
    assert score["enabled"][0]["name"] == "NodeResourcesMostAllocated"


@pytest.mark.parametrize("preemptible", [False, True])
def test_kubernetes_worker_joins_with_auth_vars(preemptible: bool, provisioner: Any) -> None:
    config = InstanceConfiguration()
    provisioner("kubernetes").addKubernetesWorker(config, AUTH, preemptible=preemptible)
    files = files_of(config)
    join, kubelet = yaml.safe_load_all(files["/home/core/kubernetes-worker.yml"])
    assert join["kind"] == "JoinConfiguration"
    token = join["discovery"]["bootstrapToken"]
    assert token["token"] == AUTH["JOIN_TOKEN"]
    assert token["apiServerEndpoint"] == AUTH["JOIN_ENDPOINT"]
    assert token["caCertHashes"] == [AUTH["JOIN_CERT_HASH"]]
    assert (
        f'kubeadm join "{AUTH["JOIN_ENDPOINT"]}"' in files["/home/core/join-kubernetes-cluster.sh"]
    )
    extra = join["nodeRegistration"]["kubeletExtraArgs"]
    if preemptible:
        assert extra["node-labels"] == "eks.amazonaws.com/capacityType=SPOT"
    else:
        assert "node-labels" not in extra
        assert "SPOT" not in files["/home/core/kubernetes-worker.yml"]
    assert kubelet["cgroupDriver"] == "systemd"
    # Alone, the config has no install-kubernetes.service, so the join unit does not require it.
    join_unit = units_of(config)["join-kubernetes-cluster.service"]
    assert "Requires=" not in join_unit
    assert "After=install-kubernetes.service docker.service" in join_unit


@pytest.mark.parametrize(
    ("method", "unit", "args"),
    [
        ("addKubernetesWorker", "join-kubernetes-cluster.service", (AUTH,)),
        ("addKubernetesLeader", "create-kubernetes-cluster.service", ()),
    ],
    ids=["worker", "leader"],
)
def test_kubernetes_units_require_the_install_in_the_same_config(
    method: str, unit: str, args: tuple[Any, ...], provisioner: Any
) -> None:
    p = provisioner("kubernetes")
    config = InstanceConfiguration()
    p.addKubernetesServices(config)
    getattr(p, method)(config, *args)
    lines = units_of(config)[unit].splitlines()
    assert "Requires=install-kubernetes.service" in lines
    assert lines.index("Requires=install-kubernetes.service") < lines.index("[Service]")


@pytest.mark.parametrize("missing", ["JOIN_TOKEN", "JOIN_CERT_HASH", "JOIN_ENDPOINT"])
def test_kubernetes_worker_needs_every_join_value(missing: str, provisioner: Any) -> None:
    auth = {k: v for k, v in AUTH.items() if k != missing}
    with pytest.raises(ValueError, match=missing):
        provisioner("kubernetes").addKubernetesWorker(InstanceConfiguration(), auth)


def test_kubernetes_worker_rejects_injection_in_join_values(provisioner: Any) -> None:
    auth = {**AUTH, "JOIN_TOKEN": 'x"\nrm -rf /'}
    with pytest.raises(ValueError, match="JOIN_TOKEN"):
        provisioner("kubernetes").addKubernetesWorker(InstanceConfiguration(), auth)


def test_provisioner_exposes_instance_configuration(provisioner: Any) -> None:
    from shoal.providers.base import AbstractProvisioner

    assert AbstractProvisioner.InstanceConfiguration is InstanceConfiguration
    assert isinstance(provisioner("mesos").getBaseInstanceConfiguration(), InstanceConfiguration)


# -- differential: same files and units as Toil 9.6 --------------------------

TOIL_PYTHON = Path(__file__).resolve().parents[2] / "bench/.toil-venv/bin/python"
# Run in Toil's own virtualenv (never imported here): per method, the files (path, mode)
# and units (name, enabled) Toil's AbstractProvisioner adds.
TOIL_LAYOUT_SCRIPT = """
import json
from toil.provisioners.abstractProvisioner import AbstractProvisioner

class P(AbstractProvisioner):
    def supportedClusterTypes(self): return {"mesos", "kubernetes"}
    def createClusterSettings(self): pass
    def readClusterSettings(self): pass
    def launchCluster(self, *a, **k): pass
    def addNodes(self, *a, **k): pass
    def terminateNodes(self, *a): pass
    def getLeader(self): pass
    def getProvisionedWorkers(self, *a, **k): pass
    def getNodeShape(self, *a, **k): pass
    def destroyCluster(self): pass
    def getKubernetesAutoscalerSetupCommands(self, values): return ""

AUTH = %r
out = {}
for cluster_type in ("mesos", "kubernetes"):
    p = P(clusterName="demo", clusterType=cluster_type)
    p._leaderPrivateIP = "10.0.0.1"
    steps = {
        "base": lambda c: None,
        "services": lambda c: p.addKubernetesServices(c),
        "leader": lambda c: p.addKubernetesLeader(c),
        "worker": lambda c: p.addKubernetesWorker(c, AUTH, True),
        "toil-leader": lambda c: p.add_toil_service(c, "leader"),
    }
    if cluster_type == "mesos":
        steps["toil-worker"] = lambda c: p.add_toil_service(c, "worker", "/k", True)
    for name, step in steps.items():
        c = p.getBaseInstanceConfiguration() if name == "base" else p.InstanceConfiguration()
        step(c)
        d = json.loads(c.toIgnitionConfig())
        out[cluster_type + ":" + name] = {
            "files": sorted([f["path"], f["mode"]] for f in d["storage"]["files"]),
            "units": sorted([u["name"], u["enabled"]] for u in d["systemd"]["units"]),
        }
print(json.dumps(out))
"""


# What each step of the Toil script builds, built by ours.
LAYOUT_STEPS = {
    "base": base,
    "services": only("addKubernetesServices"),
    "leader": only("addKubernetesLeader"),
    "worker": only("addKubernetesWorker", AUTH, True),
    "toil-leader": only("add_toil_service", "leader"),
    "toil-worker": only("add_toil_service", "worker", "/k", True),
}


@pytest.mark.toil
@pytest.mark.skipif(not TOIL_PYTHON.exists(), reason="Toil oracle venv missing (make toil)")
def test_same_files_and_units_as_toil(provisioner: Any) -> None:
    """Each method creates the files (path, mode) and units (name, enabled) Toil's does.

    One documented difference: the Flatcar update settings go to /etc/flatcar/update.conf
    (Flatcar's documented path) rather than the legacy /etc/coreos/update.conf.
    """
    result = subprocess.run(
        [str(TOIL_PYTHON), "-c", TOIL_LAYOUT_SCRIPT % (AUTH,)],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert result.returncode == 0, result.stderr
    toil = json.loads(result.stdout.strip().splitlines()[-1])
    assert len(toil) == 11  # 6 steps for mesos, 5 for kubernetes (no Toil worker service)
    for key, expected in toil.items():
        cluster_type, name = key.split(":")
        config = LAYOUT_STEPS[name](provisioner(cluster_type))
        doc = parsed(config)
        ours = {
            "files": sorted(
                [f["path"].replace("/etc/flatcar/", "/etc/coreos/"), f["mode"]]
                for f in doc["storage"]["files"]
            ),
            "units": sorted([u["name"], u["enabled"]] for u in doc["systemd"]["units"]),
        }
        assert ours == expected, key
