"""Trending windows and top items against the oracle: controlled event times, late events,
several partitions, rebuilds from the rows, and the merge across partitions."""

from __future__ import annotations

import random

import pytest
from oracle import TrendingOracle
from prometheus_client import REGISTRY

from likestream.agents import _trending as trending_module
from likestream.agents import fold
from likestream.agents._trending import MAX_TOP, PartitionTrending
from likestream.config._settings import SettingsError, load_settings
from likestream.domain._schema import LikeEvent
from likestream.domain._top import PartitionTop, encode_top, merge_tops, parse_top
from likestream.domain._window_spec import clamp_event_time, parse_windows
from likestream.tables import NO_WATERMARK
from likestream.tables._rows import (
    count_key,
    decode_count,
    decode_member,
    encode_row,
    member_key,
)
from likestream.tables._windows import (
    decode_watermark,
    decode_window_row,
    item_of_window_key,
    watermark_key,
)

WINDOWS = parse_windows("1m:10s,10m:1m,1h:5m")
LATENESS = 15_000
T0 = 1_764_000_000_000  # event times are controlled, never the clock


class Partition:
    """One partition's state table as a dict, and its trending index, fed like the agent."""

    def __init__(self, number: int) -> None:
        self.number = number
        self.store: dict[bytes, bytes] = {}
        self.offset = 0
        self.trending = self.rebuilt()

    def rebuilt(self) -> PartitionTrending:
        raw = self.store.get(watermark_key(self.number))
        stream = decode_watermark(raw) if raw else NO_WATERMARK
        rows = {
            item_of_window_key(k): decode_window_row(v)
            for k, v in self.store.items()
            if k.startswith(b"w/")
        }
        return PartitionTrending(self.number, WINDOWS, LATENESS, stream, rows)

    def apply(self, event: LikeEvent, event_ms: int) -> None:
        item, user = event.item_id, event.user_id
        before = decode_member(self.store.get(member_key(item, user)))
        result = fold(
            decode_count(self.store.get(count_key(item))), before, event.liked, self.offset
        )
        if result.count is not None:
            self.store[count_key(item)] = encode_row(result.count)
        rows = self.trending.apply(item, result, before, event.liked, self.offset, event_ms)
        rows += self.trending.seal()
        for key, value in rows:
            if value is None:
                del self.store[key]
            else:
                self.store[key] = value
        if result.member is not None:
            self.store[member_key(item, user)] = encode_row(result.member)
        self.offset += 1


def late_count(window: str) -> float:
    value = REGISTRY.get_sample_value("likestream_trending_late_events_total", {"window": window})
    return value or 0.0


def stream(rng: random.Random, count: int, items: int, users: int) -> list[tuple[LikeEvent, int]]:
    """Events with event times that mostly advance, some jitter, some late, some duplicated."""
    out: list[tuple[LikeEvent, int]] = []
    now = T0
    for _ in range(count):
        roll = rng.random()
        if out and roll < 0.08:
            out.append(out[-1])  # an exact duplicate
            continue
        now += rng.choice([0, 5, 200, 1_000, 4_000, 20_000, 90_000])
        # Late (within the lateness or far beyond) or nearly in order.
        at = now - rng.randint(0, 30 * 60_000 if roll < 0.2 else 3_000)
        item = f"i{min(int(rng.paretovariate(1.1)) - 1, items - 1)}"
        action = "like" if rng.random() < 0.7 else "unlike"
        out.append((LikeEvent(f"u{rng.randrange(users)}", item, action), at))  # type: ignore[arg-type]
    return out


def check(parts: list[Partition], oracle: TrendingOracle, limit: int) -> None:
    tops: list[PartitionTop] = []
    for part in parts:
        for top in part.trending.tops():
            assert [list(p) for p in top.items[:limit]] == oracle.top(
                top.window, limit, [part.number]
            ), (top.window, part.number)
            tops.append(top)
    for window in WINDOWS:
        merged = merge_tops(window, tops, limit)
        assert [list(p) for p in merged] == oracle.top(window.name, limit), window.name


@pytest.mark.parametrize("seed", range(40))
def test_windows_and_tops_match_the_oracle(seed: int) -> None:
    run(seed, [1, 10, MAX_TOP])


def test_candidates_stay_right_when_few_are_kept(monkeypatch: pytest.MonkeyPatch) -> None:
    # Few candidates per window: evictions, bounds and re-rankings happen all the time.
    monkeypatch.setattr(trending_module, "KEEP", 10)
    for seed in range(100, 160):
        run(seed, [10])


def run(seed: int, limits: list[int]) -> None:
    rng = random.Random(seed)
    parts = [Partition(p) for p in range(3)]
    oracle = TrendingOracle(WINDOWS, LATENESS)
    items = rng.choice([5, 40, 400])  # 400 items: more than the candidates kept
    for n, (event, at) in enumerate(stream(rng, rng.randint(1, 1500), items, 60)):
        partition = int(event.item_id[1:]) % len(parts)
        parts[partition].apply(event, at)
        oracle.apply(partition, event, at)
        if n % 97 == 0:
            check(parts, oracle, rng.choice(limits))
    check(parts, oracle, max(limits))
    for part in parts:  # as after an assignment: the index rebuilt from the rows
        part.trending = part.rebuilt()
    check(parts, oracle, rng.choice(limits))


def test_late_events_and_expiry() -> None:
    part = Partition(0)
    oracle = TrendingOracle(WINDOWS, LATENESS)
    late = {w.name: late_count(w.name) for w in WINDOWS}
    timeline = [
        ("a", "x", T0),
        ("b", "x", T0 + 90_000),  # 1m: the like at T0 has left the window
        ("c", "y", T0 + 90_000 - 14_000),  # late, within the lateness: counted
        ("d", "y", T0 - 20 * 60_000),  # too late for 1m and 10m, counted in 1h
    ]
    for user, item, at in timeline:
        event = LikeEvent(user, item, "like")
        part.apply(event, at)
        oracle.apply(0, event, at)
    check([part], oracle, 10)
    top = {t.window: t.items for t in part.trending.tops()}
    assert top == {
        "1m": (("x", 1), ("y", 1)),
        "10m": (("x", 2), ("y", 1)),
        "1h": (("x", 2), ("y", 2)),
    }
    assert {w: late_count(w) - n for w, n in late.items()} == {"1m": 1, "10m": 1, "1h": 0}
    # Two hours later every window is empty and every window row is deleted.
    event = LikeEvent("e", "z", "unlike")  # a no-op: only moves the stream time
    part.apply(event, T0 + 2 * 3_600_000)
    assert [t.items for t in part.trending.tops()] == [(), (), ()]
    assert not [k for k in part.store if k.startswith(b"w/")]


def test_unlike_of_a_like_takes_one_back_and_duplicates_gain_nothing() -> None:
    part = Partition(0)
    for user, action in [("a", "like"), ("a", "like"), ("b", "like"), ("a", "unlike")]:
        part.apply(LikeEvent(user, "p", action), T0)  # type: ignore[arg-type]
    assert {t.window: t.items for t in part.trending.tops()}["1m"] == (("p", 1),)


def test_top_records_round_trip() -> None:
    top = PartitionTop("1h", 3, 17, T0, (("post:1", 4), ("post:2", 1)))
    assert parse_top(encode_top(top)) == top
    assert parse_top(b"{}") is None
    assert (
        parse_top(
            b'{"window": "1h", "partition": 0, "stamp": 1, "watermark": 1, '
            b'"items": [["bad id!", 1]]}'
        )
        is None
    )


def test_window_settings() -> None:
    assert [(w.name, w.length_ms, w.buckets) for w in load_settings().windows] == [
        ("1m", 60_000, 6),
        ("1h", 3_600_000, 12),
        ("24h", 86_400_000, 24),
    ]
    assert clamp_event_time(None, 5, 10) == 5
    assert clamp_event_time(100, 5, 10) == 15  # a clock far ahead is held back


@pytest.mark.parametrize(
    ("name", "value"),
    [
        ("TRENDING_WINDOWS", "1h"),
        ("TRENDING_WINDOWS", "1h:7m"),
        ("TRENDING_WINDOWS", "1h:5m,1h:10m"),
        ("TRENDING_WINDOWS", "1x:1s"),
        ("TRENDING_WINDOWS", "1h:1s"),
        ("TRENDING_LATENESS_MS", "-1"),
        ("TRENDING_TOPIC", "bad topic"),
    ],
)
def test_bad_trending_settings_name_the_variable(
    monkeypatch: pytest.MonkeyPatch, name: str, value: str
) -> None:
    monkeypatch.setenv(f"LIKESTREAM_{name}", value)
    with pytest.raises(SettingsError, match=f"LIKESTREAM_{name}"):
        load_settings()
