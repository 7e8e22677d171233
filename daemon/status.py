"""``shoal status``: a running daemon's ``GET /v1/status`` as tables people read.

The JSON stays machine-first (``--json`` prints it as the daemon sent it); this module only
presents it. Three steps, each testable alone:

- ``daemon_url`` / ``fetch``: where the daemon listens (the config's ``api.listen``, a
  wildcard address asked on loopback, or ``--url``) and one GET with the config's bearer
  token, over ``urllib`` (no event loop, nothing but the standard library). Every way it can
  fail ends in a ``StatusError`` whose message says what to do: connection refused (no daemon
  at that URL), 401 (the token), a timeout, an answer that is not the status JSON.
- ``tables``: the JSON as a list of ``Table`` (title, columns, rows of strings): nodes by type
  and state, each node, demand, the last plan with its reasons and targets, unschedulable
  jobs, backoff, the last pass. Times are ISO 8601 in UTC, money is to the cent, sizes and
  durations are human (``daemon.units``).
- ``render_plain`` / ``render_rich``: the same tables as aligned plain text, or with rich's
  box drawing. rich is optional (the ``[simulate]`` extra): it is imported only here and only
  when present, so ``shoal status`` works on a minimal install.
"""

from __future__ import annotations

import json
import urllib.error
import urllib.request
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any, TextIO

from shoal.daemon.units import format_duration, format_size

__all__ = [
    "StatusError",
    "Table",
    "daemon_url",
    "fetch",
    "print_status",
    "render_plain",
    "render_rich",
    "rich_available",
    "tables",
]

STATUS_PATH = "/v1/status"
STATE_ORDER = ("booting", "ready", "draining", "terminated")


class StatusError(Exception):
    """The daemon could not be asked, or its answer was not the status: a message for people."""


@dataclass(frozen=True, slots=True)
class Table:
    title: str
    columns: tuple[str, ...]
    rows: list[tuple[str, ...]] = field(default_factory=list)
    empty: str = "none"  # shown instead of rows when there are none


# --- where and how to ask --------------------------------------------------------------------


def daemon_url(listen: str) -> str:
    """The base URL of a daemon listening on ``host:port``; a wildcard address (all
    interfaces) is asked on loopback."""
    host, _, port = listen.rpartition(":")
    host = host.strip("[]")
    host = {"0.0.0.0": "127.0.0.1", "": "127.0.0.1", "::": "::1"}.get(host, host)
    return f"http://[{host}]:{port}" if ":" in host else f"http://{host}:{port}"


def status_url(base: str) -> str:
    base = base.rstrip("/")
    return base if base.endswith(STATUS_PATH) else base + STATUS_PATH


def fetch(base: str, token: str | None = None, timeout: float = 5.0) -> tuple[str, Any]:
    """GET the status: the body as sent, and decoded. Raises ``StatusError``."""
    url = status_url(base)
    headers = {"Accept": "application/json"}
    if token:
        headers["Authorization"] = f"Bearer {token}"
    request = urllib.request.Request(url, headers=headers)
    try:
        with urllib.request.urlopen(request, timeout=timeout) as response:
            text = response.read().decode("utf-8", "replace")
    except urllib.error.HTTPError as exc:
        with exc:
            body = exc.read().decode("utf-8", "replace").strip()
        if exc.code == 401:
            hint = (
                "the token sent was refused"
                if token
                else "no token was sent: give -c CONFIG (its api.token_file) or --token-file"
            )
            raise StatusError(f"{url}: 401 unauthorized ({hint})") from None
        raise StatusError(f"{url}: HTTP {exc.code}: {body[:300] or exc.reason}") from None
    except (TimeoutError, urllib.error.URLError, OSError) as exc:
        raise StatusError(_unreachable(url, exc, timeout)) from None
    try:
        data = json.loads(text)
    except ValueError:
        raise StatusError(f"{url}: the answer is not JSON: {text[:200]!r}") from None
    if not isinstance(data, dict) or "nodes" not in data:
        raise StatusError(f"{url}: the answer is not shoal's status: {text[:200]!r}")
    return text, data


def _unreachable(url: str, exc: BaseException, timeout: float) -> str:
    reason = exc.reason if isinstance(exc, urllib.error.URLError) else exc
    if isinstance(reason, ConnectionRefusedError):
        return (
            f"no shoal daemon at {url}: connection refused. Is `shoal run` running, and "
            "listening there (api.listen)?"
        )
    if isinstance(reason, TimeoutError):
        return (
            f"{url}: no answer within {timeout:g}s: the daemon is wedged or the address is "
            "not shoal's (try --timeout, or check /healthz)"
        )
    return f"cannot reach {url}: {reason}"


# --- the tables ------------------------------------------------------------------------------


def iso(t: float | None) -> str:
    """Epoch seconds as ISO 8601 in UTC, to the second; ``-`` for none."""
    if t is None:
        return "-"
    return datetime.fromtimestamp(t, UTC).isoformat(timespec="seconds").replace("+00:00", "Z")


def money(dollars: float | None) -> str:
    return "-" if dollars is None else f"${dollars:,.2f}/h"


def _yes(value: Any) -> str:
    return {True: "yes", False: "no", None: "-"}.get(value, str(value))


def _node_types_by_state(status: Mapping[str, Any]) -> Table:
    counts: Mapping[str, Mapping[str, int]] = status.get("node_counts") or {}
    seen = {state for by_state in counts.values() for state in by_state}
    states = [s for s in STATE_ORDER if s in seen] + sorted(seen - set(STATE_ORDER))
    rows = [
        (name, *(str(by_state.get(s, 0)) for s in states), str(sum(by_state.values())))
        for name, by_state in sorted(counts.items())
    ]
    return Table("Nodes by type and state", ("node type", *states, "total"), rows, "no nodes")


def _nodes(status: Mapping[str, Any]) -> Table:
    rows = []
    for node_type, by_state in sorted(status.get("nodes", {}).items()):
        for state, items in by_state.items():
            for n in sorted(items, key=lambda n: n["id"]):
                notes = [] if n.get("listed", True) else ["not listed yet"]
                if n.get("static"):
                    notes.append("static")
                if n.get("missing_since") is not None:
                    notes.append(f"missing since {iso(n['missing_since'])}")
                rows.append(
                    (
                        n["id"],
                        node_type,
                        state,
                        n.get("instance_type") or "-",
                        n.get("zone") or "-",
                        "spot" if n.get("preemptible") else "on-demand",
                        iso(n.get("launched_at")),
                        iso(n.get("joined_at")),
                        ", ".join(notes),
                    )
                )
    columns = ("node", "type", "state", "instance", "zone", "capacity", "launched", "joined", "")
    return Table("Nodes", columns, rows, "no nodes")


def _demand(status: Mapping[str, Any]) -> Table:
    d = status.get("demand") or {}
    joined = d.get("joined_nodes")
    rows = [
        ("queued jobs", f"{d.get('queued_jobs', 0)} in {d.get('queued_shapes', 0)} shapes"),
        ("running jobs", str(d.get("running_jobs", 0))),
        ("joined nodes", "not reported" if joined is None else str(joined)),
        ("source now", d.get("source") or "none yet"),
        ("fed the last pass", status.get("demand_source") or "none yet"),
    ]
    return Table("Demand", ("", ""), rows)


def _plan(status: Mapping[str, Any]) -> list[Table]:
    plan = status.get("last_plan")
    if plan is None:
        return [Table("Last plan", ("",), [], "no plan yet")]
    rows = [
        ("launch", a["node_type"], str(a["count"]), a.get("cause", ""), a.get("reason", ""))
        for a in plan.get("launches", ())
    ]
    for kind, key in (
        ("drain", "drains"),
        ("undrain", "undrains"),
        ("terminate", "terminations"),
        ("hold", "held"),
    ):
        rows.extend(
            (kind, a["node_type"], a["node"], a.get("cause", ""), a.get("reason", ""))
            for a in plan.get(key, ())
        )
    title = f"Last plan: target cost {money(plan.get('cost_per_hour'))}"
    columns = ("action", "node type", "count/node", "cause", "reason")
    actions = Table(title, columns, rows, "no launches, drains or terminations")
    targets = Table(
        "Targets",
        ("node type", "nodes"),
        [(name, str(n)) for name, n in sorted(plan.get("targets", {}).items())],
    )
    return [actions, targets]


def _unschedulable(status: Mapping[str, Any]) -> Table:
    rows = []
    for u in status.get("unschedulable", ()):
        s = u["shape"]
        rows.append(
            (
                str(u["count"]),
                f"{s['cores']:g}",
                format_size(s["memory"]),
                format_size(s["disk"]),
                format_duration(s["wall_time"]),
                _yes(s.get("preemptible")),
                str(u.get("node_count", 1)),
                ", ".join(u.get("reasons", ())),
            )
        )
    columns = ("jobs", "cores", "memory", "disk", "wall time", "spot ok", "nodes", "why")
    return Table("Jobs the plan leaves waiting", columns, rows)


def _backoff(status: Mapping[str, Any]) -> Table:
    now = status.get("now")
    rows = [
        (
            b["offering"],
            b.get("kind", ""),
            str(b.get("failures", "")),
            iso(b["until"]),
            "-" if now is None else format_duration(max(0.0, b["until"] - now)),
            b.get("reason", ""),
        )
        for b in status.get("backoff", ())
    ]
    columns = ("offering", "kind", "failures", "until", "left", "reason")
    return Table("Offerings in backoff", columns, rows)


def _last_pass(status: Mapping[str, Any]) -> Table:
    p = status.get("last_pass")
    if p is None:
        return Table("Last pass", ("", ""), [], "no pass yet")

    def names(key: str) -> str:
        items = p.get(key) or []
        return f"{len(items)}: {', '.join(items)}" if items else "0"

    rows = [
        ("number", f"{p['number']} of {status.get('passes', p['number'])}"),
        ("outcome", p.get("outcome", "")),
        ("started", iso(p.get("started_at"))),
        ("took", format_duration(p.get("duration") or 0.0)),
        ("demand from", p.get("demand_source") or "-"),
        ("launched", str(p.get("launched", 0))),
        ("drained", names("drained")),
        ("undrained", names("undrained")),
        ("terminated", names("terminated")),
        ("errors", "; ".join(p.get("errors") or []) or "none"),
    ]
    if p.get("reason"):
        rows.append(("reason", p["reason"]))
    return Table("Last pass", ("", ""), rows)


def tables(status: Mapping[str, Any]) -> list[Table]:
    """``/v1/status`` as tables, in reading order."""
    return [
        _node_types_by_state(status),
        _nodes(status),
        _demand(status),
        *_plan(status),
        _unschedulable(status),
        _backoff(status),
        _last_pass(status),
    ]


def headline(status: Mapping[str, Any], url: str) -> str:
    flags = [
        "ready" if status.get("ready") else "NOT READY",
        "healthy" if status.get("healthy") else "UNHEALTHY",
    ]
    if status.get("stopping"):
        flags.append("STOPPING")
    return f"shoal at {url}: {', '.join(flags)}; now {iso(status.get('now'))}"


# --- rendering -------------------------------------------------------------------------------


def render_plain(status: Mapping[str, Any], url: str) -> str:
    """Aligned plain text: a title, a header (when the columns have names), the rows."""
    out = [headline(status, url)]
    for table in tables(status):
        out += ["", table.title, "-" * len(table.title)]
        if not table.rows:
            out.append(f"  ({table.empty})")
            continue
        named = any(table.columns)
        lines = [table.columns, *table.rows] if named else table.rows
        widths = [max(len(row[i]) for row in lines) for i in range(len(table.columns))]
        for row in lines:
            out.append(
                "  " + "  ".join(c.ljust(w) for c, w in zip(row, widths, strict=True)).rstrip()
            )
    return "\n".join(out) + "\n"


def rich_available() -> bool:
    try:
        import rich  # noqa: F401
    except ImportError:
        return False
    return True


def render_rich(
    status: Mapping[str, Any], url: str, file: TextIO, width: int | None = None
) -> None:
    """The tables with rich's box drawing, written to ``file`` (colour when it is a
    terminal)."""
    from rich import box
    from rich.console import Console
    from rich.table import Table as RichTable

    console = Console(file=file, width=width, highlight=False)
    console.print(headline(status, url), style="bold", markup=False)
    for table in tables(status):
        named = any(table.columns)
        grid = RichTable(
            title=table.title,
            title_justify="left",
            title_style="bold",
            show_header=named,
            box=box.SIMPLE_HEAD if named else box.SIMPLE,
        )
        for column in table.columns or ("",):
            grid.add_column(column, overflow="fold")
        if not table.rows:
            grid.add_row(f"({table.empty})")
        for row in table.rows:
            grid.add_row(*row)
        console.print(grid)


def choose(plain: bool) -> str:
    """``"rich"`` when rich is installed and plain text was not asked for, else ``"plain"``."""
    return "plain" if plain or not rich_available() else "rich"


def print_status(status: Mapping[str, Any], url: str, out: TextIO, *, plain: bool) -> None:
    if choose(plain) == "rich":
        render_rich(status, url, out)
    else:
        out.write(render_plain(status, url))
