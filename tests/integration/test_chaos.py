"""Chaos: exact counts while workers are SIGKILLed and the broker restarts.

Workers run as OS processes against their own broker (so it can be restarted
without disturbing other tests). Events are produced while they run; at random
moments a worker is SIGKILLed and started again, and once, mid-way, the broker
is stopped and started. When the producer is done and the workers caught up,
every count and membership must equal the oracle and ``like-counts`` must hold
every item's final count; every worker's ``GET /trending`` must equal the oracle's
top items of every window (events carry controlled event times, some late).

The run also proves it exercised what it claims: the events stream re-delivers old
events far apart (single retries and whole replayed batches, after newer events of the
same items and users); once, a killed worker's data dir is deleted before it restarts;
once, ``like-counts`` refuses writes until a flush's delivery failed. The workers'
counters of replays, hole fills and changelog recoveries (scraped from ``/metrics``
periodically and just before each SIGKILL, the last scrape of each process kept) must
each be above 0. Counts are read over HTTP all along: a fresh answer (no stale header)
must be the item's count at some prefix of its partition between the committed offset
before the read and the log end after it; stale answers are counted, and must be some
count the item had. At the end every count and membership is read from the owner's own
table (a read carrying the processes' forwarding proof is never forwarded again, and
only the owner answers it without the stale header), and every worker must own
partitions.

The short plan runs in ``make test``; ``make chaos`` runs the long one
(``pytest --chaos=long``).
"""

from __future__ import annotations

import asyncio
import bisect
import random
import shutil
import time
from collections import defaultdict
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import aiohttp
import msgspec
import orjson
import pytest
from aiokafka import TopicPartition
from aiokafka.admin.config_resource import ConfigResource, ConfigResourceType
from aiokafka.errors import KafkaError
from conftest import Cluster, Worker, own_broker, read_topic, report
from oracle import CountHistory, Oracle, TrendingOracle
from prometheus_client.parser import text_string_to_metric_families

from likestream.client import LikeClient, new_event
from likestream.config._settings import load_settings
from likestream.devtools._broker import Broker
from likestream.domain._partition import partition_for
from likestream.domain._schema import Action, LikeEvent
from likestream.web import FORWARDED, STALE
from likestream.web._reads import forwarding_proof

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
FAR = 2_000  # a re-delivered event is at least this many events old
RETRY = 0.01  # share of events that are a far re-delivery of one old event
REPLAY = 0.0005  # share of events after which a whole old batch is sent again
REPLAYED_BATCH = 100
INTERNAL_SECRET = "chaos-internal-" + "0123456789abcdef" * 3
# The processes' proof: a read carrying it is answered from the process's own table (or
# its copy or replica, marked stale), never forwarded (web/_reads.py).
FROM_HERE = {FORWARDED: forwarding_proof(INTERNAL_SECRET)}
# Counters each process life must show above 0 summed over the run (likestream/runtime/_metrics.py).
EXERCISED = {
    "replays": ("likestream_events_total", {"outcome": "replayed"}),
    "hole fills": ("likestream_hole_fills_total", {}),
    "changelog recoveries": ("likestream_changelog_recoveries_total", {}),
    "recoveries from an empty data dir": (
        "likestream_changelog_recoveries_total",
        {"start": "empty"},
    ),
}


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


def chaos_events(plan: Plan, seed: int) -> tuple[list[LikeEvent], set[int]]:
    """A hot item takes 20%; the rest are likes, unlikes, exact duplicates and flips, and
    far re-deliveries: one old event sent again (a producer's retry, preferably one whose
    user and item had newer events since) or a whole old batch (a replayed batch).
    Returns the events and the indexes of the far re-deliveries."""
    rng = random.Random(seed)
    out: list[LikeEvent] = []
    far: set[int] = set()
    latest: dict[tuple[str, str], LikeEvent] = {}

    def add(event: LikeEvent, again: bool) -> None:
        if again:
            far.add(len(out))
        out.append(event)
        latest[(event.item_id, event.user_id)] = event

    while len(out) < plan.events:
        roll = rng.random()
        previous = out[-1] if out else None
        if len(out) > FAR and roll < REPLAY:
            start = rng.randrange(len(out) - FAR)
            for event in out[start : start + REPLAYED_BATCH]:
                add(event, again=True)
            continue
        if len(out) > FAR and roll < RETRY:
            candidates = [out[rng.randrange(len(out) - FAR)] for _ in range(5)]
            overtaken = [e for e in candidates if latest[(e.item_id, e.user_id)] is not e]
            add((overtaken or candidates)[0], again=True)
            continue
        if previous is not None and roll < 0.08:
            event = previous
        elif previous is not None and roll < 0.16:
            flipped: Action = "unlike" if previous.liked else "like"
            event = new_event(previous.user_id, previous.item_id, flipped)
        else:
            item = "hot:0" if rng.random() < 0.2 else f"item:{rng.randrange(plan.items)}"
            action: Action = "like" if rng.random() < 0.6 else "unlike"
            event = new_event(f"u{rng.randrange(plan.users)}", item, action)
        add(event, again=False)
    return out[: plan.events], {i for i in far if i < plan.events}


@pytest.fixture(scope="module")
def plan(pytestconfig: pytest.Config) -> Plan:
    return PLANS[pytestconfig.getoption("chaos")]


@pytest.fixture(scope="module", name="own_broker")
def _own_broker(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Broker]:
    yield from own_broker(tmp_path_factory, "chaos-broker")


@dataclass(frozen=True)
class Read:
    """A count read over HTTP during the run: asked at ``asked``, answered at ``answered``
    (monotonic seconds)."""

    item: str
    asked: float
    answered: float
    status: int  # 0: no answer (the worker was down, or 5 s passed)
    likes: int | None
    stale: bool


@dataclass(frozen=True)
class Offsets:
    """The group's committed offsets and the events partitions' ends, asked from ``began``
    to ``ended``: committed offsets only grow, so they hold for any read asked after
    ``ended``; the ends bound any read answered before ``began``."""

    began: float
    ended: float
    committed: dict[int, int]
    ends: dict[int, int]


class Chaos:
    def __init__(
        self,
        cluster: Cluster,
        workers: list[Worker],
        plan: Plan,
        seed: int,
        http: aiohttp.ClientSession,
    ) -> None:
        self.cluster = cluster
        self.http = http
        self.workers = workers
        self.plan = plan
        self.rng = random.Random(seed)
        self.oracle = Oracle()
        self.history = CountHistory()
        defaults = load_settings()
        self.trending = TrendingOracle(defaults.windows, defaults.trending_lateness_ms)
        self.produced = 0
        self.kills = 0
        self.broker_restarts = 0
        self.lost_dirs = 0
        self.self_exits = 0  # workers that exited by themselves, restarted by supervise()
        self.killing: set[Path] = set()  # killed by the plan, not restarted yet
        self.owners_moved = 0  # partitions whose owner changed during the final reads
        self.refused_s = 0.0
        self.redelivered = 0
        self.redelivered_changed = 0  # re-deliveries that changed a membership
        self.producing = asyncio.Event()
        self.producing.set()
        self.idle = asyncio.Event()
        self.done = asyncio.Event()
        self.recent: list[str] = []  # items of the last batch, for reads during the run
        self.reads: list[Read] = []
        self.offsets: list[Offsets] = []
        self.lives = dict.fromkeys((w.log for w in workers), 0)
        # The last scrape of each process (worker, life): its counters since it started.
        self.scrapes: dict[tuple[Path, int], list[tuple[str, dict[str, str], float]]] = {}

    async def produce(self) -> None:
        """Send in batches at a steady rate, each batch fully acknowledged; pausable."""
        batch_size = 200
        pause = self.plan.seconds * batch_size / self.plan.events
        events, far = chaos_events(self.plan, seed=self.rng.randrange(1 << 30))
        events = timed(events, self.rng)
        async with LikeClient(self.cluster.kafka, self.cluster.topic) as client:
            for start in range(0, len(events), batch_size):
                if not self.producing.is_set():
                    self.idle.set()
                    await self.producing.wait()
                    self.idle.clear()
                batch = events[start : start + batch_size]
                sent = await asyncio.gather(*[await client.send(event) for event in batch])
                for n, (event, meta) in enumerate(zip(batch, sent, strict=True), start):
                    key = (event.item_id, event.user_id)
                    if n in far:
                        self.redelivered += 1
                        self.redelivered_changed += self.oracle.members.get(key) != event.liked
                    self.oracle.apply(event)
                    self.history.apply(event, meta.offset)
                    assert meta.partition == partition_for(
                        event.item_id.encode(), self.cluster.partitions
                    )
                    assert event.ts is not None
                    self.trending.apply(meta.partition, event, event.ts)
                self.produced += len(batch)
                self.recent = [event.item_id for event in batch]
                await asyncio.sleep(pause)
        self.idle.set()

    async def kill_and_restart(self) -> None:
        moments = sorted(
            self.rng.uniform(0.05, 0.95) * self.plan.seconds for _ in range(self.plan.kills)
        )
        restart_broker_at = self.plan.seconds / 2
        lose_dir_at = len(moments) // 2  # one kill, mid-run, loses the victim's data dir
        began = time.monotonic()
        for n, moment in enumerate(moments):
            await asyncio.sleep(max(0.0, began + moment - time.monotonic()))
            if self.broker_restarts == 0 and time.monotonic() - began >= restart_broker_at:
                await self.restart_broker()
            victim = self.rng.choice(self.workers)
            await self.scrape(victim)  # its counters, before they die with it
            self.killing.add(victim.log)
            victim.kill()
            self.kills += 1
            if n == lose_dir_at:
                assert victim.data_dir.is_dir()
                shutil.rmtree(victim.data_dir)
                self.lost_dirs += 1
            await asyncio.sleep(self.rng.uniform(0.0, 2.0))
            victim.start()
            self.lives[victim.log] += 1
            self.killing.discard(victim.log)
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

    async def refuse_counts(self) -> None:
        """Once, ``like-counts`` refuses every write (its largest record batch made tiny)
        until a worker rewound after the failed delivery (a hole fill), 120 s at most (the
        end of the test asserts that one happened)."""
        await asyncio.sleep(self.plan.seconds / 4)
        began = time.monotonic()
        await self.counts_config({"max.message.bytes": "64"})
        try:
            before = self.total("likestream_hole_fills_total", {})
            while time.monotonic() - began < 120:
                await asyncio.sleep(0.5)
                for worker in self.workers:
                    await self.scrape(worker)
                if self.total("likestream_hole_fills_total", {}) > before:
                    break
        finally:
            await self.counts_config({})
            self.refused_s = time.monotonic() - began

    async def counts_config(self, extra: dict[str, str]) -> None:
        # AlterConfigs replaces the topic's whole config: restate compaction
        # (likestream/kafka/_topics.py). Retried: the broker may be restarting.
        resource = ConfigResource(
            ConfigResourceType.TOPIC,
            self.cluster.counts_topic,
            configs={"cleanup.policy": "compact", **extra},
        )
        deadline = time.monotonic() + 120
        while True:
            admin = self.cluster.kafka.admin()
            try:
                await admin.start()
                (response,) = await admin.alter_configs([resource])
                assert [r[0] for r in response.resources] == [0], response
                return
            except KafkaError:
                if time.monotonic() > deadline:
                    raise
                await asyncio.sleep(1)
            finally:
                await admin.close()

    async def scrape(self, worker: Worker) -> None:
        """Keep ``worker``'s counters as its current process shows them (if it answers)."""
        life = (worker.log, self.lives[worker.log])
        try:
            url, timeout = f"{worker.url}/metrics", aiohttp.ClientTimeout(total=3)
            async with self.http.get(url, timeout=timeout) as resp:
                if resp.status != 200:
                    return
                text = await resp.text()
        except (aiohttp.ClientError, TimeoutError):
            return
        self.scrapes[life] = [
            (sample.name, sample.labels, sample.value)
            for family in text_string_to_metric_families(text)
            for sample in family.samples
            if sample.name in {name for name, _ in EXERCISED.values()}
        ]

    def total(self, name: str, labels: dict[str, str]) -> float:
        """A counter summed over every process of the run (each one's last scrape)."""
        return sum(
            value
            for samples in self.scrapes.values()
            for sample, got, value in samples
            if sample == name and labels.items() <= got.items()
        )

    def supervise(self) -> None:
        """Start again a worker that exited by itself, as Kubernetes would: the worker
        is crash-only, e.g. a start-up meeting the broker's restart exits 1 (faust
        creating its changelog topic gets NodeNotReadyError). Counted and reported."""
        for worker in self.workers:
            if worker.log in self.killing or worker.proc is None:
                continue
            if worker.proc.poll() is not None:
                self.self_exits += 1
                worker.start()
                self.lives[worker.log] += 1

    async def supervise_forever(self) -> None:
        while not self.done.is_set():
            self.supervise()
            await asyncio.sleep(1.0)

    async def scrape_forever(self) -> None:
        while not self.done.is_set():
            for worker in self.workers:
                await self.scrape(worker)
            await asyncio.sleep(1.0)

    async def read_forever(self) -> None:
        """Read a count now and then through any worker, alive or not: the hot item or
        one just produced."""
        while not self.done.is_set():
            item = "hot:0" if self.rng.random() < 0.4 or not self.recent else None
            item = item or self.rng.choice(self.recent)
            worker = self.rng.choice(self.workers)
            asked = time.monotonic()
            status, likes, stale = 0, None, False
            try:
                async with self.http.get(
                    f"{worker.url}/items/{item}/likes", timeout=aiohttp.ClientTimeout(total=5)
                ) as resp:
                    status = resp.status
                    if status == 200:
                        likes = (await resp.json())["likes"]
                        stale = resp.headers.get(STALE) == "true"
            except (aiohttp.ClientError, TimeoutError):
                pass
            self.reads.append(Read(item, asked, time.monotonic(), status, likes, stale))
            await asyncio.sleep(0.05)

    async def watch_offsets(self) -> None:
        """Sample the committed offsets and the log ends, the bounds of a fresh read."""
        tps = [TopicPartition(self.cluster.topic, p) for p in range(self.cluster.partitions)]
        admin = self.cluster.kafka.admin()
        consumer = self.cluster.kafka.consumer()
        await admin.start()
        await consumer.start()
        try:
            while not self.done.is_set():
                began = time.monotonic()
                try:
                    committed = await asyncio.wait_for(
                        admin.list_consumer_group_offsets(self.cluster.app_id), 5
                    )
                    ends = await asyncio.wait_for(consumer.end_offsets(tps), 5)
                except (KafkaError, TimeoutError):
                    await asyncio.sleep(0.5)  # the broker restarts
                    continue
                self.offsets.append(
                    Offsets(
                        began,
                        time.monotonic(),
                        {
                            tp.partition: meta.offset
                            for tp, meta in committed.items()
                            if tp.topic == self.cluster.topic
                        },
                        {tp.partition: end for tp, end in ends.items()},
                    )
                )
                await asyncio.sleep(0.25)
        finally:
            await consumer.stop()
            await admin.close()

    async def run(self) -> None:
        async def until_done(*jobs: Awaitable[None]) -> None:
            try:
                await asyncio.gather(*jobs)
            finally:
                self.done.set()

        watchers: list[Callable[[], Awaitable[None]]] = [
            self.supervise_forever,
            self.scrape_forever,
            self.watch_offsets,
            self.read_forever,
        ]
        await asyncio.gather(
            until_done(self.produce(), self.kill_and_restart(), self.refuse_counts()),
            *(watch() for watch in watchers),
        )

    def judge_reads(self) -> tuple[dict[str, int], list[str]]:
        """Tally the reads made during the run; the wrong ones (never a wrong fresh answer,
        never a count the item never had)."""
        by_end = sorted(self.offsets, key=lambda o: o.ended)
        ended = [o.ended for o in by_end]
        by_start = sorted(self.offsets, key=lambda o: o.began)
        began = [o.began for o in by_start]
        tally = {"fresh": 0, "stale": 0, "503": 0, "no answer": 0}
        wrong: list[str] = []
        for read in self.reads:
            if read.status != 200 or read.likes is None:
                tally["503" if read.status == 503 else "no answer"] += 1
                continue
            partition = partition_for(read.item.encode(), self.cluster.partitions)
            before = bisect.bisect_left(ended, read.asked) - 1
            after = bisect.bisect_right(began, read.answered)
            high = by_start[after].ends.get(partition) if after < len(by_start) else None
            if read.stale:
                tally["stale"] += 1
                low = 0
            else:
                tally["fresh"] += 1
                low = by_end[before].committed.get(partition, 0) if before >= 0 else 0
            allowed = self.history.counts_between(read.item, low, high)
            if read.likes not in allowed:
                kind = "stale" if read.stale else "fresh"
                wrong.append(
                    f"{kind} read of {read.item} at {read.asked:.1f}s: {read.likes}, "
                    f"not a count of offsets [{low}, {high}]: {sorted(allowed)[:10]}"
                )
        return tally, wrong


async def owner_of(
    http: aiohttp.ClientSession, workers: list[Worker], item: str, limit: float = 120
) -> Worker | None:
    """The worker whose own table serves ``item``'s partition: asked with the processes'
    proof, a worker answers from its table only if it owns the partition, and otherwise
    says its answer is stale (its replica or copy) or cannot answer. None if none did
    within ``limit`` seconds (the partition has no owner)."""
    deadline = time.monotonic() + limit
    while True:
        for worker in workers:
            async with http.get(f"{worker.url}/items/{item}/likes", headers=FROM_HERE) as resp:
                if resp.status == 200 and STALE not in resp.headers:
                    return worker
        if time.monotonic() > deadline:
            return None
        await asyncio.sleep(0.5)


class FromOwners:
    """Reads answered from the owner's own table; when the owner answers stale (the
    partition moved: a rebalance), the new owner is found and asked again."""

    def __init__(self, http: aiohttp.ClientSession, workers: list[Worker], partitions: int):
        self.http = http
        self.workers = workers
        self.partitions = partitions
        self.owners: dict[int, Worker | None] = {}
        self.lock = asyncio.Lock()
        self.moved = 0

    async def get(self, item: str, path: str, params: dict[str, str]) -> object | None:
        """The JSON body of ``path`` from the owner of ``item``; None if no owner answers."""
        partition = partition_for(item.encode(), self.partitions)
        for _ in range(3):
            async with self.lock:
                if partition not in self.owners:
                    self.owners[partition] = await owner_of(self.http, self.workers, item)
            owner = self.owners[partition]
            if owner is None:
                return None
            async with self.http.get(owner.url + path, params=params, headers=FROM_HERE) as resp:
                if resp.status == 200 and STALE not in resp.headers:
                    body: object = await resp.json()
                    return body
            async with self.lock:
                if self.owners.get(partition) is owner:
                    del self.owners[partition]
                    self.moved += 1
        return None


async def owning_partitions(
    http: aiohttp.ClientSession, workers: list[Worker], limit: float = 120
) -> list[str]:
    """Workers that own no events partition after ``limit`` seconds (each should: 6
    partitions, 2 workers); a worker out of the group would serve nothing fresh."""
    deadline = time.monotonic() + limit
    while True:
        idle = []
        for worker in workers:
            async with http.get(f"{worker.url}/status") as resp:
                if not (await resp.json())["partitions"]:
                    idle.append(f"{worker.url} owns no partition (out of the group?)")
        if not idle or time.monotonic() > deadline:
            return idle
        await asyncio.sleep(1)


async def mismatches(http: aiohttp.ClientSession, chaos: Chaos) -> list[str]:
    cluster, oracle = chaos.cluster, chaos.oracle
    expected = oracle.counts()
    wrong = await owning_partitions(http, chaos.workers)
    owners = FromOwners(http, chaos.workers, cluster.partitions)
    by_partition: dict[int, list[str]] = defaultdict(list)
    for item in expected:
        by_partition[partition_for(item.encode(), cluster.partitions)].append(item)
    for items in by_partition.values():
        for i in range(0, len(items), 100):
            batch = items[i : i + 100]
            body = await owners.get(batch[0], "/likes", {"items": ",".join(batch)})
            if not isinstance(body, dict):
                wrong.append(f"counts of {batch[0]}'s partition: no answer from an owner")
                continue
            for item, likes in body["likes"].items():
                if likes != expected[item]:
                    wrong.append(f"count {item}: {likes} != {expected[item]}")
    sem = asyncio.Semaphore(32)

    async def check(item: str, user: str) -> None:
        async with sem:
            body = await owners.get(item, f"/items/{item}/likes/{user}", {})
        if not isinstance(body, dict):
            wrong.append(f"member {item}/{user}: no answer from an owner")
        elif body["liked"] != oracle.members[(item, user)]:
            wrong.append(f"member {item}/{user}")

    await asyncio.gather(*(check(i, u) for i, u in oracle.members))
    chaos.owners_moved = owners.moved
    if owners.moved:
        wrong += await owning_partitions(http, chaos.workers)  # moved: all still in the group?
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
    started = [
        cluster.worker(f"w{i}", internal_secret=INTERNAL_SECRET) for i in range(plan.workers)
    ]
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
    chaos = Chaos(cluster, workers, plan, seed=2026, http=http)
    began = time.monotonic()
    await chaos.run()
    chaos.supervise()
    for worker in workers:
        await worker.wait_ready(limit=300)
    await cluster.wait_caught_up(limit=900)
    for worker in workers:
        await worker.wait_ready(limit=300)
    wrong = await mismatches(http, chaos)
    for worker in workers:
        await chaos.scrape(worker)
    exercised = {what: chaos.total(*counter) for what, counter in EXERCISED.items()}
    tally, wrong_reads = chaos.judge_reads()
    took = time.monotonic() - began
    report(
        request.config,
        f"chaos ({request.config.getoption('chaos')}): {chaos.produced} events "
        f"({chaos.redelivered} far re-deliveries, {chaos.redelivered_changed} of them changed "
        f"a membership), {len(chaos.oracle.counts())} items, {len(chaos.oracle.members)} "
        f"memberships, {chaos.kills} SIGKILLs ({chaos.lost_dirs} with the data dir lost), "
        f"{chaos.broker_restarts} broker restart, {chaos.self_exits} workers restarted after "
        f"exiting by themselves, like-counts refused writes for "
        f"{chaos.refused_s:.1f}s, {plan.workers} workers, {took:.0f}s; "
        + ", ".join(f"{what} {n:.0f}" for what, n in exercised.items())
        + "; reads during the run: "
        + ", ".join(f"{n} {what}" for what, n in tally.items())
        + f", {len(wrong_reads)} wrong; {len(wrong)} mismatches at the end "
        f"(owners moved during the final reads: {chaos.owners_moved})",
    )
    assert wrong == [], wrong[:20]
    assert wrong_reads == [], wrong_reads[:20]
    assert chaos.lost_dirs >= 1
    assert chaos.redelivered_changed > 0
    assert all(n > 0 for n in exercised.values()), exercised
    assert tally["fresh"] > 0, tally
