"""Push frames as the bytes that go on the wire, so that one frame is encoded once and the
same bytes are written to every client that is due (``_hub.py``).

Two framings, both fixed by their standards and independent of the client:
- a WebSocket text frame from the server (RFC 6455 section 5.2): FIN and opcode 1, the
  payload length in 7, 16 or 64 bits, no mask (only clients mask), no compression
  (push connections do not negotiate permessage-deflate, ``_push.py``);
- a Server-Sent Event, as an HTTP/1.1 chunk when the response is chunked (RFC 9112
  section 7.1: the size in hex, CRLF, the data, CRLF), as aiohttp's own writer would.
"""

from __future__ import annotations

import struct

import orjson

__all__ = ["likes_payload", "sse_bytes", "sse_event", "ws_text"]

_FIN_TEXT = 0x81
_LEN16 = struct.Struct("!BBH")
_LEN64 = struct.Struct("!BBQ")


def ws_text(payload: bytes) -> bytes:
    """A complete unmasked WebSocket text frame carrying ``payload`` (UTF-8 JSON)."""
    size = len(payload)
    if size < 126:
        return bytes((_FIN_TEXT, size)) + payload
    if size < 1 << 16:
        return _LEN16.pack(_FIN_TEXT, 126, size) + payload
    return _LEN64.pack(_FIN_TEXT, 127, size) + payload


def sse_event(event: str, data: bytes, event_id: int | None, chunked: bool) -> bytes:
    """One Server-Sent Event; its id is what a reconnecting EventSource sends back."""
    head = f"id: {event_id}\n" if event_id is not None else ""
    return sse_bytes(f"{head}event: {event}\ndata: ".encode() + data + b"\n\n", chunked)


def sse_bytes(body: bytes, chunked: bool) -> bytes:
    """``body`` of an event stream as written on the wire."""
    if not chunked:
        return body
    return b"%x\r\n%s\r\n" % (len(body), body)


def likes_payload(item: str, likes: int, ws: bool) -> bytes:
    """The JSON of a count change: WebSocket frames say their type, SSE events name it."""
    if ws:
        return orjson.dumps({"type": "likes", "item_id": item, "likes": likes})
    return orjson.dumps({"item_id": item, "likes": likes})
