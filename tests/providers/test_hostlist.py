"""``providers.hostlist``: an in-order compression that Slurm's own parser (python-hostlist,
``expand_hostlist``) reads back as exactly the names given, in their order."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st
from shoal.providers.hostlist import compress_in_order, expand_hostlist


@pytest.mark.parametrize(
    ("names", "text"),
    [
        ([f"g{i}" for i in range(1, 101)], "g[1-100]"),
        ([f"n{i:03d}" for i in range(1, 121)], "n[001-120]"),
        (["n8", "n9", "n10", "n11"], "n[8-11]"),
        (["n08", "n09", "n10"], "n[08-10]"),
        (["n010", "n11"], "n[010,11]"),  # widths differ: two spans
        (["a1b2", "a1b3", "a1b5"], "a1b[2-3,5]"),
        (["cloud3", "cloud1", "cloud2"], "cloud[3,1-2]"),  # launch order kept
        (["aws-c5-1", "aws-c5-2", "gpu1", "aws-c5-3"], "aws-c5-[1-2],gpu1,aws-c5-3"),
        (["login", "g", "g1"], "login,g,g1"),
        (["7", "8", "9"], "[7-9]"),
        (["x"], "x"),
        ([], ""),
    ],
)
def test_compress_in_order(names: list[str], text: str) -> None:
    assert compress_in_order(names) == text
    assert expand_hostlist(text) == names


@pytest.mark.parametrize(
    "names", [["a", "a"], ["a,b"], ["a[1]"], ["a b"], [""], ["n1", "n01", "n1"]]
)
def test_compress_in_order_refuses_what_is_no_list_of_node_names(names: list[str]) -> None:
    with pytest.raises(ValueError, match="not distinct Slurm node names"):
        compress_in_order(names)


_NAME = st.one_of(
    # numbered names in runs, zero padded or not, mixed prefixes
    st.builds(
        lambda prefix, number, width: f"{prefix}{number:0{width}d}",
        st.sampled_from(["g", "n", "a1b", "aws-c5-", "x.y_", ""]),
        st.integers(min_value=0, max_value=1200),
        st.integers(min_value=1, max_value=4),
    ),
    st.from_regex(r"[a-z][a-z0-9._-]{0,8}", fullmatch=True),
)


@given(st.lists(_NAME, unique=True, max_size=60))
def test_expand_reads_back_exactly_the_names_in_order(names: list[str]) -> None:
    assert expand_hostlist(compress_in_order(names)) == names


@given(
    st.sampled_from(["g", "node-", "n"]),
    st.integers(min_value=0, max_value=5000),
    st.integers(min_value=1, max_value=300),
    st.integers(min_value=1, max_value=5),
)
def test_a_run_of_consecutive_names_is_one_range(
    prefix: str, start: int, count: int, width: int
) -> None:
    names = [f"{prefix}{i:0{width}d}" for i in range(start, start + count)]
    text = compress_in_order(names)
    assert expand_hostlist(text) == names
    assert len(text) <= len(prefix) + 2 * len(names[-1]) + 3  # prefix[low-high]
