"""Workers that join: ``prepare_workers`` learns the leader and the join values from the
daemon's ``workers`` section, ``addWorkerAgent`` adds the agent of the cluster type, every
worker config is self-contained and passes ``systemd-analyze verify``, and the Slurm start
script, run by bash against the fake IMDSv2, starts slurmd with the right arguments.

Settings are the daemon's own config models (``WorkersConfig``), the contract the provider
reads, not stand-ins.
"""

from __future__ import annotations

import asyncio
import dataclasses
import hashlib
import logging
import os
import re
import stat
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest
from fake_imds import FakeImds
from shoal.daemon.config import WorkersConfig
from shoal.providers.errors import ProviderError
from shoal.providers.instance_setup import MUNGE_KEY_PATH, InstanceConfiguration, WorkerBootstrap
from shoal.providers.workers import TAG_SLURM_FEATURES, TAG_SLURM_NODE, TAG_SLURM_RESOURCES
from systemd_verify import (
    HOST_UNITS,
    assert_units_verify,
    file_bytes,
    files_of,
    needs_systemd_analyze,
    parsed,
    units_of,
)

TOKEN = "abcdef.0123456789abcdef"
CA_HASH = "sha256:" + "ab" * 32
MUNGE_KEY = hashlib.sha512(b"shoal test munge key").digest() * 2  # 128 bytes, like mungekey
LEADER = "10.0.0.7"
TAGGED_LEADER = "10.0.0.1"  # MinimalProvisioner.getLeader's private IP


@dataclasses.dataclass
class Secrets:
    token_file: Path
    munge_key_file: Path


@pytest.fixture
def secrets(tmp_path: Path) -> Secrets:
    token_file = tmp_path / "kubeadm-token"
    token_file.write_text(TOKEN + "\n")
    munge_key_file = tmp_path / "munge.key"
    munge_key_file.write_bytes(MUNGE_KEY)
    return Secrets(token_file, munge_key_file)


def workers(
    secrets: Secrets,
    cluster_type: str,
    leader: dict[str, str] | None = None,
    **section: Any,
) -> WorkersConfig:
    """A validated ``workers`` section for ``cluster_type`` (leader address LEADER unless
    ``leader`` says otherwise); ``section`` adds to the cluster type's own section."""
    data: dict[str, Any] = {"leader": {"address": LEADER} if leader is None else leader}
    if cluster_type == "kubernetes":
        data["kubernetes"] = {
            "token_file": str(secrets.token_file),
            "ca_cert_hash": CA_HASH,
            **section,
        }
    elif cluster_type == "slurm":
        data["slurm"] = {"munge_key_file": str(secrets.munge_key_file), **section}
    return WorkersConfig.model_validate(data)


@pytest.fixture
def make(make_provisioner: Any) -> Any:
    """A provisioner of any cluster type, slurm included; ``imds_ip`` is what its
    readClusterSettings learns about the machine it runs on (None: nothing)."""

    class Provisioner(make_provisioner):  # type: ignore[misc, valid-type]
        supported = {"mesos", "kubernetes", "slurm"}  # noqa: RUF012
        imds_ip: str | None = "10.0.0.9"
        leader_error: ProviderError | None = None

        async def readClusterSettings(self) -> None:
            if self.imds_ip:
                self._leaderPrivateIP = self.imds_ip

        async def getLeader(self) -> Any:
            if self.leader_error is not None:
                raise self.leader_error
            return await super().getLeader()

    def build(cluster_type: str, **attrs: Any) -> Any:
        p = Provisioner(clusterName="demo", clusterType=cluster_type)
        for name, value in attrs.items():
            # the bootstrap's settings, or the provisioner's (its Kubernetes answers)
            setattr(p.bootstrap if hasattr(p.bootstrap, name) else p, name, value)
        return p

    return build


def worker_config(p: Any, preemptible: bool = False, instance_type: str = "c5.xlarge") -> Any:
    config = p.getBaseInstanceConfiguration()
    p.bootstrap.addWorkerAgent(config, preemptible, instance_type)
    return config


# -- prepare_workers -----------------------------------------------------------------------


@pytest.mark.parametrize(
    ("leader", "expected"),
    [
        ({"address": LEADER}, LEADER),
        ({"address": "leader.cluster.internal"}, "leader.cluster.internal"),
        ({"discover": "tag"}, TAGGED_LEADER),
        ({"discover": "imds"}, "10.0.0.9"),
    ],
    ids=["address", "dns-name", "discover-tag", "discover-imds"],
)
async def test_prepare_learns_the_leader_a_mesos_agent_joins(
    leader: dict[str, str], expected: str, make: Any, secrets: Secrets
) -> None:
    p = make("mesos")
    assert not p.bootstrap.workerJoinKnown()
    await p.prepare_workers(workers(secrets, "mesos", leader))
    assert p._leaderPrivateIP == expected
    unit = units_of(worker_config(p, preemptible=True))["toil-worker.service"]
    assert f"--master={expected}:5050" in unit
    assert "--attributes=preemptible:True" in unit


async def test_a_bootstrap_serves_any_host_not_only_a_provisioner(
    secrets: Secrets, tmp_path: Path
) -> None:
    """WorkerBootstrap is composed, not inherited: it needs only a ``BootstrapHost`` (its
    cluster, leader and Kubernetes answers), here a plain object that is no provisioner."""

    class Host:
        clusterName: str | None = "demo"
        clusterType: str | None = "kubernetes"
        _leaderPrivateIP: str | None = None

        def getKubernetesCloudProvider(self) -> str | None:
            return "aws"

        def getKubernetesAutoscalerSetupCommands(self, values: dict[str, str]) -> str:
            return f"echo autoscaler for {values['CLUSTER_NAME']}\n"

        async def getLeader(self) -> Any:
            return dataclasses.make_dataclass("Leader", ["privateIP"])("10.0.0.3")

        async def readClusterSettings(self) -> None:
            raise AssertionError("discover: tag must not read this machine's settings")

    host = Host()
    bootstrap = WorkerBootstrap(host, workers(secrets, "kubernetes", {"discover": "tag"}))
    await bootstrap.prepare_workers()
    assert host._leaderPrivateIP == "10.0.0.3" and bootstrap.prepared
    assert bootstrap.kubernetes_join_vars is not None
    assert bootstrap.kubernetes_join_vars["JOIN_ENDPOINT"] == "10.0.0.3:6443"
    config = bootstrap.getBaseInstanceConfiguration()
    bootstrap.addKubernetesLeader(config)
    assert "echo autoscaler for demo" in files_of(config)["/home/core/create-kubernetes-cluster.sh"]
    assert "cloud-provider: aws" in files_of(config)["/home/core/kubernetes-leader.yml"]


@pytest.mark.parametrize(
    ("section", "leader", "endpoint"),
    [
        ({}, {"address": LEADER}, f"{LEADER}:6443"),
        ({}, {"discover": "tag"}, f"{TAGGED_LEADER}:6443"),
        ({"api_endpoint": "api.k8s.internal:443"}, {"address": LEADER}, "api.k8s.internal:443"),
    ],
    ids=["leader-6443", "tagged-leader-6443", "api-endpoint"],
)
async def test_prepare_reads_the_kubernetes_join_values(
    section: dict[str, Any],
    leader: dict[str, str],
    endpoint: str,
    make: Any,
    secrets: Secrets,
) -> None:
    p = make("kubernetes")
    await p.prepare_workers(workers(secrets, "kubernetes", leader, **section))
    assert p.bootstrap.kubernetes_join_vars == {
        "JOIN_TOKEN": TOKEN,
        "JOIN_CERT_HASH": CA_HASH,
        "JOIN_ENDPOINT": endpoint,
    }
    files = files_of(worker_config(p))
    assert f'kubeadm join "{endpoint}"' in files["/home/core/join-kubernetes-cluster.sh"]
    assert f'token: "{TOKEN}"' in files["/home/core/kubernetes-worker.yml"]


@pytest.mark.parametrize(
    ("section", "conf_server"),
    [({}, LEADER), ({"conf_server": "ctl-1:6817,ctl-2:6817"}, "ctl-1:6817,ctl-2:6817")],
    ids=["leader", "conf-server"],
)
async def test_prepare_reads_the_munge_key_and_controller(
    section: dict[str, Any], conf_server: str, make: Any, secrets: Secrets
) -> None:
    p = make("slurm")
    await p.prepare_workers(workers(secrets, "slurm", **section))
    assert p.bootstrap._munge_key == MUNGE_KEY
    assert p.bootstrap._slurm_conf_server == conf_server
    assert (
        f"conf_server={conf_server}\n" in files_of(worker_config(p))["/home/core/start-slurmd.sh"]
    )


async def test_prepare_uses_the_settings_the_provisioner_was_built_with(
    make: Any, secrets: Secrets
) -> None:
    p = make("mesos", worker_settings=workers(secrets, "mesos"))
    await p.prepare_workers()
    assert p._leaderPrivateIP == LEADER
    assert p.bootstrap._workers_prepared


async def test_without_workers_settings_nothing_is_prepared(make: Any) -> None:
    p = make("kubernetes")
    await p.prepare_workers(None)
    assert not p.bootstrap._workers_prepared and not p.bootstrap.workerJoinKnown()
    with pytest.raises(ValueError, match="cannot join"):
        worker_config(p)


def _garble_token(s: Secrets) -> None:
    s.token_file.write_text("not-a-token-but-a-secret\n")


def _shorten_key(s: Secrets) -> None:
    s.munge_key_file.write_bytes(b"k" * 31)


def _remove_key(s: Secrets) -> None:
    s.munge_key_file.unlink()


PREPARE_ERRORS = {
    # (cluster type, workers data (None: from workers()), change after validation,
    #  provisioner attrs, error code, words the message must hold)
    "k8s-section-missing": (
        "kubernetes",
        {"leader": {"address": LEADER}},
        None,
        {},
        "WorkerJoinIncomplete",
        "workers.kubernetes is needed",
    ),
    "k8s-token-garbled": (
        "kubernetes",
        None,
        _garble_token,
        {},
        "WorkerJoinIncomplete",
        "workers.kubernetes.token_file: the token file does not hold",
    ),
    "slurm-section-missing": (
        "slurm",
        {"leader": {"address": LEADER}},
        None,
        {},
        "WorkerJoinIncomplete",
        "workers.slurm is needed",
    ),
    "slurm-key-short": (
        "slurm",
        None,
        _shorten_key,
        {},
        "WorkerJoinIncomplete",
        "workers.slurm.munge_key_file: the munge key file holds 31 bytes",
    ),
    "slurm-key-gone": (
        "slurm",
        None,
        _remove_key,
        {},
        "WorkerJoinIncomplete",
        "workers.slurm.munge_key_file: cannot read the munge key file: FileNotFoundError",
    ),
    "mesos-no-leader": ("mesos", {}, None, {}, "WorkerJoinIncomplete", "workers.leader is needed"),
    "imds-no-address": (
        "mesos",
        {"leader": {"discover": "imds"}},
        None,
        {"imds_ip": None},
        "LeaderUnknown",
        "discover-imds has no private address",
    ),
    "tag-no-leader": (
        "mesos",
        {"leader": {"discover": "tag"}},
        None,
        {"leader_error": ProviderError("cluster 'demo' has no leader", code="NoLeader")},
        "NoLeader",
        "has no leader",
    ),
}


@pytest.mark.parametrize("case", list(PREPARE_ERRORS))
async def test_prepare_errors_name_the_setting(case: str, make: Any, secrets: Secrets) -> None:
    cluster_type, data, change, attrs, code, words = PREPARE_ERRORS[case]
    settings = (
        workers(secrets, cluster_type) if data is None else WorkersConfig.model_validate(data)
    )
    if change is not None:
        change(secrets)  # the file changed after the config was checked
    p = make(cluster_type, **attrs)
    with pytest.raises(ProviderError) as info:
        await p.prepare_workers(settings)
    assert info.value.code == code
    assert words in str(info.value)
    assert "secret" not in str(info.value)
    assert not p.bootstrap.workerJoinKnown()


async def test_secrets_are_never_logged(
    make: Any, secrets: Secrets, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG)
    k8s, slurm = make("kubernetes"), make("slurm")
    await k8s.prepare_workers(workers(secrets, "kubernetes"))
    await slurm.prepare_workers(workers(secrets, "slurm"))
    worker_config(k8s)
    worker_config(slurm)
    assert any("event=workers_prepared" in r.getMessage() for r in caplog.records)
    logged = "\n".join(r.getMessage() for r in caplog.records)
    assert TOKEN not in logged and TOKEN.split(".")[1] not in logged
    assert MUNGE_KEY.hex()[:16] not in logged
    assert "event=workers_prepared cluster_type=kubernetes leader=10.0.0.7" in logged


# -- the agent of each cluster type --------------------------------------------------------

AGENTS = {
    # case: (cluster type, extra slurm settings, preemptible, the agent unit)
    # (spot workers differ in an agent argument only: test_instance_setup verifies the
    # preemptible mesos-worker and k8s-worker-node)
    "mesos": ("mesos", {}, False, "toil-worker.service"),
    "kubernetes": ("kubernetes", {}, False, "join-kubernetes-cluster.service"),
    "slurm-named-tag": ("slurm", {}, False, "slurmd.service"),
    "slurm-named-hostname": ("slurm", {"node_name": "hostname"}, False, "slurmd.service"),
    "slurm-dynamic": (
        "slurm",
        {"registration": "dynamic", "features": ["shoal", "gpu"]},
        False,
        "slurmd.service",
    ),
}


def _requires(unit_text: str) -> list[str]:
    out: list[str] = []
    for line in unit_text.splitlines():
        if line.startswith(("Requires=", "BindsTo=", "Requisite=")):
            out += line.split("=", 1)[1].split()
    return out


@needs_systemd_analyze
@pytest.mark.parametrize("case", list(AGENTS))
async def test_worker_config_is_self_contained_and_verifies(
    case: str, make: Any, secrets: Secrets, tmp_path: Path
) -> None:
    cluster_type, section, preemptible, agent = AGENTS[case]
    p = make(cluster_type)
    await p.prepare_workers(workers(secrets, cluster_type, **section))
    config = worker_config(p, preemptible)
    assert_units_verify(tmp_path, config)
    units = {u["name"]: u for u in parsed(config)["systemd"]["units"]}
    assert units[agent]["enabled"] is True
    assert HOST_UNITS is not None
    stock = {path.name for path in HOST_UNITS.iterdir()}
    for name, unit in units.items():
        for required in _requires(unit["contents"]):
            assert required in units or required in stock, f"{name} requires {required}"
    assert len(units) == len(parsed(config)["systemd"]["units"])  # no unit added twice


async def test_kubernetes_agent_adds_the_install_services_once(make: Any, secrets: Secrets) -> None:
    p = make("kubernetes")
    await p.prepare_workers(workers(secrets, "kubernetes"))
    fresh = worker_config(p)
    assert {"kubelet.service", "install-kubernetes.service"} <= set(units_of(fresh))
    assert (
        "Requires=install-kubernetes.service"
        in units_of(fresh)["join-kubernetes-cluster.service"].splitlines()
    )
    already = p.getBaseInstanceConfiguration()
    p.addKubernetesServices(already)
    p.bootstrap.addWorkerAgent(already)
    names = [u["name"] for u in parsed(already)["systemd"]["units"]]
    assert sorted(names) == sorted(u["name"] for u in parsed(fresh)["systemd"]["units"])


async def test_slurm_worker_gets_the_key_munge_and_slurmd(make: Any, secrets: Secrets) -> None:
    p = make("slurm")
    await p.prepare_workers(workers(secrets, "slurm", munged="/opt/munge/sbin/munged"))
    doc = parsed(worker_config(p))
    (key,) = [f for f in doc["storage"]["files"] if f["path"] == MUNGE_KEY_PATH]
    assert key["mode"] == 0o400
    assert file_bytes(key) == MUNGE_KEY
    units = units_of(doc)
    munge = units["munge.service"].splitlines()
    assert "ExecStart=/opt/munge/sbin/munged --foreground --key-file=/etc/munge/munge.key" in munge
    assert (
        "ExecStartPre=+/usr/bin/install -D -o munge -g munge -m 0400 "
        f"{MUNGE_KEY_PATH} /etc/munge/munge.key"
    ) in munge
    assert "User=munge" in munge
    slurmd = units["slurmd.service"].splitlines()
    assert "Requires=munge.service" in slurmd
    assert "ExecStart=/usr/bin/bash /home/core/start-slurmd.sh" in slurmd
    assert f"Description=Slurm node daemon, configless from {LEADER}" in slurmd
    script = files_of(doc)["/home/core/start-slurmd.sh"]
    assert "slurmd=/usr/sbin/slurmd\n" in script
    assert f"tags/instance/{TAG_SLURM_NODE}" in script


@pytest.mark.parametrize(
    ("override", "instance_type", "message"),
    [
        ({"conf_server": "ctl; reboot"}, None, "not host"),
        ({"slurmd": "slurmd"}, None, "must be absolute"),
        ({"munged": "/usr/sbin/mun ged"}, None, "must be absolute"),
        ({"features": ("gp u",)}, None, "feature 'gp u'"),
        ({}, "c5.x$(reboot)", "feature 'c5.x$(reboot)'"),
        ({"registration": "both"}, None, "registration 'both'"),
        ({"node_name": "dns"}, None, "node name source 'dns'"),
        ({"tags": {TAG_SLURM_FEATURES: "a,b c"}}, None, "feature 'b c'"),
        ({"tags": {TAG_SLURM_RESOURCES: "CPUs=2'; reboot; '"}}, None, "is not CPUs=<n>"),
    ],
    ids=[
        "conf-server",
        "slurmd",
        "munged",
        "feature",
        "instance-type",
        "registration",
        "name",
        "tagged-feature",
        "tagged-resources",
    ],
)
def test_add_slurm_worker_rejects_unsafe_values(
    override: dict[str, Any], instance_type: str | None, message: str, make: Any
) -> None:
    @dataclasses.dataclass
    class Settings:  # unvalidated values, as a caller other than the daemon might pass
        munge_key_file: Path = Path("/k")
        conf_server: str | None = None
        registration: str = "named"
        node_name: str = "tag"
        features: tuple[str, ...] = ()
        slurmd: str = "/usr/sbin/slurmd"
        munged: str = "/usr/sbin/munged"

    conf_server = override.pop("conf_server", LEADER)
    tags = override.pop("tags", None)
    settings = Settings(**override)
    with pytest.raises(ValueError, match=re.escape(message)):
        make("slurm").bootstrap.addSlurmWorker(
            InstanceConfiguration(), settings, MUNGE_KEY, conf_server, instance_type, tags
        )


# -- the Slurm start script, run ----------------------------------------------------------


@pytest.fixture
async def imds() -> AsyncIterator[FakeImds]:
    fake = FakeImds(
        local_hostname="ip-10-0-0-5.ec2.internal",
        tags={TAG_SLURM_NODE: "aws-c5-3", "Name": "demo"},
        instance_metadata_tags=True,
    )
    await fake.start()
    try:
        yield fake
    finally:
        await fake.stop()


async def run_start_script(
    p: Any, tmp_path: Path, imds_url: str, **env: str
) -> tuple[int, str, list[str] | None]:
    """Write the worker's start-slurmd.sh and run it with bash against ``imds_url``; slurmd is
    a stub that records its arguments. Returns (exit status, output, slurmd's argv)."""
    script = tmp_path / "start-slurmd.sh"
    script.write_text(files_of(worker_config(p))["/home/core/start-slurmd.sh"])
    proc = await asyncio.create_subprocess_exec(
        "bash",
        str(script),
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.STDOUT,
        env={"PATH": os.environ["PATH"], "SHOAL_IMDS_ENDPOINT": imds_url, **env},
    )
    try:
        out, _ = await asyncio.wait_for(proc.communicate(), 60)
    finally:
        if proc.returncode is None:
            proc.kill()
            await proc.wait()
    argv_file = tmp_path / "slurmd.argv"
    argv = argv_file.read_text().splitlines() if argv_file.exists() else None
    assert proc.returncode is not None
    return proc.returncode, out.decode(), argv


def stub_slurmd(tmp_path: Path) -> str:
    stub = tmp_path / "slurmd"
    stub.write_text(f'#!/usr/bin/env bash\nprintf "%s\\n" "$@" > {tmp_path}/slurmd.argv\n')
    stub.chmod(stub.stat().st_mode | stat.S_IXUSR)
    return str(stub)


@pytest.mark.parametrize(
    ("section", "node_args"),
    [
        ({}, ["-N", "aws-c5-3"]),
        ({"node_name": "hostname"}, ["-N", "ip-10-0-0-5"]),
        (
            {"registration": "dynamic", "features": ["shoal", "gpu"]},
            ["-Z", "-N", "i-0123456789abcdef0", "--conf", "Feature=shoal,gpu,c5.xlarge"],
        ),
    ],
    ids=["named-tag", "named-hostname", "dynamic"],
)
async def test_start_script_starts_configless_slurmd(
    section: dict[str, Any],
    node_args: list[str],
    make: Any,
    secrets: Secrets,
    imds: FakeImds,
    tmp_path: Path,
) -> None:
    p = make("slurm")
    settings = workers(secrets, "slurm", slurmd=stub_slurmd(tmp_path), **section)
    await p.prepare_workers(settings)
    status, out, argv = await run_start_script(p, tmp_path, imds.url)
    assert status == 0, out
    assert argv == ["-D", "--conf-server", LEADER, *node_args], out
    if section.get("registration") != "dynamic":
        # IMDSv2: a token first, then every metadata read carries it.
        methods = [(m, path) for m, path, _ in imds.requests]
        assert methods[0] == ("PUT", "/latest/api/token")
        gets = [h for m, _, h in imds.requests if m == "GET"]
        assert gets and all("X-aws-ec2-metadata-token" in h for h in gets)


async def test_start_script_fails_without_the_name_tag(
    make: Any, secrets: Secrets, imds: FakeImds, tmp_path: Path
) -> None:
    """Tags not readable from metadata (the launch did not enable them): 404, slurmd never
    starts, the unit fails and systemd retries it."""
    imds.instance_metadata_tags = False
    p = make("slurm")
    await p.prepare_workers(workers(secrets, "slurm", slurmd=stub_slurmd(tmp_path)))
    status, out, argv = await run_start_script(p, tmp_path, imds.url)
    assert status != 0
    assert argv is None
    assert "404" in out


@pytest.mark.parametrize("listed", ["aws-c5-1,aws-c5-2,aws-c5-3", "aws-c5-[1-3]"])
async def test_start_script_waits_for_a_gang_members_own_name(
    listed: str, make: Any, secrets: Secrets, imds: FakeImds, tmp_path: Path
) -> None:
    """A gang member is launched tagged with the list of the gang's names (a hostlist, as the
    AWS provider writes it) and named after: slurmd starts once its tag holds one name, never
    as the list."""
    imds.tags[TAG_SLURM_NODE] = listed
    imds.retag_after(3, {**imds.tags, TAG_SLURM_NODE: "aws-c5-2"})
    p = make("slurm")
    await p.prepare_workers(workers(secrets, "slurm", slurmd=stub_slurmd(tmp_path)))
    status, out, argv = await run_start_script(p, tmp_path, imds.url, SHOAL_NAME_POLL="0")
    assert status == 0, out
    assert argv == ["-D", "--conf-server", LEADER, "-N", "aws-c5-2"], out
    tag_reads = [path for m, path, _ in imds.requests if "tags/instance" in path]
    assert len(tag_reads) == 4  # three answered with the list, the fourth with its name


async def test_start_script_gives_up_on_a_name_that_stays_a_list(
    make: Any, secrets: Secrets, imds: FakeImds, tmp_path: Path
) -> None:
    """Never named (the daemon has not named it yet): the script fails without starting
    slurmd, and systemd (Restart=on-failure) starts it again later."""
    imds.tags[TAG_SLURM_NODE] = "aws-c5-1,aws-c5-2"
    p = make("slurm")
    await p.prepare_workers(workers(secrets, "slurm", slurmd=stub_slurmd(tmp_path)))
    status, out, argv = await run_start_script(
        p, tmp_path, imds.url, SHOAL_NAME_POLL="0", SHOAL_NAME_TRIES="2"
    )
    assert status == 1 and argv is None
    assert "no Slurm node name of its own" in out
    assert len([path for m, path, _ in imds.requests if "tags/instance" in path]) == 3


async def test_a_dynamic_node_never_registers_more_memory_than_slurmd_measures(
    make: Any, secrets: Secrets, imds: FakeImds, tmp_path: Path
) -> None:
    """The launch's ``shoal:slurm-resources`` RealMemory is the type's nominal memory less
    shoal's overhead; the kernel's MemTotal (what slurmd measures and reports) is below the
    nominal memory (the kernel and firmware keep some of it). Registered above
    what it reports, slurmctld drains the node at once (Low RealMemory, INVALID_REG: see
    tests/slurm/test_slurm_dynamic_resources.py), so no job ever runs there: with a flat
    ``scaler.node_memory_overhead: 200MiB``, every external-mode node of the type. The
    worker must register the lower of the two."""
    stub = tmp_path / "slurmd"
    stub.write_text(
        "#!/usr/bin/env bash\n"
        'if [ "$1" = -C ]; then\n'
        "  echo 'NodeName=ip CPUs=4 Boards=1 SocketsPerBoard=1 CoresPerSocket=2 "
        "ThreadsPerCore=2 RealMemory=7603'\n"
        "  echo 'UpTime=0-00:01:00'\n"
        "  exit 0\n"
        "fi\n"
        f'printf "%s\\n" "$@" > {tmp_path}/slurmd.argv\n'
    )
    stub.chmod(stub.stat().st_mode | stat.S_IXUSR)
    p = make("slurm")
    await p.prepare_workers(workers(secrets, "slurm", slurmd=str(stub), registration="dynamic"))
    config = p.getBaseInstanceConfiguration()
    tags = {TAG_SLURM_RESOURCES: "CPUs=4 RealMemory=7992 Weight=1"}
    p.bootstrap.addWorkerAgent(config, False, "c5.xlarge", tags)
    script = tmp_path / "start-slurmd.sh"
    script.write_text(files_of(config)["/home/core/start-slurmd.sh"])
    proc = await asyncio.create_subprocess_exec(
        "bash",
        str(script),
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.STDOUT,
        env={"PATH": os.environ["PATH"], "SHOAL_IMDS_ENDPOINT": imds.url},
    )
    out, _ = await asyncio.wait_for(proc.communicate(), 60)
    assert proc.returncode == 0, out.decode()
    argv = (tmp_path / "slurmd.argv").read_text().splitlines()
    conf = dict(kv.split("=", 1) for kv in argv[argv.index("--conf") + 1].split())
    assert int(conf["RealMemory"]) <= 7603, argv
    assert (conf["CPUs"], conf["Weight"]) == ("4", "1")
