"""aiohttp views: counts, health and metrics straight from table state; likes and unlikes."""

from ._app import WebServer, create_app
from ._errors import ApiError
from ._limits import RateLimiter
from ._status import StatusSource
from ._writes import Publisher, Writes

__all__ = [
    "ApiError",
    "Publisher",
    "RateLimiter",
    "StatusSource",
    "WebServer",
    "Writes",
    "create_app",
]
