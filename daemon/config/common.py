"""What every config section shares: strict models, and the errors ``load_config`` raises.

A ``ConfigIssue`` names the field path, the value found and what was expected; a
``ConfigError`` lists every issue of one file. ``_FieldError`` lets a check that spans
sections report at the field it is about.
"""

from __future__ import annotations

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
    """A check across sections, reported at ``path`` (dotted) rather than where it ran."""

    def __init__(self, path: str, message: str) -> None:
        super().__init__(message)
        self.path = path


class ConfigError(Exception):
    """The config cannot be used; ``errors`` lists every problem found."""

    def __init__(self, source: str, errors: list[ConfigIssue]) -> None:
        self.source = source
        self.errors = errors
        lines = "\n".join(f"  {e}" for e in errors)
        super().__init__(f"invalid config {source}:\n{lines}")
