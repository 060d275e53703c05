"""The Quix Streams peer of ``likestream bench ingest``: the same like-count fold, so its
events/s can stand beside likestream's on the same records.

It runs under the interpreter of its own virtualenv (``~/.cache/likestream/peers/quix-*``),
where quixstreams is installed, since quixstreams' pins would move the project's own
pydantic; so it imports nothing of likestream, and quixstreams only inside :func:`main`,
which lets the unit tests import :func:`fold` and :func:`parse` from the project's venv.

Semantics, as in ``likestream/agents/_fold.py`` and ``likestream/domain/_schema.py``: a like by a
member or an unlike by a non-member is a no-op; any other event flips the membership, moves
the item's count by one (never below zero) and sends ``{"item_id", "likes"}`` to the output
topic, keyed by the item. Invalid records are counted and skipped.

State: Quix scopes state to the message key, the item_id, so each item's state holds one
entry per user who ever acted on it (``user_id -> liked``) and its count under ``#count``
(``#`` cannot occur in an id, so it never meets a user). A dict of members per item would be
re-serialized whole on every event, which a hot item of the Zipf load makes quadratic.
Processing guarantee: ``exactly-once``; commit interval: the one the bench passes (Quix's
default is 5 s).

Usage: ``python quix_peer.py BOOTSTRAP TOPIC OUTPUT_TOPIC GROUP STATE_DIR EXPECTED
[COMMIT_INTERVAL_S]``. Twice a second, and once more when stopped, it prints one JSON line:
``{"peer", "state", "processed", "invalid", "changes", "expected", "first", "last",
"error"}``, ``first`` and ``last`` being the epoch seconds of the first and the last record
processed. It runs until SIGTERM (Quix then commits and closes) or an error.
"""

from __future__ import annotations

import json
import re
import sys
import threading
import time
from typing import Any, Protocol

import orjson

__all__ = ["COUNT_KEY", "Progress", "StateLike", "fold", "main", "parse"]

COUNT_KEY = "#count"
MAX_RECORD_BYTES = 1024
MAX_EVENT_ID = 64
_ID_RE = re.compile(r"[A-Za-z0-9._:@-]{1,128}")


class StateLike(Protocol):
    """What :func:`fold` needs of Quix's per-key ``State``."""

    def get(self, key: str, default: Any = None) -> Any: ...

    def set(self, key: str, value: Any) -> None: ...


def parse(key: bytes | None, value: bytes | None) -> tuple[str, str, bool] | None:
    """``(item_id, user_id, liked)``, or None where likestream's ``parse_event`` rejects."""
    if value is None or key is None:
        return None
    if len(value) + len(key) > MAX_RECORD_BYTES:
        return None
    try:
        doc = orjson.loads(value)
    except orjson.JSONDecodeError:
        return None
    if not isinstance(doc, dict):
        return None
    item, user, action = doc.get("item_id"), doc.get("user_id"), doc.get("action")
    if not (isinstance(item, str) and _ID_RE.fullmatch(item)):
        return None
    if not (isinstance(user, str) and _ID_RE.fullmatch(user)):
        return None
    if action not in ("like", "unlike"):
        return None
    event_id = doc.get("event_id")
    if event_id is not None and not (isinstance(event_id, str) and len(event_id) <= MAX_EVENT_ID):
        return None
    ts = doc.get("ts")
    if ts is not None and (isinstance(ts, bool) or not isinstance(ts, int) or ts < 0):
        return None
    if key != item.encode():
        return None
    return item, user, action == "like"


class Progress:
    """Counters and first/last times of the records processed, printed as JSON lines."""

    def __init__(self, expected: int) -> None:
        self.expected = expected
        self.processed = 0
        self.invalid = 0
        self.changes = 0
        self.first = 0.0
        self.last = 0.0
        self.error: str | None = None
        self._lock = threading.Lock()

    def line(self, state: str) -> str:
        return json.dumps(
            {
                "peer": "quix",
                "state": state,
                "processed": self.processed,
                "invalid": self.invalid,
                "changes": self.changes,
                "expected": self.expected,
                "first": self.first,
                "last": self.last,
                "error": self.error,
            }
        )

    def report(self, state: str) -> None:
        with self._lock:  # the reporter thread and the main thread both print
            print(self.line(state), flush=True)


def fold(
    progress: Progress, key: bytes | None, value: bytes | None, state: StateLike
) -> dict[str, Any] | None:
    """Fold one record into the item's state; the count record to send, or None."""
    now = time.time()
    if not progress.first:
        progress.first = now
    progress.processed += 1
    progress.last = now
    event = parse(key, value)
    if event is None:
        progress.invalid += 1
        return None
    item, user, liked = event
    if bool(state.get(user, False)) == liked:
        return None
    likes = int(state.get(COUNT_KEY, 0)) + (1 if liked else -1)
    state.set(COUNT_KEY, likes)
    state.set(user, liked)
    progress.changes += 1
    return {"item_id": item, "likes": likes}


def main(argv: list[str]) -> int:
    if len(argv) < 6:
        print(__doc__, file=sys.stderr)
        return 2
    bootstrap, topic, output, group, state_dir, expected = argv[:6]
    commit_interval = float(argv[6]) if len(argv) > 6 else 5.0
    from quixstreams import Application

    progress = Progress(int(expected))
    app = Application(
        broker_address=bootstrap,
        consumer_group=group,
        auto_offset_reset="earliest",
        processing_guarantee="exactly-once",
        commit_interval=commit_interval,
        state_dir=state_dir,
        loglevel="WARNING",
    )
    events = app.topic(topic, key_deserializer="bytes", value_deserializer="bytes")
    counts = app.topic(output, key_serializer="bytes", value_serializer="json")
    sdf = app.dataframe(events)

    def step(value: bytes | None, key: bytes | None, _ts: int, _headers: Any, state: Any) -> Any:
        return fold(progress, key, value, state)

    sdf = sdf.apply(step, stateful=True, metadata=True)
    sdf = sdf.filter(lambda doc: doc is not None)
    sdf.to_topic(counts)

    stop = threading.Event()

    def report_forever() -> None:
        while not stop.wait(0.5):
            progress.report("running" if progress.processed else "starting")

    reporter = threading.Thread(target=report_forever, daemon=True)
    reporter.start()
    try:
        app.run()
    except Exception as exc:
        progress.error = repr(exc)
        raise
    finally:
        stop.set()
        reporter.join()
        progress.report("closed" if progress.error is None else "error")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
