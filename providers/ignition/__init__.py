"""The files a node boots with, as templates: systemd units, shell scripts, config files.

They are data files of this package, read with ``importlib.resources``:

- ``units/``: systemd units (``toil.service`` serves both ``toil-leader`` and
  ``toil-worker``) and ``units/kubelet.service.d/``, the kubelet's drop-in;
- ``scripts/``: the bash scripts those units run;
- ``config/``: Flatcar's update settings and the kubeadm/scheduler configurations;
- ``cloudinit/``: what only a stock image's ``#cloud-config`` adds (``providers.cloud_init``):
  the script that starts the units once their packages are installed.

Where a template goes on the node (path, mode, unit name) is decided by
``shoal.providers.instance_setup``, which renders them into an Ignition config or, for a
stock image, ``#cloud-config`` (the same files and units in both).

A placeholder is ``@NAME@`` (upper case, digits, underscores): ``string.Template`` with
that pattern, so shell ``$VAR`` and ``${...}``, systemd's ``$$`` and ``%%`` and YAML
braces stay literal, and any other ``@`` (``"${drives[@]}"``) is plain text. A few
placeholders stand for whole lines (``@CUSTOM_INIT@``, ``@AUTOSCALER_SETUP@``): they sit
at the start of the line that follows them, and their value is empty or ends in a newline.
"""

from __future__ import annotations

import string
from collections.abc import Mapping
from functools import cache
from importlib import resources
from importlib.resources.abc import Traversable

__all__ = ["IgnitionTemplate", "load", "render", "template_names"]


class IgnitionTemplate(string.Template):
    """``string.Template`` whose only placeholder form is ``@NAME@``; nothing needs escaping."""

    delimiter = "@"
    flags = 0  # case-sensitive: only upper-case names are placeholders
    pattern = r"""
    @(?:
        (?P<named>[A-Z][A-Z0-9_]*)@
      | (?P<braced>(?!))
      | (?P<escaped>(?!))
      | (?P<invalid>(?!))
    )
    """


def _walk(directory: Traversable, prefix: str) -> list[str]:
    names = []
    for entry in directory.iterdir():
        if entry.is_dir():
            if entry.name != "__pycache__":
                names.extend(_walk(entry, f"{prefix}{entry.name}/"))
        elif not entry.name.endswith((".py", ".pyc")):
            names.append(prefix + entry.name)
    return names


def template_names() -> list[str]:
    """Every template of the package, as ``/``-separated names relative to it, sorted."""
    return sorted(_walk(resources.files(__name__), ""))


@cache
def load(name: str) -> IgnitionTemplate:
    """The template ``name`` (e.g. ``"units/kubelet.service"``)."""
    return IgnitionTemplate(resources.files(__name__).joinpath(name).read_text(encoding="utf-8"))


def render(name: str, values: Mapping[str, object]) -> str:
    """The template ``name`` with each ``@NAME@`` replaced by ``str(values[NAME])``.

    Values are inserted as they are, never scanned for placeholders themselves; a
    placeholder without a value is a ``KeyError`` naming the template and the placeholder.
    """
    try:
        return load(name).substitute(values)
    except KeyError as missing:
        raise KeyError(f"template {name}: placeholder @{missing.args[0]}@ has no value") from None
