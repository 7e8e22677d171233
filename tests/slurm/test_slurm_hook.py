"""The power-saving hooks: the commands slurmctld runs, and the daemon's endpoints they call.

The daemon side is the real HTTP app and power saver on a loopback port over the simulated
cloud; the hooks run as the installed console scripts, as slurmctld runs them.
"""

from __future__ import annotations

import asyncio
import json
import os
import sys
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import aiohttp
import configs
import pytest
import yaml
from aiohttp import web
from shoal.daemon.config import parse_config
from shoal.daemon.durable import DurableStore
from shoal.daemon.http import BearerToken, make_app, start_http
from shoal.daemon.metrics import ShoalMetrics
from shoal.daemon.service import build_controller
from shoal.daemon.slurm import hook, spool
from shoal.daemon.slurm.constants import TAG_SLURM_NODE
from shoal.daemon.slurm.hook import HookError, daemon_endpoint
from shoal.daemon.slurm.integration import SlurmIntegration
from shoal.daemon.slurm.state import PowerState
from shoal.providers.simulated import SimulatedProvisioner
from shoal.runtime.testing import FakeClock, InlineExecutor
from slurm.shoal_proc import free_port
from waits import slurm_requests_served

BIN = Path(sys.executable).parent
TOKEN = "hook-token-123"
ZONE = "us-west-2a"


@dataclass
class Api:
    base: str
    config_path: Path  # what the hooks read (api.listen, api.token_file)
    state_dir: Path
    slurm: SlurmIntegration
    provider: SimulatedProvisioner
    metrics: ShoalMetrics
    clock: FakeClock

    async def hook(
        self, command: str, *args: str, env: dict[str, str] | None = None
    ) -> tuple[int, str, str]:
        proc = await asyncio.create_subprocess_exec(
            *command.split(),
            "-c",
            str(self.config_path),
            *args,
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.PIPE,
            env={"PATH": os.environ.get("PATH", ""), **(env or {})},
        )
        out, err = await asyncio.wait_for(proc.communicate(), 60)
        assert proc.returncode is not None
        return proc.returncode, out.decode(), err.decode()


def daemon_config(tmp_path: Path, mode: str = "power_save", state_dir: Path | None = None) -> Any:
    slurm: dict[str, Any] = {"mode": mode, "scontrol": str(tmp_path / "no-scontrol")}
    if mode == "power_save":
        slurm |= {"node_types": {"cloud": "c5.xlarge"}}
    return parse_config(
        configs.config(
            cluster_name="t",
            state_dir=str(state_dir or tmp_path / "state"),
            provider={"kind": "simulated", "zone": ZONE},
            node_types=[{"type": "c5.xlarge"}],
            demand={"api": False, "slurm": True},
            slurm=slurm,
        )
    )


@pytest.fixture
async def api_factory(tmp_path: Path) -> AsyncIterator[Callable[..., Awaitable[Api]]]:
    runners = []

    async def factory(
        mode: str = "power_save", api_latency: float = 0.0, state_dir: Path | None = None
    ) -> Api:
        """The daemon's app on a loopback port; with ``api_latency`` every cloud call takes
        that long on a fake clock nobody moves: a launch that never finishes."""
        asyncio.get_running_loop().set_default_executor(InlineExecutor())
        clock = FakeClock()
        cfg = daemon_config(tmp_path, mode, state_dir)
        provider = SimulatedProvisioner(
            clusterName="t", zone=ZONE, clock=clock, api_latency=api_latency
        )
        metrics = ShoalMetrics()
        controller = await clock.run_until(build_controller(cfg, provider, clock, metrics=metrics))
        (tmp_path / "token").write_text(TOKEN + "\n")
        token = BearerToken(tmp_path / "token")  # one object: the API, the hooks, the spool
        slurm = SlurmIntegration(cfg, clock, controller, metrics, token=token)
        await clock.run_until(controller.reconcile())
        app = make_app(controller, token=token, accept_demand=False)
        slurm.add_routes(app)
        runner, port = await start_http(app, "127.0.0.1", 0)
        runners.append((runner, slurm))
        hook_config = tmp_path / "hooks.yaml"
        hook_config.write_text(
            yaml.safe_dump({"api": {"listen": f"127.0.0.1:{port}", "token_file": "token"}})
        )
        return Api(
            f"http://127.0.0.1:{port}",
            hook_config,
            tmp_path / "state",
            slurm,
            provider,
            metrics,
            clock,
        )

    yield factory
    for runner, slurm in runners:
        await slurm.close()
        await runner.cleanup()


async def post(url: str, body: Any, token: str | None = TOKEN) -> tuple[int, Any]:
    headers = {"Authorization": f"Bearer {token}"} if token else {}
    data = body if isinstance(body, bytes) else json.dumps(body).encode()
    async with (
        aiohttp.ClientSession() as session,
        session.post(url, data=data, headers=headers) as response,
    ):
        return response.status, await response.json()


async def test_the_resume_hook_hands_over_the_nodes_and_the_resume_file(
    api_factory: Callable[..., Awaitable[Api]], tmp_path: Path
) -> None:
    api = await api_factory(api_latency=3600.0)  # a launch that never finishes here
    resume_file = tmp_path / "resume.json"
    resume_file.write_text(
        json.dumps({"jobs": [{"job_id": 41, "nodes": "cloud[1-2]"}], "all_nodes": "cloud[1-2]"})
    )
    status, out, err = await api.hook(
        str(BIN / "shoal-slurm-resume"), "cloud[1-2]", env={"SLURM_RESUME_FILE": str(resume_file)}
    )
    assert (status, out.strip()) == (0, "shoal slurm-resume: accepted cloud1,cloud2"), err
    # the hook returned while the launches still wait on the cloud: it never waits for them
    assert api.provider.count() == 0
    state = PowerState(DurableStore.open(api.state_dir))
    assert {n: r.jobs for n, r in state.requests.items()} == {"cloud1": ("41",), "cloud2": ("41",)}


async def test_shoal_subcommands_are_the_same_hooks(
    api_factory: Callable[..., Awaitable[Api]],
) -> None:
    api = await api_factory()
    for command, kind in (("slurm-suspend", "suspend"), ("slurm-resume-fail", "resume_fail")):
        status, out, err = await api.hook(f"{BIN / 'shoal'} {command}", "cloud3")
        assert status == 0 and "accepted cloud3" in out, err
        value = api.metrics.registry.get_sample_value("shoal_slurm_requests_total", {"kind": kind})
        assert value == 1


@pytest.mark.parametrize(
    ("token", "expected"),
    [pytest.param("wrong", "HTTP 401", id="wrong-token"), pytest.param("", "HTTP 401", id="none")],
)
async def test_a_hook_without_the_token_is_refused(
    api_factory: Callable[..., Awaitable[Api]], tmp_path: Path, token: str, expected: str
) -> None:
    api = await api_factory()
    config = yaml.safe_load(api.config_path.read_text())
    if token:
        (tmp_path / "other").write_text(token)
        config["api"]["token_file"] = "other"
    else:
        del config["api"]["token_file"]
    api.config_path.write_text(yaml.safe_dump(config))
    status, _, err = await api.hook(str(BIN / "shoal-slurm-resume"), "cloud1")
    assert status == 1 and expected in err
    assert PowerState(DurableStore.open(api.state_dir)).requests == {}


async def test_a_hook_with_no_daemon_fails_fast_with_the_reason(tmp_path: Path) -> None:
    config = tmp_path / "hooks.yaml"
    config.write_text(yaml.safe_dump({"api": {"listen": f"127.0.0.1:{free_port()}"}}))
    proc = await asyncio.create_subprocess_exec(
        str(BIN / "shoal-slurm-suspend"),
        "-c",
        str(config),
        "cloud1",
        stderr=asyncio.subprocess.PIPE,
    )
    _, err = await asyncio.wait_for(proc.communicate(), 60)
    assert proc.returncode == 1
    assert "did not take the request" in err.decode() and "Connection refused" in err.decode()


@pytest.mark.parametrize(
    ("body", "status", "message"),
    [
        pytest.param(b"{not json", 400, "Expecting property name", id="not-json"),
        pytest.param({"nodes": 3}, 400, "hostlist", id="nodes-not-a-string"),
        pytest.param({"nodes": "cloud[1-"}, 400, "not a Slurm hostlist", id="bad-hostlist"),
        pytest.param({"nodes": ""}, 400, "no node names", id="empty"),
        pytest.param({"nodes": "cloud1", "request_id": "../x"}, 400, "request_id", id="bad-id"),
    ],
)
async def test_malformed_bodies_are_refused(
    api_factory: Callable[..., Awaitable[Api]], body: Any, status: int, message: str
) -> None:
    api = await api_factory()
    got, answer = await post(f"{api.base}/v1/slurm/resume", body)
    assert got == status and message in answer["error"]


async def test_external_mode_has_no_hooks_to_serve(
    api_factory: Callable[..., Awaitable[Api]],
) -> None:
    api = await api_factory(mode="external")
    status, answer = await post(f"{api.base}/v1/slurm/resume", {"nodes": "cloud1"})
    assert status == 409 and "external" in answer["error"]
    async with aiohttp.ClientSession() as session, session.get(f"{api.base}/v1/slurm") as r:
        assert r.status == 200 and (await r.json())["mode"] == "external"


async def test_status_shows_requests_in_hand(api_factory: Callable[..., Awaitable[Api]]) -> None:
    api = await api_factory(api_latency=3600.0)
    status, _ = await post(f"{api.base}/v1/slurm/resume", {"nodes": "cloud7"})
    assert status == 202
    async with aiohttp.ClientSession() as session, session.get(f"{api.base}/v1/slurm") as r:
        body = await r.json()
    assert body["mode"] == "power_save"
    assert list(body["power_saving"]["requests"]) == ["cloud7"]
    assert "cloud7" in body["power_saving"]["busy"]


@pytest.mark.parametrize(
    ("api", "expected"),
    [
        pytest.param({}, ("127.0.0.1", 8089, None), id="defaults"),
        pytest.param({"listen": "0.0.0.0:9000"}, ("127.0.0.1", 9000, None), id="wildcard"),
        pytest.param({"listen": "[::1]:9001"}, ("::1", 9001, None), id="ipv6"),
        pytest.param(
            {"listen": "127.0.0.1:9002", "token_file": "tok"},
            ("127.0.0.1", 9002, "t0k"),
            id="token",
        ),
    ],
)
def test_the_daemons_address_from_the_config(
    tmp_path: Path, api: dict[str, Any], expected: tuple[str, int, str | None]
) -> None:
    (tmp_path / "tok").write_text("t0k\n")
    path = tmp_path / "shoal.yaml"
    path.write_text(yaml.safe_dump({"cluster_name": "x", "api": api}))
    assert daemon_endpoint(str(path)) == expected


def test_an_unreadable_token_file_is_a_hook_error(tmp_path: Path) -> None:
    path = tmp_path / "shoal.yaml"
    path.write_text(yaml.safe_dump({"api": {"token_file": "missing"}}))
    with pytest.raises(HookError, match=r"cannot read api\.token_file"):
        daemon_endpoint(str(path))


def hook_config(tmp_path: Path, port: int, state_dir: Path | None) -> Path:
    """The config file the hooks read: the daemon's address, its token and its state_dir."""
    (tmp_path / "token").write_text(TOKEN + "\n")
    path = tmp_path / "hooks.yaml"
    config: dict[str, Any] = {"api": {"listen": f"127.0.0.1:{port}", "token_file": "token"}}
    if state_dir is not None:
        config["state_dir"] = str(state_dir)
    path.write_text(yaml.safe_dump(config))
    return path


async def test_a_hook_run_while_the_daemon_is_down_is_served_when_it_starts(
    api_factory: Callable[..., Awaitable[Api]],
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Bug 11: the hook exited 1 and the job waited for ResumeTimeout."""
    state_dir = tmp_path / "state"
    spool.prepare(spool.spool_dir(state_dir))  # made by the daemon when it last ran
    resume_file = tmp_path / "resume.json"
    resume_file.write_text(json.dumps({"jobs": [{"job_id": 9, "nodes": "cloud1"}]}))
    monkeypatch.setenv("SLURM_RESUME_FILE", str(resume_file))
    config = hook_config(tmp_path, free_port(), state_dir)  # nothing listens there
    assert hook.main(["-c", str(config), "cloud1"], kind="resume") == 0
    err = capsys.readouterr().err
    assert "Connection refused" in err and "spooled to" in err
    api = await api_factory(state_dir=state_dir)  # the daemon starts
    running = asyncio.create_task(api.slurm.run())
    try:
        assert api.slurm.power is not None
        await api.clock.advance(0)  # the start's first scan
        await api.clock.run_until(slurm_requests_served(api.slurm.power))
        (instance,) = await api.provider.list_instances()
        assert instance.tags[TAG_SLURM_NODE] == "cloud1"
        assert spool.pending(spool.spool_dir(state_dir)) == []
        assert api.slurm.power.launched[0][0] == "cloud1"
    finally:
        running.cancel()
        await asyncio.gather(running, return_exceptions=True)


async def test_a_hook_that_can_neither_reach_nor_spool_fails_with_both_reasons(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    config = hook_config(tmp_path, free_port(), tmp_path / "never-started")
    assert hook.main(["-c", str(config), "cloud1"], kind="suspend") == 1
    err = capsys.readouterr().err
    assert "did not take the request" in err and "not spooled either" in err
    assert "No such file or directory" in err


async def test_a_daemon_that_fails_with_5xx_gets_the_request_spooled(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    async def failing(request: web.Request) -> web.Response:
        return web.json_response({"error": "state file unwritable"}, status=503)

    app = web.Application()
    app.router.add_post("/v1/slurm/{kind}", failing)
    runner, port = await start_http(app, "127.0.0.1", 0)
    try:
        state_dir = tmp_path / "state"
        spool.prepare(spool.spool_dir(state_dir))
        config = hook_config(tmp_path, port, state_dir)
        status = await asyncio.to_thread(
            hook.main, ["-c", str(config), "cloud[1-2]"], kind="resume-fail"
        )
    finally:
        await runner.cleanup()
    assert status == 0 and "HTTP 503" in capsys.readouterr().err
    (path,) = spool.pending(spool.spool_dir(state_dir))
    request = spool.read(path, token=TOKEN)  # signed with the API's token
    assert (request.kind, request.nodes) == ("resume-fail", "cloud[1-2]")


async def test_a_request_spooled_while_the_daemon_was_down_comes_before_the_next_one(
    api_factory: Callable[..., Awaitable[Api]],
) -> None:
    """Slurm resumed cloud1 while the daemon was down (spooled), then suspended it once the
    daemon was back (over HTTP). Served after the suspend, the resume left cloud1 an instance
    while Slurm has it powered down."""
    api = await api_factory()
    assert api.slurm.power is not None
    directory = spool.spool_dir(api.state_dir)
    spool.write(directory, "resume", "cloud1", None, spool.new_request_id(), token=TOKEN)
    status, _ = await post(f"{api.base}/v1/slurm/suspend", {"nodes": "cloud1"})
    assert status == 202
    await api.slurm.serve_spool()  # the periodic scan
    await api.clock.run_until(slurm_requests_served(api.slurm.power))
    assert await api.provider.list_instances() == []
    assert api.slurm.power.state.requests == {} and spool.pending(directory) == []
