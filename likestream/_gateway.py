"""``likestream gateway``: reads, writes and pushes, with no partitions and no tables.

A gateway joins no consumer group and keeps nothing on disk: reads go to the owning
workers, or to the ``like-counts`` replica every process keeps (``web/_reads.py``);
writes go to Kafka like a worker's; pushes come from the same replica, and
``/trending`` from the ``like-trending`` topic every process reads. So gateways
scale with connections, not partitions.
"""

from __future__ import annotations

import asyncio
import logging.config
import os
import time
from typing import Any

from aiohttp import web

from likestream.web import NoTables, create_app

from ._app import count_replica, push_settings, read_settings, trending_settings, write_settings
from ._logging import logging_config
from ._retry import retrying
from ._secret import signing_secret
from ._settings import Settings
from ._topics import KafkaUnreachable, ensure_topics

__all__ = ["run_gateway"]

log = logging.getLogger(__name__)

# Open pushes are ended at shutdown; what is left is in-flight requests and the producer.
SHUTDOWN_SECONDS = 10.0


class GatewayStatus:
    """``GET /status`` of a gateway: what it is; it owns no partitions and has no lag."""

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self.born = time.time()

    def status(self) -> dict[str, Any]:
        return {
            "role": "gateway",
            "pid": os.getpid(),
            "uptime_seconds": round(time.time() - self.born, 1),
            "topic": self.settings.topic,
            "partitions": [],
            "partitions_total": self.settings.partitions,
        }


def run_gateway(settings: Settings) -> None:
    logging.config.dictConfig(logging_config(settings))
    secret = signing_secret(settings)  # prod refuses a missing or weak one before anything runs
    # The topics must exist (the replica tails like-counts); their partitions must agree.
    asyncio.run(retrying("creating topics", lambda: ensure_topics(settings), (KafkaUnreachable,)))
    replica = count_replica(settings)
    app = create_app(
        NoTables(replica),
        write_settings(settings, secret),
        settings.cors_origin_set,
        status=GatewayStatus(settings),
        push=push_settings(settings),
        dev_tokens=bool(settings.dev_tokens),
        trending=trending_settings(settings),
        reads=read_settings(settings, url=None),
        replica=replica,
    )
    log.info("gateway: HTTP on %s:%d", settings.web_host, settings.web_port)
    web.run_app(
        app,
        host=settings.web_host,
        port=settings.web_port,
        access_log=None,
        print=None,
        shutdown_timeout=SHUTDOWN_SECONDS,
    )
