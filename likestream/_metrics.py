"""Prometheus metrics shared by the agents and the web layer."""

from __future__ import annotations

from prometheus_client import Counter, Gauge, Histogram

__all__ = [
    "DLQ_RECORDS",
    "EVENTS",
    "HTTP_REQUESTS",
    "HTTP_SECONDS",
    "PUSH_CLIENTS",
    "PUSH_DROPPED",
    "PUSH_FRAMES",
]

EVENTS = Counter(
    "likestream_events_total",
    "Like events by action and outcome (applied, noop, replayed, invalid).",
    ["action", "outcome"],
)
DLQ_RECORDS = Counter("likestream_dlq_records_total", "Invalid records sent to the DLQ.")
HTTP_REQUESTS = Counter(
    "likestream_http_requests_total", "HTTP requests by route and status.", ["route", "status"]
)
HTTP_SECONDS = Histogram(
    "likestream_http_request_duration_seconds", "HTTP request latency by route.", ["route"]
)
PUSH_CLIENTS = Gauge("likestream_push_clients", "Open push connections by kind.", ["kind"])
PUSH_FRAMES = Counter("likestream_push_frames_total", "Count frames pushed to clients.", ["kind"])
PUSH_DROPPED = Counter(
    "likestream_push_dropped_total", "Push clients closed by the server, by reason.", ["reason"]
)
