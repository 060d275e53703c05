"""The fold is exact under crashes: a model of the worker, its RocksDB and its changelog.

Each run folds random events (likes, unlikes, duplicates; event times mostly
advancing, some late) of one partition, with its trending windows, in random
batches, as the agent does: rows pending in memory, then per flush one atomic
local write batch and the changelog records, counts, then trending rows, then
members, each key once. It crashes at random points: pending rows and the
in-memory trending index are lost, the local store keeps every flushed batch
(SIGKILL does not lose the page cache), the changelog keeps a prefix of the
writes in send order, at least the writes of acknowledged events, and the
committed offset is at most the first unacknowledged event. A restart either
keeps the data dir (recovery merges the changelog tail from the persisted
offset) or loses it (recovery replays the whole changelog), then replays from
the committed offset. Afterwards both the local state and a state rebuilt from
the changelog must equal the oracle: counts, memberships and the likes gained in
each window. Window rows may be deleted (tombstones): recovery does not apply
tombstones, as ``tables/_table.py`` does not, and the in-memory index is rebuilt
from the rows.
"""

from __future__ import annotations

import random
from dataclasses import dataclass, field

import pytest
from oracle import TrendingOracle

from likestream._schema import LikeEvent
from likestream._window_spec import parse_windows
from likestream.agents import fold
from likestream.agents._trending import PartitionTrending
from likestream.tables import CountRow, MemberRow
from likestream.tables._rows import (
    count_key,
    decode_count,
    decode_member,
    encode_row,
    member_key,
    supersedes,
)
from likestream.tables._windows import (
    decode_watermark,
    decode_window_row,
    item_of_window_key,
    watermark_key,
)

# Small windows, so that a few dozen events move buckets out and delete rows.
WINDOWS = parse_windows("4s:1s,20s:5s")
LATENESS = 1500

Event = tuple[str, str, bool, int]  # item, user, liked, event time (ms)


def windows_of(state: dict[bytes, bytes]) -> PartitionTrending:
    """The trending index as a worker rebuilds it from the rows."""
    rows = {item_of_window_key(k): decode_window_row(v) for k, v in state.items() if k[:2] == b"w/"}
    stream = decode_watermark(state.get(watermark_key(0)))
    return PartitionTrending(0, WINDOWS, LATENESS, stream, rows)


@dataclass
class Model:
    local: dict[bytes, bytes] = field(default_factory=dict)
    counts: dict[bytes, CountRow] = field(default_factory=dict)  # folded, not flushed
    windows_rows: dict[bytes, bytes | None] = field(default_factory=dict)
    members: dict[bytes, MemberRow] = field(default_factory=dict)
    changelog: list[tuple[bytes, bytes | None]] = field(default_factory=list)
    durable: int = 0  # how much of the changelog Kafka holds
    persisted: int = 0  # how much of it the local store knows it has
    committed: int = 0  # next source offset to read after a restart
    ends: list[int] = field(default_factory=list)  # changelog length once each event is sent
    windows: PartitionTrending = field(default_factory=lambda: windows_of({}))

    def read(self, key: bytes) -> bytes | None:
        row = self.counts.get(key) or self.members.get(key)
        return encode_row(row) if row is not None else self.local.get(key)

    def process(self, offset: int, item: str, user: str, liked: bool, at: int) -> None:
        """Fold one event into the pending rows, as ``agents/_likes.py`` does."""
        before = decode_member(self.read(member_key(item, user)))
        result = fold(decode_count(self.read(count_key(item))), before, liked, offset)
        if result.count is not None:
            self.counts[count_key(item)] = result.count
        self.windows_rows.update(self.windows.apply(item, result, before, liked, offset, at))
        if result.member is not None:
            self.members[member_key(item, user)] = result.member

    def flush(self, events: int, budget: int) -> bool:
        """Write pending rows locally (one atomic batch), then send ``budget`` of them.

        True if every row was sent: the ``events`` folded since the last flush
        may then be acknowledged.
        """
        self.windows_rows.update(self.windows.seal())
        rows: list[tuple[bytes, bytes | None]]
        rows = [(key, encode_row(row)) for key, row in self.counts.items()]
        rows += self.windows_rows.items()
        rows += [(key, encode_row(row)) for key, row in self.members.items()]
        self.counts, self.windows_rows, self.members = {}, {}, {}
        for key, value in rows:
            if value is None:
                self.local.pop(key, None)
            else:
                self.local[key] = value
        self.changelog += rows[:budget]
        if budget < len(rows):
            return False
        self.ends += [len(self.changelog)] * events
        return True

    def crash(self, rng: random.Random, processed: int) -> None:
        """Kafka keeps a prefix with every acknowledged event's writes; commit lags acks."""
        self.counts, self.windows_rows, self.members = {}, {}, {}
        acked = rng.randint(self.committed, processed)
        floor = self.ends[acked - 1] if acked else 0
        self.durable = rng.randint(max(floor, self.durable), len(self.changelog))
        del self.changelog[self.durable :]
        self.persisted = rng.randint(min(self.persisted, self.durable), self.durable)
        self.committed = rng.randint(self.committed, acked)
        del self.ends[self.committed :]

    def recover(self, lose_data_dir: bool) -> None:
        if lose_data_dir:
            self.local, self.persisted = {}, 0
        self.local = replayed(self.changelog[self.persisted :], self.local)
        self.persisted = len(self.changelog)
        self.windows = windows_of(self.local)

    def run_until_crash(self, rng: random.Random, events: list[Event]) -> int:
        """Fold and flush in random batches; returns how many events were sent in full."""
        offset = self.committed
        while offset < len(events):
            batch = range(offset, min(len(events), offset + rng.choice([1, 1, 2, 3, 8])))
            for at in batch:
                self.process(at, *events[at])
            if rng.random() < 0.15:
                return offset  # killed before the flush: pending rows are lost
            budget = rng.choice([0, 1, 2, 3, 99, 99, 99, 99, 99])  # rows sent before a SIGKILL
            if not self.flush(len(batch), budget):
                return offset
            offset = batch.stop
        return offset


def replayed(
    records: list[tuple[bytes, bytes | None]], state: dict[bytes, bytes]
) -> dict[bytes, bytes]:
    """Changelog recovery: a row replaces an older one only; tombstones are not applied."""
    for key, value in records:
        if value is not None and supersedes(value, state.get(key)):
            state[key] = value
    return state


def run(seed: int) -> None:
    rng = random.Random(seed)
    users, items = [f"u{i}" for i in range(4)], [f"i{i}" for i in range(3)]
    events: list[Event] = []
    now = 0
    for _ in range(rng.randint(1, 40)):
        if events and rng.random() < 0.2:
            events.append(events[-1])  # duplicate
        else:
            now += rng.choice([0, 300, 1000, 3000])
            at = now - rng.choice([0, 0, 0, 1000, 6000])  # some late, some far too late
            events.append((rng.choice(items), rng.choice(users), rng.random() < 0.6, at))
    oracle = {(item, user): liked for item, user, liked, _ in events}
    trending = TrendingOracle(WINDOWS, LATENESS)
    for item, user, liked, at in events:
        trending.apply(0, LikeEvent(user, item, "like" if liked else "unlike"), at)

    model = Model()
    for _ in range(rng.randint(0, 4)):  # crashes, each followed by a restart
        model.ends = model.ends[: model.committed]
        model.crash(rng, model.run_until_crash(rng, events))
        model.recover(lose_data_dir=rng.random() < 0.4)
    model.ends = model.ends[: model.committed]
    for offset in range(model.committed, len(events)):
        model.process(offset, *events[offset])
    model.flush(len(events) - model.committed, budget=len(events) * 9)
    model.durable = len(model.changelog)

    rebuilt = replayed(model.changelog, {})
    for state in (model.local, rebuilt):
        ranked = windows_of(state).rankings
        for window in WINDOWS:
            totals = {i: n for i, n in ranked[window.name].totals.items() if n}
            assert totals == trending.totals(window.name, 0), (seed, window.name)
        for item in items:
            want = sum(1 for (i, _), liked in oracle.items() if i == item and liked)
            assert decode_count(state.get(count_key(item))).likes == want, (seed, item)
        for (item, user), liked in oracle.items():
            assert decode_member(state.get(member_key(item, user))).liked == liked, (seed, item)


@pytest.mark.parametrize("block", range(20))
def test_exact_under_random_crashes(block: int) -> None:
    for seed in range(block * 200, (block + 1) * 200):
        run(seed)


def test_fold_cases() -> None:
    none = CountRow(0, -1), MemberRow(False, -1)
    assert fold(*none, liked=True, offset=5).count == CountRow(1, 5)
    assert fold(*none, liked=False, offset=5).outcome == "noop"
    liked = CountRow(3, 4), MemberRow(True, 4)
    assert fold(*liked, liked=True, offset=5).outcome == "noop"
    assert fold(*liked, liked=False, offset=5).count == CountRow(2, 5)
    # Replay of offset 4: already counted; the rows are written again unchanged.
    assert fold(*liked, liked=True, offset=4) == fold(*liked, liked=True, offset=4)
    assert fold(*liked, liked=True, offset=4).outcome == "replayed"
    # Crash between the count and the member row of offset 4: finish the member.
    half = CountRow(3, 4), MemberRow(False, 2)
    assert fold(*half, liked=True, offset=4).member == MemberRow(True, 4)
