"""A private etcd member for a test: Debian's etcd-server binary on free loopback ports.

``make tools`` unpacks the package into ``$SHOAL_TOOLS/etcd-server`` (its postinst would
enable a system service); an etcd on PATH or in /usr/bin is used too. Client AND peer URLs
are free loopback ports (two runs side by side collide on 2380 otherwise) and the data dir
is the test's own; the member is stopped by its pid, whatever the test did.
"""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import urllib.request
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest
from procs import free_port, poll_until, stop_process

__all__ = ["EtcdServer", "etcd_binary", "etcd_server"]

TOOLS = Path(os.environ.get("SHOAL_TOOLS", "/opt/shoal-tools"))


def etcd_binary() -> str | None:
    for candidate in (shutil.which("etcd"), "/usr/bin/etcd", TOOLS / "etcd-server/usr/bin/etcd"):
        if candidate is not None and os.access(candidate, os.X_OK):
            return str(candidate)
    return None


class EtcdServer:
    def __init__(self, proc: subprocess.Popen[bytes], url: str) -> None:
        self.proc = proc
        self.url = url
        self.paused = False

    def healthy(self) -> bool:
        try:
            with urllib.request.urlopen(f"{self.url}/health", timeout=1.0) as response:
                return b'"true"' in response.read()
        except OSError:
            return False

    def pause(self) -> None:
        """An outage: the member stops answering (SIGSTOP); connections hang, as a lost
        network does."""
        self.proc.send_signal(signal.SIGSTOP)
        self.paused = True

    def resume(self) -> None:
        self.proc.send_signal(signal.SIGCONT)
        self.paused = False


@contextmanager
def etcd_server(data_dir: Path) -> Iterator[EtcdServer]:
    binary = etcd_binary()
    if binary is None:
        pytest.skip("etcd is not installed (make tools unpacks Debian's etcd-server)")
    client, peer = f"http://127.0.0.1:{free_port()}", f"http://127.0.0.1:{free_port()}"
    log = (data_dir.parent / f"{data_dir.name}.log").open("wb")
    with log:
        proc = subprocess.Popen(
            [
                binary,
                "--name=test",
                f"--data-dir={data_dir}",
                f"--listen-client-urls={client}",
                f"--advertise-client-urls={client}",
                f"--listen-peer-urls={peer}",
                f"--initial-advertise-peer-urls={peer}",
                f"--initial-cluster=test={peer}",
                "--logger=zap",
                "--log-level=warn",
            ],
            stdin=subprocess.DEVNULL,
            stdout=log,
            stderr=subprocess.STDOUT,
        )
    server = EtcdServer(proc, client)
    try:
        poll_until("etcd /health", server.healthy, 15.0, interval=0.05)
        yield server
    finally:
        if server.paused:
            server.resume()
        stop_process(proc)
