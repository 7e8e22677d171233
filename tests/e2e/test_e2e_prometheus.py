"""A real Prometheus scrapes a real `shoal run`, and its query API returns shoal's gauges."""

from __future__ import annotations

import contextlib
import json
import shutil
import subprocess
import time
import urllib.parse
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml

pytestmark = pytest.mark.e2e

PROMETHEUS = shutil.which("prometheus") or "/usr/bin/prometheus"
NODE_TYPE = "c5.xlarge"


@pytest.fixture
def prometheus(tmp_path: Path, e2e: Any) -> Iterator[Any]:
    """Factory: start Prometheus scraping ``target`` every second; killed at teardown."""
    if not Path(PROMETHEUS).is_file():
        pytest.skip("prometheus not installed (Debian package `prometheus`; make tools)")
    procs: list[subprocess.Popen[bytes]] = []

    def start(target: str) -> str:
        port = e2e.free_port()
        config = {
            "global": {"scrape_interval": "1s", "scrape_timeout": "1s"},
            "scrape_configs": [{"job_name": "shoal", "static_configs": [{"targets": [target]}]}],
        }
        config_path = tmp_path / "prometheus.yml"
        config_path.write_text(yaml.safe_dump(config))
        log = (tmp_path / "prometheus.log").open("wb")
        with log:
            procs.append(
                subprocess.Popen(
                    [
                        PROMETHEUS,
                        f"--config.file={config_path}",
                        f"--storage.tsdb.path={tmp_path / 'prometheus-data'}",
                        f"--web.listen-address=127.0.0.1:{port}",
                        "--log.level=warn",
                    ],
                    stdin=subprocess.DEVNULL,
                    stdout=log,
                    stderr=subprocess.STDOUT,
                    cwd=tmp_path,
                )
            )
        return f"http://127.0.0.1:{port}"

    try:
        yield start
    finally:
        for proc in procs:
            if proc.poll() is None:
                proc.kill()
            with contextlib.suppress(subprocess.TimeoutExpired):
                proc.wait(timeout=10)


def _query(e2e: Any, base: str, promql: str) -> list[dict[str, Any]] | None:
    url = f"{base}/api/v1/query?" + urllib.parse.urlencode({"query": promql})
    try:
        reply = e2e.http("GET", url, timeout=2.0)
    except OSError:
        return None  # not listening yet
    if reply.status != 200:
        return None
    body = json.loads(reply.body)
    assert body["status"] == "success", body
    return body["data"]["result"]


def test_prometheus_scrapes_shoal_nodes(
    shoal: Any, e2e: Any, prometheus: Any, tmp_path: Path
) -> None:
    config = e2e.simulated_config(e2e.free_port(), scaler={"interval": "300ms"})
    daemon = shoal(config).start()
    assert daemon.put_demand({"jobs": [e2e.job(3, cores=4)], "running": []}).status == 200
    e2e.wait_for(
        "3 ready nodes", lambda: len(daemon.node_ids("ready")) == 3, 10.0, on_timeout=daemon.tail
    )
    base = prometheus(daemon.base.removeprefix("http://"))

    def log() -> str:
        text = (tmp_path / "prometheus.log").read_text(errors="replace")
        return f"--- prometheus.log ---\n{text[-3000:]}\n{daemon.tail(20)}"

    def ready_nodes() -> list[dict[str, Any]] | None:
        result = _query(e2e, base, f'shoal_nodes{{node_type="{NODE_TYPE}",state="ready"}}')
        return result or None

    start = time.monotonic()
    result = e2e.wait_for("shoal_nodes in Prometheus", ready_nodes, 20.0, 0.2, on_timeout=log)
    print(f"\nshoal_nodes queryable in Prometheus after {time.monotonic() - start:.1f}s")
    assert len(result) == 1, result
    sample = result[0]
    assert sample["metric"]["__name__"] == "shoal_nodes"
    assert sample["metric"]["job"] == "shoal"
    assert float(sample["value"][1]) == 3.0, sample

    # The scrape target is healthy and the bare name returns every state of the type.
    everything = _query(e2e, base, "shoal_nodes")
    assert everything is not None
    states = {s["metric"]["state"]: float(s["value"][1]) for s in everything}
    assert states.get("ready") == 3.0, states
    assert states.get("booting") == 0.0, states
    up = _query(e2e, base, 'up{job="shoal"}')
    assert up and float(up[0]["value"][1]) == 1.0, up
