"""``state``: M distinct memberships: worker RSS, disk use, and recovery from the changelog
after the data dir is deleted.
"""

from __future__ import annotations

import shutil
import time
from collections.abc import Iterator

import aiohttp

from .._kafka import KafkaConfig
from .._produce import produce
from .._schema import LikeEvent
from ..client import new_event
from ._common import BenchConfig, Result, command, say
from ._ingest import watch_worker
from ._lab import Lab, create_topics, disk_bytes, topic_records, wait_committed

__all__ = ["state"]


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
    async with aiohttp.ClientSession() as http:
        spawned = time.monotonic()
        worker.start()
        up = await worker.wait_status(http, "/healthz", limit=120)
        ready = await worker.wait_status(http, "/readyz", limit=1800)
    rss_after = worker.status("VmRSS")
    worker.stop()
    recovery = ready - up
    rate = records / max(recovery, 1e-9)
    say(f"state: recovered in {recovery:.1f}s: {rate:,.0f} records/s")
    result = Result(
        "state",
        command("state", cfg, "memberships", "items", "partitions", "cap"),
        {
            "memberships": total,
            "memberships_folded": round(folded),
            "rss_mib": round(rss / 2**20, 1),
            "peak_rss_mib": round(hwm / 2**20, 1),
            "rss_after_recovery_mib": round(rss_after / 2**20, 1),
            "disk_mib": round(disk / 2**20, 1),
            "changelog_records": records,
            "recovery_s": round(recovery, 2),
            "start_to_ready_s": round(ready - spawned, 2),
            "recovery_records_per_s": round(rate),
        },
        limits=(
            "recovery: the table's bulk restore (a plain consumer, one RocksDB write "
            "batch per fetch, the newest stamp per key; its own log line gives the "
            "restore alone) plus the group join and faust's recovery handshake; time is "
            "counted from /healthz up to /readyz (process start excluded). RSS: RocksDB "
            "block caches and memtables (partitions x (cache + 2 x write buffer)) plus the "
            "Python heap"
        ),
    )
    result.target("RSS MiB", rss / 2**20, "<", 1024)
    result.target("recovery records/s", rate, ">=", 100_000)
    if min(total, folded) < 1_000_000:
        result.notes.append(
            f"scaled down: {min(total, folded):,.0f} memberships instead of 1,000,000"
            + (f" (folding capped at {cfg.cap:.0f}s)" if folded < total else "")
        )
    return result
