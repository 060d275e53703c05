"""The one door to the private parts of faust, mode and aiokafka.

likestream uses faust for what it is good at (the app and worker lifecycle, group
membership and assignment, changelog tables, recovery, standbys) and reads the
events topic itself, in whole fetched batches (``agents/_feed.py``). A few things
that needs have no public API; every one of them is here, listed in
:data:`INTERNALS` with what it is for:

* the group member's commit (``Consumer._commit``): the agent commits the offsets it
  made durable through the member faust runs, so that a zombie's commit is fenced by
  the group generation;
* the member's aiokafka consumer (``ThreadDelegateConsumer._thread``,
  ``AIOKafkaConsumerThread._ensure_consumer``): the events partitions are paused in it
  so faust never fetches nor delivers them;
* the RocksDB store's open databases (``Store._dbs``, ``Store._db_for_partition``) and
  the options it opens them with (``Store.rocksdb_options``: ``tables/_options.py``);
* faust's recovery state (``TableManager.recovery``: ``completed``, ``in_recovery``,
  ``active_remaining_total``);
* the assignor's wire format (the member assignment's user data: zlib-compressed JSON
  with ``url`` and ``assignment.actives``/``standbys``), which gateways read to find
  owners;
* the member's poll clock (``AIOKafkaConsumer._subscription``,
  ``SubscriptionState.fetch_context``): Kafka's client takes
  the member out of the group after ``max_poll_interval`` without a poll and rejoins
  only from a poll, while faust polls only with its flow on and partitions to fetch;
  see :func:`mark_member_polled`;
* faust's livelock reports, which name the paused events partitions as never fetched
  (:class:`PausedPartitionsFilter` drops those, from the log configuration).

:func:`check` runs when the worker starts: if an upgrade renamed any of them, the
worker stops with a message naming the attribute and the installed versions instead
of degrading silently. ``tests/unit/kafka/test_internals.py`` pins each one.
agents/, tables/ and web/ reach faust internals only through this module.
"""

from __future__ import annotations

import contextlib
import importlib
import importlib.metadata
import logging
import zlib
from collections.abc import Awaitable, Callable, Iterable, Mapping
from dataclasses import dataclass
from typing import Any

import orjson
from aiokafka import TopicPartition
from aiokafka.coordinator.protocol import ConsumerProtocolMemberAssignment
from aiokafka.errors import IllegalStateError
from faust.exceptions import ConsumerNotStarted
from faust.types import TP

__all__ = [
    "INTERNALS",
    "Internal",
    "InternalsChanged",
    "MemberAssignment",
    "PausedPartitionsFilter",
    "check",
    "commit",
    "decode_member_assignment",
    "mark_member_polled",
    "on_partitions_revoked",
    "open_dbs",
    "partition_db",
    "pause_group_fetching",
    "recovery_remaining",
    "recovery_settled",
    "use_rocksdb_options",
]


@dataclass(frozen=True)
class Internal:
    owner: str
    """``module:Class`` that must have ``name``."""
    name: str
    why: str
    on_instance: bool = False
    """Set in ``__init__``: checked on the live object, not the class."""


INTERNALS: tuple[Internal, ...] = (
    Internal(
        "faust.transport.consumer:Consumer",
        "_commit",
        "commit the events offsets the agent made durable, through the group member",
    ),
    Internal(
        "faust.transport.consumer:ThreadDelegateConsumer",
        "_thread",
        "the thread that runs the group member's aiokafka consumer",
        on_instance=True,
    ),
    Internal(
        "faust.transport.drivers.aiokafka:AIOKafkaConsumerThread",
        "_ensure_consumer",
        "the group member's aiokafka consumer, to pause the events partitions in it",
    ),
    Internal(
        "mode.threads:QueueServiceThread",
        "call_thread",
        "run the pause on the consumer thread's own loop",
    ),
    Internal(
        "aiokafka.consumer.consumer:AIOKafkaConsumer",
        "_subscription",
        "the member's poll clock, which decides when Kafka's client leaves the group",
        on_instance=True,
    ),
    Internal(
        "aiokafka.consumer.subscription_state:SubscriptionState",
        "fetch_context",
        "count a poll, as AIOKafkaConsumer.getmany does, when faust has nothing to fetch",
    ),
    Internal(
        "faust.stores.rocksdb:Store",
        "_db_for_partition",
        "a table partition's RocksDB handle, for write batches and multi-gets",
    ),
    Internal(
        "faust.stores.rocksdb:Store",
        "_dbs",
        "the table partitions whose RocksDB is open here (active or standby copies)",
        on_instance=True,
    ),
    Internal(
        "faust.stores.rocksdb:Store",
        "rocksdb_options",
        "the options each partition database is opened with (tables/_options.py)",
        on_instance=True,
    ),
    Internal("faust.tables.manager:TableManager", "recovery", "faust's recovery service"),
    Internal("faust.tables.recovery:Recovery", "completed", "recovery done", on_instance=True),
    Internal("faust.tables.recovery:Recovery", "in_recovery", "recovery running", on_instance=True),
    Internal(
        "faust.tables.recovery:Recovery",
        "active_remaining_total",
        "changelog records left to recover (a metric)",
    ),
    Internal(
        "faust.assignor.client_assignment:ClientMetadata",
        "url",
        "the assignor's wire format: each member's URL, read by gateways to find owners",
    ),
)


class InternalsChanged(RuntimeError):
    """An installed faust, mode or aiokafka lacks an internal likestream relies on."""


def _versions() -> str:
    found = []
    for dist in ("faust-streaming", "mode-streaming", "aiokafka", "rocksdict"):
        try:
            found.append(f"{dist} {importlib.metadata.version(dist)}")
        except importlib.metadata.PackageNotFoundError:
            found.append(f"{dist} absent")
    return ", ".join(found)


def _class(path: str) -> Any:
    module, _, name = path.partition(":")
    return getattr(importlib.import_module(module), name)


def check(instances: Mapping[str, object] | None = None) -> None:
    """Raise :class:`InternalsChanged` naming every internal that is missing.

    ``instances``: live objects by ``module:Class``, for the attributes set in
    ``__init__`` (the worker passes its consumer, store and recovery service).
    """
    missing = []
    for internal in INTERNALS:
        try:
            cls = _class(internal.owner)
        except (ImportError, AttributeError):
            missing.append(f"{internal.owner} (for: {internal.why})")
            continue
        if internal.on_instance:
            live = (instances or {}).get(internal.owner)
            if live is None:
                continue  # not checkable without the object; the worker passes it
            present = hasattr(live, internal.name)
        else:
            present = hasattr(cls, internal.name) or internal.name in getattr(
                cls, "__annotations__", {}
            )
        if not present:
            missing.append(f"{internal.owner}.{internal.name} (for: {internal.why})")
    if missing:
        raise InternalsChanged(
            "the installed libraries lack internals likestream relies on: "
            + "; ".join(missing)
            + f". Installed: {_versions()}. Pin the versions pyproject.toml names, "
            "or adapt likestream/kafka/_internals.py."
        )


def check_app(app: Any, store: Any) -> None:
    """:func:`check` with the live objects of a worker's faust app and table store."""
    check(
        {
            "faust.transport.consumer:ThreadDelegateConsumer": app.consumer,
            "faust.stores.rocksdb:Store": store,
            "faust.tables.recovery:Recovery": app.tables.recovery,
        }
    )


# -- the group member's consumer ------------------------------------------------------


async def commit(app: Any, offsets: Mapping[TP, int]) -> bool:
    """Commit ``offsets`` as the group member: refused (False) once the generation
    moved on, so a worker that lost its partitions cannot commit for them."""
    if not offsets:
        return False
    return bool(await app.consumer._commit(offsets))


async def pause_group_fetching(app: Any, tps: Iterable[TP]) -> None:
    """Pause ``tps`` in the member's own aiokafka consumer: faust then neither fetches
    nor delivers them (aiokafka drops what it had fetched for a paused partition).

    A new assignment resumes every partition, so this runs on each assignment, before
    faust's recovery can resume the flow.
    """
    thread = app.consumer._thread
    aio = thread._ensure_consumer()
    parts = [TopicPartition(tp.topic, tp.partition) for tp in tps]

    async def pause() -> None:
        for part in parts:
            # No longer assigned: a newer assignment pauses its own.
            with contextlib.suppress(IllegalStateError):
                aio.pause(part)

    await thread.call_thread(pause)


async def mark_member_polled(app: Any) -> None:
    """Count a poll of the member's aiokafka consumer, as its ``getmany`` does.

    aiokafka leaves the group once its consumer has gone ``max_poll_interval`` without a
    ``getmany``, and after a rebalance does not rejoin while that is still so. Faust
    calls it only while its flow is on and it has unpaused partitions
    (``Consumer._wait_next_records``); the events partitions are read by the feed, so a
    worker owning no partition never polled, and one whose flow was stopped that long
    (rebalances, recoveries, the bulk restore) left, or at the next rebalance stayed
    out: faust resumes the flow only after an assignment, which needs a rejoin, which
    needs a poll. Counted always, the member stays in the group while the worker's loop
    runs; a worker stuck with its flow stopped fails ``/healthz`` instead
    (``likestream/kafka/_membership.py``).
    """
    consumer = app.consumer
    thread = consumer._thread
    try:
        aio = thread._ensure_consumer()
    except ConsumerNotStarted:
        return
    # Only now is there a live consumer to check (not yet when the worker starts).
    check({"aiokafka.consumer.consumer:AIOKafkaConsumer": aio})

    async def polled() -> None:
        with aio._subscription.fetch_context():
            pass

    await thread.call_thread(polled)


def on_partitions_revoked(app: Any, callback: Callable[[set[TP]], Awaitable[None]]) -> None:
    """Call ``callback(revoked)`` from faust's revoke signal, which faust awaits before
    the group moves on (mode passes the set positionally or as ``revoked``)."""

    async def receiver(sender: Any, *args: Any, signal: Any = None, **kwargs: Any) -> None:
        revoked = args[0] if args else kwargs.get("revoked", set())
        await callback(set(revoked))

    app.on_partitions_revoked.connect(receiver)


class PausedPartitionsFilter(logging.Filter):
    """Drops faust's reports that the events partitions are never fetched: they are paused
    in its consumer on purpose. Other partitions' reports pass (faust's own livelock
    diagnostics, after ``stream_processing_timeout``)."""

    def __init__(self, topic: str) -> None:
        super().__init__()
        self.topic = topic

    def filter(self, record: logging.LogRecord) -> bool:
        if not record.name.startswith(_FAUST_CONSUMER_LOGGER):
            return True
        args = record.args if isinstance(record.args, tuple) else ()
        return not any(getattr(arg, "topic", None) == self.topic for arg in args)


_FAUST_CONSUMER_LOGGER = "faust.transport"


# -- the RocksDB store ------------------------------------------------------------------


def partition_db(store: Any, partition: int) -> Any:
    """The partition's RocksDB (rocksdict ``Rdict``), opened on first use."""
    return store._db_for_partition(partition)


def use_rocksdb_options(store: Any, options: Any) -> None:
    """Open the store's partition databases from now on with ``options`` (a faust
    ``RocksDBOptions``); before any is open."""
    if store._dbs:
        raise RuntimeError("RocksDB options set after a partition database was opened")
    store.rocksdb_options = options


def open_dbs(store: Any) -> Mapping[int, Any]:
    """The open partition databases by partition; read, not copied (asked per request)."""
    dbs: Mapping[int, Any] = store._dbs
    return dbs


# -- recovery ----------------------------------------------------------------------------


def recovery_settled(app: Any) -> bool:
    """Faust's recovery of the current assignment is done and no rebalance is running."""
    recovery = app.tables.recovery
    return bool(recovery.completed.is_set() and not recovery.in_recovery and not app.rebalancing)


def recovery_remaining(app: Any) -> int | None:
    """Changelog records faust's recovery still has to read; None when not recovering."""
    recovery = app.tables.recovery
    return int(recovery.active_remaining_total()) if recovery.in_recovery else None


# -- the assignor's wire format -----------------------------------------------------------


@dataclass(frozen=True)
class MemberAssignment:
    url: str
    actives: list[int]
    """Active partitions of the topic asked for."""
    standbys: list[int]
    """Standby partitions (faust lists one under each topic of the co-partitioned group)."""


def decode_member_assignment(raw: bytes, topic: str) -> MemberAssignment:
    """One member's assignment as faust's assignor writes it; ValueError if unreadable."""
    try:
        decoded = ConsumerProtocolMemberAssignment.decode(raw)
        doc = orjson.loads(zlib.decompress(decoded.user_data))
        url = str(doc["url"]).rstrip("/")
        actives = [int(p) for p in doc["assignment"]["actives"].get(topic, [])]
        standbys = sorted({int(p) for ps in doc["assignment"]["standbys"].values() for p in ps})
    except (ValueError, KeyError, TypeError, AttributeError, zlib.error) as exc:
        raise ValueError(f"not faust's assignment format: {exc!r}") from None
    return MemberAssignment(url, actives, standbys)
