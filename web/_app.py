"""The aiohttp application and the service that runs it inside a worker."""

from __future__ import annotations

from collections.abc import Callable, Iterable

from aiohttp import web
from mode import Service

from likestream.tables import StateReader

from ._access import ACCESS_SAMPLE, USER_TAGS, UserTags
from ._auth import AUTH, Auth, tokens_ctx
from ._front import front
from ._headers import CORS_ORIGINS
from ._hub import Hub
from ._openapi import install_spec
from ._owners import Owners
from ._page import dev_routes, page_routes
from ._push import PushSettings, install
from ._quota import LIMITS, Limits, limit_routes, limits_ctx
from ._reads import READER, Reader, ReadSettings, reads_ctx
from ._replica import Replica
from ._status import STATUS, StatusSource, status_routes
from ._trending import TrendingSettings
from ._trending import install as install_trending
from ._views import LIVENESS, STATE, routes
from ._writes import WRITES, Writes, publisher_ctx, write_routes

__all__ = ["WebServer", "create_app"]

# The request line a batch read may need: 100 ids of 128 characters, percent-encoded at
# worst (3 bytes a character), is about 39 KB; aiohttp's default (8190 bytes) refuses it
# with a plain-text 400 before any handler runs.
MAX_REQUEST_LINE = 64 * 1024


def _alive() -> str | None:
    return None


def create_app(
    state: StateReader,
    writes: Writes | None = None,
    cors_origins: Iterable[str] = (),
    *,
    internal_secret: str,
    replica: Replica,
    auth: Auth,
    status: StatusSource | None = None,
    push: PushSettings | None = None,
    dev_tokens: bool = False,
    trending: TrendingSettings | None = None,
    reads: ReadSettings | None = None,
    access_sample: float = 1.0,
    liveness: Callable[[], str | None] | None = None,
) -> web.Application:
    """The HTTP API and the page; the write routes only when ``writes`` is given, the
    pushes when ``push`` is, ``POST /dev/token`` only with ``writes`` and ``dev_tokens``,
    ``GET /trending`` (and its pushes) when ``trending`` is; ``GET /openapi.json`` and
    ``GET /docs`` describe the routes it has.

    Reads go to other processes as ``reads`` says (default: none; only this process's
    state and replica). ``replica`` is fed by the pushes' tail of ``like-counts``.
    ``auth``: how tokens are checked and whether memberships are public.
    ``internal_secret`` keys forwarded reads' proof and the user tags of the logs.
    ``access_sample``: the share of successful reads' access lines kept (1: all; ``_access.py``).
    ``liveness``: why the process should be restarted, or None (``GET /healthz``).
    """
    app = web.Application(
        middlewares=[front],
        handler_args={"max_line_size": MAX_REQUEST_LINE},
    )
    app[STATE] = state
    app[LIVENESS] = liveness or _alive
    app[AUTH] = auth
    app[USER_TAGS] = UserTags(internal_secret)
    app[ACCESS_SAMPLE] = access_sample
    app.cleanup_ctx.append(tokens_ctx)
    owners = Owners()  # one watch of the group, for reads and rate limits alike
    app[READER] = Reader(state, replica, owners, reads or ReadSettings(), internal_secret)
    app.cleanup_ctx.append(reads_ctx)
    app[CORS_ORIGINS] = frozenset(cors_origins)
    if status is not None:
        app[STATUS] = status
    app.add_routes(routes)
    app.add_routes(status_routes)
    app.add_routes(page_routes)
    if writes is not None:
        app[WRITES] = writes
        app[LIMITS] = Limits(writes.limiter, owners, writes.limits)
        app.add_routes(write_routes)
        app.add_routes(limit_routes)
        app.cleanup_ctx.append(publisher_ctx)
        app.cleanup_ctx.append(limits_ctx)
        if dev_tokens:
            if not app[AUTH].tokens.can_mint:
                raise ValueError("development tokens need an HS256 secret to sign with")
            app.add_routes(dev_routes)
    if trending is not None:
        install_trending(app, trending)
    if push is not None:
        install(app, push, Hub(state, replica, push.interval, push.max_subscriptions))
    install_spec(app)  # last: it describes the routes added above
    return app


class WebServer(Service):
    """Serves ``app`` on host:port for as long as the worker runs."""

    def __init__(self, app: web.Application, host: str, port: int) -> None:
        super().__init__()
        self._runner = web.AppRunner(app, access_log=None)
        self._host = host
        self._port = port

    async def on_start(self) -> None:
        await self._runner.setup()
        await web.TCPSite(self._runner, self._host, self._port).start()
        self.log.info("HTTP on %s:%d", self._host, self._port)

    async def on_stop(self) -> None:
        await self._runner.cleanup()
