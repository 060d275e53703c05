"""``idle``: idle subscribed WebSocket connections on one gateway process, in steps
(``--idle``, default 5,000, 10,000, 20,000, 30,000); the gateway's RSS at each step and
per connection.

Each connection subscribes to one of ``IDLE_ITEMS`` items that nobody likes, so after the
first frame (the current count, 0) only the server's heartbeat pings flow: what is measured
is what an open, subscribed connection costs the push tier to hold. No worker runs; the
gateway only tails the (empty) counts topic. A step that would need more file descriptors
than RLIMIT_NOFILE allows is a note, not a failure.
"""

from __future__ import annotations

import time
from dataclasses import dataclass

from likestream.devtools.bench._audience import helpers
from likestream.devtools.bench._common import (
    PUSH_ENV,
    BenchConfig,
    Result,
    command,
    proc_status,
    raise_open_files,
    say,
)
from likestream.devtools.bench._fanout import FD_SPARE, MIB, fd_reason
from likestream.devtools.bench._lab import Lab, create_topics

__all__ = ["idle"]

IDLE_ITEMS = 1000
RSS_BOUND = 1 << 30
TARGET = 20_000
KIB = 1024


@dataclass
class IdleStep:
    connections: int
    rss: int
    connect_s: float

    def per_connection(self, base: int) -> float:
        return (self.rss - base) / self.connections

    def line(self, base: int) -> str:
        return (
            f"{self.connections:,} idle connections: gateway RSS {self.rss / MIB:,.0f} MiB, "
            f"{self.per_connection(base) / KIB:.1f} KiB per connection over the "
            f"{base / MIB:,.0f} MiB with none; connected in {self.connect_s:.1f}s"
        )


async def idle(lab: Lab, cfg: BenchConfig) -> Result:
    open_files = raise_open_files()
    settings = lab.cluster("idle")
    await create_topics(settings)
    gateway = lab.gateway(settings, **PUSH_ENV)
    await gateway.start_ready()
    base = proc_status(gateway.pid, "VmRSS")
    steps: list[IdleStep] = []
    notes: list[str] = []
    connected = 0
    async with helpers(cfg.ws_procs, settings.data_dir.parent / "clients.log") as crowd:
        for wanted in sorted(cfg.idle):
            target = wanted
            reason = fd_reason(wanted, cfg.ws_procs, open_files)
            if reason:
                notes.append(reason)
                # The most this machine's descriptors allow, when that is still a step up.
                target = _fitting(connected, cfg.ws_procs, open_files)
                if not target:
                    break
                notes.append(f"{target:,} tried instead: the most that fit")
            say(f"idle: {target:,} subscribed connections on one gateway")
            began = time.monotonic()
            subscriptions = [[f"idle:{i % IDLE_ITEMS}"] for i in range(connected, target)]
            failed, error = await crowd.open(gateway.url, subscriptions)
            if failed:
                notes.append(f"{target:,} connections: {failed:,} refused, first: {error}")
                break
            gateway.check_alive()
            step = IdleStep(target, proc_status(gateway.pid, "VmRSS"), time.monotonic() - began)
            closed = (await crowd.stats())["closed"]
            if closed:  # RSS of fewer connections than the step says: not a figure
                notes.append(f"{target:,} connections: {closed:,} were closed by the gateway")
                break
            say(f"idle: {step.line(base)}")
            steps.append(step)
            connected = target
            if target != wanted:
                break
    return _idle_result(cfg, steps, base, notes)


def _fitting(connected: int, procs: int, open_files: int) -> int:
    """The largest thousand of connections above ``connected`` that fits the descriptors
    (see :func:`fd_reason`), or 0."""
    most = (open_files - FD_SPARE) // 1000 * 1000
    while most > connected and fd_reason(most, procs, open_files):
        most -= 1000
    return most if most > connected else 0


def _idle_result(cfg: BenchConfig, steps: list[IdleStep], base: int, notes: list[str]) -> Result:
    under = [s for s in steps if s.rss < RSS_BOUND]
    best = under[-1] if under else None
    figures: dict[str, float] = {
        "connections": best.connections if best else 0,
        "rss_mib": round(best.rss / MIB) if best else float("nan"),
        "kib_per_connection": round(best.per_connection(base) / KIB, 1) if best else float("nan"),
        "rss_without_connections_mib": round(base / MIB),
    }
    result = Result(
        "idle",
        command("idle", cfg, "idle", "ws_procs"),
        figures,
        limits=(
            "what one gateway process holds per open WebSocket connection subscribed to one "
            "item: aiohttp's request, WebSocketResponse and frame reader, the handler's "
            "task (its one task: the hub writes frames straight to the socket), the "
            "subscriber (two small dicts), plus the kernel socket (its buffers are kernel "
            "memory, not RSS); the largest step whose RSS stays under 1 GiB is the figure. "
            "RLIMIT_NOFILE is 20,000 here and root may not raise it (no CAP_SYS_RESOURCE), "
            "so one process holds at most about 19,000 connections on this machine"
        ),
        notes=[s.line(base) for s in steps] + notes,
    )
    result.target("idle connections under 1 GiB RSS", figures["connections"], ">=", TARGET)
    return result
