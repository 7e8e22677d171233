"""Shape and parse_node_types: Toil's semantics, table tests plus a differential check."""

from __future__ import annotations

import pytest
from shoal.scaler.shape import Shape, parse_node_types
from toil_oracle import require_toil, run_in_toil

BASE = Shape(3600, 1, 1, 1, True)


@pytest.mark.parametrize(
    "other",
    [
        Shape(3601, 1, 1, 1, True),
        Shape(3600, 2, 1, 1, True),
        Shape(3600, 1, 2, 1, True),
        Shape(3600, 1, 1, 2, True),
        Shape(3600, 1, 1, 1, False),
    ],
    ids=["wallTime", "memory", "cores", "disk", "preemptible"],
)
def test_equality_compares_all_five_fields(other: Shape) -> None:
    assert other != BASE
    assert Shape(3600, 1, 1, 1, True) == BASE


def test_equality_with_a_non_shape_is_false_not_an_error() -> None:
    assert (BASE == (3600, 1, 1, 1, True)) is False
    assert BASE != "Shape"


def test_hash_is_the_hash_of_the_five_tuple() -> None:
    assert hash(BASE) == hash((3600, 1, 1, 1, True))
    assert len({BASE, Shape(3600, 1, 1, 1, True)}) == 1


@pytest.mark.parametrize(
    ("bigger", "smaller"),
    [
        (Shape(1, 1, 1, 1, False), Shape(9, 9, 9, 9, True)),
        (Shape(1, 2, 1, 1, True), Shape(9, 1, 9, 9, True)),
        (Shape(1, 1, 2, 1, True), Shape(9, 1, 1, 9, True)),
        (Shape(1, 1, 1, 2, True), Shape(9, 1, 1, 1, True)),
        (Shape(2, 1, 1, 1, True), Shape(1, 1, 1, 1, True)),
    ],
    ids=["non-preemptible-first", "memory", "cores", "disk", "wallTime"],
)
def test_order(bigger: Shape, smaller: Shape) -> None:
    assert bigger > smaller
    assert bigger.greater_than(smaller)
    assert not smaller > bigger
    assert smaller < bigger


def test_equal_shapes_are_not_greater() -> None:
    assert not Shape(3600, 1, 1, 1, True) < BASE


def test_sorted_puts_preemptible_first_then_ascending() -> None:
    shapes = [Shape(1, 4, 1, 1, False), Shape(1, 8, 1, 1, True), Shape(1, 2, 1, 1, True)]
    assert sorted(shapes) == [shapes[2], shapes[1], shapes[0]]


def test_repr_and_str() -> None:
    text = "Shape(wallTime=3600, memory=1, cores=1, disk=1, preemptible=True)"
    assert repr(BASE) == text
    assert str(BASE) == text


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        (
            "c5.4xlarge/c5a.4xlarge:0.42,t2.large",
            [({"c5.4xlarge", "c5a.4xlarge"}, 0.42), ({"t2.large"}, None)],
        ),
        ("", []),
        (None, []),
        ("m5.large", [({"m5.large"}, None)]),
        ("m5.large:0", [({"m5.large"}, 0.0)]),
    ],
    ids=["design-example", "empty", "none", "single", "zero-bid"],
)
def test_parse_node_types(text: str | None, expected: list) -> None:
    assert parse_node_types(text) == expected


@pytest.mark.parametrize(
    ("text", "quoted"),
    [
        ("c5.large:0.1:0.2", "c5.large:0.1:0.2"),
        ("c5.large/,t2.large", "c5.large/"),
        ("t2.large,", ""),
        ("c5.large:abc", "c5.large:abc"),
        ("c5.large:-1", "c5.large:-1"),
        ("c5.large:nan", "c5.large:nan"),
    ],
    ids=["several-bids", "empty-alternative", "empty-entry", "bad-number", "negative", "nan"],
)
def test_parse_node_types_errors_quote_the_part(text: str, quoted: str) -> None:
    with pytest.raises(ValueError, match="node type") as info:
        parse_node_types(text)
    assert repr(quoted) in str(info.value)


_TOIL_SHAPES = r"""
import json, sys
from toil.provisioners.abstractProvisioner import Shape
from toil.provisioners import parse_node_types
data = json.load(sys.stdin)
shapes = [Shape(*s) for s in data["shapes"]]
order = sorted(range(len(shapes)), key=lambda i: shapes[i])
gt = [[a > b for b in shapes] for a in shapes]
parsed = []
for text in data["texts"]:
    try:
        parsed.append([[sorted(n), b] for n, b in parse_node_types(text)])
    except ValueError:
        parsed.append("ValueError")
json.dump({"repr": [repr(s) for s in shapes], "gt": gt, "order": order, "parsed": parsed},
          sys.stdout)
"""


def test_same_as_toil() -> None:
    require_toil()
    shapes = [
        [3600, 2, 1, 1, False],
        [3600, 2, 1, 1, True],
        [60, 4, 1, 0, True],
        [7200, 4, 1, 0, True],
        [3600, 4, 2, 10, False],
        [3600, 4, 2, 5, False],
        [0, 0, 0, 0, False],
    ]
    texts = ["c5.4xlarge/c5a.4xlarge:0.42,t2.large", "", "a:1:2", "a/,b", "a:x", "m5.large:0"]
    toil = run_in_toil(_TOIL_SHAPES, {"shapes": shapes, "texts": texts})
    ours = [Shape(*s) for s in shapes]
    assert [repr(s) for s in ours] == toil["repr"]
    assert [[a > b for b in ours] for a in ours] == toil["gt"]
    assert sorted(range(len(ours)), key=lambda i: ours[i]) == toil["order"]
    for text, expected in zip(texts, toil["parsed"], strict=True):
        if expected == "ValueError":
            with pytest.raises(ValueError):
                parse_node_types(text)
        else:
            assert [[sorted(n), b] for n, b in parse_node_types(text)] == expected
