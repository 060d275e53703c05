"""``likestream status``: a running process's ``GET /status``, summarised for people."""

from __future__ import annotations

import json
import urllib.error
import urllib.request
from typing import Any

__all__ = ["StatusError", "fetch_status", "format_status"]


class StatusError(RuntimeError):
    """The process could not be asked; the message says why."""


def fetch_status(url: str, timeout: float = 5.0) -> dict[str, Any]:
    target = url.rstrip("/") + "/status"
    try:
        with urllib.request.urlopen(target, timeout=timeout) as resp:
            doc: dict[str, Any] = json.load(resp)
    except urllib.error.HTTPError as exc:
        raise StatusError(f"{target} answered {exc.code}") from None
    except (urllib.error.URLError, OSError, ValueError) as exc:
        reason = getattr(exc, "reason", exc)
        raise StatusError(f"cannot read {target}: {reason}") from None
    return doc


def _partitions(doc: dict[str, Any]) -> str:
    owned = doc.get("partitions", [])
    listed = ",".join(map(str, owned)) if owned else "none"
    return f"{len(owned)} of {doc.get('partitions_total', '?')} ({listed})"


def _lag(doc: dict[str, Any]) -> str:
    lag = doc.get("lag", {})
    parts = " ".join(f"p{p}={n}" for p, n in lag.get("by_partition", {}).items())
    return f"{lag.get('total', 0)} records" + (f"  [{parts}]" if parts else "")


def _recovery(doc: dict[str, Any]) -> str:
    recovery = doc.get("recovery", {})
    if recovery.get("in_progress"):
        return f"in progress, {recovery.get('remaining_records', '?')} changelog records to go"
    return "done" if doc.get("ready") else "not started"


def format_status(url: str, doc: dict[str, Any]) -> str:
    """The human summary: one ``label: value`` line each."""
    conns = doc.get("connections", {})
    rate = doc.get("throughput", {})
    events = doc.get("events", {})
    lines = [
        ("process", f"{url}  pid {doc.get('pid', '?')}, up {doc.get('uptime_seconds', 0):.0f}s"),
        ("ready", "yes" if doc.get("ready") else "NO (recovering or rebalancing)"),
        ("partitions", f"{_partitions(doc)} of topic {doc.get('topic', '?')}"),
        ("lag", _lag(doc)),
        ("recovery", _recovery(doc)),
        ("table rows", f"~{doc.get('table_rows', {}).get('total', 0)}"),
        (
            "connections",
            f"{conns.get('websocket', 0)} websocket, {conns.get('sse', 0)} sse, "
            f"{conns.get('subscriptions', 0)} subscriptions",
        ),
        (
            "throughput",
            f"{rate.get('events_per_second', 0):g} events/s, "
            f"{rate.get('http_requests_per_second', 0):g} http requests/s",
        ),
        (
            "events",
            ", ".join(f"{events.get(k, 0)} {k}" for k in ("applied", "noop", "replayed", "invalid"))
            + f"; {doc.get('dlq_records', 0)} to the DLQ",
        ),
    ]
    width = max(len(label) for label, _ in lines)
    return "\n".join(f"{label:<{width}}  {value}" for label, value in lines)
