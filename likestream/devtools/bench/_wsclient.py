"""A lean WebSocket client for the push scenarios: an :class:`asyncio.Protocol` that does
the RFC 6455 handshake and framing itself.

The bench needs tens of thousands of connections in a helper process that must cost less
than the server it measures; aiohttp's client spends a task, a reader queue and a JSON
decode per frame. Here a frame costs one pass of :class:`FrameParser` over the bytes the
loop hands over, and a ``likes`` frame is read by a bytes search (the server writes them
compact, ``{"type":"likes","item_id":"...","likes":N}``; item ids never need escaping), so
nothing but that frame's item and count is ever decoded.

No extensions are asked for (no compression): the server's frames are plain. Client frames
are masked, as RFC 6455 requires of clients.
"""

from __future__ import annotations

import asyncio
import base64
import hashlib
import os
import struct
import time
from collections.abc import Callable
from typing import cast
from urllib.parse import urlsplit

import orjson

__all__ = [
    "CLOSE",
    "GUID",
    "PING",
    "PONG",
    "TEXT",
    "TRY_AGAIN_LATER",
    "FrameParser",
    "HandshakeError",
    "LeanSocket",
    "accept_key",
    "encode_frame",
    "likes_of",
    "mask",
    "open_socket",
]

CONTINUATION, TEXT, BINARY, CLOSE, PING, PONG = 0x0, 0x1, 0x2, 0x8, 0x9, 0xA
GUID = b"258EAFA5-E914-47DA-95CA-C5AB0DC85B11"
TRY_AGAIN_LATER = 1013  # the server's close code for a client it dropped (too slow, full)
NO_STATUS = 1005  # a close frame without a code
MAX_HEADER = 16 * 1024

_LIKES_HEAD = b'{"type":"likes","item_id":"'
_LIKES_MID = b'","likes":'


class HandshakeError(ConnectionError):
    """The server did not switch protocols as asked."""


def mask(payload: bytes, key: bytes) -> bytes:
    """``payload`` XOR the 4-byte ``key`` repeated (its own inverse)."""
    n = len(payload)
    if not n:
        return b""
    # One big-int XOR instead of a Python loop over the bytes.
    stream = (key * (n // 4 + 1))[:n]
    return (int.from_bytes(payload, "big") ^ int.from_bytes(stream, "big")).to_bytes(n, "big")


def encode_frame(opcode: int, payload: bytes, key: bytes | None = None) -> bytes:
    """One final frame; masked with ``key`` (4 bytes) when given, as a client must."""
    n = len(payload)
    head = bytes([0x80 | opcode])
    bit = 0x80 if key is not None else 0
    if n < 126:
        head += bytes([bit | n])
    elif n < 1 << 16:
        head += bytes([bit | 126]) + struct.pack("!H", n)
    else:
        head += bytes([bit | 127]) + struct.pack("!Q", n)
    if key is None:
        return head + payload
    return head + key + mask(payload, key)


def accept_key(key: bytes) -> bytes:
    """The ``Sec-WebSocket-Accept`` a server must answer to ``Sec-WebSocket-Key: key``."""
    return base64.b64encode(hashlib.sha1(key + GUID).digest())


def likes_of(payload: bytes) -> tuple[str, int] | None:
    """(item, likes) of a ``likes`` frame, None for any other frame."""
    if payload.startswith(_LIKES_HEAD):
        mid = payload.find(_LIKES_MID, len(_LIKES_HEAD))
        if mid > 0 and payload.endswith(b"}"):
            try:
                return payload[len(_LIKES_HEAD) : mid].decode(), int(payload[mid + 10 : -1])
            except ValueError:
                pass
    if b'"likes"' not in payload:
        return None
    # Not in the server's compact form: decode it (never the case with likestream).
    try:
        doc = orjson.loads(payload)
    except orjson.JSONDecodeError:
        return None
    if isinstance(doc, dict) and doc.get("type") == "likes":
        return str(doc["item_id"]), int(doc["likes"])
    return None


class FrameParser:
    """Server frames out of a byte stream: feed the bytes as they come, get whole
    (opcode, payload) messages (fragments joined, control frames as they come)."""

    def __init__(self) -> None:
        self._buf = bytearray()
        self._fragments: list[bytes] = []
        self._fragment_op = 0

    def feed(self, data: bytes) -> list[tuple[int, bytes]]:
        buf = self._buf
        buf += data
        pos, end = 0, len(buf)
        messages: list[tuple[int, bytes]] = []
        while end - pos >= 2:
            first, second = buf[pos], buf[pos + 1]
            length = second & 0x7F
            at = pos + 2
            if length == 126:
                if end - at < 2:
                    break
                (length,) = struct.unpack_from("!H", buf, at)
                at += 2
            elif length == 127:
                if end - at < 8:
                    break
                (length,) = struct.unpack_from("!Q", buf, at)
                at += 8
            key = b""
            if second & 0x80:  # servers do not mask, but a masked frame is still a frame
                if end - at < 4:
                    break
                key = bytes(buf[at : at + 4])
                at += 4
            if end - at < length:
                break
            payload = bytes(buf[at : at + length])
            pos = at + length
            if key:
                payload = mask(payload, key)
            message = self._message(first, payload)
            if message is not None:
                messages.append(message)
        del buf[:pos]
        return messages

    def _message(self, first: int, payload: bytes) -> tuple[int, bytes] | None:
        opcode, fin = first & 0x0F, first & 0x80
        if opcode >= CLOSE or (fin and opcode != CONTINUATION):
            return opcode, payload  # control frames may come between fragments
        if opcode != CONTINUATION:
            self._fragment_op, self._fragments = opcode, []
        self._fragments.append(payload)
        if not fin:
            return None
        whole, self._fragments = b"".join(self._fragments), []
        return self._fragment_op, whole


Note = Callable[[float, str, int], None]


class LeanSocket(asyncio.Protocol):
    """One client connection: the upgrade, then server frames into ``note(at, item, likes)``.

    ``at`` is ``time.monotonic()`` when the bytes carrying the frame were handed over.
    """

    def __init__(self, host: str, path: str, note: Note) -> None:
        self._note = note
        self._key = base64.b64encode(os.urandom(16))
        self._request = (
            f"GET {path} HTTP/1.1\r\nHost: {host}\r\nUpgrade: websocket\r\n"
            "Connection: Upgrade\r\n"
            f"Sec-WebSocket-Key: {self._key.decode()}\r\nSec-WebSocket-Version: 13\r\n\r\n"
        ).encode()
        self._head = bytearray()
        self._parser: FrameParser | None = None
        self.transport: asyncio.Transport | None = None
        loop = asyncio.get_running_loop()
        self.upgraded: asyncio.Future[None] = loop.create_future()
        self.ponged: asyncio.Future[None] = loop.create_future()
        self.closed = False
        self.close_code: int | None = None
        """The code of the server's close frame (1013: dropped as too slow or full)."""
        self.errors: list[bytes] = []
        """``error`` frames the server sent (their first 300 bytes)."""
        self.on_lost: Callable[[int | None], None] | None = None
        """Called with ``close_code`` when the connection ends."""

    # -- asyncio.Protocol ----------------------------------------------------------------

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        # A stream transport (asyncio's, or uvloop's, which does not subclass it).
        self.transport = cast(asyncio.Transport, transport)
        self.transport.write(self._request)

    def data_received(self, data: bytes) -> None:
        if self._parser is None:
            data = self._upgrade(data)
            if self._parser is None or not data:
                return
        at = time.monotonic()
        for opcode, payload in self._parser.feed(data):
            if opcode == TEXT:
                got = likes_of(payload)
                if got is not None:
                    self._note(at, got[0], got[1])
                elif b'"error"' in payload[:20]:
                    self.errors.append(payload[:300])
            elif opcode == PING:
                self.send(PONG, payload)
            elif opcode == PONG:
                if not self.ponged.done():
                    self.ponged.set_result(None)
            elif opcode == CLOSE:
                self._closed_by_server(payload)

    def connection_lost(self, exc: Exception | None) -> None:
        self.closed = True
        if self.on_lost is not None:
            self.on_lost(self.close_code)
        failure = exc or ConnectionResetError("connection closed")
        for future in (self.upgraded, self.ponged):
            if not future.done():
                future.set_exception(failure)
                future.exception()  # retrieved: nobody may be waiting any more

    # -- the rest ------------------------------------------------------------------------

    def send(self, opcode: int, payload: bytes) -> None:
        if self.transport is not None and not self.transport.is_closing():
            self.transport.write(encode_frame(opcode, payload, os.urandom(4)))

    def send_json(self, doc: object) -> None:
        self.send(TEXT, orjson.dumps(doc))

    def close(self, code: int = 1000) -> None:
        """A close frame, then the connection ends (no waiting for the server's)."""
        if self.transport is not None and not self.transport.is_closing():
            self.send(CLOSE, struct.pack("!H", code))
            self.transport.close()

    def _upgrade(self, data: bytes) -> bytes:
        """The response head; returns the bytes after it (frames already)."""
        self._head += data
        end = self._head.find(b"\r\n\r\n")
        if end < 0:
            if len(self._head) > MAX_HEADER:
                self._fail(HandshakeError("no end of the response head"))
            return b""
        head, rest = bytes(self._head[:end]), bytes(self._head[end + 4 :])
        self._head = bytearray()
        lines = head.decode("latin-1").split("\r\n")
        headers = {
            name.strip().lower(): value.strip()
            for name, _, value in (line.partition(":") for line in lines[1:])
        }
        status = lines[0].split(" ", 2)
        if len(status) < 2 or status[1] != "101":
            self._fail(HandshakeError(f"expected 101 Switching Protocols, got {lines[0]!r}"))
            return b""
        if headers.get("sec-websocket-accept", "").encode() != accept_key(self._key):
            self._fail(HandshakeError("wrong Sec-WebSocket-Accept"))
            return b""
        self._parser = FrameParser()
        self.upgraded.set_result(None)
        return rest

    def _fail(self, exc: Exception) -> None:
        if not self.upgraded.done():
            self.upgraded.set_exception(exc)
        if self.transport is not None:
            self.transport.abort()

    def _closed_by_server(self, payload: bytes) -> None:
        self.close_code = struct.unpack("!H", payload[:2])[0] if len(payload) >= 2 else NO_STATUS
        self.close(self.close_code if self.close_code != NO_STATUS else 1000)


async def open_socket(
    url: str, note: Note, source: str | None = None, path: str = "/ws"
) -> LeanSocket:
    """A connection to ``url`` (``http://host:port``) upgraded to a WebSocket; ``source``:
    the local address to connect from (``127.0.0.k`` spreads many connections over more
    ephemeral port ranges than one address has)."""
    parts = urlsplit(url)
    host, port = parts.hostname or "127.0.0.1", parts.port or 80
    loop = asyncio.get_running_loop()
    _, sock = await loop.create_connection(
        lambda: LeanSocket(f"{host}:{port}", path, note),
        host,
        port,
        local_addr=(source, 0) if source else None,
    )
    try:
        await sock.upgraded
    except BaseException:
        sock.close()
        raise
    return sock
