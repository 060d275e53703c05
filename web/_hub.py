"""The push hub: the newest count known per item, and the subscribers it fans out to.

A count is stamped with its source offset: the offset, in the events partition
that owns the item, of the event that produced it (the ``source-offset`` header
of ``like-counts``, or the stamp of the table row). One item lives on one
partition, so for one item a larger offset is a newer count. Everything older
than, or as old as, what a subscriber already has is dropped; that is what keeps
a client's counts from going backwards when records arrive out of order, and
what drops the re-publication of a count after a worker crash.

Fan-out is one tick per interval for the whole process: each item that changed is
encoded once per kind of client (``_wire.py``) and the same bytes are written to the
socket of every subscriber that does not have that count yet. So a client gets at most
one frame per item per interval (the changes in between coalesced), and the cost of a
change is one encoding plus one ``write`` per subscriber, in slices, so that a fan-out to
many clients never holds the event loop for long (a worker's fold shares it). A write
never waits: a client
whose socket has not taken ``backlog`` bytes is too slow and is ended (WebSocket close
code 1013) instead of slowing anyone else.
"""

from __future__ import annotations

import asyncio
import enum
import logging
from collections.abc import Iterable, Iterator
from typing import Protocol

from likestream.runtime._metrics import FANOUT_SECONDS, FRAMES_ENCODED, PUSHES, SUBSCRIPTIONS
from likestream.tables import CountRow, NotServable, StateReader

from ._replica import Replica
from ._wire import likes_payload, sse_event, ws_text

__all__ = ["Full", "Hub", "Kind", "Subscriber"]

log = logging.getLogger(__name__)

SLICE = 500  # frames written before the rest of the process gets a turn (about 2-3 ms)


class _Transport(Protocol):
    # The parts of asyncio.WriteTransport a subscriber uses (unit tests pass fakes).
    def write(self, data: bytes) -> None: ...
    def is_closing(self) -> bool: ...
    def get_write_buffer_size(self) -> int: ...


class Kind(enum.IntEnum):
    """How a subscriber's frames are framed on the wire."""

    WS = 0
    SSE = 1
    SSE_CHUNKED = 2


def encode(kind: Kind, item: str, stamp: CountRow) -> bytes:
    """A count change framed for ``kind``."""
    if kind is Kind.WS:
        return ws_text(likes_payload(item, stamp.likes, ws=True))
    return sse_event(
        "likes",
        likes_payload(item, stamp.likes, ws=False),
        stamp.offset,
        chunked=kind is Kind.SSE_CHUNKED,
    )


class Full(Exception):
    """A subscribe past ``LIKESTREAM_PUSH_MAX_SUBSCRIPTIONS``: nothing was subscribed."""


class Subscriber:
    """One live client: its items, the stamp it was last sent per item, and its socket."""

    __slots__ = ("_backlog", "_task", "_transport", "ended", "items", "kind", "sent")

    def __init__(
        self,
        kind: Kind,
        transport: _Transport,
        backlog: int,
        task: asyncio.Task[object] | None = None,
    ) -> None:
        self.kind = kind
        self.items: set[str] = set()
        self.sent: dict[str, int] = {}
        """Per item, the source offset of the newest count written (-2: none)."""
        self.ended: str | None = None
        """Why the client was ended: ``slow``, or ``gone`` (its connection closed)."""
        self._transport = transport
        self._backlog = backlog
        self._task = task

    def write(self, frame: bytes) -> bool:
        """Write ``frame`` now, or end a client that cannot take it; whether it was written."""
        if self.ended is not None:
            return False
        transport = self._transport
        if transport.is_closing():
            self.end("gone")
            return False
        if transport.get_write_buffer_size() > self._backlog:
            self.end("slow")
            return False
        transport.write(frame)
        return True

    def send_text(self, text: str) -> None:
        """A WebSocket text frame of its own (errors, trending)."""
        self.write(ws_text(text.encode()))

    def end(self, why: str) -> None:
        """Stop writing, and wake the connection's handler to close it."""
        if self.ended is None:
            self.ended = why
            if self._task is not None and self._task is not asyncio.current_task():
                self._task.cancel()


class Hub:
    """Newest stamped count per item (kept in a :class:`Replica`, which reads also use),
    from table state and from ``like-counts``, and the subscribers of each item."""

    def __init__(
        self,
        state: StateReader,
        replica: Replica,
        interval: float = 0.1,
        max_subscriptions: int = 0,
    ) -> None:
        self._state = state
        self.replica = replica
        self.interval = interval
        self.max_subscriptions = max_subscriptions
        """0: no cap."""
        self.subscriptions = 0
        self._subs: dict[str, set[Subscriber]] = {}
        self._unseeded: set[str] = set()
        self._dirty: dict[str, CountRow] = {}
        self._timer: asyncio.TimerHandle | None = None
        self._writing: Iterator[bool] | None = None
        self._due = self._began = 0.0

    def update(self, item: str, stamp: CountRow) -> None:
        """A count read from ``like-counts``; fanned out when newer than any seen before."""
        if self.replica.update(item, stamp) and item in self._subs:
            self._mark(item, stamp)

    def current(self, item: str) -> CountRow | None:
        """The newest count known: table state when this process owns the item, else the
        replica's (0 for an item never liked once its partition was read to the end)."""
        known = self.replica.known(item)
        owned = self._from_state(item)
        if owned is not None and (known is None or owned.offset >= known.offset):
            return owned
        return known

    def room(self, more: int) -> bool:
        """Whether ``more`` subscriptions fit under the process's cap."""
        cap = self.max_subscriptions
        return not cap or self.subscriptions + more <= cap

    def subscribe(self, sub: Subscriber, items: Iterable[str]) -> None:
        """Subscribe ``sub`` and send it each item's current count at once (again for an
        item it had: subscribing again asks for the current count again)."""
        items = list(items)
        new = [item for item in items if item not in sub.items]
        if not self.room(len(new)):
            raise Full(f"this process holds {self.max_subscriptions:,} subscriptions")
        self.subscriptions += len(new)
        SUBSCRIPTIONS.inc(len(new))
        for item in items:
            stamp = self.current(item)
            sub.items.add(item)
            self._subs.setdefault(item, set()).add(sub)
            if stamp is None:
                # Owned elsewhere (or recovering) and its partition not read yet: the
                # next change, table state once servable, or the replica once its
                # partition is read to the end gives the first frame.
                self._unseeded.add(item)
            elif item not in new or stamp.offset > sub.sent.get(item, -2):
                sub.sent[item] = stamp.offset
                if sub.write(encode(sub.kind, item, stamp)):
                    PUSHES.inc()

    def unsubscribe(self, sub: Subscriber, items: Iterable[str]) -> None:
        for item in items:
            if item not in sub.items:
                continue
            self.subscriptions -= 1
            SUBSCRIPTIONS.dec()
            sub.items.discard(item)
            sub.sent.pop(item, None)
            subs = self._subs.get(item)
            if subs is not None:
                subs.discard(sub)
                if not subs:
                    del self._subs[item]
                    self._dirty.pop(item, None)

    def drop(self, sub: Subscriber) -> None:
        self.unsubscribe(sub, list(sub.items))

    def subscribers(self) -> int:
        return len({sub for subs in self._subs.values() for sub in subs})

    def reseed(self) -> None:
        """Retry table state and the replica for subscribed items that have no count yet."""
        for item in list(self._unseeded):
            if item not in self._subs:
                self._unseeded.discard(item)
                continue
            stamp = self.current(item)
            if stamp is not None:
                self._unseeded.discard(item)
                self._mark(item, stamp)

    def close(self) -> None:
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None

    def _mark(self, item: str, stamp: CountRow) -> None:
        dirty = self._dirty.get(item)
        if dirty is None or stamp.offset > dirty.offset:
            self._dirty[item] = stamp
        if self._timer is None and self._writing is None:
            loop = asyncio.get_running_loop()
            self._timer = loop.call_at(max(loop.time(), self._due), self._tick)

    def _tick(self) -> None:
        # At most one tick per interval, each writing an item at most once to a client:
        # so at most one frame per item per interval to each client.
        self._timer = None
        loop = asyncio.get_running_loop()
        self._began = loop.time()
        self._due = self._began + self.interval
        dirty, self._dirty = self._dirty, {}
        self._writing = self._writes(dirty)
        self._write_slice()

    def _write_slice(self) -> None:
        # A tick writes SLICE frames, then lets whatever else is ready run (the fold of a
        # worker, reads, handshakes) before its next slice: a fan-out to many clients
        # delays the rest of the process by one slice at a time, not by the whole tick.
        assert self._writing is not None
        if next(self._writing, None) is not None:
            asyncio.get_running_loop().call_soon(self._write_slice)
            return
        self._writing = None
        FANOUT_SECONDS.observe(asyncio.get_running_loop().time() - self._began)
        if self._dirty:  # changed while this tick was writing: the next one is due
            self._mark(*next(iter(self._dirty.items())))

    def _writes(self, dirty: dict[str, CountRow]) -> Iterator[bool]:
        """Write ``dirty`` to its subscribers; yields after every SLICE frames."""
        written = encoded = budget = 0
        for item, stamp in dirty.items():
            subs = self._subs.get(item)
            if not subs:
                continue
            frames: list[bytes | None] = [None, None, None]
            offset = stamp.offset
            for sub in tuple(subs):  # subscriptions may change between slices
                if sub.sent.get(item, -2) >= offset or item not in sub.items:
                    continue
                sub.sent[item] = offset
                frame = frames[sub.kind]
                if frame is None:
                    frame = frames[sub.kind] = encode(sub.kind, item, stamp)
                    encoded += 1
                written += sub.write(frame)
                budget += 1
                if budget >= SLICE:
                    budget = 0
                    yield True
        FRAMES_ENCODED.inc(encoded)
        PUSHES.inc(written)

    def _from_state(self, item: str) -> CountRow | None:
        try:
            return self._state.stamped(item)
        except NotServable:
            return None
