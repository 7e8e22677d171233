"""``preflight(config)``: what a valid config needs of the machine the daemon starts on.

Validation (``load_config``) looks at the file alone, so ``shoal check-config`` gives the same
answer on a laptop, in CI and on the leader. The files the config names are checked here
instead: the API token file (present, readable, not empty), the kubeadm bootstrap token and
the munge key (``providers.workers`` reads them, the same functions the worker bootstrap
uses), and that each state directory can be written. ``shoal run`` calls it at start and on
SIGHUP before it takes a new config, ``shoal check-config --preflight`` on demand. Each
problem is a ``ConfigIssue`` naming the key and the file; a secret's contents are never
quoted.

``check(config)`` is the same with what it read: the workers' secrets
(``providers.workers.WorkerSecrets``), which ``shoal run`` hands to the provider's
``prepare_workers``, so each secret file is read once at start (a file changed between the
check and the start cannot give the daemon a value that was never checked).
"""

from __future__ import annotations

import os
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any, NamedTuple

from shoal.daemon.config.common import ConfigIssue
from shoal.providers.workers import WorkerSecrets, read_kubeadm_token, read_munge_key

if TYPE_CHECKING:
    from shoal.daemon.config import ShoalConfig

__all__ = ["Preflight", "check", "preflight"]


class Preflight(NamedTuple):
    """``check``'s answer: the problems (empty: none) and the secrets it read."""

    issues: list[ConfigIssue]
    secrets: WorkerSecrets


def preflight(config: ShoalConfig) -> list[ConfigIssue]:
    """Every problem the files and directories ``config`` names have here (empty: none)."""
    return check(config).issues


def check(config: ShoalConfig) -> Preflight:
    """``preflight``, with the workers' secrets it read (each file once)."""
    issues: list[ConfigIssue] = []

    def look(key: str, path: Path | None, test: Callable[[Path], Any]) -> Any:
        if path is None:
            return None
        try:
            return test(path)
        except ValueError as exc:
            issues.append(ConfigIssue(key, str(path), str(exc)))
            return None

    look("api.token_file", config.api.token_file, _api_token)
    workers = config.workers
    token = key = None
    if workers is not None and workers.kubernetes is not None:
        token = look(
            "workers.kubernetes.token_file",
            workers.kubernetes.token_file,
            lambda p: _secret(p, "token file", read_kubeadm_token),
        )
    if workers is not None and workers.slurm is not None:
        key = look(
            "workers.slurm.munge_key_file",
            workers.slurm.munge_key_file,
            lambda p: _secret(p, "munge key file", read_munge_key),
        )
    look("state_dir", config.state_dir, _writable_dir)
    if config.provider.kind == "local":
        look("provider.state_dir", config.provider.state_dir, _writable_dir)
    return Preflight(issues, WorkerSecrets(kubeadm_token=token, munge_key=key))


def _secret(path: Path, what: str, read: Callable[[Path], Any]) -> Any:
    if not path.is_file():
        raise ValueError(f"expected an existing, readable {what}")
    return read(path)  # ValueError saying what is wrong, never the contents


def _api_token(path: Path) -> None:
    if not path.is_file():
        raise ValueError("expected an existing, readable token file")
    try:
        text = path.read_text()
    except (OSError, UnicodeDecodeError) as exc:
        raise ValueError(f"token file is not readable: {type(exc).__name__}") from None
    if not text.strip():
        raise ValueError("token file is empty")


def _writable_dir(path: Path) -> None:
    """``path`` is a directory shoal can write, or can be made in one it can write."""
    existing = path
    while not existing.exists() and existing != existing.parent:
        existing = existing.parent
    if not existing.is_dir():
        raise ValueError(f"expected a directory; {existing} is not one")
    if not os.access(existing, os.W_OK | os.X_OK):
        what = "is not writable" if existing == path else f"cannot be made: {existing} is read-only"
        raise ValueError(f"the directory {what}")
