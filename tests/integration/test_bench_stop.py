"""``likestream bench`` stopped by SIGTERM (a CI job's timeout, ``kill``) ends as a normal
run does: its broker, workers and gateways stopped, its temporary state dir removed."""

from __future__ import annotations

import asyncio
import os
import re
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

import pytest

pytestmark = pytest.mark.integration

LIMIT = 180.0  # seconds; generous for a shared two-core machine (the broker starts first)


def _parent(pid: int) -> int | None:
    """The parent of a live process; None when it is gone or a zombie."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    state, ppid = stat.rpartition(")")[2].split()[:2]  # the name may hold spaces
    return None if state == "Z" else int(ppid)


def descendants(root: int) -> dict[int, str]:
    """The live processes below ``root``, with their command lines."""
    pids = [int(p.name) for p in Path("/proc").iterdir() if p.name.isdigit()]
    parents = {pid: _parent(pid) for pid in pids}
    found: dict[int, str] = {}
    frontier = [root]
    while frontier:
        parent = frontier.pop()
        for pid, ppid in parents.items():
            if ppid == parent and pid not in found:
                try:
                    line = Path(f"/proc/{pid}/cmdline").read_bytes()
                except OSError:
                    continue  # gone meanwhile
                found[pid] = line.replace(b"\0", b" ").decode(errors="replace")
                frontier.append(pid)
    return found


async def until(what: str, condition: Callable[[], bool], limit: float = LIMIT) -> None:
    deadline = time.monotonic() + limit
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError(f"not within {limit:.0f}s: {what}")
        await asyncio.sleep(0.2)


def _accepts(port: int) -> bool:
    with socket.socket() as sock:
        sock.settimeout(1)
        return sock.connect_ex(("127.0.0.1", port)) == 0


def _bench(args: list[str], out: Path, temp: Path, log: Path) -> subprocess.Popen[bytes]:
    with open(log, "wb") as output:
        return subprocess.Popen(
            [sys.executable, "-m", "likestream", "bench", *args, "--out", str(out / "out")],
            env={**os.environ, "TMPDIR": str(temp)},
            stdout=output,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
        )


async def test_sigterm_stops_the_labs_processes_and_removes_its_state(tmp_path: Path) -> None:
    temp = tmp_path / "tmp"  # where the bench makes its state dir
    temp.mkdir()
    log = tmp_path / "bench.log"
    bench = _bench(["latency", "--duration", "600", "--rate", "20"], tmp_path, temp, log)
    children: dict[int, str] = {}
    try:

        def broker_port() -> int | None:
            found = re.search(r"starting a broker on port (\d+)", log.read_text(errors="replace"))
            return int(found.group(1)) if found else None

        def up(kind: str) -> bool:
            assert bench.poll() is None, log.read_text(errors="replace")
            return any(kind in line for line in descendants(bench.pid).values())

        await until("the bench says where its broker listens", lambda: broker_port() is not None)
        await until("its broker is up", lambda: up("kafka.Kafka") and _accepts(broker_port() or 0))
        await until("its worker runs", lambda: up("likestream worker"))
        children = descendants(bench.pid)
        assert [p for p, line in children.items() if "kafka.Kafka" in line]
        assert list(temp.glob("likestream-bench-*"))

        bench.send_signal(signal.SIGTERM)
        await until("the bench exits", lambda: bench.poll() is not None)
        await until(
            f"every process the bench started is gone: {children}",
            lambda: all(_parent(pid) is None for pid in children),
        )
        assert list(temp.glob("likestream-bench-*")) == []  # its state dir removed
        assert bench.returncode == 128 + signal.SIGTERM, log.read_text(errors="replace")
        assert "stopped by SIGTERM" in log.read_text(errors="replace")
    finally:  # the test failed: leave nothing behind
        if bench.poll() is None:
            children.update(descendants(bench.pid))
            bench.kill()
            bench.wait()
        for pid in children:
            if _parent(pid) is not None:
                os.kill(pid, signal.SIGKILL)
