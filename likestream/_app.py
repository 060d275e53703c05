"""Wiring: the Faust app with its topics, tables, agents and web server."""

from __future__ import annotations

from dataclasses import dataclass

import faust

from likestream.agents import Topics, define_agents
from likestream.tables import LikeTables
from likestream.web import (
    PushSettings,
    RateLimiter,
    TrendingSettings,
    WebServer,
    Writes,
    create_app,
)

from ._sampler import Sampler
from ._settings import Settings
from .client import LikeClient

__all__ = ["Pipeline", "build"]


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
        broker=";".join(f"kafka://{s}" for s in settings.kafka.split(",")),
        store="rocksdb://",
        datadir=str(settings.data_dir),
        topic_partitions=settings.partitions,
        topic_replication_factor=settings.replication,
        topic_allow_declare=True,
        topic_disable_leader=True,
        consumer_auto_offset_reset="earliest",
        producer_acks=-1,
        producer_linger_ms=5,
        web_enabled=False,
        autodiscover=False,
        table_standby_replicas=0,
        # A SIGKILLed worker's partitions move on after this, not faust's 60 s.
        broker_session_timeout=10,
        broker_heartbeat_interval=3,
    )


def _raw_topic(app: faust.App, name: str, settings: Settings) -> faust.TopicT:
    # Raw bytes in and out: the agent validates events itself, so that a bad
    # record reaches the DLQ with its original bytes instead of crashing a codec.
    return app.topic(
        name,
        key_type=bytes,
        value_type=bytes,
        key_serializer="raw",
        value_serializer="raw",
        partitions=settings.partitions,
    )


def _writes(settings: Settings, secret: str) -> Writes:
    return Writes(
        publisher=LikeClient(settings.kafka, settings.topic, linger_ms=1),
        secret=secret,
        limiter=RateLimiter(settings.rate, settings.burst),
        timeout=settings.publish_timeout_ms / 1000,
    )


def _push(settings: Settings) -> PushSettings:
    return PushSettings(
        interval=settings.push_interval_ms / 1000,
        max_items=settings.push_max_items,
        queue=settings.push_queue,
        heartbeat=settings.push_heartbeat_ms / 1000,
        kafka=settings.kafka,
        counts_topic=settings.counts_topic,
        partitions=settings.partitions,
    )


def _trending(settings: Settings) -> TrendingSettings:
    return TrendingSettings(
        windows=settings.windows,
        kafka=settings.kafka,
        topic=settings.trending_topic,
        partitions=settings.partitions,
    )


def build(settings: Settings, secret: str) -> Pipeline:
    """The worker's parts; ``secret`` verifies write tokens (see ``_secret.py``)."""
    app = _faust_app(settings)
    topics = Topics(
        events=_raw_topic(app, settings.topic, settings),
        counts=settings.counts_topic,
        dlq=settings.dlq_topic,
        trending=settings.trending_topic,
    )
    tables = LikeTables(app, settings)
    define_agents(app, topics, tables, settings)
    sampler = Sampler(app, tables, settings)
    api = create_app(
        tables,
        _writes(settings, secret),
        settings.cors_origin_set,
        status=sampler,
        push=_push(settings),
        dev_tokens=bool(settings.dev_tokens),
        trending=_trending(settings),
    )
    web = WebServer(api, settings.web_host, settings.web_port)
    return Pipeline(app, tables, web, sampler)
