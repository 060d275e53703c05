"""Giving freed memory back (tables/_memory.py)."""

from __future__ import annotations

import gc
import platform
import weakref

import pytest

from likestream.tables._memory import release_free_memory


@pytest.mark.skipif(platform.libc_ver()[0] != "glibc", reason="malloc_trim is glibc's")
def test_free_memory_is_given_back_with_glibc() -> None:
    held = [bytearray(1 << 16) for _ in range(256)]  # 16 MiB from the heap, then freed
    del held
    assert release_free_memory() is True
    assert release_free_memory() is True  # the function is looked up once, kept


class _Cycle:
    """Holds a buffer and itself, as aiokafka's fetched records do (a generator of its own)."""

    def __init__(self) -> None:
        self.buffer = bytearray(1 << 20)
        self.me = self


def test_garbage_cycles_are_freed_before_the_trim() -> None:
    dropped = _Cycle()
    gone = weakref.ref(dropped)
    # It survived collections while it was held (as a batch waits in a fetcher through a
    # rebalance): in the oldest generation, which only a full collection looks at.
    gc.collect(0)
    gc.collect(1)
    del dropped
    gc.collect(0)
    assert gone() is not None
    release_free_memory()
    assert gone() is None
