"""Per-user token buckets for the write API.

Each user has a bucket of ``burst`` tokens that refills at ``rate`` tokens per
second; a write takes one token or is refused with the seconds until the next
one. Buckets live in this process's memory (the README says what that means
with several processes). A full bucket is the same as none, so full ones are
dropped when there are many: memory follows the users active in the last
``burst / rate`` seconds, and dropping never loosens a limit.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass

__all__ = ["RateLimiter"]

Clock = Callable[[], float]


@dataclass(slots=True)
class _Bucket:
    tokens: float
    stamp: float


class RateLimiter:
    def __init__(
        self,
        rate: float,
        burst: int,
        clock: Clock = time.monotonic,
        sweep_above: int = 10_000,
    ) -> None:
        self.rate = rate
        self.burst = burst
        self._clock = clock
        self._buckets: dict[str, _Bucket] = {}
        self._sweep_at = self._sweep_above = sweep_above

    def __len__(self) -> int:
        return len(self._buckets)

    def take(self, user_id: str) -> float:
        """Take a token for ``user_id``: 0.0 when allowed, else seconds until one is free."""
        now = self._clock()
        bucket = self._buckets.get(user_id)
        if bucket is None:
            if len(self._buckets) >= self._sweep_at:
                self._sweep(now)
            bucket = self._buckets[user_id] = _Bucket(float(self.burst), now)
        self._refill(bucket, now)
        if bucket.tokens >= 1.0:
            bucket.tokens -= 1.0
            return 0.0
        return (1.0 - bucket.tokens) / self.rate

    def _refill(self, bucket: _Bucket, now: float) -> None:
        # max(): a clock that steps back never takes tokens away.
        elapsed = max(0.0, now - bucket.stamp)
        bucket.tokens = min(float(self.burst), bucket.tokens + elapsed * self.rate)
        bucket.stamp = now

    def _sweep(self, now: float) -> None:
        for user, bucket in list(self._buckets.items()):
            self._refill(bucket, now)
            if bucket.tokens >= self.burst:
                del self._buckets[user]
        # When most users are still active, sweep again only after doubling,
        # so each sweep's cost is spread over as many new users.
        self._sweep_at = max(self._sweep_above, 2 * len(self._buckets))
