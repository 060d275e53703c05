"""Who owns each partition, read from the consumer group the workers form.

Every worker gives faust its advertised URL (faust's ``canonical_url``), and faust's
assignor writes, into each member's assignment, that member's URL and its active
and standby partitions. Kafka keeps those assignments with the group, so any
process, a gateway included, learns the owners by describing the group
(``DescribeGroups``): no extra topic, no peer list, and the answer is the group
coordinator's, not a copy that can disagree with it.

The description is read every :data:`POLL_SECONDS`. While the group rebalances the
last stable placement is kept: the previous owner usually still holds the data, and
a read it cannot answer fresh falls back to a replica anyway (``_reads.py``).
"""

from __future__ import annotations

import logging
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any

from aiokafka.admin import AIOKafkaAdminClient

from likestream.domain._retry import poll_forever
from likestream.kafka._factory import KafkaConfig
from likestream.kafka._internals import MemberAssignment, decode_member_assignment

__all__ = ["POLL_SECONDS", "Owners", "Placement", "parse_members", "watch_owners"]

log = logging.getLogger(__name__)

POLL_SECONDS = 1.0


@dataclass(frozen=True)
class Placement:
    active: dict[int, str] = field(default_factory=dict)
    """Partition -> URL of the worker that owns it."""
    standbys: dict[int, tuple[str, ...]] = field(default_factory=dict)
    """Partition -> URLs of the workers that keep a standby copy of it."""


def _member(assignment: bytes, topic: str) -> MemberAssignment | None:
    """One member's URL, active partitions of ``topic`` and standby partitions."""
    if not assignment:
        return None  # joined, not yet assigned
    try:
        return decode_member_assignment(assignment, topic)
    except ValueError as exc:
        # A member on another faust version, or faust's format changed: say so, once
        # per distinct error rather than at every poll.
        if str(exc) not in _REPORTED:
            _REPORTED.add(str(exc))
            log.warning("unreadable group member assignment (owners unknown): %s", exc)
        return None


_REPORTED: set[str] = set()


def parse_members(assignments: Iterable[bytes], topic: str) -> Placement:
    """The placement described by the members' assignments (faust's assignor format)."""
    active: dict[int, str] = {}
    standbys: dict[int, list[str]] = {}
    for raw in assignments:
        member = _member(raw, topic)
        if member is None:
            continue
        for p in member.actives:
            active[p] = member.url
        for p in member.standbys:
            standbys.setdefault(p, []).append(member.url)
    return Placement(active, {p: tuple(sorted(urls)) for p, urls in standbys.items()})


class Owners:
    """The last stable placement of the group's partitions."""

    def __init__(self) -> None:
        self.placement = Placement()
        self.state = "unknown"

    def targets(self, partition: int, standbys: bool = False) -> list[str]:
        """Where to forward a read: the owner, then (``standbys``) the standbys."""
        owner = self.placement.active.get(partition)
        urls = [owner] if owner is not None else []
        if standbys:
            urls += [u for u in self.placement.standbys.get(partition, ()) if u != owner]
        return urls

    def update(self, state: str, placement: Placement) -> None:
        self.state = state
        if state in ("Stable", "Empty", "Dead"):
            if placement != self.placement:
                log.info("partition owners: %s", dict(sorted(placement.active.items())))
            self.placement = placement


async def _describe(admin: AIOKafkaAdminClient, group: str, topic: str) -> tuple[str, Placement]:
    [response] = await admin.describe_consumer_groups([group])
    [described] = response.to_object()["groups"]
    members: list[dict[str, Any]] = described["members"]
    state = str(described["state"])
    return state, parse_members((m["member_assignment"] for m in members), topic)


async def watch_owners(kafka: KafkaConfig, group: str, topic: str, owners: Owners) -> None:
    """Keep ``owners`` current until cancelled; Kafka going away only pauses it."""

    async def step(admin: AIOKafkaAdminClient) -> None:
        owners.update(*await _describe(admin, group, topic))

    await poll_forever(
        f"describing group {group}",
        POLL_SECONDS,
        kafka.admin,
        AIOKafkaAdminClient.start,
        AIOKafkaAdminClient.close,
        step,
    )
