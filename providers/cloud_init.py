"""cloud-init user data: an ``InstanceConfiguration`` as ``#cloud-config`` for a stock image.

``workers.bootstrap: cloud-init`` boots workers (and the leader ``launchCluster`` makes) from a
stock Debian 12 or Ubuntu 24.04 image instead of Flatcar. ``WorkerBootstrap`` builds the same
``InstanceConfiguration`` for both dialects, from the same values (the munge key, the
controller, the registration, the Kubernetes join values...); only its rendering differs:
``toIgnitionConfig`` or ``toCloudConfig`` (this module). What a stock image lacks, each
``add...`` method names as Debian packages (``InstanceConfiguration.addPackages``): munge and
slurmd for a Slurm worker, Docker and kubeadm's tools for Kubernetes, Docker for Toil, mdadm
for the scratch volumes, and Debian's node exporter in place of Flatcar's container.

On the node, in cloud-init's order:

1. ``write_files`` (init stage) writes every file of the config with its mode, and every
   unit into ``/etc/systemd/system``, where it overrides a package's unit of the same name
   (Debian's ``munge.service`` and ``slurmd.service``);
2. ``packages`` (final stage, after ``package_update``) installs the packages; those the
   image has already are left as they are;
3. ``runcmd`` runs ``start-units.sh`` (template ``cloudinit/start-units.sh``): it checks
   that the programs the units run are there (``settings.slurmd``, ``settings.munged``, ...),
   naming any that is missing, then enables and (re)starts the config's enabled units.

The munge key travels as on Flatcar: ``/etc/shoal/munge.key`` (root, 0400), which the
``munge.service`` unit installs as ``/etc/munge/munge.key`` (owner munge, 0400) before
munged starts. The scripts keep Flatcar's paths (``/home/core/...``), so one set of units
serves both images. ``cloud-init schema`` validates the output in the tests, ``shellcheck``
its scripts.
"""

from __future__ import annotations

import base64
import shlex
from typing import TYPE_CHECKING, Any
from urllib.parse import unquote_to_bytes

import yaml
from shoal.providers import ignition

if TYPE_CHECKING:
    from shoal.providers.instance_setup import InstanceConfiguration

__all__ = ["START_UNITS_PATH", "UNIT_DIR", "cloud_config", "file_contents"]

#: Where the units go: the administrator's unit folder, ahead of the packages' own units.
UNIT_DIR = "/etc/systemd/system"
#: The script ``runcmd`` runs once the packages are in.
START_UNITS_PATH = "/home/core/start-units.sh"


def file_contents(entry: dict[str, Any]) -> bytes:
    """The bytes of an ``InstanceConfiguration`` file entry (its Ignition ``data:`` URL)."""
    source: str = entry["contents"]["source"]
    if not source.startswith("data:,"):
        raise ValueError(f"file {entry['path']}: contents are not an inline data URL")
    return unquote_to_bytes(source[len("data:,") :])


class _Dumper(yaml.SafeDumper):
    """Writes a multi-line string as a literal block (``|``), so a script reads as itself."""


def _text(dumper: yaml.SafeDumper, value: str) -> yaml.ScalarNode:
    style = "|" if "\n" in value else None
    return dumper.represent_scalar("tag:yaml.org,2002:str", value, style=style)


_Dumper.add_representer(str, _text)


def _write(path: str, contents: bytes, mode: int, append: bool = False) -> dict[str, Any]:
    """A ``write_files`` item: text as it is, anything else (the munge key) base64."""
    item: dict[str, Any] = {"path": path, "owner": "root:root", "permissions": f"{mode:04o}"}
    try:
        text: str | None = contents.decode("utf-8")
    except UnicodeDecodeError:
        text = None
    if text is not None and all(c.isprintable() or c in "\n\t" for c in text):
        item["content"] = text
    else:
        item["encoding"] = "b64"
        item["content"] = base64.b64encode(contents).decode("ascii")
    if append:
        item["append"] = True
    return item


def cloud_config(config: InstanceConfiguration) -> str:
    """``config`` as ``#cloud-config`` user data (see the module's docstring)."""
    files = []
    for entry in config.files:
        if entry["filesystem"] != "root":
            raise ValueError(
                f"file {entry['path']}: cloud-init writes to the root filesystem only, "
                f"not {entry['filesystem']!r}"
            )
        files.append(_write(entry["path"], file_contents(entry), entry["mode"], entry["append"]))
    for unit in config.units:
        files.append(_write(f"{UNIT_DIR}/{unit['name']}", unit["contents"].encode(), 0o644))
    enabled = [unit["name"] for unit in config.units if unit["enabled"]]
    start = ignition.render(
        "cloudinit/start-units.sh",
        {
            "PROGRAMS": " ".join(map(shlex.quote, config.programs)),
            "UNITS": " ".join(map(shlex.quote, enabled)),
        },
    )
    files.append(_write(START_UNITS_PATH, start.encode(), 0o755))
    document: dict[str, Any] = {
        "package_update": bool(config.packages),
        "packages": list(config.packages),
        "write_files": files,
        "runcmd": [["/usr/bin/bash", START_UNITS_PATH]],
    }
    if not config.packages:
        del document["packages"]
    if config.sshPublicKeys:
        document["ssh_authorized_keys"] = list(config.sshPublicKeys)
    body = yaml.dump(
        document, Dumper=_Dumper, sort_keys=False, default_flow_style=False, width=1 << 16
    )
    return "#cloud-config\n" + body
