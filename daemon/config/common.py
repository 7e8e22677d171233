"""What every config section shares: strict models, and the errors ``load_config`` raises.

A ``ConfigIssue`` names the field path, the value found and what was expected; a
``ConfigError`` lists every issue of one file. ``_FieldError`` lets a check that spans
fields or sections report at the fields it is about, never at the model that ran it (whose
input, a whole section, would say nothing).
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from pydantic import ConfigDict

__all__ = ["ConfigError", "ConfigIssue"]

_STRICT = ConfigDict(extra="forbid", frozen=True, use_attribute_docstrings=True)


@dataclass(frozen=True, slots=True)
class ConfigIssue:
    """One problem: where (dotted path), the value found, and what was expected."""

    path: str
    value: Any
    expected: str

    def __str__(self) -> str:
        if self.value is _MISSING:
            return f"{self.path}: {self.expected}"
        return f"{self.path}: got {self.value!r}; {self.expected}"


class _Missing:
    def __repr__(self) -> str:
        return "<missing>"


_MISSING: Any = _Missing()


class _FieldError(ValueError):
    """A check across fields, reported at ``path`` (one dotted path such as
    ``"node_types[0].max"``, or several) rather than where it ran. Paths are relative to
    what the check validated: the whole config for a check of ``ShoalConfig``, the section
    for a section's model validator, the field for a field validator."""

    def __init__(self, path: str | Sequence[str], message: str) -> None:
        super().__init__(message)
        paths = (path,) if isinstance(path, str) else tuple(path)
        self.locs = tuple(_loc(p) for p in paths)


def _loc(path: str) -> tuple[str | int, ...]:
    """``"node_types[0].max"`` -> ``("node_types", 0, "max")``."""
    parts = re.findall(r"\[(\d+)\]|([^.\[\]]+)", path)
    return tuple(int(index) if index else key for index, key in parts)


class ConfigError(Exception):
    """The config cannot be used; ``errors`` lists every problem found."""

    def __init__(self, source: str, errors: list[ConfigIssue]) -> None:
        self.source = source
        self.errors = errors
        lines = "\n".join(f"  {e}" for e in errors)
        super().__init__(f"invalid config {source}:\n{lines}")
