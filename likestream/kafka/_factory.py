"""The one Kafka client factory: every producer, consumer, admin client and the faust
app get their bootstrap servers and security options (TLS, SASL SCRAM) from here.

A :class:`KafkaConfig` is built once from the settings and passed to whatever talks to
Kafka; nothing else constructs an aiokafka client (tests/unit/test_layout.py checks),
so no client can be left on plaintext by a forgotten keyword.
"""

from __future__ import annotations

import logging
import ssl
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

from aiokafka import AIOKafkaConsumer, AIOKafkaProducer
from aiokafka.admin import AIOKafkaAdminClient
from aiokafka.client import AIOKafkaClient
from aiokafka.errors import for_code
from aiokafka.protocol.admin import CreateAclsRequest

from likestream.config._settings import Settings

__all__ = ["Acl", "KafkaConfig", "Protocol", "create_acls", "warn_if_plaintext"]

Protocol = Literal["PLAINTEXT", "SSL", "SASL_PLAINTEXT", "SASL_SSL"]
Mechanism = Literal["SCRAM-SHA-512", "SCRAM-SHA-256", "PLAIN"]

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class KafkaConfig:
    """Where Kafka is and how to authenticate to it; ``password`` never shows in a repr."""

    bootstrap: str
    protocol: Protocol = "PLAINTEXT"
    mechanism: Mechanism = "SCRAM-SHA-512"
    username: str | None = None
    password: str | None = field(default=None, repr=False)
    ca_file: Path | None = None
    cert_file: Path | None = None
    key_file: Path | None = None

    @classmethod
    def from_settings(cls, settings: Settings) -> KafkaConfig:
        password = settings.kafka_password
        return cls(
            bootstrap=settings.kafka,
            protocol=settings.kafka_security_protocol or "PLAINTEXT",
            mechanism=settings.kafka_sasl_mechanism,
            username=settings.kafka_username,
            password=password.get_secret_value() if password is not None else None,
            ca_file=settings.kafka_ca_file,
            cert_file=settings.kafka_cert_file,
            key_file=settings.kafka_key_file,
        )

    @property
    def sasl(self) -> bool:
        return self.protocol.startswith("SASL_")

    @property
    def tls(self) -> bool:
        return self.protocol in ("SSL", "SASL_SSL")

    def ssl_context(self) -> ssl.SSLContext | None:
        """Server verified against the CA file (the system's CAs without one), host name
        checked; a client certificate for mutual TLS when one is configured."""
        if not self.tls:
            return None
        context = ssl.create_default_context(
            cafile=str(self.ca_file) if self.ca_file is not None else None
        )
        if self.cert_file is not None:
            context.load_cert_chain(
                str(self.cert_file), str(self.key_file) if self.key_file is not None else None
            )
        return context

    def options(self) -> dict[str, Any]:
        """aiokafka's keyword arguments for bootstrap and security, the same for every
        client kind."""
        out: dict[str, Any] = {
            "bootstrap_servers": self.bootstrap,
            "security_protocol": self.protocol,
        }
        context = self.ssl_context()
        if context is not None:
            out["ssl_context"] = context
        if self.sasl:
            out["sasl_mechanism"] = self.mechanism
            out["sasl_plain_username"] = self.username
            out["sasl_plain_password"] = self.password
        return out

    def producer(self, **kw: Any) -> AIOKafkaProducer:
        return AIOKafkaProducer(**self.options(), **kw)

    def consumer(self, *topics: str, **kw: Any) -> AIOKafkaConsumer:
        return AIOKafkaConsumer(*topics, **self.options(), **kw)

    def admin(self, **kw: Any) -> AIOKafkaAdminClient:
        return AIOKafkaAdminClient(**self.options(), **kw)

    def faust_options(self) -> dict[str, Any]:
        """``faust.App`` keyword arguments: the broker URLs and its credentials (faust
        hands SASLCredentials' mechanism, SCRAM-SHA-512 included, to aiokafka as is)."""
        import faust  # here: the plain clients (LikeClient) do not pay for importing faust

        options: dict[str, Any] = {
            "broker": ";".join(f"kafka://{s}" for s in self.bootstrap.split(",")),
        }
        context = self.ssl_context()
        if self.sasl:
            options["broker_credentials"] = faust.SASLCredentials(
                username=self.username,
                password=self.password,
                mechanism=self.mechanism,
                ssl_context=context,  # SASL_SSL when given, SASL_PLAINTEXT without
            )
        elif context is not None:
            options["broker_credentials"] = faust.SSLCredentials(context)
        return options


def warn_if_plaintext(settings: Settings) -> None:
    """Prod may run on PLAINTEXT only when it says so; it is said loudly at start-up."""
    if settings.env == "prod" and settings.kafka_security_protocol == "PLAINTEXT":
        log.warning(
            "LIKESTREAM_KAFKA_SECURITY_PROTOCOL=PLAINTEXT in prod: Kafka traffic is neither "
            "encrypted nor authenticated, any client that reaches the brokers can write "
            "likes and counts"
        )


# Kafka's AclOperation, ResourceType, PatternType and AclPermissionType codes.
_OPERATIONS = {
    "ALL": 2,
    "READ": 3,
    "WRITE": 4,
    "CREATE": 5,
    "DELETE": 6,
    "ALTER": 7,
    "DESCRIBE": 8,
    "CLUSTER_ACTION": 9,
    "DESCRIBE_CONFIGS": 10,
    "ALTER_CONFIGS": 11,
    "IDEMPOTENT_WRITE": 12,
}
_RESOURCES = {"TOPIC": 2, "GROUP": 3, "CLUSTER": 4, "TRANSACTIONAL_ID": 5}
_PATTERNS = {"LITERAL": 3, "PREFIXED": 4}
_ALLOW = 3


@dataclass(frozen=True)
class Acl:
    """Allow ``principal`` (``User:name``) ``operation`` on one resource."""

    principal: str
    operation: str
    resource: str
    name: str
    pattern: Literal["LITERAL", "PREFIXED"] = "LITERAL"


async def create_acls(config: KafkaConfig, acls: Iterable[Acl]) -> None:
    """Create ACLs (for the embedded broker with an authorizer, which has no other way in:
    aiokafka's admin client has no ACL call, so its protocol request is sent as is)."""
    client = AIOKafkaClient(**config.options())
    await client.bootstrap()
    try:
        for acl in acls:
            request = CreateAclsRequest(
                _RESOURCES[acl.resource],
                acl.name,
                _PATTERNS[acl.pattern],
                acl.principal,
                "*",
                _OPERATIONS[acl.operation],
                _ALLOW,
            )
            response = await client.send(client.get_random_node(), request)
            for code, message in response.creation_responses:
                if code != 0:
                    raise for_code(code)(f"creating {acl}: {message}")
    finally:
        await client.close()
