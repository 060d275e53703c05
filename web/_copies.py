"""How current this process's copies of table partitions are (standbys, mid-rebalance).

A copy applies its changelog partition in order, so it holds every change the
changelog had when its end offset was no further than what the copy has applied.
Every :data:`SAMPLE_SECONDS` the end offsets of the held changelog partitions are
read from Kafka and kept with the time they were read; the age of a copy that has
applied up to offset ``a`` is then the time since the last sample whose end was at
most ``a + 1``. That is the changelog's counterpart of the ``like-counts`` replica's
age (``_replica.py``): an event is committed only once its changelog records are
durable, so a copy of that age holds every event committed up to then.
"""

from __future__ import annotations

import time
from collections import deque

from aiokafka import AIOKafkaConsumer, TopicPartition

from likestream.domain._retry import poll_forever
from likestream.kafka._factory import KafkaConfig
from likestream.tables import StateReader

__all__ = ["SAMPLE_SECONDS", "CopyClock", "sample_forever"]

SAMPLE_SECONDS = 0.25


class CopyClock:
    def __init__(self, keep_seconds: float) -> None:
        self._keep = max(1, round(keep_seconds / SAMPLE_SECONDS) + 1)
        self._ends: dict[tuple[str, int], deque[tuple[float, int]]] = {}

    def sampled(self, changelog: tuple[str, int], at: float, end: int) -> None:
        samples = self._ends.setdefault(changelog, deque(maxlen=self._keep))
        samples.append((at, end))

    def age(
        self, changelog: tuple[str, int], applied: int, now: float | None = None
    ) -> float | None:
        """Seconds since the copy that applied up to ``applied`` was complete; None when
        that is longer ago than the samples kept."""
        for at, end in reversed(self._ends.get(changelog, ())):
            if end <= applied + 1:
                return max(0.0, (time.time() if now is None else now) - at)
        return None


async def sample_forever(kafka: KafkaConfig, state: StateReader, clock: CopyClock) -> None:
    """Sample the end offsets of the changelog partitions ``state`` holds until cancelled;
    connected only once it holds some (a gateway holds none: no consumer)."""

    async def step(consumer: AIOKafkaConsumer) -> None:
        tps = [TopicPartition(t, p) for t, p in state.held_changelogs()]
        if tps:
            at = time.time()
            ends = await consumer.end_offsets(tps)
            for tp, end in ends.items():
                clock.sampled((tp.topic, tp.partition), at, end)

    await state.holding()
    await poll_forever(
        "changelog end offsets",
        SAMPLE_SECONDS,
        kafka.consumer,
        AIOKafkaConsumer.start,
        AIOKafkaConsumer.stop,
        step,
    )
