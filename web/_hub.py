"""The push hub: the newest count known per item, and the subscribers it fans out to.

A count is stamped with its source offset: the offset, in the events partition
that owns the item, of the event that produced it (the ``source-offset`` header
of ``like-counts``, or the stamp of the table row). One item lives on one
partition, so for one item a larger offset is a newer count. Everything older
than, or as old as, what a subscriber already has is dropped; that is what keeps
a client's counts from going backwards when records arrive out of order, and
what drops the re-publication of a count after a worker crash.

Fan-out never waits for a client: :meth:`Subscriber.offer` only notes the newest
stamp per item and arms a timer, so a slow client cannot slow anyone else.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable, Iterable
from typing import Protocol, runtime_checkable

from likestream._metrics import SUBSCRIPTIONS
from likestream.tables import CountRow, NotServable, StateReader

from ._replica import Replica, Stamp

__all__ = ["Hub", "Render", "Stamp", "Subscriber"]

log = logging.getLogger(__name__)


Render = Callable[[str, Stamp], str]


@runtime_checkable
class _StampedState(Protocol):
    # LikeTables: the count row with its stamp (read after likes() checked the partition).
    def count(self, item_id: str) -> CountRow: ...


class Subscriber:
    """One client's subscriptions, coalescing timer and bounded send queue."""

    def __init__(self, render: Render, interval: float, queue_size: int) -> None:
        self.items: set[str] = set()
        self.queue: asyncio.Queue[str] = asyncio.Queue(queue_size)
        self.overflow = asyncio.Event()
        self._render = render
        self._interval = interval
        self._sent: dict[str, Stamp] = {}
        self._dirty: dict[str, Stamp] = {}
        self._due = 0.0
        self._timer: asyncio.TimerHandle | None = None

    def put(self, frame: str) -> None:
        """Queue a frame; a full queue means the client cannot keep up."""
        if self.overflow.is_set():
            return
        try:
            self.queue.put_nowait(frame)
        except asyncio.QueueFull:
            self.overflow.set()

    def offer(self, item: str, stamp: Stamp) -> None:
        """A newer count may exist: send it with the next flush if it is newer."""
        if item not in self.items or stamp.offset <= self.newest(item):
            return
        self._dirty[item] = stamp
        if self._timer is None:
            loop = asyncio.get_running_loop()
            self._timer = loop.call_at(max(loop.time(), self._due), self._flush)

    def send_now(self, item: str, stamp: Stamp) -> None:
        """The current count at subscription: sent at once, whatever was sent before."""
        self._dirty.pop(item, None)
        self._sent[item] = stamp
        self.put(self._render(item, stamp))

    def skip_up_to(self, item: str, offset: int) -> None:
        """The client already has the count at ``offset`` (SSE ``Last-Event-ID``)."""
        self._sent[item] = Stamp(-1, offset)

    def forget(self, item: str) -> None:
        self.items.discard(item)
        self._sent.pop(item, None)
        self._dirty.pop(item, None)

    def close(self) -> None:
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None

    def newest(self, item: str) -> int:
        """Offset of the newest count sent or about to be sent for ``item``."""
        pending = self._dirty.get(item) or self._sent.get(item)
        return pending.offset if pending is not None else -2

    def _flush(self) -> None:
        # At most one flush per interval, each sending an item at most once: so at
        # most one frame per item per interval, and never more frames than items.
        self._timer = None
        self._due = asyncio.get_running_loop().time() + self._interval
        dirty, self._dirty = self._dirty, {}
        for item, stamp in dirty.items():
            self._sent[item] = stamp
            self.put(self._render(item, stamp))


class Hub:
    """Newest stamped count per item (kept in a :class:`Replica`, which reads also use),
    from table state and from ``like-counts``."""

    def __init__(self, state: StateReader, replica: Replica | None = None) -> None:
        self._state = state
        self.replica = replica if replica is not None else Replica(1)
        self._subs: dict[str, set[Subscriber]] = {}
        self._unseeded: set[str] = set()

    def update(self, item: str, stamp: Stamp) -> None:
        """A count seen somewhere; fanned out when newer than any seen before."""
        if not self.replica.update(item, stamp):
            return
        self._unseeded.discard(item)
        for sub in self._subs.get(item, ()):
            sub.offer(item, stamp)

    def current(self, item: str) -> Stamp | None:
        """The newest count known: table state when this process owns the item, else the
        replica's (0 for an item never liked once its partition was read to the end)."""
        seeded = self._from_state(item)
        if seeded is not None:
            self.update(item, seeded)
        return self.replica.get(item) or self.replica.count(item)

    def subscribe(self, sub: Subscriber, items: Iterable[str]) -> None:
        for item in items:
            again = item in sub.items  # subscribing again asks for the current count again
            stamp = self.current(item)  # may fan a newer count out to the others first
            if not again:
                SUBSCRIPTIONS.inc()
            sub.items.add(item)
            self._subs.setdefault(item, set()).add(sub)
            if stamp is None:
                # Owned elsewhere (or recovering) and its partition not read yet: the
                # next change, table state once servable, or the replica once its
                # partition is read to the end gives the first frame.
                self._unseeded.add(item)
            elif again or stamp.offset > sub.newest(item):
                sub.send_now(item, stamp)

    def unsubscribe(self, sub: Subscriber, items: Iterable[str]) -> None:
        for item in items:
            if item in sub.items:
                SUBSCRIPTIONS.dec()
            sub.forget(item)
            subs = self._subs.get(item)
            if subs is not None:
                subs.discard(sub)
                if not subs:
                    del self._subs[item]

    def drop(self, sub: Subscriber) -> None:
        self.unsubscribe(sub, list(sub.items))
        sub.close()

    def subscribers(self) -> int:
        return len({sub for subs in self._subs.values() for sub in subs})

    def reseed(self) -> None:
        """Retry table state for subscribed items that have no count yet."""
        for item in list(self._unseeded):
            if item not in self._subs:
                self._unseeded.discard(item)
                continue
            seeded = self._from_state(item) or self.replica.count(item)
            if seeded is not None:
                self.update(item, seeded)

    def _from_state(self, item: str) -> Stamp | None:
        try:
            likes = self._state.likes(item)
        except NotServable:
            return None
        if isinstance(self._state, _StampedState):
            row = self._state.count(item)
            return Stamp(row.likes, row.offset)
        return Stamp(likes, -1)
