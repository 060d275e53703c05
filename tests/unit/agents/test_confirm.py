"""A failed delivery never lets a later flush commit past it (issue 13, part 5).

Driven through the real agent, confirmer, positions and RocksDB tables; only Kafka
is replaced, by a sender whose chosen deliveries fail.
"""

from __future__ import annotations

import asyncio
import contextlib
import shutil
from collections.abc import Mapping, Sequence
from pathlib import Path

import faust
import pytest
from aiokafka.errors import KafkaTimeoutError
from aiokafka.structs import RecordMetadata
from fakes import Sender
from faust.types import TP
from prometheus_client import REGISTRY

from likestream.agents import DeliveryFailed, LikesAgent, Topics
from likestream.agents._confirm import MAX_IN_FLIGHT
from likestream.config._settings import load_settings
from likestream.domain._schema import LikeEvent, encode_event
from likestream.kafka._sender import Outgoing
from likestream.tables import LikeTables, StateLost

from .test_agent import Rec

P0 = TP("likes", 0)


class FlakySender(Sender):
    """Delivers every batch at once, except the changelog batches of the flushes
    listed in ``fail`` (numbered from 0), whose futures fail."""

    def __init__(self, fail: set[int]) -> None:
        super().__init__()
        self.fail = fail
        self.flushes = 0

    def batch(
        self, topic: str, partition: int, records: list[Outgoing]
    ) -> asyncio.Future[RecordMetadata]:
        if "changelog" in topic:
            self.flushes += 1
            if self.flushes - 1 in self.fail:
                future: asyncio.Future[RecordMetadata] = asyncio.get_running_loop().create_future()
                future.set_exception(KafkaTimeoutError())
                return future
        return super().batch(topic, partition, records)


class Harness:
    def __init__(self, tmp_path: Path, sender: Sender) -> None:
        settings = load_settings(partitions=1, data_dir=tmp_path)
        app = faust.App("confirm-test", store="rocksdb://", datadir=str(tmp_path))
        self.tables = LikeTables(app, settings)
        self.commits: list[dict[TP, int]] = []
        self.agent = LikesAgent(
            app,
            Topics(events=app.topic("likes"), counts="counts", dlq="dlq"),
            self.tables,
            settings,
            sender,
            self.commit,
        )

    async def commit(self, offsets: Mapping[TP, int]) -> bool:
        self.commits.append(dict(offsets))
        return True

    def fold(self, first: int, users: Sequence[str]) -> None:
        records = []
        for n, user in enumerate(users):
            value = encode_event(LikeEvent(user, "post:1", "like"))
            records.append(Rec(first + n, b"post:1", value))
        self.agent.fold_partition(P0, records)

    @property
    def committed(self) -> int:
        return max((c[P0] for c in self.commits), default=-1)


async def test_a_failed_flush_stops_every_later_one_from_committing(tmp_path: Path) -> None:
    sender = FlakySender(fail={0})
    h = Harness(tmp_path, sender)
    h.agent.positions.start(P0, 10)
    h.fold(10, ["a", "b", "c"])  # offsets 10-12: their changelog delivery fails
    await h.agent.confirmer.flush()
    h.fold(13, ["d", "e"])  # offsets 13-14: delivered
    await h.agent.confirmer.flush()
    hole_fills = REGISTRY.get_sample_value("likestream_hole_fills_total") or 0.0
    with pytest.raises(DeliveryFailed):
        await h.agent.confirmer.settle()
    # The one partition is read again to fill the hole; the metric says so.
    assert REGISTRY.get_sample_value("likestream_hole_fills_total") == hole_fills + 1
    # Nothing past 10 is committed, not 13 nor 15: the failed rows exist only locally.
    assert h.committed == -1
    # The agent rewound: it reads from 10 again, with a new producer.
    assert h.agent.positions.next_offset(P0) == 10
    assert sender.stops == 1
    # The "last flush on stop" cannot commit past the hole either.
    await h.agent.confirmer.confirm()
    assert h.committed <= 10

    # The replay rewrites what was lost; only then is 15 committed.
    h.fold(10, ["a", "b", "c", "d", "e"])
    await h.agent.confirmer.confirm()
    assert h.committed == 15
    changelog = next(rows for topic, rows in sender.delivered.items() if "changelog" in topic)
    assert {b"m/post:1/" + u.encode() for u in "abcde"} <= {key for key, _, _ in changelog}
    assert h.tables.count("post:1").likes == 5


async def test_rows_folded_after_the_failed_flush_are_dropped(tmp_path: Path) -> None:
    sender = FlakySender(fail={0})
    h = Harness(tmp_path, sender)
    h.agent.positions.start(P0, 0)
    h.fold(0, ["a"])
    await h.agent.confirmer.flush()
    h.fold(1, ["b"])  # pending when the failure is found
    with pytest.raises(DeliveryFailed):
        await h.agent.confirmer.settle()
    assert h.agent.confirmer.pending == 0
    await h.agent.confirmer.confirm()
    # b's row was folded after the failed flush: dropped, not sent or committed.
    assert not any(key == b"m/post:1/b" for rows in sender.delivered.values() for key, _, _ in rows)
    assert h.committed == -1


async def test_flushes_in_flight_are_bounded(tmp_path: Path) -> None:
    sender = Sender()
    h = Harness(tmp_path, sender)
    h.agent.positions.start(P0, 0)
    for n in range(MAX_IN_FLIGHT):
        h.fold(n, [f"u{n}"])
        await h.agent.confirmer.flush()
    h.fold(MAX_IN_FLIGHT, ["last"])
    blocked = asyncio.ensure_future(h.agent.confirmer.flush())
    await asyncio.sleep(0.05)
    assert not blocked.done()  # waits for room
    await h.agent.confirmer.settle()
    await asyncio.wait_for(blocked, 5)
    await h.agent.confirmer.settle()
    assert h.committed == MAX_IN_FLIGHT + 1


async def test_an_error_that_is_not_kafkas_stops_instead_of_retrying(tmp_path: Path) -> None:
    class Broken(Sender):
        async def send(
            self, *args: object, **kwargs: object
        ) -> list[asyncio.Future[RecordMetadata]]:
            raise TypeError("a bug in the sender")

    h = Harness(tmp_path, Broken())
    h.agent.positions.start(P0, 0)
    h.fold(0, ["a"])
    await h.agent.confirmer.flush()
    with pytest.raises(TypeError, match="a bug"):
        await h.agent.confirmer.settle()
    assert h.committed == -1


class SlowSender(Sender):
    """Delivers a batch only when the test says so."""

    def __init__(self) -> None:
        super().__init__()
        self.waiting: list[asyncio.Future[RecordMetadata]] = []

    def batch(
        self, topic: str, partition: int, records: list[Outgoing]
    ) -> asyncio.Future[RecordMetadata]:
        future: asyncio.Future[RecordMetadata] = asyncio.get_running_loop().create_future()
        self.waiting.append(future)
        return future

    def deliver(self, count: int) -> None:
        done, self.waiting = self.waiting[:count], self.waiting[count:]
        for future in done:
            future.set_result(RecordMetadata("t", 0, None, 0, 0, 0, None))  # type: ignore[arg-type]


async def test_commits_while_flushes_keep_coming(tmp_path: Path) -> None:
    # Kafka acknowledges each flush only once the next one is taken: flushes are never
    # all confirmed at once, and yet what is durable is committed as it becomes so.
    sender = SlowSender()
    h = Harness(tmp_path, sender)
    h.agent.positions.start(P0, 0)
    settler = asyncio.ensure_future(h.agent.confirmer.settle_forever())
    try:
        for n in range(5):
            h.fold(n, [f"u{n}"])
            before = len(sender.waiting)
            await h.agent.confirmer.flush()
            sender.deliver(before)  # the previous flush's batches
            for _ in range(5):
                await asyncio.sleep(0)
        assert h.committed == 4  # every flush but the last, still in flight
    finally:
        settler.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await settler


async def test_a_lost_state_directory_stops_every_later_flush(tmp_path: Path) -> None:
    """tests/integration/test_faults.py deletes a partition's RocksDB directory under a
    live worker: the flush refuses to write, and no later call commits past its events
    (the fold's flush raising would otherwise have faust restart the agent and fold on)."""
    sender = Sender()
    h = Harness(tmp_path, sender)
    h.agent.positions.start(P0, 0)
    h.fold(0, ["a"])
    await h.agent.confirmer.confirm()
    assert h.committed == 1
    shutil.rmtree(h.tables.table.data.partition_path(0))
    h.fold(1, ["b", "c"])
    with pytest.raises(StateLost, match="partition 0"):
        await h.agent.confirmer.flush()
    h.fold(3, ["d"])
    for call in (h.agent.confirmer.flush, h.agent.confirmer.settle, h.agent.confirmer.confirm):
        with pytest.raises(StateLost):
            await call()
    with pytest.raises(StateLost):  # what stops the worker
        await asyncio.wait_for(h.agent.confirmer.settle_forever(), 5)
    assert h.committed == 1
