"""Create the app's own topics with the configured partitions (auto-creation is off).

A worker's changelog topics are created here too (compacted, as faust would make them),
not by faust: faust's own creation, while its tables start, fails the start-up on the
first error of a broker that is restarting, while this runs under start-up's retry
(``likestream/domain/_retry.py``). One that exists already must have the events topic's
partitions too (a worker would write partition
p's rows where recovery never reads them, and faust's own check covers only its
stream path, which the agent does not take). On a secured
cluster the topics are declared by the operator (k8s/base/topics.yaml) and a role may
lack Create: a missing topic then stops start-up saying so.
"""

from __future__ import annotations

import asyncio
from collections.abc import Collection
from dataclasses import dataclass

from aiokafka.admin import AIOKafkaAdminClient, NewTopic
from aiokafka.errors import KafkaConnectionError, KafkaError, TopicAlreadyExistsError, for_code

from likestream.config._settings import Settings
from likestream.kafka._factory import KafkaConfig

__all__ = [
    "KafkaUnreachable",
    "TopicError",
    "TopicSpec",
    "ensure_topics",
    "gateway_topics",
    "topic_specs",
]


CONNECT_TIMEOUT = 30.0


class TopicError(RuntimeError):
    """The cluster's topics do not fit the settings, or Kafka is not reachable."""


class KafkaUnreachable(TopicError):
    """Kafka did not answer; worth retrying, unlike a partition mismatch."""


@dataclass(frozen=True)
class TopicSpec:
    name: str
    partitions: int
    config: dict[str, str]


def topic_specs(settings: Settings) -> list[TopicSpec]:
    n = settings.partitions
    return [
        TopicSpec(settings.topic, n, {}),
        TopicSpec(settings.dlq_topic, n, {}),
        # Latest count per item is all downstream readers need: compact.
        TopicSpec(settings.counts_topic, n, {"cleanup.policy": "compact"}),
        # Latest top items per window and partition (key <window>/<partition>): compact.
        TopicSpec(settings.trending_topic, n, {"cleanup.policy": "compact"}),
    ]


def gateway_topics(settings: Settings) -> set[str]:
    """What a gateway reads or writes: not the dead letters, which its user cannot see."""
    return {settings.topic, settings.counts_topic, settings.trending_topic}


async def ensure_topics(
    settings: Settings, only: Collection[str] | None = None, changelogs: Collection[str] = ()
) -> None:
    """Create missing topics; fail when an existing one has other partitions. ``only``:
    the names of the topics this process uses (a gateway's user may not see the rest);
    ``changelogs``: those of this process's tables. A Kafka error worth retrying (the
    broker away or restarting) is :class:`KafkaUnreachable`."""
    admin = KafkaConfig.from_settings(settings).admin(request_timeout_ms=10_000)
    try:
        await asyncio.wait_for(admin.start(), CONNECT_TIMEOUT)
    except (KafkaConnectionError, TimeoutError) as exc:
        raise KafkaUnreachable(
            f"cannot reach Kafka at {settings.kafka} (LIKESTREAM_KAFKA): {exc}"
        ) from None
    try:
        await _ensure(admin, settings, only, changelogs)
    except KafkaError as exc:
        if not exc.retriable:
            raise
        raise KafkaUnreachable(
            f"Kafka at {settings.kafka} (LIKESTREAM_KAFKA) is not ready: {exc!r}"
        ) from None
    finally:
        await admin.close()


async def _ensure(
    admin: AIOKafkaAdminClient,
    settings: Settings,
    only: Collection[str] | None,
    changelogs: Collection[str],
) -> None:
    specs = [s for s in topic_specs(settings) if only is None or s.name in only]
    specs += [TopicSpec(c, settings.partitions, {"cleanup.policy": "compact"}) for c in changelogs]
    existing = set(await admin.list_topics())
    missing = [s for s in specs if s.name not in existing]
    if missing:
        response = await admin.create_topics(
            [
                NewTopic(s.name, s.partitions, settings.replication, topic_configs=s.config)
                for s in missing
            ]
        )
        for name, code, message in (e[:3] for e in response.topic_errors):
            if code not in (
                0,
                TopicAlreadyExistsError.errno,
            ):  # a peer's concurrent start made it
                raise TopicError(
                    f"cannot create topic {name!r}: {for_code(code).__name__} ({message}); "
                    "declare it (k8s/base/topics.yaml) or grant Create on it"
                )
    await _check_partitions(admin, specs)


async def _check_partitions(admin: AIOKafkaAdminClient, specs: list[TopicSpec]) -> None:
    found: dict[str, int] = {}
    for _ in range(50):  # metadata of a just-created topic can lag for a moment
        described = await admin.describe_topics([s.name for s in specs])
        found = {t["topic"]: len(t["partitions"]) for t in described}
        if all(found.get(s.name) for s in specs):
            break
        await asyncio.sleep(0.1)
    for spec in specs:
        have = found.get(spec.name, 0)
        if have != spec.partitions:
            raise TopicError(
                f"topic {spec.name!r} has {have} partitions but LIKESTREAM_PARTITIONS is "
                f"{spec.partitions}; use the same value everywhere (re-partitioning is not "
                "done in place)"
            )
