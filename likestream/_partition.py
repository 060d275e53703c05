"""Kafka's default partitioner: murmur2 of the key bytes, as Java clients compute it."""

from __future__ import annotations

from aiokafka.partitioner import murmur2

__all__ = ["partition_for"]


def partition_for(key: bytes, partitions: int) -> int:
    """The partition Kafka's default (Java) partitioner picks for ``key``."""
    hashed: int = murmur2(key)
    return (hashed & 0x7FFFFFFF) % partitions
