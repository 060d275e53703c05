"""What the API client (``likestream/api_client.py``) returns and raises: typed results,
pushed updates, the errors of the API's JSON error bodies, and how long to wait before
trying again (pure: no I/O here)."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from likestream.domain._retry import Backoff

__all__ = [
    "ApiError",
    "BadRequest",
    "Count",
    "Counts",
    "FeedError",
    "Forbidden",
    "LikesUpdate",
    "Membership",
    "RateLimited",
    "RetryPolicy",
    "Trending",
    "TrendingItem",
    "Unauthorized",
    "Unavailable",
    "Unreachable",
    "Update",
    "api_error",
]


# -- errors ------------------------------------------------------------------


class ApiError(Exception):
    """The API refused a request: its HTTP ``status`` and the body's ``code`` and ``message``
    (``{"error": {"code", "message"}}``)."""

    def __init__(self, status: int, code: str, message: str) -> None:
        super().__init__(f"{status} {code}: {message}")
        self.status = status
        self.code = code
        self.message = message


class BadRequest(ApiError):
    """400: a bad item id, window or limit; trying again cannot help."""


class Unauthorized(ApiError):
    """401: no token, or one the server does not accept (expired, wrongly signed, ...)."""


class Forbidden(ApiError):
    """403: a valid token that may not do this (another user's membership, an origin)."""


class RateLimited(ApiError):
    """429: the user's bucket is empty; ``retry_after`` seconds until the next token."""

    def __init__(self, status: int, code: str, message: str, retry_after: float | None) -> None:
        super().__init__(status, code, message)
        self.retry_after = retry_after


class Unavailable(ApiError):
    """503: not answered now (a write not confirmed by Kafka, a read with no fresh or bounded
    answer, the rate limit not checkable); ``retry_after`` as the server asked."""

    def __init__(self, status: int, code: str, message: str, retry_after: float | None) -> None:
        super().__init__(status, code, message)
        self.retry_after = retry_after


class Unreachable(Unavailable):
    """No answer at all: the connection failed or timed out (``status`` 0)."""

    def __init__(self, message: str) -> None:
        super().__init__(0, "unreachable", message, None)


def api_error(status: int, body: Any, retry_after: float | None) -> ApiError:
    """The exception for an error answer; ``body`` is its parsed JSON, if any."""
    error = body.get("error") if isinstance(body, dict) else None
    if isinstance(error, dict):
        code, message = str(error.get("code", "http_error")), str(error.get("message", ""))
    else:  # not the API's JSON (a proxy's page): the status says enough
        code, message = "http_error", f"HTTP {status}"
    if status == 429:
        return RateLimited(status, code, message, retry_after)
    if status in (502, 503, 504):
        return Unavailable(status, code, message, retry_after)
    kind = {400: BadRequest, 401: Unauthorized, 403: Forbidden}.get(status, ApiError)
    return kind(status, code, message)


# -- retries -----------------------------------------------------------------


@dataclass(frozen=True)
class RetryPolicy:
    """How the client retries a request that got 429 or 503 (or no answer).

    Writes are safe to retry: a like is a membership, so the same like twice is one like.
    """

    attempts: int = 4
    """Tries per call, the first included; 1: never retry."""
    wait_on_429: bool = True
    """Wait the ``Retry-After`` of a 429 and try again; False: raise :class:`RateLimited`."""
    backoff: Backoff = field(default_factory=lambda: Backoff(first=0.25, cap=5.0, jitter=0.5))
    """Waits after 503s and failed connections (a ``Retry-After`` longer than it wins)."""
    max_wait: float = 30.0
    """The longest single wait accepted; a server asking for more gets its error raised."""

    def __post_init__(self) -> None:
        if self.attempts < 1 or self.max_wait < 0:
            raise ValueError(f"bad retry policy {self}: need attempts >= 1 and max_wait >= 0")

    def wait(self, failures: int, error: ApiError, draw: float | None = None) -> float | None:
        """Seconds to wait before trying again after ``failures`` failed tries (the last
        one failing with ``error``), or None: raise ``error``."""
        if failures >= self.attempts:
            return None
        if isinstance(error, RateLimited):
            if not self.wait_on_429:
                return None
            delay = error.retry_after
            if delay is None:
                delay = self.backoff.delay(failures - 1, draw)
        elif isinstance(error, Unavailable):
            delay = max(self.backoff.delay(failures - 1, draw), error.retry_after or 0.0)
        else:
            return None
        return delay if delay <= self.max_wait else None


# -- results -----------------------------------------------------------------


class Count(int):
    """An item's like count: an ``int``, with how stale the answer was.

    ``stale_ms`` is None for a fresh answer (from the owner's table); otherwise the answer
    includes every event committed more than ``stale_ms`` ms before it (a replica's).
    """

    stale_ms: int | None

    def __new__(cls, likes: int, stale_ms: int | None = None) -> Count:
        made = super().__new__(cls, likes)
        made.stale_ms = stale_ms
        return made

    @property
    def stale(self) -> bool:
        return self.stale_ms is not None


class Counts(dict[str, int]):
    """Counts of several items, item id to likes: a ``dict``, with the largest staleness
    of any of them (None: every answer was fresh)."""

    def __init__(self, likes: dict[str, int], stale_ms: int | None = None) -> None:
        super().__init__(likes)
        self.stale_ms = stale_ms

    @property
    def stale(self) -> bool:
        return self.stale_ms is not None


@dataclass(frozen=True)
class Membership:
    """Whether ``user_id`` likes ``item_id``; true in a boolean context when it does."""

    item_id: str
    user_id: str
    liked: bool
    stale_ms: int | None = None

    def __bool__(self) -> bool:
        return self.liked

    @property
    def stale(self) -> bool:
        return self.stale_ms is not None


@dataclass(frozen=True)
class TrendingItem:
    item_id: str
    likes: int
    """Likes gained in the window."""


@dataclass(frozen=True)
class Trending:
    """The items with the most likes gained in ``window`` (``GET /trending``, or pushed)."""

    window: str
    items: tuple[TrendingItem, ...]

    @classmethod
    def from_json(cls, body: dict[str, Any]) -> Trending:
        items = tuple(TrendingItem(str(i["item_id"]), int(i["likes"])) for i in body["items"])
        return cls(str(body["window"]), items)


@dataclass(frozen=True)
class LikesUpdate:
    """A pushed count: the current one after (re)subscribing, then each change."""

    item_id: str
    likes: int


@dataclass(frozen=True)
class FeedError:
    """An error frame: the server refused a subscription (``too_many_items``,
    ``server_full``, ...); the connection stays open."""

    code: str
    message: str


Update = LikesUpdate | Trending | FeedError
