"""`shoal run` on the simulated cloud, as a subprocess: one run from a pushed demand to SIGTERM.
In-process, test_service.py starts, serves and stops the same Service on SIGTERM.

Scale-down (idle nodes go after unneeded_time, a busy one stays) is the loop's
(tests/daemon/test_loop.py::test_scale_down_drains_then_terminates_idle_nodes_keeps_busy,
on a FakeClock); the process-level scale-down is test_e2e_aws.py's restart test."""

from __future__ import annotations

import signal
import socket
import time
from typing import Any

import pytest
from shoal.daemon.http import HTTP_SHUTDOWN_TIMEOUT
from shoal.daemon.service import SHUTDOWN_TIMEOUT

pytestmark = pytest.mark.e2e

NODE_TYPE = "c5.xlarge"  # 4 vCPU, 8 GiB: a 4-core job fills one node


def sigterm(daemon: Any) -> tuple[int, float]:
    """SIGTERM the daemon; its exit status and the seconds it took (fails past 10 s)."""
    start = time.monotonic()
    daemon.signal(signal.SIGTERM)
    try:
        code = daemon.proc.wait(timeout=10)
    except Exception:
        pytest.fail(f"still running 10 s after SIGTERM\n{daemon.tail()}")
    return code, time.monotonic() - start


def test_demand_wakes_a_launch_and_sigterm_exits_zero(shoal: Any, e2e: Any) -> None:
    """The daemon's life as a process: a pushed demand wakes a pass that launches (the timer
    is 30 s: only the wake-up, plus the 200 ms debounce, launches in time); SIGTERM, with a
    client holding a PUT open whose body never arrives, exits 0 within HTTP_SHUTDOWN_TIMEOUT
    (aiohttp's default is 60 s: before, shoal still ran 10 s later)."""
    port = e2e.free_port()
    daemon = shoal(e2e.simulated_config(port)).start()
    e2e.wait_for("the first pass", lambda: daemon.status()["passes"] >= 1, 5.0)
    assert e2e.metric(daemon.metrics(), "shoal_scale_ups_total", node_type=NODE_TYPE) == 0

    start = time.monotonic()
    reply = daemon.put_demand({"jobs": [e2e.job(5, cores=4)], "running": []})
    assert reply.status == 200, reply.text

    def launched() -> float | None:
        ups = e2e.metric(daemon.metrics(), "shoal_scale_ups_total", node_type=NODE_TYPE)
        return ups if ups >= 5 else None

    ups = e2e.wait_for("5 launches in /metrics", launched, 5.0, on_timeout=daemon.tail)
    latency = time.monotonic() - start
    print(f"\ndemand -> addNodes visible in /metrics: {latency * 1000:.0f} ms")
    assert ups == 5, f"launched {ups} nodes for 5 single-node jobs\n{daemon.tail()}"
    # The timer is 30 s: launching well before it proves the demand woke the loop. The
    # latency itself is a benchmark figure (bench/footprint.py), not a timed test.
    assert latency < 15.0, f"demand to launch took {latency:.3f}s\n{daemon.tail()}"

    status = daemon.status()
    launches = status["last_plan"]["launches"]
    assert [(x["node_type"], x["count"]) for x in launches] == [(NODE_TYPE, 5)], status
    assert status["last_pass"]["launched"] == 5, status["last_pass"]
    assert status["demand"]["queued_jobs"] == 5
    assert status["last_plan"]["targets"] == {NODE_TYPE: 5}

    with socket.create_connection(("127.0.0.1", port), timeout=5) as client:
        client.sendall(
            b"PUT /v1/demand HTTP/1.1\r\nHost: shoal\r\nContent-Type: application/json\r\n"
            b'Content-Length: 100\r\n\r\n{"jobs": '
        )
        code, took = sigterm(daemon)
    print(f"SIGTERM with a request held open -> exit {code} in {took * 1000:.0f} ms")
    assert code == 0, daemon.tail()
    log = daemon.log_path.read_text()
    assert "event=stopped" in log, daemon.tail()
    assert "event=shutdown_timeout" not in log, daemon.tail()
    assert took < HTTP_SHUTDOWN_TIMEOUT + 4 < SHUTDOWN_TIMEOUT, daemon.tail()  # 1.1 s measured
