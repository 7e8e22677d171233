"""``python -m daemon``: the ``shoal`` command."""

from __future__ import annotations

import sys

from daemon.cli import main

__all__: list[str] = []

sys.exit(main())
