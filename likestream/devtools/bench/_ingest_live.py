"""``ingest-live``: a worker's ingest rate while live subscribers get pushes, against its
rate with none.

Twice, each time on fresh topics with the same pre-produced events (``--live-events``,
Zipf-skewed over ``--items`` and ``--users``) and a gateway beside the worker: one worker
folds them from a cold start, rated as in ``ingest`` (its events counter, from the first
applied event to the last). First with no WebSocket client; then with ``--live-clients``
lean clients connected to the gateway before the worker starts, each subscribed to
``ITEMS_PER_CLIENT`` of the ``HOT_ITEMS`` hottest items of the load (a page of items), so
frames flow during the whole fold. The gateway runs both times, so the subscribers are the
one difference. The ratio is the rate with subscribers over the rate with none.

A worker folding a backlog publishes an item's count once per flush, not once per event,
so each subscribed item changes a few times a second at most, whatever the rate: frames
per client scale with its items, hence a page of them rather than one.
"""

from __future__ import annotations

import asyncio
import time

from likestream.devtools.bench._audience import Helpers, helpers
from likestream.devtools.bench._common import (
    PUSH_ENV,
    BenchConfig,
    Result,
    command,
    cpu_seconds,
    say,
)
from likestream.devtools.bench._ingest import watch_worker
from likestream.devtools.bench._lab import Lab, create_topics
from likestream.kafka._factory import KafkaConfig
from likestream.runtime._produce import produce, synthetic_events

__all__ = ["ingest_live"]

HOT_ITEMS = 1000
ITEMS_PER_CLIENT = 10
TARGET_RATIO = 0.9
SETTLE_SECONDS = 2.0


class CpuTrace:
    """CPU seconds of some processes, sampled until stopped, so that the cores they used
    can be read over a window known only afterwards (the worker's first to last event)."""

    def __init__(self, pids: list[int]) -> None:
        self.pids = pids
        self.samples: list[tuple[float, list[float]]] = []
        self._task = asyncio.create_task(self._run())

    async def _run(self) -> None:
        while True:
            self.samples.append((time.monotonic(), [cpu_seconds(p) for p in self.pids]))
            await asyncio.sleep(0.1)

    async def stop(self) -> None:
        self._task.cancel()
        await asyncio.gather(self._task, return_exceptions=True)

    def cores(self, began: float, ended: float) -> list[float]:
        """Per process: cores used between the samples nearest ``began`` and ``ended``."""
        if len(self.samples) < 2:
            return [float("nan")] * len(self.pids)
        first = min(self.samples, key=lambda s: abs(s[0] - began))
        last = min(self.samples, key=lambda s: abs(s[0] - ended))
        span = last[0] - first[0]
        if span <= 0:
            return [float("nan")] * len(self.pids)
        return [(b - a) / span for a, b in zip(first[1], last[1], strict=True)]


async def _fold(lab: Lab, cfg: BenchConfig, crowd: Helpers, clients: int) -> dict[str, float]:
    """One run: produce, start the gateway (and ``clients`` subscribers), fold; figures."""
    settings = lab.cluster("ingest-live")
    await create_topics(settings)
    say(f"ingest-live: producing {cfg.live_events:,} events, then {clients:,} subscribers")
    events = synthetic_events(cfg.live_events, cfg.items, cfg.users, seed=cfg.seed)
    await produce(KafkaConfig.from_settings(settings), settings.topic, events, cfg.live_events)
    gateway = lab.gateway(settings, **PUSH_ENV)
    await gateway.start_ready()
    if clients:
        subscriptions = [
            [f"item:{(i * ITEMS_PER_CLIENT + j) % HOT_ITEMS}" for j in range(ITEMS_PER_CLIENT)]
            for i in range(clients)
        ]
        failed, error = await crowd.open(gateway.url, subscriptions)
        if failed:
            raise RuntimeError(f"{failed:,} of {clients:,} subscribers refused, first: {error}")
    before = await crowd.stats()
    trace = CpuTrace([gateway.pid, *crowd.pids])
    worker = lab.worker(settings)
    worker.start()
    folding = CpuTrace([worker.pid])
    try:
        t_first, n_first, t_last, n_last = await watch_worker(worker, cfg.live_events, 120, cfg.cap)
        after = await crowd.stats()  # the frames up to the last event applied
        # The frames still on their way (the counts topic, the gateway's tail and
        # coalescing): what the load caused in all, once the gateway has caught up.
        await asyncio.sleep(SETTLE_SECONDS)
        settled = await crowd.stats()
    finally:
        await trace.stop()
        await folding.stop()
        worker.stop()
        gateway.stop()
    span = max(t_last - t_first, 1e-9)
    cores = trace.cores(t_first, t_last)
    [worker_cores] = folding.cores(t_first, t_last)
    return {
        "events_per_s": round((n_last - n_first) / span),
        "events_applied": round(n_last),
        "subscribers": clients,
        "frames_per_s": round((after["received"] - before["received"]) / span),
        "frames": settled["received"] - before["received"],
        # The worker's own CPU per event: what pushes cost the fold itself, apart from
        # the cores the gateway and the clients take from the shared machine.
        "worker_us_per_event": round(worker_cores * span / max(n_last - n_first, 1) * 1e6, 1),
        "gateway_cores": round(cores[0], 2),
        "clients_cores": round(sum(cores[1:]), 2),
        "dropped": after["dropped"],
    }


async def ingest_live(lab: Lab, cfg: BenchConfig) -> Result:
    log = lab.root / "ingest-live-clients.log"
    async with helpers(cfg.ws_procs, log) as crowd:
        none = await _fold(lab, cfg, crowd, 0)
        say(f"ingest-live: no subscribers: {none['events_per_s']:,} events/s")
        live = await _fold(lab, cfg, crowd, cfg.live_clients)
        say(f"ingest-live: {cfg.live_clients:,} subscribers: {live}")
    ratio = live["events_per_s"] / max(none["events_per_s"], 1e-9)
    result = Result(
        "ingest-live",
        command("ingest-live", cfg, "live_events", "live_clients", "items", "users", "ws_procs"),
        live,
        {
            "events_per_s": none["events_per_s"],
            "worker_us_per_event": none["worker_us_per_event"],
            "gateway_cores": none["gateway_cores"],
        },
        ratio=float(f"{ratio:.3g}"),
        limits=(
            "the worker folds alone in its process either way: subscribers are the "
            "gateway's (it tails like-counts and pushes), so what they cost the worker is "
            "the cores the gateway and the clients take from the 2 the worker, the broker "
            "and they share (gateway_cores, clients_cores over the fold), and the "
            "like-counts reads of one more consumer on the broker; worker_us_per_event, "
            "its own CPU per event, shows what pushes cost the fold itself. frames_per_s: "
            "the likes "
            "frames the clients got from the worker's start to its last event applied, "
            f"over the fold's span; frames: all they got up to {SETTLE_SECONDS:.0f}s after "
            "it. A short fold "
            f"({cfg.live_events:,} events, a few seconds) is a noisy rate: compare the "
            "ratio over runs"
        ),
    )
    result.target("ratio to no subscribers", result.ratio, ">=", TARGET_RATIO)
    if live["dropped"]:
        result.notes.append(f"{live['dropped']:,} subscribers dropped (close code 1013)")
    return result
