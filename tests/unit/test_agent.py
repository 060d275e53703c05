"""The likes agent in faust's test context: validation, folding, published counts."""

from __future__ import annotations

import asyncio
from typing import Any, cast

import faust
import orjson
import pytest

from likestream._schema import LikeEvent, encode_event
from likestream._settings import load_settings
from likestream.agents import Topics, define_agents
from likestream.tables import LikeTables


class Recorder:
    """Stands in for an output topic: keeps what the agent sends."""

    def __init__(self) -> None:
        self.sent: list[dict[str, Any]] = []

    async def send(self, **message: Any) -> asyncio.Future[None]:
        self.sent.append(message)
        done: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        done.set_result(None)
        return done


@pytest.fixture
def pipeline() -> tuple[faust.App, LikeTables, Topics]:
    settings = load_settings(partitions=1)
    app = faust.App("agent-test", store="memory://", autodiscover=False)
    topics = Topics(events=app.channel(), counts=cast(Any, Recorder()), dlq=cast(Any, Recorder()))
    tables = LikeTables(app, settings)
    define_agents(app, topics, tables, settings)
    app.finalize()
    app.flow_control.resume()
    return app, tables, topics


def value(user: str, item: str, action: str) -> bytes:
    return encode_event(LikeEvent(user, item, action))  # type: ignore[arg-type]


async def test_folds_events_and_publishes_counts(
    pipeline: tuple[faust.App, LikeTables, Topics],
) -> None:
    app, tables, topics = pipeline
    agent = app.agents["likes"]
    async with agent.test_context() as test:
        for user, action in [("a", "like"), ("b", "like"), ("a", "like"), ("a", "unlike")]:
            await test.put(key=b"p:1", value=value(user, "p:1", action))
        assert tables.count("p:1").likes == 1
        assert tables.member("p:1", "a").liked is False
        assert tables.member("p:1", "b").liked is True
    published = [orjson.loads(m["value"]) for m in cast(Recorder, topics.counts).sent]
    assert published == [{"item_id": "p:1", "likes": n} for n in (1, 2, 1)]


async def test_invalid_records_go_to_the_dlq_with_their_bytes(
    pipeline: tuple[faust.App, LikeTables, Topics],
) -> None:
    app, tables, topics = pipeline
    async with app.agents["likes"].test_context() as test:
        await test.put(key=b"p:2", value=b"{oops")
        await test.put(key=b"other", value=value("a", "p:2", "like"))
        await test.put(key=b"p:2", value=value("a", "p:2", "like"))
    dead = cast(Recorder, topics.dlq).sent
    assert [(m["key"], m["value"]) for m in dead] == [
        (b"p:2", b"{oops"),
        (b"other", value("a", "p:2", "like")),
    ]
    errors = [dict(m["headers"])["error"] for m in dead]
    assert errors[0].startswith(b"not JSON: ")
    assert errors[1] == b"record key does not equal item_id"
    assert tables.count("p:2").likes == 1
