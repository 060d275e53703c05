"""The likes agent in faust's test context: validation, folding, published counts."""

from __future__ import annotations

import asyncio
from collections import defaultdict
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import faust
import orjson
import pytest
from aiokafka.structs import RecordMetadata

from likestream._schema import LikeEvent, encode_event
from likestream._sender import Outgoing
from likestream._settings import load_settings
from likestream.agents import Confirmer, Topics, define_agents
from likestream.tables import LikeTables


class Recorder:
    """Stands in for Kafka: keeps what the agent sends, per topic."""

    def __init__(self) -> None:
        self.sent: dict[str, list[Outgoing]] = defaultdict(list)

    async def start(self) -> None:
        pass

    async def stop(self) -> None:
        pass

    async def send(
        self, topic: str, partition: int, records: Sequence[Outgoing]
    ) -> list[asyncio.Future[RecordMetadata]]:
        self.sent[topic] += records
        return []


@dataclass
class Pipeline:
    app: faust.App
    tables: LikeTables
    confirmer: Confirmer
    sent: dict[str, list[Outgoing]]


@pytest.fixture
def pipeline(tmp_path: Path) -> Pipeline:
    settings = load_settings(partitions=1, data_dir=tmp_path)
    app = faust.App("agent-test", store="rocksdb://", datadir=str(tmp_path), autodiscover=False)
    topics = Topics(events=app.channel(), counts="counts", dlq="dlq")
    tables = LikeTables(app, settings)
    recorder = Recorder()
    confirmer = define_agents(app, topics, tables, settings, recorder)
    app.finalize()
    app.flow_control.resume()
    return Pipeline(app, tables, confirmer, recorder.sent)


def value(user: str, item: str, action: str) -> bytes:
    return encode_event(LikeEvent(user, item, action))  # type: ignore[arg-type]


async def test_folds_events_and_publishes_counts_per_flush(pipeline: Pipeline) -> None:
    tables = pipeline.tables
    async with pipeline.app.agents["likes"].test_context() as test:
        for user, action in [("a", "like"), ("b", "like"), ("a", "like")]:
            await test.put(key=b"p:1", value=value(user, "p:1", action))
        await pipeline.confirmer.confirm()
        await test.put(key=b"p:1", value=value("a", "p:1", "unlike"))
        # Folded but not flushed yet: reads see it, Kafka does not.
        assert tables.count("p:1").likes == 1
        assert tables.member("p:1", "a").liked is False
        assert tables.member("p:1", "b").liked is True
        assert len(pipeline.sent["counts"]) == 1
        await pipeline.confirmer.confirm()
    # One count per item and flush: the newest, stamped with its event's offset.
    published = [(orjson.loads(v), dict(h)) for _, v, h in pipeline.sent["counts"]]
    assert [body for body, _ in published] == [{"item_id": "p:1", "likes": n} for n in (2, 1)]
    offsets = [int(headers["source-offset"]) for _, headers in published]
    assert offsets[0] < offsets[1]


async def test_flush_writes_counts_before_members_once_per_key(pipeline: Pipeline) -> None:
    async with pipeline.app.agents["likes"].test_context() as test:
        for user, action in [("a", "like"), ("b", "like"), ("a", "unlike"), ("a", "like")]:
            await test.put(key=b"p:3", value=value(user, "p:3", action))
        await pipeline.confirmer.confirm()
    changelog = next(rows for topic, rows in pipeline.sent.items() if "changelog" in topic)
    keys = [key for key, _, _ in changelog]
    assert keys == [b"c/p:3", b"m/p:3/a", b"m/p:3/b"]
    assert changelog[0][1].split(b",")[0] == b"2"
    # Flushed rows are in RocksDB: a fresh read path (no pending rows) sees them.
    assert pipeline.tables.count("p:3").likes == 2


async def test_invalid_records_go_to_the_dlq_with_their_bytes(pipeline: Pipeline) -> None:
    tables = pipeline.tables
    async with pipeline.app.agents["likes"].test_context() as test:
        await test.put(key=b"p:2", value=b"{oops")
        await test.put(key=b"other", value=value("a", "p:2", "like"))
        await test.put(key=b"p:2", value=value("a", "p:2", "like"))
        await pipeline.confirmer.confirm()
    dead = pipeline.sent["dlq"]
    assert [(key, body) for key, body, _ in dead] == [
        (b"p:2", b"{oops"),
        (b"other", value("a", "p:2", "like")),
    ]
    errors = [dict(headers)["error"] for _, _, headers in dead]
    assert errors[0].startswith(b"not JSON: ")
    assert errors[1] == b"record key does not equal item_id"
    assert tables.count("p:2").likes == 1
