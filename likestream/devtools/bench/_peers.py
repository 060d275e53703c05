"""Peers of the ``ingest`` scenario: Kafka Streams and Quix Streams folding the same records.

likestream's events/s means little alone; beside two stream processors that do the same
work with the same guarantees (exactly-once, RocksDB state, every count change written to
an output topic) on the same pre-produced records and the same broker, its ratio to each is
a figure that holds across runs on a shared machine. Each peer is one process started after
everything else of the bench has stopped; its rate is taken from its own clock, from the
first record it processed to the last, so JVM or interpreter start-up, the group join and
the build are left out, as they are for likestream.

* Kafka Streams (``peers/kstreams``, Java): built with Maven into
  ``~/.cache/likestream/peers/kstreams-<hash of its sources>``, so a changed source
  rebuilds, and run with ``java -jar``.
* Quix Streams (``peers/quix_peer.py``): run by the interpreter of a virtualenv of its own,
  ``~/.cache/likestream/peers/quix-<hash>``, with the ``bench`` extra of pyproject.toml
  installed, since quixstreams' pins would downgrade the project's pydantic and
  pydantic-settings in ``.venv``.

``python -m likestream.devtools.bench.peers`` prepares both (``make bench`` runs it first); the
bench prepares whatever is still missing itself. A peer that cannot be prepared or run is a
note in the result, never a failed scenario. Each peer's final counts, read back from its
output topic (last value per key), are compared with a plain fold of the produced events.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import importlib.metadata
import json
import os
import shutil
import signal
import subprocess
import sys
import time
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path

import orjson
from aiokafka.admin import NewTopic

from likestream.config._settings import Settings
from likestream.devtools._broker import default_cache_dir
from likestream.devtools.bench._common import say
from likestream.devtools.bench._lab import partitions_of, wait_committed
from likestream.domain._schema import LikeEvent
from likestream.kafka._factory import KafkaConfig
from likestream.runtime._progress import progress_bar

__all__ = [
    "KSTREAMS_COMMIT_MS",
    "PEERS",
    "QUIX_COMMIT_S",
    "PeerProgress",
    "PeerRun",
    "PeerUnavailable",
    "build_kstreams",
    "counts_note",
    "create_output_topic",
    "expected_counts",
    "kstreams_version",
    "last_values",
    "main",
    "peer_versions",
    "peers_cache",
    "prepare",
    "quix_python",
    "quix_requirement",
    "read_counts",
    "run_peer",
    "source_hash",
    "tuning_args",
]

PEERS: dict[str, str] = {"kstreams": "Kafka Streams", "quix": "Quix Streams"}
"""The peers the ingest scenario can run, by name, and how the report calls them."""

PEER_DIR = Path(__file__).parent / "peers"
KSTREAMS_SOURCES = PEER_DIR / "kstreams"
QUIX_APP = PEER_DIR / "quix_peer.py"
KSTREAMS_JAR = "kstreams-peer.jar"
KSTREAMS_COMMIT_MS = 100
"""Kafka Streams' own default commit interval under exactly_once_v2."""
KSTREAMS_THREADS = 1
"""One stream thread, as likestream's worker folds on one event loop."""
KSTREAMS_HEAP = ["-Xms256m", "-Xmx1g"]
QUIX_COMMIT_S = 5.0
"""Quix Streams' own default commit interval (``Application(commit_interval=5.0)``)."""
BUILD_TIMEOUT = 300.0
"""Longest mvn package or pip install; a first build here takes well under a minute."""
COMPLETE = ".complete"
FAILED = ".failed"
"""Why the last build or install in a cache dir failed; the bench does not try it again."""


class PeerUnavailable(RuntimeError):
    """A peer that cannot be built, installed or run here; the message says why."""


def peers_cache() -> Path:
    return default_cache_dir() / "peers"


def source_hash(root: Path) -> str:
    """A short hash of every file under ``root`` (names and bytes), to key a build cache.

    Maven's own ``target`` directory is left out, should anyone build in place.
    """
    digest = hashlib.sha256()
    for path in sorted(p for p in root.rglob("*") if p.is_file()):
        rel = path.relative_to(root)
        if rel.parts[0] == "target":
            continue
        digest.update(str(rel).encode() + b"\0" + path.read_bytes() + b"\0")
    return digest.hexdigest()[:16]


def kstreams_version() -> str:
    """The kafka-streams version the peer's pom.xml pins."""
    text = (KSTREAMS_SOURCES / "pom.xml").read_text()
    start = text.index("<kafka.version>") + len("<kafka.version>")
    return text[start : text.index("</kafka.version>", start)]


def _tail(text: str, lines: int = 20) -> str:
    return "\n".join(text.strip().splitlines()[-lines:])


def _failed_before(home: Path, retry: bool) -> None:
    """Raise the failure recorded in ``home`` unless ``retry``.

    So a Maven or pip that fails (or hangs until the timeout) in ``make peers`` does not
    cost the bench that follows the same minutes again.
    """
    failed = home / FAILED
    if not retry and failed.exists():
        raise PeerUnavailable(
            f"{failed.read_text().strip()}\n(failed before; `make peers` tries again)"
        )


def _remember(home: Path, exc: PeerUnavailable) -> None:
    home.mkdir(parents=True, exist_ok=True)
    (home / FAILED).write_text(str(exc))


def build_kstreams(cache: Path | None = None, retry: bool = True) -> Path:
    """The peer's fat jar, built once per source hash (offline first, then online)."""
    home = (cache or peers_cache()) / f"kstreams-{source_hash(KSTREAMS_SOURCES)}"
    jar = home / KSTREAMS_JAR
    if (home / COMPLETE).exists() and jar.exists():
        return jar
    _failed_before(home, retry)
    try:
        _build(home, jar)
    except PeerUnavailable as exc:
        _remember(home, exc)
        raise
    (home / FAILED).unlink(missing_ok=True)
    return jar


def _build(home: Path, jar: Path) -> None:
    java, mvn = shutil.which("java"), shutil.which("mvn")
    if java is None or mvn is None:
        raise PeerUnavailable("Kafka Streams: needs java and mvn on PATH (apt-get install maven)")
    build = home / "build"
    shutil.rmtree(build, ignore_errors=True)
    shutil.copytree(KSTREAMS_SOURCES, build, ignore=shutil.ignore_patterns("target"))
    say(f"building the Kafka Streams peer with Maven in {build} (once per source change)")
    base = [mvn, "-q", "-B", "-Dstyle.color=never", "-f", str(build / "pom.xml"), "package"]
    done: subprocess.CompletedProcess[str] | None = None
    for cmd in ([*base[:1], "-o", *base[1:]], base):  # offline when ~/.m2 has it all
        try:
            done = subprocess.run(
                cmd, capture_output=True, text=True, timeout=BUILD_TIMEOUT, check=False
            )
        except subprocess.TimeoutExpired:
            raise PeerUnavailable(
                f"Kafka Streams: mvn package took over {BUILD_TIMEOUT:.0f}s"
            ) from None
        if done.returncode == 0:
            break
    assert done is not None
    if done.returncode != 0:
        raise PeerUnavailable(f"Kafka Streams: mvn package failed:\n{_tail(done.stdout)}")
    shutil.move(build / "target" / KSTREAMS_JAR, jar)
    shutil.rmtree(build, ignore_errors=True)  # the shaded jar alone is kept
    (home / COMPLETE).write_text(kstreams_version())


def quix_requirement() -> str:
    """The ``bench`` extra of pyproject.toml (quixstreams, pinned) as installed metadata."""
    try:
        requires = importlib.metadata.requires("likestream") or []
    except importlib.metadata.PackageNotFoundError:
        requires = []
    for line in requires:
        spec, _, marker = line.partition(";")
        bench = "extra" in marker and '"bench"' in marker.replace("'", '"')
        if bench and spec.strip().lower().startswith("quixstreams"):
            return spec.strip().replace(" ", "")
    raise PeerUnavailable("Quix Streams: no quixstreams in the bench extra of pyproject.toml")


def quix_python(cache: Path | None = None, retry: bool = True) -> Path:
    """The interpreter of a virtualenv with quixstreams, created once per requirement."""
    requirement = quix_requirement()
    key = hashlib.sha256(f"{requirement} {sys.version}".encode()).hexdigest()[:16]
    home = (cache or peers_cache()) / f"quix-{key}"
    python = home / "venv" / "bin" / "python"
    if (home / COMPLETE).exists() and python.exists():
        return python
    _failed_before(home, retry)
    shutil.rmtree(home, ignore_errors=True)
    home.mkdir(parents=True)
    try:
        _install(home, python, requirement)
    except PeerUnavailable as exc:
        _remember(home, exc)
        raise
    return python


def _install(home: Path, python: Path, requirement: str) -> None:
    say(f"installing {requirement} into {home / 'venv'} (once)")
    for cmd in (
        [sys.executable, "-m", "venv", str(home / "venv")],
        [str(python), "-m", "pip", "install", "-q", "--disable-pip-version-check", requirement],
    ):
        try:
            done = subprocess.run(
                cmd, capture_output=True, text=True, timeout=BUILD_TIMEOUT, check=False
            )
        except subprocess.TimeoutExpired:
            raise PeerUnavailable(
                f"Quix Streams: {cmd[2]} took over {BUILD_TIMEOUT:.0f}s"
            ) from None
        if done.returncode != 0:
            raise PeerUnavailable(
                f"Quix Streams: {' '.join(cmd[1:4])} failed:\n{_tail(done.stdout + done.stderr)}"
            )
    (home / COMPLETE).write_text(requirement)


def _java_version() -> str:
    java = shutil.which("java")
    if java is None:
        return "absent"
    out = subprocess.run([java, "-version"], capture_output=True, text=True, check=False)
    first = (out.stderr or out.stdout).splitlines()
    return first[0].split('"')[1] if first and '"' in first[0] else "?"


def _venv_version(cache: Path, dist: str) -> str | None:
    """``dist``'s version in the newest Quix venv of the cache, from its dist-info name."""
    found = sorted(
        cache.glob(f"quix-*/venv/lib/python*/site-packages/{dist}-*.dist-info"),
        key=lambda p: p.stat().st_mtime,
    )
    return found[-1].name[len(dist) + 1 : -len(".dist-info")] if found else None


def peer_versions(cache: Path | None = None) -> dict[str, str]:
    """The peers' versions for the Machine section of the report."""
    cache = cache or peers_cache()
    quix = _venv_version(cache, "quixstreams")
    kafka = _venv_version(cache, "confluent_kafka")
    return {
        "Kafka Streams (peer)": (
            f"{kstreams_version()} (exactly_once_v2, commit {KSTREAMS_COMMIT_MS} ms, "
            f"{KSTREAMS_THREADS} stream thread, RocksDB), Java {_java_version()}"
        ),
        "Quix Streams (peer)": (
            f"{quix} (exactly-once, commit {QUIX_COMMIT_S:g} s, RocksDB), confluent-kafka {kafka}"
            if quix
            else "not installed"
        ),
    }


def prepare(
    names: Iterable[str], cache: Path | None = None, retry: bool = True
) -> dict[str, list[str] | str]:
    """The command line of each peer, or why it cannot run (blocking: call in a thread).

    ``retry``: try again a build or install that failed before (``make peers`` does; the
    bench does not, to keep within its time).
    """
    ready: dict[str, list[str] | str] = {}
    for name in names:
        try:
            if name == "kstreams":
                java = shutil.which("java") or "java"
                jar = build_kstreams(cache, retry)
                ready[name] = [
                    java,
                    *KSTREAMS_HEAP,
                    "-Dorg.slf4j.simpleLogger.defaultLogLevel=warn",
                    "-jar",
                    str(jar),
                ]
            elif name == "quix":
                ready[name] = [str(quix_python(cache, retry)), str(QUIX_APP)]
            else:
                ready[name] = f"unknown peer {name!r}"
        except (PeerUnavailable, OSError) as exc:
            ready[name] = str(exc)
    return ready


def tuning_args(name: str) -> list[str]:
    """The arguments after the common six that set a peer's commit interval (and threads)."""
    if name == "kstreams":
        return [
            f"commit.interval.ms={KSTREAMS_COMMIT_MS}",
            f"num.stream.threads={KSTREAMS_THREADS}",
        ]
    return [f"{QUIX_COMMIT_S:g}"]


def expected_counts(events: Iterable[LikeEvent]) -> dict[str, int]:
    """A plain fold of ``events`` in order: the last count of every item whose count changed.

    This is what an output topic of count changes holds as its last value per key: items
    whose events were all no-ops never appear.
    """
    members: set[tuple[str, str]] = set()
    counts: dict[str, int] = {}
    for event in events:
        member = (event.item_id, event.user_id)
        if (member in members) == event.liked:
            continue
        if event.liked:
            members.add(member)
        else:
            members.discard(member)
        counts[event.item_id] = counts.get(event.item_id, 0) + (1 if event.liked else -1)
    return counts


def last_values(records: Iterable[tuple[bytes | None, bytes | None]]) -> dict[str, int]:
    """The last ``likes`` per key of count records (key item_id, value ``{"likes": N}``)."""
    counts: dict[str, int] = {}
    for key, value in records:
        if key is None or value is None:
            continue
        counts[key.decode()] = int(orjson.loads(value)["likes"])
    return counts


async def read_counts(settings: Settings, topic: str, limit: float = 60.0) -> dict[str, int]:
    """The last value per key of a counts topic, committed transactions only."""
    consumer = KafkaConfig.from_settings(settings).consumer(
        enable_auto_commit=False,
        isolation_level="read_committed",
    )
    await consumer.start()
    records: list[tuple[bytes | None, bytes | None]] = []
    try:
        tps = partitions_of(settings, topic)
        consumer.assign(tps)
        await consumer.seek_to_beginning(*tps)
        ends = await consumer.end_offsets(tps)
        deadline = time.monotonic() + limit
        while [tp for tp in tps if await consumer.position(tp) < ends[tp]]:
            if time.monotonic() > deadline:
                raise RuntimeError(f"{topic}: not read to its end within {limit:.0f}s")
            batch = await consumer.getmany(timeout_ms=500, max_records=50_000)
            for part in batch.values():
                records.extend((r.key, r.value) for r in part)
    finally:
        await consumer.stop()
    return last_values(records)


async def create_output_topic(settings: Settings, topic: str) -> None:
    """A peer's counts topic, shaped as likestream's: same partitions, compacted."""
    admin = KafkaConfig.from_settings(settings).admin()
    await admin.start()
    try:
        await admin.create_topics(
            [
                NewTopic(
                    topic,
                    settings.partitions,
                    settings.replication,
                    topic_configs={"cleanup.policy": "compact"},
                )
            ]
        )
    finally:
        await admin.close()


@dataclass(frozen=True)
class PeerProgress:
    """One JSON progress line of a peer program (both print the same fields)."""

    state: str = "starting"
    processed: int = 0
    invalid: int = 0
    changes: int = 0
    first: float = 0.0
    """Epoch seconds of the first record processed; 0 before it."""
    last: float = 0.0
    error: str | None = None

    @classmethod
    def parse(cls, line: str) -> PeerProgress | None:
        """The progress in ``line``, or None for anything else a program may print."""
        try:
            doc = json.loads(line, strict=False)
        except ValueError:
            return None
        if not isinstance(doc, dict) or "processed" not in doc:
            return None
        return cls(
            state=str(doc.get("state", "?")),
            processed=int(doc["processed"]),
            invalid=int(doc.get("invalid", 0)),
            changes=int(doc.get("changes", 0)),
            first=float(doc.get("first") or 0.0),
            last=float(doc.get("last") or 0.0),
            error=doc.get("error"),
        )

    @property
    def rate(self) -> float:
        """Records per second from the first processed to the last."""
        span = self.last - self.first
        return self.processed / span if self.first and span > 0 else float("nan")


@dataclass
class PeerRun:
    """What one peer run measured."""

    name: str
    progress: PeerProgress
    cold_start_s: float
    """From spawning the process to its first record processed."""
    capped: bool
    committed_s: float | None = None
    """From its first record processed until its group's committed offsets reached the end."""
    counts_match: bool | None = None
    notes: list[str] = field(default_factory=list)

    def figures(self, total: int) -> dict[str, float]:
        p = self.progress
        out: dict[str, float] = {
            f"{self.name}_events_per_s": round(p.rate),
            f"{self.name}_events_processed": p.processed,
            f"{self.name}_cold_start_to_first_s": round(self.cold_start_s, 2),
        }
        if self.committed_s:
            out[f"{self.name}_committed_events_per_s"] = round(total / self.committed_s)
        if self.counts_match is not None:
            out[f"{self.name}_counts_match"] = int(self.counts_match)
        return out


class _Lines:
    """Reads a peer's stdout in the background; keeps its latest progress line."""

    def __init__(self, stream: asyncio.StreamReader) -> None:
        self.latest = PeerProgress()
        self.eof = asyncio.Event()
        self._task = asyncio.create_task(self._read(stream))

    async def _read(self, stream: asyncio.StreamReader) -> None:
        try:
            while line := await stream.readline():
                progress = PeerProgress.parse(line.decode(errors="replace"))
                if progress is not None:
                    self.latest = progress
        finally:
            self.eof.set()

    async def close(self, limit: float) -> None:
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self.eof.wait(), limit)
        self._task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await self._task


def _log_tail(log: Path, lines: int = 15) -> str:
    try:
        return _tail(log.read_text(errors="replace"), lines)
    except OSError:
        return ""


def _append(log: Path) -> int:
    """A descriptor appending to ``log``, for a child's stderr (the child keeps its own)."""
    return os.open(log, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o644)


async def _stop(proc: asyncio.subprocess.Process, limit: float) -> None:
    """SIGTERM (each peer then commits and closes), SIGKILL after ``limit`` seconds."""
    if proc.returncode is None:
        with contextlib.suppress(ProcessLookupError):
            proc.send_signal(signal.SIGTERM)
        try:
            await asyncio.wait_for(proc.wait(), limit)
        except TimeoutError:
            with contextlib.suppress(ProcessLookupError):
                proc.kill()
            await proc.wait()


async def run_peer(
    name: str,
    argv: list[str],
    settings: Settings,
    group: str,
    total: int,
    cap: float,
    log: Path,
    start_limit: float = 120.0,
    stall_limit: float = 60.0,
) -> PeerRun:
    """Run one peer until it has processed ``total`` records and its group committed them
    (or ``cap`` seconds after its first record), then stop it and take its last line."""
    spawned = time.time()
    err = _append(log)
    try:
        proc = await asyncio.create_subprocess_exec(
            *argv,
            stdin=asyncio.subprocess.DEVNULL,
            stdout=asyncio.subprocess.PIPE,
            stderr=err,
            env={**os.environ, "PYTHONUNBUFFERED": "1"},
        )
    finally:
        os.close(err)
    assert proc.stdout is not None
    lines = _Lines(proc.stdout)
    capped = False
    committed_s: float | None = None
    notes: list[str] = []
    try:
        seen, moved = -1, time.monotonic()
        with progress_bar(f"  {name} processed", total=total, unit="records") as bar:
            while True:
                p = lines.latest
                now = time.monotonic()
                if lines.eof.is_set() or proc.returncode is not None:
                    await proc.wait()
                    raise PeerUnavailable(
                        f"{PEERS[name]} exited with {proc.returncode} at {p.processed:,}/{total:,}"
                        f" records: {p.error or _log_tail(log)}"
                    )
                if p.processed != seen:
                    seen, moved = p.processed, now
                    bar.update(p.processed)
                if not p.first and time.time() - spawned > start_limit:
                    raise PeerUnavailable(
                        f"{PEERS[name]}: no record processed in {start_limit:.0f}s"
                    )
                if p.first and now - moved > stall_limit:
                    raise PeerUnavailable(f"{PEERS[name]}: stalled at {p.processed:,}/{total:,}")
                if p.processed >= total:
                    break
                if p.first and time.time() - p.first >= cap:
                    capped = True
                    break
                await asyncio.sleep(0.1)
        if not capped:
            try:
                await wait_committed(settings, limit=120, group=group)
                committed_s = time.time() - lines.latest.first
            except RuntimeError as exc:
                notes.append(f"{PEERS[name]}: {exc}")
    finally:
        await _stop(proc, 60)
        await lines.close(5)
    final = lines.latest
    if final.invalid:
        notes.append(f"{PEERS[name]}: {final.invalid:,} invalid records skipped")
    return PeerRun(name, final, final.first - spawned, capped, committed_s, None, notes)


def counts_note(label: str, got: Mapping[str, int], expected: Mapping[str, int]) -> str | None:
    """None when ``got`` equals ``expected``; else a short account of the difference."""
    if dict(got) == dict(expected):
        return None
    missing = len(expected.keys() - got.keys())
    extra = len(got.keys() - expected.keys())
    wrong = sum(1 for k in expected.keys() & got.keys() if got[k] != expected[k])
    return (
        f"{label}: final counts differ from a plain fold of the events "
        f"({missing} items missing, {extra} unexpected, {wrong} with another count)"
    )


def main() -> int:
    """Prepare every peer now (``make bench``), so the bench itself only runs them.

    Always 0: a peer that is not ready is reported, and the bench notes it again.
    """
    for name, ready in prepare(PEERS).items():
        if isinstance(ready, str):
            print(f"{PEERS[name]} peer not ready: {ready}", file=sys.stderr)
        else:
            print(f"{PEERS[name]} peer ready: {' '.join(ready)}", file=sys.stderr)
    return 0
