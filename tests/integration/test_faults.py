"""Faults beyond kill -9, against the real broker, while events keep coming.

Each test runs one worker on a cluster of its own on this module's broker (stopping,
freezing or restarting it leaves the session's broker alone), with a producer sending
events throughout the fault:

1. the broker frozen (SIGSTOP: connections stay open, nothing answers) for longer than
   the agent's producer waits for Kafka (``likestream/kafka/_sender.py`` REQUEST_TIMEOUT_MS),
   then thawed;
2. the changelog and ``like-counts`` refusing writes (``max.message.bytes`` below any
   batch: every write fails with MESSAGE_TOO_LARGE), then accepting them again;
3. the broker crashed and restarted while a flush is in flight (the worker's
   ``likestream_flushes_in_flight`` says when);
4. an owned partition's RocksDB directory deleted under the live worker.

Each ends with every count and membership, on the worker and on ``like-counts``, equal
to the oracle, and again after the worker recovered from the changelog alone (stopped,
data dir deleted, started). The oracle is folded from the events topic as it ends up:
an event whose send the fault left unanswered may or may not be on it, and every
acknowledged event must be. A worker that exits on its own is restarted, as its
supervisor would, and the report says so.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import shutil
import signal
import time
from collections import deque
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass, field
from pathlib import Path

import aiohttp
import orjson
import pytest
from aiokafka.admin.config_resource import ConfigResource, ConfigResourceType
from conftest import (
    Cluster,
    Worker,
    assert_matches,
    own_broker,
    read_topic,
    report,
    set_topic_configs,
)
from oracle import Oracle, mixed_events

from likestream.client import DeliveryError, LikeClient
from likestream.devtools._broker import Broker
from likestream.kafka._sender import REQUEST_TIMEOUT_MS
from likestream.runtime._pids import alive
from likestream.tables import changelog_topic

pytestmark = pytest.mark.integration

PARTITIONS = 4
BATCH = 20  # events per acknowledged send of the producer
SEND_LIMIT_S = 20.0  # a send unanswered this long is given up (it may still be written)
START_TIMEOUT_MS = 10_000  # the producer's requests; its start() gives up after two


@pytest.fixture(scope="module", name="own_broker")
def _own_broker(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Broker]:
    yield from own_broker(tmp_path_factory, "faults-broker")


class Load:
    """Events sent in small acknowledged batches until stopped; a send the broker left
    unanswered is given up (it may or may not have been written) and the next goes on."""

    def __init__(self, cluster: Cluster, prefix: str, seed: int) -> None:
        self.cluster = cluster
        self.events = mixed_events(10_000_000, 300, 2_000, seed=seed, prefix=prefix)
        self.acked: set[str] = set()
        self.unanswered = 0
        self._stop = asyncio.Event()
        self._task: asyncio.Task[None] | None = None
        # What the producer did last, for a failure's message.
        self.trace: deque[str] = deque(maxlen=30)

    def start(self) -> None:
        self._task = asyncio.create_task(self._run())

    async def wait_acked(self, more: int, limit: float = 120.0) -> None:
        """Until ``more`` events beyond the acknowledged ones so far are acknowledged."""
        want = len(self.acked) + more
        deadline = time.monotonic() + limit
        while len(self.acked) < want:
            assert self._task is not None
            assert not self._task.done(), "the producer stopped"
            assert time.monotonic() < deadline, (
                f"{len(self.acked)}/{want} acknowledged; the producer's last steps: "
                f"{list(self.trace)}"
            )
            await asyncio.sleep(0.1)

    async def stop(self) -> None:
        self._stop.set()
        assert self._task is not None
        await self._task

    async def _run(self) -> None:
        client: LikeClient | None = None
        while not self._stop.is_set():
            batch = [next(self.events) for _ in range(BATCH)]
            try:
                if client is None:
                    # start() is bounded (two request timeouts): aiokafka alone would
                    # ask a broker that does not answer for a producer id forever.
                    client = LikeClient(
                        self.cluster.kafka,
                        self.cluster.topic,
                        linger_ms=1,
                        request_timeout_ms=START_TIMEOUT_MS,
                    )
                    self.trace.append(f"{time.monotonic():.1f} start")
                    await client.start()
                    self.trace.append(f"{time.monotonic():.1f} started")
                # An idempotent producer never gives a batch up; after a broker crash
                # aiokafka's can stay stuck reconnecting (seen here): give up on it.
                await asyncio.wait_for(client.send_many(batch), SEND_LIMIT_S)
                self.acked.update(e.event_id for e in batch if e.event_id is not None)
            except (DeliveryError, TimeoutError) as exc:
                self.trace.append(f"{time.monotonic():.1f} fail {exc!r}")
                # Unanswered or refused: the batch may be on the topic or not (the oracle
                # reads the topic); a new producer, since a failed idempotent one can
                # stay unusable.
                self.unanswered += 1
                if client is not None:
                    await _stop_quietly(client)
                    client = None
                await asyncio.sleep(0.5)  # pacing while Kafka is away, not a wait for it
                continue
            await asyncio.sleep(0.05)  # a few hundred events/s: a steady stream, not a flood
        if client is not None:
            await _stop_quietly(client)


async def _stop_quietly(client: LikeClient) -> None:
    # Whatever the fault left queued in it may fail: those sends were given up already.
    with contextlib.suppress(Exception):
        await asyncio.wait_for(client.stop(), 30)


@dataclass
class Setup:
    broker: Broker
    cluster: Cluster
    worker: Worker
    load: Load
    restarts: list[int] = field(default_factory=list)
    """Exit codes of the times the worker stopped on its own and was started again."""

    def supervise(self) -> bool:
        """Start the worker again if it exited on its own (as its supervisor would)."""
        proc = self.worker.proc
        if proc is None or proc.poll() is None:
            return False
        self.restarts.append(proc.returncode)
        self.worker.start()
        return True


@pytest.fixture
async def setup(
    own_broker: Broker, tmp_path: Path, request: pytest.FixtureRequest
) -> AsyncIterator[Setup]:
    """A cluster of the test's own, its worker (settings: ``request.param``), a load."""
    if own_broker.pid() is None:  # a failed test may have left it down
        own_broker.start()
    cluster = Cluster(own_broker, tmp_path, partitions=PARTITIONS)
    worker = cluster.worker("w1", **getattr(request, "param", {}))
    worker.start()
    await worker.wait_ready()
    load = Load(cluster, prefix=tmp_path.name[-12:], seed=len(tmp_path.name))
    load.start()
    yield Setup(own_broker, cluster, worker, load)
    if not load._stop.is_set():
        load._stop.set()
    if worker.proc is not None and worker.proc.poll() is None:
        worker.kill()


async def metric(http: aiohttp.ClientSession, worker: Worker, name: str) -> float:
    async with http.get(f"{worker.url}/metrics") as resp:
        text = await resp.text()
    return sum(
        float(line.rsplit(" ", 1)[1])
        for line in text.splitlines()
        if line.startswith((name + " ", name + "{"))
    )


async def await_log(worker: Worker, text: str, since: int, limit: float = 120.0) -> None:
    """Until the worker's log, past byte ``since``, contains ``text``."""
    deadline = time.monotonic() + limit
    while True:
        if text.encode() in await asyncio.to_thread(_log_since, worker, since):
            return
        assert time.monotonic() < deadline, f"no {text!r} in the log:\n{worker.log_tail()}"
        await asyncio.sleep(0.2)


def _log_since(worker: Worker, since: int) -> bytes:
    with open(worker.log, "rb") as log:
        log.seek(since)
        return log.read()


async def topic_oracle(cluster: Cluster, acked: set[str]) -> Oracle:
    """The expected state, folded from the events topic in partition order; every
    acknowledged event must be on it."""
    oracle = Oracle()
    seen: set[str] = set()
    for record in await read_topic(cluster, cluster.topic):
        doc = orjson.loads(record.value)
        oracle.members[(doc["item_id"], doc["user_id"])] = doc["action"] == "like"
        seen.add(doc["event_id"])
    assert acked <= seen, f"{len(acked - seen)} acknowledged events are not on the topic"
    return oracle


async def published_counts(cluster: Cluster) -> dict[str, int]:
    out: dict[str, int] = {}
    for record in await read_topic(cluster, cluster.counts_topic):
        out[record.key.decode()] = orjson.loads(record.value)["likes"]
    return out


async def settle_and_check(
    s: Setup, http: aiohttp.ClientSession, request: pytest.FixtureRequest, fault: str
) -> None:
    """Stop the producer; once the worker caught up: its tables and ``like-counts`` equal
    the oracle; then again after a recovery from the changelog alone."""
    await s.load.wait_acked(2 * BATCH)  # events go in after the fault too
    await s.load.stop()
    s.supervise()
    await s.worker.wait_ready(limit=300)
    await s.cluster.wait_caught_up(limit=300)
    oracle = await topic_oracle(s.cluster, s.load.acked)
    await s.worker.wait_ready(limit=300)
    await assert_matches(http, s.worker, oracle, s.cluster)
    published = await published_counts(s.cluster)
    expected = oracle.counts()
    assert {i: published.get(i, 0) for i in expected} == expected

    s.worker.stop()
    shutil.rmtree(s.worker.data_dir)
    s.worker.start()
    await s.worker.wait_ready(limit=300)
    await assert_matches(http, s.worker, oracle, s.cluster)
    restarted = (
        f"exited on its own {len(s.restarts)}x (codes {s.restarts}), restarted as a "
        "supervisor would"
        if s.restarts
        else "never exited"
    )
    report(
        request.config,
        f"faults, {fault}: {len(s.load.acked)} events acknowledged, {s.load.unanswered} "
        f"sends unanswered, {len(oracle.members)} memberships equal before and after a "
        f"recovery from the changelog; the worker {restarted}",
    )


# -- 1. the broker unreachable for longer than the delivery timeout -----------------------


async def test_broker_frozen_past_the_delivery_timeout(
    setup: Setup, http: aiohttp.ClientSession, request: pytest.FixtureRequest
) -> None:
    s = setup
    await s.load.wait_acked(4 * BATCH)
    pid = s.broker.pid()
    assert pid is not None
    os.kill(pid, signal.SIGSTOP)
    try:
        # The fault's length, not a wait for something: past the agent's producer
        # timeout, so queued flushes fail and the agent rewinds.
        await asyncio.sleep(REQUEST_TIMEOUT_MS / 1000 + 5)
    finally:
        os.kill(pid, signal.SIGCONT)
    await settle_and_check(s, http, request, f"broker frozen {REQUEST_TIMEOUT_MS / 1000 + 5:.0f}s")


# -- 2. topics refusing writes ----------------------------------------------------------------


async def test_topics_refusing_writes(
    setup: Setup, http: aiohttp.ClientSession, request: pytest.FixtureRequest
) -> None:
    s = setup
    refusing = [changelog_topic(s.cluster.app_id), s.cluster.counts_topic]
    await s.load.wait_acked(4 * BATCH)
    since = s.worker.log.stat().st_size
    # Kafka 4's effective min.insync.replicas is capped at the replication factor, so
    # raising it refuses nothing on one broker; a batch above max.message.bytes is
    # refused (MESSAGE_TOO_LARGE, not retriable), and every batch is above 64 bytes.
    await set_topic_configs(s.cluster.kafka, refusing, max_message_bytes="64")
    try:
        # Refused while events keep coming: each flush fails, the agent rewinds and
        # reads its events again, nothing is committed.
        await await_log(s.worker, "MessageSizeTooLarge", since)
        await s.load.wait_acked(10 * BATCH)
    finally:
        await set_topic_configs(s.cluster.kafka, refusing, max_message_bytes=None)
    await settle_and_check(s, http, request, "changelog and like-counts refusing writes")


# -- 3. the broker restarted while a flush is in flight ------------------------------------------


async def test_broker_restarted_while_a_flush_is_in_flight(
    setup: Setup, http: aiohttp.ClientSession, request: pytest.FixtureRequest
) -> None:
    s = setup
    await s.load.wait_acked(4 * BATCH)
    # Frozen first, so that a flush taken now cannot be acknowledged before the crash:
    # the worker says when it has one in flight. A flush needs folded events; if the
    # worker had none when the broker froze, thaw and try again.
    deadline = time.monotonic() + 120
    while True:
        assert time.monotonic() < deadline, "no flush was ever in flight"
        pid = s.broker.pid()
        assert pid is not None
        os.kill(pid, signal.SIGSTOP)
        held = time.monotonic() + 3
        while time.monotonic() < held:
            if await metric(http, s.worker, "likestream_flushes_in_flight") > 0:
                break
            await asyncio.sleep(0.05)
        else:
            os.kill(pid, signal.SIGCONT)
            await s.load.wait_acked(BATCH)
            continue
        break
    os.kill(pid, signal.SIGKILL)  # a crash: no clean shutdown answers the flush
    # The kernel takes a moment to tear the JVM down; until then start() sees a broker
    # running and starts none (twice in CI: the load then waited 120 s for no broker).
    deadline = time.monotonic() + 60
    while alive(pid):
        assert time.monotonic() < deadline, "the SIGKILLed broker is still there"
        await asyncio.sleep(0.05)
    assert await asyncio.to_thread(s.broker.start), "the broker was not started again"
    await settle_and_check(s, http, request, "broker crashed with a flush in flight, restarted")


# -- 4. a partition's data dir deleted on a live worker --------------------------------------


def partition_dirs(worker: Worker) -> list[Path]:
    return sorted(worker.data_dir.glob("**/tables/state-*.db"))


async def test_partition_data_dir_deleted_on_a_live_worker(
    setup: Setup, http: aiohttp.ClientSession, request: pytest.FixtureRequest
) -> None:
    """RocksDB would go on in the files it holds open (until it needs a new one, then
    fail writes); the worker's next flush finds the directory gone and stops it
    (tables/_state.py StateLost); restarted, it restores the partition from the
    changelog."""
    s = setup
    await s.load.wait_acked(4 * BATCH)
    dirs = partition_dirs(s.worker)
    assert len(dirs) == PARTITIONS, dirs
    since = s.worker.log.stat().st_size
    shutil.rmtree(dirs[0])
    proc = s.worker.proc
    assert proc is not None
    deadline = time.monotonic() + 120
    while proc.poll() is None:  # events keep coming, so a flush writes to every partition
        assert time.monotonic() < deadline, "the worker went on without its state directory"
        await asyncio.sleep(0.2)
    assert proc.returncode != 0
    partition = int(dirs[0].name.removeprefix("state-").removesuffix(".db"))
    await await_log(s.worker, f"the RocksDB directory of partition {partition} ", since)
    await settle_and_check(s, http, request, f"{dirs[0].name} deleted under the worker")


# -- 5. a worker started while the broker is down ------------------------------------------


async def test_worker_started_while_the_broker_is_down_waits_for_it(
    own_broker: Broker, tmp_path: Path, request: pytest.FixtureRequest
) -> None:
    """Start-up creates every topic, the changelog too, under start-up's retry: a
    worker started while the broker restarts waits for it (saying why), never exits."""
    cluster = Cluster(own_broker, tmp_path, partitions=PARTITIONS)
    worker = cluster.worker("w1")
    own_broker.stop()
    try:
        worker.start()
        await await_log(worker, "creating topics: ", since=0)  # it is waiting, and says so
        assert worker.proc is not None
        assert worker.proc.poll() is None, worker.log_tail()
    finally:
        await asyncio.to_thread(own_broker.start)
    await worker.wait_ready()  # fails if the worker exited meanwhile
    proc = worker.proc
    assert proc is not None
    assert proc.poll() is None
    async with LikeClient(cluster.kafka, cluster.topic) as client:
        await client.like("alice", "post:9")
    oracle = Oracle()
    oracle.members[("post:9", "alice")] = True
    await cluster.wait_caught_up()
    async with aiohttp.ClientSession() as http:
        await assert_matches(http, worker, oracle, cluster)
    # Made by start-up (faust is told not to create topics), compacted as faust would.
    admin = cluster.kafka.admin()
    await admin.start()
    try:
        [described] = await admin.describe_configs(
            [ConfigResource(ConfigResourceType.TOPIC, changelog_topic(cluster.app_id))]
        )
    finally:
        await admin.close()
    [(_code, _msg, _type, _name, entries)] = described.resources
    assert ("cleanup.policy", "compact") in {(e[0], e[1]) for e in entries}
    worker.stop()
    report(request.config, "faults: a worker started with the broker down waited and got ready")
