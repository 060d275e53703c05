"""likestream/domain/_retry.py: start-up's ``retrying`` (tries again while the error is one to wait
out, then gives up saying so) and ``poll_forever`` (a step run until cancelled, reconnecting
after a failure, logged once per streak of failures, its client closed whatever ends it,
a failed or cancelled start included)."""

from __future__ import annotations

import asyncio
import logging

import pytest

from likestream.domain._retry import poll_forever, retrying


class Away(Exception):
    pass


async def test_retries_until_it_succeeds() -> None:
    calls: list[int] = []

    async def attempt() -> str:
        calls.append(1)
        if len(calls) < 2:
            raise Away("the broker restarts")
        return "up"

    assert await retrying("creating topics", attempt, (Away,)) == "up"
    assert len(calls) == 2


async def test_gives_up_after_the_limit_saying_so(caplog: pytest.LogCaptureFixture) -> None:
    async def attempt() -> None:
        raise Away("the broker is down")

    # The first wait (0.5 s) would end past a 0.1 s limit: it gives up at once.
    with caplog.at_level(logging.WARNING), pytest.raises(Away):
        await retrying("creating topics", attempt, (Away,), limit_s=0.1)
    assert "creating topics: the broker is down; giving up after 0s" in caplog.text


async def test_other_errors_are_not_retried() -> None:
    calls: list[int] = []

    async def attempt() -> None:
        calls.append(1)
        raise ValueError("a bad setting")

    with pytest.raises(ValueError, match="a bad setting"):
        await retrying("creating topics", attempt, (Away,))
    assert calls == [1]


LIMIT = 20.0  # seconds; only reached when something is broken


class Steps:
    """Fails as ``plan`` says (True: this step fails), then stops the test at its end;
    the starts of the clients in ``failed_starts`` fail."""

    def __init__(self, plan: list[bool], failed_starts: frozenset[int] = frozenset()) -> None:
        self.plan = plan
        self.failed_starts = failed_starts
        self.clients: list[int] = []
        self.started: list[int] = []
        self.closed: list[int] = []
        self.steps: list[int] = []
        self.done = asyncio.Event()

    def new(self) -> int:
        self.clients.append(len(self.clients))
        return self.clients[-1]

    async def start(self, client: int) -> None:
        if client in self.failed_starts:
            raise ConnectionError(f"start of {client}")
        self.started.append(client)

    async def close(self, client: int) -> None:
        self.closed.append(client)

    async def step(self, client: int) -> None:
        self.steps.append(client)
        if len(self.steps) > len(self.plan):
            self.done.set()
            await asyncio.Event().wait()  # until cancelled, holding the client
        if self.plan[len(self.steps) - 1]:
            raise ConnectionError(f"step {len(self.steps)}")


async def test_poll_forever_reconnects_and_warns_once_per_streak(
    caplog: pytest.LogCaptureFixture,
) -> None:
    steps = Steps([True, True, False, False, True])
    caplog.set_level(logging.DEBUG, logger="likestream.domain._retry")
    task = asyncio.create_task(
        poll_forever("kafka", 0, steps.new, steps.start, steps.close, steps.step)
    )
    await asyncio.wait_for(steps.done.wait(), LIMIT)
    # A failed step's client is closed and a new one connected; a good one is kept.
    assert steps.steps == [0, 1, 2, 2, 2, 3]
    assert steps.closed == [0, 1, 2]
    levels = [
        (r.levelno, r.getMessage()) for r in caplog.records if r.name == "likestream.domain._retry"
    ]
    assert levels == [
        (logging.WARNING, "kafka: ConnectionError('step 1')"),
        (logging.DEBUG, "kafka: ConnectionError('step 2')"),
        (logging.WARNING, "kafka: ConnectionError('step 5')"),  # a new streak
    ]
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    assert steps.closed == [0, 1, 2, 3]  # cancelled: the client in use is closed too


async def test_poll_forever_waits_retry_after_a_failure_and_interval_after_a_step(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    slept: list[float] = []
    real_sleep = asyncio.sleep

    async def sleep(seconds: float) -> None:
        slept.append(seconds)
        await real_sleep(0)

    monkeypatch.setattr(asyncio, "sleep", sleep)
    steps = Steps([True, False])
    task = asyncio.create_task(
        poll_forever("kafka", 0.25, steps.new, steps.start, steps.close, steps.step, retry=2.0)
    )
    await asyncio.wait_for(steps.done.wait(), LIMIT)
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    assert slept[:2] == [2.0, 0.25]


async def test_poll_forever_closes_a_client_whose_start_failed(
    caplog: pytest.LogCaptureFixture,
) -> None:
    # aiokafka: a start that fails may leave connections open; only close() frees them.
    steps = Steps([False], failed_starts=frozenset({0, 1}))
    caplog.set_level(logging.DEBUG, logger="likestream.domain._retry")
    task = asyncio.create_task(
        poll_forever("kafka", 0, steps.new, steps.start, steps.close, steps.step)
    )
    await asyncio.wait_for(steps.done.wait(), LIMIT)
    assert steps.closed == [0, 1]
    assert steps.started == [2]
    assert steps.steps == [2, 2]
    messages = [r.getMessage() for r in caplog.records if r.name == "likestream.domain._retry"]
    assert messages == [
        "kafka: ConnectionError('start of 0')",
        "kafka: ConnectionError('start of 1')",
    ]
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    assert steps.closed == [0, 1, 2]


async def test_poll_forever_closes_a_client_cancelled_while_it_starts() -> None:
    starting = asyncio.Event()
    closed: list[int] = []

    async def start(client: int) -> None:
        starting.set()
        await asyncio.Event().wait()  # Kafka unreachable: the start hangs until cancelled

    async def close(client: int) -> None:
        closed.append(client)

    async def step(client: int) -> None:
        raise AssertionError("never started, never stepped")

    task = asyncio.create_task(poll_forever("kafka", 0, lambda: 7, start, close, step))
    await asyncio.wait_for(starting.wait(), LIMIT)
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    assert closed == [7]
