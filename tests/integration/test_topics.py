"""Start-up against topics of another partition count: the process stops, naming it.

Real broker, real ``likestream worker`` processes. Re-partitioning is not done in place,
so a worker started with a LIKESTREAM_PARTITIONS that the existing topics do not have
(the events topic, or the changelog faust made for the tables) must not start.
"""

from __future__ import annotations

import asyncio
import subprocess
from pathlib import Path

import pytest
from aiokafka.admin import NewTopic
from conftest import Cluster

from likestream.devtools._broker import Broker
from likestream.tables import changelog_topic

pytestmark = pytest.mark.integration

LIMIT = 120.0  # seconds a worker may take to refuse


@pytest.fixture
def fresh(broker: Broker, tmp_path: Path) -> Cluster:
    """Topic and group names of this test alone."""
    return Cluster(broker, tmp_path)


async def create(cluster: Cluster, name: str, partitions: int) -> None:
    admin = cluster.kafka.admin()
    await admin.start()
    try:
        await admin.create_topics([NewTopic(name, partitions, 1)])
    finally:
        await admin.close()


async def refusal(cluster: Cluster, name: str) -> str:
    """The worker's exit code must be 2 (a bad setting); returns what it said."""
    worker = cluster.worker(name)
    worker.start()
    assert worker.proc is not None
    try:
        code = await asyncio.to_thread(worker.proc.wait, LIMIT)
    except subprocess.TimeoutExpired:
        worker.kill()
        pytest.fail(f"the worker did not stop within {LIMIT}s:\n{worker.log_tail()}")
    assert code == 2, worker.log_tail()
    return worker.log.read_text()


async def test_events_topic_of_another_partition_count(fresh: Cluster) -> None:
    await create(fresh, fresh.topic, fresh.partitions - 2)
    said = await refusal(fresh, "w1")
    assert (
        f"topic {fresh.topic!r} has {fresh.partitions - 2} partitions but "
        f"LIKESTREAM_PARTITIONS is {fresh.partitions}"
    ) in said


async def test_changelog_of_another_partition_count(fresh: Cluster) -> None:
    # The events topic and the others are created right; the tables' changelog was
    # left by an earlier deployment with other partitions.
    changelog = changelog_topic(fresh.app_id)
    await create(fresh, changelog, fresh.partitions + 2)
    said = await refusal(fresh, "w1")
    assert (
        f"topic {changelog!r} has {fresh.partitions + 2} partitions but "
        f"LIKESTREAM_PARTITIONS is {fresh.partitions}"
    ) in said
