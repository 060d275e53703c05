"""The likes agent's fold of fetched batches: validation, rows, published counts."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

import faust
import orjson
import pytest
from fakes import Sender
from faust.types import TP

from likestream.agents import LikesAgent, Topics
from likestream.config._settings import load_settings
from likestream.domain._schema import LikeEvent, encode_event
from likestream.tables import LikeTables

P0 = TP("likes", 0)


@dataclass(frozen=True)
class Rec:
    """What aiokafka's ConsumerRecord gives the fold."""

    offset: int
    key: bytes | None
    value: bytes | None
    topic: str = "likes"
    partition: int = 0
    timestamp: int = 1_764_253_000_000


@dataclass
class Pipeline:
    agent: LikesAgent
    tables: LikeTables
    recorder: Sender
    commits: list[Mapping[TP, int]]

    def fold(self, *records: tuple[bytes | None, bytes | None]) -> None:
        start = self.agent.positions.next_offset(P0)
        assert start is not None
        self.agent.fold_partition(P0, [Rec(start + n, k, v) for n, (k, v) in enumerate(records)])


@pytest.fixture
def pipeline(tmp_path: Path) -> Pipeline:
    settings = load_settings(partitions=1, data_dir=tmp_path)
    app = faust.App("agent-test", store="rocksdb://", datadir=str(tmp_path), autodiscover=False)
    topics = Topics(events=app.topic("likes"), counts="counts", dlq="dlq")
    tables = LikeTables(app, settings)
    recorder = Sender()
    commits: list[Mapping[TP, int]] = []

    async def commit(offsets: Mapping[TP, int]) -> bool:
        commits.append(dict(offsets))
        return True

    agent = LikesAgent(app, topics, tables, settings, recorder, commit)
    agent.positions.start(P0, 0)
    return Pipeline(agent, tables, recorder, commits)


def like(user: str, item: str, action: str = "like") -> tuple[bytes, bytes]:
    return item.encode(), encode_event(LikeEvent(user, item, action))  # type: ignore[arg-type]


async def test_folds_events_and_publishes_counts_per_flush(pipeline: Pipeline) -> None:
    tables = pipeline.tables
    pipeline.fold(like("a", "p:1"), like("b", "p:1"), like("a", "p:1"))
    await pipeline.agent.confirmer.confirm()
    pipeline.fold(like("a", "p:1", "unlike"))
    # Folded but not flushed yet: reads see it, Kafka does not.
    assert tables.count("p:1").likes == 1
    assert tables.member("p:1", "a").liked is False
    assert tables.member("p:1", "b").liked is True
    assert len(pipeline.recorder.sent["counts"]) == 1
    await pipeline.agent.confirmer.confirm()
    # One count per item and flush: the newest, stamped with its event's offset.
    published = [(orjson.loads(v), dict(h)) for _, v, h in pipeline.recorder.sent["counts"]]
    assert [body for body, _ in published] == [{"item_id": "p:1", "likes": n} for n in (2, 1)]
    assert [int(headers["source-offset"]) for _, headers in published] == [1, 3]
    # Committed only once flushed and acknowledged: one past the last event each time.
    assert pipeline.commits == [{P0: 3}, {P0: 4}]


async def test_flush_groups_each_items_rows_once_per_key(pipeline: Pipeline) -> None:
    pipeline.fold(like("a", "p:3"), like("b", "p:3"), like("a", "p:3", "unlike"), like("a", "p:3"))
    pipeline.fold(like("c", "p:4"))
    await pipeline.agent.confirmer.confirm()
    groups = next(g for topic, g in pipeline.recorder.groups.items() if "changelog" in topic)
    # Per item: its count row, its window row, its member rows, in one group that no
    # record batch cuts; the watermark row on its own.
    assert groups == [
        [b"c/p:3", b"w/p:3", b"m/p:3/a", b"m/p:3/b"],
        [b"c/p:4", b"w/p:4", b"m/p:4/c"],
        [b"t/0"],
    ]
    changelog = next(rows for topic, rows in pipeline.recorder.sent.items() if "changelog" in topic)
    assert changelog[0][1] is not None
    assert changelog[0][1].split(b",")[0] == b"2"
    # Flushed rows are in RocksDB: a fresh read path (no pending rows) sees them.
    assert pipeline.tables.count("p:3").likes == 2


async def test_invalid_records_go_to_the_dlq_with_their_bytes(pipeline: Pipeline) -> None:
    tables = pipeline.tables
    pipeline.fold((b"p:2", b"{oops"), (b"other", like("a", "p:2")[1]), like("a", "p:2"))
    await pipeline.agent.confirmer.confirm()
    dead = pipeline.recorder.sent["dlq"]
    assert [(key, body) for key, body, _ in dead] == [
        (b"p:2", b"{oops"),
        (b"other", like("a", "p:2")[1]),
    ]
    headers = [dict(h) for _, _, h in dead]
    assert headers[0]["error"].startswith(b"not JSON: ")
    assert headers[1]["error"] == b"record key does not equal item_id"
    assert headers[0]["source"] == b"likes/0/0"
    assert tables.count("p:2").likes == 1
    assert pipeline.commits == [{P0: 3}]


async def test_records_folded_already_are_passed_over(pipeline: Pipeline) -> None:
    pipeline.fold(like("a", "p:5"), like("b", "p:5"))
    # A fetch that overlaps what was folded (offsets 0 and 1 again, then 2).
    again = [Rec(0, *like("a", "p:5")), Rec(1, *like("b", "p:5")), Rec(2, *like("c", "p:5"))]
    pipeline.agent.fold_partition(P0, again)
    assert pipeline.tables.count("p:5").likes == 3
    assert pipeline.agent.positions.next_offset(P0) == 3


async def test_one_items_rows_always_fit_one_record_batch(pipeline: Pipeline) -> None:
    """A hot item's group (its count, window and member rows) travels in one record
    batch: however many likes of the longest ids arrive at once, the agent flushes
    before the group outgrows a batch."""
    from likestream.kafka._sender import MAX_BATCH_BYTES, size_of
    from likestream.tables import ITEM_ROWS_MAX

    item = "i" * 128
    records = [like(f"{n:0128d}", item) for n in range(3 * ITEM_ROWS_MAX)]
    await pipeline.agent.fold_fetched({P0: [Rec(n, k, v) for n, (k, v) in enumerate(records)]})
    await pipeline.agent.confirmer.confirm()
    start = 0
    sent = next(rows for topic, rows in pipeline.recorder.sent.items() if "changelog" in topic)
    groups = next(g for topic, g in pipeline.recorder.groups.items() if "changelog" in topic)
    sizes = []
    for group in groups:
        sizes.append(sum(size_of(k, v, h) + 64 for k, v, h in sent[start : start + len(group)]))
        start += len(group)
    assert max(sizes) < MAX_BATCH_BYTES
    assert pipeline.tables.count(item).likes == 3 * ITEM_ROWS_MAX


async def test_batch_counts_read_as_single_ones(
    pipeline: Pipeline, monkeypatch: pytest.MonkeyPatch
) -> None:
    tables = pipeline.tables
    pipeline.fold(like("a", "p:1"), like("b", "p:1"), like("a", "p:2"))
    await pipeline.agent.confirmer.confirm()  # flushed to RocksDB
    pipeline.fold(like("c", "p:1"))  # folded, pending
    items = ["p:1", "p:2", "p:never"]
    # Not ready (faust's recovery never ran here): none served, as likes() refuses each.
    assert tables.likes_many(items) == ({}, items)
    monkeypatch.setattr(tables, "_serving", lambda: frozenset({0}))
    assert tables.likes_many(items) == ({"p:1": 3, "p:2": 1, "p:never": 0}, [])
    assert [tables.likes(item) for item in items] == [3, 1, 0]
    # What the fold forgets (a revocation, a rewind) is no longer read: p:1 as flushed.
    tables.discard({0})
    assert tables.likes_many(items) == ({"p:1": 2, "p:2": 1, "p:never": 0}, [])
    assert [tables.likes(item) for item in items] == [2, 1, 0]
    # Rows the reads took from RocksDB are the fold's rows from then on: it folds on them.
    pipeline.fold(like("d", "p:1"), like("a", "p:never"))
    assert tables.likes_many(items) == ({"p:1": 3, "p:2": 1, "p:never": 1}, [])
    assert tables.count("p:1").likes == 3
    monkeypatch.setattr(tables, "_serving", lambda: frozenset())  # not ours
    assert tables.likes_many(items) == ({}, items)
