"""likestream: exact real-time like counts. Run the embedded broker, workers and
gateways; publish, inspect and erase likes; mint tokens; benchmark."""

from __future__ import annotations

import argparse
import asyncio
import importlib.util
import os
import re
import sys
from collections.abc import Sequence
from pathlib import Path

from likestream.client import DeliveryError
from likestream.config._settings import Settings, SettingsError, load_settings
from likestream.domain._schema import InvalidEvent, LikeEvent, is_valid_id
from likestream.kafka._topics import TopicError
from likestream.runtime._flags import add_setting_flags, settings_given
from likestream.runtime._status_report import StatusError

__all__ = ["main"]

# likestream/devtools (the embedded broker, the bench) is left out of the production image
# (Dockerfile): there `likestream broker`/`bench` say so instead of a traceback. This
# module imports it only inside the functions that run those commands.
DEVTOOLS = "likestream.devtools"
DEVTOOLS_MISSING = (
    "developer tools are not in this install (the production image leaves out "
    "likestream/devtools: the embedded broker and the bench); run them from a checkout "
    "of the repository (`make install`)"
)


def _devtools_installed() -> bool:
    try:
        return importlib.util.find_spec(DEVTOOLS) is not None
    except (ImportError, ValueError):  # a parent that is not a package; a None in sys.modules
        return False


def _settings(args: argparse.Namespace) -> Settings:
    return load_settings(**settings_given(args))


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="likestream",
        description=__doc__,
        epilog="`likestream COMMAND --help` explains a command and its flags.",
    )
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    broker = sub.add_parser(
        "broker",
        help="the embedded single-node Kafka",
        description="Start, stop or show the embedded Kafka broker (KRaft, one process) that "
        "development and the tests use. The first start fetches the Kafka jars from Maven "
        "Central into ~/.cache/likestream (once).",
    )
    broker.add_argument("action", choices=["start", "stop", "status"], help="what to do")
    broker.add_argument("--port", type=int, default=9092, help="its listener (default 9092)")
    broker.add_argument(
        "--state-dir",
        type=Path,
        default=None,
        help="log dirs, pid and logs (default ~/.cache/likestream/broker)",
    )

    worker = sub.add_parser(
        "worker",
        help="agents + tables + web in one process",
        description="Fold like events into the tables of the partitions this worker is "
        "assigned, and serve the HTTP API, the WebSocket and SSE pushes and the demo page "
        "on LIKESTREAM_WEB_PORT. Workers form one consumer group: start more to spread the "
        "partitions.",
    )
    add_setting_flags(worker)

    gateway = sub.add_parser(
        "gateway",
        help="reads, writes and pushes without partitions (forwards to the workers)",
        description="Serve the HTTP API and the pushes without owning partitions: reads go "
        "to the owning worker (or this process's copy of like-counts when it is away), "
        "writes to the events topic. Stateless: scale it freely.",
    )
    gateway.add_argument(
        "--procs",
        dest="setting_gateway_procs",
        metavar="N",
        help="gateway processes on the one port (the same as --gateway-procs)",
    )
    # One of the processes of a supervising gateway (likestream/runtime/_supervisor.py).
    gateway.add_argument("--supervised-by", type=int, default=None, help=argparse.SUPPRESS)
    add_setting_flags(gateway)

    config = sub.add_parser(
        "config",
        help="print the effective settings, secrets masked",
        description="Print every setting as LIKESTREAM_NAME=value, from the environment and "
        "the flags given, secrets masked; a bad value is reported as at start-up.",
    )
    add_setting_flags(config)

    produce = sub.add_parser(
        "produce",
        help="publish like events",
        description="Publish like events straight to the events topic (no token, no rate "
        "limit: an operator's tool): one from the arguments, JSON lines from a file or "
        "stdin, or a synthetic load of N Zipf-skewed events.",
    )
    produce.add_argument(
        "event", nargs="*", metavar="ACTION USER ITEM", help="one event, e.g.: like alice post:9"
    )
    produce.add_argument(
        "--file", type=argparse.FileType("r"), help="JSON lines, one event each ('-' for stdin)"
    )
    produce.add_argument("--load", type=int, metavar="N", help="N synthetic events")
    produce.add_argument(
        "--items", type=int, default=1000, metavar="N", help="--load: items (default 1000)"
    )
    produce.add_argument(
        "--users", type=int, default=10_000, metavar="N", help="--load: users (default 10000)"
    )
    produce.add_argument(
        "--seed", type=int, default=1, metavar="N", help="--load: random seed (default 1)"
    )
    add_setting_flags(produce)

    status = sub.add_parser(
        "status",
        help="summary of a running worker (its GET /status)",
        description="Show a running worker's state for people: readiness, partitions owned, "
        "lag, recovery, table sizes and where reads go.",
    )
    status.add_argument(
        "--url", default=None, help="the worker's base URL (default http://localhost:<web port>)"
    )
    add_setting_flags(status)

    token = sub.add_parser(
        "token",
        help="mint an HS256 token (LIKESTREAM_SECRET, with the issuer and audience set)",
        description="Print a Bearer token for USER signed with LIKESTREAM_SECRET, carrying "
        "the configured issuer and audience, for scripts and development. With "
        "LIKESTREAM_JWKS_URL tokens come from the identity provider instead.",
    )
    token.add_argument("user", metavar="USER", help="the token's subject (user id)")
    token.add_argument(
        "--ttl", type=_duration, default="1h", help="lifetime: 90s, 15m, 1h, 7d (default 1h)"
    )
    add_setting_flags(token)

    erase = sub.add_parser(
        "erase",
        help="unlike everything USER liked, through the events topic (counts stay exact)",
        description="Find every item USER likes (from the membership changelog) and publish "
        "an unlike for each, then wait until the workers applied them. Exit status: 0 "
        "erased, 1 not all seen applied in time, 2 a bad USER or Kafka unreachable.",
    )
    erase.add_argument("user", metavar="USER", help="the user to erase")
    erase.add_argument(
        "--timeout",
        type=_duration,
        default="2m",
        help="how long to wait for the workers to apply the unlikes (default 2m)",
    )
    add_setting_flags(erase)

    if _devtools_installed():
        from likestream.devtools.bench import add_parser as add_bench

        add_bench(sub)
    else:
        bench = sub.add_parser(
            "bench",
            help="benchmarks (developer tools: not in this install)",
            description=f"likestream bench: {DEVTOOLS_MISSING}.",
        )
        bench.add_argument("rest", nargs=argparse.REMAINDER, help=argparse.SUPPRESS)
    return parser


_UNITS = {"": 1, "s": 1, "m": 60, "h": 3600, "d": 86400}


def _duration(text: str) -> int:
    """Seconds in ``90``, ``90s``, ``15m``, ``1h`` or ``7d``."""
    match = re.fullmatch(r"(\d+)([smhd]?)", text.strip())
    if match is None or int(match.group(1)) == 0:
        raise argparse.ArgumentTypeError(f"expected a positive duration like 15m or 1h: {text!r}")
    return int(match.group(1)) * _UNITS[match.group(2)]


def _devtool(args: argparse.Namespace) -> int:
    """``likestream broker`` and ``likestream bench``: 2 with a clear message where the
    developer tools are not installed (the production image)."""
    if not _devtools_installed():
        print(f"likestream {args.command}: {DEVTOOLS_MISSING}", file=sys.stderr)
        return 2
    from likestream.devtools._broker import BrokerError

    try:
        if args.command == "broker":
            _broker(args)
            return 0
        from likestream.devtools.bench import run_bench

        return run_bench(args)
    except BrokerError as exc:
        print(f"likestream: {exc}", file=sys.stderr)
        return 2


def _broker(args: argparse.Namespace) -> None:
    from likestream.devtools._broker import Broker

    broker = Broker.default(port=args.port, state_dir=args.state_dir)
    if args.action == "start":
        started = broker.start()
        print(("started: " if started else "already running: ") + broker.status())
    elif args.action == "stop":
        print("stopped" if broker.stop() else "not running")
    else:
        print(broker.status())


def _config(settings: Settings) -> None:
    for name, value in settings.masked().items():
        print(f"{name}={value}")


def _produce(args: argparse.Namespace, settings: Settings) -> None:
    from likestream.kafka._factory import KafkaConfig
    from likestream.runtime._produce import produce, read_events, synthetic_events

    total: int | None = None
    events: list[LikeEvent] | object
    if args.load is not None:
        total = args.load
        events = synthetic_events(args.load, args.items, args.users, seed=args.seed)
    elif args.file is not None:
        events = read_events(args.file)
    else:
        events = [_event_from_args(args.event)]
    asyncio.run(produce(KafkaConfig.from_settings(settings), settings.topic, events, total))


def _token(args: argparse.Namespace, settings: Settings) -> None:
    from likestream.domain._tokens import mint_token
    from likestream.runtime._credentials import token_policy
    from likestream.runtime._secret import signing_secret

    if not is_valid_id(args.user):
        raise InvalidEvent("USER must be 1-128 characters of [A-Za-z0-9._:@-]")
    policy = token_policy(settings)
    if args.ttl > policy.max_lifetime:
        raise SettingsError(
            f"--ttl {args.ttl}s is longer than LIKESTREAM_JWT_MAX_LIFETIME_S "
            f"({policy.max_lifetime}s): the workers would refuse the token"
        )
    secret = signing_secret(settings)
    if secret is None:
        raise SettingsError(
            "no LIKESTREAM_SECRET to sign with: with LIKESTREAM_JWKS_URL, tokens come from "
            "the identity provider"
        )
    print(mint_token(secret, args.user, args.ttl, policy))


def _erase(args: argparse.Namespace, settings: Settings) -> int:
    """0: erased and seen applied; 1: not all seen applied in time (what was published
    stays published); 2: a bad USER, Kafka unreachable, no changelog to read."""
    from likestream.runtime._erase import (  # faust, rocksdict: only here
        EraseError,
        EraseUnconfirmed,
        erase,
    )

    if not is_valid_id(args.user):
        raise InvalidEvent("USER must be 1-128 characters of [A-Za-z0-9._:@-]")
    try:
        report = asyncio.run(erase(settings, args.user, args.timeout))
    except EraseUnconfirmed as exc:
        print(f"likestream erase: {exc}", file=sys.stderr)
        return 1
    except EraseError as exc:
        print(f"likestream erase: {exc}", file=sys.stderr)
        return 2
    print(report.summary())
    return 0


def _status(args: argparse.Namespace, settings: Settings) -> None:
    from likestream.runtime._status_report import fetch_status, format_status

    url = args.url or f"http://localhost:{settings.web_port}"
    print(format_status(url, fetch_status(url)))


def _event_from_args(words: Sequence[str]) -> LikeEvent:
    from likestream.client import new_event

    if len(words) != 3 or words[0] not in ("like", "unlike"):
        raise InvalidEvent("expected: like|unlike USER ITEM, or --file, or --load N")
    action, user, item = words
    for name, value in (("user", user), ("item", item)):
        if not is_valid_id(value):
            raise InvalidEvent(f"{name} must be 1-128 characters of [A-Za-z0-9._:@-]")
    return new_event(user, item, "like" if action == "like" else "unlike")


def main(argv: Sequence[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    try:
        if args.command in ("broker", "bench"):
            return _devtool(args)
        settings = _settings(args)
        if args.command == "config":
            _config(settings)
        elif args.command == "produce":
            _produce(args, settings)
        elif args.command == "token":
            _token(args, settings)
        elif args.command == "status":
            _status(args, settings)
        elif args.command == "erase":
            return _erase(args, settings)
        elif args.command == "gateway":
            if settings.gateway_procs > 1 and args.supervised_by is None:
                from likestream.runtime._supervisor import (
                    supervise,  # without the web stack: a small process
                )

                return supervise(settings)
            from likestream.runtime._gateway import run_gateway

            return run_gateway(settings, args.supervised_by)
        else:
            # A worker is one process: its sampler's callback gauges and removals need
            # prometheus-client's ordinary registry, so an inherited multiprocess
            # directory (meant for gateways) must not switch it to multiprocess mode.
            os.environ.pop("PROMETHEUS_MULTIPROC_DIR", None)
            from likestream.runtime._worker import run_worker

            run_worker(settings)
    except (
        SettingsError,
        TopicError,
        InvalidEvent,
        DeliveryError,
        StatusError,
    ) as exc:
        print(f"likestream: {exc}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
