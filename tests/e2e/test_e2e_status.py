"""`shoal status` against a real `shoal run` on the simulated cloud (loopback, free port): the
tables, `--json`, the plain-text fallback when rich is not installed, and the message once the
daemon is gone."""

from __future__ import annotations

import json
import os
import subprocess
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

pytestmark = pytest.mark.e2e

TOKEN = "s3cret-status-token"


def run_status(e2e: Any, *args: str, env: dict[str, str] | None = None) -> Any:
    return subprocess.run(
        [*e2e.shoal_argv(), "status", *args],
        capture_output=True,
        text=True,
        timeout=60,
        env={**os.environ, **(env or {})},
    )


def test_status_prints_a_running_daemons_state(
    e2e: Any, shoal: Callable[..., Any], tmp_path: Path
) -> None:
    token_file = tmp_path / "token"
    token_file.write_text(TOKEN + "\n")
    config = e2e.simulated_config(e2e.free_port(), api={"token_file": str(token_file)})
    daemon = shoal(config).start()
    body = {"jobs": [e2e.job(3, cores=2, memory="3GiB")], "running": []}
    headers = {"Authorization": f"Bearer {TOKEN}", "Content-Type": "application/json"}
    put = e2e.http("PUT", daemon.base + "/v1/demand", json.dumps(body).encode(), headers=headers)
    assert put.status == 200, put.text
    e2e.wait_for(
        "a pass planned from the pushed demand",
        lambda: daemon.status()["demand_source"] == "push",
        10.0,
        on_timeout=daemon.tail,
    )
    cfg = str(daemon.config_path)

    shown = run_status(e2e, "-c", cfg)
    assert shown.returncode == 0, shown.stderr
    out = shown.stdout
    assert f"shoal at {daemon.base}: ready, healthy" in out
    for cell in ("Nodes by type and state", "c5.xlarge", "fed the last pass", "push"):
        assert cell in out, out
    assert "Last plan: target cost $" in out and "queued jobs need" in out  # the reason

    raw = run_status(e2e, "--url", daemon.base, "--json")
    assert raw.returncode == 0, raw.stderr
    data = json.loads(raw.stdout)
    assert data["demand_source"] == "push" and data["demand"]["queued_jobs"] == 3

    # a minimal install: rich (an extra) cannot be imported
    hidden = tmp_path / "no-rich"
    (hidden / "rich").mkdir(parents=True)
    (hidden / "rich" / "__init__.py").write_text("raise ImportError('rich is not installed')\n")
    pythonpath = os.pathsep.join(filter(None, [str(hidden), os.environ.get("PYTHONPATH")]))
    plain = run_status(e2e, "-c", cfg, env={"PYTHONPATH": pythonpath})
    assert plain.returncode == 0, plain.stderr
    assert "Nodes by type and state\n-----------------------\n" in plain.stdout
    assert "─" not in plain.stdout

    assert daemon.stop() == 0
    gone = run_status(e2e, "-c", cfg)
    assert gone.returncode == 1
    assert f"no shoal daemon at {daemon.base}/v1/status: connection refused" in gone.stderr
