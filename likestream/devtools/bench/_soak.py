"""``soak``: a long run under steady load (``--minutes``, default 30): writes at half the
worker's maximum ingest, reads at a steady rate, live WebSocket subscribers, one worker
killed (SIGKILL) and restarted in the middle; sampled at a fixed interval (a minute), and
every produced event checked against the worker's final answer at the end.

* **Maximum ingest**: unless ``--rate`` is given, a calibration first: ``CALIBRATION``
  pre-produced events of the soak's own load folded by the worker from a cold start, rated
  as in ``ingest``; the soak writes at ``LOAD_SHARE`` of that rate. The calibration events
  stay: they are part of what the check at the end covers.
* **Writes**: an open-loop producer in this process, Zipf-skewed likes and unlikes (and 5%
  exact duplicates) over ``ITEMS`` items x ``USERS`` users (at most 100,000 memberships, so
  that every one can be checked), plus ``TRACKED_RATE`` likes a second by fresh users on
  ``TRACKED`` other items, whose counts the subscribers follow (the n-th makes count n).
* **Subscribers** (``--subscribers``, 2,000): lean clients (``_wsclient``) in helper
  processes on a gateway beside the worker (the push tier, which outlives a worker
  restart), each subscribed to ``PER_CLIENT`` tracked items. Event latency: produce (just
  before the producer's send) to the pushed frame showing the change, per (subscriber,
  change), counted in the interval the event was produced in.
* **Reads** (``--read-rate``, 200/s): ``GET /items/{id}/likes`` through the gateway (it
  forwards to the owning worker, or answers from its like-counts replica while the worker
  is down), open loop (``_reads_bench.open_loop``), one run per interval.
* **Samples**, at the end of every interval: RSS and open files (``/proc/PID/fd``) of the
  worker and the gateway, the group's lag, and per interval the event p99, reads answered,
  failed reads (non-200 or refused) and reads unanswered 5 s after their interval (from a
  starved bench process as much as from a slow gateway), subscribers dropped or closed, DLQ records.
* **Check**: once the worker caught up, every count (batch reads from the worker and the
  last like-counts record of each item) and every membership (one read per member, with
  that user's token) against a plain fold of every event produced, in order.

The verdicts (``_soak_report``): RSS and open files grow less than 10% from minutes 5-10
to the last 5, no event lost, the last 5 minutes' event p99 within 2x of minutes 5-10.
"""

from __future__ import annotations

import asyncio
import math
import multiprocessing
import random
import secrets
import time
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from multiprocessing.connection import Connection
from typing import Any

import aiohttp

from likestream.client import LikeClient, new_event
from likestream.config._settings import Settings
from likestream.devtools.bench._audience import Delays, Helpers, helpers
from likestream.devtools.bench._common import (
    PUSH_ENV,
    BenchConfig,
    Result,
    command,
    open_files,
    proc_status,
    say,
)
from likestream.devtools.bench._ingest import watch_worker
from likestream.devtools.bench._lab import (
    Lab,
    WorkerProcess,
    create_topics,
    partitions_of,
    wait_committed,
)
from likestream.devtools.bench._latency import LOAD_SHARE
from likestream.devtools.bench._peers import read_counts
from likestream.devtools.bench._reads_bench import open_loop
from likestream.devtools.bench._soak_report import (
    GROWN,
    GROWTH_BOUND,
    STABLE_RATIO,
    TARGETED,
    growth,
    outside_rocksdb,
    sample_every,
    window_delays,
    windows,
)
from likestream.domain._schema import LikeEvent
from likestream.domain._tokens import mint_token
from likestream.kafka._factory import KafkaConfig
from likestream.runtime._produce import produce, synthetic_events

__all__ = ["Ledger", "soak", "soak_events"]

CALIBRATION = 200_000
ITEMS = 1_000
USERS = 100
DUPLICATES = 0.05
TRACKED = 100
PER_CLIENT = 5
TRACKED_RATE = 20.0
READ_CONNECTIONS = 8
WINDOW = 20_000  # unacknowledged sends before waiting for them
BURST = 500  # bulk sends at most between two tracked ones, when catching up
SETTLE_SECONDS = 60.0
MIB = 1 << 20


class Ledger:
    """A plain fold of the produced events, in order: likes(item) = users whose latest
    event for the item is a like (docs/ARCHITECTURE.md#the-invariant)."""

    def __init__(self) -> None:
        self.members: dict[tuple[str, str], bool] = {}
        self.events = 0

    def apply(self, event: LikeEvent) -> None:
        self.members[(event.item_id, event.user_id)] = event.liked
        self.events += 1

    def extend(self, later: Ledger) -> None:
        """Fold in ``later``: another process's fold of events written after this one's
        (its latest event of a membership wins)."""
        self.members.update(later.members)
        self.events += later.events

    def counts(self) -> dict[str, int]:
        out: dict[str, int] = {}
        for (item, _), liked in self.members.items():
            out[item] = out.get(item, 0) + int(liked)
        return out


def soak_events(seed: int, duplicates: float = DUPLICATES) -> Iterator[LikeEvent]:
    """Endless Zipf-skewed likes and unlikes over ``ITEMS`` x ``USERS``; a share
    ``duplicates`` of them repeats the event before (same event id), as a retrying client
    would."""
    rng = random.Random(seed)
    previous: LikeEvent | None = None
    for event in synthetic_events(1 << 62, ITEMS, USERS, seed=seed):
        if previous is not None and rng.random() < duplicates:
            yield previous
        yield event
        previous = event


def tracked_items() -> list[str]:
    return [f"track:{i}" for i in range(TRACKED)]


@dataclass
class Run:
    """What the soak's tasks share."""

    settings: Settings
    worker: WorkerProcess
    gateway: WorkerProcess
    crowd: Helpers
    rate: float
    read_rate: float
    seconds: float
    every: float
    origin: float
    ledger: Ledger
    times: dict[str, list[float]] = field(default_factory=dict)
    """Produce times of the tracked items' counts not yet sent to the helpers."""
    reads: dict[int, dict[str, float]] = field(default_factory=dict)
    delays: dict[int, Delays] = field(default_factory=dict)
    rows: list[dict[str, float]] = field(default_factory=list)
    restart_s: float = float("nan")
    produced: int = 0
    producer: dict[str, float] = field(default_factory=dict)
    """The bulk producer's CPU seconds, wall seconds and seconds waiting for acks."""

    @property
    def intervals(self) -> int:
        return int(self.seconds / self.every + 1e-6)

    def take_times(self) -> dict[str, list[float]]:
        times, self.times = self.times, {}
        return times


def _bulk_process(
    settings: Settings,
    seed: int,
    rate: float,
    window: tuple[float, float],
    sent: Any,
    out: Connection,
) -> None:
    """The bulk writes, in a process of their own (spawned): open loop at ``rate`` from
    ``window`` = (origin, seconds) on the shared monotonic clock; ``sent``: a shared
    counter of the events sent so far. Sends back, once Kafka acknowledged every one, the
    fold of what it wrote (a :class:`Ledger`'s members and events) and what held it back."""
    out.send(asyncio.run(_bulk(settings, seed, rate, window, sent)))
    out.close()


async def _bulk(
    settings: Settings, seed: int, rate: float, window: tuple[float, float], sent: Any
) -> dict[str, Any]:
    origin, seconds = window
    bulk = soak_events(seed)
    ledger = Ledger()
    pending: list[asyncio.Future[Any]] = []
    n = 0
    acks = 0.0
    cpu = time.process_time()
    kafka = KafkaConfig.from_settings(settings)
    async with LikeClient(kafka, settings.topic, linger_ms=1) as client:
        while (elapsed := time.monotonic() - origin) < seconds:
            for _ in range(min(BURST, int(elapsed * rate) + 1 - n)):
                event = next(bulk)
                ledger.apply(event)
                pending.append(await client.send(event))
                n += 1
            if len(pending) >= WINDOW:
                waited = time.monotonic()
                await asyncio.gather(*pending)
                acks += time.monotonic() - waited
                pending.clear()
            sent.value = n
            await asyncio.sleep(0.002)
        await client.flush()
        await asyncio.gather(*pending)
    sent.value = n
    return {
        "ledger": ledger,
        "cpu_s": time.process_time() - cpu,
        "wall_s": time.monotonic() - origin,
        "ack_wait_s": acks,
    }


async def _spawned(target: Callable[..., None], *args: Any) -> Any:
    """Run ``target(*args, out)`` in a spawned process (a fork would copy this process's
    threads and loop); what it sends on ``out``, once it is done."""
    context = multiprocessing.get_context("spawn")
    receive, out = context.Pipe(duplex=False)
    proc = context.Process(target=target, args=(*args, out), daemon=True)
    proc.start()
    out.close()
    try:
        return await asyncio.to_thread(receive.recv)
    except EOFError:
        await asyncio.to_thread(proc.join)
        raise RuntimeError(f"soak: {target.__name__} exited with {proc.exitcode}") from None
    finally:
        receive.close()
        if proc.is_alive():
            proc.kill()  # cancelled: the soak stops; nothing it sent matters any more
        await asyncio.to_thread(proc.join)


async def _write(run: Run, seed: int) -> None:
    """Open-loop writes at ``run.rate`` (a process of their own) plus the tracked likes
    (here: their produce times are the event latency's start), until ``run.seconds``;
    returns once Kafka acknowledged every one (a failed send fails the soak: the check
    could no longer say what was written)."""
    sent = multiprocessing.get_context("spawn").Value("q", 0)
    bulk = asyncio.ensure_future(
        _spawned(_bulk_process, run.settings, seed, run.rate, (run.origin, run.seconds), sent)
    )
    items = tracked_items()
    tag = uuid.uuid4().hex[:6]
    pending: list[asyncio.Future[Any]] = []
    tracked = 0
    kafka = KafkaConfig.from_settings(run.settings)
    try:
        async with LikeClient(kafka, run.settings.topic, linger_ms=1) as client:
            while (elapsed := time.monotonic() - run.origin) < run.seconds:
                while tracked < int(elapsed * TRACKED_RATE) + 1:
                    item = items[tracked % TRACKED]
                    event = new_event(f"f{tag}-{tracked}", item, "like")
                    run.times.setdefault(item, []).append(time.monotonic())
                    run.ledger.apply(event)
                    pending.append(await client.send(event))
                    tracked += 1
                run.produced = sent.value + tracked
                await asyncio.sleep(0.01)
            await client.flush()
            await asyncio.gather(*pending)
        got = await bulk
    finally:
        bulk.cancel()
    # The calibration's events came before the bulk ones (and tracked items are apart).
    run.ledger.extend(got["ledger"])
    run.produced = sent.value + tracked
    run.producer = {k: got[k] for k in ("cpu_s", "wall_s", "ack_wait_s")}


def _reads_process(url: str, rate: float, grid: tuple[float, float, int], out: Connection) -> None:
    """The reads, in a process of their own (spawned): one open-loop run per interval of
    ``grid`` = (origin, every, intervals); sends back the figures by interval."""
    out.send(asyncio.run(_reads(url, rate, grid)))
    out.close()


async def _reads(url: str, rate: float, grid: tuple[float, float, int]) -> dict[int, Any]:
    origin, every, intervals = grid
    reads: dict[int, Any] = {}
    for k in range(intervals):
        left = origin + (k + 1) * every - time.monotonic()
        if left > 0:
            reads[k] = await open_loop(url, ITEMS, rate, left, READ_CONNECTIONS)
    return reads


async def _read(run: Run) -> None:
    """The reads through the gateway, until the end (``_reads_process``)."""
    grid = (run.origin, run.every, run.intervals)
    run.reads = await _spawned(_reads_process, run.gateway.url, run.read_rate, grid)


async def _restart(run: Run) -> None:
    """SIGKILL the worker half-way, start it again on the same data dir at once."""
    await asyncio.sleep(max(0.0, run.origin + run.seconds / 2 - time.monotonic()))
    proc = run.worker.proc
    assert proc is not None
    say(f"soak: kill -9 of the worker (pid {proc.pid}), then a restart")
    killed = time.monotonic()
    proc.kill()
    await asyncio.to_thread(proc.wait)
    async with aiohttp.ClientSession() as http:
        run.worker.start()
        ready = await run.worker.wait_status(http, "/readyz", limit=600)
    run.restart_s = ready - killed
    say(f"soak: worker ready again {run.restart_s:.1f}s after the kill")


class Offsets:
    """The group's lag and the DLQ's records, from one admin client and one consumer kept
    for the run (a client per sample costs seconds on a loaded machine)."""

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self.admin = KafkaConfig.from_settings(settings).admin()
        self.consumer = KafkaConfig.from_settings(settings).consumer()

    async def __aenter__(self) -> Offsets:
        await self.admin.start()
        await self.consumer.start()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.consumer.stop()
        await self.admin.close()

    async def lag(self) -> int:
        tps = partitions_of(self.settings, self.settings.topic)
        # Committed first: read the other way, a commit between the two reads could pass
        # the end read before it.
        committed = await self.admin.list_consumer_group_offsets(self.settings.app_id)
        ends = await self.consumer.end_offsets(tps)
        return sum(
            max(0, ends[tp] - (committed[tp].offset if tp in committed else 0)) for tp in tps
        )

    async def dlq(self) -> int:
        tps = partitions_of(self.settings, self.settings.dlq_topic)
        ends = await self.consumer.end_offsets(tps)
        starts = await self.consumer.beginning_offsets(tps)
        return sum(ends[tp] - starts[tp] for tp in tps)


async def _sample(run: Run) -> None:
    """At the end of every interval: the processes' figures, the errors since the sample
    before. A sample that comes more than an interval late (a starved bench process) skips
    the intervals already past, so that each row is taken at its own time."""
    peaks: dict[int, float] = {}  # RocksDB's most memory so far, per worker process
    async with Offsets(run.settings) as offsets, aiohttp.ClientSession() as http:
        dlq_before = await offsets.dlq()
        closed_before = produced_before = 0
        taken_before = run.origin
        k = 0
        while k < run.intervals:
            await asyncio.sleep(max(0.0, run.origin + (k + 1) * run.every - time.monotonic()))
            worker, gateway = run.worker, run.gateway
            produced, taken = run.produced, time.monotonic()
            row = {
                "interval": k,
                "minute": round((k + 1) * run.every / 60, 2),
                "writes_per_s": round((produced - produced_before) / (taken - taken_before)),
                # NaN, not 0, for a worker killed and not yet started again.
                "worker_rss_mib": _running(round(proc_status(worker.pid, "VmRSS") / MIB, 1)),
                "worker_files": _running(open_files(worker.pid)),
                "gateway_rss_mib": round(proc_status(gateway.pid, "VmRSS") / MIB, 1),
                "gateway_files": open_files(gateway.pid),
            }
            kinds = await _rocksdb_mib(http, worker)
            row |= {f"worker_rocksdb_{kind}_mib": size for kind, size in kinds.items()}
            rocksdb = round(sum(kinds.values()), 1) if kinds else math.nan
            row["worker_rocksdb_mib"] = rocksdb
            peak = peaks[worker.pid] = max(peaks.get(worker.pid, 0.0), rocksdb)
            row["worker_rest_mib"] = outside_rocksdb(row["worker_rss_mib"], rocksdb, peak)
            try:
                row["lag"] = await offsets.lag()
            except Exception:  # e.g. the group rebalancing after the kill: no figure
                row["lag"] = float("nan")
            dlq = await offsets.dlq()
            times = run.take_times()
            delays, stats = await run.crowd.settle(times, (run.origin, run.every), None)
            _merge(run.delays, delays)
            row["dropped"] = stats["closed"] - closed_before
            row["dlq"] = dlq - dlq_before
            closed_before, dlq_before = stats["closed"], dlq
            produced_before, taken_before = produced, taken
            run.rows.append(row)
            so_far = run.delays.get(k, Delays())
            say(
                f"soak: {row['minute']:g} min: {row['writes_per_s']:,} writes/s; worker RSS "
                f"{row['worker_rss_mib']:,.0f} MiB (RocksDB {row['worker_rocksdb_mib']:,.0f}), "
                f"{row['worker_files']} files; gateway RSS "
                f"{row['gateway_rss_mib']:,.0f} MiB, {row['gateway_files']} files; lag "
                f"{row['lag']:,.0f}; p99 so far {so_far.percentile(99):,.0f} ms; "
                f"{row['dropped']} subscribers dropped, {row['dlq']} DLQ records"
            )
            k = max(k + 1, int((time.monotonic() - run.origin) / run.every))


def _running(figure: float) -> float:
    """A figure of a process's ``/proc`` entry; NaN for 0, which means it is gone."""
    return figure if figure else math.nan


async def _rocksdb_mib(http: aiohttp.ClientSession, worker: WorkerProcess) -> dict[str, float]:
    """RocksDB's own memory in the worker by kind (its ``/status``: memtables, table
    readers, block cache), MiB; nothing while the worker does not answer (restarting)."""
    try:
        async with http.get(f"{worker.url}/status", timeout=aiohttp.ClientTimeout(10)) as resp:
            kinds: dict[str, int] = (await resp.json())["rocksdb_memory_bytes"]
    except (TimeoutError, aiohttp.ClientError, KeyError, ValueError):
        return {}
    return {kind: round(size / MIB, 1) for kind, size in kinds.items()}


def _merge(into: dict[int, Delays], more: dict[int, Delays]) -> None:
    for k, delays in more.items():
        into.setdefault(k, Delays()).merge(delays)


async def check(
    worker: WorkerProcess, settings: Settings, ledger: Ledger, secret: str
) -> list[str]:
    """Every count and membership of ``ledger`` against the worker's answers and the
    last like-counts record of each item: the differences."""
    expected = ledger.counts()
    wrong: list[str] = []
    items = sorted(expected)
    async with aiohttp.ClientSession() as http:
        for i in range(0, len(items), 100):
            chunk = ",".join(items[i : i + 100])
            async with http.get(f"{worker.url}/likes", params={"items": chunk}) as resp:
                if resp.status != 200:
                    raise RuntimeError(f"soak check: GET /likes {resp.status}: {await resp.text()}")
                for item, likes in (await resp.json())["likes"].items():
                    if likes != expected[item]:
                        wrong.append(f"count {item}: {likes} != {expected[item]}")
        tokens: dict[str, str] = {}
        gate = asyncio.Semaphore(32)

        async def member(item: str, user: str, liked: bool) -> None:
            if user not in tokens:
                tokens[user] = f"Bearer {mint_token(secret, user, 3600)}"
            url = f"{worker.url}/items/{item}/likes/{user}"
            async with gate, http.get(url, headers={"Authorization": tokens[user]}) as resp:
                if resp.status != 200:
                    wrong.append(f"member {item}/{user}: {resp.status}")
                elif (await resp.json())["liked"] != liked:
                    wrong.append(f"member {item}/{user}: not {liked}")

        pairs = list(ledger.members.items())
        for i in range(0, len(pairs), 5000):
            await asyncio.gather(*(member(i_, u, v) for (i_, u), v in pairs[i : i + 5000]))
    published = await read_counts(settings, settings.counts_topic, limit=900)
    for item, want in expected.items():
        if published.get(item, 0) != want:
            wrong.append(f"like-counts {item}: {published.get(item, 0)} != {want}")
    return wrong


async def _calibrate(cfg: BenchConfig, worker: WorkerProcess, ledger: Ledger) -> float:
    """The worker's cold-start fold rate of ``CALIBRATION`` events of the soak's load."""
    say(f"soak: calibration: {CALIBRATION:,} events folded from a cold start")
    events = []
    for event in soak_events(cfg.seed + 1):
        events.append(event)
        ledger.apply(event)
        if len(events) == CALIBRATION:
            break
    await produce(KafkaConfig.from_settings(worker.settings), worker.settings.topic, events)
    worker.start()
    t_first, n_first, t_last, n_last = await watch_worker(worker, CALIBRATION, 120, cfg.cap)
    await wait_committed(worker.settings, limit=300)
    rate = (n_last - n_first) / max(t_last - t_first, 1e-9)
    say(f"soak: calibration: {rate:,.0f} events/s")
    async with aiohttp.ClientSession() as http:
        await worker.wait_status(http, "/readyz", limit=300)
    return rate


async def soak(lab: Lab, cfg: BenchConfig) -> Result:
    settings = lab.cluster("soak")
    await create_topics(settings)
    secret = secrets.token_urlsafe(32)
    env = {**PUSH_ENV, "LIKESTREAM_SECRET": secret}
    worker = lab.worker(settings, **env)
    ledger = Ledger()
    calibrated = None
    if cfg.rate:
        await worker.start_ready()
    else:
        calibrated = await _calibrate(cfg, worker, ledger)
    rate = cfg.rate or LOAD_SHARE * (calibrated or 0.0)
    gateway = lab.gateway(settings, **env)
    await gateway.start_ready()
    every = sample_every(cfg.minutes, cfg.sample_seconds)
    seconds = cfg.minutes * 60
    items = tracked_items()
    subscriptions = [
        [items[(n * PER_CLIENT + j) % TRACKED] for j in range(PER_CLIENT)]
        for n in range(cfg.subscribers)
    ]
    async with helpers(cfg.ws_procs, settings.data_dir.parent / "clients.log") as crowd:
        say(f"soak: {cfg.subscribers:,} subscribers on the gateway")
        failed, error = await crowd.open(gateway.url, subscriptions)
        if failed:
            raise RuntimeError(f"{failed:,} subscribers refused, first: {error}")
        await crowd.mark()
        say(
            f"soak: {cfg.minutes:g} min at {rate:,.0f} events/s (+{TRACKED_RATE:g} tracked), "
            f"{cfg.read_rate:g} reads/s, a sample every {every:g}s"
        )
        began = time.monotonic()
        run = Run(
            settings, worker, gateway, crowd, rate, cfg.read_rate, seconds, every, began, ledger
        )
        tasks = [
            asyncio.create_task(coro)
            for coro in (_write(run, cfg.seed), _read(run), _restart(run), _sample(run))
        ]
        try:
            await asyncio.gather(*tasks)
        finally:
            for task in tasks:
                task.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)
        say(f"soak: load done ({run.produced:,} events); waiting for the worker to catch up")
        await wait_committed(settings, limit=900)
        delays, stats = await crowd.settle(run.take_times(), (run.origin, every), SETTLE_SECONDS)
        _merge(run.delays, delays)
    say(f"soak: checking {len(ledger.members):,} memberships and every count")
    wrong = await check(worker, settings, ledger, secret)
    return _result(cfg, run, calibrated, wrong, stats)


def _result(
    cfg: BenchConfig,
    run: Run,
    calibrated: float | None,
    wrong: list[str],
    stats: dict[str, int],
) -> Result:
    for row in run.rows:
        k = int(row.pop("interval"))
        row["p99_ms"] = round(run.delays.get(k, Delays()).percentile(99), 1)
        reads = run.reads.get(k, {})
        row["reads"] = round(reads.get("requests_per_s", 0) * run.every)
        row["failed_reads"] = reads.get("errors", 0)
        row["unanswered_reads"] = reads.get("unanswered", 0)
        row["unanswered_generator"] = reads.get("unanswered_generator", 0)
        row["read_start_lag_p99_ms"] = reads.get("start_lag_p99_ms", float("nan"))
    reference, final = windows(run.seconds)
    ref_p99 = window_delays(run.delays, run.every, reference).percentile(99)
    end_p99 = window_delays(run.delays, run.every, final).percentile(99)
    everything = window_delays(run.delays, run.every, (0.0, run.seconds))
    ratio = end_p99 / ref_p99 if ref_p99 and ref_p99 == ref_p99 else float("nan")
    growths = {key: growth(run.rows, key, run.seconds) for key in GROWN}
    figures: dict[str, float] = {
        "minutes": cfg.minutes,
        "events_per_s": round(run.rate),
        "written_per_s": round(run.produced / run.seconds),
        "events": run.ledger.events,
        "subscribers": cfg.subscribers,
        "reads_per_s": cfg.read_rate,
        "restart_s": round(run.restart_s, 1),
        "lost_events": len(wrong),
        "memberships_checked": len(run.ledger.members),
        "p99_ms": round(everything.percentile(99), 1),
        "p99_ref_ms": round(ref_p99, 1),
        "p99_final_ms": round(end_p99, 1),
        "pushes_missing": everything.missing,
        "failed_reads": sum(r.get("failed_reads", 0) for r in run.rows),
        "unanswered_reads": sum(r.get("unanswered_reads", 0) for r in run.rows),
        "unanswered_by_generator": sum(r.get("unanswered_generator", 0) for r in run.rows),
        "producer_cpu_share": round(
            run.producer.get("cpu_s", float("nan")) / run.producer.get("wall_s", float("nan")), 2
        ),
        "producer_ack_wait_s": round(run.producer.get("ack_wait_s", float("nan")), 1),
        "subscribers_closed": stats["closed"],
        "dlq_records": sum(r.get("dlq", 0) for r in run.rows),
    }
    if calibrated is not None:
        figures["calibrated_max_events_per_s"] = round(calibrated)
    for key, value in growths.items():
        figures[f"{key.rsplit('_mib', 1)[0]}_growth"] = (
            round(value, 3) if value is not None else float("nan")
        )
    rate_flag = f" --rate {cfg.rate:g}" if cfg.rate else ""
    every_flag = f" --sample-seconds {cfg.sample_seconds:g}" if cfg.sample_seconds else ""
    result = Result(
        "soak",
        command("soak", cfg, "minutes", "subscribers", "read_rate", "ws_procs")
        + rate_flag
        + every_flag,
        figures,
        limits=_limits(run, calibrated),
        samples=run.rows,
    )
    for key, label in GROWN.items():
        if key in TARGETED:
            result.target(label, growths[key], "<", GROWTH_BOUND)
    result.target("events lost", len(wrong), "<", 1)
    result.target("p99 last window / p99 reference window", ratio, "<", STABLE_RATIO)
    if wrong:
        result.notes.append(f"{len(wrong)} differences, first: {'; '.join(wrong[:5])}")
    if everything.missing:
        result.notes.append(
            f"{everything.missing:,} (subscriber, change) pairs never pushed to a subscriber "
            f"still connected {SETTLE_SECONDS:.0f}s after the load"
        )
    return result


def _limits(run: Run, calibrated: float | None) -> str:
    how = (
        f"{LOAD_SHARE:.0%} of a calibration at the start ({calibrated:,.0f} events/s: "
        f"{CALIBRATION:,} events of this load folded from a cold start)"
        if calibrated is not None
        else "the rate given (--rate), no calibration"
    )
    return (
        f"writes at {how}, open loop from one Python producer in a process of its own "
        f"(producer_cpu_share: its CPU seconds over its wall seconds, near 1 when one core "
        f"was its limit; producer_ack_wait_s: time it waited for Kafka's acks), over "
        f"{ITEMS:,} items x {USERS} users ({DUPLICATES:.0%} exact duplicates), plus "
        f"{TRACKED_RATE:g} likes/s by fresh users on {TRACKED} tracked items from the bench "
        f"process; each subscriber follows {PER_CLIENT} tracked items on a gateway; reads "
        "through the gateway from a process of their own (an unanswered read is the "
        "generator's when its loop started it more than 1 s after its time: "
        "unanswered_by_generator; else the serving side's: the gateway and the worker "
        "it forwards to). The worker is killed with SIGKILL "
        "half-way and started again at once on its data dir (restart_s: kill to /readyz). "
        "Windows: reference = the second sixth of the run, final = the last sixth; growth "
        "compares the medians of the samples in them, stability the p99 of the changes "
        "produced in them. The worker's memory: RocksDB's own (memtables, table readers, "
        "block cache, from its /status; bounded by LIKESTREAM_ROCKSDB_* per partition and "
        "filling towards that as the state grows) and the rest of its RSS (RSS minus the "
        "most RocksDB held so far in the process: glibc keeps what RocksDB frees); the "
        "flat target is on the rest. A restarted worker's RocksDB starts nearly empty (its "
        "recovery flushed the memtables it replayed from the log) while the heap keeps "
        "what that recovery used, so the rest reads high after the restart until RocksDB "
        "has filled that memory again (RSS flat meanwhile). Everything (broker, worker, "
        "gateway, clients, producer, reads) shares the machine's cores, so lag and event "
        "latency show whether the worker keeps up with the rate, not the push path; "
        "written_per_s (and writes/s per sample) is the rate the producer held"
    )
