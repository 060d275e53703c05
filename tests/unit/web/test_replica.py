"""The like-counts copy: bounded in memory, exact from disk, newer stamps only, and its
directory swept of copies left by dead processes."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

from likestream.runtime._metrics import COUNT_CACHE_HITS, COUNT_CACHE_MISSES
from likestream.tables import CountRow
from likestream.web._replica import Replica, replica_dir


def value(metric: object) -> float:
    return metric._value.get()  # type: ignore[attr-defined,no-any-return]


def test_memory_holds_the_hot_counts_and_disk_answers_the_rest_exactly() -> None:
    replica = Replica(4, cache_items=100)
    for n in range(1_000):
        assert replica.update(f"item:{n}", CountRow(n, 10 * n))
    assert replica.cached() == 100  # the 100 newest
    misses, hits = value(COUNT_CACHE_MISSES), value(COUNT_CACHE_HITS)
    assert replica.get("item:3") == CountRow(3, 30)  # evicted long ago: from disk
    assert value(COUNT_CACHE_MISSES) == misses + 1
    assert replica.get("item:3") == CountRow(3, 30)  # read back into memory
    assert value(COUNT_CACHE_HITS) == hits + 1
    assert replica.cached() == 100
    assert all(replica.get(f"item:{n}") == CountRow(n, 10 * n) for n in range(1_000))


def test_an_evicted_count_still_refuses_older_stamps() -> None:
    replica = Replica(1, cache_items=1)
    replica.update("a", CountRow(5, 50))
    replica.update("b", CountRow(1, 1))  # evicts a from memory
    assert not replica.update("a", CountRow(4, 40))  # older than what disk has
    assert not replica.update("a", CountRow(5, 50))  # re-published: same stamp
    assert replica.update("a", CountRow(6, 51))
    assert replica.get("a") == CountRow(6, 51)


def test_never_liked_items_are_0_once_caught_up_and_take_no_memory() -> None:
    replica = Replica(2, cache_items=1_000)
    item = "never:1"
    assert replica.known(item) is None  # nothing read yet: not known to be 0
    assert replica.count(item) is None
    replica.caught_up(replica.partition(item), 1.0)
    assert replica.known(item) == CountRow(0, -1)
    assert replica.count(item) == CountRow(0, -1)
    assert replica.cached() == 0


def test_a_copy_of_its_own_is_wiped_and_copies_of_dead_processes_are_swept(
    tmp_path: Path,
) -> None:
    dead = subprocess.run(
        [sys.executable, "-c", "import os; print(os.getpid())"],
        capture_output=True,
        text=True,
        check=True,
    )
    left = tmp_path / f"replica-{dead.stdout.strip()}"
    left.mkdir()
    (left / "000001.sst").write_bytes(b"stale")
    alive = tmp_path / f"replica-{os.getppid()}"
    alive.mkdir()
    mine = replica_dir(tmp_path)
    first = Replica(1, mine)
    first.update("a", CountRow(1, 1))
    first.close()
    again = Replica(1, mine)
    assert again.get("a") is None  # a cache: rebuilt from the topic at every start
    assert not left.exists()
    assert alive.exists()
    again.close()


def test_a_temporary_copy_is_removed_when_closed() -> None:
    replica = Replica(1)
    replica.update("a", CountRow(1, 1))
    assert replica.path.exists()
    replica.close()
    assert not replica.path.exists()
