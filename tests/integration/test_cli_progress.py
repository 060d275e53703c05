"""``likestream produce --load N`` on the real broker: a progress bar on a terminal, and
through a pipe only the summary line (no bar, no carriage return, no escape sequence)."""

from __future__ import annotations

import os
import pty
import re
import subprocess
import sys

import pytest
from conftest import Cluster

from likestream.config._settings import load_settings
from likestream.kafka._topics import ensure_topics

pytestmark = pytest.mark.integration

LOAD = 3000
SUMMARY = re.compile(rf"produced {LOAD} events in [\d.]+s: [\d,]+ events/s\n")


def _env(cluster: Cluster) -> dict[str, str]:
    return {
        **os.environ,
        "LIKESTREAM_KAFKA": cluster.broker.bootstrap,
        "LIKESTREAM_TOPIC": cluster.topic,
        "LIKESTREAM_PARTITIONS": str(cluster.partitions),
    }


def _command() -> list[str]:
    return [sys.executable, "-m", "likestream", "produce", "--load", str(LOAD), "--items", "50"]


@pytest.fixture(scope="module", autouse=True)
async def topics(cluster: Cluster) -> None:
    settings = load_settings(
        kafka=cluster.broker.bootstrap, topic=cluster.topic, partitions=cluster.partitions
    )
    await ensure_topics(settings, only=[cluster.topic])


def test_through_a_pipe_only_the_summary(cluster: Cluster) -> None:
    done = subprocess.run(_command(), env=_env(cluster), capture_output=True, timeout=120)
    assert done.returncode == 0, done.stderr
    assert done.stdout == b""
    assert SUMMARY.fullmatch(done.stderr.decode()), done.stderr


def test_on_a_terminal_a_bar(cluster: Cluster) -> None:
    reader, writer = pty.openpty()
    try:
        proc = subprocess.Popen(
            _command(), env=_env(cluster), stdout=subprocess.DEVNULL, stderr=writer
        )
        os.close(writer)
        shown = b""
        while True:
            try:
                chunk = os.read(reader, 65536)
            except OSError:  # EIO: the terminal's last writer exited
                break
            if not chunk:
                break
            shown += chunk
        assert proc.wait(timeout=120) == 0
    finally:
        os.close(reader)
    text = shown.decode(errors="replace")
    assert "producing" in text
    assert f"{LOAD}/{LOAD}" in text
    assert f"produced {LOAD} events in" in text
