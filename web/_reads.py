"""Reads across processes: any process answers any item.

For each item, in order:

1. **fresh, here**: this process owns the item's partition and its tables are
   recovered: the table answers;
2. **forwarded**: otherwise the owner (from the group, ``_owners.py``) is asked, all
   items of one owner in one request and the owners in parallel; membership reads
   then try the standbys. A forwarded request carries :data:`FORWARDED` (a proof only
   processes sharing the internal secret can make) and is never forwarded again, so
   requests cannot loop; a forwarded membership read is answered without a token (the
   process that forwarded it checked the caller's);
3. **stale, here**: otherwise from a replica: for counts the ``like-counts`` replica
   (``_replica.py``) or this process's own copy of the partition when that is newer;
   for memberships the copy (a standby, or the owner while it recovers or
   rebalances). The answer says :data:`STALE` ``true`` and :data:`STALE_MS` N: it
   includes every event committed more than N ms before it. N is the replica's age,
   or the copy's own (``_copies.py``) when its count row is older than the replica's;
   a replica or copy older than ``stale_max`` does not answer;
4. otherwise 503 (no replica within the bound, or a membership whose partition has no
   copy here and no reachable owner or standby).
"""

from __future__ import annotations

import asyncio
import hashlib
import hmac
import logging
import time
from collections.abc import AsyncIterator, Sized
from dataclasses import dataclass
from typing import Any

import aiohttp
from aiohttp import web

from likestream.runtime._metrics import READS, STEP_COUNTS
from likestream.tables import CountRow, MemberRow, NotServable, StateReader

from ._copies import CopyClock
from ._owners import Owners
from ._replica import Replica

__all__ = [
    "FORWARDED",
    "READER",
    "STALE",
    "STALE_MS",
    "NoTables",
    "ReadSettings",
    "Reader",
    "carries_proof",
    "forwarding_proof",
    "reads_ctx",
    "stale_headers",
]

log = logging.getLogger(__name__)

FORWARDED = "X-Likestream-Forwarded"
STALE = "X-Likestream-Stale"
STALE_MS = "X-Likestream-Stale-Ms"
# A peer that failed a forwarded read is skipped for this long: a dead owner costs one
# failed connection per second, not one per read.
DOWN_SECONDS = 1.0

# Labelled children looked up once: on every read.
_READS_LOCAL, _READS_FORWARDED, _READS_STALE = (
    READS.labels(source) for source in ("local", "forwarded", "stale")
)


def _count_reads(counter: Any, items: Sized) -> None:
    if items:
        STEP_COUNTS.inc(counter, len(items))


@dataclass(frozen=True)
class ReadSettings:
    stale_max: float = 5.0
    """Seconds: the most a stale answer may lag (``LIKESTREAM_STALE_MAX_MS``)."""
    forward_timeout: float = 1.0
    url: str | None = None
    """This process's advertised URL (never forwarded to); None for a gateway."""


def _worst(a: float | None, b: float | None) -> float | None:
    return b if a is None else a if b is None else max(a, b)


def carries_proof(request: web.Request, proof: str) -> bool:
    """Whether ``request`` carries ``proof`` in :data:`FORWARDED`: it comes from a process
    that shares the internal secret (a forwarded read, a rate-limit call)."""
    claimed = request.headers.get(FORWARDED)
    return claimed is not None and hmac.compare_digest(claimed, proof)


def forwarding_proof(secret: str) -> str:
    """What a forwarded read carries in :data:`FORWARDED`: an HMAC of the internal secret
    (``LIKESTREAM_INTERNAL_SECRET``) every process shares, so a client cannot mark its own
    request as forwarded (which would skip the owner and get a stale answer or a 503 on
    purpose, or read another user's membership). It never leaves the processes: peers
    send it to peers, and answers do not echo it."""
    mac = hmac.new(secret.encode(), b"likestream forwarded read v1", hashlib.sha256)
    return mac.hexdigest()[:32]


def stale_headers(stale: float | None) -> dict[str, str]:
    """The response headers of an answer that lags by up to ``stale`` seconds."""
    if stale is None:
        return {}
    return {STALE: "true", STALE_MS: str(max(0, round(stale * 1000)))}


def _stale_of(response: aiohttp.ClientResponse) -> float | None:
    raw = response.headers.get(STALE_MS)
    return int(raw) / 1000 if raw is not None and raw.isdigit() else None


class Reader:
    def __init__(
        self,
        state: StateReader,
        replica: Replica,
        owners: Owners,
        settings: ReadSettings,
        internal_secret: str,
    ) -> None:
        self.state = state
        self.replica = replica
        self.owners = owners
        self.settings = settings
        self.http: aiohttp.ClientSession | None = None
        self.copies = CopyClock(settings.stale_max)
        self._down: dict[str, float] = {}
        self._proof = forwarding_proof(internal_secret)

    def forwarded(self, request: web.Request) -> bool:
        """Whether a peer forwarded ``request`` (it is then answered from here, never
        forwarded again); a header a client made up is ignored."""
        return carries_proof(request, self._proof)

    # -- counts --------------------------------------------------------------------

    def local_likes(self, item: str) -> int | None:
        """The count of ``item`` when this process serves it (fresh, from its table), else
        None: then :meth:`likes` finds who answers."""
        try:
            likes = self.state.likes(item)
        except NotServable:
            return None
        STEP_COUNTS.inc(_READS_LOCAL)
        return likes

    async def likes(self, items: list[str], forwarded: bool) -> tuple[dict[str, int], float | None]:
        """Counts of ``items``, and how stale the stalest is (None: all fresh)."""
        out, rest = self.state.likes_many(items)
        _count_reads(_READS_LOCAL, out)
        stale: float | None = None
        if rest and not forwarded:
            got, stale = await self._forward_counts(rest)
            out.update(got)
            _count_reads(_READS_FORWARDED, got)
            rest = [item for item in rest if item not in got]
        for item in rest:
            likes, age = self._stale_likes(item)
            out[item] = likes
            stale = _worst(stale, age)
        _count_reads(_READS_STALE, rest)
        return out, stale

    async def _forward_counts(self, items: list[str]) -> tuple[dict[str, int], float | None]:
        by_owner: dict[str, list[str]] = {}
        for item in items:
            targets = self._targets(self.replica.partition(item), standbys=False)
            if targets:
                by_owner.setdefault(targets[0], []).append(item)
        out: dict[str, int] = {}
        stale: float | None = None
        answers = await asyncio.gather(
            *(self._get(url, "/likes", {"items": ",".join(its)}) for url, its in by_owner.items())
        )
        for its, answer in zip(by_owner.values(), answers, strict=True):
            if answer is None:
                continue
            body, age = answer
            try:
                got = {item: int(body["likes"][item]) for item in its}
            except (KeyError, TypeError, ValueError):
                log.warning("a forwarded batch read had a malformed answer: %.200r", body)
                continue
            out.update(got)
            stale = _worst(stale, age)
        return out, stale

    def _stale_likes(self, item: str) -> tuple[int, float]:
        best, age = self._replica_count(item)
        try:
            row = self.state.held_count(item)
        except NotServable:
            pass
        else:
            if row.offset > best.offset:
                return row.likes, age
        return best.likes, age

    # -- memberships -----------------------------------------------------------------

    async def liked(self, item: str, user: str, forwarded: bool) -> tuple[bool, float | None]:
        """Whether ``user`` likes ``item``, and how stale that answer is (None: fresh)."""
        try:
            liked = self.state.liked(item, user)
        except NotServable:
            pass
        else:
            STEP_COUNTS.inc(_READS_LOCAL)
            return liked, None
        if not forwarded:
            for url in self._targets(self.replica.partition(item), standbys=True):
                answer = await self._get(url, f"/items/{item}/likes/{user}", {})
                if answer is not None and isinstance(answer[0].get("liked"), bool):
                    STEP_COUNTS.inc(_READS_FORWARDED)
                    return answer[0]["liked"], answer[1]
        liked, age = self._stale_liked(item, user)
        STEP_COUNTS.inc(_READS_STALE)
        return liked, age

    def _stale_liked(self, item: str, user: str) -> tuple[bool, float]:
        state = self.state
        try:
            count = state.held_count(item)
        except NotServable:
            raise NotServable(
                "the item's owner and standbys are unreachable and there is no copy here"
            ) from None
        ages = []
        try:
            replica, age = self._replica_count(item)
        except NotServable:
            pass
        else:
            if count.offset >= replica.offset:
                ages.append(age)  # at least as new as the replica, so at most as old
        # Otherwise (or also), the copy's own age from its changelog position: e.g. a
        # standby that lags, or one whose owner died after publishing counts whose
        # changelog records never became durable (not committed: folded again later).
        topic, partition, applied = state.held_changelog(item)
        copy_age = self.copies.age((topic, partition), applied)
        if copy_age is not None:
            ages.append(copy_age)
        if not ages or min(ages) > self.settings.stale_max:
            raise NotServable("this process's copy of the item's partition is behind")
        return state.held_member(item, user).liked, min(ages)

    # -- shared --------------------------------------------------------------------

    def _replica_count(self, item: str) -> tuple[CountRow, float]:
        partition = self.replica.partition(item)
        age = self.replica.age(partition)
        row = self.replica.count(item)
        if age is None or row is None:
            raise NotServable("the like-counts replica is still loading")
        if age > self.settings.stale_max:
            raise NotServable(
                f"the like-counts replica is {age:.1f}s behind, over the "
                f"{self.settings.stale_max:g}s bound"
            )
        return row, age

    def _targets(self, partition: int, standbys: bool) -> list[str]:
        now = time.monotonic()
        return [
            url
            for url in self.owners.targets(partition, standbys)
            if url != self.settings.url and self._down.get(url, 0.0) <= now
        ]

    async def _get(
        self, url: str, path: str, params: dict[str, str]
    ) -> tuple[Any, float | None] | None:
        """A forwarded read's JSON body and staleness; None when it failed (and the peer
        is skipped for a moment when it could not be reached)."""
        if self.http is None:
            return None
        try:
            async with self.http.get(
                url + path,
                params=params,
                headers={FORWARDED: self._proof},
                timeout=aiohttp.ClientTimeout(total=self.settings.forward_timeout),
            ) as response:
                if response.status == 200:
                    return await response.json(), _stale_of(response)
                # It cannot answer this item now; that says nothing about other items.
                log.debug("forwarded read to %s: HTTP %d", url, response.status)
                return None
        except (aiohttp.ClientError, TimeoutError, ValueError) as exc:
            reason = f"{type(exc).__name__}: {exc}"
        log.info("forwarded read to %s failed (%s): answering without it", url, reason)
        self._down[url] = time.monotonic() + DOWN_SECONDS
        return None


READER = web.AppKey("reader", Reader)


class NoTables:
    """The :class:`~likestream.tables.StateReader` of a gateway: no partitions, so every
    read goes to the owners or the replica; ready once the replica has read every
    partition to its end."""

    def __init__(self, replica: Replica) -> None:
        self.replica = replica

    def ready(self) -> bool:
        return self.replica.loaded()

    def likes(self, item_id: str) -> int:
        raise NotServable(_NO_PARTITIONS)

    def stamped(self, item_id: str) -> CountRow:
        raise NotServable(_NO_PARTITIONS)

    def likes_many(self, items: list[str]) -> tuple[dict[str, int], list[str]]:
        return {}, list(items)

    def liked(self, item_id: str, user_id: str) -> bool:
        raise NotServable(_NO_PARTITIONS)

    def held_count(self, item_id: str) -> CountRow:
        raise NotServable(_NO_PARTITIONS)

    def held_member(self, item_id: str, user_id: str) -> MemberRow:
        raise NotServable(_NO_PARTITIONS)

    def held_changelog(self, item_id: str) -> tuple[str, int, int]:
        raise NotServable(_NO_PARTITIONS)

    def held_changelogs(self) -> list[tuple[str, int]]:
        return []

    async def holding(self) -> None:
        await asyncio.Event().wait()  # never: no partitions


_NO_PARTITIONS = "a gateway holds no partitions"


async def reads_ctx(app: web.Application) -> AsyncIterator[None]:
    """cleanup_ctx: the session for forwarded reads (the owners and the copies' clock are
    fed by ``_feeds.py``)."""
    reader = app[READER]
    reader.http = aiohttp.ClientSession(
        connector=aiohttp.TCPConnector(limit_per_host=32), raise_for_status=False
    )
    yield
    await reader.http.close()
