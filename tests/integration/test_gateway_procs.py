"""``likestream gateway --procs 2``: two gateway processes on one port (issue 14).

The supervisor starts two children that bind the same port with SO_REUSEPORT: new
connections reach both (``/status`` answers with either pid), ``/metrics`` of whichever
child a scrape reaches adds up both (requests counted by each, connections held by
each), SIGTERM closes their WebSockets, stops every child and the command exits 0, and
a child that dies makes the command stop the other and exit 1.
"""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import sys
import time
from collections import Counter
from pathlib import Path

import aiohttp
import pytest
from aiohttp import WSMsgType
from conftest import Cluster, Worker
from prometheus_client.parser import text_string_to_metric_families

pytestmark = pytest.mark.integration

PROCS = 2
LIMIT = 60.0  # seconds for a condition on a shared 2-core machine; never a figure


class Gateway(Worker):
    """``likestream gateway --procs N`` as the supervisor process."""

    def __init__(self, base: Worker, procs: int) -> None:
        super().__init__(base.env, base.log, "gateway")
        self.procs = procs

    def start(self) -> None:
        with open(self.log, "ab") as out:
            self.proc = subprocess.Popen(
                [sys.executable, "-m", "likestream", "gateway", "--procs", str(self.procs)],
                env={**os.environ, **self.env},
                stdout=out,
                stderr=subprocess.STDOUT,
            )


def _parent(pid: int) -> int:
    """The parent pid of ``pid``, from /proc (Linux)."""
    stat = Path(f"/proc/{pid}/stat").read_text()
    return int(stat.rsplit(")", 1)[1].split()[1])


def _alive(pid: int) -> bool:
    """Whether ``pid`` runs (an exited orphan may stay a zombie until init reaps it)."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except FileNotFoundError:
        return False
    return stat.rsplit(")", 1)[1].split()[0] != "Z"


async def _status_once(url: str) -> dict[str, object]:
    """``GET /status`` on a connection of its own: the kernel picks the process anew."""
    connector = aiohttp.TCPConnector(force_close=True)
    async with (
        aiohttp.ClientSession(connector=connector) as http,
        http.get(f"{url}/status") as resp,
    ):
        assert resp.status == 200, await resp.text()
        doc: dict[str, object] = await resp.json()
        return doc


async def _sample(http: aiohttp.ClientSession, url: str, name: str) -> float | None:
    """The value of one unlabelled sample, or the sum over a family's ``_total`` samples
    with the given route label, from ``/metrics``."""
    async with http.get(f"{url}/metrics") as resp:
        text = await resp.text()
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            if sample.name == name and not sample.labels:
                return float(sample.value)
    return None


async def _requests_served(http: aiohttp.ClientSession, url: str, route: str) -> float:
    async with http.get(f"{url}/metrics") as resp:
        text = await resp.text()
    return sum(
        s.value
        for family in text_string_to_metric_families(text)
        for s in family.samples
        if s.name == "likestream_http_requests_total" and s.labels.get("route") == route
    )


async def _until_ws_connections(http: aiohttp.ClientSession, gateway: Gateway, n: int) -> None:
    deadline = time.monotonic() + LIMIT
    while (got := await _sample(http, gateway.url, "likestream_ws_connections")) != n:
        assert time.monotonic() < deadline, f"likestream_ws_connections {got}, not {n}"
        await asyncio.sleep(0.2)


async def _both_pids(gateway: Gateway) -> Counter[int]:
    """``/status`` on fresh connections until both children answered ready; the number
    of answers per pid."""
    served: Counter[int] = Counter()
    ready: set[int] = set()
    deadline = time.monotonic() + LIMIT
    while len(ready) < PROCS:
        assert time.monotonic() < deadline, f"answers per pid: {dict(served)}"
        assert gateway.proc is not None
        assert gateway.proc.poll() is None, gateway.log_tail()
        doc = await _status_once(gateway.url)
        pid = doc["pid"]
        assert isinstance(pid, int)
        served[pid] += 1
        if doc["ready"]:
            ready.add(pid)
    return served


async def test_two_processes_share_the_port_and_the_metrics(
    cluster: Cluster, http: aiohttp.ClientSession
) -> None:
    gateway = Gateway(cluster.worker("gw", command="gateway"), PROCS)
    async with gateway.running():
        assert gateway.proc is not None
        served = await _both_pids(gateway)
        pids = set(served)
        assert len(pids) == PROCS
        assert gateway.proc.pid not in pids
        assert {_parent(pid) for pid in pids} == {gateway.proc.pid}

        # Requests counted by each process add up in any one scrape.
        assert await _requests_served(http, gateway.url, "/status") == sum(served.values())

        # So do the connections each holds (a livesum gauge): every scrape shows all the
        # WebSockets, whichever process holds each, and fewer once some are closed.
        sockets = [await http.ws_connect(f"{gateway.url}/ws") for _ in range(6)]
        await _until_ws_connections(http, gateway, 6)
        for ws in sockets[:3]:
            await ws.close()
        await _until_ws_connections(http, gateway, 3)

        # SIGTERM: each process closes the WebSockets it holds, and all exit 0.
        gateway.proc.send_signal(signal.SIGTERM)
        for ws in sockets[3:]:
            message = await ws.receive(timeout=LIMIT)
            assert message.type in (WSMsgType.CLOSE, WSMsgType.CLOSED, WSMsgType.CLOSING)
        assert await asyncio.to_thread(gateway.proc.wait, LIMIT) == 0, gateway.log_tail()

    assert not any(_alive(pid) for pid in pids)
    assert "process 0" in gateway.log.read_text()


async def test_a_dead_process_stops_the_gateway(cluster: Cluster) -> None:
    gateway = Gateway(cluster.worker("gw2", command="gateway"), PROCS)
    gateway.start()
    try:
        await gateway.wait_ready()
        pids = set(await _both_pids(gateway))
        victim = min(pids)
        os.kill(victim, signal.SIGKILL)
        assert gateway.proc is not None
        code = await asyncio.to_thread(gateway.proc.wait, LIMIT)
        assert code == 1
        assert not any(_alive(pid) for pid in pids)
        assert f"(pid {victim}) exited with -9; stopping the others" in gateway.log.read_text()
    finally:
        if gateway.proc is not None and gateway.proc.poll() is None:
            gateway.kill()


async def test_processes_stop_when_the_supervisor_is_gone(cluster: Cluster) -> None:
    gateway = Gateway(cluster.worker("gw3", command="gateway"), PROCS)
    gateway.start()
    pids: set[int] = set()
    try:
        await gateway.wait_ready()
        pids = set(await _both_pids(gateway))
        gateway.kill()  # SIGKILL: no chance to stop them
        deadline = time.monotonic() + LIMIT
        while any(_alive(pid) for pid in pids):
            assert time.monotonic() < deadline, "gateway processes outlived their supervisor"
            await asyncio.sleep(0.2)
        assert gateway.log.read_text().count("is gone; stopping") == PROCS
    finally:
        for pid in pids:
            if _alive(pid):
                os.kill(pid, signal.SIGKILL)
