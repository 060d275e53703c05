"""``state``: M distinct memberships: worker RSS, disk use, and recovery from the changelog
after the data dir is deleted.
"""

from __future__ import annotations

import re
import shutil
import time
from collections.abc import Iterator
from pathlib import Path

import aiohttp

from likestream.client import new_event
from likestream.devtools.bench._common import BenchConfig, Result, command, say
from likestream.devtools.bench._ingest import watch_worker
from likestream.devtools.bench._lab import (
    Lab,
    create_topics,
    disk_bytes,
    topic_records,
    wait_committed,
)
from likestream.domain._schema import LikeEvent
from likestream.kafka._factory import KafkaConfig
from likestream.runtime._produce import produce

__all__ = ["restore_line", "state"]

TARGET_MEMBERSHIPS = 1_000_000
RESTORED = re.compile(r"restored state: (\d+) records in ([\d.]+)s")


def restore_line(log: str) -> tuple[int, float] | None:
    """The records and seconds of the last bulk restore the worker logged
    (``tables/_restore.py``): the restore alone, without the group join."""
    found = RESTORED.findall(log)
    if not found:
        return None
    records, seconds = found[-1]
    return int(records), float(seconds)


def _log_since(path: Path, offset: int) -> str:
    with open(path, "rb") as log:
        log.seek(offset)
        return log.read().decode(errors="replace")


def _memberships(count: int, items: int) -> Iterator[LikeEvent]:
    """``count`` distinct (item, user) likes spread over ``items`` items."""
    for i in range(count):
        yield new_event(f"u{i // items}", f"item:{i % items}", "like")


async def state(lab: Lab, cfg: BenchConfig) -> Result:
    settings = lab.cluster("state")
    await create_topics(settings)
    total = cfg.memberships
    say(f"state: producing {total:,} distinct memberships over {cfg.items:,} items")
    await produce(
        KafkaConfig.from_settings(settings), settings.topic, _memberships(total, cfg.items), total
    )
    worker = lab.worker(settings)
    worker.start()
    *_, folded = await watch_worker(worker, total, 120, cfg.cap)
    if folded >= total:
        await wait_committed(settings, limit=600)
    rss, hwm = worker.status("VmRSS"), worker.status("VmHWM")
    disk = disk_bytes(settings.data_dir)
    say(f"state: RSS {rss / 2**20:,.0f} MiB (peak {hwm / 2**20:,.0f}), disk {disk / 2**20:,.0f}")
    worker.stop()
    changelog = f"{settings.app_id}-state-changelog"
    records = await topic_records(settings, changelog)
    shutil.rmtree(settings.data_dir)
    say(f"state: data dir deleted; recovering {records:,} changelog records")
    logged = worker.log.stat().st_size
    async with aiohttp.ClientSession() as http:
        spawned = time.monotonic()
        worker.start()
        up = await worker.wait_status(http, "/healthz", limit=120)
        ready = await worker.wait_status(http, "/readyz", limit=1800)
    rss_after, hwm_after = worker.status("VmRSS"), worker.status("VmHWM")
    worker.stop()
    recovery = ready - up
    rate = records / max(recovery, 1e-9)
    restored = restore_line(_log_since(worker.log, logged))
    say(f"state: recovered in {recovery:.1f}s: {rate:,.0f} records/s end to end")
    alone: dict[str, float] = {}
    if restored is not None:
        n, took = restored
        alone = {
            "restore_records": n,
            "restore_s": took,
            "restore_records_per_s": round(n / max(took, 1e-9)),
            "outside_restore_s": round(recovery - took, 2),
        }
        say(f"state: the bulk restore alone: {n:,} records in {took:.2f}s")
    result = Result(
        "state",
        command("state", cfg, "memberships", "items", "partitions", "cap"),
        {
            "memberships": total,
            "memberships_folded": round(folded),
            "rss_mib": round(rss / 2**20, 1),
            "peak_rss_mib": round(hwm / 2**20, 1),
            "rss_after_recovery_mib": round(rss_after / 2**20, 1),
            "peak_rss_recovery_mib": round(hwm_after / 2**20, 1),
            "disk_mib": round(disk / 2**20, 1),
            "changelog_records": records,
            "recovery_s": round(recovery, 2),
            "start_to_ready_s": round(ready - spawned, 2),
            "recovery_records_per_s": round(rate),
            **alone,
        },
        limits=(
            "recovery: the table's bulk restore (a plain consumer, per fetched batch the "
            "newest record per key, one RocksDB multi-get and one write batch; its own "
            "log line gives the restore alone: restore_s, restore_records_per_s) plus "
            "the group join, the table's start and faust's recovery handshake "
            "(outside_restore_s); recovery_s counts from /healthz up to /readyz (process "
            "start excluded) and recovery_records_per_s is the changelog's records over "
            "it. The worker's main thread is the limit (one core): aiokafka decoding "
            "records, the multi-get and write batches, and the tail of like-counts that "
            "rebuilds the replica beside it (see the profile below). RSS: RocksDB "
            "block caches and memtables (partitions x (cache + 2 x write buffer)) plus the "
            "Python heap"
        ),
    )
    result.target("RSS MiB", rss / 2**20, "<", 1024)
    result.target("recovery records/s, end to end", rate, ">=", 150_000)
    if restored is None:
        result.notes.append("no bulk restore line in the worker's log: restore alone unknown")
    if min(total, folded) < TARGET_MEMBERSHIPS:
        result.notes.append(
            f"scaled down: {min(total, folded):,.0f} memberships instead of "
            f"{TARGET_MEMBERSHIPS:,}"
            + (f" (folding capped at {cfg.cap:.0f}s)" if folded < total else "")
        )
    return result
