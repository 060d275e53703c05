"""Periodic samples of what is not counted per event: lag, table sizes, recovery.

Every ``LIKESTREAM_METRICS_INTERVAL_MS`` the sampler sets the lag and table-size
gauges of ``_metrics.py`` and keeps what ``GET /status`` shows; readiness, recovery
and owned partitions are cheap flags, read at each scrape. Lag is the consumer
group's: end offset minus committed offset of each events partition this process
owns, read with a plain admin client and consumer (no group), so it is exactly
what KEDA and ``kafka-consumer-groups.sh`` see. Committed offsets move only once
events are durable (``agents/_confirm.py``), so lag counts what a crash would replay.
A failing sample is logged and retried next time: monitoring never stops a worker.
"""

from __future__ import annotations

import os
import time
from typing import Any

import faust
from aiokafka import AIOKafkaConsumer, TopicPartition
from aiokafka.admin import AIOKafkaAdminClient
from mode import Service
from prometheus_client import Counter, Gauge

from likestream.config._settings import Settings
from likestream.domain._retry import poll_forever
from likestream.kafka import _internals as internals
from likestream.kafka._factory import KafkaConfig
from likestream.runtime._metrics import (
    ASSIGNED_PARTITIONS,
    CONSUMER_LAG,
    DLQ_RECORDS,
    EVENTS,
    HTTP_REQUESTS,
    READY,
    RECOVERY_IN_PROGRESS,
    RECOVERY_REMAINING,
    ROCKSDB_MEMORY_BYTES,
    SSE_CONNECTIONS,
    SUBSCRIPTIONS,
    TABLE_ROWS,
    WS_CONNECTIONS,
)
from likestream.tables import TABLE_NAME, LikeTables

__all__ = ["Sampler"]


def counter_total(counter: Counter, **labels: str) -> float:
    """Sum of a counter's ``_total`` samples whose labels include ``labels``."""
    return sum(
        s.value
        for family in counter.collect()
        for s in family.samples
        if s.name.endswith("_total") and labels.items() <= s.labels.items()
    )


def gauge_value(gauge: Gauge) -> float:
    return sum(s.value for family in gauge.collect() for s in family.samples)


def _publish(gauge: Gauge, first: str, values: dict[int, int], before: set[int]) -> set[int]:
    """Set one child per partition; drop the children of partitions no longer owned."""
    for partition in before - values.keys():
        gauge.remove(first, str(partition))
    for partition, value in values.items():
        gauge.labels(first, str(partition)).set(value)
    return set(values)


class Sampler(Service):
    def __init__(self, app: faust.App, tables: LikeTables, settings: Settings) -> None:
        super().__init__()
        self.app = app
        self.tables = tables
        self.settings = settings
        self.interval = settings.metrics_interval_ms / 1000
        self.born = time.time()
        self.lag: dict[int, int] = {}
        self.rows: dict[int, int] = {}
        self.rocksdb_memory: dict[str, int] = {}
        self.sampled_at: float | None = None
        self.rates = {"events_per_second": 0.0, "http_requests_per_second": 0.0}
        self._totals: tuple[float, float, float] | None = None
        self._lag_partitions: set[int] = set()
        self._row_partitions: set[int] = set()
        self._admin: AIOKafkaAdminClient | None = None
        self._offsets: AIOKafkaConsumer | None = None

    # -- the loop ---------------------------------------------------------------

    @Service.task
    async def _sample_forever(self) -> None:
        # The sampler is its own client: it connects to Kafka in _lags, and only once it
        # owns a partition, so rows and rates are sampled while Kafka is away; a failure
        # drops its clients (_disconnect).
        await poll_forever(
            f"metrics sample (retrying every {self.interval:.1f}s)",
            self.interval,
            self._itself,
            Sampler._nothing_to_start,
            Sampler._disconnect,
            Sampler.sample,
        )

    def _itself(self) -> Sampler:
        return self

    async def _nothing_to_start(self) -> None:
        """Nothing to start: the clients connect in _lags, once a partition is owned."""

    async def on_start(self) -> None:
        # Readiness and recovery are cheap flags: read at every scrape, so /metrics
        # agrees with /readyz at any moment rather than up to an interval late.
        ASSIGNED_PARTITIONS.set_function(lambda: len(self.owned()))
        READY.set_function(lambda: int(self.tables.ready()))
        RECOVERY_IN_PROGRESS.set_function(lambda: int(self._in_recovery()))
        RECOVERY_REMAINING.set_function(self._remaining)

    async def on_stop(self) -> None:
        await self._disconnect()

    async def sample(self) -> None:
        owned = self.owned()
        self.rows = self.tables.estimated_rows(owned)
        self._row_partitions = _publish(TABLE_ROWS, TABLE_NAME, self.rows, self._row_partitions)
        self.rocksdb_memory = self.tables.rocksdb_memory()
        for kind, size in self.rocksdb_memory.items():
            ROCKSDB_MEMORY_BYTES.labels(kind).set(size)
        self._sample_rates()
        self.lag = await self._lags(owned)
        self._lag_partitions = _publish(
            CONSUMER_LAG, self.settings.topic, self.lag, self._lag_partitions
        )
        self.sampled_at = time.time()

    def owned(self) -> list[int]:
        """Partitions of the events topic this process owns now."""
        actives = self.app.assignor.assigned_actives()
        return sorted(tp.partition for tp in actives if tp.topic == self.settings.topic)

    def _in_recovery(self) -> bool:
        return (
            internals.recovery_remaining(self.app) is not None or self.tables.restoring is not None
        )

    def _remaining(self) -> int:
        """Changelog records the active partitions still have to restore."""
        return (internals.recovery_remaining(self.app) or 0) + (self.tables.restoring or 0)

    def _sample_rates(self) -> None:
        now = time.monotonic()
        totals = (now, counter_total(EVENTS), counter_total(HTTP_REQUESTS))
        if self._totals is not None and now > self._totals[0]:
            took = now - self._totals[0]
            self.rates = {
                "events_per_second": round((totals[1] - self._totals[1]) / took, 1),
                "http_requests_per_second": round((totals[2] - self._totals[2]) / took, 1),
            }
        self._totals = totals

    # -- consumer lag ----------------------------------------------------------------

    async def _lags(self, owned: list[int]) -> dict[int, int]:
        if not owned:
            return {}
        admin, offsets = await self._connect()
        tps = [TopicPartition(self.settings.topic, p) for p in owned]
        ends = await offsets.end_offsets(tps)
        committed = await admin.list_consumer_group_offsets(self.settings.app_id, partitions=tps)
        lags = {}
        for tp in tps:
            done = committed.get(tp)
            # -1: nothing committed yet, so everything in the partition is still to do.
            position = done.offset if done is not None and done.offset >= 0 else 0
            lags[tp.partition] = max(0, ends[tp] - position)
        return lags

    async def _connect(self) -> tuple[AIOKafkaAdminClient, AIOKafkaConsumer]:
        if self._admin is None or self._offsets is None:
            kafka = KafkaConfig.from_settings(self.settings)
            self._admin = kafka.admin()
            self._offsets = kafka.consumer(enable_auto_commit=False)
            await self._admin.start()
            await self._offsets.start()
        return self._admin, self._offsets

    async def _disconnect(self) -> None:
        admin, offsets, self._admin, self._offsets = self._admin, self._offsets, None, None
        if offsets is not None:
            await offsets.stop()
        if admin is not None:
            await admin.close()

    # -- /status -----------------------------------------------------------------------

    def status(self) -> dict[str, Any]:
        """The summary ``GET /status`` serves; lag and rows are from the last sample."""
        return {
            "role": "worker",
            "url": self.settings.url,
            "pid": os.getpid(),
            "instance_id": self.settings.instance_id,
            "uptime_seconds": round(time.time() - self.born, 1),
            "topic": self.settings.topic,
            "partitions": self.owned(),
            "partitions_total": self.settings.partitions,
            "lag": {"total": sum(self.lag.values()), "by_partition": _keyed(self.lag)},
            "recovery": {
                "in_progress": self._in_recovery(),
                "remaining_records": self._remaining(),
            },
            "table_rows": {"total": sum(self.rows.values()), "by_partition": _keyed(self.rows)},
            "rocksdb_memory_bytes": dict(self.rocksdb_memory),
            "connections": {
                "websocket": int(gauge_value(WS_CONNECTIONS)),
                "sse": int(gauge_value(SSE_CONNECTIONS)),
                "subscriptions": int(gauge_value(SUBSCRIPTIONS)),
            },
            "throughput": {**self.rates, "window_seconds": self.interval},
            "events": {
                outcome: int(counter_total(EVENTS, outcome=outcome))
                for outcome in ("applied", "noop", "replayed", "invalid")
            },
            "dlq_records": int(counter_total(DLQ_RECORDS)),
            "sampled_seconds_ago": (
                round(time.time() - self.sampled_at, 1) if self.sampled_at is not None else None
            ),
        }


def _keyed(values: dict[int, int]) -> dict[str, int]:
    return {str(p): v for p, v in sorted(values.items())}
