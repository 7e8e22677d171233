"""shoal installs under one import name, ``shoal``, so it shares an environment with packages
whose top-level names are as generic as its folders (python-daemon's ``daemon``, say)."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest
from shoal.providers import ignition

ROOT = Path(__file__).resolve().parent.parent
TEMPLATES = ROOT / "providers" / "ignition"
NOT_SOURCE = (
    ".git",
    ".venv",
    "build",
    "dist",
    "*.egg-info",
    "__pycache__",
    ".*_cache",
    ".hypothesis",
)
PIP_INSTALL = (sys.executable, "-m", "pip", "install", "-q", "--no-deps")


@pytest.fixture(scope="module")
def wheel(tmp_path_factory: pytest.TempPathFactory) -> Path:
    # Build from a copy without build/ and *.egg-info: setuptools reuses build/lib, so a stale
    # one would put files in the wheel that the package configuration leaves out.
    source = tmp_path_factory.mktemp("source") / "shoal"
    shutil.copytree(ROOT, source, symlinks=True, ignore=shutil.ignore_patterns(*NOT_SOURCE))
    out = tmp_path_factory.mktemp("wheel")
    result = subprocess.run(
        [sys.executable, "-m", "pip", "wheel", "--no-deps", "-q", "-w", str(out), str(source)],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert result.returncode == 0, result.stderr[-2000:]
    (built,) = out.glob("shoal-*.whl")
    return built


def test_the_wheel_installs_only_under_shoal(wheel: Path) -> None:
    names = zipfile.ZipFile(wheel).namelist()
    top = {n.split("/")[0] for n in names if not n.split("/")[0].endswith(".dist-info")}
    assert top == {"shoal"}
    assert "shoal/daemon/cli.py" in names
    assert "shoal/daemon/simulate/trace.py" in names
    assert "shoal/providers/catalogue/instance_types.json" in names
    assert "shoal/providers/catalogue/aws_prices.json" in names
    prefix = "shoal/providers/ignition/"
    packed = sorted(n.removeprefix(prefix) for n in names if n.startswith(prefix))
    assert packed == sorted(["__init__.py", *ignition.template_names()])
    entry_points = next(n for n in names if n.endswith("entry_points.txt"))
    assert "shoal = shoal.daemon.cli:main" in zipfile.ZipFile(wheel).read(entry_points).decode()


def test_shoal_and_python_daemon_import_side_by_side(wheel: Path, tmp_path: Path) -> None:
    """Install the wheel and python-daemon into one target and import both from it; shoal's
    package data (the AWS price table) loads from there too."""
    target = tmp_path / "site"
    result = subprocess.run(
        [*PIP_INSTALL, "--target", str(target), str(wheel), "python-daemon", "lockfile"],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert result.returncode == 0, result.stderr[-2000:]
    probe = (
        "import sys; sys.path.insert(0, sys.argv[1]);"
        "import daemon, daemon.pidfile, shoal.daemon.cli, shoal.scaler, shoal.providers.simulated;"
        "import shoal.providers.aws_pricing as p;"
        "assert hasattr(daemon, 'DaemonContext'), daemon.__file__;"
        "assert p.__file__.startswith(sys.argv[1]), p.__file__;"
        "assert p.PriceBook('eu-west-1').on_demand('m5.xlarge') == 0.214;"
        "assert shoal.daemon.cli.__file__.startswith(sys.argv[1]), shoal.daemon.cli.__file__;"
        "print(daemon.__file__)"
    )
    # -I: isolated, so neither the repository nor the editable install of shoal is on the path;
    # shoal's own dependencies come from this interpreter's site-packages, appended after.
    site = next(p for p in sys.path if p.endswith("site-packages"))
    result = subprocess.run(
        [
            sys.executable,
            "-I",
            "-c",
            f"import sys; sys.path.append({site!r}); {probe}",
            str(target),
        ],
        capture_output=True,
        text=True,
        cwd=tmp_path,
        timeout=60,
    )
    assert result.returncode == 0, result.stderr[-2000:]
    assert result.stdout.strip().startswith(str(target / "daemon"))


def test_the_installed_wheel_renders_from_its_own_templates(wheel: Path, tmp_path: Path) -> None:
    """Installed (not editable), shoal reads the Ignition templates from its own files through
    importlib.resources, and they are the repository's, byte for byte."""
    target = tmp_path / "site"
    result = subprocess.run(
        [*PIP_INSTALL, "--target", str(target), str(wheel)],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert result.returncode == 0, result.stderr[-2000:]
    probe = (
        "import json, sys; sys.path.insert(0, sys.argv[1]);"
        "from shoal.providers import ignition;"
        "assert ignition.__file__.startswith(sys.argv[1]), ignition.__file__;"
        "print(json.dumps({n: ignition.load(n).template for n in ignition.template_names()}))"
    )
    site = next(p for p in sys.path if p.endswith("site-packages"))
    result = subprocess.run(
        [
            sys.executable,
            "-I",
            "-c",
            f"import sys; sys.path.append({site!r}); {probe}",
            str(target),
        ],
        capture_output=True,
        text=True,
        cwd=tmp_path,
        timeout=60,
    )
    assert result.returncode == 0, result.stderr[-2000:]
    installed = json.loads(result.stdout)
    assert sorted(installed) == ignition.template_names()
    for name, text in installed.items():
        assert text == (TEMPLATES / name).read_text(encoding="utf-8"), name
