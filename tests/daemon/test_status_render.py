"""``shoal status``'s presentation (daemon.status), from /v1/status JSON recorded from a real
``shoal run`` on the simulated cloud (tests/daemon/data/status_*.json: right after a launch,
and later with an offering in capacity backoff and a running job), and its errors against
loopback listeners that refuse, answer 401 or never answer."""

from __future__ import annotations

import http.server
import io
import json
import socket
import sys
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from shoal.daemon.cli import main
from shoal.daemon.status import (
    StatusError,
    Table,
    daemon_url,
    fetch,
    print_status,
    render_plain,
    render_rich,
    tables,
)
from shoal.daemon.units import format_size, parse_size

DATA = Path(__file__).parent / "data"
URL = "http://127.0.0.1:8089"


def recorded(name: str) -> dict[str, Any]:
    data: dict[str, Any] = json.loads((DATA / f"status_{name}.json").read_text())
    return data


def table(status: dict[str, Any], title: str) -> Table:
    (found,) = [t for t in tables(status) if t.title.partition(":")[0] == title]
    return found


def test_nodes_by_type_and_state_and_each_node_with_iso_times() -> None:
    status = recorded("launch")
    counts = table(status, "Nodes by type and state")
    assert counts.columns == ("node type", "booting", "total")
    assert counts.rows == [("c5.xlarge", "2", "2"), ("r5.large:0.2", "2", "2")]
    later = table(recorded("backoff"), "Nodes")
    assert later.rows[2] == (
        "sim-000003",
        "r5.large:0.2",
        "ready",
        "r5.large",
        "us-west-2a",
        "spot",
        "2026-12-06T12:12:01Z",  # launched_at 1796559121.897079
        "2026-12-06T12:12:06Z",
        "",
    )
    booting = table(status, "Nodes").rows[0]
    assert booting[7] == "-" and booting[8] == "not listed yet"


def test_the_last_plan_with_its_reasons_and_cost_to_the_cent() -> None:
    status = recorded("launch")
    plan = table(status, "Last plan")
    assert plan.title == "Last plan: target cost $1.11/h"
    assert plan.rows[1][:4] == ("launch", "c5.xlarge", "6", "demand")
    assert "capped to max 6" in plan.rows[1][4]
    assert table(status, "Targets").rows == [("c5.xlarge", "6"), ("r5.large:0.2", "2")]
    # 0.43000000000000005 in the JSON
    assert table(recorded("backoff"), "Last plan").title == "Last plan: target cost $0.43/h"


def test_waiting_jobs_with_human_sizes_and_backoff_with_its_deadline() -> None:
    status = recorded("backoff")
    assert table(status, "Jobs the plan leaves waiting").rows == [
        ("13", "2", "4 GiB", "10 GiB", "20m", "no", "1", "max-nodes"),
        ("11", "2", "4 GiB", "10 GiB", "20m", "no", "1", "unavailable"),
        ("2", "64", "1 TiB", "0 B", "1h", "no", "1", "memory, cores"),
    ]
    (row,) = table(status, "Offerings in backoff").rows
    assert row[:5] == (
        "c5.xlarge/us-west-2a/on-demand",
        "capacity",
        "1",
        "2026-12-06T12:15:06Z",
        "2m53s",  # until - now
    )
    assert "InsufficientInstanceCapacity" in row[5]


def test_demand_and_the_source_that_fed_the_last_pass() -> None:
    status = recorded("backoff")
    rows = dict(table(status, "Demand").rows)
    assert rows["queued jobs"] == "35 in 3 shapes"
    assert rows["running jobs"] == "1"
    assert rows["fed the last pass"] == "push"
    last = dict(table(status, "Last pass").rows)
    assert last["number"] == "5 of 5" and last["demand from"] == "push"
    assert last["started"] == "2026-12-06T12:12:13Z" and last["errors"] == "none"


def test_plain_text_is_aligned_and_says_none_for_empty_tables() -> None:
    text = render_plain(recorded("backoff"), URL)
    lines = text.splitlines()
    assert lines[0] == f"shoal at {URL}: ready, healthy; now 2026-12-06T12:12:13Z"
    header = next(line for line in lines if line.lstrip().startswith("jobs  cores"))
    row = next(line for line in lines if "memory, cores" in line)
    assert header.index("memory") == row.index("1 TiB")  # columns line up
    start = lines.index("Last plan: target cost $0.43/h")
    assert lines[start + 2] == "  (no launches, drains or terminations)"


def test_rich_shows_the_same_cells() -> None:
    out = io.StringIO()
    render_rich(recorded("backoff"), URL, out, width=200)
    text = out.getvalue()
    for cell in ("2026-12-06T12:15:06Z", "$0.43/h", "1 TiB", "10 GiB", "memory, cores", "push"):
        assert cell in text
    assert "─" in text  # rich's box drawing, not the plain renderer


def test_without_rich_it_prints_plain_text(monkeypatch: pytest.MonkeyPatch) -> None:
    """The minimal install: rich is an extra. ``sys.modules[name] = None`` makes the import
    fail as it does when the package is absent."""
    monkeypatch.setitem(sys.modules, "rich", None)
    out = io.StringIO()
    print_status(recorded("launch"), URL, out, plain=False)
    assert out.getvalue() == render_plain(recorded("launch"), URL)


def test_sizes_read_back() -> None:
    for size in (0, 512, 1536 * 1024**2, 4 * 1024**3, 10 * 1024**4, 3 * 1024**5):
        text = format_size(size)
        assert parse_size(text.replace(" ", "")) == size, text
    assert format_size(4 * 1024**3) == "4 GiB" and format_size(1536 * 1024**2) == "1.5 GiB"


def test_the_url_of_a_listen_address() -> None:
    assert daemon_url("127.0.0.1:8089") == "http://127.0.0.1:8089"
    assert daemon_url("0.0.0.0:9000") == "http://127.0.0.1:9000"  # all interfaces: ask loopback
    assert daemon_url("[::]:9000") == "http://[::1]:9000"
    assert daemon_url("[::1]:9000") == "http://[::1]:9000"


# --- errors, against real loopback listeners -----------------------------------------------


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@pytest.fixture
def unauthorized_server() -> Iterator[str]:
    """Answers every GET as the daemon answers a missing or wrong bearer token."""

    class Handler(http.server.BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            body = b'{"error": "missing or wrong bearer token"}'
            self.send_response(401)
            self.send_header("WWW-Authenticate", 'Bearer realm="shoal"')
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, *args: Any) -> None:
            pass

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}"
    finally:
        server.shutdown()
        server.server_close()
        thread.join(5)


def test_no_daemon_says_so_and_names_the_url(capsys: pytest.CaptureFixture[str]) -> None:
    url = f"http://127.0.0.1:{free_port()}"
    assert main(["status", "--url", url]) == 1
    err = capsys.readouterr().err
    assert f"no shoal daemon at {url}/v1/status: connection refused" in err


def test_401_says_the_token_is_missing_or_refused(unauthorized_server: str) -> None:
    with pytest.raises(StatusError, match=r"401 unauthorized \(no token was sent.*--token-file"):
        fetch(unauthorized_server)
    with pytest.raises(StatusError, match=r"401 unauthorized \(the token sent was refused"):
        fetch(unauthorized_server, token="wrong")


def test_a_listener_that_never_answers_times_out() -> None:
    with socket.socket() as listener:  # accepts connections (the backlog), never answers
        listener.bind(("127.0.0.1", 0))
        listener.listen(4)
        url = f"http://127.0.0.1:{listener.getsockname()[1]}"
        with pytest.raises(StatusError, match=r"no answer within 0.3s"):
            fetch(url, timeout=0.3)


def test_the_config_names_the_daemon_and_its_token(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """-c FILE: api.listen and api.token_file of the config (the deploy guide's check)."""
    port = free_port()
    (tmp_path / "token").write_text("t" * 32 + "\n")
    config = tmp_path / "config.yaml"
    config.write_text(
        "cluster_name: c\nprovider: {kind: simulated, zone: sim-1a}\nnode_types: c5.xlarge\n"
        f"api: {{listen: '127.0.0.1:{port}', token_file: {tmp_path / 'token'}}}\n"
    )
    assert main(["status", "-c", str(config)]) == 1
    assert f"no shoal daemon at http://127.0.0.1:{port}/v1/status" in capsys.readouterr().err
    (tmp_path / "token").unlink()
    assert main(["status", "-c", str(config)]) == 2
    assert "cannot read api.token_file" in capsys.readouterr().err
