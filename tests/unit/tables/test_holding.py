"""``LikeTables.holding``: what the web's copy clock (web/_copies.py) waits for before it
connects to Kafka, set once a partition's copy is here (active or standby)."""

from __future__ import annotations

import asyncio
from pathlib import Path

import faust

from likestream.config._settings import load_settings
from likestream.tables import LikeTables

LIMIT = 20.0  # seconds; only reached when something is broken


async def test_holding_once_a_standbys_first_changelog_records_are_merged(tmp_path: Path) -> None:
    settings = load_settings(partitions=2, data_dir=tmp_path)
    app = faust.App("holding-test", store="rocksdb://", datadir=str(tmp_path), autodiscover=False)
    tables = LikeTables(app, settings)
    waiting = asyncio.ensure_future(tables.holding())
    await asyncio.sleep(0)
    assert not waiting.done()
    assert tables.held_changelogs() == []
    # A standby's database opens when its first changelog records are applied.
    tables.table.apply_changelog_batch([])  # nothing to apply: still nothing held
    await asyncio.sleep(0)
    assert not waiting.done()
    tables.table.merge(1, [(b"c/item:1", b"3,20")])
    await asyncio.wait_for(waiting, LIMIT)
    assert [p for _, p in tables.held_changelogs()] == [1]
