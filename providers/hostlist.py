"""Slurm hostlists (``cloud[1-3],dyn1``): pure expansion and compression of node names.

Slurm names sets of nodes in this form everywhere (its commands' output, the resume program's
argument). The parsing is python-hostlist's; this module is the one place shoal calls it, in
``providers`` so that both layers can: ``daemon.slurm`` reads Slurm's output with it, and
the AWS provider stores a power-save gang's node names in one EC2 tag value (256 characters)
in this form, so a gang of consecutive names (``cloud[1-100]``) fits.

- ``expand_hostlist`` keeps the text's order: ``b[2-3],a1`` -> ``b2, b3, a1``.
- ``compress_hostlist`` sorts (Slurm's display form, for messages and ``scontrol``).
- ``compress_in_order`` keeps the order, so ``expand_hostlist`` gives back exactly the names
  given, in their order (a gang's name i belongs to the instance launched i-th): only runs of
  names with one prefix and consecutive numbers in the given order are merged
  (``n008, n009, n010`` -> ``n[008-010]``; the width of a range is its first number's, as
  Slurm reads it).
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Sequence

import hostlist

__all__ = ["compress_hostlist", "compress_in_order", "expand_hostlist"]

_NUMBERED = re.compile(r"^(.*?)(\d+)$")
_NOT_IN_A_NAME = re.compile(r"[\[\],\s]")


def expand_hostlist(text: str, *, allow_duplicates: bool = False) -> list[str]:
    """``cloud[1-3],dyn1`` -> ``["cloud1", "cloud2", "cloud3", "dyn1"]``; "" -> []. A name
    given twice is listed once unless ``allow_duplicates``. A malformed hostlist is a
    ValueError."""
    text = text.strip()
    if not text or text in ("(null)", "N/A"):
        return []
    try:
        return list(hostlist.expand_hostlist(text, allow_duplicates=allow_duplicates))
    except hostlist.BadHostlist as exc:
        raise ValueError(f"not a Slurm hostlist: {text!r} ({exc})") from None


def compress_hostlist(names: Iterable[str]) -> str:
    """``["cloud1", "cloud2", "dyn1"]`` -> ``cloud[1-2],dyn1`` (sorted, duplicates dropped)."""
    return str(hostlist.collect_hostlist(sorted(set(names))))


def compress_in_order(names: Sequence[str]) -> str:
    """The hostlist ``expand_hostlist`` reads back as exactly ``names``, in order:
    ``["g1", "g2", "g3", "x", "g5"]`` -> ``g[1-3],x,g5``. Raises ValueError for a name that is
    empty or holds a comma, a bracket or white space, or for a name given twice."""
    bad = [n for n in names if not n or _NOT_IN_A_NAME.search(n)]
    if bad or len(set(names)) != len(names):
        raise ValueError(f"not distinct Slurm node names: {list(names)!r}")
    groups: list[tuple[str, list[list[str]]]] = []  # (prefix, [[low, high], ...]) or (name, [])
    for name in names:
        match = _NUMBERED.match(name)
        if match is None:
            groups.append((name, []))
            continue
        prefix, digits = match.groups()
        ranges = groups[-1][1] if groups and groups[-1][0] == prefix else []
        if not ranges:
            groups.append((prefix, [[digits, digits]]))
        elif f"{int(ranges[-1][1]) + 1:0{len(ranges[-1][0])}d}" == digits:
            ranges[-1][1] = digits  # the next number, at the range's width
        else:
            ranges.append([digits, digits])
    parts = []
    for prefix, ranges in groups:
        if not ranges:
            parts.append(prefix)
        elif len(ranges) == 1 and ranges[0][0] == ranges[0][1]:
            parts.append(prefix + ranges[0][0])
        else:
            spans = (low if low == high else f"{low}-{high}" for low, high in ranges)
            parts.append(f"{prefix}[{','.join(spans)}]")
    return ",".join(parts)
