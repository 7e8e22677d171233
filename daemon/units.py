"""Durations and sizes as people write them in config files and demand bodies.

Durations: a number of seconds (``30``, ``1.5``) or a string of number+unit parts,
``"200ms"``, ``"30s"``, ``"5m"``, ``"1h30m"``, ``"2d"``. Sizes: a number of bytes
(``1073741824``) or a string ``"4GiB"``, ``"512MiB"``, ``"1G"`` (decimal), ``"100"``.
Both reject negative, non-finite and malformed values with a ``ValueError`` that
quotes the value and says what was expected.
"""

from __future__ import annotations

import math
import re
from typing import Annotated

from pydantic import BeforeValidator, Field, WithJsonSchema

__all__ = [
    "DURATION_SCHEMA",
    "SIZE_SCHEMA",
    "Duration",
    "PositiveDuration",
    "Size",
    "format_duration",
    "format_size",
    "parse_duration",
    "parse_size",
]

_DURATION_UNITS = {"ms": 0.001, "s": 1.0, "m": 60.0, "h": 3600.0, "d": 86400.0}
_DURATION_PART = re.compile(r"(\d+(?:\.\d+)?)(ms|s|m|h|d)")
_SIZE_UNITS = {
    "": 1,
    "b": 1,
    "k": 1000,
    "kb": 1000,
    "m": 1000**2,
    "mb": 1000**2,
    "g": 1000**3,
    "gb": 1000**3,
    "t": 1000**4,
    "tb": 1000**4,
    "ki": 1024,
    "kib": 1024,
    "mi": 1024**2,
    "mib": 1024**2,
    "gi": 1024**3,
    "gib": 1024**3,
    "ti": 1024**4,
    "tib": 1024**4,
}
_SIZE = re.compile(r"(\d+(?:\.\d+)?)\s*([a-zA-Z]*)")

DURATION_EXPECTED = 'a duration: seconds or a string like "200ms", "30s", "5m", "1h30m"'
SIZE_EXPECTED = 'a size: bytes or a string like "512MiB", "4GiB", "1G"'

# JSON schemas of what parse_duration and parse_size accept (``shoal config-schema``,
# ``shoal demand-schema``); tests/daemon/test_units.py checks them against the parsers
_NUMBER = r"\d+(\.\d+)?"
DURATION_SCHEMA = {
    "anyOf": [
        {"type": "number", "minimum": 0},
        {
            "type": "string",
            "pattern": rf"^\s*{_NUMBER}\s*$|^(\s*{_NUMBER}\s*([mM][sS]|[sSmMhHdD]))+\s*$",
        },
    ],
    "description": DURATION_EXPECTED[0].upper() + DURATION_EXPECTED[1:],
}
SIZE_SCHEMA = {
    "anyOf": [
        {"type": "number", "minimum": 0},
        {"type": "string", "pattern": rf"^\s*{_NUMBER}\s*([bB]|[kKmMgGtT][iI]?[bB]?)?\s*$"},
    ],
    "description": SIZE_EXPECTED[0].upper() + SIZE_EXPECTED[1:],
}


def _check_number(value: float, expected: str) -> float:
    if isinstance(value, bool):
        raise ValueError(f"{value!r} is not {expected}")
    if not math.isfinite(value):
        raise ValueError(f"{value!r} is not finite; expected {expected}")
    if value < 0:
        raise ValueError(f"{value!r} is negative; expected {expected}")
    return float(value)


def parse_duration(value: object) -> float:
    """Seconds from ``value`` (a non-negative number or a string like ``"1h30m"``)."""
    if isinstance(value, int | float) and not isinstance(value, bool):
        return _check_number(value, DURATION_EXPECTED)
    if not isinstance(value, str):
        raise ValueError(f"{value!r} is not {DURATION_EXPECTED}")
    text = value.strip().lower().replace(" ", "")
    if not text:
        raise ValueError(f"{value!r} is empty; expected {DURATION_EXPECTED}")
    try:
        return _check_number(float(text), DURATION_EXPECTED)
    except ValueError as exc:
        if "negative" in str(exc) or "finite" in str(exc):
            raise ValueError(f"{value!r} is not {DURATION_EXPECTED}") from None
    pos = 0
    total = 0.0
    for match in _DURATION_PART.finditer(text):
        if match.start() != pos:
            break
        total += float(match.group(1)) * _DURATION_UNITS[match.group(2)]
        pos = match.end()
    if pos != len(text) or pos == 0:
        raise ValueError(f"{value!r} is not {DURATION_EXPECTED}")
    return total


def parse_size(value: object) -> int:
    """Bytes from ``value`` (a non-negative number of bytes or a string like ``"4GiB"``)."""
    if isinstance(value, int | float) and not isinstance(value, bool):
        return int(_check_number(value, SIZE_EXPECTED))
    if not isinstance(value, str):
        raise ValueError(f"{value!r} is not {SIZE_EXPECTED}")
    match = _SIZE.fullmatch(value.strip())
    if not match or match.group(2).lower() not in _SIZE_UNITS:
        raise ValueError(f"{value!r} is not {SIZE_EXPECTED}")
    return int(float(match.group(1)) * _SIZE_UNITS[match.group(2).lower()])


def format_duration(seconds: float) -> str:
    """A short human form, e.g. ``90 -> "1m30s"``, ``0.2 -> "200ms"``."""
    if seconds < 1:
        return f"{round(seconds * 1000)}ms"
    out = []
    rest = round(seconds)
    for unit, size in (("h", 3600), ("m", 60), ("s", 1)):
        if rest >= size:
            out.append(f"{rest // size}{unit}")
            rest %= size
    return "".join(out) or "0s"


# The pydantic field types of the config and the demand body (their JSON schemas above)
Duration = Annotated[float, BeforeValidator(parse_duration), WithJsonSchema(DURATION_SCHEMA)]
"""Seconds; accepts ``30``, ``"30s"``, ``"5m"``, ``"1h30m"``, ``"200ms"``."""
PositiveDuration = Annotated[
    float, BeforeValidator(parse_duration), Field(gt=0), WithJsonSchema(DURATION_SCHEMA)
]
Size = Annotated[int, BeforeValidator(parse_size), WithJsonSchema(SIZE_SCHEMA)]
"""Bytes; accepts ``1073741824``, ``"1GiB"``, ``"512MiB"``, ``"1G"``."""


def format_size(size: float) -> str:
    """A short human form in binary units, e.g. ``4294967296 -> "4 GiB"``, ``1536 MiB ->
    "1.5 GiB"``, ``0 -> "0 B"``; what ``parse_size`` reads back."""
    value = float(size)
    for unit in ("B", "KiB", "MiB", "GiB", "TiB"):
        if abs(value) < 1024 or unit == "TiB":
            break
        value /= 1024
    text = f"{value:.1f}".removesuffix(".0")
    return f"{text} {unit}"
