"""Prometheus metrics shared by the agents and the web layer."""

from __future__ import annotations

from prometheus_client import Counter, Histogram

__all__ = ["DLQ_RECORDS", "EVENTS", "HTTP_REQUESTS", "HTTP_SECONDS"]

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
