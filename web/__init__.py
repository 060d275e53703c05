"""aiohttp views: counts, health and metrics straight from table state."""

from ._app import WebServer, create_app
from ._errors import ApiError

__all__ = ["ApiError", "WebServer", "create_app"]
