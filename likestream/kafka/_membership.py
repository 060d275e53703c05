"""The worker's consumer-group member stays in the group whatever it owns (issue 18).

Kafka's client (aiokafka) takes the member out of the group once it has gone
``LIKESTREAM_MAX_POLL_INTERVAL_MS`` without a poll, and rejoins only from a poll. Faust
polls only with its flow on and partitions to fetch, and the events partitions are read
by the agent's feed, so a worker that owned no partition, or whose flow stayed stopped
that long, left the group silently and for good, still answering from its stale copy.
Here the member's poll is counted every second whatever the worker does
(``_internals.mark_member_polled``), and what Kafka's rule was for, a worker stuck in a
rebalance, is caught instead by ``/healthz``: it fails once faust's flow has been
stopped for the interval (the bulk restore apart, which runs with it stopped), so that
Kubernetes restarts the worker.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from typing import Any, Protocol

import faust

from likestream.kafka import _internals as internals

__all__ = ["Membership"]


class _Restoring(Protocol):
    @property
    def restoring(self) -> int | None: ...


class Membership:
    def __init__(
        self,
        app: faust.App,
        tables: _Restoring,
        max_poll_interval_s: float,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.app = app
        self.clock = clock
        self.tables = tables
        self.max_poll_interval_s = max_poll_interval_s
        # Well within the interval; one call queued on the consumer thread each time.
        self.every_s = min(1.0, max_poll_interval_s / 4)
        self._stopped_since: float | None = None

    def install(self) -> None:
        @self.app.task  # type: ignore[untyped-decorator]
        async def keep_member_polling() -> None:
            while True:
                await internals.mark_member_polled(self.app)
                self.stuck_s()  # notes when the flow stopped
                await asyncio.sleep(self.every_s)

    def stuck_s(self) -> float:
        """How long faust's flow has been stopped, the bulk restore apart (0: flowing)."""
        consumer: Any = self.app.consumer  # faust's Consumer; ConsumerT lacks flow_active
        if consumer.flow_active or self.tables.restoring is not None:
            self._stopped_since = None
            return 0.0
        now = self.clock()
        if self._stopped_since is None:
            self._stopped_since = now
        return now - self._stopped_since

    def problem(self) -> str | None:
        """Why the worker should be restarted (``/healthz``), or None."""
        stuck = self.stuck_s()
        if stuck < self.max_poll_interval_s:
            return None
        return (
            f"stuck in a rebalance: faust's flow has been stopped for {stuck:.0f} s "
            f"(LIKESTREAM_MAX_POLL_INTERVAL_MS: {self.max_poll_interval_s:.0f} s)"
        )
