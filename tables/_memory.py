"""Giving back memory a burst freed.

aiokafka's fetched batches do not go away when their consumer drops them (a seek, a
pause, ``stop``): each ``PartitionRecords`` holds a generator of its own records, a
reference cycle, so the raw batch (up to the consumer's fetch size per partition, in
faust's consumer thread's glibc arena or in the main heap) lives until the cyclic
garbage collector runs a full collection. The worker's collector is tuned for the fold
(``likestream/runtime/_worker.py`` GC_THRESHOLDS), and a batch that waited in a fetcher
through a rebalance has reached the oldest generation, so a full collection may be
minutes away or never come. A restart drops many: the bulk restore's consumer (fetches of
up to 8 MiB a partition), faust's consumer's first fetches of the changelog from offset 0
(``auto_offset_reset``) and of the events partitions, dropped by the recovery's seeks and
the agent's pauses. In the soak the restarted worker held about 40 MiB more than before
the kill, some of it such batches (read in the restarted worker's memory: eight 1 MiB
changelog batches from offset 0, held only by records objects no consumer referenced).

So :func:`release_free_memory` first collects the cycles, then ``malloc_trim(0)`` returns
the free pages of every heap to the system: glibc's malloc keeps what a process frees for
reuse, and its threshold for serving large blocks from their own mappings rises after
each one freed, so freed batches end up in the heaps. The trim is glibc only; elsewhere
only the collection happens.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import functools
import gc
from collections.abc import Callable

__all__ = ["release_free_memory"]


@functools.cache
def _malloc_trim() -> Callable[[int], int] | None:
    name = ctypes.util.find_library("c")
    if name is None:
        return None
    try:
        trim: Callable[[int], int] = ctypes.CDLL(name).malloc_trim
    except (OSError, AttributeError):  # not glibc (musl, macOS)
        return None
    return trim


def release_free_memory() -> bool:
    """Free the garbage cycles, then return the heaps' free pages to the system; whether
    it could return them (glibc). A full collection: call it after a burst, not per batch."""
    gc.collect()
    trim = _malloc_trim()
    if trim is None:
        return False
    trim(0)
    return True
