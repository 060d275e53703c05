"""The per-user token bucket, on an injected clock (no sleeps)."""

from __future__ import annotations

import pytest
from fakes import Clock

from likestream.web import RateLimiter


@pytest.fixture
def clock() -> Clock:
    return Clock(1000.0)


def test_burst_then_refused_with_the_wait(clock: Clock) -> None:
    limiter = RateLimiter(rate=5, burst=20, clock=clock)
    assert [limiter.take("alice") for _ in range(20)] == [0.0] * 20
    assert limiter.take("alice") == pytest.approx(0.2)
    clock.now += 0.1
    assert limiter.take("alice") == pytest.approx(0.1)  # refused tries cost nothing
    clock.now += 0.1
    assert limiter.take("alice") == 0.0
    assert limiter.take("alice") == pytest.approx(0.2)


def test_sustained_rate_is_the_refill_rate(clock: Clock) -> None:
    limiter = RateLimiter(rate=5, burst=20, clock=clock)
    allowed = 0
    for _ in range(10 * 100):  # 10 s in steps of 10 ms, trying every step
        allowed += limiter.take("alice") == 0.0
        clock.now += 0.01
    assert abs(allowed - (20 + 5 * 10)) <= 1  # the burst, then 5 per second


def test_users_have_their_own_buckets(clock: Clock) -> None:
    limiter = RateLimiter(rate=1, burst=1, clock=clock)
    assert limiter.take("alice") == 0.0
    assert limiter.take("alice") > 0
    assert limiter.take("bob") == 0.0


def test_refill_stops_at_burst(clock: Clock) -> None:
    limiter = RateLimiter(rate=1, burst=3, clock=clock)
    limiter.take("alice")
    clock.now += 3600
    assert [limiter.take("alice") == 0.0 for _ in range(4)] == [True, True, True, False]


def test_clock_going_back_does_not_take_tokens(clock: Clock) -> None:
    limiter = RateLimiter(rate=1, burst=2, clock=clock)
    assert limiter.take("alice") == 0.0
    clock.now -= 100
    assert limiter.take("alice") == 0.0
    assert limiter.take("alice") == pytest.approx(1.0)


def test_idle_users_are_forgotten_but_active_ones_kept(clock: Clock) -> None:
    limiter = RateLimiter(rate=1, burst=2, clock=clock, sweep_above=10)
    for user in range(9):
        limiter.take(f"idle{user}")
    limiter.take("busy")
    limiter.take("busy")
    clock.now += 1.5  # idle buckets are full again (1 + 1.5 >= 2), busy's is not (0 + 1.5)
    limiter.take("new")  # the 11th user: over sweep_above, so full buckets go
    assert len(limiter) == 2
    assert limiter.take("busy") == 0.0
    assert limiter.take("busy") > 0  # its limit survived the sweep
