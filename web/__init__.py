"""aiohttp views: counts, health, status and metrics from table state; likes and unlikes;
live pushes over WebSocket and SSE; the demo page."""

from ._app import WebServer, create_app
from ._auth import Auth
from ._errors import ApiError
from ._feeds import KafkaFeeds, kafka_feeds
from ._hub import Hub
from ._limits import RateLimiter
from ._push import HUB, PushSettings
from ._quota import LimitSettings
from ._reads import FORWARDED, STALE, STALE_MS, NoTables, ReadSettings
from ._replica import Replica, replica_dir
from ._status import StatusSource
from ._trending import TrendingSettings
from ._writes import Publisher, Writes

__all__ = [
    "FORWARDED",
    "HUB",
    "STALE",
    "STALE_MS",
    "ApiError",
    "Auth",
    "Hub",
    "KafkaFeeds",
    "LimitSettings",
    "NoTables",
    "Publisher",
    "PushSettings",
    "RateLimiter",
    "ReadSettings",
    "Replica",
    "StatusSource",
    "TrendingSettings",
    "WebServer",
    "Writes",
    "create_app",
    "kafka_feeds",
    "replica_dir",
]
