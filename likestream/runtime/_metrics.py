"""Prometheus metrics of every process: the agents, the web layer, the sampler.

Hot paths use children bound once here (``events_folded``, once per batch; ``INVALID_EVENTS``, the
producer-error children) so that counting an event never looks labels up.
Gauges about Kafka and RocksDB (lag, rows, recovery) are set by the sampler
(``likestream/runtime/_sampler.py``) every ``LIKESTREAM_METRICS_INTERVAL_MS``, not per event.

Every gauge names its ``multiprocess_mode``: how the processes of a multi-process
gateway (``LIKESTREAM_GATEWAY_PROCS`` > 1, prometheus-client's multiprocess mode) add
up in one scrape: ``livesum`` for what the pod holds in total (connections), ``livemax``
or ``livemin`` for flags and per-partition figures. Workers are one process and never
in that mode; there ``set_function`` and ``remove`` (the sampler's) work as usual.
"""

from __future__ import annotations

import asyncio
import importlib.metadata
import platform
import time
from typing import Any

from prometheus_client import Counter, Gauge, Histogram

__all__ = [
    "ASSIGNED_PARTITIONS",
    "BUILD_INFO",
    "CHANGELOG_RECOVERIES",
    "CONSUMER_LAG",
    "COUNT_CACHE_HITS",
    "COUNT_CACHE_ITEMS",
    "COUNT_CACHE_MISSES",
    "DLQ_RECORDS",
    "DROPPED_CLIENTS",
    "EVENTS",
    "EVENT_LATENCY",
    "FANOUT_SECONDS",
    "FLUSHES_IN_FLIGHT",
    "FRAMES_ENCODED",
    "HOLE_FILLS",
    "HTTP_REQUESTS",
    "HTTP_SECONDS",
    "INVALID_EVENTS",
    "PRODUCER_ERRORS",
    "PUSHES",
    "PUSH_CONNECTION_SECONDS",
    "PUSH_REFUSED",
    "RATE_LIMITED",
    "RATE_LIMIT_CHECKS",
    "READS",
    "READY",
    "RECOVERY_IN_PROGRESS",
    "RECOVERY_REMAINING",
    "RESTORED_RECORDS",
    "ROCKSDB_MEMORY_BYTES",
    "SSE_CONNECTIONS",
    "STEP_COUNTS",
    "SUBSCRIPTIONS",
    "TABLE_ROWS",
    "TRENDING_LATE",
    "WS_CONNECTIONS",
    "StepCounts",
    "agent_producer_error",
    "changelog_recovered",
    "events_folded",
    "http_producer_error",
    "push_connection_ended",
    "rate_limit_check",
    "trending_late",
]

# -- the build --------------------------------------------------------------------


def _version(distribution: str) -> str:
    try:
        return importlib.metadata.version(distribution)
    except importlib.metadata.PackageNotFoundError:
        return "unknown"


BUILD_INFO = Gauge(
    "likestream_build_info",
    "1, labelled with the versions this process runs: likestream (version), Python, "
    "faust-streaming (faust) and aiokafka.",
    ["version", "python", "faust", "aiokafka"],
    multiprocess_mode="livemax",  # every process of a gateway sets the same series to 1
)
BUILD_INFO.labels(
    _version("likestream"),
    platform.python_version(),
    _version("faust-streaming"),
    _version("aiokafka"),
).set(1)

# -- events (agents) -------------------------------------------------------------

EVENTS = Counter(
    "likestream_events_total",
    "Like events by action and outcome (applied, noop, replayed, invalid).",
    ["action", "outcome"],
)
DLQ_RECORDS = Counter("likestream_dlq_records_total", "Invalid records sent to the DLQ.")
HOLE_FILLS = Counter(
    "likestream_hole_fills_total",
    "Events partitions read again from their durable position after a flush's delivery "
    "failed: the failed flush is a hole that the durable and committed positions never "
    "pass, filled by folding its events again (agents/_confirm.py).",
)
EVENT_LATENCY = Histogram(
    "likestream_event_latency_seconds",
    "Event time (the event's ts, else its record timestamp) to applied to the state; "
    "sampled: the oldest applied event of each folded batch.",
    buckets=(0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 300),
)

_BY_ACTION = {
    action: {outcome: EVENTS.labels(action, outcome) for outcome in ("applied", "noop", "replayed")}
    for action in ("like", "unlike")
}
INVALID_EVENTS = EVENTS.labels("invalid", "invalid")


def events_folded(tally: dict[tuple[str, str], int], oldest_applied: float | None) -> None:
    """Count a folded batch: events by (action, outcome), and, sampled once per batch,
    the latency of its oldest applied event (epoch seconds), the batch's worst."""
    for (action, outcome), n in tally.items():
        _BY_ACTION[action][outcome].inc(n)
    if oldest_applied is not None:
        # A clock behind the producer's would give a negative latency: count it as 0.
        EVENT_LATENCY.observe(max(0.0, time.time() - oldest_applied))


TRENDING_LATE = Counter(
    "likestream_trending_late_events_total",
    "Applied events left out of a trending window: their event time was older than the "
    "window's oldest bucket (stream time minus window minus allowed lateness).",
    ["window"],
)
_LATE: dict[str, Counter] = {}


def trending_late(window: str) -> None:
    child = _LATE.get(window)
    if child is None:
        child = _LATE[window] = TRENDING_LATE.labels(window)
    child.inc()


# -- Kafka and the state (sampled) --------------------------------------------------

CONSUMER_LAG = Gauge(
    "likestream_consumer_lag_records",
    "Records of an owned events partition not yet committed (end offset minus committed).",
    ["topic", "partition"],
    multiprocess_mode="livemax",
)
ASSIGNED_PARTITIONS = Gauge(
    "likestream_assigned_partitions",
    "Events partitions this process owns (active).",
    multiprocess_mode="livesum",
)
TABLE_ROWS = Gauge(
    "likestream_table_rows",
    "Rows of a table partition: RocksDB's estimate-num-keys, which counts a key written "
    "again more than once until compaction merges its versions.",
    ["table", "partition"],
    multiprocess_mode="livemax",
)
ROCKSDB_MEMORY_BYTES = Gauge(
    "likestream_rocksdb_memory_bytes",
    "Bytes RocksDB holds in memory for the open state partitions, by kind: memtables, "
    "table_readers (index and filter blocks outside the block cache), block_cache.",
    ["kind"],
    multiprocess_mode="livesum",
)
RECOVERY_IN_PROGRESS = Gauge(
    "likestream_recovery_in_progress",
    "1 while tables are restored from their changelogs.",
    multiprocess_mode="livemax",
)
RESTORED_RECORDS = Counter(
    "likestream_restored_records_total",
    "Changelog records the bulk restore read into RocksDB (tables/_restore.py).",
)
CHANGELOG_RECOVERIES = Counter(
    "likestream_changelog_recoveries_total",
    "Owned table partitions the bulk restore brought back from their changelog (at least "
    "one record read), by start: empty (no local copy: a new or lost data dir) or behind "
    "(a local copy older than the changelog, e.g. after a SIGKILL or a rebalance).",
    ["start"],
)
_RECOVERED = {start: CHANGELOG_RECOVERIES.labels(start) for start in ("empty", "behind")}


def changelog_recovered(start: str) -> None:
    _RECOVERED[start].inc()


RECOVERY_REMAINING = Gauge(
    "likestream_recovery_remaining_records",
    "Changelog records left to restore before the active tables are recovered.",
    multiprocess_mode="livesum",
)
READY = Gauge(
    "likestream_ready",
    "1 when the process serves reads (the /readyz answer).",
    multiprocess_mode="livemin",
)

# -- producers and the write API --------------------------------------------------

PRODUCER_ERRORS = Counter(
    "likestream_producer_errors_total",
    "Writes to Kafka that failed: producer http (the write API) or agent (counts, "
    "changelog, DLQ); reason timeout or refused.",
    ["producer", "reason"],
)
_HTTP_PRODUCER = {r: PRODUCER_ERRORS.labels("http", r) for r in ("timeout", "refused")}
_AGENT_PRODUCER = PRODUCER_ERRORS.labels("agent", "refused")


def http_producer_error(reason: str) -> None:
    _HTTP_PRODUCER[reason].inc()


def agent_producer_error() -> None:
    _AGENT_PRODUCER.inc()


FLUSHES_IN_FLIGHT = Gauge(
    "likestream_flushes_in_flight",
    "The agent's flushes handed to Kafka and not yet acknowledged (agents/_confirm.py; at "
    "most 8): stuck above 0 while Kafka refuses or cannot be reached, nothing is committed.",
    multiprocess_mode="livemax",
)


RATE_LIMITED = Counter(
    "likestream_rate_limited_total", "Writes refused with 429: the user's bucket was empty."
)
RATE_LIMIT_CHECKS = Counter(
    "likestream_rate_limit_checks_total",
    "Write tokens asked for, by where the user's bucket was: here (this process owns the "
    "user's partition), owner (asked the owning worker), unavailable (no owner known or "
    "it did not answer: the write was refused with 503).",
    ["where"],
)
_RATE_LIMIT_CHECKS = {w: RATE_LIMIT_CHECKS.labels(w) for w in ("here", "owner", "unavailable")}


def rate_limit_check(where: str) -> None:
    _RATE_LIMIT_CHECKS[where].inc()


# -- HTTP --------------------------------------------------------------------------


class StepCounts:
    """Counter increments added up in a dict and handed to their children once per
    event loop step (``inc(n)`` each), for counters every request updates: a child's
    ``inc`` takes its lock, several times the cost of adding to a dict, and a busy
    step answers many requests. A scrape runs in a later step than the requests it
    counts, so it sees them all (as it would a request still in flight otherwise);
    without a running loop the increment is handed over at once."""

    __slots__ = ("_due", "_pending")

    def __init__(self) -> None:
        self._pending: dict[Any, int] = {}
        self._due = False

    def inc(self, child: Any, amount: int = 1) -> None:
        """Add ``amount`` to ``child`` (a labelled counter's child) by the next step."""
        pending = self._pending
        pending[child] = pending.get(child, 0) + amount
        if self._due:
            return
        try:
            loop = asyncio.get_running_loop()
        except RuntimeError:
            self.flush()
            return
        self._due = True
        loop.call_soon(self.flush)

    def flush(self) -> None:
        self._due = False
        pending, self._pending = self._pending, {}
        for child, amount in pending.items():
            child.inc(amount)


STEP_COUNTS = StepCounts()
"""The one :class:`StepCounts` of the process: HTTP requests and reads."""

HTTP_REQUESTS = Counter(
    "likestream_http_requests_total", "HTTP requests by route and status.", ["route", "status"]
)
HTTP_SECONDS = Histogram(
    "likestream_http_request_duration_seconds",
    "HTTP request latency by route; WebSocket and SSE connections are left out (they last "
    "as long as the client stays: likestream_push_connection_seconds).",
    ["route"],
)

READS = Counter(
    "likestream_reads_total",
    "Items read (counts and memberships) by where the answer came from: local (fresh, "
    "this process owns the item), forwarded (from the owner or a standby), stale (this "
    "process's replica or copy, answered with X-Likestream-Stale).",
    ["source"],
)

# -- live feed (WebSocket and SSE); the feed's views update these -------------------

WS_CONNECTIONS = Gauge(
    "likestream_ws_connections", "Open WebSocket connections.", multiprocess_mode="livesum"
)
SSE_CONNECTIONS = Gauge(
    "likestream_sse_connections", "Open Server-Sent Events streams.", multiprocess_mode="livesum"
)
SUBSCRIPTIONS = Gauge(
    "likestream_subscriptions",
    "Item subscriptions of the open WebSocket and SSE clients.",
    multiprocess_mode="livesum",
)
PUSH_CONNECTION_SECONDS = Histogram(
    "likestream_push_connection_seconds",
    "How long a live connection was served, by kind (ws: WebSocket, sse: Server-Sent "
    "Events), observed when it ends.",
    ["kind"],
    buckets=(1, 10, 60, 300, 900, 1800, 3600, 4 * 3600, 12 * 3600, 24 * 3600),
)
_PUSH_LIFETIMES = {kind: PUSH_CONNECTION_SECONDS.labels(kind) for kind in ("ws", "sse")}


def push_connection_ended(kind: str, seconds: float) -> None:
    _PUSH_LIFETIMES[kind].observe(seconds)


PUSHES = Counter("likestream_pushes_total", "Count changes pushed to live clients (frames).")
DROPPED_CLIENTS = Counter(
    "likestream_dropped_clients_total",
    "Live clients dropped because they could not keep up (WebSocket close 1013).",
)
PUSH_REFUSED = Counter(
    "likestream_push_refused_total",
    "Live connections or subscriptions refused: the process is full (connections, "
    "subscriptions), one address holds too many connections (address), or a browser page "
    "of another origin asked (origin).",
    ["reason"],
)
FRAMES_ENCODED = Counter(
    "likestream_push_frames_encoded_total",
    "Count frames encoded for live clients: one per item, tick and kind of client, "
    "however many clients it is written to (likestream_pushes_total).",
)
FANOUT_SECONDS = Histogram(
    "likestream_push_fanout_seconds",
    "From a push tick's start to its last frame written: how long one change of the "
    "items due took to reach every subscriber's socket (slices included). Near "
    "LIKESTREAM_PUSH_INTERVAL_MS and above, the process is busy pushing; clients then get "
    "fewer, coalesced frames.",
    buckets=(0.001, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5),
)
COUNT_CACHE_ITEMS = Gauge(
    "likestream_count_cache_items",
    "Counts of like-counts held in memory (LIKESTREAM_COUNT_CACHE_ITEMS at most); the "
    "rest are on disk.",
    multiprocess_mode="livesum",
)
COUNT_CACHE_HITS = Counter(
    "likestream_count_cache_hits_total", "Count lookups answered from memory."
)
COUNT_CACHE_MISSES = Counter(
    "likestream_count_cache_misses_total",
    "Count lookups that read the on-disk copy of like-counts.",
)
