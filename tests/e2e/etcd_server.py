"""A private etcd member for a test: Debian's etcd-server binary on free loopback ports.

``make tools`` unpacks the package into ``$SHOAL_TOOLS/etcd-server`` (its postinst would
enable a system service); an etcd on PATH or in /usr/bin is used too. Client AND peer URLs
are free loopback ports (two runs side by side collide on 2380 otherwise) and the data dir
is the test's own; the member is stopped by its pid, whatever the test did.

``etcd_cluster(base, 3)``: three members the same way (each its own client and peer ports
and data dir, one ``--initial-cluster``), for the loss of one member: ``EtcdCluster.leader()``
says which member raft elected, ``EtcdServer.kill9()`` kills one.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import urllib.request
import uuid
from collections.abc import Iterator
from contextlib import ExitStack, contextmanager
from pathlib import Path

import pytest
from procs import free_port, poll_until, stop_process

__all__ = ["EtcdCluster", "EtcdServer", "etcd_binary", "etcd_cluster", "etcd_server"]

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

    def kill9(self) -> None:
        """The member's host dies: SIGKILL, and the process reaped."""
        self.proc.kill()
        self.proc.wait(timeout=10)

    def status(self) -> dict[str, object] | None:
        """The member's ``/v3/maintenance/status`` (its member id and raft's leader), or None
        when it does not answer."""
        request = urllib.request.Request(f"{self.url}/v3/maintenance/status", data=b"{}")
        try:
            with urllib.request.urlopen(request, timeout=1.0) as response:
                return dict(json.loads(response.read()))
        except OSError:
            return None


class EtcdCluster:
    def __init__(self, members: list[EtcdServer]) -> None:
        self.members = members
        self.urls = [m.url for m in members]

    def leader(self) -> EtcdServer | None:
        """The member raft elected (by its own status), None when none says it leads."""
        for member in self.members:
            status = member.status() or {}
            header = status.get("header")
            leader = status.get("leader")
            if leader and isinstance(header, dict) and str(leader) == str(header.get("member_id")):
                return member
        return None


def _binary() -> str:
    binary = etcd_binary()
    if binary is None:
        pytest.skip("etcd is not installed (make tools unpacks Debian's etcd-server)")
    return binary


@contextmanager
def _member(
    binary: str, name: str, data_dir: Path, client: str, peer: str, cluster: list[str]
) -> Iterator[EtcdServer]:
    """One etcd process of ``cluster`` (``name=peer-url`` items, which name the cluster's
    token too: each test's own), stopped by its pid."""
    token = f"shoal-test-{uuid.uuid5(uuid.NAMESPACE_URL, ','.join(cluster)).hex[:12]}"
    log = (data_dir.parent / f"{data_dir.name}.log").open("wb")
    with log:
        proc = subprocess.Popen(
            [
                binary,
                f"--name={name}",
                f"--data-dir={data_dir}",
                f"--listen-client-urls={client}",
                f"--advertise-client-urls={client}",
                f"--listen-peer-urls={peer}",
                f"--initial-advertise-peer-urls={peer}",
                f"--initial-cluster={','.join(cluster)}",
                f"--initial-cluster-token={token}",
                "--logger=zap",
                "--log-level=warn",
            ],
            stdin=subprocess.DEVNULL,
            stdout=log,
            stderr=subprocess.STDOUT,
        )
    server = EtcdServer(proc, client)
    try:
        yield server
    finally:
        if server.paused:
            server.resume()
        stop_process(proc)


@contextmanager
def etcd_server(data_dir: Path) -> Iterator[EtcdServer]:
    client, peer = f"http://127.0.0.1:{free_port()}", f"http://127.0.0.1:{free_port()}"
    with _member(_binary(), "test", data_dir, client, peer, [f"test={peer}"]) as server:
        poll_until("etcd /health", server.healthy, 15.0, interval=0.05)
        yield server


@contextmanager
def etcd_cluster(base: Path, size: int = 3) -> Iterator[EtcdCluster]:
    """``size`` members on loopback, started together (each waits for the others' votes),
    healthy and with a raft leader when this yields; every one stopped by its pid."""
    binary = _binary()
    base.mkdir(parents=True, exist_ok=True)
    names = [f"m{i}" for i in range(size)]
    ports = [(f"http://127.0.0.1:{free_port()}", f"http://127.0.0.1:{free_port()}") for _ in names]
    cluster = [f"{n}={peer}" for n, (_, peer) in zip(names, ports, strict=True)]
    with ExitStack() as stack:
        members = [
            stack.enter_context(_member(binary, n, base / n, client, peer, cluster))
            for n, (client, peer) in zip(names, ports, strict=True)
        ]
        for member in members:
            poll_until("etcd member /health", member.healthy, 30.0, interval=0.05)
        result = EtcdCluster(members)
        poll_until("an etcd raft leader", result.leader, 15.0, interval=0.05)
        yield result
