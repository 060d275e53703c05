"""Giving freed memory back (tables/_memory.py)."""

from __future__ import annotations

import platform

import pytest

from likestream.tables._memory import release_free_memory


@pytest.mark.skipif(platform.libc_ver()[0] != "glibc", reason="malloc_trim is glibc's")
def test_free_memory_is_given_back_with_glibc() -> None:
    held = [bytearray(1 << 16) for _ in range(256)]  # 16 MiB from the heap, then freed
    del held
    assert release_free_memory() is True
    assert release_free_memory() is True  # the function is looked up once, kept
