"""Daemon footprint: `shoal run` on the simulated cloud holding ~1,000 nodes for 100,000 jobs.

    .venv/bin/python bench/footprint.py [--jobs 100000] [--shapes 20] [--window 30]
                                        [--interval 10s] [--check]

Starts `shoal run` as a subprocess (simulated cloud, fast boot and join, node type max 2,000,
config.example.yaml's 10 s scale interval) and pushes one demand of 100,000 queued jobs
in 20 shapes (1 core, 1-3 GiB, over 2 h each: 96 fit an m5.24xlarge, so ~1,042 nodes). It prints

- demand-to-addNodes latency: from the PUT to the launch visible in /metrics
  (shoal_scale_ups_total), polled every 2 ms;
- CPU share between demand changes: utime+stime of the daemon (/proc/<pid>/stat) over a
  quiet window with every node up and no HTTP requests, divided by the window;
- RSS (VmRSS from /proc/<pid>/status) idle before the demand and with the nodes up, and
  the peak (VmHWM);

and whether each meets its target (< 1 s, < 5 % of a core, < 150 MB). There is no peer
daemon to run beside it, so the idle daemon is the reference: the RSS line shows what
1,000 nodes and 100,000 jobs add to it. ``--check`` exits 1 when a target is missed.
Linux only (/proc).
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "tests" / "e2e"))
from procs import free_port, poll_until, shoal_argv  # noqa: E402  (shared with the e2e tests)

NODE_TYPE = "m5.24xlarge"  # 96 vCPU, 384 GiB
CORES_PER_NODE = 96
TARGET_RSS_MB = 150.0
TARGET_CPU_SHARE = 0.05
TARGET_LATENCY_S = 1.0
CLOCK_TICKS = os.sysconf("SC_CLK_TCK")


def config_yaml(port: int, interval: str, max_nodes: int) -> str:
    return f"""\
cluster_name: footprint
provider:
  kind: simulated
  zone: sim-1a
  boot_delay: 100ms
  join_delay: 100ms
node_types:
  - type: {NODE_TYPE}
    min: 0
    max: {max_nodes}
scaler:
  interval: {interval}
  debounce: 200ms
  beta_inertia: 0.0
  unneeded_time: 1h
demand:
  api: true
  demo: false
  reports: [queued, running]
api:
  listen: 127.0.0.1:{port}
log_level: WARNING
"""


def http(method: str, url: str, body: bytes | None = None) -> tuple[int, bytes]:
    request = urllib.request.Request(
        url, data=body, method=method, headers={"Content-Type": "application/json"}
    )
    try:
        with urllib.request.urlopen(request, timeout=10) as reply:
            return reply.status, reply.read()
    except urllib.error.HTTPError as exc:
        with exc:
            return exc.code, exc.read()


def metric_sum(text: str, name: str, label: str = "") -> float:
    total = 0.0
    for line in text.splitlines():
        if line.startswith(name) and (line[len(name)] in " {") and label in line:
            total += float(line.rsplit(" ", 1)[1])
    return total


def cpu_seconds(pid: int) -> float:
    stat = Path(f"/proc/{pid}/stat").read_text()
    fields = stat[stat.rindex(")") + 2 :].split()  # after "pid (comm) "
    utime, stime = int(fields[11]), int(fields[12])  # fields 14 and 15 of proc(5)
    return (utime + stime) / CLOCK_TICKS


def status_kib(pid: int, key: str) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith(key + ":"):
            return int(line.split()[1])
    raise KeyError(key)


def wait(what: str, probe, deadline: float, interval: float, log: Path):
    def tail() -> str:
        return "\n".join(log.read_text(errors="replace").splitlines()[-30:])

    return poll_until(what, probe, deadline, interval=interval, explain=tail, error=SystemExit)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--jobs", type=int, default=100_000, help="queued jobs (default 100000)")
    parser.add_argument("--shapes", type=int, default=20, help="distinct job shapes (default 20)")
    parser.add_argument("--window", type=float, default=30.0, help="quiet window, seconds")
    parser.add_argument("--interval", default="10s", help="scale interval (default 10s)")
    parser.add_argument("--check", action="store_true", help="exit 1 when a target is missed")
    args = parser.parse_args()
    if not Path("/proc/self/stat").exists():
        print("footprint: needs Linux /proc", file=sys.stderr)
        return 2

    nodes_wanted = -(-args.jobs // CORES_PER_NODE)
    port = free_port()
    base = f"http://127.0.0.1:{port}"
    with tempfile.TemporaryDirectory(prefix="shoal-footprint-") as tmp:
        workdir = Path(tmp)
        config = workdir / "footprint.yaml"
        config.write_text(config_yaml(port, args.interval, max(2 * nodes_wanted, 10)))
        log = workdir / "shoal.log"
        with log.open("wb") as out:
            proc = subprocess.Popen(
                [*shoal_argv(), "run", "-c", str(config)],
                stdin=subprocess.DEVNULL,
                stdout=out,
                stderr=subprocess.STDOUT,
                cwd=ROOT,
            )
        try:
            return measure(args, proc, base, log, nodes_wanted)
        finally:
            if proc.poll() is None:
                proc.send_signal(signal.SIGTERM)
                try:
                    proc.wait(timeout=10)
                except subprocess.TimeoutExpired:
                    proc.kill()
                    proc.wait(timeout=10)


def measure(args, proc: subprocess.Popen, base: str, log: Path, nodes_wanted: int) -> int:
    def ready() -> bool:
        if proc.poll() is not None:
            raise SystemExit(f"shoal exited with {proc.returncode}\n{log.read_text()}")
        try:
            return http("GET", base + "/readyz")[0] == 200
        except OSError:
            return False

    wait("/readyz", ready, 15.0, 0.05, log)
    time.sleep(1.0)  # let the first pass and imports settle
    rss_idle = status_kib(proc.pid, "VmRSS")

    # --shapes distinct job shapes (memory and run time differ), counts summing to --jobs.
    # Every job takes one core and at most 3 GiB, so cores limit a node: ~jobs/96 nodes.
    shapes = max(1, min(args.shapes, args.jobs))
    demand = {
        "jobs": [
            {
                "cores": 1,
                "memory": f"{1024 + (i * 2048) // shapes}MiB",
                "disk": "100MiB",  # not the 50 GiB root volume either
                "wall_time": f"{7200 + i}s",  # over target_time: one job per core lane
                "preemptible": False,
                "count": args.jobs // shapes + (1 if i < args.jobs % shapes else 0),
            }
            for i in range(shapes)
        ],
        "running": [],
    }
    start = time.monotonic()
    code, body = http("PUT", base + "/v1/demand", json.dumps(demand).encode())
    if code != 200:
        raise SystemExit(f"PUT /v1/demand -> {code}: {body!r}")

    def launched() -> float | None:
        return (
            metric_sum(http("GET", base + "/metrics")[1].decode(), "shoal_scale_ups_total") or None
        )

    wait("the first launch", launched, 30.0, 0.002, log)
    latency = time.monotonic() - start

    status = json.loads(http("GET", base + "/v1/status")[1])
    queued = status["demand"]["queued_jobs"]
    target = sum(status["last_plan"]["targets"].values())
    if abs(target - nodes_wanted) > 0.05 * nodes_wanted:
        print(f"warning: the plan wants {target} nodes, not ~{nodes_wanted}", file=sys.stderr)

    def all_ready() -> float | None:
        text = http("GET", base + "/metrics")[1].decode()
        count = metric_sum(text, "shoal_nodes", 'state="ready"')
        return count if count >= target and count else None

    nodes = wait(f"{target} ready nodes", all_ready, 120.0, 0.5, log)
    time.sleep(1.0)  # the pass that saw them all join is over

    cpu_before = cpu_seconds(proc.pid)
    wall_before = time.monotonic()
    time.sleep(args.window)  # quiet: no demand change, no HTTP request
    cpu_share = (cpu_seconds(proc.pid) - cpu_before) / (time.monotonic() - wall_before)
    rss = status_kib(proc.pid, "VmRSS")
    peak = status_kib(proc.pid, "VmHWM")

    text = http("GET", base + "/metrics")[1].decode()
    passes = metric_sum(text, "shoal_pass_duration_seconds_count")
    pass_mean = metric_sum(text, "shoal_pass_duration_seconds_sum") / max(passes, 1)

    proc.send_signal(signal.SIGTERM)
    stop_start = time.monotonic()
    exit_code = proc.wait(timeout=15)
    stop = time.monotonic() - stop_start

    rss_mb, idle_mb, peak_mb = rss / 1024, rss_idle / 1024, peak / 1024
    ok_rss = rss_mb < TARGET_RSS_MB and peak_mb < TARGET_RSS_MB
    ok_cpu = cpu_share < TARGET_CPU_SHARE
    ok_latency = latency < TARGET_LATENCY_S

    def verdict(ok: bool) -> str:
        return "met" if ok else "NOT MET"

    print(
        f"shoal footprint: {queued:,} queued jobs in {shapes} shapes on {int(nodes):,} ready "
        f"{NODE_TYPE} nodes"
    )
    print(f"  plan target {target:,} nodes; scale interval {args.interval}; simulated cloud")
    print(
        f"  demand -> addNodes latency  {latency * 1000:8.0f} ms      target < "
        f"{TARGET_LATENCY_S * 1000:.0f} ms   {verdict(ok_latency)}"
    )
    print(
        f"  CPU share, {args.window:.0f} s quiet window {cpu_share * 100:8.2f} % core  target < "
        f"{TARGET_CPU_SHARE * 100:.0f} %      {verdict(ok_cpu)}"
    )
    print(
        f"  RSS with nodes up           {rss_mb:8.1f} MB      target < {TARGET_RSS_MB:.0f} MB  "
        f"  {verdict(ok_rss)} (peak {peak_mb:.1f} MB; idle daemon {idle_mb:.1f} MB, "
        f"x{rss_mb / idle_mb:.2f})"
    )
    print(f"  mean pass duration          {pass_mean * 1000:8.1f} ms over {int(passes)} passes")
    print(f"  SIGTERM -> exit {exit_code} in {stop * 1000:.0f} ms")
    all_met = ok_rss and ok_cpu and ok_latency
    print("all targets met" if all_met else "TARGETS MISSED")
    return 1 if args.check and not all_met else 0


if __name__ == "__main__":
    sys.exit(main())
