"""The templates of ``shoal.providers.ignition``: each one is some generated file in full, and
no placeholder survives into what a node boots with."""

from __future__ import annotations

import itertools
import json
import re
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import unquote_to_bytes

import pytest
import yaml
from hypothesis import given
from hypothesis import strategies as st
from shoal.providers import ignition
from shoal.providers.cloud_init import START_UNITS_PATH
from shoal.providers.instance_setup import InstanceConfiguration

TEMPLATE_DIR = Path(__file__).resolve().parents[2] / "providers" / "ignition"
AUTH = {
    "JOIN_TOKEN": "abcdef.0123456789abcdef",
    "JOIN_CERT_HASH": "sha256:" + "ab" * 32,
    "JOIN_ENDPOINT": "ip-10-0-0-1.ec2.internal:6443",
}
Build = Callable[[Any], InstanceConfiguration]


@dataclass(frozen=True)
class SlurmSettings:
    """What ``addSlurmWorker`` reads of the daemon's ``workers.slurm`` section."""

    registration: str = "named"
    node_name: str = "tag"
    features: tuple[str, ...] = ()
    slurmd: str = "/usr/sbin/slurmd"
    munged: str = "/usr/sbin/munged"
    munge_key_file: Path = Path("/unused")
    conf_server: str | None = None


SLURM_VARIANTS = {
    "named-tag": SlurmSettings(),
    "named-hostname": SlurmSettings(node_name="hostname"),
    "dynamic": SlurmSettings(registration="dynamic", features=("shoal",)),
}


def _fresh(method: str, *args: Any, **kwargs: Any) -> Build:
    def build(p: Any) -> InstanceConfiguration:
        config = InstanceConfiguration()
        getattr(p.bootstrap, method)(config, *args, **kwargs)
        return config

    return build


def _builds(cluster_type: str) -> dict[str, Build]:
    """Every method of the bootstrap that adds to a config, with arguments that change output."""
    builds: dict[str, Build] = {
        "base": lambda p: p.bootstrap.getBaseInstanceConfiguration(),
        "volumes": _fresh("addVolumesService"),
        "node-exporter": _fresh("addNodeExporterService"),
    }
    roles = {"mesos": ("leader", "worker"), "kubernetes": ("leader",)}.get(cluster_type, ())
    for role, key, preemptible in itertools.product(roles, (None, "/var/lib/key"), (False, True)):
        builds[f"toil-{role}-{key}-{preemptible}"] = _fresh(
            "add_toil_service", role, key, preemptible
        )
    if cluster_type == "slurm":
        for variant, settings in SLURM_VARIANTS.items():
            for instance_type in (None, "c5.xlarge"):
                builds[f"slurm-{variant}-{instance_type}"] = _fresh(
                    "addSlurmWorker", settings, b"k" * 32, "10.0.0.1:6817", instance_type
                )
        return builds
    if cluster_type == "kubernetes":
        for arch in ("amd64", "arm64"):
            builds[f"k8s-services-{arch}"] = _fresh("addKubernetesServices", arch)
        builds["k8s-leader"] = _fresh("addKubernetesLeader")
        for preemptible in (False, True):
            builds[f"k8s-worker-{preemptible}"] = _fresh(
                "addKubernetesWorker", AUTH, preemptible=preemptible
            )
    return builds


# Provisioner settings that select different template values or whole-line placeholders.
SETTINGS: dict[str, dict[str, Any]] = {
    "defaults": {},
    "fuse-and-init": {"enable_fuse": True, "customInitCommand": 'echo "$HOME" 100% ok'},
    "cloud-provider": {"cloudProvider": "aws"},
    "no-autoscaler": {"autoscalerCommands": ""},
}


def _contents(config: InstanceConfiguration) -> list[str]:
    doc = json.loads(config.toIgnitionConfig())
    texts = [u["contents"] for u in doc["systemd"]["units"]]
    for entry in doc["storage"]["files"]:
        texts.append(unquote_to_bytes(entry["contents"]["source"].split(",", 1)[1]).decode())
    # what only a stock image's #cloud-config adds
    cloud = yaml.safe_load(config.toCloudConfig())
    texts += [f["content"] for f in cloud["write_files"] if f["path"] == START_UNITS_PATH]
    return texts


@pytest.fixture
def generated(make_provisioner: Any) -> dict[str, str]:
    """Every unit and file text the bootstrap generates over the matrix, keyed by where from."""
    out: dict[str, str] = {}

    class AnyCluster(make_provisioner):  # type: ignore[misc, valid-type]
        supported = {"mesos", "kubernetes", "slurm"}  # noqa: RUF012

    for cluster_type, (setting, attrs) in itertools.product(
        ("mesos", "kubernetes", "slurm"), SETTINGS.items()
    ):
        p = AnyCluster(clusterName="demo", clusterType=cluster_type)
        p._leaderPrivateIP = "10.0.0.1"
        for name, value in attrs.items():
            # the bootstrap's settings, or the provisioner's (its Kubernetes answers)
            setattr(p.bootstrap if hasattr(p.bootstrap, name) else p, name, value)
        for build_name, build in _builds(cluster_type).items():
            for i, text in enumerate(_contents(build(p))):
                out[f"{cluster_type}/{setting}/{build_name}/{i}"] = text
    return out


def _as_regex(template: ignition.IgnitionTemplate) -> re.Pattern[str]:
    """A regex matching any rendering of ``template``: its text, each placeholder any text
    (the same text wherever one placeholder repeats)."""
    parts, seen, last = [], set(), 0
    for match in template.pattern.finditer(template.template):
        parts.append(re.escape(template.template[last : match.start()]))
        name = match.group("named")
        parts.append(f"(?P={name})" if name in seen else f"(?P<{name}>.*?)")
        seen.add(name)
        last = match.end()
    parts.append(re.escape(template.template[last:]))
    return re.compile("".join(parts), re.DOTALL)


def test_the_package_holds_the_templates_on_disk() -> None:
    on_disk = sorted(
        p.relative_to(TEMPLATE_DIR).as_posix()
        for p in TEMPLATE_DIR.rglob("*")
        if p.is_file() and p.suffix not in (".py", ".pyc")
    )
    assert ignition.template_names() == on_disk
    assert {name.split("/")[0] for name in on_disk} == {"config", "scripts", "units", "cloudinit"}


@pytest.mark.parametrize("name", ignition.template_names())
def test_every_template_is_some_generated_text_in_full(
    name: str, generated: dict[str, str]
) -> None:
    """Each template file is used by some method: one generated unit or file is that template
    with its placeholders filled, from its first byte to its last."""
    template = ignition.load(name)
    assert template.is_valid()
    pattern = _as_regex(template)
    assert any(pattern.fullmatch(text) for text in generated.values()), name


def test_no_placeholder_is_left_in_generated_text(generated: dict[str, str]) -> None:
    names = {n for t in ignition.template_names() for n in ignition.load(t).get_identifiers()}
    assert {"ROLE", "DOWNLOAD_DIR", "AUTOSCALER_SETUP", "CUSTOM_INIT"} <= names
    # Our form, and the forms of string.Template and str.format, for any of our names.
    leftover = re.compile(
        r"@[A-Z][A-Z0-9_]*@|\$\{?(?:" + "|".join(names) + r")\b|\{(?:" + "|".join(names) + r")\}"
    )
    for where, text in generated.items():
        found = leftover.search(text)
        assert found is None, f"{where}: {found.group() if found else ''}"


def test_whole_line_placeholders_add_their_lines(generated: dict[str, str]) -> None:
    leaders = [t for w, t in generated.items() if "/k8s-leader/" in w and "kubeadm init" in t]
    with_autoscaler = [t for t in leaders if "echo set up the autoscaler for demo\n\n#" in t]
    without = [t for t in leaders if "done\n\n# Metrics server" in t]
    assert with_autoscaler and without
    inits = [t for w, t in generated.items() if "/fuse-and-init/toil-" in w and "[Unit]" in t]
    assert inits
    for unit in inits:
        assert '-c "echo \\"$$HOME\\" 100%% ok"\nExecStart=/usr/bin/docker run \\\n' in unit


def test_a_missing_value_names_the_template_and_placeholder() -> None:
    with pytest.raises(KeyError, match=r"units/node-exporter\.service: placeholder @IMAGE@"):
        ignition.render("units/node-exporter.service", {})


@pytest.mark.parametrize(
    "text",
    [
        pytest.param('"${drives[@]}" $scratch ${#drives[@]}', id="shell"),
        pytest.param("($$|/) 100%% \\\\", id="systemd-escapes"),
        pytest.param("{field} {{x}} $field ${FIELD}", id="format-and-dollar"),
        pytest.param("@lower@ @Mixed@ @ @@ user@example.org @1A@", id="other-at-signs"),
    ],
)
def test_only_upper_case_at_names_are_placeholders(text: str) -> None:
    template = ignition.IgnitionTemplate(text)
    assert template.get_identifiers() == []
    assert template.substitute({}) == text


@given(
    before=st.text().filter(lambda s: "@" not in s),
    value=st.text(),
    after=st.text().filter(lambda s: "@" not in s),
)
def test_a_value_goes_in_verbatim_and_is_not_rescanned(before: str, value: str, after: str) -> None:
    template = ignition.IgnitionTemplate(f"{before}@NAME@{after}@OTHER@")
    assert template.substitute({"NAME": value, "OTHER": "o"}) == f"{before}{value}{after}o"
