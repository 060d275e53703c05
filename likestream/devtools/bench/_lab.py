"""The lab: a broker of the bench's own, the topic sets and worker processes of each scenario."""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
import subprocess
import sys
import time
import uuid
from pathlib import Path

import aiohttp
from aiokafka import TopicPartition

from likestream.config._settings import Settings, load_settings
from likestream.devtools._broker import Broker, default_cache_dir
from likestream.devtools.bench._common import free_port, free_port_pair, proc_status, say
from likestream.kafka._factory import KafkaConfig
from likestream.kafka._topics import ensure_topics

__all__ = [
    "Lab",
    "WorkerProcess",
    "create_topics",
    "disk_bytes",
    "partitions_of",
    "topic_records",
    "wait_committed",
]


class WorkerProcess:
    """One ``likestream worker`` (or ``likestream gateway``) OS process."""

    def __init__(
        self, settings: Settings, log: Path, extra: dict[str, str], command: str = "worker"
    ) -> None:
        self.settings = settings
        self.log = log
        self.extra = extra
        """More ``LIKESTREAM_*`` settings, e.g. the push interval."""
        self.command = command
        self.proc: subprocess.Popen[bytes] | None = None

    @property
    def pid(self) -> int:
        assert self.proc is not None
        return self.proc.pid

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.settings.web_port}"

    @property
    def env(self) -> dict[str, str]:
        s = self.settings
        return {
            "LIKESTREAM_KAFKA": s.kafka,
            "LIKESTREAM_TOPIC": s.topic,
            "LIKESTREAM_COUNTS_TOPIC": s.counts_topic,
            "LIKESTREAM_TRENDING_TOPIC": s.trending_topic,
            "LIKESTREAM_APP_ID": s.app_id,
            "LIKESTREAM_PARTITIONS": str(s.partitions),
            "LIKESTREAM_DATA_DIR": str(s.data_dir),
            "LIKESTREAM_WEB_HOST": s.web_host,
            "LIKESTREAM_WEB_PORT": str(s.web_port),
            **self.extra,
        }

    def start(self) -> None:
        clean = {k: v for k, v in os.environ.items() if not k.startswith("LIKESTREAM_")}
        if "LIKESTREAM_CACHE_DIR" in os.environ:
            clean["LIKESTREAM_CACHE_DIR"] = os.environ["LIKESTREAM_CACHE_DIR"]
        with open(self.log, "ab") as out:
            self.proc = subprocess.Popen(
                [sys.executable, "-m", "likestream", self.command],
                env={**clean, **self.env},
                stdout=out,
                stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL,
            )

    def stop(self, timeout: float = 60.0) -> None:
        if self.proc is None or self.proc.poll() is not None:
            return
        self.proc.send_signal(signal.SIGTERM)
        try:
            self.proc.wait(timeout)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()

    def status(self, key: str) -> int:
        """A ``/proc/PID/status`` figure in bytes (``VmRSS``, ``VmHWM``)."""
        return proc_status(self.pid, key)

    def check_alive(self) -> None:
        if self.proc is not None and self.proc.poll() is not None:
            tail = "\n".join(self.log.read_text(errors="replace").splitlines()[-30:])
            raise RuntimeError(f"{self.command} exited with {self.proc.returncode}:\n{tail}")

    async def wait_status(self, http: aiohttp.ClientSession, path: str, limit: float) -> float:
        """Poll ``path`` until 200; returns the monotonic time it answered."""
        deadline = time.monotonic() + limit
        while time.monotonic() < deadline:
            self.check_alive()
            try:
                async with http.get(self.url + path) as resp:
                    if resp.status == 200:
                        return time.monotonic()
            except aiohttp.ClientError:
                pass
            await asyncio.sleep(0.05)
        raise RuntimeError(f"{self.command}: {path} not 200 within {limit:.0f}s; see {self.log}")

    async def start_ready(self, limit: float = 120) -> None:
        """Start, and return once ``/readyz`` answers 200."""
        self.start()
        async with aiohttp.ClientSession() as http:
            await self.wait_status(http, "/readyz", limit)

    async def samples(self, http: aiohttp.ClientSession, prefix: str) -> dict[str, float]:
        """The ``/metrics`` samples whose name starts with ``prefix``, by name and labels."""
        async with http.get(self.url + "/metrics") as resp:
            text = await resp.text()
        return {
            name: float(value)
            for name, _, value in (line.rpartition(" ") for line in text.splitlines())
            if name.startswith(prefix)
        }

    async def events_total(self, http: aiohttp.ClientSession) -> float:
        return sum((await self.samples(http, "likestream_events_total{")).values())


class Lab:
    """A broker of our own, and the clusters (topic sets) and workers of each scenario."""

    def __init__(self, root: Path, partitions: int, running_broker: Broker | None = None) -> None:
        """``running_broker``: a broker to use (a test's), neither started nor stopped
        here; by default a broker of the lab's own."""
        self.root = root
        self.partitions = partitions
        self._own_broker = running_broker is None
        self.broker = running_broker or Broker(
            default_cache_dir(), root / "broker", free_port_pair()
        )
        self.workers: list[WorkerProcess] = []

    def start(self) -> None:
        say(f"starting a broker on port {self.broker.port} (state in {self.broker.state_dir})")
        self.broker.start()

    def stop(self) -> None:
        """Stop the workers and gateways, then the broker (if the lab's own), whatever
        stopping a worker raised."""
        try:
            for worker in self.workers:
                worker.stop(timeout=30)
        finally:
            if self._own_broker:
                self.broker.stop()

    def cluster(self, name: str) -> Settings:
        tag = f"{name}-{uuid.uuid4().hex[:6]}"
        return load_settings(
            kafka=self.broker.bootstrap,
            topic=f"likes-{tag}",
            counts_topic=f"like-counts-{tag}",
            trending_topic=f"like-trending-{tag}",
            app_id=f"likestream-{tag}",
            partitions=self.partitions,
            data_dir=self.root / tag / "data",
            web_host="127.0.0.1",
            web_port=free_port(),
        )

    def worker(self, settings: Settings, **extra: str) -> WorkerProcess:
        """A worker of ``settings``; ``extra`` are more environment variables."""
        settings.data_dir.parent.mkdir(parents=True, exist_ok=True)
        worker = WorkerProcess(settings, settings.data_dir.parent / "worker.log", extra)
        self.workers.append(worker)
        return worker

    def gateway(self, settings: Settings, **extra: str) -> WorkerProcess:
        """A gateway beside the workers of ``settings`` (same topics, a web port of its own;
        it keeps nothing on disk, its data dir only keeps it apart); stopped with them."""
        root = settings.data_dir.parent
        root.mkdir(parents=True, exist_ok=True)
        own = settings.model_copy(update={"web_port": free_port(), "data_dir": root / "gw-data"})
        gateway = WorkerProcess(own, root / "gateway.log", extra, command="gateway")
        self.workers.append(gateway)
        return gateway


async def create_topics(settings: Settings) -> None:
    """The app's topics, then wait until each partition has a leader (no produce retries)."""
    await ensure_topics(settings)
    admin = KafkaConfig.from_settings(settings).admin()
    await admin.start()
    try:
        for _ in range(100):
            (described,) = await admin.describe_topics([settings.topic])
            leaders = [p.get("leader", -1) for p in described.get("partitions", [])]
            if len(leaders) == settings.partitions and min(leaders) >= 0:
                return
            await asyncio.sleep(0.1)
    finally:
        await admin.close()


def partitions_of(settings: Settings, topic: str) -> list[TopicPartition]:
    return [TopicPartition(topic, p) for p in range(settings.partitions)]


async def wait_committed(settings: Settings, limit: float, group: str | None = None) -> float:
    """Wait until the group's committed offsets reach the end of the events topic.

    ``group``: another consumer group than the app's own (a peer's, in ``ingest``).
    """
    admin = KafkaConfig.from_settings(settings).admin()
    consumer = KafkaConfig.from_settings(settings).consumer()
    await admin.start()
    await consumer.start()
    try:
        tps = partitions_of(settings, settings.topic)
        deadline = time.monotonic() + limit
        while time.monotonic() < deadline:
            ends = await consumer.end_offsets(tps)
            committed = await admin.list_consumer_group_offsets(group or settings.app_id)
            if all(tp in committed and committed[tp].offset >= ends[tp] for tp in tps):
                return time.monotonic()
            await asyncio.sleep(0.2)
        raise RuntimeError(f"group {group or settings.app_id} not caught up within {limit:.0f}s")
    finally:
        await consumer.stop()
        await admin.close()


async def topic_records(settings: Settings, topic: str) -> int:
    """Records currently in ``topic`` (end minus beginning offsets)."""
    consumer = KafkaConfig.from_settings(settings).consumer()
    await consumer.start()
    try:
        tps = partitions_of(settings, topic)
        ends = await consumer.end_offsets(tps)
        starts = await consumer.beginning_offsets(tps)
        return sum(ends[tp] - starts[tp] for tp in tps)
    finally:
        await consumer.stop()


def disk_bytes(path: Path) -> int:
    total = 0
    for root, _dirs, files in os.walk(path):
        for name in files:
            with contextlib.suppress(OSError):
                total += os.lstat(os.path.join(root, name)).st_blocks * 512
    return total
