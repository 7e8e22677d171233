"""What a node keeps for its OS and agents: Toil 9.6's reservation, computed from its size.

Memory follows GKE's published progressive table, as Toil's ``ClusterScaler`` does: a
node under 1 GiB keeps a flat 255 MiB; otherwise 25 % of the first 4 GiB, 20 % of the
next 4, 10 % of the next 8, 6 % of the next 112 and 2 % of the rest, plus a 100 MiB
eviction threshold. Disk: 5 GB (decimal, the OS and its images) plus 5 % of the disk,
or the whole disk when that is not more. Cores are never reserved.

Used by the planner unless ``Policy.node_memory_overhead`` / ``node_disk_overhead`` give
a flat amount instead.
"""

from __future__ import annotations

import math

__all__ = ["disk_overhead", "memory_overhead"]

MiB = 1024**2
GiB = 1024**3

EVICTION_THRESHOLD = 100 * MiB
SMALL_NODE = 1 * GiB  # below this, a flat reservation
SMALL_NODE_RESERVATION = 255 * MiB
# (upper edge of the band, fraction of the band reserved), like tax brackets
MEMORY_BANDS: tuple[tuple[float, float], ...] = (
    (4 * GiB, 0.25),
    (8 * GiB, 0.20),
    (16 * GiB, 0.10),
    (128 * GiB, 0.06),
    (math.inf, 0.02),
)
OS_DISK = 5 * 1000**3  # the OS and its container images, decimal as Toil writes it
DISK_FRACTION = 0.05  # a superuser reservation on the filesystem


def memory_overhead(memory: float) -> int:
    """Bytes of a node's ``memory`` the scheduler will not offer jobs."""
    if memory < SMALL_NODE:
        return SMALL_NODE_RESERVATION
    reserved = 0.0
    lower = 0.0
    for upper, fraction in MEMORY_BANDS:
        top = min(upper, memory)
        reserved += fraction * (top - lower)
        lower = top
        if lower >= memory:
            break
    return int(reserved) + EVICTION_THRESHOLD


def disk_overhead(disk: float) -> int:
    """Bytes of a node's ``disk`` the OS keeps (all of it when the disk is that small)."""
    needed = OS_DISK + int(DISK_FRACTION * disk)
    return int(disk) if disk <= needed else needed
