"""Kafka's default partitioner: murmur2 of the key bytes, as Java clients compute it."""

from __future__ import annotations

from functools import lru_cache

from aiokafka.partitioner import murmur2

__all__ = ["partition_for"]


# murmur2 is pure Python (~10 us a key); reads and pushes ask for the same hot items.
@lru_cache(maxsize=1 << 16)
def partition_for(key: bytes, partitions: int) -> int:
    """The partition Kafka's default (Java) partitioner picks for ``key``."""
    hashed: int = murmur2(key)
    return (hashed & 0x7FFFFFFF) % partitions
