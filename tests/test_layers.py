"""The layers' import rules, read from the source (no import runs): ``daemon -> providers ->
scaler``, and the Slurm package's pure modules stay pure.

``providers/`` knows clouds, never the daemon (issue 22 item 1: the Slurm client and demand
moved to ``daemon/slurm/``; what a provider needs of Slurm is a plain tag name in
``providers.workers``). ``scaler`` imports neither. ``daemon/slurm/parse.py``, ``demand.py``
and ``constants.py`` run no command and read no clock.
"""

from __future__ import annotations

import ast
import re
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


def imports(path: Path) -> set[str]:
    """The modules ``path`` imports, at any depth (``TYPE_CHECKING`` blocks included)."""
    found: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and not node.level:
            found.add(node.module)
    return found


def offenders(folder: str, forbidden: tuple[str, ...]) -> dict[str, list[str]]:
    out = {}
    for path in sorted((ROOT / folder).rglob("*.py")):
        bad = sorted(m for m in imports(path) if m.startswith(forbidden))
        if bad:
            out[str(path.relative_to(ROOT))] = bad
    return out


@pytest.mark.parametrize(
    ("folder", "forbidden"),
    [
        pytest.param("providers", ("shoal.daemon",), id="providers-not-daemon"),
        pytest.param("scaler", ("shoal.daemon", "shoal.providers"), id="scaler-alone"),
    ],
)
def test_dependencies_point_one_way(folder: str, forbidden: tuple[str, ...]) -> None:
    assert offenders(folder, forbidden) == {}


@pytest.mark.parametrize("module", ["parse", "demand", "constants"])
def test_the_slurm_parsing_and_demand_are_pure(module: str) -> None:
    io = ("asyncio", "subprocess", "time", "shoal.daemon.slurm.client", "shoal.runtime.clock")
    found = imports(ROOT / "daemon" / "slurm" / f"{module}.py")
    assert sorted(m for m in found if m.startswith(io)) == []


def test_no_slurm_client_left_in_providers() -> None:
    """Slurm's commands are run from one place, ``daemon/slurm/client.py``."""
    mentions = [
        str(path.relative_to(ROOT))
        for path in sorted((ROOT / "providers").rglob("*.py"))
        if any(word in path.read_text() for word in ("squeue", "sinfo", "SlurmClient"))
    ]
    assert mentions == []


def private_provider_reaches(folder: str) -> list[str]:
    """Where code in ``folder`` reads a private attribute (``_x``, not ``__x__``) of a provider
    object other than itself: ``provider._client``, ``self.provider._catalogue``,
    ``controller.provider._x``. Read from the syntax tree, not by running anything."""
    found = []
    for path in sorted((ROOT / folder).rglob("*.py")):
        for node in ast.walk(ast.parse(path.read_text(), str(path))):
            if not isinstance(node, ast.Attribute) or not node.attr.startswith("_"):
                continue
            if node.attr.startswith("__") or ast.unparse(node.value) in ("self", "cls"):
                continue
            if re.search(r"provider|provisioner", ast.unparse(node.value), re.IGNORECASE):
                found.append(f"{path.relative_to(ROOT)}:{node.lineno}: {ast.unparse(node)}")
    return found


@pytest.mark.parametrize("folder", ["daemon", "providers"])
def test_no_layer_reaches_into_a_providers_internals(folder: str) -> None:
    """The daemon, and the provider modules among themselves, use a provider's public
    methods only (issue 22: the interruption queue took ``AWSProvisioner._client``)."""
    assert private_provider_reaches(folder) == []


def protocol_members(*names: str) -> set[str]:
    """The methods the named classes of ``providers/node_provider.py`` declare."""
    tree = ast.parse((ROOT / "providers" / "node_provider.py").read_text())
    classes = [n for n in tree.body if isinstance(n, ast.ClassDef) and n.name in names]
    assert len(classes) == len(names)
    return {
        f.name
        for c in classes
        for f in c.body
        if isinstance(f, ast.FunctionDef | ast.AsyncFunctionDef)
    }


CONTROL = ["daemon/executor.py", "daemon/loop.py", "daemon/interruptions.py"]


@pytest.mark.parametrize(
    "path", [*CONTROL, *(str(p.relative_to(ROOT)) for p in (ROOT / "daemon/slurm").glob("*.py"))]
)
def test_the_control_loop_takes_the_small_provisioner(path: str) -> None:
    """The loop, the executor, the interruption handler and the Slurm package take a
    ``Provisioner`` (``providers.node_provider``), never the seed's whole ``AbstractProvisioner``,
    and call on it only what that protocol declares."""
    tree = ast.parse((ROOT / path).read_text())
    names = {a.name for n in ast.walk(tree) if isinstance(n, ast.ImportFrom) for a in n.names}
    assert "AbstractProvisioner" not in names
    called = {
        n.attr
        for n in ast.walk(tree)
        if isinstance(n, ast.Attribute)
        and re.fullmatch(r"(self\.|controller\.)?provider", ast.unparse(n.value))
    }
    assert called <= protocol_members("Provisioner")
