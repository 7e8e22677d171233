from __future__ import annotations

import math

import jsonschema
import pytest
from shoal.daemon.units import (
    DURATION_SCHEMA,
    SIZE_SCHEMA,
    format_duration,
    parse_duration,
    parse_size,
)

DURATIONS = [
    ("30s", 30.0),
    ("5m", 300.0),
    ("1h30m", 5400.0),
    ("200ms", 0.2),
    ("2d", 172800.0),
    ("1.5h", 5400.0),
    (" 10S ", 10.0),
    ("45", 45.0),
    (12, 12.0),
    (0.5, 0.5),
    ("1h 2m 3s", 3723.0),
]
BAD_DURATIONS = [
    "",
    "5x",
    "m",
    "-1s",
    "-3",
    -3,
    "5m3",
    "1h-",
    math.inf,
    math.nan,
    "inf",
    True,
    None,
    [],
]
SIZES = [
    ("4GiB", 4 * 1024**3),
    ("512MiB", 512 * 1024**2),
    ("1G", 10**9),
    ("1gb", 10**9),
    ("2Ki", 2048),
    ("100", 100),
    (4096, 4096),
    ("1.5GiB", int(1.5 * 1024**3)),
]
BAD_SIZES = ["", "1QB", "GiB", "-1GiB", -1, math.nan, math.inf, False, None]


@pytest.mark.parametrize(("text", "seconds"), DURATIONS)
def test_durations(text: object, seconds: float) -> None:
    assert parse_duration(text) == pytest.approx(seconds)


@pytest.mark.parametrize("bad", BAD_DURATIONS)
def test_bad_durations(bad: object) -> None:
    with pytest.raises(ValueError, match="duration"):
        parse_duration(bad)


@pytest.mark.parametrize(("text", "size"), SIZES)
def test_sizes(text: object, size: int) -> None:
    assert parse_size(text) == size


@pytest.mark.parametrize("bad", BAD_SIZES)
def test_bad_sizes(bad: object) -> None:
    with pytest.raises(ValueError, match="size"):
        parse_size(bad)


def test_format_duration() -> None:
    assert format_duration(90) == "1m30s"
    assert format_duration(0.2) == "200ms"
    assert format_duration(5400) == "1h30m"
    assert format_duration(0) == "0ms"


def _json(value: object) -> bool:
    return not (isinstance(value, float) and not math.isfinite(value))


@pytest.mark.parametrize(
    ("schema", "good", "bad"),
    [
        pytest.param(DURATION_SCHEMA, DURATIONS, BAD_DURATIONS, id="duration"),
        pytest.param(SIZE_SCHEMA, SIZES, BAD_SIZES, id="size"),
    ],
)
def test_the_json_schemas_accept_what_the_parsers_accept(
    schema: dict[str, object], good: list[tuple[object, object]], bad: list[object]
) -> None:
    """`shoal config-schema` and `shoal demand-schema` describe sizes and durations with
    these: a value one accepts and the other refuses would mislead a client."""
    validator = jsonschema.Draft202012Validator(schema)
    assert [v for v, _ in good if not validator.is_valid(v)] == []
    assert [v for v in bad if _json(v) and validator.is_valid(v)] == []
