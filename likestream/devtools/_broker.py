"""The embedded broker: one single-node KRaft Kafka process from Maven Central jars.

``likestream broker start`` resolves ``org.apache.kafka:kafka_2.13`` (one pinned
version) with Maven into a cache outside the repository, formats a combined
broker+controller log directory once, starts the broker in the background with a
small heap and waits until it serves. ``stop`` ends only the process that
``start`` recorded in its pid file.
"""

from __future__ import annotations

import base64
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import time
import uuid
from dataclasses import dataclass
from pathlib import Path

from likestream.kafka._factory import KafkaConfig
from likestream.runtime._cache_dir import default_cache_dir
from likestream.runtime._pids import alive
from likestream.runtime._progress import progress_bar

__all__ = ["KAFKA_VERSION", "Broker", "BrokerError", "Secured", "default_cache_dir"]

KAFKA_VERSION = "4.1.1"
LOG4J_VERSION = "2.24.3"
HEAP = ["-Xms128m", "-Xmx512m", "-XX:+UseSerialGC"]
STARTED_LINE = "Kafka Server started"

_POM = f"""<project xmlns="http://maven.apache.org/POM/4.0.0">
  <modelVersion>4.0.0</modelVersion>
  <groupId>likestream</groupId><artifactId>embedded-broker</artifactId>
  <version>1</version><packaging>pom</packaging>
  <dependencies>
    <dependency><groupId>org.apache.kafka</groupId><artifactId>kafka_2.13</artifactId>
      <version>{KAFKA_VERSION}</version></dependency>
    <dependency><groupId>org.apache.logging.log4j</groupId>
      <artifactId>log4j-slf4j-impl</artifactId><version>{LOG4J_VERSION}</version></dependency>
  </dependencies>
</project>
"""

_LOG4J = """rootLogger.level=INFO
rootLogger.appenderRef.file.ref=file
appender.file.type=File
appender.file.name=file
appender.file.fileName={log}
appender.file.layout.type=PatternLayout
appender.file.layout.pattern=[%d] %p %m (%c)%n
logger.kafka.name=org.apache.kafka
logger.kafka.level=WARN
logger.state.name=state.change.logger
logger.state.level=WARN
"""

# Single node: replication factor 1 and min ISR 1 everywhere; the app creates its
# own topics with the partitions it is configured for, so auto-creation is off.
_SERVER = """process.roles=broker,controller
node.id=1
controller.quorum.voters=1@localhost:{controller_port}
listeners=PLAINTEXT://localhost:{port},CONTROLLER://localhost:{controller_port}
advertised.listeners=PLAINTEXT://localhost:{port}
controller.listener.names=CONTROLLER
listener.security.protocol.map=CONTROLLER:PLAINTEXT,PLAINTEXT:PLAINTEXT
inter.broker.listener.name=PLAINTEXT
log.dirs={log_dir}
auto.create.topics.enable=false
default.replication.factor=1
min.insync.replicas=1
offsets.topic.replication.factor=1
offsets.topic.num.partitions=8
transaction.state.log.replication.factor=1
transaction.state.log.min.isr=1
transaction.state.log.num.partitions=4
share.coordinator.state.topic.replication.factor=1
share.coordinator.state.topic.min.isr=1
group.initial.rebalance.delay.ms=0
log.cleaner.dedupe.buffer.size=16777216
log.segment.bytes=67108864
"""


# The secured broker's extra listener: SCRAM-SHA-512 over TLS (a self-signed certificate
# for localhost made with keytool) or plain TCP, and the StandardAuthorizer. The PLAINTEXT
# listener stays for the broker itself (inter-broker and controller traffic) and for
# test set-up; its ANONYMOUS principal is therefore a super user, like Strimzi's internal
# replication listener, which no application reaches.
_SECURED = """listeners=PLAINTEXT://localhost:{port},CONTROLLER://localhost:{controller_port},\
SECURED://localhost:{secured_port}
advertised.listeners=PLAINTEXT://localhost:{port},SECURED://localhost:{secured_port}
listener.security.protocol.map=CONTROLLER:PLAINTEXT,PLAINTEXT:PLAINTEXT,SECURED:{protocol}
sasl.enabled.mechanisms=SCRAM-SHA-512
listener.name.secured.scram-sha-512.sasl.jaas.config=\
org.apache.kafka.common.security.scram.ScramLoginModule required;
authorizer.class.name=org.apache.kafka.metadata.authorizer.StandardAuthorizer
super.users=User:ANONYMOUS
allow.everyone.if.no.acl.found=false
"""

_TLS = """listener.name.secured.ssl.keystore.type=PKCS12
listener.name.secured.ssl.keystore.location={keystore}
listener.name.secured.ssl.keystore.password={password}
"""


@dataclass(frozen=True)
class Secured:
    """The extra listener of a secured broker: SCRAM-SHA-512 users created when the log
    directory is formatted, over TLS unless ``tls`` is False; ACLs are the caller's
    (``likestream.kafka._factory.create_acls`` through :attr:`Broker.kafka`)."""

    users: tuple[tuple[str, str], ...]
    """(name, password) pairs."""
    tls: bool = True


class BrokerError(RuntimeError):
    """A failure the user can act on; the message says what to do."""


def _say(message: str) -> None:
    print(message, file=sys.stderr, flush=True)


@dataclass(frozen=True)
class Broker:
    """One embedded broker: jars under ``cache_dir``, state under ``state_dir``."""

    cache_dir: Path
    state_dir: Path
    port: int = 9092
    secured: Secured | None = None
    """An extra SCRAM listener on ``port + 2`` with an authorizer; None: PLAINTEXT only."""

    @classmethod
    def default(cls, port: int = 9092, state_dir: Path | None = None) -> Broker:
        cache = default_cache_dir()
        return cls(cache, state_dir or cache / "broker", port)

    @property
    def bootstrap(self) -> str:
        return f"localhost:{self.port}"

    @property
    def kafka(self) -> KafkaConfig:
        """The PLAINTEXT listener (a super user when the broker is secured)."""
        return KafkaConfig(self.bootstrap)

    @property
    def secured_bootstrap(self) -> str:
        return f"localhost:{self.port + 2}"

    @property
    def ca_file(self) -> Path:
        """The secured listener's certificate (self-signed: its own CA), PEM."""
        return self.state_dir / "ca.pem"

    def user(self, name: str, password: str) -> KafkaConfig:
        """A client of the secured listener as ``name`` (any password: wrong ones too)."""
        tls = self.secured is not None and self.secured.tls
        return KafkaConfig(
            self.secured_bootstrap,
            protocol="SASL_SSL" if tls else "SASL_PLAINTEXT",
            username=name,
            password=password,
            ca_file=self.ca_file if tls else None,
        )

    @property
    def libs(self) -> Path:
        return self.cache_dir / f"kafka-{KAFKA_VERSION}" / "libs"

    @property
    def log_file(self) -> Path:
        return self.state_dir / "broker.log"

    @property
    def _pid_file(self) -> Path:
        return self.state_dir / "broker.pid"

    # -- public commands -------------------------------------------------------

    def start(self, timeout: float = 180.0) -> bool:
        """Start the broker; False when it already runs."""
        if self.pid() is not None:
            return False
        java = _java()
        ports = [self.port, self.port + 1] + ([self.port + 2] if self.secured else [])
        for port in ports:
            if _accepts(port):
                raise BrokerError(f"port {port} is in use by another process; choose --port")
        self.fetch()
        self.state_dir.mkdir(parents=True, exist_ok=True)
        config = self._write_config()
        self._format(java, config)
        offset = self.log_file.stat().st_size if self.log_file.exists() else 0
        with open(self.state_dir / "broker.out", "ab") as out:
            proc = subprocess.Popen(
                [java, *HEAP, *self._jvm_args(), "kafka.Kafka", str(config)],
                stdout=out,
                stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL,
                start_new_session=True,
            )
        self._pid_file.write_text(str(proc.pid))
        self._wait_started(proc, offset, timeout)
        return True

    def stop(self, timeout: float = 30.0) -> bool:
        """Stop the broker that :meth:`start` started; False when none runs."""
        pid = self.pid()
        if pid is None:
            return False
        os.kill(pid, signal.SIGTERM)
        deadline = time.monotonic() + timeout
        while alive(pid) and time.monotonic() < deadline:
            time.sleep(0.1)
        if alive(pid):
            os.kill(pid, signal.SIGKILL)
        self._pid_file.unlink(missing_ok=True)
        return True

    def pid(self) -> int | None:
        """The pid of our running broker, or None (a stale pid file is ignored)."""
        try:
            pid = int(self._pid_file.read_text().strip())
        except (FileNotFoundError, ValueError):
            return None
        if not alive(pid):
            return None
        try:
            cmdline = Path(f"/proc/{pid}/cmdline").read_bytes()
        except OSError:
            return None
        # Only ours: a recycled pid belonging to some other program is left alone.
        return pid if str(self.state_dir).encode() in cmdline else None

    def status(self) -> str:
        pid = self.pid()
        if pid is None:
            return f"down (state in {self.state_dir})"
        return f"up at {self.bootstrap} (pid {pid}, log {self.log_file})"

    def fetch(self) -> None:
        """Resolve the Kafka jars from Maven Central into the cache, once."""
        marker = self.libs / ".complete"
        if marker.exists():
            return
        mvn = shutil.which("mvn")
        if mvn is None:
            raise BrokerError("Maven is needed to fetch Kafka: install it (apt-get install maven)")
        home = self.libs.parent
        home.mkdir(parents=True, exist_ok=True)
        (home / "pom.xml").write_text(_POM)
        _say(f"fetching Apache Kafka {KAFKA_VERSION} from Maven Central into {home} (once)")
        cmd = [
            mvn,
            "-B",
            "-f",
            str(home / "pom.xml"),
            "dependency:copy-dependencies",
            f"-DoutputDirectory={self.libs}",
            "-DincludeScope=runtime",
        ]
        _run_with_progress(cmd)
        marker.write_text(KAFKA_VERSION)
        _say(f"fetched {len(list(self.libs.glob('*.jar')))} jars")

    # -- internals ---------------------------------------------------------------

    def _jvm_args(self) -> list[str]:
        return [
            "-cp",
            f"{self.libs}/*",
            f"-Dlog4j2.configurationFile={self.state_dir / 'log4j2.properties'}",
            f"-Dlikestream.state={self.state_dir}",
        ]

    def _write_config(self) -> Path:
        (self.state_dir / "log4j2.properties").write_text(_LOG4J.format(log=self.log_file))
        config = self.state_dir / "server.properties"
        text = _SERVER.format(
            port=self.port, controller_port=self.port + 1, log_dir=self.state_dir / "data"
        )
        if self.secured is not None:
            drop = ("listeners=", "advertised.listeners=", "listener.security.protocol.map=")
            text = "".join(line for line in text.splitlines(True) if not line.startswith(drop))
            text += _SECURED.format(
                port=self.port,
                controller_port=self.port + 1,
                secured_port=self.port + 2,
                protocol="SASL_SSL" if self.secured.tls else "SASL_PLAINTEXT",
            )
            if self.secured.tls:
                text += _TLS.format(**self._keystore())
        config.write_text(text)
        return config

    def _keystore(self) -> dict[str, str]:
        """A self-signed certificate for localhost in a PKCS12 keystore (made once), and
        its PEM for clients to trust."""
        keystore = self.state_dir / "broker.p12"
        password_file = self.state_dir / "keystore.password"
        if not keystore.exists():
            password_file.write_text(uuid.uuid4().hex)
            keytool = shutil.which("keytool")
            if keytool is None:
                raise BrokerError("keytool (part of Java) is needed for the TLS listener")
            common = [keytool, "-keystore", str(keystore), "-storepass", password_file.read_text()]
            for args in (
                [
                    "-genkeypair",
                    "-alias",
                    "broker",
                    "-keyalg",
                    "EC",
                    "-groupname",
                    "secp256r1",
                    "-validity",
                    "30",
                    "-dname",
                    "CN=localhost",
                    "-ext",
                    "san=dns:localhost,ip:127.0.0.1",
                    "-storetype",
                    "PKCS12",
                ],
                ["-exportcert", "-rfc", "-alias", "broker", "-file", str(self.ca_file)],
            ):
                done = subprocess.run([*common, *args], capture_output=True, text=True, check=False)
                if done.returncode != 0:
                    raise BrokerError(f"keytool failed: {done.stdout}{done.stderr}".strip())
        return {"keystore": str(keystore), "password": password_file.read_text()}

    def _format(self, java: str, config: Path) -> None:
        if (self.state_dir / "data" / "meta.properties").exists():
            return
        cluster_id = _cluster_id()
        cmd = [
            java,
            *self._jvm_args(),
            "kafka.tools.StorageTool",
            "format",
            "-t",
            cluster_id,
            "-c",
            str(config),
        ]
        for name, password in self.secured.users if self.secured is not None else ():
            cmd += ["--add-scram", f"SCRAM-SHA-512=[name={name},password={password}]"]
        done = subprocess.run(cmd, capture_output=True, text=True, check=False)
        if done.returncode != 0:
            raise BrokerError(
                f"formatting {self.state_dir / 'data'} failed: {done.stdout}{done.stderr}".strip()
            )

    def _wait_started(self, proc: subprocess.Popen[bytes], offset: int, timeout: float) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if proc.poll() is not None:
                self._pid_file.unlink(missing_ok=True)
                raise BrokerError(
                    f"broker exited with {proc.returncode}; see {self.log_file} "
                    f"and {self.state_dir / 'broker.out'}"
                )
            if self._log_since(offset).find(STARTED_LINE) >= 0 and _accepts(self.port):
                return
            time.sleep(0.2)
        raise BrokerError(f"broker did not start within {timeout:.0f}s; see {self.log_file}")

    def _log_since(self, offset: int) -> str:
        try:
            with open(self.log_file, "rb") as log:
                log.seek(offset)
                return log.read().decode(errors="replace")
        except FileNotFoundError:
            return ""


def _java() -> str:
    java = shutil.which("java")
    if java is None:
        raise BrokerError(
            "Java 17+ is needed for the embedded broker: install it "
            "(apt-get install openjdk-17-jre-headless)"
        )
    out = subprocess.run([java, "-version"], capture_output=True, text=True, check=False)
    match = re.search(r'version "(\d+)', out.stderr + out.stdout)
    if match is None or int(match.group(1)) < 17:
        raise BrokerError(
            "Java 17+ is needed for the embedded broker; found "
            f"{(out.stderr or out.stdout).splitlines()[:1]}"
        )
    return java


def _run_with_progress(cmd: list[str]) -> None:
    """Run Maven; a bar counts the files it downloaded (how many is not known ahead)."""
    fetched = 0
    tail: list[str] = []
    with (
        progress_bar("fetching Kafka", unit="files") as bar,
        subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True) as p,
    ):
        assert p.stdout is not None
        for line in p.stdout:
            tail = [*tail[-30:], line.rstrip()]
            if "Downloaded from" in line:
                fetched += 1
                bar.update(fetched)
    if p.returncode != 0:
        raise BrokerError("Maven could not resolve Kafka:\n" + "\n".join(tail))


def _accepts(port: int) -> bool:
    with socket.socket() as sock:
        sock.settimeout(0.5)
        return sock.connect_ex(("localhost", port)) == 0


def _cluster_id() -> str:
    """A random KRaft cluster id (a base64 UUID) that the storage tool won't read as an option."""
    while True:
        cluster_id = base64.urlsafe_b64encode(uuid.uuid4().bytes).rstrip(b"=").decode()
        if not cluster_id.startswith("-"):  # about 1 in 64 would
            return cluster_id
