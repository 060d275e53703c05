"""WebSocket clients of the push scenarios (latency, fanout, idle, ingest-live) and the
delay of each change.

An :class:`Audience` is a set of ``/ws`` connections (lean ones, ``_wsclient``, connecting
from 127.0.0.1 to 127.0.0.``SOURCES`` in turn), each subscribed to some items, noting
when each count arrives. A change is known by its count: every event of these scenarios is
a like by a fresh user, so the n-th event produced on an item makes its count n, and change
n is delivered by the first frame whose count is n or more (a coalesced frame delivers
several). Its delay is that frame's receive time minus the event's produce time.

Times are ``time.monotonic()``: CLOCK_MONOTONIC, one clock for every process on the
machine, so the receive times of a helper process compare with the bench's produce times.
The bench runs audiences in helper processes (:class:`Helpers`, ``serve_stdio``
speaking JSON lines on stdin and stdout), so that reading
frames and producing events do not delay each other in one event loop.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import sys
import time
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, BinaryIO

from likestream.devtools.bench._common import raise_open_files
from likestream.devtools.bench._wsclient import PING, TRY_AGAIN_LATER, LeanSocket, open_socket

__all__ = [
    "Audience",
    "Client",
    "Delays",
    "Helpers",
    "Sent",
    "Timeline",
    "helpers",
    "serve_stdio",
    "source_address",
    "subscribe",
    "wait_caught_up",
]

CONNECTING = 100  # handshakes in flight at once
ACK_SECONDS = 30.0
SOURCES = 64  # local addresses 127.0.0.1..127.0.0.64

Sent = dict[str, tuple[int, list[float]]]
"""Per item: the first count produced, and the produce times of that count and the next."""


@dataclass
class Delays:
    """Delays as counts per 0.1 ms bucket, so that processes merge them; ``missing`` are
    changes never delivered (dropped clients, or later than the wait), counted as late
    beyond any bucket."""

    buckets: dict[int, int] = field(default_factory=dict)
    missing: int = 0

    def add(self, ms: float) -> None:
        key = max(0, int(ms * 10))
        self.buckets[key] = self.buckets.get(key, 0) + 1

    def merge(self, other: Delays) -> None:
        for key, count in other.buckets.items():
            self.buckets[key] = self.buckets.get(key, 0) + count
        self.missing += other.missing

    @property
    def total(self) -> int:
        return sum(self.buckets.values()) + self.missing

    def percentile(self, pct: float) -> float:
        """Milliseconds; inf when the rank falls among the missing, nan when empty."""
        if not self.total:
            return float("nan")
        rank = round(pct / 100 * (self.total - 1))
        for key in sorted(self.buckets):
            rank -= self.buckets[key]
            if rank < 0:
                return key / 10
        return float("inf")

    def max(self) -> float:
        if self.missing:
            return float("inf")
        return max(self.buckets, default=float("nan")) / 10

    def to_json(self) -> dict[str, Any]:
        return {"buckets": self.buckets, "missing": self.missing}

    @classmethod
    def from_json(cls, doc: dict[str, Any]) -> Delays:
        return cls({int(k): v for k, v in doc["buckets"].items()}, doc["missing"])


class Timeline:
    """The produce time of every count of some items, on a grid of intervals: the soak's
    changes, each a like by a fresh user (count n is the n-th event on its item), whose
    delays are counted in the interval their event was produced in."""

    def __init__(self, origin: float, every: float) -> None:
        self.origin = origin
        self.every = every
        self.times: dict[str, list[float]] = {}

    def extend(self, times: dict[str, list[float]]) -> None:
        for item, more in times.items():
            self.times.setdefault(item, []).extend(more)

    def interval(self, at: float) -> int:
        return int((at - self.origin) // self.every)

    def sent(self) -> Sent:
        return {item: (1, times) for item, times in self.times.items() if times}


class Client:
    """One connection: its items, the newest count of each, the frames since the mark."""

    def __init__(self, items: list[str]) -> None:
        self.items = items
        self.latest: dict[str, int] = {}
        self.base: dict[str, int] = {}
        self.frames: list[tuple[float, str, int]] = []
        self.closed = False
        self.close_code: int | None = None
        """The server's close code; 1013 (``TRY_AGAIN_LATER``): dropped as too slow."""
        self.received = 0
        """``likes`` frames, every one."""
        self._news: asyncio.Event | None = None

    def note(self, at: float, item: str, likes: int) -> None:
        self.received += 1
        # A frame no newer than what the client shows delivers no change: not kept.
        if likes > self.latest.get(item, -1):
            self.frames.append((at, item, likes))
            self.latest[item] = likes
        if self._news is not None:
            self._news.set()

    def lost(self, code: int | None) -> None:
        self.closed, self.close_code = True, code
        if self._news is not None:
            self._news.set()

    @property
    def dropped(self) -> bool:
        return self.close_code == TRY_AGAIN_LATER

    async def reach(self, item: str, likes: int) -> None:
        """Until a frame showed ``likes`` or more for ``item`` (or the connection closed)."""
        await self._until(lambda: self.latest.get(item, -1) >= likes or self.closed)

    async def ended(self) -> None:
        """Until the connection is closed."""
        await self._until(lambda: self.closed)

    async def _until(self, done: Callable[[], bool]) -> None:
        self._news = self._news or asyncio.Event()
        while not done():
            self._news.clear()
            await self._news.wait()

    def mark(self) -> None:
        self.base = dict(self.latest)
        self.frames.clear()

    def settle(self, timeline: Timeline, into: dict[int, Delays], final: bool) -> None:
        """Add the delay of each change the frames since the last call show into the
        interval of ``into`` its event was produced in, and forget those frames; a frame
        showing a count whose produce time is not known yet waits for the next call.
        ``final``: every known change not shown yet is missing, except on a closed
        connection (a subscriber lost, counted as such rather than as late frames)."""
        done = 0
        for at, item, likes in self.frames:
            times = timeline.times.get(item)
            if times is not None:
                if likes > len(times):
                    break
                shown = self.base.get(item, 0)
                for count in range(shown + 1, likes + 1):
                    produced = times[count - 1]
                    slot = into.setdefault(timeline.interval(produced), Delays())
                    slot.add((at - produced) * 1000)
                self.base[item] = max(shown, likes)
            done += 1
        del self.frames[:done]
        if final and not self.closed:
            for item in self.items:
                times = timeline.times.get(item, [])
                for count in range(self.base.get(item, 0) + 1, len(times) + 1):
                    into.setdefault(timeline.interval(times[count - 1]), Delays()).missing += 1

    def caught_up(self, final: dict[str, int]) -> bool:
        return self.closed or all(self.latest.get(i, 0) >= final.get(i, 0) for i in self.items)

    def delays(self, sent: Sent, into: Delays) -> None:
        """Add the delay of every change in ``sent`` to this client's items."""
        shown = dict(self.base)
        for at, item, likes in self.frames:
            entry = sent.get(item)
            if entry is None:
                continue
            first, times = entry
            before = max(shown.get(item, 0), first - 1)
            for count in range(before + 1, min(likes, first + len(times) - 1) + 1):
                into.add((at - times[count - first]) * 1000)
            shown[item] = max(before, likes)
        for item in self.items:
            if item in sent:
                first, times = sent[item]
                into.missing += max(0, first + len(times) - 1 - max(shown.get(item, 0), first - 1))


def source_address(n: int) -> str:
    """The local address of the ``n``-th connection: 127.0.0.1 to 127.0.0.SOURCES in turn,
    so that no one address runs out of ephemeral ports (about 28,000 each)."""
    return f"127.0.0.{1 + n % SOURCES}"


async def subscribe(url: str, client: Client, source: str | None = None) -> LeanSocket:
    """A lean connection subscribed to ``client.items``: returns once the server answered a
    ping sent after the subscribe frame (it reads a connection's frames in order), so the
    subscription is live; an ``error`` frame before that fails it."""
    sock = await open_socket(url, client.note, source)
    sock.on_lost = client.lost
    try:
        sock.send_json({"op": "subscribe", "items": client.items})
        sock.send(PING, b"subscribed?")
        await asyncio.wait_for(asyncio.shield(sock.ponged), ACK_SECONDS)
        if sock.errors:
            raise RuntimeError(f"subscribe refused: {sock.errors[0].decode(errors='replace')}")
    except BaseException:
        sock.close()
        raise
    return sock


class Audience:
    """WebSocket clients of one process (lean ones, :mod:`._wsclient`), each subscribed to
    its items."""

    def __init__(self) -> None:
        self.clients: list[Client] = []
        self._sockets: list[LeanSocket] = []
        self._opened = 0
        self.timeline: Timeline | None = None

    async def open(self, url: str, subscriptions: list[list[str]]) -> tuple[int, str]:
        """One more client per list of items, subscribed; returns how many failed and the
        first error."""
        gate = asyncio.Semaphore(CONNECTING)
        outcomes = await asyncio.gather(
            *(self._connect(url, items, gate) for items in subscriptions), return_exceptions=True
        )
        errors = [repr(o) for o in outcomes if isinstance(o, BaseException)]
        return len(errors), errors[0] if errors else ""

    async def _connect(self, url: str, items: list[str], gate: asyncio.Semaphore) -> None:
        async with gate:
            source = source_address(self._opened)
            self._opened += 1
            client = Client(items)
            self._sockets.append(await subscribe(url, client, source))
            self.clients.append(client)

    def mark(self) -> None:
        """From now on: frames count from the counts each client has now."""
        for client in self.clients:
            client.mark()

    async def collect(self, sent: Sent, wait: float) -> tuple[Delays, int, int]:
        """Wait up to ``wait`` s for every client to show the last change of ``sent``,
        then the delays of its changes, how many clients were closed and how many of
        those the server dropped (close code 1013)."""
        await wait_caught_up(self.clients, sent, wait)
        delays = Delays()
        for client in self.clients:
            client.delays(sent, delays)
        closed = sum(c.closed for c in self.clients)
        return delays, closed, sum(c.dropped for c in self.clients)

    async def settle(
        self, times: dict[str, list[float]], grid: tuple[float, float], wait: float | None
    ) -> dict[int, Delays]:
        """The delays of the changes shown since the last call, by the interval of the
        grid (origin, seconds) their event was produced in; ``times``: the produce times
        since the last call. ``wait``: the last call, after waiting up to ``wait`` s for
        every client to show every change (see :meth:`Client.settle`)."""
        if self.timeline is None:
            self.timeline = Timeline(*grid)
        self.timeline.extend(times)
        if wait is not None:
            await wait_caught_up(self.clients, self.timeline.sent(), wait)
        into: dict[int, Delays] = {}
        for client in self.clients:
            client.settle(self.timeline, into, final=wait is not None)
        return into

    def stats(self) -> dict[str, int]:
        """Likes frames received so far, clients closed, and dropped (code 1013)."""
        return {
            "received": sum(c.received for c in self.clients),
            "closed": sum(c.closed for c in self.clients),
            "dropped": sum(c.dropped for c in self.clients),
        }

    def close(self) -> None:
        for sock in self._sockets:
            sock.close()
        self._sockets.clear()


async def wait_caught_up(clients: list[Client], sent: Sent, wait: float) -> None:
    """Wait up to ``wait`` s until every client shows the last change of ``sent``."""
    final = {item: first + len(times) - 1 for item, (first, times) in sent.items()}
    deadline = time.monotonic() + wait
    while time.monotonic() < deadline:
        if all(c.caught_up(final) for c in clients):
            return
        await asyncio.sleep(0.05)


# -- the helper process ------------------------------------------------------------------


async def _serve(audience: Audience, request: dict[str, Any]) -> dict[str, Any]:
    if request["op"] == "open":
        failed, error = await audience.open(request["url"], request["subscriptions"])
        return {"clients": len(audience.clients), "failed": failed, "error": error}
    if request["op"] == "mark":
        audience.mark()
        return {"clients": len(audience.clients)}
    if request["op"] == "stats":
        return audience.stats()
    if request["op"] == "settle":
        grid = (request["origin"], request["every"])
        settled = await audience.settle(request["times"], grid, request["wait"])
        return {"delays": {k: d.to_json() for k, d in settled.items()}, **audience.stats()}
    sent = {item: (first, times) for item, (first, times) in request["sent"].items()}
    delays, closed, dropped = await audience.collect(sent, request["wait"])
    return {"delays": delays.to_json(), "closed": closed, "dropped": dropped}


def serve_stdio() -> None:
    """The helper process: requests on stdin, one JSON line each; answers on stdout."""
    asyncio.run(_serve_lines())


async def _serve_lines() -> None:
    raise_open_files()
    audience = Audience()
    try:
        while line := await asyncio.to_thread(sys.stdin.readline):
            answer = await _serve(audience, json.loads(line))
            sys.stdout.write(json.dumps(answer) + "\n")
            sys.stdout.flush()
    finally:
        audience.close()


class Helpers:
    """Audiences in helper processes; subscriptions are dealt out in turn."""

    def __init__(self, procs: list[asyncio.subprocess.Process]) -> None:
        self._procs = procs
        self._turn = 0

    @property
    def pids(self) -> list[int]:
        return [proc.pid for proc in self._procs]

    async def _ask(self, proc: asyncio.subprocess.Process, request: dict[str, Any]) -> Any:
        assert proc.stdin is not None
        assert proc.stdout is not None
        proc.stdin.write(json.dumps(request).encode() + b"\n")
        await proc.stdin.drain()
        line = await proc.stdout.readline()
        if not line:
            raise RuntimeError(f"WebSocket helper exited with {await proc.wait()}")
        return json.loads(line)

    async def open(self, url: str, subscriptions: list[list[str]]) -> tuple[int, str]:
        """As :meth:`Audience.open`, spread over the helpers."""
        shares: list[list[list[str]]] = [[] for _ in self._procs]
        for items in subscriptions:
            shares[self._turn % len(shares)].append(items)
            self._turn += 1
        answers = await asyncio.gather(
            *(
                self._ask(p, {"op": "open", "url": url, "subscriptions": s})
                for p, s in zip(self._procs, shares, strict=True)
            )
        )
        errors = [a["error"] for a in answers if a["error"]]
        return sum(a["failed"] for a in answers), errors[0] if errors else ""

    async def mark(self) -> None:
        await asyncio.gather(*(self._ask(p, {"op": "mark"}) for p in self._procs))

    async def stats(self) -> dict[str, int]:
        """As :meth:`Audience.stats`, summed over the helpers."""
        answers = await asyncio.gather(*(self._ask(p, {"op": "stats"}) for p in self._procs))
        return {key: sum(a[key] for a in answers) for key in ("received", "closed", "dropped")}

    async def settle(
        self, times: dict[str, list[float]], grid: tuple[float, float], wait: float | None
    ) -> tuple[dict[int, Delays], dict[str, int]]:
        """As :meth:`Audience.settle`, merged over the helpers, with :meth:`stats`."""
        request = {"op": "settle", "times": times, "origin": grid[0], "every": grid[1]}
        request["wait"] = wait
        answers = await asyncio.gather(*(self._ask(p, request) for p in self._procs))
        delays: dict[int, Delays] = {}
        for answer in answers:
            for key, doc in answer["delays"].items():
                delays.setdefault(int(key), Delays()).merge(Delays.from_json(doc))
        stats = {k: sum(a[k] for a in answers) for k in ("received", "closed", "dropped")}
        return delays, stats

    async def collect(self, sent: Sent, wait: float) -> tuple[Delays, int, int]:
        """As :meth:`Audience.collect`, over the helpers."""
        request = {"op": "collect", "sent": sent, "wait": wait}
        answers = await asyncio.gather(*(self._ask(p, request) for p in self._procs))
        delays = Delays()
        for answer in answers:
            delays.merge(Delays.from_json(answer["delays"]))
        return delays, sum(a["closed"] for a in answers), sum(a["dropped"] for a in answers)


def _append(log: Path) -> BinaryIO:
    return open(log, "ab")


@contextlib.asynccontextmanager
async def helpers(count: int, log: Path) -> AsyncIterator[Helpers]:
    """``count`` helper processes, their stderr appended to ``log``; ended on exit."""
    procs: list[asyncio.subprocess.Process] = []
    with _append(log) as err:
        try:
            for _ in range(count):
                procs.append(
                    await asyncio.create_subprocess_exec(
                        sys.executable,
                        "-c",
                        f"from {__name__} import serve_stdio; serve_stdio()",
                        stdin=asyncio.subprocess.PIPE,
                        stdout=asyncio.subprocess.PIPE,
                        stderr=err,
                        limit=1 << 26,
                    )
                )
            yield Helpers(procs)
        finally:
            for proc in procs:
                if proc.stdin is not None:
                    proc.stdin.close()
            for proc in procs:
                try:
                    await asyncio.wait_for(proc.wait(), 30)
                except TimeoutError:
                    proc.kill()
                    await proc.wait()
