"""The soak's pure parts: its sample grid and windows, the growth and stability verdicts,
the table of samples, its section of BENCHMARKS.md and a plot of the samples (SVG).

A run of D minutes has a warm-up of W = D/6 (5 minutes of 30), a reference window from W
to 2W (minutes 5-10) and a final window, the last W (minutes 25-30); the worker is killed
and restarted at D/2, between the two. Growth of a figure is the median of its samples in
the final window over their median in the reference window, minus 1; latency is stable
when the p99 of the changes produced in the final window is within ``STABLE_RATIO`` of the
p99 of those produced in the reference window.
"""

from __future__ import annotations

import math
import statistics
from collections.abc import Mapping

from likestream.devtools.bench._audience import Delays
from likestream.devtools.bench._common import Result
from likestream.devtools.bench._report import table

__all__ = [
    "COLUMNS",
    "GROWN",
    "GROWTH_BOUND",
    "STABLE_RATIO",
    "TARGETED",
    "growth",
    "outside_rocksdb",
    "plot",
    "sample_every",
    "sample_table",
    "section",
    "window_delays",
    "windows",
]

GROWTH_BOUND = 0.10
STABLE_RATIO = 2.0
SAMPLES = 30  # of a run shorter than 30 minutes, when not told how often
MINUTE = 60.0

COLUMNS = {
    "minute": "minute",
    "writes_per_s": "writes/s",
    "worker_rss_mib": "worker RSS MiB",
    "worker_rocksdb_mib": "worker RocksDB MiB",
    "worker_rest_mib": "worker RSS outside RocksDB MiB",
    "worker_files": "worker open files",
    "gateway_rss_mib": "gateway RSS MiB",
    "gateway_files": "gateway open files",
    "lag": "lag (events)",
    "p99_ms": "event p99 ms",
    "reads": "reads",
    "failed_reads": "failed reads",
    "unanswered_reads": "reads unanswered",
    "unanswered_generator": "of which the generator's",
    "read_start_lag_p99_ms": "read generator lag p99 ms",
    "dropped": "subscribers dropped",
    "dlq": "DLQ records",
}
"""The samples' keys, in the table's order, and their headings."""

GROWN = {
    "worker_rss_mib": "worker RSS growth",
    "worker_rocksdb_mib": "worker RocksDB memory growth",
    "worker_rest_mib": "worker RSS outside RocksDB growth",
    "worker_files": "worker open files growth",
    "gateway_rss_mib": "gateway RSS growth",
    "gateway_files": "gateway open files growth",
}
"""The figures whose growth is reported, and their labels."""
TARGETED = ("worker_rest_mib", "worker_files", "gateway_rss_mib", "gateway_files")
"""The growths held to ``GROWTH_BOUND``. The worker's memory apart from RocksDB's own
(memtables, table readers, block cache: bounded by its settings and filling towards
them as the state grows, ``tables/_options.py``; :func:`outside_rocksdb`) must stay
flat; its whole RSS and RocksDB's part are reported beside it, not hidden."""

Window = tuple[float, float]


def sample_every(minutes: float, told: float | None) -> float:
    """Seconds between samples: ``told``, else a minute, or a 30th of a shorter run."""
    if told is not None:
        return told
    return min(MINUTE, minutes * MINUTE / SAMPLES)


def windows(seconds: float) -> tuple[Window, Window]:
    """The reference and final windows (seconds from the start) of a run of ``seconds``."""
    warm = seconds / 6
    return (warm, 2 * warm), (seconds - warm, seconds)


def _within(at: float, window: Window) -> bool:
    eps = 1e-6 * max(1.0, window[1])
    return window[0] - eps <= at <= window[1] + eps


def growth(rows: list[dict[str, float]], key: str, seconds: float) -> float | None:
    """Median of ``key`` in the final window over its median in the reference window,
    minus 1; None when a window has no sample (or the reference median is 0). Samples
    without the figure (NaN) do not count."""
    reference, final = windows(seconds)

    def values(window: Window) -> list[float]:  # NaN: not measured (a restarting worker)
        inside = (r.get(key, math.nan) for r in rows if _within(r["minute"] * MINUTE, window))
        return [v for v in inside if v == v]

    before, after = values(reference), values(final)
    if not before or not after or statistics.median(before) <= 0:
        return None
    return statistics.median(after) / statistics.median(before) - 1


def outside_rocksdb(rss: float, rocksdb: float, peak: float) -> float:
    """The worker's RSS outside RocksDB's memory, MiB: RSS minus the most RocksDB held so
    far in this process (``peak``), since a flushed memtable or evicted block is freed
    into glibc's heaps, which keep it for reuse (RSS does not fall); NaN when RocksDB's
    memory was not read (``rocksdb`` NaN)."""
    if rocksdb != rocksdb:
        return math.nan
    return round(rss - max(peak, rocksdb), 1)


def window_delays(by_interval: Mapping[int, Delays], every: float, window: Window) -> Delays:
    """The delays of the changes produced in the intervals lying inside ``window``."""
    merged = Delays()
    for k, delays in by_interval.items():
        if _within(k * every, window) and _within((k + 1) * every, window):
            merged.merge(delays)
    return merged


def _cell(value: float) -> str:
    if value != value:  # NaN: nothing measured
        return "-"
    if value == float("inf"):
        return "lost"
    if float(value).is_integer():
        return f"{int(value):,}"
    return f"{value:,.1f}"


def sample_table(rows: list[dict[str, float]]) -> str:
    lines = [
        "| " + " | ".join(COLUMNS.values()) + " |",
        "|" + "---|" * len(COLUMNS),
    ]
    for row in rows:
        cells = [f"{row['minute']:g}"]
        cells += [_cell(row.get(k, float("nan"))) for k in list(COLUMNS)[1:]]
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"


def section(result: Result, invocation: str, when: str, load: str, plot_name: str | None) -> str:
    """The soak's section of BENCHMARKS.md (``_report.SOAK_BEGIN`` to ``SOAK_END``)."""
    parts = [
        "## Soak",
        "",
        f"Written by `{invocation}` on {when}; `make bench` keeps this section and the soak "
        f"keeps the rest of the file. Load average at the end (1, 5, 15 min): {load}.",
        "",
        table([result]),
        f"    {result.command}",
        "",
        f"How it runs and what limits it: {result.limits}.",
        *(f"- {note}" for note in result.notes),
        "",
        "### Samples",
        "",
        "Each row: the figures at the end of the interval; event p99: of the changes "
        "produced during it, over every subscriber (a change never shown to an open "
        "subscriber counts as lost); writes/s, failed reads (non-200 or refused), reads "
        "unanswered 5 s after their interval, subscribers dropped and DLQ records: since the "
        "row before (a row more than an interval late skips the intervals past).",
        "",
        sample_table(result.samples),
    ]
    if plot_name:
        parts += [f"![soak samples]({plot_name})", ""]
    return "\n".join(parts)


PLOTTED = (
    ("worker_rss_mib", "worker RSS MiB"),
    ("worker_rocksdb_mib", "worker RocksDB MiB (memtables, table readers, block cache)"),
    ("worker_rest_mib", "worker RSS outside RocksDB MiB"),
    ("gateway_rss_mib", "gateway RSS MiB"),
    ("worker_files", "worker open files"),
    ("p99_ms", "event p99 ms"),
)
_W, _H, _PAD = 640, 120, 40


def plot(rows: list[dict[str, float]]) -> str:
    """The plotted samples, one small panel each, as a hand-written SVG."""
    panels: list[str] = []
    last = max((r["minute"] for r in rows), default=1.0) or 1.0
    for n, (key, label) in enumerate(PLOTTED):
        top = n * (_H + _PAD) + _PAD
        points = [
            (r["minute"], r[key])
            for r in rows
            if key in r and r[key] == r[key] and r[key] != float("inf")
        ]
        high = max((v for _, v in points), default=1.0) * 1.1 or 1.0
        xy = " ".join(
            f"{_PAD + m / last * (_W - 2 * _PAD):.1f},{top + _H - v / high * _H:.1f}"
            for m, v in points
        )
        panels += [
            f'<text x="{_PAD}" y="{top - 8}" font-size="13">{label} (0 to {high:,.0f}) '
            f"over {last:g} minutes</text>",
            f'<rect x="{_PAD}" y="{top}" width="{_W - 2 * _PAD}" height="{_H}" '
            'fill="none" stroke="#bbb"/>',
            f'<polyline points="{xy}" fill="none" stroke="#1f6feb" stroke-width="2"/>',
        ]
    height = len(PLOTTED) * (_H + _PAD) + _PAD
    return (
        f'<svg xmlns="http://www.w3.org/2000/svg" width="{_W}" height="{height}" '
        f'font-family="sans-serif">\n' + "\n".join(panels) + "\n</svg>\n"
    )
