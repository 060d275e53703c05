"""The fold is exact under crashes: a model of the worker, its RocksDB and its changelog.

Each run folds random events (likes, unlikes, duplicates) of one partition in
random batches, as the agent does: rows pending in memory, then per flush one
atomic local write batch and the changelog records, counts before members,
each key once. It crashes at random points: pending rows are lost, the local
store keeps every flushed batch (SIGKILL does not lose the page cache), the
changelog keeps a prefix of the writes in send order, at least the writes of
acknowledged events, and the committed offset is at most the first
unacknowledged event. A restart either keeps the
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
    counts: dict[bytes, CountRow] = field(default_factory=dict)  # folded, not flushed
    members: dict[bytes, MemberRow] = field(default_factory=dict)
    changelog: list[tuple[bytes, bytes]] = field(default_factory=list)
    durable: int = 0  # how much of the changelog Kafka holds
    persisted: int = 0  # how much of it the local store knows it has
    committed: int = 0  # next source offset to read after a restart
    ends: list[int] = field(default_factory=list)  # changelog length once each event is sent

    def read(self, key: bytes) -> bytes | None:
        row = self.counts.get(key) or self.members.get(key)
        return encode_row(row) if row is not None else self.local.get(key)

    def process(self, offset: int, item: str, user: str, liked: bool) -> None:
        """Fold one event into the pending rows, as LikeTables does."""
        result = fold(
            decode_count(self.read(count_key(item))),
            decode_member(self.read(member_key(item, user))),
            liked,
            offset,
        )
        if result.count is not None:
            self.counts[count_key(item)] = result.count
        if result.member is not None:
            self.members[member_key(item, user)] = result.member

    def flush(self, events: int, budget: int) -> bool:
        """Write pending rows locally (one atomic batch), then send ``budget`` of them.

        True if every row was sent: the ``events`` folded since the last flush
        may then be acknowledged.
        """
        rows = [
            (key, encode_row(row)) for key, row in [*self.counts.items(), *self.members.items()]
        ]
        self.counts, self.members = {}, {}
        self.local.update(rows)
        self.changelog += rows[:budget]
        if budget < len(rows):
            return False
        self.ends += [len(self.changelog)] * events
        return True

    def crash(self, rng: random.Random, processed: int) -> None:
        """Kafka keeps a prefix with every acknowledged event's writes; commit lags acks."""
        self.counts, self.members = {}, {}
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

    def run_until_crash(self, rng: random.Random, events: list[tuple[str, str, bool]]) -> int:
        """Fold and flush in random batches; returns how many events were sent in full."""
        offset = self.committed
        while offset < len(events):
            batch = range(offset, min(len(events), offset + rng.choice([1, 1, 2, 3, 8])))
            for at in batch:
                self.process(at, *events[at])
            if rng.random() < 0.15:
                return offset  # killed before the flush: pending rows are lost
            budget = rng.choice([0, 1, 2, 99, 99, 99, 99, 99])  # rows sent before a SIGKILL
            if not self.flush(len(batch), budget):
                return offset
            offset = batch.stop
        return offset


def run(seed: int) -> None:
    rng = random.Random(seed)
    users, items = [f"u{i}" for i in range(4)], [f"i{i}" for i in range(3)]
    events: list[tuple[str, str, bool]] = []
    for _ in range(rng.randint(1, 40)):
        if events and rng.random() < 0.2:
            events.append(events[-1])  # duplicate
        else:
            events.append((rng.choice(items), rng.choice(users), rng.random() < 0.6))
    oracle = {(item, user): liked for item, user, liked in events}

    model = Model()
    for _ in range(rng.randint(0, 4)):  # crashes, each followed by a restart
        model.ends = model.ends[: model.committed]
        model.crash(rng, model.run_until_crash(rng, events))
        model.recover(lose_data_dir=rng.random() < 0.4)
    model.ends = model.ends[: model.committed]
    for offset in range(model.committed, len(events)):
        model.process(offset, *events[offset])
    model.flush(len(events) - model.committed, budget=len(events) * 2)
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
