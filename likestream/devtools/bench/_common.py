"""What every scenario shares: the configuration, a result, progress lines, percentiles."""

from __future__ import annotations

import os
import resource
import socket
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

__all__ = [
    "OPEN_FILES",
    "PUSH_ENV",
    "PUSH_INTERVAL_MS",
    "BenchConfig",
    "Result",
    "command",
    "cpu_seconds",
    "free_port",
    "free_port_pair",
    "open_files",
    "percentile",
    "proc_status",
    "raise_open_files",
    "say",
]

BEGAN = time.monotonic()
PUSH_INTERVAL_MS = 100
"""``LIKESTREAM_PUSH_INTERVAL_MS`` of the workers the WebSocket scenarios start."""
PUSH_ENV = {
    "LIKESTREAM_PUSH_INTERVAL_MS": str(PUSH_INTERVAL_MS),
    # Every bench client is local, from a few addresses: no per-address or process cap.
    "LIKESTREAM_PUSH_MAX_CONNECTIONS_PER_ADDRESS": "0",
    "LIKESTREAM_PUSH_MAX_CONNECTIONS": "0",
}
"""Settings of every process the WebSocket scenarios push from."""
OPEN_FILES = 65_536
"""RLIMIT_NOFILE the bench asks for (root may raise the hard limit): 30,000 idle
connections take that many descriptors in the server and as many in the clients."""


def say(message: str) -> None:
    """A progress line on stderr, with the seconds since the bench began."""
    print(f"[bench {time.monotonic() - BEGAN:7.1f}s] {message}", file=sys.stderr, flush=True)


@dataclass(frozen=True)
class BenchConfig:
    events: int = 200_000
    items: int = 10_000
    users: int = 100_000
    memberships: int = 1_000_000
    cap: float = 150.0
    partitions: int = 8
    duration: float = 15.0
    clients: int = 32
    rate: float | None = None
    rates: tuple[int, ...] = (500, 1000, 2000)
    fanout: tuple[int, ...] = (1000, 2000, 5000, 10000, 20000)
    fanout_budget: float = 60.0
    """fanout: no step starts this many seconds after the first on one server."""
    idle: tuple[int, ...] = (5000, 10000, 20000, 30000)
    live_events: int = 100_000
    """ingest-live: events folded with and without live subscribers."""
    live_clients: int = 5000
    ws_procs: int = 1
    seed: int = 1
    peers: tuple[str, ...] = ("kstreams", "quix")
    """ingest: the peer systems to run beside likestream (``_peers.PEERS``)."""
    out: Path = Path("bench-results")
    tool: str = "auto"
    minutes: float = 30.0
    """soak: how long the steady load runs."""
    subscribers: int = 2000
    """soak: live WebSocket clients on the gateway."""
    read_rate: float = 200.0
    """soak: reads per second through the gateway."""
    sample_seconds: float | None = None
    """soak: seconds between samples (default: a minute, or a 30th of a shorter run)."""


@dataclass
class Result:
    scenario: str
    command: str
    figures: dict[str, float]
    baseline: dict[str, float] = field(default_factory=dict)
    ratio: float | None = None
    targets: list[dict[str, Any]] = field(default_factory=list)
    limits: str = ""
    notes: list[str] = field(default_factory=list)
    samples: list[dict[str, float]] = field(default_factory=list)
    """Figures sampled over the run, one row per sample (soak)."""

    def target(self, name: str, value: float | None, op: str, bound: float) -> None:
        met = None if value is None else (value >= bound if op == ">=" else value < bound)
        self.targets.append({"name": name, "value": value, "op": op, "bound": bound, "met": met})


def _flag(value: Any) -> str:
    if isinstance(value, tuple):
        return ",".join(str(v) for v in value) or "none"
    return str(value)


def command(scenario: str, cfg: BenchConfig, *names: str) -> str:
    """The command line that repeats ``scenario`` with the flags ``names`` of ``cfg``."""
    flags = " ".join(f"--{n.replace('_', '-')} {_flag(getattr(cfg, n))}" for n in names)
    return f"likestream bench {scenario} {flags}".strip()


def percentile(values: list[float], pct: float) -> float:
    if not values:
        return float("nan")
    ordered = sorted(values)
    index = min(len(ordered) - 1, max(0, round(pct / 100 * (len(ordered) - 1))))
    return ordered[index]


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def free_port_pair() -> int:
    for _ in range(50):
        port = free_port()
        with socket.socket() as probe:
            if port < 65000 and probe.connect_ex(("127.0.0.1", port + 1)) != 0:
                return port
    raise RuntimeError("no free port pair")


def cpu_seconds(pid: int) -> float:
    """User plus system CPU time of process ``pid`` so far; 0 when it is gone."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except OSError:
        return 0.0
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def proc_status(pid: int, key: str) -> int:
    """A ``/proc/PID/status`` figure in bytes (``VmRSS``, ``VmHWM``); 0 when it is gone."""
    try:
        text = Path(f"/proc/{pid}/status").read_text()
    except OSError:
        return 0
    for line in text.splitlines():
        if line.startswith(key + ":"):
            return int(line.split()[1]) * 1024
    return 0


def open_files(pid: int) -> int:
    """Open file descriptors of process ``pid`` (``/proc/PID/fd``); 0 when it is gone."""
    try:
        return len(os.listdir(f"/proc/{pid}/fd"))
    except OSError:
        return 0


def raise_open_files(want: int = OPEN_FILES) -> int:
    """Raise this process's RLIMIT_NOFILE soft limit to the hard one, and as root the hard
    one too, to ``want`` (within the kernel's ``fs.nr_open``); returns the new limit.

    Workers, gateways and helper processes started afterwards inherit it: tens of
    thousands of WebSocket connections need as many descriptors on each side.
    """
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if hard == resource.RLIM_INFINITY:
        hard = max(soft, 1 << 20)
    if hard < want and os.geteuid() == 0:
        try:
            ceiling = int(Path("/proc/sys/fs/nr_open").read_text())
        except (OSError, ValueError):
            ceiling = want
        try:
            resource.setrlimit(resource.RLIMIT_NOFILE, (min(want, ceiling),) * 2)
            return min(want, ceiling)
        except (OSError, ValueError):
            pass  # e.g. a container without CAP_SYS_RESOURCE: the hard limit stands
    if soft < hard:
        resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
    return hard
