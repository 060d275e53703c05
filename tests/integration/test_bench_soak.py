"""A short soak against the real broker: a worker killed with SIGKILL and restarted under
load, subscribers on a gateway, reads through it; every event checked at the end."""

from __future__ import annotations

from pathlib import Path

import pytest

from likestream.devtools._broker import Broker
from likestream.devtools.bench._common import BenchConfig
from likestream.devtools.bench._lab import Lab
from likestream.devtools.bench._soak import soak
from likestream.devtools.bench._soak_report import COLUMNS, sample_table

pytestmark = pytest.mark.integration


async def test_a_short_soak_loses_nothing_and_samples_every_interval(
    broker: Broker, tmp_path: Path
) -> None:
    cfg = BenchConfig(
        minutes=0.5,
        sample_seconds=3,
        rate=100,
        read_rate=20,
        subscribers=20,
        partitions=2,
        out=tmp_path / "out",
    )
    lab = Lab(tmp_path, cfg.partitions, running_broker=broker)
    try:
        result = await soak(lab, cfg)
    finally:
        lab.stop()  # the workers; the session's broker stays up

    f = result.figures
    assert f["events"] > 0
    assert f["memberships_checked"] > 0
    assert f["lost_events"] == 0, result.notes  # every count and membership as produced
    assert f["restart_s"] == f["restart_s"]  # the kill and restart happened (not NaN)
    assert f["subscribers_closed"] == 0  # the gateway kept them through the worker's restart
    assert f["pushes_missing"] == 0  # every change reached every subscriber in the end
    assert len(result.samples) == 10
    assert all(set(COLUMNS) <= set(row) for row in result.samples)
    assert all(row["gateway_rss_mib"] > 0 for row in result.samples)
    assert len(sample_table(result.samples).splitlines()) == 12
    assert [t["name"] for t in result.targets if t["name"] == "events lost"] == ["events lost"]
