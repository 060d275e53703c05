"""Stand-ins the unit tests share: the table state a web app reads, the publisher its
writes go through, a clock a test moves by hand, the factories that fill in what
production always passes (the internal secret, rate-limit placement) for an app that is
the only process, and the agent's sender over no Kafka."""

from __future__ import annotations

import asyncio
from collections import defaultdict
from collections.abc import Collection, Sequence
from itertools import pairwise
from typing import Any

from aiohttp import web
from aiokafka import TopicPartition
from aiokafka.errors import KafkaTimeoutError
from aiokafka.structs import RecordMetadata

from likestream.client import DeliveryError
from likestream.domain._schema import LikeEvent
from likestream.kafka._sender import Outgoing
from likestream.tables import CountRow, MemberRow, NotServable, StateReader
from likestream.web import Auth, LimitSettings, RateLimiter, Replica, Writes, create_app

__all__ = [
    "INTERNAL_SECRET",
    "Clock",
    "Publisher",
    "Reads",
    "Sender",
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

    async def holding(self) -> None:
        await asyncio.Event().wait()  # never: no copies


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


class Sender:
    """The agent's :class:`likestream.kafka._sender.Sender` over no Kafka.

    It checks what the real one is promised (groups in order, the last ending at the last
    record), keeps what it is handed per topic (``sent``, and each group's keys in
    ``groups``), and cuts each send into batches at group ends, one future per batch, as
    :class:`~likestream.kafka._sender.KafkaSender` does. By default a send is one batch,
    delivered at once (``delivered``). A test overrides the hooks: :meth:`sending` (a send
    that fails at once), :meth:`fails_after` (one that raises part way), :meth:`cut` (where
    batches end), :meth:`batch` (fail or hold a batch), and ``start``/``stop``.
    """

    def __init__(self) -> None:
        self.sent: defaultdict[str, list[Outgoing]] = defaultdict(list)
        self.groups: defaultdict[str, list[list[bytes | None]]] = defaultdict(list)
        self.delivered: defaultdict[str, list[Outgoing]] = defaultdict(list)
        self.stops = 0

    async def start(self) -> None:
        pass

    async def stop(self) -> None:
        self.stops += 1

    async def send(
        self,
        topic: str,
        partition: int,
        records: Sequence[Outgoing],
        ends: Sequence[int] | None = None,
    ) -> list[asyncio.Future[RecordMetadata]]:
        self.sending(partition)
        bounds = list(ends) if ends is not None else list(range(1, len(records) + 1))
        assert bounds == sorted(bounds)
        assert not records or bounds[-1] == len(records)
        groups = [records[start:end] for start, end in pairwise([0, *bounds])]
        self.sent[topic] += records
        self.groups[topic] += [[key for key, _, _ in group] for group in groups]
        fails_after = self.fails_after(len(groups))
        handed = len(groups) if fails_after is None else fails_after
        futures: list[asyncio.Future[RecordMetadata]] = []
        batch: list[Outgoing] = []
        for n, group in enumerate(groups[:handed]):
            batch += group
            # A batch ends at a group's end, never inside a group.
            if n == handed - 1 or self.cut():
                futures.append(self.batch(topic, partition, batch))
                batch = []
        if fails_after is not None:
            # The batches handed over before it still go, and nobody holds their futures.
            raise KafkaTimeoutError("fake: the send failed part way")
        return futures

    def sending(self, partition: int) -> None:
        """The first step of every send: raising here fails it before anything is handed
        over."""

    def fails_after(self, groups: int) -> int | None:
        """How many of a send's ``groups`` are handed over before it raises; None: it
        does not raise."""
        return None

    def cut(self) -> bool:
        """Whether a batch ends after this group (the send's last group always ends one)."""
        return False

    def batch(
        self, topic: str, partition: int, records: list[Outgoing]
    ) -> asyncio.Future[RecordMetadata]:
        """The future of one batch handed over."""
        future: asyncio.Future[RecordMetadata] = asyncio.get_running_loop().create_future()
        offset = len(self.delivered[topic])
        self.delivered[topic] += records
        tp = TopicPartition(topic, partition)
        future.set_result(RecordMetadata(topic, partition, tp, offset, -1, 0, 0))
        return future
