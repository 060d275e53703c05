"""Every faust, mode and aiokafka internal likestream touches is pinned here.

An upgrade that renames one fails these tests, and the worker refuses to start
(``check``) naming the attribute and the installed versions.
"""

from __future__ import annotations

import zlib
from pathlib import Path

import faust
import orjson
import pytest
from aiokafka.coordinator.protocol import ConsumerProtocolMemberAssignment

from likestream.config._settings import load_settings
from likestream.kafka import _internals as internals
from likestream.kafka._factory import KafkaConfig
from likestream.tables import LikeTables


@pytest.mark.parametrize("internal", internals.INTERNALS, ids=lambda i: f"{i.owner}.{i.name}")
def test_each_internal_exists_in_the_installed_libraries(internal: internals.Internal) -> None:
    internals.check()  # the class-level ones, all at once
    cls = internals._class(internal.owner)
    if not internal.on_instance:
        assert hasattr(cls, internal.name) or internal.name in cls.__annotations__


def test_the_live_objects_of_a_worker_have_theirs(tmp_path: Path) -> None:
    settings = load_settings(partitions=2, data_dir=tmp_path)
    app = faust.App("internals-test", store="rocksdb://", datadir=str(tmp_path))
    tables = LikeTables(app, settings)
    internals.check_app(app, tables.table.data)
    assert internals.open_dbs(tables.table.data) == {}
    db = internals.partition_db(tables.table.data, 1)
    assert internals.open_dbs(tables.table.data) == {1: db}
    assert internals.recovery_remaining(app) is None


def test_a_missing_internal_stops_start_up_naming_it(monkeypatch: pytest.MonkeyPatch) -> None:
    missing = internals.Internal("faust.stores.rocksdb:Store", "_gone", "a test")
    monkeypatch.setattr(internals, "INTERNALS", (*internals.INTERNALS, missing))
    with pytest.raises(internals.InternalsChanged, match=r"Store\._gone.*faust-streaming \d"):
        internals.check()


def test_a_live_object_without_its_attribute_is_named() -> None:
    with pytest.raises(internals.InternalsChanged, match=r"Recovery\.completed"):
        internals.check({"faust.tables.recovery:Recovery": object()})


def member(doc: object) -> bytes:
    user_data = zlib.compress(orjson.dumps(doc))
    return ConsumerProtocolMemberAssignment(0, [], user_data).encode()


def test_the_assignors_wire_format_is_read() -> None:
    raw = member(
        {
            "url": "http://w1:6066/",
            "assignment": {"actives": {"likes": [0, 2]}, "standbys": {"x": [1], "y": [1, 3]}},
        }
    )
    got = internals.decode_member_assignment(raw, "likes")
    assert got == internals.MemberAssignment("http://w1:6066", [0, 2], [1, 3])


def test_an_unreadable_assignment_says_why() -> None:
    with pytest.raises(ValueError, match="not faust's assignment format"):
        internals.decode_member_assignment(member({"assignment": {}}), "likes")


def test_faust_reports_about_the_paused_events_partitions_are_dropped() -> None:
    import logging

    from faust.types import TP

    drop = internals.PausedPartitionsFilter("likes")

    def record(name: str, tp: object) -> logging.LogRecord:
        msg = "Aiokafka has not sent fetch request for %r since start (started %s)"
        return logging.LogRecord(name, logging.ERROR, "", 0, msg, (tp, "5 minutes ago"), None)

    consumer = "faust.transport.drivers.aiokafka"
    assert not drop.filter(record(consumer, TP("likes", 3)))
    assert drop.filter(record(consumer, TP("likestream-state-changelog", 3)))
    assert drop.filter(record("likestream.agents", TP("likes", 3)))


def test_an_unreadable_owner_lookup_warns_once(caplog: pytest.LogCaptureFixture) -> None:
    from likestream.web._owners import parse_members

    garbage = member({"url": "http://w1:6066", "assignment": "not a mapping"})
    with caplog.at_level("WARNING", logger="likestream.web._owners"):
        assert parse_members([garbage, garbage], "likes").active == {}
    warnings = [r for r in caplog.records if "unreadable group member" in r.getMessage()]
    assert len(warnings) == 1


async def test_a_counted_poll_is_what_keeps_the_member_in_the_group() -> None:
    # aiokafka leaves the group, and does not rejoin, while fetcher_idle_time is past
    # max_poll_interval; mark_member_polled counts a poll through fetch_context.
    consumer = KafkaConfig("localhost:9092").consumer()
    internals.check({"aiokafka.consumer.consumer:AIOKafkaConsumer": consumer})
    subscription = consumer._subscription
    with subscription.fetch_context():
        assert subscription.fetcher_idle_time == 0
    assert subscription.fetcher_idle_time < 1
