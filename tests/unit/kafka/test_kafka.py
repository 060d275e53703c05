"""The Kafka settings and the one client factory: what every client is given."""

from __future__ import annotations

import logging
import ssl
from datetime import UTC, datetime, timedelta
from pathlib import Path

import faust
import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

from likestream.config._settings import Settings, SettingsError, load_settings
from likestream.kafka._factory import KafkaConfig, warn_if_plaintext

PASSWORD = "s3cret-s3cret-s3cret"


@pytest.fixture(scope="module")
def pem(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    """A self-signed certificate and its key (as a CA file and as a client pair)."""
    # With cryptography (installed with faust), not the openssl binary: CI images may
    # lack it, and a skipped test proves nothing.
    key_obj = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "localhost")])
    now = datetime.now(UTC)
    certificate = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key_obj.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - timedelta(days=1))
        .not_valid_after(now + timedelta(days=2))
        .sign(key_obj, hashes.SHA256())
    )
    root = tmp_path_factory.mktemp("pem")
    cert, key = root / "cert.pem", root / "key.pem"
    cert.write_bytes(certificate.public_bytes(serialization.Encoding.PEM))
    key.write_bytes(
        key_obj.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.TraditionalOpenSSL,
            serialization.NoEncryption(),
        )
    )
    return cert, key


def test_dev_defaults_to_plaintext_without_credentials() -> None:
    s = load_settings()
    assert s.kafka_security_protocol is None
    kafka = KafkaConfig.from_settings(s)
    assert kafka.options() == {
        "bootstrap_servers": "localhost:9092",
        "security_protocol": "PLAINTEXT",
    }
    assert kafka.faust_options() == {"broker": "kafka://localhost:9092"}


def test_prod_refuses_an_unset_protocol_and_warns_on_plaintext(
    caplog: pytest.LogCaptureFixture,
) -> None:
    with pytest.raises(SettingsError, match=r"LIKESTREAM_KAFKA_SECURITY_PROTOCOL: .*required"):
        load_settings(env="prod")
    plain = load_settings(env="prod", kafka_security_protocol="PLAINTEXT")
    with caplog.at_level(logging.WARNING):
        warn_if_plaintext(plain)
        warn_if_plaintext(load_settings(kafka_security_protocol="PLAINTEXT"))  # dev: silent
    assert [r.message.split(" in prod")[0] for r in caplog.records] == [
        "LIKESTREAM_KAFKA_SECURITY_PROTOCOL=PLAINTEXT"
    ]


@pytest.mark.parametrize(
    ("given", "named"),
    [
        ({"kafka_security_protocol": "TLS"}, "LIKESTREAM_KAFKA_SECURITY_PROTOCOL"),
        ({"kafka_security_protocol": "SASL_SSL"}, "LIKESTREAM_KAFKA_USERNAME"),
        (
            {"kafka_security_protocol": "SASL_PLAINTEXT", "kafka_username": "w"},
            "LIKESTREAM_KAFKA_PASSWORD",
        ),
        (
            {"kafka_security_protocol": "SASL_SSL", "kafka_username": "w", "kafka_password": "p"}
            | {"kafka_sasl_mechanism": "GSSAPI"},
            "LIKESTREAM_KAFKA_SASL_MECHANISM",
        ),
        (
            {"kafka_security_protocol": "SSL", "kafka_ca_file": "/no/such/ca.pem"},
            "LIKESTREAM_KAFKA_CA_FILE",
        ),
        ({"kafka_ca_file": "pyproject.toml"}, "LIKESTREAM_KAFKA_CA_FILE"),
        (
            {"kafka_security_protocol": "SSL", "kafka_cert_file": "pyproject.toml"},
            "LIKESTREAM_KAFKA_KEY_FILE",
        ),
    ],
)
def test_bad_kafka_settings_name_the_variable(given: dict[str, str], named: str) -> None:
    with pytest.raises(SettingsError, match=named):
        load_settings(**given)


async def test_sasl_ssl_reaches_every_client_kind_and_faust(pem: tuple[Path, Path]) -> None:
    cert, _ = pem
    s = load_settings(
        env="prod",
        kafka="kafka-0:9093,kafka-1:9093",
        kafka_security_protocol="SASL_SSL",
        kafka_username="likestream-worker",
        kafka_password=PASSWORD,
        kafka_ca_file=str(cert),
    )
    kafka = KafkaConfig.from_settings(s)
    assert PASSWORD not in repr(kafka)
    options = kafka.options()
    context = options.pop("ssl_context")
    assert isinstance(context, ssl.SSLContext)
    assert (context.verify_mode, context.check_hostname) == (ssl.CERT_REQUIRED, True)
    assert options == {
        "bootstrap_servers": "kafka-0:9093,kafka-1:9093",
        "security_protocol": "SASL_SSL",
        "sasl_mechanism": "SCRAM-SHA-512",
        "sasl_plain_username": "likestream-worker",
        "sasl_plain_password": PASSWORD,
    }
    # aiokafka checks the combination (protocol, mechanism, context) when a client is made.
    kafka.producer(), kafka.consumer("likes"), kafka.admin()
    app_options = kafka.faust_options()
    assert app_options["broker"] == "kafka://kafka-0:9093;kafka://kafka-1:9093"
    credentials = app_options["broker_credentials"]
    assert isinstance(credentials, faust.SASLCredentials)
    assert (credentials.protocol.value, credentials.mechanism.value) == (
        "SASL_SSL",
        "SCRAM-SHA-512",
    )
    assert (credentials.username, credentials.password) == ("likestream-worker", PASSWORD)
    app = faust.App("kafka-unit", **app_options, autodiscover=False)
    assert app.conf.broker_credentials is credentials


def test_tls_with_a_client_certificate(pem: tuple[Path, Path]) -> None:
    cert, key = pem
    s = load_settings(
        kafka_security_protocol="SSL",
        kafka_ca_file=str(cert),
        kafka_cert_file=str(cert),
        kafka_key_file=str(key),
    )
    kafka = KafkaConfig.from_settings(s)
    options = kafka.options()
    assert options["security_protocol"] == "SSL"
    assert "sasl_mechanism" not in options
    # The chain loaded: the context presents this certificate (no key: load would raise).
    assert isinstance(options["ssl_context"], ssl.SSLContext)
    credentials = kafka.faust_options()["broker_credentials"]
    assert isinstance(credentials, faust.SSLCredentials)
    assert credentials.protocol.value == "SSL"
    with pytest.raises(ssl.SSLError):
        KafkaConfig("k:9093", "SSL", ca_file=cert, cert_file=cert, key_file=cert).ssl_context()


def test_the_password_round_trips_to_children_and_is_masked(pem: tuple[Path, Path]) -> None:
    cert, _ = pem
    s = load_settings(
        env="prod",
        kafka_security_protocol="SASL_SSL",
        kafka_sasl_mechanism="SCRAM-SHA-256",
        kafka_username="likestream-gateway",
        kafka_password=PASSWORD,
        kafka_ca_file=str(cert),
    )
    assert s.masked()["LIKESTREAM_KAFKA_PASSWORD"] == "********"
    assert PASSWORD not in repr(s.masked())
    env = s.as_env()
    assert env["LIKESTREAM_KAFKA_PASSWORD"] == PASSWORD
    assert "LIKESTREAM_KAFKA_CERT_FILE" not in env
    assert Settings(**{k.removeprefix("LIKESTREAM_").lower(): v for k, v in env.items()}) == s
