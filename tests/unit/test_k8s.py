"""Offline checks of k8s/: every kind against its schema, and the manifests against the app.

The overlays are rendered by the real kustomize (``make tools`` builds it). Core kinds
are validated strictly against the Kubernetes JSON schemas of ``kubernetes-validate``,
the operators' kinds against the CRD schemas in ``tests/crd-schemas``.
"""

from __future__ import annotations

import copy
import math
import os
import re
import shlex
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import kubernetes_validate
import pytest
import yaml
from fakes import State, web_app
from locks import BUILD_LOCK, RUNTIME_LOCK, read_lock
from manifests import (
    K8S,
    OVERLAYS,
    ROOT,
    TARGETS,
    Doc,
    Rendered,
    container,
    container_port,
    cpu_cores,
    crd_errors,
    crd_schema_path,
    is_custom,
    pod_env,
    rendered,
)

from likestream.config._settings import ENV_PREFIX, Settings, SettingsError, load_settings
from likestream.kafka._topics import topic_specs
from likestream.runtime._credentials import token_policy
from likestream.runtime._secret import internal_secret, signing_secret
from likestream.web._page import dev_routes
from likestream.web._reads import FORWARDED
from likestream.web._replica import _BLOCK_CACHE, _WRITE_BUFFER

# The oldest Kubernetes the manifests support, and the newest the package knows.
KUBE_VERSIONS = ("1.29", kubernetes_validate.latest_version())
MiB = 1 << 20
# Python, faust, aiohttp and the Kafka clients of one worker, RocksDB aside.
PROCESS_BASELINE = 256 * MiB
# Every process's replica of like-counts (web/_replica.py): RocksDB's block cache and
# two memtables in memory, and its count cache (LIKESTREAM_COUNT_CACHE_ITEMS of about
# 200 bytes); on disk about 50 bytes per item (measured with UUID item ids), twice that
# while RocksDB compacts.
REPLICA_ROCKSDB = _BLOCK_CACHE + 2 * _WRITE_BUFFER
COUNT_BYTES = 200
REPLICA_DISK_BYTES_PER_ITEM = 2 * 50
# The items a gateway's state volume is sized for (k8s/base/gateway.yaml, README).
GATEWAY_ITEMS = 5_000_000
# A gateway process: about 75 MiB idle, its replica, and its live connections (the
# bench's idle scenario: 19.4 KiB each); and the supervisor of a gateway of several
# processes.
GATEWAY_BASE = 96 * MiB
CONNECTION_BYTES = 20 * 1024
GATEWAY_SUPERVISOR = 64 * MiB


@pytest.fixture
def clean_env(monkeypatch: pytest.MonkeyPatch) -> pytest.MonkeyPatch:
    """No LIKESTREAM_* from the test's own environment leaks into load_settings()."""
    for name in os.environ:
        if name.startswith(ENV_PREFIX):
            monkeypatch.delenv(name)
    return monkeypatch


@pytest.fixture
def defaults(clean_env: pytest.MonkeyPatch) -> Settings:
    return load_settings()


def web_routes() -> set[str]:
    """Paths of likestream.web's route table, as the running app registers them."""
    return {r.canonical for r in web_app(State()).router.resources()}


# -- schemas -----------------------------------------------------------------------


def _core_errors(doc: Doc, version: str) -> list[str]:
    try:
        kubernetes_validate.validate(doc, version, strict=True)
    except kubernetes_validate.ValidationError as exc:
        return [f"{'/'.join(map(str, exc.path))}: {exc.message}"]
    return []


def _errors(doc: Doc) -> list[str]:
    if is_custom(doc):
        return crd_errors(doc)
    return [e for v in KUBE_VERSIONS for e in _core_errors(doc, v)]


@pytest.mark.parametrize("version", KUBE_VERSIONS)
@pytest.mark.parametrize("target", TARGETS)
def test_core_kinds_are_valid_kubernetes(target: str, version: str) -> None:
    core = [d for d in rendered(target).docs if not is_custom(d)]
    assert len(core) >= 10
    # A kind without a schema raises SchemaNotFoundError: it fails the test too.
    errors = {
        f"{d['kind']}/{d['metadata']['name']}": e for d in core if (e := _core_errors(d, version))
    }
    assert errors == {}


@pytest.mark.parametrize("target", TARGETS)
def test_custom_kinds_match_their_crds(target: str) -> None:
    custom = [d for d in rendered(target).docs if is_custom(d)]
    kinds = {d["kind"] for d in custom}
    assert {"Kafka", "KafkaNodePool", "KafkaTopic"} <= kinds
    for doc in custom:
        assert crd_schema_path(doc).is_file(), f"no schema for {doc['apiVersion']} {doc['kind']}"
    errors = {f"{d['kind']}/{d['metadata']['name']}": e for d in custom if (e := crd_errors(d))}
    assert errors == {}


def _misspell_probe(doc: Doc) -> None:
    c = doc["spec"]["template"]["spec"]["containers"][0]
    c["readinesProbe"] = c.pop("readinessProbe")


DELETE = object()


def _set(path: str, value: Any) -> Callable[[Doc], None]:
    def mutate(doc: Doc) -> None:
        *parents, last = path.split("/")
        node: Any = doc
        for part in parents:
            node = node[int(part)] if part.isdigit() else node[part]
        if value is DELETE:
            del node[int(last) if last.isdigit() else last]
        elif isinstance(node, list):
            node[int(last)] = value
        else:
            node[last] = value

    return mutate


MISTAKES: dict[str, tuple[str, str, Callable[[Doc], None]]] = {
    "misspelt probe": ("StatefulSet", "likestream-worker", _misspell_probe),
    "port as text": ("Service", "likestream-gateway", _set("spec/ports/0/port", "6066")),
    "hpa floor as text": (
        "HorizontalPodAutoscaler",
        "likestream-gateway",
        _set("spec/minReplicas", "2"),
    ),
    "no topic partitions": ("KafkaTopic", "likes", _set("spec/partitions", 0)),
    "misspelt topic field": ("KafkaTopic", "likes", _set("spec/partition", 8)),
    "listener without tls": ("Kafka", "likestream", _set("spec/kafka/listeners/0/tls", DELETE)),
    "unknown node role": ("KafkaNodePool", "broker", _set("spec/roles", ["leader"])),
    "pool without storage": ("KafkaNodePool", "controller", _set("spec/storage", DELETE)),
    "lag threshold as number": (
        "ScaledObject",
        "likestream-worker",
        _set("spec/triggers/0/metadata/lagThreshold", 5000),
    ),
    "no scale target": ("ScaledObject", "likestream-worker", _set("spec/scaleTargetRef", DELETE)),
    "bad scrape interval": (
        "ServiceMonitor",
        "likestream",
        _set("spec/endpoints/0/interval", "15 s"),
    ),
}


@pytest.mark.parametrize("mistake", MISTAKES)
def test_validation_catches_mistakes(mistake: str) -> None:
    kind, name, mutate = MISTAKES[mistake]
    doc = copy.deepcopy(rendered("prod").one(kind, name))
    assert _errors(doc) == []
    mutate(doc)
    assert _errors(doc) != []


# -- agreement with the app ------------------------------------------------------------


def _env_names(target: Rendered) -> Iterator[str]:
    yield from target.config()
    for workload in target.workloads():
        yield from (var["name"] for var in container(workload).get("env", []))


@pytest.mark.parametrize("target", OVERLAYS)
def test_env_names_are_settings(target: str) -> None:
    names = set(_env_names(rendered(target)))
    assert {
        "LIKESTREAM_INSTANCE_ID",
        "LIKESTREAM_ADVERTISED_URL",
        "LIKESTREAM_INTERNAL_SECRET",
    } <= names
    unknown = {n for n in names if n.removeprefix(ENV_PREFIX).lower() not in Settings.model_fields}
    assert {n for n in names if not n.startswith(ENV_PREFIX)} | unknown == set()


@pytest.mark.parametrize("target", OVERLAYS)
def test_settings_load_from_each_pods_env(
    target: str, clean_env: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    r = rendered(target)
    for workload in r.workloads():
        pod = f"{workload['metadata']['name']}-0"
        env = pod_env(r, workload, pod, secret="0123456789abcdef" * 3)  # a strong one
        for name, value in with_stand_ins(r, workload, env, tmp_path).items():
            clean_env.setenv(name, value)
        settings = load_settings()  # every value passes the app's own validation
        assert settings.env == target
        # ...and the start-up checks of the credentials, all but reading the JWK Set.
        token_policy(settings)
        internal_secret(settings)
        if target == "prod":
            assert settings.jwks_url is not None
            assert settings.jwks_url.startswith("https://")
            assert settings.secret is None  # no pod holds a key that signs tokens
        else:
            assert signing_secret(settings) is not None  # /dev/token signs with it
        mounts = {m["mountPath"]: m["name"] for m in container(workload)["volumeMounts"]}
        assert str(settings.data_dir) in mounts, "LIKESTREAM_DATA_DIR is not a mounted volume"
        if workload["kind"] == "StatefulSet":
            service = workload["spec"]["serviceName"]
            assert settings.instance_id == pod
            assert settings.advertised_url == f"http://{pod}.{service}:{settings.web_port}"
            claims = {t["metadata"]["name"] for t in workload["spec"]["volumeClaimTemplates"]}
            assert mounts[str(settings.data_dir)] in claims, "RocksDB is not on the pod's volume"
        for name in env:
            clean_env.delenv(name)


@pytest.mark.parametrize("target", OVERLAYS)
def test_ports_are_the_web_port(target: str, defaults: Settings) -> None:
    r, port = rendered(target), defaults.web_port
    assert r.config()["LIKESTREAM_WEB_PORT"] == str(port)
    for workload in r.workloads():
        assert [p["containerPort"] for p in container(workload)["ports"]] == [port]
    for service in r.of_kind("Service"):
        backends = r.pods_matching(service["spec"]["selector"])
        assert backends, f"Service {service['metadata']['name']} selects no pods"
        for p in service["spec"]["ports"]:
            assert p["port"] == port
            assert {container_port(w, p["targetPort"]) for w in backends} == {port}
    for policy in r.of_kind("NetworkPolicy"):
        for rule in policy["spec"]["ingress"]:
            assert [p["port"] for p in rule["ports"]] == [port]


@pytest.mark.parametrize("target", OVERLAYS)
def test_probes_and_scrapes_use_the_web_routes(target: str, defaults: Settings) -> None:
    r, routes = rendered(target), web_routes()
    for workload in r.workloads():
        c = container(workload)
        assert c["livenessProbe"]["httpGet"]["path"] == "/healthz"
        assert c["readinessProbe"]["httpGet"]["path"] == "/readyz"
        for probe in ("startupProbe", "livenessProbe", "readinessProbe"):
            if probe in c:
                get = c[probe]["httpGet"]
                assert get["path"] in routes
                assert container_port(workload, get["port"]) == defaults.web_port
    for monitor in r.of_kind("ServiceMonitor"):
        services = [
            s
            for s in r.of_kind("Service")
            if monitor["spec"]["selector"]["matchLabels"].items() <= s["metadata"]["labels"].items()
        ]
        assert {s["metadata"]["name"] for s in services} == {
            "likestream-worker",
            "likestream-gateway",
        }
        for endpoint in monitor["spec"]["endpoints"]:
            assert endpoint["path"] == "/metrics"
            assert endpoint["path"] in routes
            for s in services:
                assert endpoint["port"] in {p["name"] for p in s["spec"]["ports"]}


def _exposed(ingress: Doc, route: str) -> bool:
    for rule in ingress["spec"]["rules"]:
        for p in rule["http"]["paths"]:
            if p["pathType"] == "Exact" and route == p["path"]:
                return True
            prefix = p["path"].rstrip("/")
            if p["pathType"] == "Prefix" and (route == prefix or route.startswith(prefix + "/")):
                return True
    return False


@pytest.mark.parametrize("target", OVERLAYS)
def test_ingress_serves_the_api_not_the_operations(target: str) -> None:
    r = rendered(target)
    [ingress] = r.of_kind("Ingress")
    api = {route for route in web_routes() if route.startswith(("/items", "/likes"))}
    assert api
    assert all(_exposed(ingress, route) for route in api)
    for route in ("/metrics", "/healthz", "/readyz", "/status"):
        assert not _exposed(ingress, route), f"{route} is public"
    for rule in ingress["spec"]["rules"]:
        for p in rule["http"]["paths"]:
            backend = p["backend"]["service"]
            service = r.one("Service", backend["name"])
            assert backend["port"]["name"] in {x["name"] for x in service["spec"]["ports"]}


def _topics(r: Rendered) -> dict[str, Doc]:
    return {t["spec"].get("topicName", t["metadata"]["name"]): t for t in r.of_kind("KafkaTopic")}


def _changelogs(settings: Settings) -> dict[str, Any]:
    """The changelog topics faust declares for the app of likestream/runtime/_faust_app.py."""
    from likestream.domain._tokens import Tokens
    from likestream.runtime._credentials import Credentials
    from likestream.runtime._faust_app import build

    app = build(settings, Credentials(Tokens("x" * 32), "y" * 32)).app
    return {t.changelog_topic.get_topic_name(): t.changelog_topic for t in app.tables.values()}


@pytest.mark.parametrize("target", OVERLAYS)
def test_topics_are_the_settings_topics(target: str, defaults: Settings) -> None:
    r = rendered(target)
    config = r.config()
    assert config["LIKESTREAM_TOPIC"] == defaults.topic
    assert config["LIKESTREAM_COUNTS_TOPIC"] == defaults.counts_topic
    assert config["LIKESTREAM_TRENDING_TOPIC"] == defaults.trending_topic
    assert config["LIKESTREAM_PARTITIONS"] == str(defaults.partitions)
    assert config["LIKESTREAM_APP_ID"] == defaults.app_id
    topics = _topics(r)
    specs = topic_specs(defaults)
    assert {s.name for s in specs} <= set(topics)
    for spec in specs:
        kafka_topic = topics[spec.name]["spec"]
        assert kafka_topic["partitions"] == spec.partitions == defaults.partitions
        assert spec.config.items() <= kafka_topic.get("config", {}).items()
    for topic in topics.values():
        assert topic["spec"]["replicas"] == int(config["LIKESTREAM_REPLICATION"])


@pytest.mark.parametrize("target", OVERLAYS)
def test_changelog_topics_are_what_faust_declares(
    target: str, tmp_path: Path, clean_env: pytest.MonkeyPatch
) -> None:
    changelogs = _changelogs(load_settings(data_dir=str(tmp_path)))
    assert "likestream-state-changelog" in changelogs
    topics = _topics(rendered(target))
    app_topics = {s.name for s in topic_specs(load_settings())}
    assert set(topics) == app_topics | set(changelogs), "a topic too many or too few"
    for name, topic in changelogs.items():
        declared = topics[name]["spec"]
        assert declared["partitions"] == topic.partitions
        policy = declared["config"].get("cleanup.policy", "delete")
        assert (policy == "compact") == bool(topic.compacting), name


@pytest.mark.parametrize("target", OVERLAYS)
def test_replication_fits_the_kafka_cluster(target: str) -> None:
    r = rendered(target)
    pools = r.of_kind("KafkaNodePool")
    brokers = sum(p["spec"]["replicas"] for p in pools if "broker" in p["spec"]["roles"])
    controllers = sum(p["spec"]["replicas"] for p in pools if "controller" in p["spec"]["roles"])
    assert controllers % 2 == 1, "a KRaft quorum needs an odd number of controllers"
    replication = int(r.config()["LIKESTREAM_REPLICATION"])
    assert 1 <= replication <= brokers
    [kafka] = r.of_kind("Kafka")
    cfg = kafka["spec"]["kafka"]["config"]
    assert cfg["default.replication.factor"] == replication
    assert cfg["offsets.topic.replication.factor"] <= brokers
    assert cfg["auto.create.topics.enable"] is False
    # acks=all writes must survive one broker down wherever there is more than one.
    isr = cfg["min.insync.replicas"]
    assert isr == 1 if replication == 1 else isr < replication


@pytest.mark.parametrize("target", OVERLAYS)
def test_kafka_address_agrees_everywhere(target: str) -> None:
    r = rendered(target)
    address = r.config()["LIKESTREAM_KAFKA"]
    host, port = address.rsplit(":", 1)
    [kafka] = r.of_kind("Kafka")
    assert host == f"{kafka['metadata']['name']}-kafka-bootstrap"
    listener = [x for x in kafka["spec"]["kafka"]["listeners"] if x["port"] == int(port)]
    assert listener
    assert listener[0]["tls"] is True
    for pool in r.of_kind("KafkaNodePool") + r.of_kind("KafkaTopic"):
        assert pool["metadata"]["labels"]["strimzi.io/cluster"] == kafka["metadata"]["name"]
    for policy in r.of_kind("NetworkPolicy"):
        to_kafka = [
            rule
            for rule in policy["spec"]["egress"]
            if any(
                "strimzi.io/cluster" in t.get("podSelector", {}).get("matchLabels", {})
                for t in rule["to"]
            )
        ]
        assert [p["port"] for rule in to_kafka for p in rule["ports"]] == [int(port)]
    for scaled in r.of_kind("ScaledObject"):
        # KEDA's operator resolves a short name in its own namespace: fully qualified.
        namespace = scaled["metadata"]["namespace"]
        fqdn = f"{host}.{namespace}.svc:{port}"
        assert scaled["spec"]["triggers"][0]["metadata"]["bootstrapServers"] == fqdn


@pytest.mark.parametrize("target", OVERLAYS)
def test_worker_count_is_capped_by_partitions(target: str) -> None:
    r = rendered(target)
    config, partitions = r.config(), int(r.config()["LIKESTREAM_PARTITIONS"])
    workers = r.one("StatefulSet", "likestream-worker")
    scaled = r.find("ScaledObject", "likestream-worker")
    if scaled is None:  # dev: a fixed count
        assert 1 <= workers["spec"]["replicas"] <= partitions
        return
    assert "replicas" not in workers["spec"], "KEDA owns the count: do not pin it"
    spec = scaled["spec"]
    assert spec["scaleTargetRef"] == {
        "apiVersion": "apps/v1",
        "kind": "StatefulSet",
        "name": "likestream-worker",
    }
    assert 1 <= spec["minReplicaCount"] <= spec["maxReplicaCount"] == partitions
    [trigger] = spec["triggers"]
    assert trigger["type"] == "kafka"
    assert trigger["metadata"]["consumerGroup"] == config["LIKESTREAM_APP_ID"]
    assert trigger["metadata"]["topic"] == config["LIKESTREAM_TOPIC"]


def _sleep_seconds(c: Doc) -> int:
    command = c.get("lifecycle", {}).get("preStop", {}).get("exec", {}).get("command", [])
    return int(command[1]) if command[:1] == ["sleep"] else 0


@pytest.mark.parametrize("target", OVERLAYS)
def test_workers_stop_gracefully_and_keep_their_names(target: str) -> None:
    r = rendered(target)
    workers = r.one("StatefulSet", "likestream-worker")
    service = r.one("Service", workers["spec"]["serviceName"])
    assert service["spec"]["clusterIP"] == "None"  # headless: per-pod DNS
    assert service["spec"]["publishNotReadyAddresses"] is True
    assert workers["spec"]["podManagementPolicy"] == "Parallel"
    for workload in r.workloads():
        pod = workload["spec"]["template"]["spec"]
        # faust's graceful stop takes up to 30 s after the preStop pause.
        assert pod["terminationGracePeriodSeconds"] >= 30 + _sleep_seconds(container(workload))
    pdbs = r.of_kind("PodDisruptionBudget")
    for workload in r.workloads():
        labels = workload["spec"]["template"]["metadata"]["labels"]
        assert any(p["spec"]["selector"]["matchLabels"].items() <= labels.items() for p in pdbs)


def test_readme_states_the_gateway_size_of_the_manifest() -> None:
    # README "Gateway processes" documents a pod's memory and the items its volume holds.
    gateway = container(rendered("prod").one("Deployment", "likestream-gateway"))
    limit = _mebibytes(gateway["resources"]["limits"]["memory"]) // MiB
    readme = " ".join((ROOT / "README.md").read_text().split())
    assert f"{limit} MiB of memory" in readme
    assert f"{GATEWAY_ITEMS // 1_000_000} million items" in readme


def _mebibytes(quantity: str) -> int:
    number, unit = re.fullmatch(r"(\d+)(Mi|Gi)", quantity).groups()  # type: ignore[union-attr]
    return int(number) * (1024 if unit == "Gi" else 1) * MiB


@pytest.mark.parametrize("target", OVERLAYS)
def test_worker_memory_covers_rocksdb(target: str) -> None:
    r = rendered(target)
    config = r.config()
    per_db = int(config["LIKESTREAM_ROCKSDB_CACHE_MB"]) + 2 * int(
        config["LIKESTREAM_ROCKSDB_WRITE_BUFFER_MB"]
    )
    # One worker may hold every partition (the others down, or just one worker).
    rocksdb = int(config["LIKESTREAM_PARTITIONS"]) * per_db * MiB
    counts = int(config.get("LIKESTREAM_COUNT_CACHE_ITEMS") or 100_000)
    replica = REPLICA_ROCKSDB + counts * COUNT_BYTES
    resources = container(r.one("StatefulSet", "likestream-worker"))["resources"]
    limit = _mebibytes(resources["limits"]["memory"])
    assert limit >= rocksdb + replica + PROCESS_BASELINE
    assert _mebibytes(resources["requests"]["memory"]) <= limit


@pytest.mark.parametrize("target", OVERLAYS)
def test_gateway_processes_follow_the_cpu_limit(
    target: str, clean_env: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    r = rendered(target)
    gateway = r.one("Deployment", "likestream-gateway")
    spec = container(gateway)
    (var,) = [v for v in spec["env"] if v["name"] == "LIKESTREAM_GATEWAY_PROCS"]
    ref = var["valueFrom"]["resourceFieldRef"]
    assert ref["resource"] == "limits.cpu"
    assert cpu_cores(ref["divisor"]) == 1  # one process per core, rounded up
    assert ref.get("containerName", spec["name"]) == spec["name"]
    env = pod_env(r, gateway, "likestream-gateway-0", secret="s" * 32)
    for name, value in with_stand_ins(r, gateway, env, tmp_path).items():
        clean_env.setenv(name, value)
    procs = load_settings().gateway_procs
    assert procs == math.ceil(cpu_cores(spec["resources"]["limits"]["cpu"]))
    assert procs > 1  # the point: more cores per pod
    # Each process room for the live connections it may hold and its count cache, and
    # the supervisor: a full process refuses connections instead of being OOM-killed.
    env = {**r.config(), **{v["name"]: v.get("value") for v in spec.get("env", [])}}
    connections = int(env["LIKESTREAM_PUSH_MAX_CONNECTIONS"])
    counts = int(env.get("LIKESTREAM_COUNT_CACHE_ITEMS") or 100_000)
    assert connections > 0
    replica = REPLICA_ROCKSDB + counts * COUNT_BYTES
    process = GATEWAY_BASE + replica + connections * CONNECTION_BYTES
    limit = _mebibytes(spec["resources"]["limits"]["memory"])
    assert limit >= procs * process + GATEWAY_SUPERVISOR
    assert _mebibytes(spec["resources"]["requests"]["memory"]) <= limit
    # Each process's replica on disk, under LIKESTREAM_DATA_DIR: a volume past its
    # sizeLimit gets the pod evicted.
    data_dir = r.config()["LIKESTREAM_DATA_DIR"]
    [mount] = [m for m in spec["volumeMounts"] if m["mountPath"] == data_dir]
    [volume] = [
        v for v in gateway["spec"]["template"]["spec"]["volumes"] if v["name"] == mount["name"]
    ]
    disk = _mebibytes(volume["emptyDir"]["sizeLimit"])
    assert disk >= procs * GATEWAY_ITEMS * REPLICA_DISK_BYTES_PER_ITEM
    # Workers are one process each: the setting is the gateways' alone.
    for workload in r.workloads():
        if workload is not gateway:
            names = {v["name"] for v in container(workload).get("env", [])}
            assert "LIKESTREAM_GATEWAY_PROCS" not in names | set(r.config())


@pytest.mark.parametrize("target", OVERLAYS)
def test_every_selector_and_reference_resolves(target: str) -> None:
    r = rendered(target)
    for kind in ("PodDisruptionBudget", "NetworkPolicy"):
        for doc in r.of_kind(kind):
            selector = doc["spec"].get("selector", doc["spec"].get("podSelector"))
            assert r.pods_matching(selector["matchLabels"]), f"{kind} {doc['metadata']['name']}"
    for workload in r.workloads():
        assert workload["spec"]["selector"]["matchLabels"].items() <= (
            workload["spec"]["template"]["metadata"]["labels"].items()
        )
        assert r.find("ServiceAccount", workload["spec"]["template"]["spec"]["serviceAccountName"])
    for hpa in r.of_kind("HorizontalPodAutoscaler") + r.of_kind("ScaledObject"):
        ref = hpa["spec"]["scaleTargetRef"]
        assert r.find(ref["kind"], ref["name"]), f"{hpa['kind']} targets nothing"


def test_secret_is_a_placeholder_in_dev_and_external_in_prod() -> None:
    dev, prod = rendered("dev"), rendered("prod")
    assert prod.of_kind("Secret") == [], "prod's signing key must not live in the repository"
    assert dev.config()["LIKESTREAM_ENV"] == "dev"
    assert prod.config()["LIKESTREAM_ENV"] == "prod"
    for r in (dev, prod):
        kafka_users = {u["metadata"]["name"] for u in r.of_kind("KafkaUser")}  # Strimzi's
        refs = [
            var["valueFrom"]["secretKeyRef"]
            for w in r.workloads()
            for var in container(w)["env"]
            if "secretKeyRef" in var.get("valueFrom", {})
            and var["valueFrom"]["secretKeyRef"]["name"] not in kafka_users
        ]
        names = [
            var["name"]
            for w in r.workloads()
            for var in container(w)["env"]
            if "secretKeyRef" in var.get("valueFrom", {})
            and var["valueFrom"]["secretKeyRef"]["name"] not in kafka_users
        ]
        # Every pod gets the internal secret; only dev's a token key (prod: the IdP's).
        assert names.count("LIKESTREAM_INTERNAL_SECRET") == len(r.workloads())
        tokens = len(r.workloads()) if r is dev else 0
        assert names.count("LIKESTREAM_SECRET") == tokens
        assert len(refs) == len(r.workloads()) + tokens  # ...and nothing else...
        assert all(not ref.get("optional", False) for ref in refs)  # ...or does not start
        for ref in refs:  # the same name and key in both, so prod's Secret is dev's shape
            assert ref["key"] in dev.one("Secret", ref["name"])["stringData"]


@pytest.mark.parametrize("target", OVERLAYS)
def test_containers_run_likestream_commands(target: str) -> None:
    from likestream.cli import _parser

    commands = set()
    for workload in rendered(target).workloads():
        args = container(workload)["args"]
        commands.add(_parser().parse_args(args).command)
    assert commands == {"worker", "gateway"}


def test_images_are_pinned() -> None:
    for target, expected in (("dev", "likestream:dev"), ("prod", "registry.example.com/")):
        for workload in rendered(target).workloads():
            image = container(workload)["image"]
            assert image.startswith(expected)
            assert not image.endswith(":latest")


# -- the image ----------------------------------------------------------------------------


def _dockerfile() -> list[tuple[str, str]]:
    text = (ROOT / "Dockerfile").read_text().replace("\\\n", " ")
    lines = [line.strip() for line in text.splitlines()]
    return [
        (word.upper(), rest.strip())
        for line in lines
        if line and not line.startswith("#")
        for word, _, rest in [line.partition(" ")]
    ]


def test_dockerfile_builds_a_non_root_image_of_the_app(defaults: Settings) -> None:
    instructions = _dockerfile()
    stages = [rest for word, rest in instructions if word == "FROM"]
    assert len(stages) >= 2
    assert all(s.startswith("python:3.11-slim") for s in stages)
    final = instructions[max(i for i, (w, _) in enumerate(instructions) if w == "FROM") :]
    runtime = {word: rest for word, rest in final}
    assert runtime["EXPOSE"] == str(defaults.web_port)
    assert yaml.safe_load(runtime["ENTRYPOINT"]) == ["likestream"]
    assert yaml.safe_load(runtime["CMD"]) == ["worker"]
    assert any(w == "COPY" and r.startswith("--from=") for w, r in final), "not multi-stage"
    uid = runtime["USER"].split(":")[0]
    assert uid.isdigit()
    assert uid != "0"
    for target in OVERLAYS:
        for workload in rendered(target).workloads():
            context = workload["spec"]["template"]["spec"]["securityContext"]
            assert context["runAsNonRoot"] is True
            assert context["runAsUser"] == int(uid)


def test_dockerignore_keeps_local_state_out_of_the_build() -> None:
    ignored = set((ROOT / ".dockerignore").read_text().split())
    assert {".venv", ".git", "data", "test-artifacts"} <= ignored


def with_stand_ins(r: Rendered, workload: Doc, env: dict[str, str], tmp: Path) -> dict[str, str]:
    """``env`` with each file a setting names, which a Secret volume of the pod holds,
    replaced by an empty stand-in here (the settings check that the file exists)."""
    out = dict(env)
    for name in ("LIKESTREAM_KAFKA_CA_FILE",):
        assert mounted_secret_file(r, workload, env[name]) is not None, name
        out[name] = str(tmp / "stand-in.pem")
        (tmp / "stand-in.pem").write_text("")
    return out


def mounted_secret_file(r: Rendered, workload: Doc, path: str) -> tuple[str, str] | None:
    """(Secret name, key) of the file at ``path`` in the workload's container, if a
    Secret volume puts it there."""
    volumes = {v["name"]: v for v in workload["spec"]["template"]["spec"]["volumes"]}
    for mount in container(workload)["volumeMounts"]:
        secret = volumes.get(mount["name"], {}).get("secret")  # not: claim templates
        if secret is None or not path.startswith(mount["mountPath"] + "/"):
            continue
        relative = path.removeprefix(mount["mountPath"] + "/")
        for item in secret.get("items", []):
            if item["path"] == relative:
                return secret["secretName"], item["key"]
    return None


def _acls(user: Doc) -> dict[tuple[str, str, str], set[str]]:
    return {
        (
            a["resource"]["type"],
            a["resource"]["name"],
            a["resource"].get("patternType", "literal"),
        ): set(a["operations"])
        for a in user["spec"]["authorization"]["acls"]
    }


@pytest.mark.parametrize("target", OVERLAYS)
def test_kafka_takes_only_tls_scram_users_with_their_roles_acls(target: str) -> None:
    """Issue 15's "Kafka is open": no plaintext listener, no anonymous client, each role
    only what it does (the integration test runs a worker and a gateway under these)."""
    r = rendered(target)
    config = r.config()
    [kafka] = r.of_kind("Kafka")
    cluster = kafka["metadata"]["name"]
    spec = kafka["spec"]["kafka"]
    assert spec["authorization"] == {"type": "simple"}
    assert "userOperator" in kafka["spec"]["entityOperator"]
    for listener in spec["listeners"]:
        assert listener["tls"] is True
        assert listener["authentication"] == {"type": "scram-sha-512"}
        # Strimzi's NetworkPolicy for the listener: each worker and gateway, and KEDA.
        peers = listener["networkPolicyPeers"]
        selected = [r.pods_matching(p["podSelector"]["matchLabels"]) for p in peers[:-1]]
        assert [[w["metadata"]["name"] for w in m] for m in selected] == [
            ["likestream-worker"],
            ["likestream-gateway"],
        ]
        assert peers[-1] == {
            "namespaceSelector": {"matchLabels": {"kubernetes.io/metadata.name": "keda"}}
        }

    topic, app = config["LIKESTREAM_TOPIC"], config["LIKESTREAM_APP_ID"]
    counts, trending = config["LIKESTREAM_COUNTS_TOPIC"], config["LIKESTREAM_TRENDING_TOPIC"]
    users = {u["metadata"]["name"]: u for u in r.of_kind("KafkaUser")}
    for user in users.values():
        assert user["metadata"]["labels"]["strimzi.io/cluster"] == cluster
        assert user["spec"]["authentication"] == {"type": "scram-sha-512"}
        assert all(a.get("type", "allow") == "allow" for a in user["spec"]["authorization"]["acls"])
    assert _acls(users["likestream-worker"]) == {
        ("topic", topic, "literal"): {"Read", "Describe"},
        ("group", app, "literal"): {"Read", "Describe"},
        ("topic", f"{app}-", "prefix"): {"Create", "Read", "Write", "Describe"},
        ("topic", counts, "literal"): {"Read", "Write", "Describe"},
        ("topic", trending, "literal"): {"Read", "Write", "Describe"},
        ("topic", f"{topic}.dlq", "literal"): {"Write", "Describe"},
    }
    assert _acls(users["likestream-gateway"]) == {
        ("topic", topic, "literal"): {"Write", "Describe"},
        ("topic", counts, "literal"): {"Read", "Describe"},
        ("topic", trending, "literal"): {"Read", "Describe"},
        ("group", app, "literal"): {"Describe"},
    }
    assert _acls(users["likestream-keda"]) == {
        ("topic", topic, "literal"): {"Describe"},
        ("group", app, "literal"): {"Describe"},
    }
    assert _acls(users["likestream-admin"]) == {  # likestream erase
        ("topic", topic, "literal"): {"Write", "Describe"},
        ("topic", f"{app}-", "prefix"): {"Read", "Describe"},
        ("group", app, "literal"): {"Describe"},
    }
    # No other topic starts with the changelog prefix: the prefix grants nothing else.
    assert not [t for t in (topic, f"{topic}.dlq", counts, trending) if t.startswith(f"{app}-")]

    for workload in r.workloads():
        role = workload["spec"]["template"]["metadata"]["labels"]["app.kubernetes.io/component"]
        env = pod_env(r, workload, "pod-0", secret="s" * 32)
        user = f"likestream-{role}"
        assert user in users
        assert env["LIKESTREAM_KAFKA_SECURITY_PROTOCOL"] == "SASL_SSL"
        assert env["LIKESTREAM_KAFKA_SASL_MECHANISM"] == "SCRAM-SHA-512"
        assert env["LIKESTREAM_KAFKA_USERNAME"] == user
        [password] = [
            v for v in container(workload)["env"] if v["name"] == "LIKESTREAM_KAFKA_PASSWORD"
        ]
        # The Secret the user operator writes for the user: its name, key `password`.
        assert password["valueFrom"]["secretKeyRef"] == {"name": user, "key": "password"}
        ca = mounted_secret_file(r, workload, env["LIKESTREAM_KAFKA_CA_FILE"])
        assert ca == (f"{cluster}-cluster-ca-cert", "ca.crt")


@pytest.mark.parametrize("target", OVERLAYS)
def test_keda_checks_lag_as_its_own_user_over_tls(target: str) -> None:
    r = rendered(target)
    [kafka] = r.of_kind("Kafka")
    cluster = kafka["metadata"]["name"]
    for scaled in r.of_kind("ScaledObject"):
        [trigger] = scaled["spec"]["triggers"]
        assert trigger["metadata"]["sasl"] == "scram_sha512"
        assert trigger["metadata"]["tls"] == "enable"
        auth = r.one("TriggerAuthentication", trigger["authenticationRef"]["name"])
        secrets = {
            ref["parameter"]: (ref["name"], ref["key"]) for ref in auth["spec"]["secretTargetRef"]
        }
        assert secrets == {
            "password": ("likestream-keda", "password"),
            "ca": (f"{cluster}-cluster-ca-cert", "ca.crt"),
        }
        [username] = auth["spec"]["configMapTargetRef"]
        assert username["parameter"] == "username"
        name = r.one("ConfigMap", username["name"])["data"][username["key"]]
        assert name == "likestream-keda"
        assert r.find("KafkaUser", name)
    if not r.of_kind("ScaledObject"):  # dev: no KEDA, and so no KEDA kinds to apply
        assert r.of_kind("TriggerAuthentication") == []


def _final_stage() -> list[tuple[str, str]]:
    instructions = _dockerfile()
    return instructions[max(i for i, (w, _) in enumerate(instructions) if w == "FROM") :]


def test_base_image_is_pinned_by_digest() -> None:
    # A tag moves; a digest names one multi-platform image index for good.
    stages = [rest for word, rest in _dockerfile() if word == "FROM"]
    assert len(stages) >= 2
    for stage in stages:
        assert re.fullmatch(r"python:3\.11-slim@sha256:[0-9a-f]{64}( AS \w+)?", stage), stage
    # The venv built in one stage runs in the other: the same Python, byte for byte.
    assert len({stage.split()[0] for stage in stages}) == 1


def _image_env() -> dict[str, str]:
    env: dict[str, str] = {}
    for word, rest in _final_stage():
        if word == "ENV":
            env |= dict(pair.split("=", 1) for pair in shlex.split(rest))
    return env


def _make_recipe(target: str) -> list[str]:
    lines = (ROOT / "Makefile").read_text().splitlines()
    start = next(i for i, line in enumerate(lines) if line.startswith(f"{target}:"))
    recipe = []
    for line in lines[start + 1 :]:
        if not line.startswith("\t"):
            break
        recipe.append(line)
    return [lines[start], *recipe]


def test_image_runs_in_prod_and_make_run_in_dev(clean_env: pytest.MonkeyPatch) -> None:
    image = {k: v for k, v in _image_env().items() if k.startswith(ENV_PREFIX)}
    for name, value in image.items():
        clean_env.setenv(name, value)
    with pytest.raises(SettingsError, match="LIKESTREAM_KAFKA_SECURITY_PROTOCOL"):
        load_settings()  # no start on a Kafka of unknown security
    clean_env.setenv("LIKESTREAM_KAFKA_SECURITY_PROTOCOL", "SASL_SSL")
    clean_env.setenv("LIKESTREAM_KAFKA_USERNAME", "u")
    clean_env.setenv("LIKESTREAM_KAFKA_PASSWORD", "p")
    settings = load_settings()
    assert settings.env == "prod"
    assert settings.dev_tokens is False  # POST /dev/token does not exist
    assert settings.web_host == "0.0.0.0"  # reached on the pod's address
    with pytest.raises(SettingsError, match="LIKESTREAM_SECRET"):
        signing_secret(settings)  # no start without a secret
    for name in [*image, "LIKESTREAM_KAFKA_SECURITY_PROTOCOL"]:
        clean_env.delenv(name)
    clean_env.delenv("LIKESTREAM_KAFKA_USERNAME")
    clean_env.delenv("LIKESTREAM_KAFKA_PASSWORD")
    # `make run` starts the worker with the settings' own defaults: dev.
    assert not any(ENV_PREFIX in line for line in _make_recipe("run"))
    assert load_settings().env == "dev"


@pytest.mark.parametrize("target", OVERLAYS)
def test_pods_listen_on_their_own_address(target: str) -> None:
    # Set by the manifests themselves: not left to the image or to the app's default
    # (loopback only, where a probe or a Service could not reach it).
    r = rendered(target)
    for workload in r.workloads():
        env = pod_env(r, workload, f"{workload['metadata']['name']}-0", secret="s" * 32)
        assert env["LIKESTREAM_WEB_HOST"] == "0.0.0.0", workload["metadata"]["name"]


def _pip(command: str) -> list[str]:
    """The arguments of a ``pip`` (any path to it) command, else nothing."""
    words = shlex.split(command)
    at = [i for i, word in enumerate(words) if word.rpartition("/")[2] == "pip"]
    return words[at[0] + 1 :] if at else []


def test_dockerfile_installs_only_hashed_locks() -> None:
    instructions = _dockerfile()
    copied = {word for w, rest in instructions if w == "COPY" for word in rest.split()}
    assert {"requirements.lock", "requirements-build.lock"} <= copied
    commands = [c for w, rest in instructions if w == "RUN" for c in rest.split("&&")]
    installs = [args for c in commands if (args := _pip(c))[:1] == ["install"]]
    # The build tools (hashed), then the runtime lock (hashed) built with those tools and
    # no isolated build that would fetch its own, then the package without dependencies.
    assert len(installs) == 3
    tools, runtime, package = installs
    assert {"--require-hashes", "requirements-build.lock"} <= set(tools)
    assert tools[tools.index("-r") + 1] == "requirements-build.lock"
    assert {"--require-hashes", "--no-build-isolation"} <= set(runtime)
    assert runtime[runtime.index("-r") + 1] == "requirements.lock"
    assert {"--no-deps", "--no-build-isolation"} <= set(package)
    assert package[-1] == "."
    # The build tools do not ship: those the runtime does not need are removed.
    [uninstall] = [args for c in commands if (args := _pip(c))[:1] == ["uninstall"]]
    build, needed = read_lock(BUILD_LOCK), read_lock(RUNTIME_LOCK)
    # setuptools stays: every venv of Python 3.11 has one.
    assert {a for a in uninstall[1:] if a != "-y"} == set(build) - set(needed) - {"setuptools"}


# -- the findings of issue 15 ---------------------------------------------------------


def test_dev_routes_its_token_endpoint_and_prod_does_not(
    clean_env: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    [path] = {route.path for route in dev_routes}  # type: ignore[attr-defined]
    for target, on in (("dev", True), ("prod", False)):
        r = rendered(target)
        [ingress] = r.of_kind("Ingress")
        assert _exposed(ingress, path) is on, target
        gateway = r.one("Deployment", "likestream-gateway")
        env = pod_env(r, gateway, "likestream-gateway-0", secret="s" * 32)
        for name, value in with_stand_ins(r, gateway, env, tmp_path).items():
            clean_env.setenv(name, value)
        assert load_settings().dev_tokens is on, target  # served where routed, only there
        for name in env:
            clean_env.delenv(name)


def test_logs_are_json_in_prod() -> None:
    assert rendered("prod").config()["LIKESTREAM_LOG_FORMAT"] == "json"
    assert rendered("dev").config()["LIKESTREAM_LOG_FORMAT"] == "plain"  # kubectl logs


def test_ingress_controller_strips_the_forwarding_header() -> None:
    # ingress-nginx's proxy-set-headers ConfigMap: a header set to "" is not passed on.
    docs = list(yaml.safe_load_all((K8S / "ingress-nginx" / "proxy-headers.yaml").read_text()))
    [headers] = docs
    assert _errors(headers) == []
    assert headers["metadata"]["namespace"] == "ingress-nginx"  # where the controller reads it
    assert headers["data"] == {FORWARDED: ""}
    # No snippet annotation: ingress-nginx refuses those with its default settings.
    for target in OVERLAYS:
        [ingress] = rendered(target).of_kind("Ingress")
        annotations = ingress["metadata"].get("annotations", {})
        assert not [a for a in annotations if a.endswith("-snippet")]


RUNBOOK = K8S / "RUNBOOK.md"


def _alerts(target: str) -> dict[str, Doc]:
    [rule] = rendered(target).of_kind("PrometheusRule")
    return {r["alert"]: r for g in rule["spec"]["groups"] for r in g["rules"] if "alert" in r}


def _anchors(markdown: str) -> set[str]:
    """GitHub's anchors of the headings of ``markdown``."""
    headings = re.findall(r"^#+\s+(.+?)\s*$", markdown, flags=re.MULTILINE)
    return {re.sub(r"[^\w\- ]", "", h).strip().lower().replace(" ", "-") for h in headings}


def test_every_alert_links_its_runbook_section() -> None:
    alerts = _alerts("prod")
    anchors = _anchors(RUNBOOK.read_text())
    for name, rule in alerts.items():
        url = rule["annotations"]["runbook_url"]
        page, _, anchor = url.partition("#")
        assert page.startswith("https://"), name
        assert page.endswith("/k8s/RUNBOOK.md"), name
        assert anchor == name.lower(), name
        assert anchor in anchors, f"{name}: no section {anchor}"
    # ...and the runbook has no section for an alert that does not exist.
    sections = re.findall(r"^## (Likestream\w+)$", RUNBOOK.read_text(), flags=re.MULTILINE)
    assert sorted(sections) == sorted(alerts)


def test_an_alert_fires_when_targets_are_down_or_gone() -> None:
    r = rendered("prod")
    scraped = {
        s["metadata"]["name"]
        for s in r.of_kind("Service")
        if r.one("ServiceMonitor", "likestream")["spec"]["selector"]["matchLabels"].items()
        <= s["metadata"]["labels"].items()
    }
    exprs = {name: " ".join(str(rule["expr"]).split()) for name, rule in _alerts("prod").items()}
    # prometheus-operator's job label is the Service's name.
    down = [e for e in exprs.values() if re.search(r"\bup\{job=~\"[^\"]+\"\}.*== 0$", e)]
    assert len(down) == 1
    jobs = re.search(r'job=~"([^"]+)"', down[0])[1].split("|")  # type: ignore[index]
    assert set(jobs) == scraped
    absent = [e for e in exprs.values() if "absent(up{" in e]
    assert len(absent) == 1
    assert set(re.findall(r'absent\(up\{job="([^"]+)"\}\)', absent[0])) == scraped


# Kafka versions each Strimzi operator release supports (strimzi.io/downloads, the
# releases' notes). Strimzi 0.52 (1.0) drops the v1beta2 API these manifests use.
STRIMZI_KAFKA = {
    "0.45": {"3.8.0", "3.8.1", "3.9.0"},
    "0.46": {"3.9.0", "4.0.0"},
    "0.47": {"3.9.0", "3.9.1", "4.0.0"},
    "0.48": {"4.0.0", "4.1.0"},
    "0.49": {"4.0.0", "4.0.1", "4.1.0", "4.1.1"},
    "0.50": {"4.0.0", "4.0.1", "4.1.0", "4.1.1"},
    "0.51": {"4.1.0", "4.1.1", "4.2.0"},
}


def test_the_documented_strimzi_supports_the_kafka_version() -> None:
    [kafka] = rendered("prod").of_kind("Kafka")
    version = kafka["spec"]["kafka"]["version"]
    named: set[str] = set()
    for doc in (ROOT / "README.md", K8S / "README.md"):
        for line in doc.read_text().splitlines():
            if "Strimzi" in line:
                named |= set(re.findall(r"\b0\.\d\d\b", line))
    assert named, "the docs name no Strimzi version"
    for release in named:
        assert version in STRIMZI_KAFKA.get(release, set()), f"Strimzi {release}, Kafka {version}"
    assert kafka["apiVersion"] == "kafka.strimzi.io/v1beta2"
