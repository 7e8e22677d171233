"""``make tools`` (scripts/install-tools.sh) installs packages and never touches a service.

shoal runs on a cluster's leader, whose Slurm, munge and Prometheus may be production
services: an earlier version ran ``pkill -x prometheus`` and ``systemctl disable --now slurmctld
slurmd munge`` whenever one package was missing. These tests run the real script with every
command it could reach replaced by a recorder: ``apt-get`` records its arguments and whether
a ``policy-rc.d`` refusing service starts was in place while it ran; ``systemctl``, ``service``,
``invoke-rc.d``, ``pkill``, ``killall`` and ``kill`` record that they were called at all.
cloud-init, a boot-time agent, is unpacked apart (``dpkg -x``, recorded), never installed.
"""

from __future__ import annotations

import os
import shutil
import subprocess
from pathlib import Path

SCRIPT = Path(__file__).resolve().parent.parent / "scripts" / "install-tools.sh"
FORBIDDEN = (
    "systemctl",
    "service",
    "invoke-rc.d",
    "pkill",
    "killall",
    "kill",
    "deb-systemd-invoke",
)
REAL = ("sh", "printf", "chmod", "rm", "cat", "mktemp", "mkdir")

APT_GET = """#!/bin/sh
echo "apt-get $*" >>"$LOG"
policy="$SHOAL_SBIN/policy-rc.d"
if [ "$1" = install ]; then
    if [ -x "$policy" ]; then "$policy" slurmctld start; echo "policy-rc.d exit $?" >>"$LOG";
    else echo "no policy-rc.d" >>"$LOG"; fi
fi
if [ "$1" = download ]; then for last; do :; done; : >"${last}_1.0_all.deb"; fi
"""
# dpkg -x (unpack) only; the recorder fails anything else, as an install must not happen
DPKG = """#!/bin/sh
echo "dpkg $*" >>"$LOG"
[ "$1" = -x ] || exit 1
deb=${2##*/}; mkdir -p "$3/usr/bin" && : >"$3/usr/bin/${deb%%_*}"
"""


def _run(tmp_path: Path, uid: int = 0, policy: str | None = None) -> tuple[int, list[str]]:
    bin_dir, sbin = tmp_path / "bin", tmp_path / "sbin"
    bin_dir.mkdir()
    sbin.mkdir()
    log = tmp_path / "log"
    log.write_text("")
    for name in REAL:
        found = shutil.which(name)
        assert found is not None, name
        (bin_dir / name).symlink_to(found)
    shims = {"apt-get": APT_GET, "dpkg": DPKG, "id": f"#!/bin/sh\necho {uid}\n"}
    for name in FORBIDDEN:
        shims[name] = f'#!/bin/sh\necho "{name} $*" >>"$LOG"\n'
    for name, text in shims.items():
        path = bin_dir / name
        path.write_text(text.replace("#!/bin/sh", f"#!{shutil.which('sh')}", 1))
        path.chmod(0o755)
    if policy is not None:
        (sbin / "policy-rc.d").write_text(policy)
        (sbin / "policy-rc.d").chmod(0o755)
    env = {
        "PATH": str(bin_dir),
        "SHOAL_SBIN": str(sbin),
        "SHOAL_TOOLS": str(tmp_path / "tools"),
        "LOG": str(log),
        "TMPDIR": str(tmp_path),
    }
    done = subprocess.run(
        [shutil.which("sh") or "/bin/sh", str(SCRIPT)], env=env, capture_output=True, timeout=60
    )
    assert not (set(os.listdir(sbin)) - {"policy-rc.d"})
    return done.returncode, log.read_text().splitlines()


def test_installing_refuses_every_service_start_and_stops_nothing(tmp_path: Path) -> None:
    rc, log = _run(tmp_path)
    assert rc == 0
    install = [line for line in log if line.startswith("apt-get install")]
    assert len(install) == 1
    for package in ("prometheus", "slurmctld", "slurmd", "slurm-client", "munge", "shellcheck"):
        assert package in install[0].split()
    # cloud-init would run at this host's next boot: never installed, only unpacked apart
    assert "cloud-init" not in install[0].split()
    assert "python3-jsonschema" in install[0].split()  # what its schema check imports
    # etcd-server's postinst enables etcd.service (it would start at the next boot): the
    # same, its one static binary unpacked apart
    assert "etcd-server" not in install[0].split()
    unpacks = [line for line in log if line.startswith("dpkg")]
    assert len(unpacks) == 2
    for package in ("etcd-server", "cloud-init"):
        (unpack,) = [line for line in unpacks if f"/{package}_" in line]
        assert unpack.startswith("dpkg -x ") and unpack.endswith(f".deb {tmp_path}/tools/{package}")
        assert (tmp_path / "tools" / package / "usr" / "bin" / package).exists()
    # while the packages' maintainer scripts ran, a start was "forbidden by policy" (101)
    assert "policy-rc.d exit 101" in log
    assert not [line for line in log if line.split()[0] in FORBIDDEN], log
    # and the refusal is gone again: the host's own later installs start services as before
    assert not (tmp_path / "sbin" / "policy-rc.d").exists()


def test_a_policy_of_the_hosts_own_is_left_as_it_was(tmp_path: Path) -> None:
    own = "#!/bin/sh\n# the host's own policy\nexit 101\n"
    rc, log = _run(tmp_path, policy=own)
    assert rc == 0
    assert (tmp_path / "sbin" / "policy-rc.d").read_text() == own
    assert not [line for line in log if line.split()[0] in FORBIDDEN], log


def test_not_root_installs_nothing_and_says_what_is_missing(tmp_path: Path) -> None:
    rc, log = _run(tmp_path, uid=1000)
    assert rc == 0
    assert log == []
