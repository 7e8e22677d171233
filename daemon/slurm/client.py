"""Talking to Slurm: its client commands as asyncio subprocesses, their output as records.

``SlurmClient`` runs ``squeue``, ``sinfo`` and ``scontrol`` (paths, ``SLURM_CONF`` and a
timeout from ``SlurmCommands``) and raises typed errors (``daemon.slurm.errors``):
``SlurmUnavailableError`` (a ``RetryableError``: the controller did not answer, or the command
timed out), ``SlurmCommandError`` (Slurm refused, e.g. an unknown node name) and
``SlurmParseError`` (output not in the format asked for).

The output formats are the fixed ``--Format`` (``-O``) field lists of
``daemon.slurm.constants``, tab-separated, with the one free-text field (the reason) last;
``daemon.slurm.parse`` reads them and ``daemon.slurm.demand`` turns the records into shoal's
demand.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import re
import time
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from typing import TypeVar

from shoal.daemon.slurm.constants import SEP, SINFO_FIELDS, SQUEUE_FIELDS
from shoal.daemon.slurm.errors import SlurmCommandError, SlurmParseError, SlurmUnavailableError
from shoal.daemon.slurm.parse import (
    SlurmJob,
    SlurmNode,
    compress_hostlist,
    expand_hostlist,
    parse_sinfo,
    parse_slurm_config,
    parse_squeue,
)

__all__ = ["SlurmClient", "SlurmCommands", "sinfo_argv", "squeue_argv"]

log = logging.getLogger(__name__)
T = TypeVar("T")

# stderr of a client that could not reach slurmctld, in the versions we know
_UNAVAILABLE = re.compile(
    r"Unable to contact slurm controller|Socket timed out|Zero Bytes were transmitted"
    r"|Connection refused|connect failure|Slurm backup controller in standby mode"
    r"|Communication connection failure",
    re.IGNORECASE,
)


def _format(fields: Sequence[str]) -> str:
    # "name:0<TAB>": width 0 prints the whole value (the default width, 20, truncates), and
    # what follows the width is printed after the value: our separator.
    return ",".join(f"{name}:0{SEP}" for name in fields[:-1]) + f",{fields[-1]}:0"


# --- configuration -------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class SlurmCommands:
    """Where the Slurm client commands are and how to run them."""

    squeue: str = "squeue"
    sinfo: str = "sinfo"
    scontrol: str = "scontrol"
    slurm_conf: str | None = None  # SLURM_CONF for the commands; None: inherit/default
    timeout: float = 30.0  # seconds before a command is killed

    def env(self) -> dict[str, str]:
        env = dict(os.environ)
        if self.slurm_conf is not None:
            env["SLURM_CONF"] = self.slurm_conf
        return env


def squeue_argv(commands: SlurmCommands) -> list[str]:
    """All pending and running jobs, array tasks one per line (``-r``), in our format."""
    return [commands.squeue, "--noheader", "--array", f"--Format={_format(SQUEUE_FIELDS)}"]


def sinfo_argv(commands: SlurmCommands) -> list[str]:
    """Every node, one line per node and partition (``-N``), hidden partitions too (``-a``)."""
    return [
        commands.sinfo,
        "--noheader",
        "--Node",
        "--all",
        f"--Format={_format(SINFO_FIELDS)}",
    ]


# --- the client ----------------------------------------------------------------------------


def _node_arg(nodes: str | Iterable[str]) -> str:
    names = [nodes] if isinstance(nodes, str) else list(nodes)
    if not names or not all(names):
        raise ValueError("no node names given")
    return compress_hostlist(expand_hostlist(",".join(names)))


class SlurmClient:
    """Async access to one Slurm cluster through its client commands."""

    def __init__(self, commands: SlurmCommands | None = None) -> None:
        self.commands = commands or SlurmCommands()

    async def run(self, argv: Sequence[str]) -> str:
        """Run one command; its stdout. Raises SlurmUnavailableError, SlurmCommandError."""
        started = time.monotonic()
        try:
            proc = await asyncio.create_subprocess_exec(
                *argv,
                stdin=asyncio.subprocess.DEVNULL,
                stdout=asyncio.subprocess.PIPE,
                stderr=asyncio.subprocess.PIPE,
                env=self.commands.env(),
            )
        except OSError as exc:
            raise SlurmCommandError(
                f"cannot run {argv[0]}: {exc.strerror or exc}", argv=argv, code="exec"
            ) from exc
        try:
            out, err = await asyncio.wait_for(proc.communicate(), self.commands.timeout)
        except TimeoutError:
            raise SlurmUnavailableError(
                f"{os.path.basename(argv[0])} did not finish in {self.commands.timeout:g}s",
                argv=argv,
                code="timeout",
            ) from None
        finally:
            if proc.returncode is None:  # timed out or cancelled: do not leave it running
                with contextlib.suppress(ProcessLookupError):
                    proc.kill()
                await proc.wait()
        stderr = err.decode(errors="replace").strip()
        elapsed = time.monotonic() - started
        if proc.returncode != 0:
            kind = SlurmUnavailableError if _UNAVAILABLE.search(stderr) else SlurmCommandError
            log.warning(
                "event=slurm_command_failed command=%s code=%s seconds=%.3f error=%r",
                os.path.basename(argv[0]),
                proc.returncode,
                elapsed,
                stderr,
            )
            raise kind(
                f"{' '.join(argv[:3])} exited {proc.returncode}: {stderr or '(no message)'}",
                argv=argv,
                returncode=proc.returncode,
                stderr=stderr,
                code=str(proc.returncode),
            )
        log.debug("event=slurm_command command=%s seconds=%.3f", os.path.basename(argv[0]), elapsed)
        return out.decode(errors="replace")

    async def jobs(self) -> tuple[SlurmJob, ...]:
        """Pending and running jobs (array tasks one by one)."""
        argv = squeue_argv(self.commands)
        return self._parsed(parse_squeue, await self.run(argv), argv)

    async def nodes(self) -> tuple[SlurmNode, ...]:
        argv = sinfo_argv(self.commands)
        return self._parsed(parse_sinfo, await self.run(argv), argv)

    async def config(self) -> dict[str, str]:
        """``scontrol show config`` as a mapping (see ``def_mem_per_cpu``)."""
        return parse_slurm_config(await self.run([self.commands.scontrol, "show", "config"]))

    @staticmethod
    def _parsed(parse: Callable[[str], T], text: str, argv: Sequence[str]) -> T:
        try:
            return parse(text)
        except SlurmParseError as exc:
            raise SlurmParseError(str(exc), argv=argv, code="parse") from None

    async def update_nodes(self, nodes: str | Iterable[str], **settings: str) -> None:
        """``scontrol update NodeName=<hostlist> Key=value ...`` (keys as Slurm spells them)."""
        args = [f"{key}={value}" for key, value in settings.items()]
        await self.run([self.commands.scontrol, "update", f"NodeName={_node_arg(nodes)}", *args])

    async def set_down(self, nodes: str | Iterable[str], reason: str) -> None:
        """Out of service until resumed; its jobs are requeued."""
        await self.update_nodes(nodes, State="DOWN", Reason=reason)

    async def drain(self, nodes: str | Iterable[str], reason: str) -> None:
        """No new jobs; running ones finish."""
        await self.update_nodes(nodes, State="DRAIN", Reason=reason)

    async def resume(self, nodes: str | Iterable[str]) -> None:
        """Back in service (undrain, or leave DOWN)."""
        await self.update_nodes(nodes, State="RESUME")

    async def power_down(
        self, nodes: str | Iterable[str], *, force: bool = False, reason: str | None = None
    ) -> None:
        """Power down once idle (``POWER_DOWN``), or at once, requeueing its jobs
        (``POWER_DOWN_FORCE``); Slurm runs SuspendProgram and the node returns to ``idle~``."""
        settings = {"State": "POWER_DOWN_FORCE" if force else "POWER_DOWN"}
        if reason is not None:
            settings["Reason"] = reason
        await self.update_nodes(nodes, **settings)

    async def set_address(self, node: str, address: str, hostname: str | None = None) -> None:
        """Where slurmctld reaches a node (``NodeAddr``, and ``NodeHostname`` if given)."""
        settings = {"NodeAddr": address}
        if hostname is not None:
            settings["NodeHostname"] = hostname
        await self.update_nodes(node, **settings)

    async def delete_nodes(self, nodes: str | Iterable[str]) -> None:
        """Remove dynamic nodes (``scontrol delete NodeName=...``); they must hold no job."""
        await self.run([self.commands.scontrol, "delete", f"NodeName={_node_arg(nodes)}"])
