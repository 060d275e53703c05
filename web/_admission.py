"""Caps on the live connections of one process: in total, and per client address.

A full process refuses a new connection politely and at once (WebSocket close code
1013, SSE 503 with Retry-After), so that the connections it holds keep their latency
instead of everyone slowing down. The address is the TCP peer, never a header a client
can set; behind a proxy every client shares the proxy's address, so there the
per-address cap is off (0) until forwarded addresses can be trusted.
"""

from __future__ import annotations

__all__ = ["Admission"]


class Admission:
    def __init__(self, max_connections: int, per_address: int) -> None:
        """Caps of 0 mean none."""
        self.max_connections = max_connections
        self.per_address = per_address
        self.connections = 0
        self._by_address: dict[str, int] = {}

    def enter(self, address: str) -> str | None:
        """Count a new connection from ``address``; or, when it does not fit, the cap it
        hit (``connections`` or ``address``) and nothing counted."""
        if self.max_connections and self.connections >= self.max_connections:
            return "connections"
        held = self._by_address.get(address, 0)
        if self.per_address and held >= self.per_address:
            return "address"
        self.connections += 1
        self._by_address[address] = held + 1
        return None

    def leave(self, address: str) -> None:
        """A connection counted by :meth:`enter` ended."""
        self.connections -= 1
        held = self._by_address[address] - 1
        if held:
            self._by_address[address] = held
        else:
            del self._by_address[address]  # memory follows the addresses connected now

    def addresses(self) -> int:
        return len(self._by_address)
