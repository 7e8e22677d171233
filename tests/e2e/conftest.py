"""End-to-end fixtures: `shoal run` as a real subprocess on a free loopback port.

Each test writes its own config to ``tmp_path``. ``ShoalProcess`` starts the daemon with
stdout/stderr going to a log file (never a pipe that could fill up), waits for ``/readyz``
with a bounded deadline, talks to it over plain HTTP (urllib, no event loop of ours), and is
always killed in fixture teardown, also when the test failed. Assertion messages carry the
tail of the daemon's log so a failure explains itself.
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import subprocess
import urllib.error
import urllib.request
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any, TypeVar

import configs
import pytest
import yaml
from configs import merge
from procs import free_port, poll_until, shoal_argv, stop_process

T = TypeVar("T")

GIB = 1024**3
START_DEADLINE = 15.0  # seconds for a daemon to answer /readyz
POLL = 0.01  # seconds between polls of the daemon's HTTP endpoints


def simulated_config(port: int, **overrides: Any) -> dict[str, Any]:
    """A valid config on the simulated cloud with short timings, listening on ``port``."""
    base = configs.config(
        cluster_name="e2e",
        provider={"zone": "sim-1a", "boot_delay": "200ms", "join_delay": "200ms"},
        node_types=[{"type": "c5.xlarge", "min": 0, "max": 20}],
        scaler={
            "interval": "30s",
            "debounce": "200ms",
            "beta_inertia": 0.0,
            "unneeded_time": "10m",
            "scale_down_budget": 1.0,
            "join_timeout": "1m",
            "retry": {"attempts": 3, "initial": "100ms", "max": "500ms", "deadline": "5s"},
        },
        demand={"api": True, "demo": False, "reports": ["queued", "running"]},
        api={"listen": f"127.0.0.1:{port}"},
        log_level="INFO",
    )
    return merge(base, overrides)


def wait_for(
    what: str,
    probe: Callable[[], T | None],
    deadline: float,
    interval: float = POLL,
    on_timeout: Callable[[], str] = lambda: "",
) -> T:
    """``poll_until``, failing the test (as ``pytest.fail``) when it times out."""
    return poll_until(
        what, probe, deadline, interval=interval, explain=on_timeout, error=pytest.fail.Exception
    )


class HttpResult:
    def __init__(self, status: int, body: bytes, headers: dict[str, str]) -> None:
        self.status = status
        self.body = body
        self.headers = headers

    def json(self) -> Any:
        return json.loads(self.body)

    @property
    def text(self) -> str:
        return self.body.decode("utf-8", "replace")


def http(
    method: str,
    url: str,
    body: bytes | None = None,
    timeout: float = 5.0,
    headers: dict[str, str] | None = None,
) -> HttpResult:
    request = urllib.request.Request(url, data=body, method=method, headers=headers or {})
    try:
        with urllib.request.urlopen(request, timeout=timeout) as response:
            return HttpResult(response.status, response.read(), dict(response.headers))
    except urllib.error.HTTPError as exc:
        with exc:
            return HttpResult(exc.code, exc.read(), dict(exc.headers))


def parse_metrics(text: str) -> dict[tuple[str, frozenset[tuple[str, str]]], float]:
    """Prometheus text exposition -> {(name, labels): value} (comments skipped)."""
    out: dict[tuple[str, frozenset[tuple[str, str]]], float] = {}
    line_re = re.compile(r"^([a-zA-Z_:][a-zA-Z0-9_:]*)(\{(.*)\})?\s+(\S+)")
    label_re = re.compile(r'([a-zA-Z_][a-zA-Z0-9_]*)="((?:[^"\\]|\\.)*)"')
    for line in text.splitlines():
        if not line or line.startswith("#"):
            continue
        match = line_re.match(line)
        if match is None:
            continue
        labels = frozenset(label_re.findall(match.group(3) or ""))
        out[(match.group(1), labels)] = float(match.group(4))
    return out


def metric(samples: dict[Any, float], name: str, **labels: str) -> float:
    """Sum of the samples of ``name`` whose labels include ``labels``."""
    want = set(labels.items())
    return sum(v for (n, ls), v in samples.items() if n == name and want <= set(ls))


class ShoalProcess:
    """One `shoal run` subprocess with its config file and log."""

    def __init__(self, workdir: Path, config: dict[str, Any], name: str = "shoal") -> None:
        self.workdir = workdir
        self.config = config
        self.name = name
        self.config_path = workdir / f"{name}.yaml"
        self.log_path = workdir / f"{name}.log"
        self.proc: subprocess.Popen[bytes] | None = None
        self.starts = 0
        host, _, port = config["api"]["listen"].rpartition(":")
        self.base = f"http://{host}:{port}"

    # -- lifecycle ---------------------------------------------------------------------------

    def start(self, env: dict[str, str] | None = None, wait_ready: bool = True) -> ShoalProcess:
        assert self.proc is None or self.proc.poll() is not None, "already running"
        self.config_path.write_text(yaml.safe_dump(self.config, sort_keys=False))
        self.starts += 1
        log = self.log_path.open("ab")
        log.write(f"----- start {self.starts} -----\n".encode())
        log.flush()
        full_env = {**os.environ, "PYTHONUNBUFFERED": "1", **(env or {})}
        with log:
            self.proc = subprocess.Popen(
                [*shoal_argv(), "run", "-c", str(self.config_path)],
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
                env=full_env,
                cwd=self.workdir,
            )
        if wait_ready:
            self.wait_ready()
        return self

    @property
    def pid(self) -> int:
        assert self.proc is not None
        return self.proc.pid

    def alive(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def wait_ready(self, deadline: float = START_DEADLINE) -> None:
        def ready() -> bool:
            if not self.alive():
                assert self.proc is not None
                pytest.fail(f"shoal exited with {self.proc.returncode} before ready\n{self.tail()}")
            try:
                return self.get("/readyz", timeout=1.0).status == 200
            except OSError:
                return False

        wait_for("shoal /readyz", ready, deadline, interval=0.05, on_timeout=self.tail)

    def signal(self, sig: int) -> None:
        assert self.proc is not None
        self.proc.send_signal(sig)

    def kill9(self) -> None:
        assert self.proc is not None
        self.proc.kill()
        self.proc.wait(timeout=10)

    def stop(self) -> int | None:
        """SIGTERM, then SIGKILL after 10 s; returns the exit code (None if never started)."""
        return stop_process(self.proc)

    def tail(self, lines: int = 60) -> str:
        try:
            text = self.log_path.read_text(errors="replace")
        except OSError:
            return "(no log)"
        return f"--- {self.log_path} (last {lines} lines) ---\n" + "\n".join(
            text.splitlines()[-lines:]
        )

    # -- HTTP --------------------------------------------------------------------------------

    def get(self, path: str, timeout: float = 5.0) -> HttpResult:
        return http("GET", self.base + path, timeout=timeout)

    def put_demand(self, body: Any) -> HttpResult:
        raw = body if isinstance(body, bytes) else json.dumps(body).encode()
        headers = {"Content-Type": "application/json"}
        return http("PUT", self.base + "/v1/demand", raw, headers=headers)

    def status(self) -> dict[str, Any]:
        result = self.get("/v1/status")
        assert result.status == 200, f"/v1/status -> {result.status}: {result.text}"
        return result.json()

    def metrics(self) -> dict[Any, float]:
        result = self.get("/metrics")
        assert result.status == 200, f"/metrics -> {result.status}: {result.text}"
        return parse_metrics(result.text)

    def wait_passes(self, more: int) -> dict[str, Any]:
        """Wait until ``more`` passes have started and finished since this call; return
        /v1/status then. A test that asserts nothing more happened waits here rather than
        sleeping, so it cannot pass unchecked when no pass ran."""
        first = self.status()["passes"] + more  # a pass under way now does not count

        def done() -> dict[str, Any] | None:
            status = self.status()
            last = status["last_pass"]
            return status if last is not None and last["number"] >= first else None

        return wait_for(f"{more} more passes", done, 15.0, on_timeout=self.tail)

    def node_ids(self, state: str | None = None) -> set[str]:
        out: set[str] = set()
        for states in self.status()["nodes"].values():
            for name, items in states.items():
                if state is None or name == state:
                    out.update(item["id"] for item in items)
        return out


def job(count: int, cores: float = 1, memory: str = "2GiB", **extra: Any) -> dict[str, Any]:
    return {
        "cores": cores,
        "memory": memory,
        "disk": "1GiB",
        "wall_time": "2h",  # longer than target_time: one job per node lane, no queueing
        "preemptible": False,
        "count": count,
        **extra,
    }


def running_job(node: str, cores: float = 1, memory: str = "2GiB") -> dict[str, Any]:
    return {
        "node": node,
        "cores": cores,
        "memory": memory,
        "disk": "1GiB",
        "wall_time": "1h",
        "elapsed": "3m",
    }


class E2E:
    """The helpers above, handed to tests by the ``e2e`` fixture (tests never import conftest:
    several conftest modules share that name)."""

    GIB = GIB
    ShoalProcess = ShoalProcess
    free_port = staticmethod(free_port)
    merge = staticmethod(merge)
    simulated_config = staticmethod(simulated_config)
    wait_for = staticmethod(wait_for)
    http = staticmethod(http)
    parse_metrics = staticmethod(parse_metrics)
    metric = staticmethod(metric)
    shoal_argv = staticmethod(shoal_argv)
    job = staticmethod(job)
    running_job = staticmethod(running_job)


@pytest.fixture(scope="session")
def e2e() -> type[E2E]:
    return E2E


@pytest.fixture
def shoal(tmp_path: Path) -> Iterator[Callable[..., ShoalProcess]]:
    """Factory: ``shoal(config, name=...)`` -> a not yet started ShoalProcess; all are killed
    at teardown, whatever the test did."""
    made: list[ShoalProcess] = []

    def make(config: dict[str, Any], name: str = "shoal") -> ShoalProcess:
        process = ShoalProcess(tmp_path, config, name)
        made.append(process)
        return process

    try:
        yield make
    finally:
        for process in made:
            if process.proc is not None and process.proc.poll() is None:
                with contextlib.suppress(ProcessLookupError):
                    process.proc.kill()
                with contextlib.suppress(subprocess.TimeoutExpired):
                    process.proc.wait(timeout=10)
