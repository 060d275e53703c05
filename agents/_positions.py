"""Per-partition positions: fold events strictly in offset order, commit only what is durable.

Faust may hand the agent a partition's events with a hole in them (events of a
stale generation are skipped and acknowledged on the agent's behalf after a
rebalance) and may then commit offsets past events that were never folded.
The chaos test caught exactly that: one unlike lost after a SIGKILL during a
rebalance. So the agent keeps its own positions:

* ``next``: the offset it must fold next. It starts at the committed offset
  whenever faust seeks to it (every assignment). An event past it means a
  hole: the agent reads the missing events itself (``_holes.py``) first.
  An event before it was folded already and is passed over.
* ``durable``: one past the last event whose writes Kafka acknowledged.
  Every commit faust sends is clamped to it.

Positions of an earlier assignment (an epoch) never move a later one.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Mapping
from typing import Literal

from faust.transport.consumer import Consumer
from faust.types import TP

__all__ = ["Positions", "Verdict"]

Verdict = Literal["fold", "seen", "hole", "unknown"]


class Positions:
    def __init__(self, topic: str) -> None:
        self.topic = topic
        self._next: dict[TP, int] = {}
        self._durable: dict[TP, int] = {}
        self._epoch: dict[TP, int] = {}
        self._committed: dict[TP, int] = {}
        self._commit: Callable[[Mapping[TP, int]], Awaitable[bool]] | None = None

    def reset(self, tp: TP, offset: int) -> None:
        """The partition (re)starts at ``offset``: faust just sought to it."""
        self._epoch[tp] = self._epoch.get(tp, 0) + 1
        self._next[tp] = self._durable[tp] = self._committed[tp] = offset

    def check(self, tp: TP, offset: int) -> Verdict:
        """``unknown``: no assignment seen for ``tp`` yet; call :meth:`reset` first.

        Other topics (faust's test context uses a channel) are always folded.
        """
        if tp.topic != self.topic:
            return "fold"
        expected = self._next.get(tp)
        if expected is None:
            return "unknown"
        if offset == expected:
            return "fold"
        return "seen" if offset < expected else "hole"

    def folded(self, tp: TP, offset: int) -> int:
        """Record a folded event; returns its epoch for :meth:`confirmed`."""
        self._next[tp] = offset + 1
        return self._epoch.get(tp, 0)

    def confirmed(self, tp: TP, offset: int, epoch: int) -> None:
        if tp in self._durable and self._epoch[tp] == epoch:
            self._durable[tp] = max(self._durable[tp], offset + 1)

    def next_offset(self, tp: TP) -> int:
        return self._next[tp]

    def clamp(self, offsets: Mapping[TP, int]) -> dict[TP, int]:
        """Offsets safe to commit: never past ``durable``, never back; others dropped."""
        safe: dict[TP, int] = {}
        for tp, offset in offsets.items():
            if tp.topic != self.topic:
                safe[tp] = offset
            elif tp in self._durable:
                offset = min(offset, self._durable[tp])
                if offset > self._committed[tp]:
                    safe[tp] = offset
        return safe

    async def commit_durable(self) -> None:
        """Commit every partition whose durable position moved since its last commit."""
        if self._commit is not None:
            await self._send(self.clamp(self._durable))

    async def _send(self, offsets: Mapping[TP, int]) -> bool:
        assert self._commit is not None
        if not offsets:
            return False
        done = await self._commit(offsets)
        if done:
            for tp, offset in offsets.items():
                if tp in self._committed:
                    self._committed[tp] = max(self._committed[tp], offset)
        return done

    def install(self, consumer: Consumer) -> None:
        """Wrap the consumer's seek-to-committed and commit with these positions.

        Both are faust internals (no public hook exists); they are the single
        place every seek after an assignment and every commit goes through.
        """
        seek_to_committed: Callable[[], Awaitable[Mapping[TP, int | None]]]
        seek_to_committed = consumer.seek_to_committed
        self._commit = consumer._commit

        async def seek_and_reset() -> Mapping[TP, int | None]:
            committed = await seek_to_committed()
            ours = [tp for tp in committed if tp.topic == self.topic]
            missing = [tp for tp in ours if not committed[tp]]
            earliest = await consumer.earliest_offsets(*missing) if missing else {}
            for tp in ours:
                self.reset(tp, committed[tp] or earliest.get(tp, 0))
            return committed

        async def clamped_commit(offsets: Mapping[TP, int]) -> bool:
            return await self._send(self.clamp(offsets))

        consumer.seek_to_committed = seek_and_reset  # type: ignore[method-assign,assignment]
        consumer._commit = clamped_commit  # type: ignore[method-assign]
