"""docs/deploy-aws-slurm.md, followed as written: every block marked ```` ```sh runnable ````
runs, in the guide's order, with bash (``-euo pipefail``), as root, and must succeed.

The guide's absolute paths (``/etc/...``, ``/var/lib/...``) are moved under a scratch root
(world-traversable, so ``runuser -u slurm`` can reach it), its ``yaml config`` block is
written to that root's ``/etc/shoal/config.yaml``, its listen port is a free one, and AWS is a
local moto server (``AWS_ENDPOINT_URL``): ``shoal slurm-conf`` asks it for the instance types,
and the block marked ``daemon`` runs ``shoal status`` against ``shoal run`` of the guide's
config, started before it on loopback and stopped by pid. The commands that need a real
account or the leader's systemd (``aws``, ``systemctl``, ``sinfo``) are in plain ``sh`` blocks,
and no ``shoal`` command may hide in one.
"""

from __future__ import annotations

import grp
import os
import pwd
import re
import shutil
import stat
import subprocess
import sys
import tempfile
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
from e2e.procs import free_port, poll_until, shoal_argv, stop_process

ROOT = Path(__file__).resolve().parent.parent
DOC = ROOT / "docs" / "deploy-aws-slurm.md"
FENCE = re.compile(r"^```([^\n]*)\n(.*?)^```$", re.MULTILINE | re.DOTALL)
DOC_LISTEN = "127.0.0.1:8089"


@dataclass(frozen=True)
class Block:
    info: tuple[str, ...]  # the fence's info string: language, then markers
    text: str


def blocks() -> list[Block]:
    return [Block(tuple(m.group(1).split()), m.group(2)) for m in FENCE.finditer(DOC.read_text())]


def test_the_guide_runs_every_shoal_command_it_shows() -> None:
    shell = [b for b in blocks() if b.info[:1] == ("sh",)]
    runnable = [b for b in shell if "runnable" in b.info]
    assert len(runnable) >= 5
    for block in shell:
        if "runnable" not in block.info:
            shown = [line for line in block.text.splitlines() if line.startswith("shoal ")]
            assert not shown, f"a shoal command in a block the test does not run: {shown}"
    assert [b for b in blocks() if b.info == ("yaml", "config")], "the config block"


def test_the_guide_is_linked_and_links_inside_the_repository() -> None:
    assert "(docs/deploy-aws-slurm.md)" in (ROOT / "README.md").read_text()
    text = DOC.read_text()
    for target in re.findall(r"\]\(([^)]+)\)", text):
        assert not re.match(r"[a-z]+:", target), target
        assert (DOC.parent / target).exists(), target
    # every file of the repository the guide names is there
    for named in re.findall(r"`((?:deploy|docs|providers|daemon)/[^`\s]+)`", text):
        assert (ROOT / named).exists(), named


def _missing() -> str | None:
    if os.geteuid() != 0:
        return "runs the guide's root commands: needs root"
    for tool in ("openssl", "runuser", "bash"):
        if shutil.which(tool) is None:
            return f"{tool} not found"
    for user in ("slurm", "munge"):
        try:
            pwd.getpwnam(user)
            grp.getgrnam(user)
        except KeyError:
            return f"no {user} user (make tools installs Slurm and munge)"
    return None


@pytest.fixture
def scratch() -> Iterator[Path]:
    """The leader's /etc and /var/lib, somewhere SlurmUser can reach; munge's key as Debian's
    munge package leaves it (owner munge, 0400, in a folder only munge may enter)."""
    root = Path(tempfile.mkdtemp(prefix="shoal-guide-", dir="/tmp"))
    try:
        root.chmod(0o755)
        munge = pwd.getpwnam("munge")
        key_dir = root / "etc" / "munge"
        key_dir.mkdir(parents=True)
        key = key_dir / "munge.key"
        key.write_bytes(os.urandom(128))
        key.chmod(0o400)
        for path in (key, key_dir):
            os.chown(path, munge.pw_uid, munge.pw_gid)
        key_dir.chmod(0o700)
        (root / "etc" / "slurm").mkdir()
        (root / "var" / "lib").mkdir(parents=True)
        (root / "work").mkdir()
        (root / "work" / "deploy").symlink_to(ROOT / "deploy")
        yield root
    finally:
        shutil.rmtree(root)


def _localize(text: str, root: Path, port: int) -> str:
    text = text.replace(DOC_LISTEN, f"127.0.0.1:{port}")
    return re.sub(r"(?<![\w./-])/(etc|var/lib)/", lambda m: f"{root}/{m.group(1)}/", text)


@pytest.mark.skipif(_missing() is not None, reason=_missing() or "")
def test_following_the_guide(scratch: Path, moto_url: str) -> None:
    port = free_port()
    env = {
        **{k: v for k, v in os.environ.items() if k.startswith("AWS_")},
        "AWS_ENDPOINT_URL": moto_url,
        "PATH": f"{Path(sys.executable).parent}:{os.environ['PATH']}",
        "HOME": str(scratch / "work"),
        "LANG": "C.UTF-8",
    }
    config = scratch / "etc" / "shoal" / "config.yaml"
    daemon: subprocess.Popen[bytes] | None = None
    log = scratch / "work" / "shoal.log"
    outputs: list[str] = []
    try:
        for block in blocks():
            if block.info == ("yaml", "config"):
                config.parent.mkdir(parents=True, exist_ok=True)
                config.write_text(_localize(block.text, scratch, port))
                continue
            if block.info[:2] != ("sh", "runnable"):
                continue
            if "daemon" in block.info and daemon is None:
                daemon = _start(config, env, log, port)
            done = subprocess.run(
                ["bash", "-euo", "pipefail", "-c", _localize(block.text, scratch, port)],
                cwd=scratch / "work",
                env=env,
                capture_output=True,
                text=True,
                timeout=120,
            )
            assert done.returncode == 0, f"{block.text}\n{done.stdout}\n{done.stderr}"
            outputs.append(done.stdout)
    finally:
        stop_process(daemon)
    assert daemon is not None, "no block ran shoal status against the daemon"
    assert daemon.returncode == 0, log.read_text()[-3000:]
    every = "".join(outputs)
    # the token and the munge key: root's, readable by SlurmUser's group, nobody else
    for name in ("token", "munge.key"):
        info = (scratch / "etc" / "shoal" / name).stat()
        assert stat.S_IMODE(info.st_mode) == 0o640, name
        assert grp.getgrgid(info.st_gid).gr_name == "slurm", name
    assert "OK" in every  # check-config
    nodes = (scratch / "etc" / "slurm" / "shoal.conf").read_text()
    assert re.search(r"^NodeName=c5-xlarge-\[1-8\] CPUs=4 ", nodes, re.MULTILINE)
    assert re.search(r"^NodeName=c5-2xlarge-spot-\[1-4\] CPUs=8 ", nodes, re.MULTILINE)
    assert "enable_configless" in nodes
    assert "c5.xlarge" in outputs[-1]  # shoal status: the node types of the guide's config


def _start(config: Path, env: dict[str, str], log: Path, port: int) -> subprocess.Popen[bytes]:
    with log.open("wb") as out:
        proc = subprocess.Popen(
            [*shoal_argv(), "run", "-c", str(config)],
            env=env,
            stdout=out,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )

    def ready() -> bool:
        assert proc.poll() is None, log.read_text()[-3000:]
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{port}/healthz", timeout=2):
                return True
        except OSError:
            return False

    poll_until("shoal run to serve", ready, 60, explain=lambda: log.read_text()[-3000:])
    return proc
