"""Giving back memory a burst freed.

glibc's malloc keeps what a process frees in its heaps for reuse, and its threshold for
serving large blocks from their own mappings rises after each one freed, so the fetch
buffers and per-batch dicts of a bulk restore end up in the heaps too: after a restart
the worker's RSS stayed at the restore's peak (about 40 MiB above a worker that never
restarted, in the soak) although that memory was free. ``malloc_trim(0)`` returns the
free pages of every heap to the system. glibc only; elsewhere nothing happens.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import functools
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
    """Return the heaps' free pages to the system; whether it could (glibc)."""
    trim = _malloc_trim()
    if trim is None:
        return False
    trim(0)
    return True
