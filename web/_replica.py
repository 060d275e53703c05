"""The newest count known per item, and how current that knowledge is per partition.

Every process reads the compacted ``like-counts`` topic from its beginning
(``_tail.py``), so it holds a copy of every item's count, stamped with the source
offset of the event that made it. Table state this process reads goes in too: a
larger stamp is a newer count (one item lives on one partition).

What makes the copy usable as a read replica is knowing how old it may be. A
``like-counts`` partition is *caught up* when the tail's position has reached the
high watermark of a fetch response: at that moment the copy held every count any
owner had published to it. :meth:`Replica.age` is the time since then; a count
from the copy is at most that old with respect to what the owners have published.
Before a partition was first caught up the copy knows nothing about it (an item
missing from the copy is then not known to be 0).
"""

from __future__ import annotations

import time
from dataclasses import dataclass

from likestream._partition import partition_for

__all__ = ["Replica", "Stamp"]


@dataclass(frozen=True, slots=True)
class Stamp:
    likes: int
    offset: int
    """Source offset of the event that made this count; -1 when unknown."""


NOTHING = Stamp(0, -1)


class Replica:
    def __init__(self, partitions: int) -> None:
        self.partitions = partitions
        self._latest: dict[str, Stamp] = {}
        self._caught_up_at: dict[int, float] = {}

    def update(self, item: str, stamp: Stamp) -> bool:
        """Keep ``stamp`` if it is newer than what is known; whether it was."""
        known = self._latest.get(item)
        if known is not None and stamp.offset <= known.offset:
            return False
        self._latest[item] = stamp
        return True

    def get(self, item: str) -> Stamp | None:
        """The newest count seen for ``item``, None when none was seen."""
        return self._latest.get(item)

    def caught_up(self, partition: int, at: float) -> None:
        """The tail had every record of ``partition`` at ``at`` (epoch seconds)."""
        self._caught_up_at[partition] = max(at, self._caught_up_at.get(partition, 0.0))

    def partition(self, item: str) -> int:
        return partition_for(item.encode(), self.partitions)

    def age(self, partition: int, now: float | None = None) -> float | None:
        """Seconds since ``partition`` was last caught up; None if it never was."""
        at = self._caught_up_at.get(partition)
        if at is None:
            return None
        return max(0.0, (time.time() if now is None else now) - at)

    def count(self, item: str) -> Stamp | None:
        """The count of ``item`` once its partition was caught up (0 if never seen)."""
        if self.partition(item) not in self._caught_up_at:
            return None
        return self._latest.get(item, NOTHING)

    def loaded(self) -> bool:
        """Every partition was caught up at least once."""
        return len(self._caught_up_at) == self.partitions

    def __len__(self) -> int:
        return len(self._latest)
