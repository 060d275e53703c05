"""The soak's pure parts: sampling grid, windows, verdicts, delays per interval, the
table, BENCHMARKS.md's sections, the load it writes."""

from __future__ import annotations

import argparse
import asyncio
import itertools
import math
from multiprocessing.connection import Connection

import pytest

from likestream.devtools.bench._audience import Client, Delays, Timeline
from likestream.devtools.bench._cli import SCENARIOS, STANDARD, _positive, add_parser, config_from
from likestream.devtools.bench._common import Result
from likestream.devtools.bench._report import (
    HAND_WRITTEN,
    SOAK_BEGIN,
    SOAK_END,
    hand_written,
    merge_report,
)
from likestream.devtools.bench._soak import ITEMS, USERS, Ledger, _spawned, soak_events
from likestream.devtools.bench._soak_report import (
    COLUMNS,
    GROWN,
    PLOTTED,
    TARGETED,
    growth,
    outside_rocksdb,
    plot,
    sample_every,
    sample_table,
    section,
    window_delays,
    windows,
)


def test_a_sample_a_minute_or_thirty_in_a_shorter_run() -> None:
    assert sample_every(30, None) == 60
    assert sample_every(120, None) == 60
    assert sample_every(3, None) == 6
    assert sample_every(3, 20) == 20


def test_windows_are_minutes_5_to_10_and_the_last_5_of_30() -> None:
    assert windows(1800) == ((300, 600), (1500, 1800))
    assert windows(60) == ((10, 20), (50, 60))


def _rows(values: list[float], every: float = 60) -> list[dict[str, float]]:
    return [{"minute": (k + 1) * every / 60, "rss": v} for k, v in enumerate(values)]


def test_growth_compares_medians_of_the_windows() -> None:
    flat = [100.0] * 4 + [500.0] + [100.0] * 25  # a spike in the warm-up does not count
    assert growth(_rows(flat), "rss", 1800) == pytest.approx(0.0)
    leak = [100.0 + k for k in range(30)]  # +1 MiB a minute
    got = growth(_rows(leak), "rss", 1800)
    assert got == pytest.approx(126.5 / 106.5 - 1)  # samples at minutes 5-10 and 25-30
    assert got is not None
    assert got > 0.10
    restart = [100.0] * 14 + [0.0, 30.0] + [100.0] * 14  # the middle is in neither window
    assert growth(_rows(restart), "rss", 1800) == pytest.approx(0.0)


def test_growth_leaves_out_samples_without_the_figure() -> None:
    # RocksDB's memory is read from the worker's /status: none while it restarts.
    values = [100.0] * 5 + [math.nan, 100.0] + [100.0] * 17 + [110.0, math.nan] + [110.0] * 5
    assert growth(_rows(values), "rss", 1800) == pytest.approx(0.10)
    assert growth(_rows([math.nan] * 30), "rss", 1800) is None


def test_the_target_is_on_the_worker_memory_apart_from_rocksdb() -> None:
    # RocksDB's own memory fills towards its settings' caps as the state grows: reported
    # beside the rest (and the whole RSS), never held to the flat target itself.
    assert "worker_rest_mib" in TARGETED
    assert {"worker_rss_mib", "worker_rocksdb_mib"} <= GROWN.keys() - set(TARGETED)
    assert set(TARGETED) <= GROWN.keys()
    assert {"worker_rocksdb_mib", "worker_rest_mib"} <= COLUMNS.keys()


def test_memory_outside_rocksdb_counts_what_rocksdb_freed_as_rocksdb_s() -> None:
    assert outside_rocksdb(130.0, 24.0, 24.0) == pytest.approx(106.0)
    # A memtable flushed: RocksDB holds 9 MiB less, RSS stays (glibc keeps the memory).
    assert outside_rocksdb(130.0, 15.0, 24.0) == pytest.approx(106.0)
    # The rest grew by 10 MiB: it shows, whatever RocksDB does meanwhile.
    assert outside_rocksdb(140.0, 15.0, 24.0) == pytest.approx(116.0)
    assert math.isnan(outside_rocksdb(130.0, math.nan, 24.0))


def test_growth_is_unknown_without_samples_in_a_window() -> None:
    assert growth(_rows([100.0] * 4, every=480), "rss", 1800) is None  # none at 25-30 min
    assert growth(_rows([0.0] * 30), "rss", 1800) is None


def test_window_delays_take_the_intervals_inside_the_window() -> None:
    by_interval: dict[int, Delays] = {}
    for k in range(30):
        by_interval.setdefault(k, Delays()).add(10.0 * (k + 1))
    merged = window_delays(by_interval, 60, (300, 600))  # intervals 5 to 9
    assert sorted(key / 10 for key in merged.buckets) == [60, 70, 80, 90, 100]
    last = window_delays(by_interval, 60, (1500, 1800))
    assert last.percentile(99) == 300


def test_settle_counts_each_change_in_its_produce_interval() -> None:
    timeline = Timeline(origin=100.0, every=10.0)
    timeline.extend({"t:0": [101.0, 112.0]})  # counts 1 and 2, intervals 0 and 1
    client = Client(["t:0"])
    client.note(99.0, "t:0", 0)
    client.mark()
    client.note(113.0, "t:0", 2)  # one frame delivers both (coalesced)
    client.note(125.0, "t:0", 3)  # count 3: its produce time is not known yet
    into: dict[int, Delays] = {}
    client.settle(timeline, into, final=False)
    assert {k: sorted(d.buckets) for k, d in into.items()} == {0: [120_000], 1: [10_000]}
    assert client.frames == [(125.0, "t:0", 3)]  # waits for the next call
    timeline.extend({"t:0": [123.0, 124.0]})  # counts 3 and 4; 4 never shown
    client.settle(timeline, into, final=True)
    assert sorted(into[2].buckets) == [20_000]
    assert into[2].missing == 1
    assert client.frames == []


def test_settle_counts_nothing_missing_on_a_closed_connection() -> None:
    timeline = Timeline(0.0, 1.0)
    timeline.extend({"t:0": [0.5]})
    client = Client(["t:0"])
    client.lost(1013)
    into: dict[int, Delays] = {}
    client.settle(timeline, into, final=True)
    assert into == {}  # counted as a dropped subscriber instead


def test_sample_table_has_a_row_per_sample() -> None:
    rows = [
        {k: 1.0 for k in COLUMNS} | {"minute": 1, "p99_ms": 812.34},
        {k: 2.0 for k in COLUMNS} | {"minute": 2, "p99_ms": math.inf, "lag": math.nan},
    ]
    text = sample_table(rows)
    lines = text.splitlines()
    assert len(lines) == 4
    assert lines[0].startswith(
        "| minute | writes/s | worker RSS MiB | worker RocksDB MiB | "
        "worker RSS outside RocksDB MiB |"
    )
    assert "| 812.3 |" in lines[2]
    assert "| lost |" in lines[3]
    assert "| - |" in lines[3]


def _soak_result() -> Result:
    result = Result("soak", "likestream bench soak --minutes 30", {"lost_events": 0})
    result.samples = [{k: 1.0 for k in COLUMNS}]
    return result


def test_the_soak_section_and_the_standard_report_keep_each_other() -> None:
    main = "# Benchmarks\n\n## Results\n\n| ingest |\n"
    soak = section(_soak_result(), "likestream bench soak", "now", "1, 1, 1", "x.svg")
    assert "## Soak" in soak
    assert "### Samples" in soak
    assert "![soak samples](x.svg)" in soak
    first = merge_report("", main, None)  # make bench, no soak yet
    assert first == main
    both = merge_report(first, None, soak)  # the soak adds its section
    assert both.startswith(main)
    assert SOAK_BEGIN in both
    assert both.rstrip().endswith(SOAK_END)
    again = merge_report(both, "# Benchmarks\n\nnew run\n", None)  # make bench again
    assert again.startswith("# Benchmarks\n\nnew run\n")
    assert "| ingest |" not in again
    assert again.count("## Soak") == 1
    assert soak.strip() in again
    newer = merge_report(again, None, soak.replace("now", "later"))  # the soak again
    assert "new run" in newer
    assert newer.count(SOAK_BEGIN) == 1
    assert "later" in newer


def test_a_report_without_a_soak_section_gets_one_at_its_end() -> None:
    text = merge_report("# Benchmarks\n\nold\n", None, "## Soak\n\nbody\n")
    assert text == f"# Benchmarks\n\nold\n\n{SOAK_BEGIN}\n## Soak\n\nbody\n{SOAK_END}\n"


def test_plot_draws_a_line_per_panel() -> None:
    rows = [{k: float(n) for k in COLUMNS} | {"minute": float(n)} for n in range(1, 4)]
    svg = plot(rows)
    assert svg.startswith("<svg")
    assert svg.count("<polyline") == len(PLOTTED)


def test_soak_load_stays_in_its_key_space_with_exact_duplicates() -> None:
    events = list(itertools.islice(soak_events(seed=3), 20_000))
    assert {e.item_id for e in events} <= {f"item:{i}" for i in range(ITEMS)}
    assert {e.user_id for e in events} <= {f"u{i}" for i in range(USERS)}
    repeats = sum(a is b for a, b in itertools.pairwise(events))
    assert 0.03 * len(events) < repeats < 0.07 * len(events)
    assert {e.action for e in events} == {"like", "unlike"}


def test_ledger_is_the_latest_event_per_member() -> None:
    ledger = Ledger()
    for event in itertools.islice(soak_events(seed=4), 5_000):
        ledger.apply(event)
    assert ledger.events == 5_000
    counts = ledger.counts()
    assert sum(counts.values()) == sum(ledger.members.values())
    assert all(0 <= n <= USERS for n in counts.values())


def test_a_ledger_extended_by_a_later_one_keeps_the_latest_event() -> None:
    events = list(itertools.islice(soak_events(seed=5), 6_000))
    whole, first, later = Ledger(), Ledger(), Ledger()
    for n, event in enumerate(events):
        whole.apply(event)
        (first if n < 2_000 else later).apply(event)
    first.extend(later)
    assert first.members == whole.members
    assert first.events == whole.events == 6_000


def test_soak_is_its_own_command_not_in_the_standard_set() -> None:
    assert "soak" in SCENARIOS
    assert "soak" not in STANDARD
    parser = argparse.ArgumentParser()
    add_parser(parser.add_subparsers(dest="command"))
    args = parser.parse_args(
        ["bench", "soak", "--minutes", "0.5", "--subscribers", "20", "--sample-seconds", "3"]
    )
    cfg = config_from(args)
    assert (cfg.minutes, cfg.subscribers, cfg.sample_seconds, cfg.read_rate) == (
        0.5,
        20,
        3.0,
        200.0,
    )
    for bad in ("0", "-1", "x"):
        with pytest.raises(argparse.ArgumentTypeError):
            _positive(bad)


def test_make_bench_keeps_the_hand_written_end_once_and_the_soak_after_it() -> None:
    prose = f"{HAND_WRITTEN}\n\n## Recovery at 10M\n\nprose\n"
    soak = section(_soak_result(), "likestream bench soak", "now", "1, 1, 1", None)
    old = merge_report("# Benchmarks\n\nold run\n\n" + prose, None, soak)
    kept = hand_written(old)
    assert kept.startswith(HAND_WRITTEN)
    assert SOAK_BEGIN not in kept
    new = merge_report(old, "# Benchmarks\n\nnew run\n\n" + kept, None)
    assert "old run" not in new
    assert "new run" in new
    assert new.count(HAND_WRITTEN) == 1
    assert new.count("## Recovery at 10M") == 1
    assert new.count(SOAK_BEGIN) == 1
    assert new.index(HAND_WRITTEN) < new.index(SOAK_BEGIN)


def _sends_its_sum(a: int, b: int, out: Connection) -> None:
    out.send(a + b)


def _exits_silently(out: Connection) -> None:
    out.close()


async def test_a_spawned_generator_hands_back_what_it_sends() -> None:
    async with asyncio.timeout(120):  # a deadline for a hang, not a measurement
        assert await _spawned(_sends_its_sum, 2, 3) == 5
        with pytest.raises(RuntimeError, match="_exits_silently exited with 0"):
            await _spawned(_exits_silently)
