"""The like event (docs/ARCHITECTURE.md#events): parsing, validation and encoding."""

from __future__ import annotations

import re
from typing import Annotated, Literal, cast

import msgspec
import orjson

__all__ = [
    "ACTIONS",
    "MAX_RECORD_BYTES",
    "Action",
    "InvalidEvent",
    "LikeEvent",
    "encode_event",
    "event_from_json",
    "is_valid_id",
    "parse_event",
]

Action = Literal["like", "unlike"]
ACTIONS: tuple[Action, ...] = ("like", "unlike")
MAX_RECORD_BYTES = 1024
MAX_EVENT_ID = 64
_ID_RE = re.compile(r"[A-Za-z0-9._:@-]{1,128}")


class InvalidEvent(ValueError):
    """A record that is not a valid like event; ``str(exc)`` says why."""


# The types and bounds once more, for msgspec's decoder (``parse_event``'s fast path);
# ``_event_from_doc`` stays the definition and gives the reasons.
_EventId = Annotated[str, msgspec.Meta(max_length=MAX_EVENT_ID)]
_Ts = Annotated[int, msgspec.Meta(ge=0)]


class LikeEvent(msgspec.Struct, frozen=True, gc=False):
    """One like or unlike; a msgspec struct, so that records decode straight into it."""

    user_id: str
    item_id: str
    action: Action
    event_id: _EventId | None = None
    ts: _Ts | None = None

    @property
    def liked(self) -> bool:
        return self.action == "like"


def is_valid_id(value: object) -> bool:
    """True for 1-128 characters of ``[A-Za-z0-9._:@-]``."""
    return isinstance(value, str) and _valid_id(value)


# Ids seen valid lately: the same items and users come again and again, and a dict
# lookup is a fraction of a regex match. Bounded: it starts over when full.
_VALID_IDS: dict[str, None] = {}
_VALID_IDS_MAX = 200_000


def _valid_id(value: str) -> bool:
    if value in _VALID_IDS:
        return True
    if _ID_RE.fullmatch(value) is None:
        return False
    if len(_VALID_IDS) >= _VALID_IDS_MAX:
        _VALID_IDS.clear()
    _VALID_IDS[value] = None
    return True


def parse_event(key: bytes | None, value: bytes | None) -> LikeEvent:
    """Validate one Kafka record of the events topic, or raise :class:`InvalidEvent`."""
    if value is None:
        raise InvalidEvent("null value (tombstone)")
    size = len(value) + (len(key) if key else 0)
    if size > MAX_RECORD_BYTES:
        raise InvalidEvent(f"record is {size} bytes, over {MAX_RECORD_BYTES}")
    try:
        # Decodes and checks types in one pass, straight into the event, skipping
        # unknown fields; anything refused goes the slow way, which says why.
        event = _DECODER.decode(value)
        if not (_valid_id(event.user_id) and _valid_id(event.item_id)):
            event = event_from_json(value)
    except msgspec.DecodeError:
        event = event_from_json(value)
    if key is None or key != event.item_id.encode():
        raise InvalidEvent("record key does not equal item_id")
    return event


def event_from_json(line: bytes | str) -> LikeEvent:
    """An event from a JSON document alone (no Kafka key), as in a JSON-lines file."""
    try:
        doc = orjson.loads(line)
    except orjson.JSONDecodeError as exc:
        raise InvalidEvent(f"not JSON: {exc}") from None
    if not isinstance(doc, dict):
        raise InvalidEvent("not a JSON object")
    return _event_from_doc(doc)


def _event_from_doc(doc: dict[str, object]) -> LikeEvent:
    for field in ("user_id", "item_id"):
        if not is_valid_id(doc.get(field)):
            raise InvalidEvent(f"{field} must be 1-128 characters of [A-Za-z0-9._:@-]")
    action = doc.get("action")
    if action not in ACTIONS:
        raise InvalidEvent("action must be 'like' or 'unlike'")
    event_id = doc.get("event_id")
    if event_id is not None and not (isinstance(event_id, str) and len(event_id) <= MAX_EVENT_ID):
        raise InvalidEvent(f"event_id must be a string of at most {MAX_EVENT_ID} characters")
    ts = doc.get("ts")
    if ts is not None and (isinstance(ts, bool) or not isinstance(ts, int) or ts < 0):
        raise InvalidEvent("ts must be epoch milliseconds (a non-negative integer)")
    return LikeEvent(
        user_id=cast(str, doc["user_id"]),
        item_id=cast(str, doc["item_id"]),
        action=action,
        event_id=event_id,
        ts=ts,
    )


_DECODER = msgspec.json.Decoder(LikeEvent)


def encode_event(event: LikeEvent) -> bytes:
    """The JSON value of ``event``; optional fields are left out when unset."""
    doc: dict[str, object] = {
        "user_id": event.user_id,
        "item_id": event.item_id,
        "action": event.action,
    }
    if event.event_id is not None:
        doc["event_id"] = event.event_id
    if event.ts is not None:
        doc["ts"] = event.ts
    return orjson.dumps(doc)
