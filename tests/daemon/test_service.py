"""The service in-process: real loopback port, real signals, sd_notify on a test unix socket."""

from __future__ import annotations

import asyncio
import logging
import os
import signal
import socket
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import aiohttp
import configs
import pytest
import yaml
from shoal.daemon.config import load_config
from shoal.daemon.service import SHUTDOWN_TIMEOUT, Service, SystemdNotifier
from shoal.providers.errors import CapacityError
from waits import wait_for_pass


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def write_config(path: Path, **overrides: Any) -> Path:
    data = configs.config(
        cluster_name="svc",
        provider={"boot_delay": "1s"},
        node_types=[{"type": "c5.xlarge", "max": 5}],
        # initial 1s: providers/retry.py passes tenacity's deprecated `initial` (warns if != 1)
        scaler={"interval": "30s", "retry": {"initial": "1s", "max": "2s"}},
        api={"listen": f"127.0.0.1:{free_port()}"},
    )
    return configs.write(path, configs.merge(data, overrides))


@pytest.fixture
def notify_socket(tmp_path: Path) -> Iterator[tuple[socket.socket, str]]:
    path = str(tmp_path / "notify.sock")
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    sock.bind(path)
    sock.setblocking(False)
    try:
        yield sock, path
    finally:
        sock.close()


def received(sock: socket.socket) -> list[str]:
    out = []
    while True:
        try:
            out.append(sock.recv(4096).decode())
        except BlockingIOError:
            return out


async def wait_until(predicate: Any, timeout: float = 5.0) -> None:
    """Poll a condition on the event loop (the service runs on real time here)."""
    async with asyncio.timeout(timeout):
        while not predicate():
            await asyncio.sleep(0.01)


async def start(service: Service) -> asyncio.Task[int]:
    task = asyncio.create_task(service.serve())
    await asyncio.wait_for(service.started.wait(), 10)
    assert service.controller is not None
    await asyncio.wait_for(wait_for_pass(service.controller, 1), 10)
    return task


async def test_starts_serves_and_stops_cleanly_on_sigterm(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger="shoal")
    path = write_config(tmp_path / "shoal.yaml")
    service = Service(load_config(path), path)
    task = await start(service)
    async with aiohttp.ClientSession() as session:
        base = f"http://127.0.0.1:{service.port}"
        async with session.get(f"{base}/readyz") as r:
            assert r.status == 200
        async with session.put(
            f"{base}/v1/demand",
            json={"jobs": [{"cores": 1, "memory": "1GiB", "count": 4}], "running": []},
        ) as r:
            assert r.status == 200
    assert service.controller is not None
    await asyncio.wait_for(wait_for_pass(service.controller, 2), 5)  # woken by the demand
    assert service.controller.last_pass is not None
    assert service.controller.last_pass.launched == 1
    os.kill(os.getpid(), signal.SIGTERM)
    assert await asyncio.wait_for(task, 2 * SHUTDOWN_TIMEOUT) == 0
    # the pass in flight finished by itself: nothing had to be cancelled at the deadline
    assert "event=shutdown_timeout" not in caplog.text
    assert "event=stopped" in caplog.text
    with pytest.raises(aiohttp.ClientConnectionError):  # the listener is closed
        async with aiohttp.ClientSession() as session, session.get(f"{base}/healthz"):
            pass


async def test_sighup_reloads_and_refuses_an_invalid_config(tmp_path: Path) -> None:
    path = write_config(tmp_path / "shoal.yaml")
    service = Service(load_config(path), path)
    task = await start(service)
    controller = service.controller
    assert controller is not None
    listen = service.config.api.listen

    # an invalid file: refused, the old config and policy kept
    path.write_text("cluster_name: svc\nnode_types: []\nscaler: {interval: -1}\n")
    old_policy = controller.policy
    os.kill(os.getpid(), signal.SIGHUP)
    await wait_until(lambda: service.reloads == 1)
    assert service.last_reload_ok is False
    assert controller.policy is old_policy
    assert service.config.node_types[0].max == 5

    # a valid file naming a token file that is not there: refused by preflight
    write_config(path, node_types=[{"type": "c5.xlarge", "max": 6}], api={"listen": listen})
    data = yaml.safe_load(path.read_text())
    data["api"]["token_file"] = str(tmp_path / "absent-token")
    path.write_text(yaml.safe_dump(data))
    os.kill(os.getpid(), signal.SIGHUP)
    await wait_until(lambda: service.reloads == 2)
    assert service.last_reload_ok is False
    assert service.config.node_types[0].max == 5

    # a valid change: applied
    write_config(path, node_types=[{"type": "c5.xlarge", "max": 7}], api={"listen": listen})
    os.kill(os.getpid(), signal.SIGHUP)
    await wait_until(lambda: service.reloads == 3)
    assert service.last_reload_ok is True
    assert controller.policy.node_types[0].max_nodes == 7
    assert service.config.node_types[0].max == 7

    service.stop("test")
    assert await asyncio.wait_for(task, 10) == 0


async def test_sighup_applies_a_changed_provider_capacity_without_a_restart(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """An operator ends a stock-out: ``provider.capacity`` rewritten and SIGHUP, the running
    provider launches what it refused (before: the reload kept the old limit and asked for a
    restart of the whole daemon)."""
    caplog.set_level(logging.INFO, logger="shoal")
    path = write_config(tmp_path / "shoal.yaml", provider={"capacity": {"c5.xlarge": 0}})
    service = Service(load_config(path), path)
    task = await start(service)
    provider = service.provider
    assert provider is not None
    with pytest.raises(CapacityError):
        await provider.addNodes(["c5.xlarge"], 2, False, all_or_nothing=True)

    listen = service.config.api.listen
    write_config(path, provider={"capacity": {"c5.xlarge": 2}}, api={"listen": listen})
    os.kill(os.getpid(), signal.SIGHUP)
    await wait_until(lambda: service.reloads == 1)
    assert service.last_reload_ok is True
    assert service.config.provider.capacity == {"c5.xlarge": 2}
    assert "event=reload_needs_restart" not in caplog.text
    assert await provider.addNodes(["c5.xlarge"], 2, False, all_or_nothing=True) == 2
    with pytest.raises(CapacityError):  # the new limit, not none
        await provider.addNodes(["c5.xlarge"], 1, False)

    service.stop("test")
    assert await asyncio.wait_for(task, 10) == 0


async def test_sighup_removing_a_zone_keeps_the_running_zones_until_a_restart(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """A reload that removes a launch zone: the provider section applies at a restart, and
    so for the planner too. Before, the policy's offerings lost the zone at once while the
    provider's fleet kept falling back to it: the planner no longer planned there, yet
    launches still landed there (half a change)."""
    caplog.set_level(logging.INFO, logger="shoal")
    zones = {"zone": None, "zones": ["us-west-2a", "us-west-2b"], "boot_delay": "1s"}
    path = write_config(tmp_path / "shoal.yaml", provider=zones)
    service = Service(load_config(path), path)
    task = await start(service)
    controller, provider = service.controller, service.provider
    assert controller is not None and provider is not None
    assert controller.policy.node_types[0].zones == ("us-west-2a", "us-west-2b")

    listen = service.config.api.listen
    one = {"zone": None, "zones": ["us-west-2a"], "boot_delay": "1s"}
    write_config(
        path, provider=one, api={"listen": listen}, node_types=[{"type": "c5.xlarge", "max": 6}]
    )
    os.kill(os.getpid(), signal.SIGHUP)
    await wait_until(lambda: service.reloads == 1)
    assert service.last_reload_ok is True
    assert "event=reload_needs_restart sections=provider" in caplog.text
    assert controller.policy.node_types[0].max_nodes == 6  # the rest applied
    assert provider.zones == ("us-west-2a", "us-west-2b")
    assert controller.policy.node_types[0].zones == provider.zones  # ("us-west-2a",) before
    assert controller.policy_source is not None
    assert controller.policy_source().node_types[0].zones == provider.zones  # price refreshes

    service.stop("test")
    assert await asyncio.wait_for(task, 10) == 0


async def test_sd_notify_ready_watchdog_stopping(
    tmp_path: Path, notify_socket: tuple[socket.socket, str]
) -> None:
    sock, address = notify_socket
    path = write_config(tmp_path / "shoal.yaml")
    notifier = SystemdNotifier({"NOTIFY_SOCKET": address, "WATCHDOG_USEC": "60000000"})
    assert notifier.watchdog_seconds == 60
    service = Service(load_config(path), path, notifier=notifier)
    task = await start(service)
    messages: list[str] = []
    await wait_until(lambda: messages.extend(received(sock)) or "WATCHDOG=1" in messages)
    os.kill(os.getpid(), signal.SIGINT)
    assert await asyncio.wait_for(task, 10) == 0
    messages += received(sock)
    assert messages.index("READY=1") < messages.index("WATCHDOG=1") < messages.index("STOPPING=1")


def test_notifier_is_silent_without_notify_socket() -> None:
    notifier = SystemdNotifier({})
    assert not notifier.enabled
    assert notifier.notify("READY=1") is False
    assert notifier.watchdog() is False
    assert SystemdNotifier({"NOTIFY_SOCKET": "/x", "WATCHDOG_USEC": "5", "WATCHDOG_PID": "1"})


async def test_a_rotated_token_file_is_honoured_without_a_restart(tmp_path: Path) -> None:
    """The operator rotates ``api.token_file`` (replaced, or rewritten in place): the pushes
    and hooks, which read the file on every call, carry the new token; the daemon takes it
    from the next request on (before: 401 until a restart) and refuses the old one."""
    token_file = tmp_path / "token"
    token_file.write_text("first-token\n")
    path = write_config(tmp_path / "shoal.yaml")
    config = yaml.safe_load(path.read_text())
    config["api"]["token_file"] = str(token_file)
    path.write_text(yaml.safe_dump(config))
    service = Service(load_config(path), path)
    task = await start(service)
    body = {"jobs": [{"cores": 1, "memory": "1GiB", "count": 1}], "running": []}

    async def put(token: str) -> int:
        headers = {"Authorization": f"Bearer {token}"}
        async with (
            aiohttp.ClientSession() as session,
            session.put(
                f"http://127.0.0.1:{service.port}/v1/demand", json=body, headers=headers
            ) as r,
        ):
            return r.status

    assert await put("first-token") == 200
    (tmp_path / "token.new").write_text("second-token\n")
    os.replace(tmp_path / "token.new", token_file)  # rotated as an atomic replace
    assert (await put("second-token"), await put("first-token")) == (200, 401)
    token_file.write_text("third\n")  # rotated in place
    assert (await put("third"), await put("second-token")) == (200, 401)
    service.stop("test")
    assert await asyncio.wait_for(task, 10) == 0


async def test_a_token_file_empty_at_start_stops_the_start(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """``api.token_file`` empty when the daemon reads it (emptied after the preflight, a
    rotation half done as it starts): the daemon exits 2 and never listens. Before, it took
    an empty file for no token and served every push and hook call without one."""
    token_file = tmp_path / "token"
    token_file.write_text("\n")
    path = write_config(tmp_path / "shoal.yaml", api={"token_file": str(token_file)})
    service = Service(load_config(path), path)
    started = asyncio.create_task(service.started.wait())
    task = asyncio.create_task(service.serve())
    await asyncio.wait([task, started], timeout=10, return_when=asyncio.FIRST_COMPLETED)
    started.cancel()
    service.stop("test")
    assert await asyncio.wait_for(task, 10) == 2
    assert not service.started.is_set()
    assert "event=startup_failed" in caplog.text and "is empty" in caplog.text
