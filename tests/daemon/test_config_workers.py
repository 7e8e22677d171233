"""The ``workers`` section: how launched workers join the scheduler. Strict like the rest of
the config, each error names the field; secrets in files are checked, never echoed."""

from __future__ import annotations

import copy
from pathlib import Path
from typing import Any

import configs
import pytest
import yaml
from shoal.daemon.config import (
    ConfigError,
    KubernetesJoinConfig,
    LeaderConfig,
    SlurmWorkerConfig,
    WorkersConfig,
    load_config,
    parse_config,
)
from shoal.daemon.config.preflight import preflight

TOKEN = "abcdef.0123456789abcdef"
CA_HASH = "sha256:" + "0f" * 32


@pytest.fixture
def files(tmp_path: Path) -> dict[str, str]:
    (tmp_path / "token").write_text(TOKEN + "\n")
    (tmp_path / "munge.key").write_bytes(b"\x01" * 128)
    (tmp_path / "bad-token").write_text("sekrit-value-do-not-echo\n")
    (tmp_path / "short.key").write_bytes(b"k" * 8)
    return {name: str(tmp_path / name) for name in ("token", "munge.key", "bad-token", "short.key")}


def config(cluster_type: str, workers: Any, **provider: Any) -> dict[str, Any]:
    aws = {"cluster_type": cluster_type, "zone": "us-east-1a", "image_id": "ami-1"}
    return configs.config(
        cluster_name="c",
        provider=configs.aws_provider(None, price_refresh=None, **(aws | provider)),
        node_types="c5.xlarge",
        workers=workers,  # None: no workers section
    )


def test_no_workers_section_is_valid() -> None:
    parsed = parse_config(config("mesos", None))
    assert parsed.workers is None
    assert parsed.provider.metadata_endpoint == "http://169.254.169.254"


def test_each_cluster_type_with_what_it_needs(files: dict[str, str]) -> None:
    mesos = parse_config(config("mesos", {"leader": {"address": "10.0.0.5"}}))
    assert mesos.workers is not None and mesos.workers.leader is not None
    assert (mesos.workers.leader.address, mesos.workers.leader.discover) == ("10.0.0.5", None)

    k8s = parse_config(
        config(
            "kubernetes",
            {
                "leader": {"discover": "imds"},
                "kubernetes": {"token_file": files["token"], "ca_cert_hash": CA_HASH},
            },
            metadata_endpoint="http://127.0.0.1:9",
        )
    )
    assert k8s.workers is not None and k8s.workers.kubernetes is not None
    assert k8s.workers.kubernetes.api_endpoint is None
    assert k8s.provider.metadata_endpoint == "http://127.0.0.1:9"

    slurm = parse_config(
        config(
            "slurm",
            {
                "slurm": {
                    "munge_key_file": files["munge.key"],
                    "conf_server": "ctl-a:6817,ctl-b",
                    "registration": "dynamic",
                    "features": ["shoal", "x86_64"],
                }
            },
        )
    )
    assert slurm.workers is not None and slurm.workers.slurm is not None
    assert slurm.workers.bootstrap == "ignition"  # Flatcar, unless cloud-init is asked for
    s = slurm.workers.slurm
    assert (s.registration, s.features, s.slurmd) == (
        "dynamic",
        ("shoal", "x86_64"),
        "/usr/sbin/slurmd",
    )


def _k8s(files: dict[str, str], **over: Any) -> dict[str, Any]:
    return {"token_file": files["token"], "ca_cert_hash": CA_HASH, **over}


def _slurm(files: dict[str, str], **over: Any) -> dict[str, Any]:
    return {"munge_key_file": files["munge.key"], **over}


ADDR = {"address": "10.0.0.5"}
# (id, cluster type, workers (a function of the files), field path, words of the message)
ERRORS = [
    ("mesos-no-leader", "mesos", lambda f: {}, "workers.leader", "required"),
    (
        "leader-both",
        "mesos",
        lambda f: {"leader": {"address": "10.0.0.5", "discover": "tag"}},
        "workers.leader.address, workers.leader.discover",
        "one of them",
    ),
    (
        "leader-neither",
        "mesos",
        lambda f: {"leader": {}},
        "workers.leader.address, workers.leader.discover",
        "one of them",
    ),
    (
        "leader-discover",
        "mesos",
        lambda f: {"leader": {"discover": "dns"}},
        "workers.leader.discover",
        "'tag' or 'imds'",
    ),
    (
        "leader-port",
        "mesos",
        lambda f: {"leader": {"address": "10.0.0.5:5050"}},
        "workers.leader.address",
        "without a port",
    ),
    (
        "leader-unknown-key",
        "mesos",
        lambda f: {"leader": {"adress": "10.0.0.5"}},
        "workers.leader.adress",
        "unknown key",
    ),
    (
        "k8s-section-missing",
        "kubernetes",
        lambda f: {"leader": ADDR},
        "workers.kubernetes",
        "required for kubernetes workers",
    ),
    (
        "k8s-token-file-missing",
        "kubernetes",
        lambda f: {"leader": ADDR, "kubernetes": {"ca_cert_hash": CA_HASH}},
        "workers.kubernetes.token_file",
        "required key is missing",
    ),
    (
        "k8s-hash-missing",
        "kubernetes",
        lambda f: {"leader": ADDR, "kubernetes": {"token_file": f["token"]}},
        "workers.kubernetes.ca_cert_hash",
        "required key is missing",
    ),
    (
        "k8s-hash-format",
        "kubernetes",
        lambda f: {"leader": ADDR, "kubernetes": _k8s(f, ca_cert_hash="md5:00")},
        "workers.kubernetes.ca_cert_hash",
        "sha256:<64",
    ),
    (
        "k8s-no-endpoint",
        "kubernetes",
        lambda f: {"kubernetes": _k8s(f)},
        "workers.kubernetes.api_endpoint",
        "required unless workers.leader",
    ),
    (
        "k8s-endpoint-format",
        "kubernetes",
        lambda f: {"kubernetes": _k8s(f, api_endpoint="10.0.0.5")},
        "workers.kubernetes.api_endpoint",
        "host:port",
    ),
    (
        "k8s-endpoint-port",
        "kubernetes",
        lambda f: {"kubernetes": _k8s(f, api_endpoint="10.0.0.5:70000")},
        "workers.kubernetes.api_endpoint",
        "host:port",
    ),
    (
        "slurm-section-missing",
        "slurm",
        lambda f: {"leader": ADDR},
        "workers.slurm",
        "required for slurm workers",
    ),
    (
        "slurm-key-missing",
        "slurm",
        lambda f: {"leader": ADDR, "slurm": {}},
        "workers.slurm.munge_key_file",
        "required key is missing",
    ),
    (
        "slurm-no-controller",
        "slurm",
        lambda f: {"slurm": _slurm(f)},
        "workers.slurm.conf_server",
        "required unless workers.leader",
    ),
    (
        "slurm-controller-format",
        "slurm",
        lambda f: {"slurm": _slurm(f, conf_server="ctl;reboot")},
        "workers.slurm.conf_server",
        "host[:port]",
    ),
    (
        "slurm-registration",
        "slurm",
        lambda f: {"leader": ADDR, "slurm": _slurm(f, registration="cloud")},
        "workers.slurm.registration",
        "'named' or 'dynamic'",
    ),
    (
        "slurm-features-named",
        "slurm",
        lambda f: {"leader": ADDR, "slurm": _slurm(f, features=["gpu"])},
        "workers.slurm.registration, workers.slurm.features",
        "features apply to registration: dynamic",
    ),
    (
        "slurm-name-dynamic",
        "slurm",
        lambda f: {
            "leader": ADDR,
            "slurm": _slurm(f, registration="dynamic", node_name="hostname"),
        },
        "workers.slurm.registration, workers.slurm.node_name",
        "node_name applies to registration: named",
    ),
    (
        "slurm-feature-chars",
        "slurm",
        lambda f: {
            "leader": ADDR,
            "slurm": _slurm(f, registration="dynamic", features=["a b"]),
        },
        "workers.slurm.features",
        "letters, digits",
    ),
    (
        "slurm-relative-slurmd",
        "slurm",
        lambda f: {"leader": ADDR, "slurm": _slurm(f, slurmd="slurmd")},
        "workers.slurm.slurmd",
        "absolute path",
    ),
    (
        "k8s-section-on-mesos",
        "mesos",
        lambda f: {"leader": ADDR, "kubernetes": _k8s(f)},
        "workers.kubernetes",
        "only for provider.cluster_type kubernetes; this cluster is mesos",
    ),
    (
        "slurm-section-on-kubernetes",
        "kubernetes",
        lambda f: {"leader": ADDR, "kubernetes": _k8s(f), "slurm": _slurm(f)},
        "workers.slurm",
        "only for provider.cluster_type slurm",
    ),
    (
        "bootstrap-unknown",
        "mesos",
        lambda f: {"leader": ADDR, "bootstrap": "cloudinit"},
        "workers.bootstrap",
        "'ignition' or 'cloud-init'",
    ),
]


@pytest.mark.parametrize(
    ("cluster_type", "workers", "path", "words"),
    [pytest.param(*case[1:], id=case[0]) for case in ERRORS],
)
def test_errors_name_the_field(
    cluster_type: str, workers: Any, path: str, words: str, files: dict[str, str]
) -> None:
    with pytest.raises(ConfigError) as info:
        parse_config(config(cluster_type, workers(files)))
    issues = {issue.path: str(issue) for issue in info.value.errors}
    assert path in issues, issues
    assert words in issues[path], issues[path]


# The files a workers section names are read by preflight, not while validating:
# (id, cluster_type, workers section, field path, words of the issue)
FILE_PROBLEMS = [
    (
        "k8s-token-not-a-token",
        "kubernetes",
        lambda f: {"leader": ADDR, "kubernetes": _k8s(f, token_file=f["bad-token"])},
        "workers.kubernetes.token_file",
        "does not hold a kubeadm bootstrap token",
    ),
    (
        "k8s-token-file-absent",
        "kubernetes",
        lambda f: {"leader": ADDR, "kubernetes": _k8s(f, token_file="/nonexistent/token")},
        "workers.kubernetes.token_file",
        "existing, readable token file",
    ),
    (
        "slurm-key-short",
        "slurm",
        lambda f: {"leader": ADDR, "slurm": _slurm(f, munge_key_file=f["short.key"])},
        "workers.slurm.munge_key_file",
        "holds 8 bytes",
    ),
    (
        "slurm-key-absent",
        "slurm",
        lambda f: {"leader": ADDR, "slurm": _slurm(f, munge_key_file="/nonexistent/munge.key")},
        "workers.slurm.munge_key_file",
        "existing, readable munge key file",
    ),
]


@pytest.mark.parametrize(
    ("cluster_type", "workers", "path", "words"),
    [pytest.param(*case[1:], id=case[0]) for case in FILE_PROBLEMS],
)
def test_file_problems_are_found_by_preflight_not_validation(
    cluster_type: str, workers: Any, path: str, words: str, files: dict[str, str]
) -> None:
    parsed = parse_config(config(cluster_type, workers(files)))  # valid on any machine
    issues = {issue.path: str(issue) for issue in preflight(parsed)}
    assert list(issues) == [path], issues
    assert words in issues[path], issues[path]
    assert "sekrit" not in issues[path]  # a token file's contents are never echoed


def test_good_secret_files_pass_preflight(files: dict[str, str]) -> None:
    for cluster_type, workers in (
        ("kubernetes", {"leader": ADDR, "kubernetes": _k8s(files)}),
        ("slurm", {"leader": ADDR, "slurm": _slurm(files)}),
    ):
        assert preflight(parse_config(config(cluster_type, workers))) == []


def test_slurm_cluster_type_is_for_aws_only() -> None:
    with pytest.raises(ConfigError) as info:
        parse_config(
            {
                "cluster_name": "c",
                "provider": {"kind": "simulated", "zone": "z", "cluster_type": "slurm"},
                "node_types": "c5.xlarge",
            }
        )
    (issue,) = info.value.errors
    assert issue.path == "provider.cluster_type"


def test_metadata_endpoint_is_a_url() -> None:
    with pytest.raises(ConfigError) as info:
        parse_config(config("mesos", None, metadata_endpoint="169.254.169.254"))
    (issue,) = info.value.errors
    assert issue.path == "provider.metadata_endpoint"


def test_secret_files_are_relative_to_the_config_file(tmp_path: Path) -> None:
    (tmp_path / "secrets").mkdir()
    (tmp_path / "secrets" / "token").write_text(TOKEN)
    data = config(
        "kubernetes",
        {
            "leader": {"discover": "tag"},
            "kubernetes": {"token_file": "secrets/token", "ca_cert_hash": CA_HASH},
        },
    )
    path = tmp_path / "shoal.yaml"
    path.write_text(yaml.safe_dump(data))
    loaded = load_config(path)
    assert loaded.workers is not None and loaded.workers.kubernetes is not None
    assert loaded.workers.kubernetes.token_file == tmp_path / "secrets" / "token"
    assert preflight(loaded) == []
    # The same data from another directory does not find the file.
    (issue,) = preflight(parse_config(copy.deepcopy(data)))
    assert issue.path == "workers.kubernetes.token_file"


def test_the_example_documents_every_workers_key() -> None:
    """config.example.yaml's commented ``workers`` block, uncommented, holds exactly the keys
    of the schema (section by section), so the documentation cannot drift."""
    example = (Path(__file__).resolve().parents[2] / "config.example.yaml").read_text()
    lines = example.splitlines()
    start = next(i for i, line in enumerate(lines) if line.startswith("# workers:"))
    block = []
    for line in lines[start:]:
        if not line.startswith("#"):
            break
        block.append(line[2:] if line.startswith("# ") else line[1:])
    documented = yaml.safe_load("\n".join(block))["workers"]
    assert set(documented) == set(WorkersConfig.model_fields)
    assert set(documented["leader"]) == {"address"}  # discover is shown commented out
    assert "discover: tag" in example
    assert set(LeaderConfig.model_fields) == {"address", "discover"}
    assert set(documented["kubernetes"]) == set(KubernetesJoinConfig.model_fields)
    assert set(documented["slurm"]) == set(SlurmWorkerConfig.model_fields)
