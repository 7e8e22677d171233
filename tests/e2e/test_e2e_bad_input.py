"""Malformed configs refused by `shoal check-config` and `shoal run` (exit 2, the field named),
and malformed demand bodies refused by a running daemon (400, the field named, demand kept).

The malformed configs go through the command line's ``main`` in this process (a Python start
per case cost four seconds each); ``REAL_PROCESS`` cases and the tests below them run the
installed ``shoal`` script, so exit status and stderr are also checked from outside; the
other commands run in this process too."""

from __future__ import annotations

import json
import subprocess
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml
from shoal.daemon.cli import main

pytestmark = pytest.mark.e2e

# The CLI's handling of each kind of defect: a missing key, an unknown one, one across fields,
# one only the real process shows (``REAL_PROCESS``), and a file that is no config at all. The
# field-by-field rules are tests/daemon/test_config.py's (``MALFORMED``, through parse_config).
# (id, overrides merged into a valid config (None deletes a key) or raw YAML text,
#  the field path the message must name, a fragment of what it must say)
BAD_CONFIGS: list[tuple[str, dict[str, Any] | str, str, str]] = [
    ("no-cluster-name", {"cluster_name": None}, "cluster_name", "required"),
    (
        "min-above-max",
        {"node_types": [{"type": "c5.xlarge", "min": 5, "max": 2}]},
        "node_types[0].min, node_types[0].max",
        "greater than max",
    ),
    ("scaler-typo", {"scaler": {"intervall": "5s"}}, "scaler.intervall", "unknown key"),
    (
        "listen-exposed",
        {"api": {"listen": "0.0.0.0:8089"}},
        "api.listen, api.token_file",
        "token_file",
    ),
    (
        "yaml-syntax",
        "cluster_name: [unclosed\nprovider: {kind: simulated\n",
        "bad.yaml line 2, column 9",
        "YAML syntax error",
    ),
    ("top-level-list", "- cluster_name: x\n", "(top level)", "mapping"),
    ("empty-file", "", "(top level)", "empty"),
]


def _write(tmp_path: Path, e2e: Any, case: dict[str, Any] | str) -> Path:
    path = tmp_path / "bad.yaml"
    if isinstance(case, str):
        path.write_text(case)
    else:
        config = e2e.simulated_config(e2e.free_port())
        path.write_text(yaml.safe_dump(e2e.merge(config, case), sort_keys=False))
    return path


def _run(argv: list[str], cwd: Path) -> subprocess.CompletedProcess[str]:
    try:
        # A config that wrongly passes would start the daemon: bounded, then killed.
        return subprocess.run(
            argv, capture_output=True, text=True, timeout=20, cwd=cwd, stdin=subprocess.DEVNULL
        )
    except subprocess.TimeoutExpired as exc:
        pytest.fail(f"{argv} did not exit (config accepted?): {exc.stderr!r}")


def _shoal(
    argv: list[str], cwd: Path, e2e: Any, capsys: pytest.CaptureFixture[str], real: bool = False
) -> tuple[int, str, str]:
    """``shoal argv``: exit status, stdout, stderr; through cli.main here, or the installed
    script in its own process (``real``)."""
    if real:
        result = _run([*e2e.shoal_argv(), *argv], cwd)
        return result.returncode, result.stdout, result.stderr
    capsys.readouterr()  # what came before is not this command's
    code = main(argv)
    out, err = capsys.readouterr()
    return code, out, err


def _names_field(stderr: str, path: str, fragment: str) -> bool:
    """Some line says '<path>: ...<fragment>...' (the field named, then what is wrong)."""
    for line in stderr.splitlines():
        head, sep, rest = line.strip().partition(": ")
        if sep and head.endswith(path) and fragment.lower() in rest.lower():
            return True
    return False


def test_the_base_config_is_valid(
    tmp_path: Path, e2e: Any, capsys: pytest.CaptureFixture[str]
) -> None:
    """The cases below differ from a config `check-config` accepts by only their defect."""
    path = _write(tmp_path, e2e, {})
    code, out, err = _shoal(["check-config", str(path)], tmp_path, e2e, capsys)
    assert (code, out.strip()) == (0, "OK"), err


REAL_PROCESS = {"yaml-syntax", "listen-exposed"}  # also through the installed script


@pytest.mark.parametrize(
    ("name", "case", "path", "fragment"), BAD_CONFIGS, ids=[c[0] for c in BAD_CONFIGS]
)
def test_malformed_config_is_refused_naming_the_field(
    tmp_path: Path,
    e2e: Any,
    capsys: pytest.CaptureFixture[str],
    name: str,
    case: dict[str, Any] | str,
    path: str,
    fragment: str,
) -> None:
    config = _write(tmp_path, e2e, case)
    # check-config first: a config it wrongly accepted would start the daemon under `run`
    for argv in (["check-config", str(config)], ["run", "-c", str(config)]):
        code, out, err = _shoal(argv, tmp_path, e2e, capsys, real=name in REAL_PROCESS)
        shown = f"shoal {argv[0]} exit {code}\nstderr:\n{err}"
        assert code == 2, shown
        assert "OK" not in out, shown
        assert "Traceback" not in err, shown
        named = _names_field(err, path, fragment)
        assert named, f"no line naming {path!r} with {fragment!r}\n{shown}"


def test_missing_secret_file_passes_check_config_and_fails_preflight(
    tmp_path: Path, e2e: Any, capsys: pytest.CaptureFixture[str]
) -> None:
    """check-config judges the file alone (it runs away from the leader too); the files it
    names are checked by --preflight and by `shoal run` before it starts anything."""
    missing = tmp_path / "absent" / "token"
    config = _write(tmp_path, e2e, {"api": {"token_file": str(missing)}})
    code, out, err = _shoal(["check-config", str(config)], tmp_path, e2e, capsys)
    assert (code, out.strip()) == (0, "OK"), err
    for argv in (["check-config", "--preflight", str(config)], ["run", "-c", str(config)]):
        code, _, err = _shoal(argv, tmp_path, e2e, capsys)
        shown = f"shoal {' '.join(argv[:2])} exit {code}\nstderr:\n{err}"
        assert code == 2, shown
        assert "Traceback" not in err, shown
        assert _names_field(err, "api.token_file", str(missing)), shown


# --- demand bodies -------------------------------------------------------------------------

GOOD_JOB = {"cores": 1, "memory": "2GiB", "disk": "1GiB", "wall_time": "10m", "count": 3}


def _jobs(**change: Any) -> dict[str, Any]:
    job = {**GOOD_JOB, **change}
    return {"jobs": [{k: v for k, v in job.items() if v is not None}], "running": []}


def _running(**change: Any) -> dict[str, Any]:
    row = {"node": "w-1", "cores": 1, "memory": "2GiB", "wall_time": "1h", "elapsed": "3m"}
    row.update(change)
    return {"running": [{k: v for k, v in row.items() if v is not None}]}


# What the running daemon answers for each kind of bad body: not a body, not JSON, not an
# object, a field, a field of a later job, of a running job, of the node list. Every field's
# rule is tests/daemon/test_demand.py's (``MALFORMED``, through parse_demand).
# (id, body: bytes sent as is, or JSON-encoded; the field a details line must start with ("" for
#  the body as a whole); a fragment of what the error and that line must say)
BAD_BODIES: list[tuple[str, bytes | dict[str, Any] | list[Any], str, str]] = [
    ("empty", b"", "", "body is empty"),
    ("not-utf8", b'{"jobs": [], "x": "\xff\xfe"}', "", "not UTF-8"),
    ("truncated-json", b'{"jobs": [', "", "not valid JSON"),
    ("array", [GOOD_JOB], "", "JSON object"),
    ("cores-word", _jobs(cores="four"), "jobs[0].cores", "valid number"),
    (
        "second-job-bad",
        {"jobs": [GOOD_JOB, {**GOOD_JOB, "cores": "x"}]},
        "jobs[1].cores",
        "valid number",
    ),
    ("running-no-node", _running(node=None), "running[0].node", "missing"),
    ("nodes-not-list", {"jobs": [], "nodes": "w-1"}, "nodes", "w-1"),
]


@pytest.fixture(scope="module")
def api_daemon(tmp_path_factory: pytest.TempPathFactory, e2e: Any) -> Iterator[Any]:
    """One daemon for every body (the `shoal` fixture is per test; this one is per module),
    stopped at teardown whatever happened."""
    E2E = e2e
    workdir = tmp_path_factory.mktemp("api")
    daemon = E2E.ShoalProcess(workdir, E2E.simulated_config(E2E.free_port()))
    try:
        daemon.start()
        reply = daemon.put_demand(
            {
                "jobs": [E2E.job(7, cores=1)],
                "running": [E2E.running_job("w-1")],
                "nodes": ["w-1"],
            }
        )
        assert reply.status == 200, reply.text
        yield daemon
    finally:
        if daemon.proc is not None and daemon.proc.poll() is None:
            daemon.proc.kill()
            daemon.proc.wait(timeout=10)


@pytest.mark.parametrize(
    ("body", "field", "says"), [b[1:] for b in BAD_BODIES], ids=[b[0] for b in BAD_BODIES]
)
def test_malformed_body_is_400_and_demand_unchanged(
    api_daemon: Any, body: Any, field: str, says: str
) -> None:
    before = api_daemon.status()["demand"]
    pushed = {"queued_jobs": 7, "queued_shapes": 1, "running_jobs": 1, "joined_nodes": 1}
    assert before == pushed | {"source": "push"}
    raw = body if isinstance(body, bytes) else json.dumps(body).encode()
    reply = api_daemon.put_demand(raw)
    assert reply.status == 400, f"{reply.status}: {reply.text}"
    error = reply.json()
    assert says.lower() in error["error"].lower(), error
    prefix = f"{field}: " if field else ""
    details = [d for d in error.get("details", []) if d.startswith(prefix)]
    assert any(says.lower() in d.lower() for d in details), f"no detail {prefix!r}..{says}: {error}"
    assert api_daemon.status()["demand"] == before, "a refused body changed the demand"
    assert api_daemon.alive()


def test_error_text_has_one_prefix(api_daemon: Any) -> None:
    reply = api_daemon.put_demand(b"")
    assert reply.status == 400, reply.text
    assert "invalid demand: invalid demand" not in reply.json()["error"]


def test_a_bad_node_type_entry_is_one_error_not_two(
    tmp_path: Path, e2e: Any, capsys: pytest.CaptureFixture[str]
) -> None:
    config = _write(tmp_path, e2e, {"node_types": [{"type": "c5.xlarge", "min": 5, "max": 2}]})
    code, _, err = _shoal(["check-config", str(config)], tmp_path, e2e, capsys)
    issues = [line for line in err.splitlines() if line.startswith("  ")]
    assert code == 2, err
    assert len(issues) == 1, err
