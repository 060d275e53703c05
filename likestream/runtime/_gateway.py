"""``likestream gateway``: reads, writes and pushes, with no partitions and no tables.

A gateway joins no consumer group and owns no table: reads go to the owning workers,
or to the ``like-counts`` replica every process keeps on disk, a cache it can rebuild
from that topic (``web/_reads.py``);
writes go to Kafka like a worker's; pushes come from the same replica, and
``/trending`` from the ``like-trending`` topic every process reads. So gateways
scale with connections, not partitions.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging.config
import os
import signal
import time
from collections.abc import AsyncIterator, Callable
from typing import Any

from aiohttp import web

from likestream.config._settings import Settings
from likestream.domain._retry import retrying
from likestream.kafka._factory import warn_if_plaintext
from likestream.kafka._topics import KafkaUnreachable, ensure_topics, gateway_topics
from likestream.runtime._credentials import load_credentials
from likestream.runtime._faust_app import (
    auth_settings,
    count_replica,
    holds_nothing,
    kafka_inputs,
    push_settings,
    read_settings,
    trending_settings,
    write_settings,
)
from likestream.runtime._logging import logging_config
from likestream.web import NoTables, create_app, kafka_feeds

__all__ = ["run_gateway"]

log = logging.getLogger(__name__)

# Open pushes are ended at shutdown; what is left is in-flight requests and the producer.
SHUTDOWN_SECONDS = 10.0
SUPERVISOR_CHECK_SECONDS = 1.0


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


def _watch_supervisor(
    supervisor: int,
) -> Callable[[web.Application], AsyncIterator[None]]:
    """Stop gracefully once the supervisor is gone (say it was SIGKILLed): a child must not
    outlive it holding the port."""

    async def watch() -> None:
        while True:
            await asyncio.sleep(SUPERVISOR_CHECK_SECONDS)
            if os.getppid() != supervisor:
                break
        log.error("gateway: the supervisor (pid %d) is gone; stopping", supervisor)
        os.kill(os.getpid(), signal.SIGTERM)

    async def context(app: web.Application) -> AsyncIterator[None]:
        task = asyncio.create_task(watch())
        yield
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task

    return context


def run_gateway(settings: Settings, supervised_by: int | None = None) -> int:
    """Run one gateway process until SIGTERM or SIGINT; returns the exit code.

    ``supervised_by``: this is one of the processes of a gateway with
    ``LIKESTREAM_GATEWAY_PROCS`` > 1, started by that pid (``_supervisor.py``): bind with
    SO_REUSEPORT, leave the topics to the supervisor, stop if it is gone.
    """
    logging.config.dictConfig(logging_config(settings))
    # Prod refuses missing or weak secrets, or an unreadable JWKS, before anything runs.
    credentials = load_credentials(settings)
    warn_if_plaintext(settings)
    if supervised_by is None:
        # The topics must exist (the replica tails like-counts); their partitions must agree.
        asyncio.run(
            retrying(
                "creating topics",
                lambda: ensure_topics(settings, gateway_topics(settings)),
                (KafkaUnreachable,),
            )
        )
    replica = count_replica(settings)
    app = create_app(
        NoTables(replica),
        write_settings(settings, credentials.internal_secret, None, holds_nothing),
        settings.cors_origin_set,
        status=GatewayStatus(settings),
        push=push_settings(settings),
        dev_tokens=bool(settings.dev_tokens),
        trending=trending_settings(settings),
        reads=read_settings(settings, None),
        replica=replica,
        auth=auth_settings(settings, credentials),
        internal_secret=credentials.internal_secret,
        access_sample=settings.access_log_sample,
    )
    app.cleanup_ctx.append(kafka_feeds(kafka_inputs(settings)))
    if supervised_by is not None:
        app.cleanup_ctx.append(_watch_supervisor(supervised_by))
    log.info("gateway: HTTP on %s:%d", settings.web_host, settings.web_port)
    web.run_app(
        app,
        host=settings.web_host,
        port=settings.web_port,
        access_log=None,
        print=None,
        shutdown_timeout=SHUTDOWN_SECONDS,
        reuse_port=supervised_by is not None,
    )
    return 0
