"""The fold is exact under crashes: a model of the worker, its RocksDB and its changelog.

Each run folds random events (likes, unlikes, duplicates) of one partition and
crashes at random points: the local store keeps every write made (SIGKILL
does not lose the page cache), the changelog keeps a prefix of the writes in
send order, at least the writes of acknowledged events, and the committed
offset is at most the first unacknowledged event. A restart either keeps the
data dir (recovery merges the changelog tail from the persisted offset) or loses
it (recovery replays the whole changelog), then replays from the committed
offset. Afterwards both the local state and a state rebuilt from the changelog
must equal the oracle.
"""

from __future__ import annotations

import random
from dataclasses import dataclass, field

import pytest

from likestream.agents import fold
from likestream.tables import CountRow, MemberRow
from likestream.tables._rows import (
    count_key,
    decode_count,
    decode_member,
    encode_row,
    member_key,
    supersedes,
)


@dataclass
class Model:
    local: dict[bytes, bytes] = field(default_factory=dict)
    changelog: list[tuple[bytes, bytes]] = field(default_factory=list)
    durable: int = 0  # how much of the changelog Kafka holds
    persisted: int = 0  # how much of it the local store knows it has
    committed: int = 0  # next source offset to read after a restart
    ends: list[int] = field(default_factory=list)  # changelog length after each event

    def write(self, key: bytes, row: CountRow | MemberRow) -> None:
        self.local[key] = encode_row(row)
        self.changelog.append((key, encode_row(row)))

    def process(self, offset: int, item: str, user: str, liked: bool, budget: int) -> bool:
        """Fold one event, killed after ``budget`` writes. True if it finished."""
        result = fold(
            decode_count(self.local.get(count_key(item))),
            decode_member(self.local.get(member_key(item, user))),
            liked,
            offset,
        )
        writes = [
            (key, row)
            for key, row in (
                (count_key(item), result.count),
                (member_key(item, user), result.member),
            )
            if row is not None
        ]
        for key, row in writes[:budget]:
            self.write(key, row)
        return budget >= len(writes)

    def crash(self, rng: random.Random, processed: int) -> None:
        """Kafka keeps a prefix with every acknowledged event's writes; commit lags acks."""
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
        for key, value in self.changelog[self.persisted :]:
            if supersedes(value, self.local.get(key)):
                self.local[key] = value
        self.persisted = len(self.changelog)


def run(seed: int) -> None:
    rng = random.Random(seed)
    users, items = [f"u{i}" for i in range(4)], [f"i{i}" for i in range(3)]
    events = []
    for _ in range(rng.randint(1, 40)):
        if events and rng.random() < 0.2:
            events.append(events[-1])  # duplicate
        else:
            events.append((rng.choice(items), rng.choice(users), rng.random() < 0.6))
    oracle = {(item, user): liked for item, user, liked in events}

    model = Model()
    for _ in range(rng.randint(0, 4)):  # crashes, each followed by a restart
        model.ends = model.ends[: model.committed]
        processed = model.committed
        for offset in range(model.committed, len(events)):
            budget = rng.choice([0, 1, 9, 9, 9, 9, 9, 9])  # writes before a SIGKILL
            if not model.process(offset, *events[offset], budget=budget):
                break
            model.ends.append(len(model.changelog))
            processed = offset + 1
        model.crash(rng, processed)
        model.recover(lose_data_dir=rng.random() < 0.4)
    model.ends = model.ends[: model.committed]
    for offset in range(model.committed, len(events)):
        model.process(offset, *events[offset], budget=9)
    model.durable = len(model.changelog)

    rebuilt: dict[bytes, bytes] = {}
    for key, value in model.changelog:
        if supersedes(value, rebuilt.get(key)):
            rebuilt[key] = value
    for state in (model.local, rebuilt):
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
