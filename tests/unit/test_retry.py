"""Start-up's retry: tries again while the error is one to wait out, then gives up saying so."""

from __future__ import annotations

import logging

import pytest

from likestream._retry import retrying


class Away(Exception):
    pass


async def test_retries_until_it_succeeds() -> None:
    calls: list[int] = []

    async def attempt() -> str:
        calls.append(1)
        if len(calls) < 2:
            raise Away("the broker restarts")
        return "up"

    assert await retrying("creating topics", attempt, (Away,)) == "up"
    assert len(calls) == 2


async def test_gives_up_after_the_limit_saying_so(caplog: pytest.LogCaptureFixture) -> None:
    async def attempt() -> None:
        raise Away("the broker is down")

    # The first wait (0.5 s) would end past a 0.1 s limit: it gives up at once.
    with caplog.at_level(logging.WARNING), pytest.raises(Away):
        await retrying("creating topics", attempt, (Away,), limit_s=0.1)
    assert "creating topics: the broker is down; giving up after 0s" in caplog.text


async def test_other_errors_are_not_retried() -> None:
    calls: list[int] = []

    async def attempt() -> None:
        calls.append(1)
        raise ValueError("a bad setting")

    with pytest.raises(ValueError, match="a bad setting"):
        await retrying("creating topics", attempt, (Away,))
    assert calls == [1]
