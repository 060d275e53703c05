"""Wiring: the Faust app with its topics, tables, agents and web server."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from functools import partial

import faust
from faust.types import TP

from likestream.agents import LikesAgent, Topics
from likestream.client import LikeClient
from likestream.config._settings import Settings
from likestream.kafka import _internals as internals
from likestream.kafka._factory import KafkaConfig
from likestream.kafka._membership import Membership
from likestream.kafka._sender import KafkaSender
from likestream.runtime._credentials import Credentials
from likestream.runtime._sampler import Sampler
from likestream.tables import LikeTables
from likestream.web import (
    Auth,
    KafkaFeeds,
    LimitSettings,
    PushSettings,
    RateLimiter,
    ReadSettings,
    Replica,
    TrendingSettings,
    WebServer,
    Writes,
    create_app,
    kafka_feeds,
    replica_dir,
)

__all__ = [
    "Pipeline",
    "auth_settings",
    "build",
    "count_replica",
    "holds_nothing",
    "kafka_inputs",
    "push_settings",
    "read_settings",
    "trending_settings",
    "write_settings",
]


@dataclass(frozen=True)
class Pipeline:
    app: faust.App
    tables: LikeTables
    web: WebServer
    sampler: Sampler


def _faust_app(settings: Settings) -> faust.App:
    settings.data_dir.mkdir(parents=True, exist_ok=True)
    return faust.App(
        settings.app_id,
        **KafkaConfig.from_settings(settings).faust_options(),
        store="rocksdb://",
        datadir=str(settings.data_dir),
        topic_partitions=settings.partitions,
        topic_replication_factor=settings.replication,
        # likestream/kafka/_topics.py creates every topic, the changelog too, under start-up's
        # retry: faust's own creation exits on a restarting broker's NodeNotReadyError.
        topic_allow_declare=False,
        topic_disable_leader=True,
        consumer_auto_offset_reset="earliest",
        producer_acks=-1,
        producer_linger_ms=5,
        web_enabled=False,
        autodiscover=False,
        table_standby_replicas=settings.standby_replicas,
        # Shared with the group through faust's assignor: how peers and gateways find
        # the owner of a partition (web/_owners.py reads it from the group).
        canonical_url=settings.url,
        consumer_group_instance_id=settings.instance_id,
        # A SIGKILLed worker's partitions move on after this, not faust's 60 s.
        broker_session_timeout=10,
        broker_heartbeat_interval=3,
        broker_max_poll_interval=settings.max_poll_interval_ms / 1000,
    )


def _events_topic(app: faust.App, settings: Settings) -> faust.TopicT:
    # Subscribed so that faust assigns its partitions (with the table's, co-partitioned);
    # read by the agent's own feed in batches, never delivered by faust
    # (agents/_likes.py). No acks: faust never commits it, nor checks its progress.
    return app.topic(
        settings.topic,
        key_type=bytes,
        value_type=bytes,
        key_serializer="raw",
        value_serializer="raw",
        partitions=settings.partitions,
        acks=False,
    )


def write_settings(
    settings: Settings, internal_secret: str, url: str | None, holds: Callable[[int], bool]
) -> Writes:
    """``url``: this process's advertised URL, None for a gateway; ``holds``: whether it owns
    an events partition, and so keeps the rate-limit buckets of the users hashed to it;
    ``internal_secret``: what proves a rate-limit call came from a peer."""
    return Writes(
        publisher=LikeClient(KafkaConfig.from_settings(settings), settings.topic, linger_ms=1),
        limiter=RateLimiter(settings.rate, settings.burst),
        timeout=settings.publish_timeout_ms / 1000,
        limits=LimitSettings(
            partitions=settings.partitions,
            url=url,
            secret=internal_secret,
            timeout=settings.limit_timeout_ms / 1000,
            holds=holds,
        ),
    )


def holds_nothing(partition: int) -> bool:
    """A gateway's ``holds``: it owns no partition, so keeps no rate-limit bucket."""
    return False


def _holds_actives(app: faust.App, topic: str) -> Callable[[int], bool]:
    # The worker's own assignment, not the group's description: only the member Kafka
    # gave the partition keeps its users' buckets.
    def holds(partition: int) -> bool:
        return TP(topic, partition) in app.assignor.assigned_actives()

    return holds


def push_settings(settings: Settings) -> PushSettings:
    return PushSettings(
        interval=settings.push_interval_ms / 1000,
        max_items=settings.push_max_items,
        backlog=settings.push_backlog_kb * 1024,
        heartbeat=settings.push_heartbeat_ms / 1000,
        max_connections=settings.push_max_connections,
        max_per_address=settings.push_max_connections_per_address,
        max_subscriptions=settings.push_max_subscriptions,
    )


def count_replica(settings: Settings) -> Replica:
    """This process's copy of ``like-counts``: on disk under the data dir, the hot counts
    in memory."""
    return Replica(settings.partitions, replica_dir(settings.data_dir), settings.count_cache_items)


def trending_settings(settings: Settings) -> TrendingSettings:
    return TrendingSettings(windows=settings.windows)


def kafka_inputs(settings: Settings) -> KafkaFeeds:
    """What a worker's or a gateway's web layer reads from Kafka (``web/_feeds.py``)."""
    return KafkaFeeds(
        kafka=KafkaConfig.from_settings(settings),
        group=settings.app_id,
        events_topic=settings.topic,
        counts_topic=settings.counts_topic,
        trending_topic=settings.trending_topic,
        partitions=settings.partitions,
    )


def auth_settings(settings: Settings, credentials: Credentials) -> Auth:
    return Auth(tokens=credentials.tokens, public_memberships=settings.public_memberships)


def read_settings(settings: Settings, url: str | None) -> ReadSettings:
    """``url``: this process's advertised URL; None for a gateway (it owns nothing)."""
    return ReadSettings(
        stale_max=settings.stale_max_ms / 1000,
        forward_timeout=settings.forward_timeout_ms / 1000,
        url=url,
    )


def build(settings: Settings, credentials: Credentials) -> Pipeline:
    """The worker's parts; ``credentials`` from ``_credentials.load_credentials``."""
    app = _faust_app(settings)
    topics = Topics(
        events=_events_topic(app, settings),
        counts=settings.counts_topic,
        dlq=settings.dlq_topic,
    )
    tables = LikeTables(app, settings)
    # Before anything runs: a faust that changed what likestream reaches into stops here.
    internals.check_app(app, tables.table.data)
    LikesAgent(
        app,
        topics,
        tables,
        settings,
        sender=KafkaSender(KafkaConfig.from_settings(settings)),
        commit=partial(internals.commit, app),
    ).install()
    membership = Membership(app, tables, settings.max_poll_interval_ms / 1000)
    membership.install()
    sampler = Sampler(app, tables, settings)
    api = create_app(
        tables,
        write_settings(
            settings,
            credentials.internal_secret,
            settings.url,
            _holds_actives(app, settings.topic),
        ),
        settings.cors_origin_set,
        status=sampler,
        push=push_settings(settings),
        dev_tokens=bool(settings.dev_tokens),
        trending=trending_settings(settings),
        reads=read_settings(settings, settings.url),
        replica=count_replica(settings),
        auth=auth_settings(settings, credentials),
        internal_secret=credentials.internal_secret,
        access_sample=settings.access_log_sample,
        liveness=membership.problem,
    )
    api.cleanup_ctx.append(kafka_feeds(kafka_inputs(settings)))
    web = WebServer(api, settings.web_host, settings.web_port)
    return Pipeline(app, tables, web, sampler)
