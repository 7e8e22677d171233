"""The pass's view (``planner._observe``): its usable shapes are made once per policy.

A pass made every type's usable shape anew, though the daemon plans with one policy object
pass after pass; now the last policy's are kept (speed4). A policy with other overheads,
or other types, must get its own, in the types' order; a backed-off type is still blocked.
"""

from __future__ import annotations

import dataclasses

from builders import NOW, GiB, backed_off, node_type, policy, snapshot
from shoal.scaler import planner

A = node_type("a", cores=4, mem_gib=9, disk_gib=20, price=0.2)
B = node_type("b", cores=8, mem_gib=17, disk_gib=36, price=0.4)


def made_afresh(pol):
    types = sorted(pol.node_types, key=planner._type_order)
    return [(t.name, planner.usable_shape(t, pol)) for t in types]


def test_each_policy_gets_its_own_usable_shapes_and_the_same_policy_the_same():
    first = policy(B, A)
    other = dataclasses.replace(first, node_memory_overhead=2 * GiB)  # equal types
    fewer = dataclasses.replace(first, node_types=(A,))
    for pol in (first, first, other, fewer, first):
        view = planner._observe(snapshot(), pol, NOW)
        assert list(view.usable.items()) == made_afresh(pol)
    again = planner._observe(snapshot(), first, NOW)
    assert again.usable is view.usable  # kept, not made again
    assert planner._observe(snapshot(), other, NOW).usable["a"] != view.usable["a"]


def test_a_type_backed_off_everywhere_is_blocked_and_none_without_backoff():
    pol = policy(A, B)
    assert planner._observe(snapshot(), pol, NOW).blocked == {}
    view = planner._observe(snapshot(unavailable=backed_off(A, NOW + 180)), pol, NOW)
    assert view.blocked == {"a": NOW + 180}
