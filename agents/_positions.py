"""Per-partition positions of the events topic: folded, durable, committed.

* ``next``: one past the last event folded. The feed reads each partition from
  here, in offset order, in whole fetched batches (``_feed.py``).
* ``durable``: one past the last event whose writes Kafka acknowledged. It moves
  only by a whole flush whose every delivery succeeded, and flushes are confirmed
  one at a time in the order they were taken, so it never passes an event whose
  writes failed (``_confirm.py``); it is what gets committed.

An assignment or a rewind starts a new epoch: a flush taken in an earlier epoch
never moves a later one, so a flush that straddles a rebalance or a failed
delivery cannot commit past what the new epoch re-reads.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass

from faust.types import TP

__all__ = ["Mark", "Positions"]


@dataclass(frozen=True, slots=True)
class Mark:
    """How far a partition was folded when a flush was taken."""

    epoch: int
    next: int


class Positions:
    def __init__(self) -> None:
        self._next: dict[TP, int] = {}
        self._durable: dict[TP, int] = {}
        self._committed: dict[TP, int] = {}
        self._epoch: dict[TP, int] = {}

    def start(self, tp: TP, offset: int) -> None:
        """``tp`` is (re)assigned, or rewound, and is read again from ``offset``."""
        self._epoch[tp] = self._epoch.get(tp, 0) + 1
        self._next[tp] = self._durable[tp] = offset
        self._committed.setdefault(tp, offset)
        self._committed[tp] = min(self._committed[tp], offset)

    def stop(self, tp: TP) -> None:
        """``tp`` was revoked: nothing of it is folded or committed any more."""
        self._next.pop(tp, None)
        self._durable.pop(tp, None)
        self._committed.pop(tp, None)
        self._epoch[tp] = self._epoch.get(tp, 0) + 1

    @property
    def assigned(self) -> list[TP]:
        return list(self._next)

    def next_offset(self, tp: TP) -> int | None:
        """Where ``tp`` is read from next; None when it is not assigned."""
        return self._next.get(tp)

    def folded(self, tp: TP, next_offset: int) -> None:
        self._next[tp] = next_offset

    def marks(self) -> dict[TP, Mark]:
        """How far each partition is folded now: taken together with a flush's rows."""
        return {tp: Mark(self._epoch[tp], offset) for tp, offset in self._next.items()}

    def confirmed(self, marks: Mapping[TP, Mark]) -> None:
        """Every write of the flush taken with ``marks`` is acknowledged."""
        for tp, mark in marks.items():
            if self._epoch.get(tp) == mark.epoch and tp in self._durable:
                self._durable[tp] = max(self._durable[tp], mark.next)

    def rewind(self, tps: Iterable[TP]) -> dict[TP, int]:
        """Read ``tps`` again from their durable positions; returns where from."""
        starts = {tp: self._durable[tp] for tp in tps if tp in self._durable}
        for tp, offset in starts.items():
            self.start(tp, offset)
        return starts

    def to_commit(self) -> dict[TP, int]:
        """Durable positions not committed yet."""
        return {
            tp: offset
            for tp, offset in self._durable.items()
            if offset > self._committed.get(tp, -1)
        }

    def committed(self, offsets: Mapping[TP, int]) -> None:
        for tp, offset in offsets.items():
            if tp in self._committed:
                self._committed[tp] = max(self._committed[tp], offset)
