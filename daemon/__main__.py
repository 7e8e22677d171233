"""``python -m shoal.daemon``: the ``shoal`` command."""

from __future__ import annotations

import sys

from shoal.daemon.cli import main

__all__: list[str] = []

sys.exit(main())
