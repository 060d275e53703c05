"""Shared fixtures: a real embedded broker for the session, and worker processes."""

from __future__ import annotations

import asyncio
import os
import random
import shutil
import signal
import socket
import subprocess
import sys
import time
import uuid
from collections.abc import AsyncIterator, Iterator
from contextlib import asynccontextmanager
from pathlib import Path

import aiohttp
import pytest
from aiokafka import ConsumerRecord, TopicPartition
from aiokafka.admin.config_resource import ConfigResource, ConfigResourceType
from aiokafka.errors import KafkaError
from oracle import Oracle

from likestream.devtools._broker import Broker, default_cache_dir
from likestream.domain._tokens import mint_token
from likestream.kafka._factory import KafkaConfig

ARTIFACTS = Path(__file__).parent.parent / "test-artifacts"


def free_port_pair(span: int = 2) -> int:
    """A port p such that p to p+span-1 are free (the broker, its controller, and a
    secured broker's SCRAM listener), below the kernel's ephemeral range: a port in that
    range that is free now can become some client socket's local port before the broker
    binds it (seen in CI: the controller's "Address already in use")."""
    top = _ephemeral_low() - span
    for _ in range(200):
        port = random.randrange(10_000, top)
        if all(_bindable(port + i) for i in range(span)):
            return port
    raise RuntimeError("no free port pair")


def _ephemeral_low() -> int:
    try:
        return int(Path("/proc/sys/net/ipv4/ip_local_port_range").read_text().split()[0])
    except (OSError, ValueError, IndexError):
        return 32768  # Linux's default


def _bindable(port: int) -> bool:
    with socket.socket() as sock:
        try:
            sock.bind(("localhost", port))
        except OSError:
            return False
        return True


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("localhost", 0))
        return int(sock.getsockname()[1])


def pytest_configure(config: pytest.Config) -> None:
    # Temp dirs per checkout and per session: pytest prunes old dirs under the
    # shared default root, and wipes a given --basetemp, either of which would
    # delete a concurrent run's broker and worker state.
    if config.option.basetemp is None:
        root = ARTIFACTS.parent / ".pytest-tmp"
        root.mkdir(exist_ok=True)
        for old in root.iterdir():
            if old.name.isdigit() and not Path(f"/proc/{old.name}").exists():
                shutil.rmtree(old, ignore_errors=True)
        config.option.basetemp = str(root / str(os.getpid()))


def pytest_addoption(parser: pytest.Parser) -> None:
    parser.addoption(
        "--chaos",
        choices=["short", "long"],
        default="short",
        help="chaos test plan (make chaos: long)",
    )
    parser.addoption(
        "--scale-events",
        type=int,
        default=16_000,
        help="events of the multi-worker failover test (tests/integration/test_scale.py)",
    )


def own_broker(tmp_path_factory: pytest.TempPathFactory, name: str) -> Iterator[Broker]:
    """A single-node KRaft broker of its own, for tests that stop, freeze or restart it
    (the session's is shared); stopped after, and woken first if a test left it frozen."""
    instance = Broker(default_cache_dir(), tmp_path_factory.mktemp(name), free_port_pair())
    instance.start()
    yield instance
    if instance.pid() is not None:
        os.kill(instance.pid() or 0, signal.SIGCONT)
    instance.stop()


@pytest.fixture(scope="session")
def broker(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Broker]:
    """A single-node KRaft broker started for this test session and stopped after it."""
    yield from own_broker(tmp_path_factory, "broker")


class Worker:
    """One ``likestream worker`` (or ``gateway``) OS process, with its own data dir and
    web port."""

    def __init__(self, env: dict[str, str], log: Path, command: str = "worker") -> None:
        self.env = env
        self.log = log
        self.command = command
        self.port = int(env["LIKESTREAM_WEB_PORT"])
        self.data_dir = Path(env["LIKESTREAM_DATA_DIR"])
        self.proc: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"http://localhost:{self.port}"

    def start(self) -> None:
        # Only the test's settings: a LIKESTREAM_* variable of the shell running the
        # tests would change what they check (or make them skip it).
        inherited = {k: v for k, v in os.environ.items() if not k.startswith("LIKESTREAM_")}
        with open(self.log, "ab") as out:
            self.proc = subprocess.Popen(
                [sys.executable, "-m", "likestream", self.command],
                env={**inherited, **self.env},
                stdout=out,
                stderr=subprocess.STDOUT,
            )

    def stop(self, timeout: float = 30.0) -> float:
        """SIGTERM; returns the seconds it took to exit. Fails if it did not in time."""
        assert self.proc is not None
        began = time.monotonic()
        self.proc.send_signal(signal.SIGTERM)
        code = self.proc.wait(timeout)
        assert code == 0, f"worker exited with {code}; see {self.log}"
        return time.monotonic() - began

    @asynccontextmanager
    async def running(self) -> AsyncIterator[Worker]:
        """Started and ready for the block; stopped cleanly after it unless already gone."""
        self.start()
        await self.wait_ready()
        try:
            yield self
        finally:
            if self.proc is not None and self.proc.poll() is None:
                self.stop()

    def kill(self) -> None:
        assert self.proc is not None
        self.proc.kill()
        self.proc.wait()

    def log_tail(self, lines: int = 40) -> str:
        text = self.log.read_text(errors="replace").splitlines()
        return "\n".join(text[-lines:])

    async def wait_ready(self, limit: float = 120.0) -> None:
        """Poll ``/readyz`` until it says ready; fail early if the process died."""
        deadline = time.monotonic() + limit
        async with aiohttp.ClientSession() as http:
            while time.monotonic() < deadline:
                assert self.proc is not None
                if self.proc.poll() is not None:
                    pytest.fail(f"worker exited with {self.proc.returncode}:\n{self.log_tail()}")
                try:
                    async with http.get(f"{self.url}/readyz") as resp:
                        if resp.status == 200:
                            return
                except aiohttp.ClientConnectionError:
                    pass
                await asyncio.sleep(0.2)
        pytest.fail(f"worker not ready within {limit}s:\n{self.log_tail()}")


class Cluster:
    """Names and settings shared by the workers of one test module."""

    def __init__(self, broker: Broker, root: Path, partitions: int = 4) -> None:
        tag = uuid.uuid4().hex[:8]
        self.broker = broker
        self.root = root
        self.partitions = partitions
        self.topic = f"likes-{tag}"
        self.counts_topic = f"like-counts-{tag}"
        self.trending_topic = f"like-trending-{tag}"
        self.app_id = f"likestream-{tag}"
        # The token key of the module's processes (a module may drop it for the dev one).
        self.secret = f"cluster-secret-{uuid.uuid4().hex}"

    @property
    def kafka(self) -> KafkaConfig:
        return self.broker.kafka

    def worker(self, name: str, command: str = "worker", **settings: str) -> Worker:
        """A worker (or ``command="gateway"``); ``settings`` adds LIKESTREAM_* variables."""
        env = {
            "LIKESTREAM_KAFKA": self.broker.bootstrap,
            "LIKESTREAM_TOPIC": self.topic,
            "LIKESTREAM_COUNTS_TOPIC": self.counts_topic,
            "LIKESTREAM_TRENDING_TOPIC": self.trending_topic,
            "LIKESTREAM_APP_ID": self.app_id,
            "LIKESTREAM_PARTITIONS": str(self.partitions),
            "LIKESTREAM_DATA_DIR": str(self.root / name / "data"),
            "LIKESTREAM_WEB_PORT": str(free_port()),
            "LIKESTREAM_WEB_HOST": "127.0.0.1",
            "LIKESTREAM_SECRET": self.secret,
            **{f"LIKESTREAM_{k.upper()}": v for k, v in settings.items()},
        }
        (self.root / name).mkdir(parents=True, exist_ok=True)
        return Worker(env, self.root / name / f"{command}.log", command)

    def bearer(self, user: str) -> dict[str, str]:
        """The Authorization header of ``user``: memberships are read with their own user's
        token."""
        return {"Authorization": f"Bearer {mint_token(self.secret, user, 3600)}"}

    async def wait_caught_up(self, limit: float = 120.0) -> float:
        """Wait until the group's committed offsets reach the end of every partition.

        Offsets are committed only after the writes of their events are durable,
        so this is the observable "caught up" condition. Returns seconds waited.
        """
        began = time.monotonic()
        admin = self.kafka.admin()
        consumer = self.kafka.consumer()
        await admin.start()
        await consumer.start()
        try:
            tps = [TopicPartition(self.topic, p) for p in range(self.partitions)]
            while True:
                ends = await consumer.end_offsets(tps)
                try:
                    committed = await admin.list_consumer_group_offsets(self.app_id)
                except KafkaError:  # e.g. no group coordinator yet right after a broker restart
                    committed = {}
                behind = {
                    tp.partition: ends[tp] - (committed[tp].offset if tp in committed else 0)
                    for tp in tps
                    if ends[tp] > (committed[tp].offset if tp in committed else 0)
                }
                if not behind:
                    return time.monotonic() - began
                if time.monotonic() - began > limit:
                    pytest.fail(f"not caught up within {limit}s; lag per partition: {behind}")
                await asyncio.sleep(0.25)
        finally:
            await consumer.stop()
            await admin.close()


async def read_topic(cluster: Cluster, topic: str) -> list[ConsumerRecord[bytes, bytes]]:
    """Every record of ``topic`` from its beginning to its current end."""
    consumer = cluster.kafka.consumer(enable_auto_commit=False)
    await consumer.start()
    records: list[ConsumerRecord[bytes, bytes]] = []
    try:
        tps = [TopicPartition(topic, p) for p in range(cluster.partitions)]
        consumer.assign(tps)
        await consumer.seek_to_beginning(*tps)
        ends = await consumer.end_offsets(tps)
        for tp in tps:
            while await consumer.position(tp) < ends[tp]:
                batch = await consumer.getmany(tp, timeout_ms=1000)
                records += batch.get(tp, [])
    finally:
        await consumer.stop()
    return records


async def assert_matches(
    http: aiohttp.ClientSession, worker: Worker, oracle: Oracle, cluster: Cluster
) -> None:
    """Every count (batch reads) and every membership (single reads) equals the oracle."""
    expected = oracle.counts()
    items = sorted(expected)
    got: dict[str, int] = {}
    for i in range(0, len(items), 100):
        batch = ",".join(items[i : i + 100])
        async with http.get(f"{worker.url}/likes", params={"items": batch}) as resp:
            assert resp.status == 200, await resp.text()
            got.update((await resp.json())["likes"])
    assert got == expected

    sem = asyncio.Semaphore(32)

    async def liked(item: str, user: str) -> tuple[tuple[str, str], bool]:
        url = f"{worker.url}/items/{item}/likes/{user}"
        async with sem, http.get(url, headers=cluster.bearer(user)) as resp:
            assert resp.status == 200
            return (item, user), (await resp.json())["liked"]

    pairs = await asyncio.gather(*(liked(i, u) for i, u in oracle.members))
    wrong = {pair: value for pair, value in pairs if oracle.members[pair] != value}
    assert wrong == {}


@pytest.fixture(scope="module")
def cluster(
    broker: Broker, tmp_path_factory: pytest.TempPathFactory, request: pytest.FixtureRequest
) -> Cluster:
    """Topics, group and data dirs of one test module."""
    return Cluster(broker, tmp_path_factory.mktemp(request.module.__name__.rsplit(".", 1)[-1]))


@pytest.fixture(scope="module")
def oracle() -> Oracle:
    """The expected state, shared by the tests of one module (they run in order)."""
    return Oracle()


@pytest.fixture(scope="module")
async def worker(cluster: Cluster) -> AsyncIterator[Worker]:
    """One worker process for the module, stopped cleanly at its end."""
    instance = cluster.worker("w1")
    async with instance.running():
        yield instance


@pytest.fixture
async def http() -> AsyncIterator[aiohttp.ClientSession]:
    async with aiohttp.ClientSession() as session:
        yield session


_FIGURES = pytest.StashKey[list[str]]()


def report(config: pytest.Config, line: str) -> None:
    """Keep a measured figure for the summary at the end and in test-artifacts/."""
    config.stash.setdefault(_FIGURES, []).append(line)
    ARTIFACTS.mkdir(exist_ok=True)
    with open(ARTIFACTS / "figures.txt", "a") as out:
        out.write(line + "\n")


def pytest_terminal_summary(
    terminalreporter: pytest.TerminalReporter, config: pytest.Config
) -> None:
    lines = config.stash.get(_FIGURES, [])
    if lines:
        terminalreporter.section("figures")
        for line in lines:
            terminalreporter.write_line(line)


async def set_topic_configs(kafka: KafkaConfig, names: list[str], **overrides: str | None) -> None:
    """Set ``overrides`` on ``names`` (None: back to the broker's default); AlterConfigs
    replaces a topic's whole config, so the rest of it is stated again."""
    admin = kafka.admin()
    await admin.start()
    try:
        resources = [ConfigResource(ConfigResourceType.TOPIC, n) for n in names]
        described = await admin.describe_configs(resources)
        changes = []
        for response in described:
            for _code, _msg, _type, name, entries in response.resources:
                configs = {
                    entry[0]: entry[1]
                    for entry in entries
                    if entry[1] is not None and _is_topic_override(entry)
                }
                for key, value in overrides.items():
                    key = key.replace("_", ".")
                    if value is None:
                        configs.pop(key, None)
                    else:
                        configs[key] = value
                changes.append(ConfigResource(ConfigResourceType.TOPIC, name, configs=configs))
        for response in await admin.alter_configs(changes):
            assert all(r[0] == 0 for r in response.resources), response
    finally:
        await admin.close()


def _is_topic_override(entry: tuple[object, ...]) -> bool:
    """A DescribeConfigs entry set on the topic itself: its fourth field is v0's
    ``is_default`` or, from v1, the config source (1: the topic's own)."""
    source = entry[3]
    return source is False if isinstance(source, bool) else source == 1
