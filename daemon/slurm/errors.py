"""The errors of the Slurm client commands.

``SlurmError`` is a ``providers.errors.ProviderError``, so the one retry layer and the
executor treat Slurm's failures as any provider's: ``SlurmUnavailableError`` is a
``RetryableError`` (the controller did not answer, or the command timed out),
``SlurmCommandError`` means Slurm refused (e.g. an unknown node name) and ``SlurmParseError``
that the output is not in the format asked for (``daemon.slurm.parse``).
"""

from __future__ import annotations

import os
from collections.abc import Sequence

from shoal.providers.errors import ProviderError, RetryableError

__all__ = ["SlurmCommandError", "SlurmError", "SlurmParseError", "SlurmUnavailableError"]


class SlurmError(ProviderError):
    """A Slurm command failed. ``argv`` is what ran, ``returncode`` its exit status (None if
    it never ran or was killed), ``stderr`` what it said."""

    def __init__(
        self,
        message: str,
        *,
        argv: Sequence[str] = (),
        returncode: int | None = None,
        stderr: str = "",
        code: str = "",
    ) -> None:
        operation = os.path.basename(argv[0]) if argv else ""
        super().__init__(message, code=code, operation=operation)
        self.argv = tuple(argv)
        self.returncode = returncode
        self.stderr = stderr


class SlurmUnavailableError(SlurmError, RetryableError):
    """slurmctld did not answer (down, restarting, overloaded) or the command timed out."""


class SlurmCommandError(SlurmError):
    """Slurm refused the command (unknown node, invalid state...) or it could not be run."""


class SlurmParseError(SlurmError, ValueError):
    """The command's output is not in the format asked for."""
