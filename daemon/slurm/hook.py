"""Slurm's power-saving programs: hand the request to the running daemon and return at once.

    shoal slurm-resume [-c CONFIG] HOSTLIST       ResumeProgram
    shoal slurm-suspend [-c CONFIG] HOSTLIST      SuspendProgram (and ResumeFailProgram)
    shoal slurm-resume-fail [-c CONFIG] HOSTLIST  ResumeFailProgram, logged as such

slurm.conf takes a program without arguments, so each is also a program of its own:
``shoal-slurm-resume``, ``shoal-slurm-suspend``, ``shoal-slurm-resume-fail``.

slurmctld runs the program with only ``SLURM_CONF`` and ``SLURM_RESUME_FILE`` in its
environment (no PATH), and waits for it: it must not block. So the program

1. copies ``SLURM_RESUME_FILE`` first (a ``/proc/<pid>/fd/N`` path, valid only while it runs),
2. reads the daemon's address and bearer token from the config file (``-c``, else
   ``$SHOAL_CONFIG``, else /etc/shoal/config.yaml: ``api.listen``, ``api.token_file``),
3. POSTs ``{"nodes": HOSTLIST, "resume_file": {...}, "request_id": ...}`` to
   ``/v1/slurm/<kind>`` on loopback; the daemon persists the request and answers 202 before
   it launches anything,
4. when the daemon does not answer (connection refused, a timeout, HTTP 5xx: down or
   restarting) writes the request to the spool, ``<state_dir>/spool`` of the same config
   (``daemon.slurm.spool``), which the daemon serves when it is back,
5. exits 0 on 2xx or once spooled, 1 otherwise (with the reason on stderr, which slurmctld
   logs): a refusal (4xx), or a daemon that cannot be reached and a spool that cannot be
   written (no ``state_dir``, no permission).

Only the standard library and PyYAML are imported: the program returns in tens of
milliseconds, most of it the interpreter's start-up (``bench/slurm_hook.py`` measures it).
"""

from __future__ import annotations

import json
import os
import sys
from typing import Any

from shoal.daemon.slurm import spool

__all__ = [
    "COMMANDS",
    "DEFAULT_CONFIG",
    "HookError",
    "Unreachable",
    "daemon_endpoint",
    "main",
    "resume_fail_main",
    "resume_main",
    "send",
    "spool_directory",
    "spool_request",
    "suspend_main",
]

DEFAULT_CONFIG = "/etc/shoal/config.yaml"
DEFAULT_LISTEN = "127.0.0.1:8089"
TIMEOUT = 5.0  # seconds: connect and answer (the daemon answers in milliseconds)
# subcommand -> the daemon's request kind (the URL's last part)
COMMANDS = {
    "slurm-resume": "resume",
    "slurm-suspend": "suspend",
    "slurm-resume-fail": "resume-fail",
}
_WILDCARDS = ("", "0.0.0.0", "::")


class HookError(RuntimeError):
    """The request could not be handed to the daemon."""


class Unreachable(HookError):
    """The daemon did not answer (down, restarting, overloaded): spool the request."""


def _resume_file() -> Any:
    """SLURM_RESUME_FILE's JSON (None when unset or unreadable)."""
    path = os.environ.get("SLURM_RESUME_FILE")
    if not path:
        return None
    try:
        with open(path, encoding="utf-8") as handle:
            text = handle.read()
    except OSError:
        return None
    try:
        return json.loads(text)
    except ValueError:
        return None


def _config(config_path: str) -> dict[str, Any]:
    import yaml

    loader = getattr(yaml, "CSafeLoader", yaml.SafeLoader)
    try:
        with open(config_path, encoding="utf-8") as handle:
            data = yaml.load(handle, Loader=loader)
    except (OSError, yaml.YAMLError) as exc:
        raise HookError(f"cannot read the shoal config {config_path}: {exc}") from None
    return data if isinstance(data, dict) else {}


def _beside(config_path: str, path: str) -> str:
    """A path from the config file, relative to its folder (as the daemon reads it)."""
    if os.path.isabs(path):
        return path
    return os.path.join(os.path.dirname(os.path.abspath(config_path)), path)


def daemon_endpoint(config_path: str) -> tuple[str, int, str | None]:
    """(host, port, bearer token or None) of the daemon the config file describes."""
    api = _config(config_path).get("api") or {}
    listen = str(api.get("listen") or DEFAULT_LISTEN)
    host, _, port = listen.rpartition(":")
    host = host.strip("[]")
    if host in _WILDCARDS:
        host = "127.0.0.1"
    if not port.isdigit():
        raise HookError(f"api.listen {listen!r} in {config_path} is not host:port")
    token = None
    token_file = api.get("token_file")
    if token_file:
        path = _beside(config_path, str(token_file))
        try:
            with open(path, encoding="utf-8") as handle:
                token = handle.read().strip() or None
        except OSError as exc:
            raise HookError(f"cannot read api.token_file {path}: {exc.strerror}") from None
    return host, int(port), token


def spool_directory(config_path: str) -> str | None:
    """The spool the config file's daemon serves (``<state_dir>/spool``), or None."""
    state_dir = _config(config_path).get("state_dir")
    if not state_dir:
        return None
    return str(spool.spool_dir(_beside(config_path, str(state_dir))))


def spool_request(
    kind: str, hostlist: str, config_path: str, resume_file: Any, request_id: str
) -> str:
    """Leave the request in the daemon's spool; the file's path. Raises HookError."""
    directory = spool_directory(config_path)
    if directory is None:
        raise HookError(f"no state_dir in {config_path} to spool the request to")
    _, _, token = daemon_endpoint(config_path)
    try:
        path = spool.write(directory, kind, hostlist, resume_file, request_id, token=token)
    except spool.SpoolError as exc:
        raise HookError(str(exc)) from None
    return path


def hook_request(
    kind: str, hostlist: str, resume_file: Any, request_id: str | None, token: str | None
) -> tuple[str, bytes, dict[str, str]]:
    """A hook request as the daemon's ``POST /v1/slurm/<kind>`` takes it: path, JSON body and
    headers (the token as a bearer). The hook sends it; a follower forwarding its host's spool
    to the leader sends the same."""
    body = {"nodes": hostlist, "resume_file": resume_file, "request_id": request_id}
    headers = {"Content-Type": "application/json"}
    if token:
        headers["Authorization"] = f"Bearer {token}"
    return f"/v1/slurm/{kind}", json.dumps(body).encode(), headers


def send(
    kind: str,
    hostlist: str,
    config_path: str,
    resume_file: Any = None,
    timeout: float = TIMEOUT,
    request_id: str | None = None,
) -> dict[str, Any]:
    """POST the request; the daemon's answer. Raises Unreachable when the daemon did not
    answer (or failed: 5xx), HookError when it refused the request."""
    import http.client

    host, port, token = daemon_endpoint(config_path)
    path, body, headers = hook_request(kind, hostlist, resume_file, request_id, token)
    connection = http.client.HTTPConnection(host, port, timeout=timeout)
    try:
        connection.request("POST", path, body=body, headers=headers)
        response = connection.getresponse()
        status, raw = response.status, response.read()
    except (OSError, http.client.HTTPException) as exc:
        raise Unreachable(f"shoal at {host}:{port} did not take the request: {exc}") from None
    finally:
        connection.close()
    try:
        answer = json.loads(raw) if raw else {}
    except ValueError:
        answer = {"error": raw.decode("utf-8", "replace")[:200]}
    if status >= 500:
        raise Unreachable(f"shoal answered HTTP {status}: {answer.get('error', answer)}")
    if not 200 <= status < 300:
        raise HookError(f"shoal answered HTTP {status}: {answer.get('error', answer)}")
    return answer if isinstance(answer, dict) else {}


def main(argv: list[str] | None = None, *, kind: str) -> int:
    """``shoal slurm-<kind> [-c CONFIG] HOSTLIST``; the exit status."""
    resume_file = _resume_file()  # first: the file is gone once slurmctld's pipe closes
    args = list(sys.argv[1:] if argv is None else argv)
    config_path = os.environ.get("SHOAL_CONFIG") or DEFAULT_CONFIG
    hostlists = []
    while args:
        arg = args.pop(0)
        if arg in ("-c", "--config") and args:
            config_path = args.pop(0)
        elif arg.startswith("--config="):
            config_path = arg.split("=", 1)[1]
        elif arg in ("-h", "--help"):
            print(f"usage: shoal slurm-{kind} [-c CONFIG] HOSTLIST\n{__doc__}")
            return 0
        else:
            hostlists.append(arg)
    if len(hostlists) != 1:
        print(f"usage: shoal slurm-{kind} [-c CONFIG] HOSTLIST", file=sys.stderr)
        return 2
    request_id = spool.new_request_id()
    try:
        answer = send(kind, hostlists[0], config_path, resume_file, request_id=request_id)
    except Unreachable as exc:
        try:
            path = spool_request(kind, hostlists[0], config_path, resume_file, request_id)
        except HookError as failed:
            print(
                f"shoal slurm-{kind} {hostlists[0]}: {exc}; not spooled either: {failed}",
                file=sys.stderr,
            )
            return 1
        print(
            f"shoal slurm-{kind} {hostlists[0]}: {exc}; spooled to {path} for shoal to serve",
            file=sys.stderr,
        )
        return 0
    except HookError as exc:
        print(f"shoal slurm-{kind} {hostlists[0]}: {exc}", file=sys.stderr)
        return 1
    accepted = ",".join(answer.get("accepted", [])) or "-"
    print(f"shoal slurm-{kind}: accepted {accepted}")
    return 0


def resume_main() -> int:
    return main(kind="resume")


def suspend_main() -> int:
    return main(kind="suspend")


def resume_fail_main() -> int:
    return main(kind="resume-fail")
