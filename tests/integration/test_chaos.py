"""Chaos: exact counts while workers are SIGKILLed and the broker restarts.

Workers run as OS processes against their own broker (so it can be restarted
without disturbing other tests). Events are produced while they run; at random
moments a worker is SIGKILLed and started again, and once, mid-way, the broker
is stopped and started. When the producer is done and the workers caught up,
every count and membership must equal the oracle and ``like-counts`` must hold
every item's final count; every worker's ``GET /trending`` must equal the oracle's
top items of every window (events carry controlled event times, some late).

The short plan runs in ``make test``; ``make chaos`` runs the long one
(``pytest --chaos=long``).
"""

from __future__ import annotations

import asyncio
import random
import time
from collections import defaultdict
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass
from pathlib import Path

import aiohttp
import msgspec
import orjson
import pytest
from conftest import Cluster, Worker, free_port_pair, read_topic, report
from oracle import Oracle, TrendingOracle

from likestream._broker import Broker, default_cache_dir
from likestream._partition import partition_for
from likestream._schema import Action, LikeEvent
from likestream._settings import load_settings
from likestream.client import LikeClient, new_event

pytestmark = pytest.mark.integration


@dataclass(frozen=True)
class Plan:
    events: int
    items: int
    users: int
    kills: int
    workers: int
    seconds: float  # how long producing takes; kills are spread over it


PLANS = {
    "short": Plan(events=20_000, items=500, users=3_000, kills=3, workers=2, seconds=30),
    "long": Plan(events=200_000, items=5_000, users=50_000, kills=12, workers=2, seconds=240),
}


T0 = 1_750_000_000_000  # event times: fixed, 50 ms apart, some up to 2 hours late


def timed(events: list[LikeEvent], rng: random.Random) -> list[LikeEvent]:
    """The events with controlled event times; a duplicate keeps its original's."""
    stamped: dict[int, LikeEvent] = {}
    out = []
    for n, event in enumerate(events):
        if id(event) not in stamped:
            late = rng.randint(0, 2 * 3_600_000) if rng.random() < 0.05 else 0
            stamped[id(event)] = msgspec.structs.replace(event, ts=T0 + 50 * n - late)
        out.append(stamped[id(event)])
    return out


def chaos_events(plan: Plan, seed: int) -> Iterator[LikeEvent]:
    """A hot item takes 20%; the rest are likes, unlikes, exact duplicates and flips."""
    rng = random.Random(seed)
    previous: LikeEvent | None = None
    for _ in range(plan.events):
        roll = rng.random()
        if previous is not None and roll < 0.08:
            event = previous
        elif previous is not None and roll < 0.16:
            flipped: Action = "unlike" if previous.liked else "like"
            event = new_event(previous.user_id, previous.item_id, flipped)
        else:
            item = "hot:0" if rng.random() < 0.2 else f"item:{rng.randrange(plan.items)}"
            action: Action = "like" if rng.random() < 0.6 else "unlike"
            event = new_event(f"u{rng.randrange(plan.users)}", item, action)
        previous = event
        yield event


@pytest.fixture(scope="module")
def plan(pytestconfig: pytest.Config) -> Plan:
    return PLANS[pytestconfig.getoption("chaos")]


@pytest.fixture(scope="module")
def own_broker(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Broker]:
    instance = Broker(
        default_cache_dir(), tmp_path_factory.mktemp("chaos-broker"), free_port_pair()
    )
    instance.start()
    yield instance
    instance.stop()


class Chaos:
    def __init__(self, cluster: Cluster, workers: list[Worker], plan: Plan, seed: int) -> None:
        self.cluster = cluster
        self.workers = workers
        self.plan = plan
        self.rng = random.Random(seed)
        self.oracle = Oracle()
        defaults = load_settings()
        self.trending = TrendingOracle(defaults.windows, defaults.trending_lateness_ms)
        self.produced = 0
        self.kills = 0
        self.broker_restarts = 0
        self.producing = asyncio.Event()
        self.producing.set()
        self.idle = asyncio.Event()

    async def produce(self) -> None:
        """Send in batches at a steady rate, each batch fully acknowledged; pausable."""
        batch_size = 200
        pause = self.plan.seconds * batch_size / self.plan.events
        events = timed(list(chaos_events(self.plan, seed=self.rng.randrange(1 << 30))), self.rng)
        async with LikeClient(self.cluster.kafka, self.cluster.topic) as client:
            for start in range(0, len(events), batch_size):
                if not self.producing.is_set():
                    self.idle.set()
                    await self.producing.wait()
                    self.idle.clear()
                batch = events[start : start + batch_size]
                await asyncio.gather(*[await client.send(event) for event in batch])
                for event in batch:
                    self.oracle.apply(event)
                    partition = partition_for(event.item_id.encode(), self.cluster.partitions)
                    assert event.ts is not None
                    self.trending.apply(partition, event, event.ts)
                self.produced += len(batch)
                await asyncio.sleep(pause)
        self.idle.set()

    async def kill_and_restart(self) -> None:
        moments = sorted(
            self.rng.uniform(0.05, 0.95) * self.plan.seconds for _ in range(self.plan.kills)
        )
        restart_broker_at = self.plan.seconds / 2
        began = time.monotonic()
        for moment in moments:
            await asyncio.sleep(max(0.0, began + moment - time.monotonic()))
            if self.broker_restarts == 0 and time.monotonic() - began >= restart_broker_at:
                await self.restart_broker()
            victim = self.rng.choice(self.workers)
            victim.kill()
            self.kills += 1
            await asyncio.sleep(self.rng.uniform(0.0, 2.0))
            victim.start()
        if self.broker_restarts == 0:
            await self.restart_broker()

    async def restart_broker(self) -> None:
        # The producer pauses at a batch boundary so the oracle knows exactly what
        # was sent; the workers keep running through the outage.
        self.producing.clear()
        await self.idle.wait()
        await asyncio.to_thread(self.cluster.broker.stop)
        await asyncio.to_thread(self.cluster.broker.start)
        self.broker_restarts += 1
        self.producing.set()


async def owners(
    http: aiohttp.ClientSession, workers: list[Worker], cluster: Cluster, items: list[str]
) -> dict[int, Worker]:
    """The worker serving each partition, found by asking each worker."""
    sample = {partition_for(item.encode(), cluster.partitions): item for item in items}
    found: dict[int, Worker] = {}
    deadline = time.monotonic() + 120
    while len(found) < len(sample) and time.monotonic() < deadline:
        for partition, item in sample.items():
            for worker in workers:
                async with http.get(f"{worker.url}/items/{item}/likes") as resp:
                    if resp.status == 200:
                        found[partition] = worker
        if len(found) < len(sample):
            await asyncio.sleep(0.5)
    assert len(found) == len(sample), f"partitions without an owner: {set(sample) - set(found)}"
    return found


async def mismatches(http: aiohttp.ClientSession, chaos: Chaos) -> list[str]:
    cluster, oracle = chaos.cluster, chaos.oracle
    expected = oracle.counts()
    owner = await owners(http, chaos.workers, cluster, sorted(expected))
    by_partition: dict[int, list[str]] = defaultdict(list)
    for item in expected:
        by_partition[partition_for(item.encode(), cluster.partitions)].append(item)
    wrong: list[str] = []
    for partition, items in by_partition.items():
        for i in range(0, len(items), 100):
            url = f"{owner[partition].url}/likes"
            async with http.get(url, params={"items": ",".join(items[i : i + 100])}) as resp:
                assert resp.status == 200, await resp.text()
                for item, likes in (await resp.json())["likes"].items():
                    if likes != expected[item]:
                        wrong.append(f"count {item}: {likes} != {expected[item]}")
    sem = asyncio.Semaphore(32)

    async def check(item: str, user: str) -> None:
        served_by = owner[partition_for(item.encode(), cluster.partitions)]
        url = f"{served_by.url}/items/{item}/likes/{user}"
        async with sem, http.get(url, headers=cluster.bearer(user)) as resp:
            assert resp.status == 200, await resp.text()
            if (await resp.json())["liked"] != oracle.members[(item, user)]:
                wrong.append(f"member {item}/{user}")

    await asyncio.gather(*(check(i, u) for i, u in oracle.members))
    published: dict[str, int] = {}
    for record in await read_topic(cluster, cluster.counts_topic):
        published[record.key.decode()] = orjson.loads(record.value)["likes"]
    for item, want in expected.items():
        got = published.get(item, 0)
        if got != want:
            wrong.append(f"like-counts {item}: {got} != {want}")
    for worker in chaos.workers:
        for window in chaos.trending.windows:
            want_top = chaos.trending.top(window, 100)
            got_top = await trending_of(http, worker, window, want_top)
            if got_top != want_top:
                wrong.append(f"trending {window} on {worker.url}: {got_top} != {want_top}")
    return wrong


async def trending_of(
    http: aiohttp.ClientSession, worker: Worker, window: str, want: list[list[object]]
) -> list[list[object]]:
    """``GET /trending`` once it equals ``want``, or what it says after a minute: the top
    items are published every second, so they can trail the counts a little."""
    got: list[list[object]] = []
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        url = f"{worker.url}/trending"
        async with http.get(url, params={"window": window, "limit": "100"}) as resp:
            assert resp.status == 200, await resp.text()
            got = [[i["item_id"], i["likes"]] for i in (await resp.json())["items"]]
        if got == want:
            break
        await asyncio.sleep(0.5)
    return got


@pytest.fixture
async def running(
    own_broker: Broker, plan: Plan, tmp_path: Path
) -> AsyncIterator[tuple[Cluster, list[Worker]]]:
    cluster = Cluster(own_broker, tmp_path, partitions=6)
    started = [cluster.worker(f"w{i}") for i in range(plan.workers)]
    for worker in started:
        worker.start()
    for worker in started:
        await worker.wait_ready()
    yield cluster, started
    for worker in started:
        if worker.proc is not None and worker.proc.poll() is None:
            worker.kill()


async def test_exact_counts_under_chaos(
    running: tuple[Cluster, list[Worker]],
    plan: Plan,
    http: aiohttp.ClientSession,
    request: pytest.FixtureRequest,
) -> None:
    cluster, workers = running
    chaos = Chaos(cluster, workers, plan, seed=2026)
    began = time.monotonic()
    await asyncio.gather(chaos.produce(), chaos.kill_and_restart())
    for worker in workers:
        await worker.wait_ready(limit=300)
    await cluster.wait_caught_up(limit=900)
    for worker in workers:
        await worker.wait_ready(limit=300)
    wrong = await mismatches(http, chaos)
    took = time.monotonic() - began
    report(
        request.config,
        f"chaos ({request.config.getoption('chaos')}): {chaos.produced} events, "
        f"{len(chaos.oracle.counts())} items, {len(chaos.oracle.members)} memberships, "
        f"{chaos.kills} SIGKILLs, {chaos.broker_restarts} broker restart, "
        f"{plan.workers} workers, {took:.0f}s, {len(wrong)} mismatches",
    )
    assert wrong == [], wrong[:20]
