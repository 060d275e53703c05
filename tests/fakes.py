"""Stand-ins the unit tests of the web layer share: the table state a web app reads,
the publisher its writes go through, a clock a test moves by hand, and the factories
that fill in what production always passes (the internal secret, rate-limit placement)
for an app that is the only process."""

from __future__ import annotations

import asyncio
from collections.abc import Collection
from typing import Any

from aiohttp import web

from likestream.client import DeliveryError
from likestream.domain._schema import LikeEvent
from likestream.tables import CountRow, MemberRow, NotServable, StateReader
from likestream.web import Auth, LimitSettings, RateLimiter, Replica, Writes, create_app

__all__ = [
    "INTERNAL_SECRET",
    "Clock",
    "Publisher",
    "Reads",
    "State",
    "alone",
    "holds_everything",
    "web_app",
    "writes_of",
]

INTERNAL_SECRET = "fakes-internal-secret-" + "0123456789abcdef" * 2
"""The internal secret of the unit tests' apps (a test that checks proofs passes its own)."""


def holds_everything(partition: int) -> bool:
    return True


def alone(secret: str = INTERNAL_SECRET, timeout: float = 0.5) -> LimitSettings:
    """Rate-limit placement of the only process: every user's bucket is here."""
    return LimitSettings(1, None, secret, timeout, holds_everything)


def writes_of(
    publisher: Any, limiter: RateLimiter, timeout: float, limits: LimitSettings | None = None
) -> Writes:
    """:class:`Writes` of the only process (``limits``: :func:`alone`'s by default)."""
    return Writes(publisher, limiter, timeout, limits or alone())


def web_app(
    state: StateReader, writes: Writes | None = None, cors_origins: Any = (), **options: Any
) -> web.Application:
    """``create_app`` with :data:`INTERNAL_SECRET`, a replica of its own and an
    :class:`Auth` that accepts no token, unless a test passes its own."""
    options.setdefault("internal_secret", INTERNAL_SECRET)
    if "replica" not in options:  # a replica per app: it is a RocksDB database
        options["replica"] = Replica(1)
    options.setdefault("auth", Auth())
    return create_app(state, writes, cors_origins, **options)


class Reads:
    """The reader protocol (``likestream.tables.StateReader``) of a process that serves
    nothing and holds no copies; a fake overrides the reads it answers. ``stamped`` and
    ``likes_many`` follow ``likes``."""

    def ready(self) -> bool:
        return True

    def likes(self, item_id: str) -> int:
        raise NotServable("elsewhere")

    def stamped(self, item_id: str) -> CountRow:
        return CountRow(self.likes(item_id), -1)

    def likes_many(self, items: list[str]) -> tuple[dict[str, int], list[str]]:
        out: dict[str, int] = {}
        rest: list[str] = []
        for item in items:
            try:
                out[item] = self.likes(item)
            except NotServable:
                rest.append(item)
        return out, rest

    def liked(self, item_id: str, user_id: str) -> bool:
        raise NotServable("elsewhere")

    def held_count(self, item_id: str) -> CountRow:
        raise NotServable("no copy here")

    def held_member(self, item_id: str, user_id: str) -> MemberRow:
        raise NotServable("no copy here")

    def held_changelog(self, item_id: str) -> tuple[str, int, int]:
        raise NotServable("no copy here")

    def held_changelogs(self) -> list[tuple[str, int]]:
        return []


class State(Reads):
    """Table state that holds every item: ``likes`` each, liked by ``fans``."""

    def __init__(self, likes: int = 0, fans: Collection[str] = ()) -> None:
        self.count = likes
        self.fans = set(fans)

    def likes(self, item_id: str) -> int:
        return self.count

    def liked(self, item_id: str, user_id: str) -> bool:
        return user_id in self.fans


class Publisher:
    """Records what it is asked to publish; ``fail`` or ``hang`` stand in for Kafka trouble."""

    def __init__(self) -> None:
        self.events: list[LikeEvent] = []
        self.running = False
        self.fail = False
        self.hang = False

    async def start(self) -> None:
        self.running = True

    async def stop(self) -> None:
        self.running = False

    async def publish(self, event: LikeEvent) -> object:
        if self.hang:
            await asyncio.Event().wait()
        if self.fail:
            raise DeliveryError("broker gone")
        self.events.append(event)
        return None


class Clock:
    """A clock that moves only when the test sets ``now``."""

    def __init__(self, now: float = 0.0) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now
