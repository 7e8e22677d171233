"""Slurm hook latency: how long slurmctld waits for ``shoal-slurm-resume``.

    .venv/bin/python bench/slurm_hook.py [--runs 30]

Starts ``shoal run`` (simulated cloud, ``slurm.mode: power_save``, a bearer token) and runs the
hooks as slurmctld would, one node name per run, timing each from the fork to the exit:

- ``shoal-slurm-resume -c CONFIG NODE`` (what slurm.conf names),
- ``shoal slurm-resume -c CONFIG NODE`` (the subcommand, through shoal's CLI),
- the hand-off alone: the same POST from this process (no interpreter start),

against the peer every Python hook pays: ``python -c pass`` (the interpreter's start-up),
and prints the medians, the 95th percentiles and the ratio to the peer. The daemon answers
once the request is on disk, before any launch, so what remains is start-up and one
loopback round trip. Linux; no Slurm needed (the daemon's Slurm reads fail and are ignored).
"""

from __future__ import annotations

import argparse
import http.client
import json
import signal
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.request
from collections.abc import Callable
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "tests" / "e2e"))
from procs import free_port, stop_process  # noqa: E402  (shared with the e2e tests)

BIN = Path(sys.executable).parent
TOKEN = "bench-token"


def config(directory: Path, port: int) -> str:
    (directory / "token").write_text(TOKEN)
    return f"""\
cluster_name: bench
state_dir: {directory / "state"}
provider: {{kind: simulated, zone: sim-1a, boot_delay: 100ms, join_delay: 100ms}}
node_types: [{{type: c5.xlarge, max: 10000}}]
demand: {{api: false, slurm: true}}
slurm:
  mode: power_save
  squeue: /bin/false
  sinfo: /bin/false
  scontrol: /bin/false
  poll_interval: 1h
  cleanup_interval: 1h
  node_types: {{node: c5.xlarge}}
api: {{listen: "127.0.0.1:{port}", token_file: token}}
log_level: WARNING
"""


def timed(run: Callable[[int], None], runs: int) -> list[float]:
    times = []
    for i in range(runs):
        start = time.perf_counter()
        run(i)
        times.append(time.perf_counter() - start)
    return times


def summary(times: list[float]) -> str:
    ordered = sorted(times)
    p95 = ordered[min(len(ordered) - 1, round(0.95 * (len(ordered) - 1)))]
    return f"median {statistics.median(times) * 1000:.1f} ms, p95 {p95 * 1000:.1f} ms"


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--runs", type=int, default=30)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        directory = Path(tmp)
        port = free_port()
        path = directory / "shoal.yaml"
        path.write_text(config(directory, port))
        log = (directory / "shoal.log").open("wb")
        daemon = subprocess.Popen(
            [str(BIN / "shoal"), "run", "-c", str(path)], stdout=log, stderr=subprocess.STDOUT
        )
        try:
            deadline = time.monotonic() + 30
            while True:
                try:
                    with urllib.request.urlopen(f"http://127.0.0.1:{port}/v1/slurm", timeout=1):
                        break
                except OSError:
                    if time.monotonic() > deadline or daemon.poll() is not None:
                        raise SystemExit("shoal did not start") from None
                    time.sleep(0.1)

            def hook(argv: list[str]) -> Callable[[int], None]:
                def run(i: int) -> None:
                    subprocess.run(
                        [*argv, "-c", str(path), f"node{i}"], check=True, capture_output=True
                    )

                return run

            def post(i: int) -> None:
                connection = http.client.HTTPConnection("127.0.0.1", port, timeout=5)
                body = json.dumps({"nodes": f"node{10_000 + args.runs + i}", "resume_file": None})
                connection.request(
                    "POST",
                    "/v1/slurm/resume",
                    body=body,
                    headers={"Authorization": f"Bearer {TOKEN}"},
                )
                assert connection.getresponse().status == 202
                connection.close()

            peer = timed(
                lambda i: subprocess.run([sys.executable, "-c", "pass"], check=True), args.runs
            )
            script = timed(hook([str(BIN / "shoal-slurm-resume")]), args.runs)
            subcommand = timed(
                lambda i: hook([str(BIN / "shoal"), "slurm-resume"])(i + args.runs), args.runs
            )
            handoff = timed(post, args.runs)
        finally:
            try:
                if stop_process(daemon, grace=20) == -signal.SIGKILL:  # SIGTERM was not enough
                    tail = (directory / "shoal.log").read_text(errors="replace").splitlines()[-40:]
                    why = "shoal did not stop within 20 s of SIGTERM:\n" + "\n".join(tail)
                    raise SystemExit(why)
            finally:
                log.close()
    ratio = statistics.median(script) / statistics.median(peer)
    print(
        f"shoal-slurm-resume: {summary(script)} | python -c pass: {summary(peer)} | "
        f"ratio {ratio:.2f}x"
    )
    print(
        f"shoal slurm-resume (CLI): {summary(subcommand)} | ratio "
        f"{statistics.median(subcommand) / statistics.median(peer):.2f}x"
    )
    print(f"hand-off alone (POST -> 202, request on disk): {summary(handoff)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
