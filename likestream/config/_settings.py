"""Settings: every knob is a ``LIKESTREAM_*`` environment variable or a CLI flag.

Each field is documented where it is declared; ``likestream config`` prints the
effective values with secrets masked. A bad value stops start-up with a message
that names the variable (see :func:`load_settings`).
"""

from __future__ import annotations

import re
import socket
from pathlib import Path
from typing import Any, Literal

from pydantic import Field, SecretStr, ValidationError, ValidationInfo, field_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

from likestream.domain._window_spec import DEFAULT_WINDOWS, Window, parse_windows

__all__ = ["ENV_PREFIX", "Settings", "SettingsError", "load_settings"]

ENV_PREFIX = "LIKESTREAM_"
_TOPIC_RE = re.compile(r"[A-Za-z0-9._-]{1,200}")
_HOST_PORT_RE = re.compile(r"[A-Za-z0-9.\-\[\]:]+:\d{1,5}")
_ORIGIN_RE = re.compile(r"https?://[A-Za-z0-9.\-\[\]:]+")
_URL_RE = re.compile(r"https?://[A-Za-z0-9.\-]+(:\d{1,5})?/?")
_JWKS_URL_RE = re.compile(r"https?://[A-Za-z0-9.\-\[\]:]+(/\S*)?")


class SettingsError(ValueError):
    """A setting has a bad value; the message names the environment variable."""


class Settings(BaseSettings):
    # use_attribute_docstrings: each field's docstring is its description, which the
    # CLI shows as the flag's help (likestream/runtime/_flags.py).
    model_config = SettingsConfigDict(
        env_prefix=ENV_PREFIX, frozen=True, extra="forbid", use_attribute_docstrings=True
    )

    kafka: str = "localhost:9092"
    """Bootstrap servers, comma separated ``host:port``; the default is the embedded broker."""

    topic: str = "likes"
    """The events topic. Its dead-letter topic is ``<topic>.dlq``."""

    counts_topic: str = "like-counts"
    """Compacted topic that receives every count change (``item_id -> count``)."""

    partitions: int = Field(8, ge=1, le=1024)
    """Partitions of the events topic, and so of every table and of ``like-counts``."""

    replication: int = Field(1, ge=1, le=9)
    """Replication factor for the topics the app creates (1 for the embedded broker)."""

    app_id: str = "likestream"
    """Consumer group id and prefix of the changelog topics."""

    data_dir: Path = Path("./data")
    """This process's RocksDB databases and other local state."""

    web_host: str = "127.0.0.1"
    """Address the HTTP server binds to: this machine only unless set (containers set
    ``0.0.0.0``)."""

    web_port: int = Field(6066, ge=1, le=65535)
    """HTTP port."""

    gateway_procs: int = Field(1, ge=1, le=64)
    """Processes of ``likestream gateway`` (also ``--procs``), each a whole gateway on its
    own event loop, all on the one HTTP port (``SO_REUSEPORT``: the kernel spreads new
    connections over them). Above 1 the command supervises them. Kubernetes sets it from
    the gateway's CPU limit. Workers are always one process."""

    secret: SecretStr | None = None
    """HS256 key that signs and verifies tokens (``likestream token``, ``/dev/token``). Prod
    requires it or ``jwks_url``, and a strong one (``_secret.py``); in dev, unset means a
    generated development secret shared by the machine's processes."""

    # -- tokens, the internal secret, privacy (README "Tokens") -------------------------

    previous_secrets: SecretStr | None = None
    """Former HS256 keys, comma separated: tokens they signed still verify (each token's
    ``kid`` names its key) until removed from here. Prod requires each to be strong."""

    jwks_url: str | None = None
    """The identity provider's JWK Set URL: tokens signed RS256/ES256 with one of its keys
    are accepted, so no process holds a key that can sign. Prod requires https and reads it
    at start-up (unreadable: start-up fails)."""

    jwks_refresh_s: int = Field(300, ge=1, le=86_400)
    """How often the JWK Set is read again, seconds: a key the provider removed is refused
    at most this long after. A token naming an unknown key also triggers a read, at most
    once per 10 s."""

    jwt_issuer: str | None = None
    """Required ``iss`` of every token (``likestream token`` sets it). Prod requires it."""

    jwt_audience: str | None = None
    """Required ``aud`` of every token (``likestream token`` sets it); unset: tokens must
    carry none. Prod requires it."""

    jwt_max_lifetime_s: int = Field(86_400, ge=60, le=30 * 86_400)
    """The longest lifetime accepted (``exp`` minus ``iat``, both required), seconds."""

    internal_secret: SecretStr | None = None
    """Key of what processes prove to each other (forwarded reads) and of the user-id
    hashes in logs; never a token key. Prod requires a strong one, other than
    ``LIKESTREAM_SECRET``; dev, unset: derived from the signing secret."""

    public_memberships: bool = False
    """Whether anyone may read any user's membership (``GET /items/{id}/likes/{user}``);
    off: only with a token whose subject is that user."""

    rate: float = Field(5.0, gt=0)
    """Per-user like rate, tokens per second."""

    burst: int = Field(20, ge=1)
    """Per-user token bucket size."""

    publish_timeout_ms: int = Field(5000, ge=100, le=120_000)
    """How long a write waits for Kafka's acknowledgement before answering 503."""

    cors_origins: str = ""
    """Browser origins allowed to call the API, comma separated (``https://a.example``), or
    ``*`` for any; empty allows none."""

    push_interval_ms: int = Field(100, ge=1, le=60_000)
    """Push coalescing per item and client, in milliseconds."""

    env: Literal["dev", "prod"] = "dev"
    """``dev`` or ``prod``; prod refuses unsafe defaults."""

    dev_tokens: bool | None = Field(None, validate_default=True)
    """Whether ``POST /dev/token`` mints a short-lived write token for any user name the
    demo page's visitor picks. Unset: on in dev, off in prod; prod refuses ``true``."""

    push_max_items: int = Field(100, ge=1, le=10_000)
    """Items one WebSocket connection may be subscribed to at once."""

    push_backlog_kb: int = Field(64, ge=1, le=65_536)
    """KiB written to one push client that its socket has not taken yet (on top of the
    kernel's fixed 64 KiB send buffer); past that the client is too slow and is dropped
    (WebSocket close code 1013)."""

    push_max_connections: int = Field(20_000, ge=0, le=1_000_000)
    """WebSocket and SSE connections one process holds at once; past that a WebSocket is
    closed with code 1013 and SSE answers 503. 0: no cap."""

    push_max_connections_per_address: int = Field(256, ge=0, le=1_000_000)
    """Push connections from one client address (the TCP peer) at once, per process; past
    that as for ``push_max_connections``. 0: no cap. Behind a proxy every client shares the
    proxy's address: the Kubernetes config sets 0 there."""

    push_max_subscriptions: int = Field(200_000, ge=0, le=10_000_000)
    """Item subscriptions (connection, item) one process holds at once; a subscribe past
    that is refused with an error frame (SSE: 503), nothing subscribed. 0: no cap."""

    count_cache_items: int = Field(100_000, ge=1_000, le=100_000_000)
    """Counts of ``like-counts`` held in memory per process (the hot ones, least recently
    used evicted first, about 200 bytes each); the rest are read from the process's
    on-disk copy of the topic."""

    push_heartbeat_ms: int = Field(30_000, ge=100, le=600_000)
    """WebSocket ping interval (a connection that misses a pong is closed) and SSE
    keep-alive comment interval, milliseconds."""

    log_level: Literal["debug", "info", "warning", "error"] = "info"
    """Log level of the worker."""

    log_format: Literal["plain", "json"] = "plain"
    """``plain`` lines for people, or ``json``: one JSON object per line (for log shippers).
    Faust's own logs and the HTTP access log follow it; both carry request ids."""

    access_log_sample: float = Field(0.01, gt=0.0, le=1.0)
    """Share of the HTTP access log lines of successful reads (GET or HEAD, status 2xx,
    answered within 0.5 s) that are written, chosen at random; writes, refused and failed
    requests and slow reads are always logged. 1 logs every request. The default, 1 read
    in 100: under heavy read load writing every read's line was a sixth of the event
    loop's time."""

    metrics_interval_ms: int = Field(5000, ge=100, le=600_000)
    """How often consumer lag, table sizes and recovery progress are sampled for
    ``/metrics`` and ``/status``, milliseconds."""

    rocksdb_cache_mb: int = Field(8, ge=1, le=4096)
    """RocksDB block cache per partition database, MiB (faust's default is 2 GiB each); it
    also holds the table files' index and filter blocks (``tables/_options.py``)."""

    rocksdb_write_buffer_mb: int = Field(4, ge=1, le=1024)
    """RocksDB memtable size per partition database, MiB."""

    commit_interval_ms: int = Field(50, ge=1, le=10_000)
    """How often applied events are confirmed durable and acknowledged, milliseconds."""

    instance_id: str | None = None
    """Static consumer-group membership id (Kafka ``group.instance.id``), stable across
    restarts so a restarting worker gets its partitions back without a rebalance; in
    Kubernetes the pod name. Unset: dynamic membership. A static member that stops does
    not leave the group: its partitions wait for it up to the session timeout (10 s)."""

    advertised_url: str | None = None
    """Base URL at which other processes reach this worker's HTTP server, e.g.
    ``http://likestream-worker-0.likestream-worker:6066`` (pod DNS through the headless
    Service). Every worker shares it with the consumer group (faust's ``canonical_url``),
    which is how gateways and peers find the owner of an item. Unset:
    ``http://<web host>:<web port>``, with the machine's host name when the web host is
    a wildcard address (``0.0.0.0``)."""

    standby_replicas: int = Field(1, ge=0, le=3)
    """Standby copies of each table partition, kept by other workers from the changelog
    (faust's ``table_standby_replicas``). A standby takes over a failed worker's partitions
    without a full changelog replay and answers membership reads while the owner is away.
    Each copy costs the disk and RocksDB memory of the partitions it holds; with fewer
    workers than copies + 1, faust places what fits."""

    max_poll_interval_ms: int = Field(1_000_000, ge=1000, le=86_400_000)
    """How long the worker's group member may go without polling Kafka before Kafka's
    client takes it out of the group (faust's ``broker_max_poll_interval``, default its
    1000 s). The worker keeps its member polling whatever its assignment; ``/healthz``
    fails once the member has gone this long without a poll, as it is then out of the
    group, so that the worker gets restarted."""

    stale_max_ms: int = Field(5000, ge=100, le=600_000)
    """The staleness bound: a read that the item's owner cannot answer fresh is answered
    from a replica only if that replica was complete (up to the end of ``like-counts``)
    at most this long ago; otherwise 503. Stale answers say so in ``X-Likestream-Stale``
    and ``X-Likestream-Stale-Ms``."""

    forward_timeout_ms: int = Field(1000, ge=50, le=60_000)
    """How long a read forwarded to the item's owner may take before this process answers
    from its replica instead."""

    trending_topic: str = "like-trending"
    """Compacted topic where each worker publishes the top items of each partition it owns,
    per window (key ``<window>/<partition>``); every process reads it to answer
    ``GET /trending`` and the trending pushes."""

    trending_windows: str = DEFAULT_WINDOWS
    """Trending windows and their buckets, ``WINDOW:BUCKET`` comma separated (durations in
    s, m, h or d): ``1m:10s`` is one minute of event time in six 10-second buckets, sliding
    by a bucket. The bucket must divide the window in 1 to 120 parts; at most 8 windows."""

    trending_lateness_ms: int = Field(10_000, ge=0, le=86_400_000)
    """Allowed lateness of event time, milliseconds: a partition's windows end this much
    behind the newest event time it has seen, so an event up to this late still lands in the
    bucket it belongs to; an event older than the oldest bucket of a window is left out of
    that window (``likestream_trending_late_events_total``). Also the most an event's ``ts``
    may be ahead of its record's timestamp (a client clock running ahead)."""

    trending_interval_ms: int = Field(1000, ge=10, le=60_000)
    """How often a worker publishes changed top items of its partitions, milliseconds:
    the staleness of ``GET /trending`` on top of reading the topic."""

    limit_timeout_ms: int = Field(500, ge=50, le=10_000)
    """How long a write waits for the worker that keeps the user's rate-limit bucket (the
    owner of the user's partition) before it is refused with 503: limits are never
    loosened because that worker is away."""

    # -- Kafka security (one block: see likestream/kafka/_factory.py, the one client factory) --

    kafka_security_protocol: Literal["PLAINTEXT", "SSL", "SASL_PLAINTEXT", "SASL_SSL"] | None = (
        Field(None, validate_default=True)
    )
    """How every Kafka client connects: ``PLAINTEXT``, ``SSL`` (TLS), ``SASL_PLAINTEXT`` or
    ``SASL_SSL`` (SASL over TLS, what Kubernetes uses). Unset: ``PLAINTEXT`` in dev; prod
    refuses to start without it (an explicit ``PLAINTEXT`` starts with a warning)."""

    kafka_sasl_mechanism: Literal["SCRAM-SHA-512", "SCRAM-SHA-256", "PLAIN"] = "SCRAM-SHA-512"
    """SASL mechanism with a ``SASL_*`` protocol."""

    kafka_username: str | None = Field(None, validate_default=True)
    """SASL user name (the KafkaUser of this process's role); required with ``SASL_*``."""

    kafka_password: SecretStr | None = Field(None, validate_default=True)
    """SASL password; required with ``SASL_*``. Masked by ``likestream config``."""

    kafka_ca_file: Path | None = Field(None, validate_default=True)
    """PEM file of the CA that signed the brokers' certificates, with ``SSL``/``SASL_SSL``
    (Strimzi: the cluster CA secret's ``ca.crt``). Unset: the system's CAs."""

    kafka_cert_file: Path | None = None
    """PEM client certificate for mutual TLS (optional; with ``LIKESTREAM_KAFKA_KEY_FILE``)."""

    kafka_key_file: Path | None = Field(None, validate_default=True)
    """PEM private key of ``LIKESTREAM_KAFKA_CERT_FILE``."""

    @field_validator("kafka_security_protocol")
    @classmethod
    def _check_kafka_protocol(cls, value: str | None, info: ValidationInfo) -> str | None:
        if value is None and info.data.get("env") == "prod":
            raise ValueError(
                "required when LIKESTREAM_ENV=prod (SASL_SSL with SCRAM in Kubernetes; "
                "PLAINTEXT only knowingly)"
            )
        return value

    @field_validator("kafka_username", "kafka_password")
    @classmethod
    def _check_kafka_sasl(cls, value: Any, info: ValidationInfo) -> Any:
        protocol = info.data.get("kafka_security_protocol") or ""
        if protocol.startswith("SASL_") and not value:
            raise ValueError(f"required with LIKESTREAM_KAFKA_SECURITY_PROTOCOL={protocol}")
        return value

    @field_validator("kafka_ca_file", "kafka_cert_file", "kafka_key_file")
    @classmethod
    def _check_kafka_file(cls, value: Path | None, info: ValidationInfo) -> Path | None:
        if value is not None:
            if info.data.get("kafka_security_protocol") not in ("SSL", "SASL_SSL"):
                raise ValueError(
                    "only used with LIKESTREAM_KAFKA_SECURITY_PROTOCOL=SSL or SASL_SSL"
                )
            if not value.is_file():
                raise ValueError(f"no such file: {value}")
        if info.field_name == "kafka_key_file" and (value is None) != (
            info.data.get("kafka_cert_file") is None
        ):
            raise ValueError("LIKESTREAM_KAFKA_CERT_FILE and LIKESTREAM_KAFKA_KEY_FILE go together")
        return value

    @field_validator("kafka")
    @classmethod
    def _check_kafka(cls, value: str) -> str:
        servers = [s.strip() for s in value.split(",")]
        if not all(_HOST_PORT_RE.fullmatch(s) for s in servers):
            raise ValueError("expected host:port[,host:port...]")
        return ",".join(servers)

    @field_validator("topic", "counts_topic", "trending_topic", "app_id")
    @classmethod
    def _check_name(cls, value: str) -> str:
        if not _TOPIC_RE.fullmatch(value):
            raise ValueError("expected 1-200 characters of [A-Za-z0-9._-]")
        return value

    @field_validator("dev_tokens")
    @classmethod
    def _check_dev_tokens(cls, value: bool | None, info: ValidationInfo) -> bool:
        prod = info.data.get("env") == "prod"
        if value is None:
            return not prod
        if value and prod:
            raise ValueError("development tokens are refused when LIKESTREAM_ENV=prod")
        return value

    @field_validator("cors_origins")
    @classmethod
    def _check_origins(cls, value: str) -> str:
        origins = [o.strip() for o in value.split(",") if o.strip()]
        if not all(o == "*" or _ORIGIN_RE.fullmatch(o) for o in origins):
            raise ValueError("expected *, or scheme://host[:port] origins separated by commas")
        return ",".join(origins)

    @property
    def cors_origin_set(self) -> frozenset[str]:
        return frozenset(self.cors_origins.split(",")) - {""}

    @field_validator("instance_id")
    @classmethod
    def _check_instance_id(cls, value: str | None) -> str | None:
        if value is not None and not _TOPIC_RE.fullmatch(value):
            raise ValueError("expected 1-200 characters of [A-Za-z0-9._-]")
        return value

    @field_validator("advertised_url")
    @classmethod
    def _check_url(cls, value: str | None) -> str | None:
        if value is not None and not _URL_RE.fullmatch(value):
            raise ValueError("expected http(s)://host[:port] with no path")
        return value

    @field_validator("jwks_url")
    @classmethod
    def _check_jwks_url(cls, value: str | None) -> str | None:
        if value is not None and not _JWKS_URL_RE.fullmatch(value):
            raise ValueError("expected an http(s):// URL")
        return value

    @field_validator("jwt_issuer", "jwt_audience")
    @classmethod
    def _check_claim(cls, value: str | None) -> str | None:
        if value is not None and not (0 < len(value) <= 1000 and value.isprintable()):
            raise ValueError("expected 1-1000 printable characters")
        return value

    @field_validator("trending_windows")
    @classmethod
    def _check_windows(cls, value: str) -> str:
        parse_windows(value)  # its ValueError names the fault
        return value

    @property
    def windows(self) -> tuple[Window, ...]:
        return parse_windows(self.trending_windows)

    @property
    def dlq_topic(self) -> str:
        return f"{self.topic}.dlq"

    @property
    def url(self) -> str:
        """The advertised URL, or the default one (see ``advertised_url``), without a
        trailing slash."""
        if self.advertised_url is not None:
            return self.advertised_url.rstrip("/")
        host = self.web_host
        if host in ("0.0.0.0", "::", ""):
            host = socket.gethostname()
        elif ":" in host:
            host = f"[{host}]"
        return f"http://{host}:{self.web_port}"

    def masked(self) -> dict[str, str]:
        """Effective values as strings, secrets masked, keyed by environment variable."""
        out: dict[str, str] = {}
        for name in type(self).model_fields:
            value = getattr(self, name)
            if isinstance(value, SecretStr):
                shown = "********"
            elif value is None:
                shown = "(unset)"
            else:
                shown = str(value)
            out[ENV_PREFIX + name.upper()] = shown
        return out

    def as_env(self) -> dict[str, str]:
        """The ``LIKESTREAM_*`` variables that :func:`load_settings` reads back as these
        settings, secrets included (for child processes; never log it). Unset ones are
        left out: the caller removes them from an inherited environment."""
        out: dict[str, str] = {}
        for name in type(self).model_fields:
            value = getattr(self, name)
            if value is None:
                continue
            if isinstance(value, SecretStr):
                text = value.get_secret_value()
            elif isinstance(value, bool):
                text = "true" if value else "false"
            else:
                text = str(value)
            out[ENV_PREFIX + name.upper()] = text
        return out


def load_settings(**overrides: Any) -> Settings:
    """Read settings from the environment; ``overrides`` (CLI flags) win.

    Raises :class:`SettingsError` naming the offending variable.
    """
    given = {k: v for k, v in overrides.items() if v is not None}
    try:
        return Settings(**given)
    except ValidationError as exc:
        lines = []
        for err in exc.errors():
            field = str(err["loc"][0]) if err["loc"] else "?"
            lines.append(f"{ENV_PREFIX}{field.upper()}: {err['msg']}")
        raise SettingsError("invalid setting: " + "; ".join(lines)) from None
