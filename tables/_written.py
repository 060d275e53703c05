"""Which keys a restore may have written into a partition that held no rows.

Restoring into an empty partition database (a new worker, a deleted data dir), a
key the restore has not written yet cannot be there: it needs no RocksDB read to be
compared with. The per-key read was a quarter of the worker's main thread during a
restore (py-spy), the largest part after aiokafka's own decoding.

One bit per hashed key: a key whose bit is clear was never written (no false
negatives), so it is written as it comes; a set bit may be another key's (a false
positive), which costs the read the restore made before, never a wrong row.
"""

from __future__ import annotations

__all__ = ["FILTER_BITS", "Written"]

FILTER_BITS = 1 << 24
"""Bits per restored partition (2 MiB): about 1 read in 13 for the keys of a 10,000,000
membership state on 8 partitions, 1 in 130 at 1,000,000."""
_MASK = FILTER_BITS - 1


class Written:
    """The keys written to one partition by the restore that began with it empty.

    ``sequence``: the database's latest sequence number after the restore's last write;
    a database that moved past it was written by someone else, and the filter is void.
    """

    __slots__ = ("_bits", "sequence")

    def __init__(self, sequence: int) -> None:
        self._bits = bytearray(FILTER_BITS // 8)
        self.sequence = sequence

    def add(self, key: bytes) -> bool:
        """Note ``key`` as written; whether it may have been written before."""
        h = hash(key) & _MASK
        byte, bit = h >> 3, 1 << (h & 7)
        bits = self._bits
        if bits[byte] & bit:
            return True
        bits[byte] |= bit
        return False
