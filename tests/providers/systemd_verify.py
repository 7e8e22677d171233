"""Check an Ignition config's units with ``systemd-analyze verify`` and its scripts with
``bash -n`` (shared by the instance-setup tests and the AWS user-data tests).

``systemd-analyze verify --root=ROOT`` loads units as a booting system under ROOT would,
and checks each ExecStart/ExecStartPre binary exists and is executable there. ROOT is
built from the Ignition config itself (every ``storage.files`` entry written with its mode,
every unit into /etc/systemd/system), plus stand-ins for what the machine provides and
the config does not create:

- the stock units of /usr/lib/systemd/system (multi-user.target, network-online.target,
  local-fs.target, sysinit.target, ...), copied from this host's systemd; every unit's
  [Install]/After= refers to some of them and verify needs them to build a transaction;
- empty executables for the programs Flatcar ships: /usr/bin/bash, /usr/bin/docker,
  /bin/sh, /usr/bin/install (systemd only checks that they exist and are executable);
- /opt/bin/kubelet, which install-kubernetes.service downloads at boot (before the
  kubelet starts), so it is not in the config;
- /usr/sbin/munged, which a Slurm worker's machine image carries with slurmd.

Every function takes an ``InstanceConfiguration`` or an already parsed Ignition document
(e.g. decoded from an instance's user data).
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
from pathlib import Path
from typing import Any
from urllib.parse import unquote_to_bytes

import pytest
from shoal.providers.instance_setup import InstanceConfiguration

__all__ = [
    "HOST_UNITS",
    "SYSTEMD_ANALYZE",
    "assert_units_verify",
    "build_root",
    "file_bytes",
    "files_of",
    "needs_systemd_analyze",
    "parsed",
    "units_of",
    "verify",
]

SYSTEMD_ANALYZE = shutil.which("systemd-analyze") or (
    "/usr/bin/systemd-analyze" if os.access("/usr/bin/systemd-analyze", os.X_OK) else None
)
HOST_UNITS = next(
    (p for p in (Path("/usr/lib/systemd/system"), Path("/lib/systemd/system")) if p.is_dir()),
    None,
)
needs_systemd_analyze = pytest.mark.skipif(
    SYSTEMD_ANALYZE is None or HOST_UNITS is None,
    reason="systemd-analyze (Debian package systemd) and its stock units are not installed",
)
FLATCAR_PROGRAMS = ("/usr/bin/bash", "/usr/bin/docker", "/bin/sh", "/usr/bin/install")
DOWNLOADED_AT_BOOT = ("/opt/bin/kubelet",)
ON_THE_SLURM_IMAGE = ("/usr/sbin/munged",)

Config = InstanceConfiguration | dict[str, Any]


def parsed(config: Config) -> dict[str, Any]:
    """The Ignition document."""
    if isinstance(config, dict):
        return config
    return json.loads(config.toIgnitionConfig())


def file_bytes(entry: dict[str, Any]) -> bytes:
    """The contents of one ``storage.files`` entry (a ``data:,`` URL)."""
    source = entry["contents"]["source"]
    assert source.startswith("data:,"), source[:40]
    return unquote_to_bytes(source.split(",", 1)[1])


def files_of(config: Config) -> dict[str, str]:
    """Each file path the config creates -> its decoded text (binary files left out)."""
    out = {}
    for entry in parsed(config)["storage"]["files"]:
        try:
            out[entry["path"]] = file_bytes(entry).decode("utf-8")
        except UnicodeDecodeError:
            continue
    return out


def units_of(config: Config) -> dict[str, str]:
    return {u["name"]: u["contents"] for u in parsed(config)["systemd"]["units"]}


def build_root(root: Path, config: Config) -> list[str]:
    """Lay the config out under ``root`` as Ignition would, plus the stand-ins; unit names."""
    assert HOST_UNITS is not None
    shutil.copytree(HOST_UNITS, root / "usr/lib/systemd/system", symlinks=True)
    for program in FLATCAR_PROGRAMS + DOWNLOADED_AT_BOOT + ON_THE_SLURM_IMAGE:
        path = root / program.lstrip("/")
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text("#!/bin/sh\n")
        path.chmod(0o755)
    doc = parsed(config)
    for entry in doc["storage"]["files"]:
        path = root / entry["path"].lstrip("/")
        path.parent.mkdir(parents=True, exist_ok=True)
        with path.open("ab" if entry["append"] else "wb") as f:
            f.write(file_bytes(entry))
        path.chmod(entry["mode"])
    unit_dir = root / "etc/systemd/system"
    unit_dir.mkdir(parents=True, exist_ok=True)
    names = []
    for unit in doc["systemd"]["units"]:
        (unit_dir / unit["name"]).write_text(unit["contents"])
        names.append(unit["name"])
    return names


def verify(root: Path, names: list[str]) -> subprocess.CompletedProcess[str]:
    assert SYSTEMD_ANALYZE is not None
    return subprocess.run(
        [SYSTEMD_ANALYZE, "verify", f"--root={root}", *names],
        capture_output=True,
        text=True,
        timeout=60,
        env={**os.environ, "SYSTEMD_LOG_LEVEL": "notice"},
    )


def assert_units_verify(tmp_path: Path, config: Config) -> None:
    """Every unit verifies without a warning; every bash script parses."""
    names = build_root(tmp_path / "root", config)
    assert names, "no units to verify"
    result = verify(tmp_path / "root", names)
    assert result.returncode == 0, result.stderr
    assert result.stderr.strip() == "", result.stderr  # no warnings either
    for path, text in files_of(config).items():
        if text.startswith("#!/usr/bin/env bash"):
            check = subprocess.run(["bash", "-n"], input=text, capture_output=True, text=True)
            assert check.returncode == 0, f"{path}: {check.stderr}"
