"""Observability on a real worker: /metrics moves with traffic, /status, the CLI, JSON logs.

One worker with JSON logs and a fast sampler. Events (one invalid), reads, writes
and a 429 go in; every metric of ``likestream/runtime/_metrics.py`` must be exposed and the
ones that traffic drives must have moved. Readiness during recovery (``/readyz``
503, then 200) is checked in ``test_recovery.py::test_not_ready_and_no_reads_until_
recovered``; here the matching gauges are checked through a restart.
"""

from __future__ import annotations

import asyncio
import json
import os
import re
import shutil
import subprocess
import sys
import time
from collections.abc import AsyncIterator
from pathlib import Path

import aiohttp
import pytest
from conftest import Cluster, Worker, set_topic_configs
from oracle import mixed_events
from prometheus_client import REGISTRY
from prometheus_client.parser import text_string_to_metric_families

from likestream.client import LikeClient
from likestream.domain._tokens import mint_token
from likestream.runtime import _metrics
from likestream.runtime._produce import produce
from likestream.tables import changelog_topic

pytestmark = pytest.mark.integration

SECRET = "observability-test-secret-" + "0123456789abcdef" * 2
BURST = 2
REQUEST_ID = "obs-test-429"

Samples = dict[tuple[str, tuple[tuple[str, str], ...]], float]


@pytest.fixture(scope="module")
async def worker(cluster: Cluster) -> AsyncIterator[Worker]:
    instance = cluster.worker("w1")
    instance.env.update(
        {
            "LIKESTREAM_SECRET": SECRET,
            "LIKESTREAM_RATE": "0.01",  # one token per 100 s: the 429 is certain
            "LIKESTREAM_BURST": str(BURST),
            "LIKESTREAM_LOG_FORMAT": "json",
            "LIKESTREAM_METRICS_INTERVAL_MS": "100",
            # Lag is end minus committed offset: committing every 2 s rather than every
            # 50 ms leaves a backlog visible to many 100 ms samples, however fast the
            # worker folds it.
            "LIKESTREAM_COMMIT_INTERVAL_MS": "2000",
        }
    )
    async with instance.running():
        yield instance


def documented_families() -> set[str]:
    """Every metric the README's Observability table lists, as exposed."""
    text = (Path(__file__).parents[2] / "README.md").read_text()
    table = text.split("\n## Observability\n", 1)[1].split("\n\n| metric |", 1)[1]
    rows = table.split("\n\n", 1)[0]
    return set(re.findall(r"`(likestream_\w+)[{`]", rows))


def exposed_families() -> set[str]:
    """Every family likestream.runtime._metrics defines, by its exposed name."""
    assert _metrics.EVENTS  # imported: its metrics are in the default registry
    return {
        family.name + ("_total" if family.type == "counter" else "")
        for family in REGISTRY.collect()
        if family.name.startswith("likestream_")
    }


async def scrape(http: aiohttp.ClientSession, worker: Worker) -> tuple[set[str], Samples]:
    async with http.get(f"{worker.url}/metrics") as resp:
        assert resp.status == 200
        text = await resp.text()
    families, samples = set(), {}
    for family in text_string_to_metric_families(text):
        families.add(family.name + ("_total" if family.type == "counter" else ""))
        for s in family.samples:
            samples[(s.name, tuple(sorted(s.labels.items())))] = s.value
    return families, samples


def total(samples: Samples, name: str, **labels: str) -> float:
    return sum(
        v for (n, lbls), v in samples.items() if n == name and labels.items() <= dict(lbls).items()
    )


async def wait_for(
    http: aiohttp.ClientSession, worker: Worker, check: str, limit: float = 120, **labels: str
) -> Samples:
    """Scrape until ``check`` (a sample name) sums above 0 with ``labels``."""
    deadline = time.monotonic() + limit
    while True:
        _, samples = await scrape(http, worker)
        if total(samples, check, **labels) > 0:
            return samples
        assert time.monotonic() < deadline, f"{check}{labels} never above 0"
        await asyncio.sleep(0.1)


async def test_every_metric_is_exposed_and_moves_with_traffic(
    cluster: Cluster, worker: Worker, http: aiohttp.ClientSession
) -> None:
    families, before = await scrape(http, worker)
    # Against the README's list (not the code's own registry): each documented metric.
    documented = documented_families()
    assert "likestream_events_total" in documented  # the table was found
    assert documented <= families, f"documented, not exposed: {documented - families}"
    expected = exposed_families()
    assert expected <= families, f"not exposed: {expected - families}"

    # Lag, whatever the machine's speed: while the changelog refuses writes (a batch
    # above max.message.bytes), no flush lands and no offset is committed, so the events
    # sent meanwhile are lag in every sample until it accepts them again.
    refusing = [changelog_topic(cluster.app_id)]
    await set_topic_configs(cluster.kafka, refusing, max_message_bytes="64")
    try:
        await produce(cluster.kafka, cluster.topic, list(mixed_events(2_000, 200, 500, 0, "obs")))
        await wait_for(http, worker, "likestream_consumer_lag_records")
    finally:
        await set_topic_configs(cluster.kafka, refusing, max_message_bytes=None)
    # One invalid record, once the agent no longer rewinds (each rewind reads it again).
    async with LikeClient(cluster.kafka, cluster.topic) as client:
        await client.send_raw(b"obs:bad", b"{not json")
    await cluster.wait_caught_up()

    # HTTP: reads, a bad id, writes up to the burst, then a 429 with our request id.
    token = {"Authorization": f"Bearer {mint_token(SECRET, 'obs-user', 600)}"}
    async with http.get(f"{worker.url}/items/obs:1/likes") as resp:
        assert resp.status == 200
    async with http.get(f"{worker.url}/items/bad%20id/likes") as resp:
        assert resp.status == 400
    for i in range(BURST):
        async with http.post(f"{worker.url}/items/obs:w{i}/like", headers=token) as resp:
            assert resp.status == 202
    headers = {**token, "X-Request-Id": REQUEST_ID}
    async with http.post(f"{worker.url}/items/obs:w0/like", headers=headers) as resp:
        assert resp.status == 429
        assert resp.headers["X-Request-Id"] == REQUEST_ID

    after = await wait_for(http, worker, "likestream_table_rows")
    moved = {
        "applied": ("likestream_events_total", {"outcome": "applied"}),
        "noop": ("likestream_events_total", {"outcome": "noop"}),
        "invalid": ("likestream_events_total", {"outcome": "invalid"}),
        "dlq": ("likestream_dlq_records_total", {}),
        "latency": ("likestream_event_latency_seconds_count", {}),
        "http 200": ("likestream_http_requests_total", {"status": "200"}),
        "http 400": ("likestream_http_requests_total", {"status": "400"}),
        "http 202": ("likestream_http_requests_total", {"status": "202"}),
        "http 429": ("likestream_http_requests_total", {"status": "429"}),
        "http latency": ("likestream_http_request_duration_seconds_count", {}),
        "rate limited": ("likestream_rate_limited_total", {}),
    }
    still = {
        what: (name, labels)
        for what, (name, labels) in moved.items()
        if total(after, name, **labels) <= total(before, name, **labels)
    }
    assert still == {}
    assert total(after, "likestream_dlq_records_total") == 1
    assert total(after, "likestream_table_rows") > 0
    assert total(after, "likestream_assigned_partitions") == cluster.partitions
    assert total(after, "likestream_ready") == 1
    assert total(after, "likestream_recovery_in_progress") == 0
    lags = {
        dict(lbls)["partition"] for (n, lbls) in after if n == "likestream_consumer_lag_records"
    }
    assert lags == {str(p) for p in range(cluster.partitions)}
    # The live feed (WebSocket/SSE) is another module's: its metrics are exposed at 0 here.
    for name in ("likestream_ws_connections", "likestream_sse_connections"):
        assert (name, ()) in after


async def test_status_endpoint_and_cli(
    cluster: Cluster, worker: Worker, http: aiohttp.ClientSession
) -> None:
    await cluster.wait_caught_up()
    deadline = time.monotonic() + 60
    while True:  # the next sample after catching up shows no lag
        async with http.get(f"{worker.url}/status") as resp:
            assert resp.status == 200
            status = await resp.json()
        if status["lag"]["total"] == 0:
            break
        assert time.monotonic() < deadline, status
        await asyncio.sleep(0.1)
    assert status["ready"] is True
    assert status["partitions"] == list(range(cluster.partitions))
    assert status["recovery"] == {"in_progress": False, "remaining_records": 0}
    assert status["events"]["applied"] > 0
    assert status["dlq_records"] == 1
    assert set(status["connections"]) == {"websocket", "sse", "subscriptions"}

    done = await asyncio.to_thread(
        subprocess.run,
        [sys.executable, "-m", "likestream", "status", "--url", worker.url],
        env={**os.environ, **worker.env},
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert done.returncode == 0, done.stderr
    out = done.stdout
    assert "ready        yes" in out
    assert f"{cluster.partitions} of {cluster.partitions} (0,1,2,3)" in out
    assert "lag          0 records" in out
    assert "1 to the DLQ" in out

    gone = await asyncio.to_thread(
        subprocess.run,
        [sys.executable, "-m", "likestream", "status", "--url", "http://127.0.0.1:9"],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert gone.returncode == 2
    assert "cannot read http://127.0.0.1:9/status" in gone.stderr


async def test_recovery_gauges_follow_readiness(
    cluster: Cluster, worker: Worker, http: aiohttp.ClientSession
) -> None:
    """Wiped state, restart: not ready and recovering first, then ready with nothing left."""
    events = list(mixed_events(60_000, 2_000, 20_000, seed=99, prefix="rec"))
    await produce(cluster.kafka, cluster.topic, events)
    await cluster.wait_caught_up()
    worker.stop()
    shutil.rmtree(worker.data_dir)
    worker.start()
    seen: list[tuple[float, float, float, float]] = []
    deadline = time.monotonic() + 120
    while not seen or seen[-1][0] != 1:
        assert time.monotonic() < deadline, f"not ready in time: {seen[-5:]}"
        try:
            _, samples = await scrape(http, worker)
        except aiohttp.ClientConnectionError:
            await asyncio.sleep(0.05)
            continue
        seen.append(
            (
                total(samples, "likestream_ready"),
                total(samples, "likestream_recovery_in_progress"),
                total(samples, "likestream_recovery_remaining_records"),
                total(samples, "likestream_restored_records_total"),
            )
        )
        await asyncio.sleep(0.005)
    # Whether a scrape lands during the restore is up to the machine's speed; any that
    # does is from a worker that is not ready.
    assert all(ready == 0 for ready, busy, remaining, _ in seen if busy or remaining), seen
    assert seen[-1][:3] == (1, 0, 0)
    # The scrape that first says ready shows the restore done: the whole state read back.
    assert seen[-1][3] >= len(set(events)) / 2, seen[-1]


def test_logs_are_json_lines_with_request_ids(worker: Worker) -> None:
    lines = [line for line in worker.log.read_text().splitlines() if line.strip()]
    docs = []
    for line in lines:
        try:
            docs.append(json.loads(line))
        except ValueError:
            pytest.fail(f"not a JSON line: {line[:300]}")
    assert all({"ts", "level", "logger", "message"} <= doc.keys() for doc in docs)
    loggers = {doc["logger"] for doc in docs}
    assert any(name.startswith("faust") for name in loggers), "faust's logs are not JSON"
    [refused] = [d for d in docs if d.get("request_id") == REQUEST_ID]
    assert refused["logger"] == "likestream.access"
    assert refused["status"] == 429
    assert refused["method"] == "POST"
    # The user it was refused for shows as a keyed hash, never as the id.
    assert re.fullmatch("u:[0-9a-f]{12}", refused["user"])
    assert not any("obs-user" in line for line in lines)
    access = [d for d in docs if d["logger"] == "likestream.access"]
    # Without an X-Request-Id the worker makes one up.
    assert all(re.fullmatch("[0-9a-f]{32}", d["request_id"]) for d in access if d is not refused)
    assert any(d["logger"] == "likestream.agents._likes" and d["level"] == "warning" for d in docs)
