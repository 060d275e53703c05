"""The bench's lean WebSocket client against real servers: a worker and a gateway."""

from __future__ import annotations

import asyncio

import pytest
from conftest import Cluster, Worker

from likestream.client import LikeClient
from likestream.devtools.bench._audience import Client, subscribe

pytestmark = pytest.mark.integration

LIMIT = 120.0  # seconds; generous for a shared two-core machine


async def _like_reaches_subscribers(cluster: Cluster, server: Worker, item: str) -> None:
    url = server.url.replace("localhost", "127.0.0.1")
    clients = [Client([item]), Client([item])]
    # From two loopback addresses, as the bench spreads its connections.
    sockets = [await subscribe(url, c, f"127.0.0.{n + 2}") for n, c in enumerate(clients)]
    async with LikeClient(cluster.kafka, cluster.topic) as producer:
        await producer.like("ann", item)
    await asyncio.wait_for(asyncio.gather(*(c.reach(item, 1) for c in clients)), LIMIT)
    for client, sock in zip(clients, sockets, strict=True):
        assert client.latest == {item: 1}
        assert (client.closed, sock.errors) == (False, [])
        sock.close()
    await asyncio.wait_for(asyncio.gather(*(c.ended() for c in clients)), LIMIT)
    assert all(c.closed and not c.dropped for c in clients)  # closed by us, not dropped


async def test_lean_client_gets_likes_from_a_worker(cluster: Cluster, worker: Worker) -> None:
    await _like_reaches_subscribers(cluster, worker, "lean:w")


async def test_lean_client_gets_likes_from_a_gateway(cluster: Cluster, worker: Worker) -> None:
    async with cluster.worker("gw", command="gateway").running() as gateway:
        await _like_reaches_subscribers(cluster, gateway, "lean:g")
