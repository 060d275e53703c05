"""Kafka security (issue 15): a worker and a gateway through a SCRAM-SHA-512 listener over
TLS, under the ACLs of k8s/base/kafka-users.yaml, on the embedded broker.

The ACLs are read from the KafkaUser manifests (names mapped to this module's topics), so
what runs here is what Kubernetes grants: if a role lacks a permission, the worker or the
gateway fails here. Then the attacks of the security review: a client without
credentials or with a wrong password is refused, and the gateway's user cannot publish a
count on like-counts (the fake count every process would keep).
"""

from __future__ import annotations

import asyncio
import secrets
import time
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import aiohttp
import pytest
import yaml
from aiokafka.errors import KafkaConnectionError, TopicAuthorizationFailedError
from conftest import Cluster, Worker, free_port_pair

from likestream.config._settings import load_settings
from likestream.devtools._broker import Broker, Secured, default_cache_dir
from likestream.domain._tokens import mint_token
from likestream.kafka._factory import Acl, KafkaConfig, create_acls
from likestream.kafka._topics import ensure_topics

pytestmark = pytest.mark.integration

USERS_YAML = Path(__file__).parents[2] / "k8s" / "base" / "kafka-users.yaml"
PASSWORDS = {name: secrets.token_hex(16) for name in ("worker", "gateway", "keda")}
SECRET = secrets.token_hex(32)
LIMIT = 60.0  # seconds for a condition on a shared 2-core machine; never a figure


def manifest_acls(cluster: Cluster) -> list[Acl]:
    """The KafkaUsers' ACLs, with the default names mapped to this module's."""
    names = {
        "likes": cluster.topic,
        "likes.dlq": f"{cluster.topic}.dlq",
        "like-counts": cluster.counts_topic,
        "like-trending": cluster.trending_topic,
        "likestream": cluster.app_id,
        "likestream-": f"{cluster.app_id}-",
    }
    out: list[Acl] = []
    for doc in yaml.safe_load_all(USERS_YAML.read_text()):
        user = doc["metadata"]["name"].removeprefix("likestream-")
        for rule in doc["spec"]["authorization"]["acls"]:
            resource = rule["resource"]
            for operation in rule["operations"]:
                out.append(
                    Acl(
                        f"User:{user}",
                        _snake(operation),
                        resource["type"].upper(),
                        names[resource["name"]],
                        "PREFIXED" if resource["patternType"] == "prefix" else "LITERAL",
                    )
                )
    return out


def _snake(camel: str) -> str:
    return "".join(f"_{c}" if c.isupper() and i else c for i, c in enumerate(camel)).upper()


@pytest.fixture(scope="module")
def secured(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Broker]:
    """A broker of its own: the SCRAM users are made when its storage is formatted."""
    users = tuple(PASSWORDS.items())
    instance = Broker(
        default_cache_dir(),
        tmp_path_factory.mktemp("secured-broker"),
        free_port_pair(span=3),
        Secured(users),
    )
    instance.start()
    yield instance
    instance.stop()


@pytest.fixture(scope="module")
async def cluster(secured: Broker, tmp_path_factory: pytest.TempPathFactory) -> Cluster:
    """Topics declared by the super user (as Strimzi's topic operator does), ACLs from
    the manifests."""
    cluster = Cluster(secured, tmp_path_factory.mktemp("kafka-security"))
    settings = load_settings(
        kafka=secured.bootstrap,
        topic=cluster.topic,
        counts_topic=cluster.counts_topic,
        trending_topic=cluster.trending_topic,
        partitions=cluster.partitions,
    )
    await ensure_topics(settings)
    await create_acls(secured.kafka, manifest_acls(cluster))
    return cluster


def role(cluster: Cluster, secured: Broker, name: str, command: str, **more: str) -> Worker:
    """A worker or gateway that reaches Kafka only through the secured listener."""
    return cluster.worker(
        name,
        command,
        **more,
        kafka=secured.secured_bootstrap,
        kafka_security_protocol="SASL_SSL",
        kafka_sasl_mechanism="SCRAM-SHA-512",
        kafka_username=name,
        kafka_password=PASSWORDS[name],
        kafka_ca_file=str(secured.ca_file),
        secret=SECRET,
    )


@pytest.fixture(scope="module")
async def worker(cluster: Cluster, secured: Broker) -> AsyncIterator[Worker]:
    async with role(cluster, secured, "worker", "worker").running() as instance:
        yield instance


@pytest.fixture(scope="module")
async def gateway(cluster: Cluster, secured: Broker, worker: Worker) -> AsyncIterator[Worker]:
    # Two processes: the supervisor hands the credentials to its children (Settings.as_env).
    gateway = role(cluster, secured, "gateway", "gateway", gateway_procs="2")
    async with gateway.running() as instance:
        yield instance


async def count(http: aiohttp.ClientSession, at: Worker, item: str) -> Any:
    async with http.get(f"{at.url}/likes", params={"items": item}) as resp:
        return (await resp.json())["likes"].get(item) if resp.status == 200 else None


async def test_a_like_through_the_gateway_is_counted(
    worker: Worker, gateway: Worker, http: aiohttp.ClientSession
) -> None:
    token = mint_token(SECRET, "alice", 300)
    headers = {"Authorization": f"Bearer {token}"}
    async with http.post(f"{gateway.url}/items/sec:1/like", headers=headers) as resp:
        assert resp.status in (200, 201, 202), await resp.text()
    deadline = time.monotonic() + LIMIT
    while (await count(http, gateway, "sec:1"), await count(http, worker, "sec:1")) != (1, 1):
        assert time.monotonic() < deadline, "the like was not counted through SCRAM/TLS"
        await asyncio.sleep(0.2)


async def refused(kafka: KafkaConfig) -> None:
    producer = kafka.producer(request_timeout_ms=5000)
    try:
        with pytest.raises(KafkaConnectionError):
            await producer.start()
    finally:
        await producer.stop()


async def test_a_client_without_credentials_is_refused(secured: Broker) -> None:
    await refused(KafkaConfig(secured.secured_bootstrap, "SSL", ca_file=secured.ca_file))
    await refused(KafkaConfig(secured.secured_bootstrap))


async def test_a_wrong_password_is_refused(secured: Broker) -> None:
    await refused(secured.user("gateway", PASSWORDS["worker"]))
    await refused(secured.user("nobody", PASSWORDS["gateway"]))


async def test_the_gateway_user_cannot_publish_counts(
    cluster: Cluster, secured: Broker, gateway: Worker
) -> None:
    """The fake-count attack: a like-counts record with a huge source offset."""
    producer = secured.user("gateway", PASSWORDS["gateway"]).producer(request_timeout_ms=5000)
    await producer.start()
    try:
        value = b'{"item_id": "sec:1", "likes": 1000000}'
        headers = [("source-offset", b"9223372036854775807")]
        for topic in (cluster.counts_topic, f"{cluster.app_id}-state-changelog"):
            with pytest.raises(TopicAuthorizationFailedError):
                await producer.send_and_wait(topic, value, key=b"sec:1", headers=headers)
    finally:
        await producer.stop()


async def test_the_worker_user_cannot_forge_likes(cluster: Cluster, secured: Broker) -> None:
    producer = secured.user("worker", PASSWORDS["worker"]).producer(request_timeout_ms=5000)
    await producer.start()
    try:
        with pytest.raises(TopicAuthorizationFailedError):
            await producer.send_and_wait(cluster.topic, b"{}", key=b"sec:1")
    finally:
        await producer.stop()
