"""When a worker asks to be restarted: its flow stopped past the max poll interval
(likestream/kafka/_membership.py), and what /healthz then answers."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from aiohttp.test_utils import TestClient, TestServer
from fakes import Clock, State, web_app

from likestream.kafka._membership import Membership


@dataclass
class Consumer:
    flow_active: bool = True


@dataclass
class App:
    consumer: Consumer = field(default_factory=Consumer)


@dataclass
class Tables:
    restoring: int | None = None


def membership() -> tuple[Membership, App, Tables, Clock]:
    app, tables, clock = App(), Tables(), Clock(100.0)
    app_: Any = app
    return Membership(app_, tables, 60.0, clock), app, tables, clock


def test_a_flowing_worker_is_healthy_however_long() -> None:
    member, _, _, clock = membership()
    assert member.problem() is None
    clock.now += 10_000
    assert member.problem() is None


def test_a_flow_stopped_past_the_interval_asks_for_a_restart() -> None:
    member, app, _, clock = membership()
    app.consumer.flow_active = False
    assert member.problem() is None  # notes when it stopped
    clock.now += 59
    assert member.problem() is None  # a rebalance, a recovery
    clock.now += 2
    problem = member.problem()
    assert problem is not None
    assert "61 s" in problem
    assert "LIKESTREAM_MAX_POLL_INTERVAL_MS" in problem


def test_the_flow_resuming_starts_the_count_again() -> None:
    member, app, _, clock = membership()
    app.consumer.flow_active = False
    member.stuck_s()
    clock.now += 50
    app.consumer.flow_active = True
    member.stuck_s()
    app.consumer.flow_active = False
    member.stuck_s()
    clock.now += 50
    assert member.problem() is None


def test_the_bulk_restore_is_not_a_stuck_flow() -> None:
    member, app, tables, clock = membership()
    app.consumer.flow_active = False  # the restore runs with faust's flow stopped
    tables.restoring = 1_000_000
    member.stuck_s()
    clock.now += 3600
    assert member.problem() is None
    tables.restoring = None
    assert member.problem() is None
    clock.now += 61
    assert member.problem() is not None


async def test_healthz_says_why_the_process_should_be_restarted() -> None:
    reason: list[str | None] = [None]
    client = TestClient(TestServer(web_app(State(), liveness=lambda: reason[0])))
    await client.start_server()
    try:
        resp = await client.get("/healthz")
        assert resp.status == 200
        assert await resp.json() == {"status": "ok"}
        reason[0] = "stuck in a rebalance"
        resp = await client.get("/healthz")
        assert resp.status == 503
        assert await resp.json() == {"status": "failing", "reason": "stuck in a rebalance"}
    finally:
        await client.close()
