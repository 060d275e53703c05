"""``likestream produce``: events from arguments, a JSON-lines file, stdin, or a synthetic load."""

from __future__ import annotations

import asyncio
import bisect
import itertools
import random
import sys
import time
from collections.abc import Iterable, Iterator
from typing import IO

from likestream.client import LikeClient, new_event
from likestream.domain._schema import Action, InvalidEvent, LikeEvent, event_from_json
from likestream.kafka._factory import KafkaConfig
from likestream.runtime._progress import progress_bar

__all__ = ["produce", "read_events", "synthetic_events"]

WINDOW = 20_000  # unconfirmed sends in flight before waiting for acknowledgements
BAR_FROM = 1000  # smaller loads take no time worth a bar
BAR_STEP = 500  # events between two bar updates: an update per event would cost more


def read_events(lines: IO[str]) -> Iterator[LikeEvent]:
    """Events from JSON lines; stops with a message naming the first bad line."""
    for number, line in enumerate(lines, 1):
        if not line.strip():
            continue
        try:
            yield event_from_json(line)
        except InvalidEvent as exc:
            raise InvalidEvent(f"line {number}: {exc}") from None


def synthetic_events(
    count: int, items: int, users: int, seed: int = 1, skew: float = 1.0, unlike_ratio: float = 0.3
) -> Iterator[LikeEvent]:
    """``count`` events over ``items`` Zipf-skewed items and ``users`` uniform users."""
    rng = random.Random(seed)
    cumulative = list(itertools.accumulate(1.0 / (rank**skew) for rank in range(1, items + 1)))
    total = cumulative[-1]
    for _ in range(count):
        item = bisect.bisect_left(cumulative, rng.random() * total)
        action: Action = "unlike" if rng.random() < unlike_ratio else "like"
        yield new_event(f"u{rng.randrange(users)}", f"item:{item}", action)


async def produce(
    kafka: KafkaConfig, topic: str, events: Iterable[LikeEvent], total: int | None = None
) -> int:
    """Publish ``events`` and wait for every acknowledgement; returns how many were sent.
    With ``total`` (a synthetic load), a progress bar on a terminal; a summary line on
    stderr in any case."""
    start = time.perf_counter()
    sent = 0
    shown = total if total is not None and total >= BAR_FROM else None
    async with LikeClient(kafka, topic, linger_ms=10) as client:
        with progress_bar("producing", total=shown, unit="events") as bar:
            pending: list[asyncio.Future[object]] = []
            for event in events:
                pending.append(await client.send(event))
                sent += 1
                if len(pending) >= WINDOW:
                    await asyncio.gather(*pending)
                    pending.clear()
                if shown is not None and sent % BAR_STEP == 0:
                    bar.update(sent)
            await asyncio.gather(*pending)
            bar.update(sent)
    elapsed = time.perf_counter() - start
    print(
        f"produced {sent} events in {elapsed:.2f}s: {sent / max(elapsed, 1e-9):,.0f} events/s",
        file=sys.stderr,
    )
    return sent
