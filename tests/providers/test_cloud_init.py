"""Workers on a stock image (``workers.bootstrap: cloud-init``): the ``#cloud-config`` user data
passes ``cloud-init schema`` (Debian's cloud-init) and its scripts pass ``shellcheck``; it holds
the same files and units as the Ignition config built from the same settings, so the Slurm
start script the Ignition tests run is the one a Debian worker runs; it installs what those
units need; its start script checks the programs and starts the units; and an AWS worker
launched from an image looked up by name and owner boots from it (a dynamic Slurm node: no
name tag, so the launch leaves the metadata options alone).

``cloud-init`` is never installed here (it would run at this host's next boot):
``make tools`` unpacks Debian's package into ``$SHOAL_TOOLS/cloud-init`` (default
/opt/shoal-tools), and the schema check runs from there with Debian's Python. The tests that
need a tool skip, naming it, when it is absent.
"""

from __future__ import annotations

import base64
import os
import shutil
import stat
import subprocess
from pathlib import Path
from typing import Any

import configs
import pytest
import yaml
from aiobotocore.session import get_session
from shoal.providers.aws import AWSProvisioner
from shoal.providers.cloud_init import START_UNITS_PATH, UNIT_DIR
from shoal.providers.instance_setup import MUNGE_KEY_PATH, InstanceConfiguration
from systemd_verify import file_bytes, parsed, units_of
from test_worker_join import LEADER, MUNGE_KEY, Secrets, make, secrets, worker_config, workers

__all__ = ["make", "secrets"]  # fixtures, used by name

TOOLS = Path(os.environ.get("SHOAL_TOOLS", "/opt/shoal-tools"))
UNPACKED = TOOLS / "cloud-init"
DEBIAN_PYTHON = "/usr/bin/python3"  # the unpacked cloud-init runs on Debian's Python


def cloud_init_command() -> list[str] | None:
    """How to run cloud-init here: installed, or unpacked by ``make tools``; None: neither."""
    installed = shutil.which("cloud-init")
    if installed:
        return [installed]
    if (UNPACKED / "usr/bin/cloud-init").exists() and os.access(DEBIAN_PYTHON, os.X_OK):
        return [DEBIAN_PYTHON, str(UNPACKED / "usr/bin/cloud-init")]
    return None


needs_cloud_init = pytest.mark.skipif(
    cloud_init_command() is None, reason="cloud-init not found (make tools unpacks it)"
)
needs_shellcheck = pytest.mark.skipif(
    shutil.which("shellcheck") is None, reason="shellcheck not found (make tools)"
)


def schema_check(tmp_path: Path, user_data: str) -> subprocess.CompletedProcess[str]:
    command = cloud_init_command()
    assert command is not None
    path = tmp_path / "user-data"
    path.write_text(user_data)
    env = {"PATH": os.environ["PATH"], "HOME": str(tmp_path)}
    if command[0] == DEBIAN_PYTHON:
        env["PYTHONPATH"] = str(UNPACKED / "usr/lib/python3/dist-packages")
    return subprocess.run(
        [*command, "schema", "--config-file", str(path)],
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )


def parse(user_data: str) -> dict[str, Any]:
    assert user_data.startswith("#cloud-config\n")
    doc = yaml.safe_load(user_data)
    assert isinstance(doc, dict)
    return doc


def written(doc: dict[str, Any]) -> dict[str, tuple[bytes, str]]:
    """write_files as {path: (contents, permissions)}."""
    out = {}
    for item in doc["write_files"]:
        assert item["owner"] == "root:root"
        if item.get("encoding") == "b64":
            data = base64.b64decode(item["content"])
        else:
            data = item["content"].encode()
        out[item["path"]] = (data, item["permissions"])
    return out


SLURM_SECTIONS = {
    "named-tag": {},
    "named-hostname": {"node_name": "hostname"},
    "dynamic": {"registration": "dynamic", "features": ["gpu"]},
}
VARIANTS = [("slurm", name) for name in SLURM_SECTIONS] + [("kubernetes", ""), ("mesos", "")]


async def both_configs(
    make: Any, secrets: Secrets, cluster_type: str, variant: str
) -> tuple[InstanceConfiguration, InstanceConfiguration, Any]:
    """The worker config built for Ignition and for cloud-init from the same settings, and
    the cloud-init provisioner."""
    built = []
    for bootstrap in ("ignition", "cloud-init"):
        p = make(cluster_type)
        section = SLURM_SECTIONS.get(variant, {}) if cluster_type == "slurm" else {}
        settings = workers(secrets, cluster_type, **section)
        await p.prepare_workers(settings.model_copy(update={"bootstrap": bootstrap}))
        built.append((worker_config(p, preemptible=True), p))
    (ignition_config, _), (cloud_config, p) = built
    return ignition_config, cloud_config, p


@pytest.mark.parametrize(("cluster_type", "variant"), VARIANTS)
async def test_same_files_and_units_as_ignition(
    cluster_type: str, variant: str, make: Any, secrets: Secrets
) -> None:
    """One source: every file and unit of the Ignition worker, byte for byte, less Flatcar's
    own (its update settings, the node exporter container: Debian's package instead)."""
    ign, config, p = await both_configs(make, secrets, cluster_type, variant)
    doc = parse(p.bootstrap.user_data(config))
    files = written(doc)
    want_files = {
        entry["path"]: file_bytes(entry)
        for entry in parsed(ign)["storage"]["files"]
        if entry["path"] != "/etc/flatcar/update.conf"
    }
    want_units = {
        name: text for name, text in units_of(ign).items() if name != "node-exporter.service"
    }
    assert {path: files[path][0] for path in want_files} == want_files
    assert {n: files[f"{UNIT_DIR}/{n}"][0].decode() for n in want_units} == want_units
    assert set(files) == set(want_files) | {f"{UNIT_DIR}/{n}" for n in want_units} | {
        START_UNITS_PATH
    }
    assert "prometheus-node-exporter" in doc["packages"]
    if cluster_type == "slurm":
        assert files[MUNGE_KEY_PATH] == (MUNGE_KEY, "0400")
        assert {"munge", "slurmd"} <= set(doc["packages"])
        assert doc["runcmd"] == [["/usr/bin/bash", START_UNITS_PATH]]
    else:
        assert "docker.io" in doc["packages"]


@pytest.fixture(params=VARIANTS, ids=[f"{c}-{v}".rstrip("-") for c, v in VARIANTS])
async def user_data(request: pytest.FixtureRequest, make: Any, secrets: Secrets) -> str:
    """A worker's #cloud-config, for each variant."""
    _, config, p = await both_configs(make, secrets, *request.param)
    return str(p.bootstrap.user_data(config))


@needs_cloud_init
def test_user_data_passes_cloud_init_schema(user_data: str, tmp_path: Path) -> None:
    done = schema_check(tmp_path, user_data)
    assert done.returncode == 0, done.stdout + done.stderr
    assert "Valid cloud-config" in done.stdout


@needs_cloud_init
def test_the_schema_check_finds_a_wrong_document(tmp_path: Path) -> None:
    """The check above can fail: a mistyped module value is reported."""
    done = schema_check(tmp_path, "#cloud-config\npackages: munge\nruncmd: 5\n")
    assert done.returncode != 0
    assert "runcmd" in done.stdout + done.stderr


@needs_shellcheck
def test_scripts_pass_shellcheck(user_data: str, tmp_path: Path) -> None:
    files = written(parse(user_data))
    scripts = {path: data for path, (data, _) in files.items() if path.endswith(".sh")}
    assert START_UNITS_PATH in scripts
    for path, data in scripts.items():
        local = tmp_path / Path(path).name
        local.write_bytes(data)
        done = subprocess.run(
            ["shellcheck", "--shell=bash", str(local)],
            capture_output=True,
            text=True,
            timeout=60,
        )
        assert done.returncode == 0, f"{path}:\n{done.stdout}"


# -- the start script, run ------------------------------------------------------------------


def start_units(tmp_path: Path, config: InstanceConfiguration) -> tuple[int, str, list[str]]:
    """Run the user data's start-units.sh with a systemctl that records its arguments."""
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir(exist_ok=True)
    log = tmp_path / "systemctl.log"
    systemctl = bin_dir / "systemctl"
    systemctl.write_text(f'#!/usr/bin/env bash\necho "$*" >> {log}\n')
    systemctl.chmod(0o755)
    script = tmp_path / "start-units.sh"
    script.write_bytes(written(parse(config.toCloudConfig()))[START_UNITS_PATH][0])
    done = subprocess.run(
        ["bash", str(script)],
        env={"PATH": f"{bin_dir}:{os.environ['PATH']}"},
        capture_output=True,
        text=True,
        timeout=60,
    )
    calls = log.read_text().splitlines() if log.exists() else []
    return done.returncode, done.stdout + done.stderr, calls


def program(tmp_path: Path, name: str) -> str:
    path = tmp_path / name
    path.write_text("#!/bin/sh\n")
    path.chmod(path.stat().st_mode | stat.S_IXUSR)
    return str(path)


async def test_start_script_checks_the_programs_then_starts_the_units(
    make: Any, secrets: Secrets, tmp_path: Path
) -> None:
    p = make("slurm")
    section = {"slurmd": program(tmp_path, "slurmd"), "munged": program(tmp_path, "munged")}
    settings = workers(secrets, "slurm", **section).model_copy(update={"bootstrap": "cloud-init"})
    await p.prepare_workers(settings)
    config = worker_config(p)
    enabled = " ".join(u["name"] for u in config.units if u["enabled"])
    assert "munge.service slurmd.service" in enabled
    status, out, calls = start_units(tmp_path, config)
    assert status == 0, out
    assert calls == ["daemon-reload", f"enable {enabled}", f"restart {enabled}"]


async def test_start_script_names_a_missing_program_and_starts_nothing(
    make: Any, secrets: Secrets, tmp_path: Path
) -> None:
    p = make("slurm")
    section = {"slurmd": str(tmp_path / "no-slurmd"), "munged": program(tmp_path, "munged")}
    settings = workers(secrets, "slurm", **section).model_copy(update={"bootstrap": "cloud-init"})
    await p.prepare_workers(settings)
    status, out, calls = start_units(tmp_path, worker_config(p))
    assert status == 1
    assert f"{tmp_path}/no-slurmd is missing" in out
    assert calls == []


def test_a_file_on_another_filesystem_is_refused() -> None:
    config = InstanceConfiguration()
    config.addFile("/x", filesystem="oem", contents="x")
    with pytest.raises(ValueError, match="root filesystem only"):
        config.toCloudConfig()


# -- an AWS worker from an image looked up by name ----------------------------------------


async def test_aws_worker_from_a_named_image_boots_from_cloud_config(
    moto_url: str, tmp_path: Path
) -> None:
    from shoal.daemon.config import parse_config

    (tmp_path / "munge.key").write_bytes(MUNGE_KEY)
    session = get_session()
    async with session.create_client(
        "ec2",  # type: ignore[call-overload]
        region_name="us-east-1",
        endpoint_url=moto_url,
    ) as ec2:
        image = await ec2.register_image(
            Name="debian-12-amd64-20250101-1", RootDeviceName="/dev/xvda"
        )
        owner = (await ec2.describe_images(ImageIds=[image["ImageId"]]))["Images"][0]["OwnerId"]
        provider = configs.aws_provider(
            moto_url,
            cluster_type="slurm",
            zone="us-east-1a",
            image_id=None,
            image_name="debian-12-amd64-*",
            image_owner=owner,
            price_refresh=None,
        )
        slurm = {"munge_key_file": str(tmp_path / "munge.key"), "registration": "dynamic"}
        workers = {"bootstrap": "cloud-init", "leader": {"address": LEADER}, "slurm": slurm}
        config = parse_config(
            configs.config(
                cluster_name="demo",
                provider=provider,
                node_types=[{"type": "c5.xlarge", "max": 5}],
                workers=workers,
            )
        )
        async with AWSProvisioner.from_config(config) as aws:
            assert await aws.addNodes(["c5.xlarge"], 1, False, requestId="ci-1") == 1
            (node,) = await aws.getProvisionedWorkers()
        described = await ec2.describe_instances(InstanceIds=[node.name])
        attr = await ec2.describe_instance_attribute(InstanceId=node.name, Attribute="userData")
    instance = described["Reservations"][0]["Instances"][0]
    assert instance["ImageId"] == image["ImageId"]
    files = written(parse(base64.b64decode(attr["UserData"]["Value"]).decode()))
    script = files["/home/core/start-slurmd.sh"][0].decode()
    assert f"conf_server={LEADER}\n" in script
    assert "dynamic_conf=Feature=shoal,c5.xlarge\n" in script
    # a dynamic node needs no name tag: the launch leaves the metadata options alone
    assert instance.get("MetadataOptions", {}).get("InstanceMetadataTags") in (None, "disabled")


async def test_an_external_mode_worker_registers_as_shoal_slurm_conf_declares_its_type(
    moto_url: str, tmp_path: Path
) -> None:
    """Through the daemon's own wiring (external mode, AWS on moto): the dynamic node a pass
    launches starts ``slurmd -Z --conf`` with its type's usable CPUs and memory and its
    Weight by price, exactly as ``shoal slurm-conf`` declares the type, and with its type's
    features (Slurm name, capacity type, ``slurm.features``), not only the workers' own."""
    from shoal.daemon.config import parse_config
    from shoal.daemon.demand import DemandUpdate
    from shoal.daemon.service import build_controller, build_provider
    from shoal.daemon.slurm.conf import node_lines
    from shoal.runtime.testing import FakeClock
    from shoal.scaler.model import Demand, QueuedJobs
    from shoal.scaler.shape import Shape

    (tmp_path / "munge.key").write_bytes(MUNGE_KEY)
    slurm = {"munge_key_file": str(tmp_path / "munge.key"), "registration": "dynamic"}
    config = parse_config(
        configs.config(
            cluster_name="demo",
            provider=configs.aws_provider(
                moto_url, cluster_type="slurm", zone="us-east-1a", price_refresh=None
            ),
            node_types=[{"type": "c5.xlarge", "max": 5}, {"type": "m5.large", "max": 5}],
            workers={
                "bootstrap": "cloud-init",
                "leader": {"address": LEADER},
                "slurm": {**slurm, "features": ["img"]},
            },
            demand={"api": False, "slurm": True},
            slurm={"mode": "external", "features": {"c5.xlarge": ["fast"]}},
        )
    )
    clock = FakeClock()
    provider = build_provider(config, clock)
    assert isinstance(provider, AWSProvisioner)
    try:
        controller = await clock.run_until(build_controller(config, provider, clock))
        line = {ln.node_type.name: ln for ln in node_lines(config, controller.policy)}
        assert line["c5.xlarge"].weight != line["m5.large"].weight  # priced apart
        await clock.run_until(controller.reconcile())
        big = Shape(3600, 4 * 2**30, 4, 2**30, False)  # fits c5.xlarge only
        controller.set_demand(DemandUpdate(Demand(queued=(QueuedJobs(big, 1),))))
        assert (await clock.run_until(controller.run_pass())).launched == 1
        (node,) = await provider.getProvisionedWorkers()
        async with get_session().create_client(
            "ec2",  # type: ignore[call-overload]
            region_name="us-east-1",
            endpoint_url=moto_url,
        ) as ec2:
            attr = await ec2.describe_instance_attribute(InstanceId=node.name, Attribute="userData")
    finally:
        await provider.close()
    files = written(parse(base64.b64decode(attr["UserData"]["Value"]).decode()))
    script = files["/home/core/start-slurmd.sh"][0].decode()
    c5 = line["c5.xlarge"]
    conf = f"{c5.resources()} Feature=shoal,c5-xlarge,on-demand,fast,img,c5.xlarge"
    assert f"dynamic_conf='{conf}'\n" in script
    # the pricier of the two: Slurm fills m5.large nodes first
    assert (c5.weight, line["m5.large"].weight) == (2, 1)


async def test_an_external_mode_feature_the_config_accepts_launches_on_aws(
    moto_url: str, tmp_path: Path
) -> None:
    """A ``slurm.features`` value the config accepts ("gpu:a100": Slurm takes it in a
    Feature list) either is refused when the config is read or launches: the AWS user data
    now puts the launch's ``shoal:slurm-features`` on slurmd's command line, and a value it
    cannot quote must not turn every launch of the type into an error."""
    from shoal.daemon.config import ConfigError, parse_config
    from shoal.daemon.demand import DemandUpdate
    from shoal.daemon.service import build_controller, build_provider
    from shoal.runtime.testing import FakeClock
    from shoal.scaler.model import Demand, QueuedJobs
    from shoal.scaler.shape import Shape

    (tmp_path / "munge.key").write_bytes(MUNGE_KEY)
    slurm = {"munge_key_file": str(tmp_path / "munge.key"), "registration": "dynamic"}
    raw = configs.config(
        cluster_name="demo",
        provider=configs.aws_provider(
            moto_url, cluster_type="slurm", zone="us-east-1a", price_refresh=None
        ),
        node_types=[{"type": "c5.xlarge", "max": 5}],
        workers={"bootstrap": "cloud-init", "leader": {"address": LEADER}, "slurm": slurm},
        demand={"api": False, "slurm": True},
        slurm={"mode": "external", "features": {"c5.xlarge": ["gpu:a100"]}},
    )
    try:
        config = parse_config(raw)
    except ConfigError:
        return  # refused where the operator sees it: fine
    clock = FakeClock()
    provider = build_provider(config, clock)
    assert isinstance(provider, AWSProvisioner)
    try:
        controller = await clock.run_until(build_controller(config, provider, clock))
        await clock.run_until(controller.reconcile())
        job = Shape(3600, 2**30, 1, 0, False)
        controller.set_demand(DemandUpdate(Demand(queued=(QueuedJobs(job, 1),))))
        result = await clock.run_until(controller.run_pass())
        assert result.launched == 1, result
    finally:
        await provider.close()
