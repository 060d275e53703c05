"""The rendered k8s/ overlays, with the look-ups the manifest tests share."""

from __future__ import annotations

import json
import math
import re
import subprocess
from dataclasses import dataclass
from fractions import Fraction
from functools import cache
from pathlib import Path
from typing import Any

import jsonschema
import yaml
from tools import kustomize

ROOT = Path(__file__).resolve().parents[1]
K8S = ROOT / "k8s"
CRD_SCHEMAS = Path(__file__).parent / "crd-schemas"
TARGETS = {"base": K8S / "base", "dev": K8S / "overlays" / "dev", "prod": K8S / "overlays" / "prod"}
OVERLAYS = ("dev", "prod")

Doc = dict[str, Any]


def crd_schema_path(doc: Doc) -> Path:
    group, _, version = doc["apiVersion"].rpartition("/")
    return CRD_SCHEMAS / f"{group}_{version}_{doc['kind']}.json"


def is_custom(doc: Doc) -> bool:
    """Whether the kind comes from an operator's CRD rather than Kubernetes itself."""
    group = doc["apiVersion"].rpartition("/")[0]
    return group.endswith((".strimzi.io", "keda.sh", "monitoring.coreos.com"))


def crd_errors(doc: Doc) -> list[str]:
    schema = json.loads(crd_schema_path(doc).read_text())
    validator = jsonschema.Draft202012Validator(schema)
    return [
        f"{'/'.join(map(str, e.absolute_path))}: {e.message}" for e in validator.iter_errors(doc)
    ]


@dataclass(frozen=True)
class Rendered:
    name: str
    docs: list[Doc]

    def of_kind(self, kind: str) -> list[Doc]:
        return [d for d in self.docs if d["kind"] == kind]

    def find(self, kind: str, name: str) -> Doc | None:
        return next((d for d in self.of_kind(kind) if d["metadata"]["name"] == name), None)

    def one(self, kind: str, name: str) -> Doc:
        doc = self.find(kind, name)
        assert doc is not None, f"{self.name}: no {kind} {name!r}"
        return doc

    def workloads(self) -> list[Doc]:
        return [d for d in self.docs if d["kind"] in ("StatefulSet", "Deployment")]

    def config(self) -> dict[str, str]:
        return dict(self.one("ConfigMap", "likestream-config")["data"])

    def pods_matching(self, selector: dict[str, str]) -> list[Doc]:
        """Workloads whose pod template carries every label of ``selector``."""
        return [
            w
            for w in self.workloads()
            if selector.items() <= w["spec"]["template"]["metadata"]["labels"].items()
        ]


def render(directory: Path) -> list[Doc]:
    """What ``kustomize build directory`` produces: the real renderer, as ``kubectl
    apply -k`` would."""
    out = subprocess.run(
        [kustomize(), "build", str(directory)],
        capture_output=True,
        text=True,
        check=True,
        timeout=120,
    ).stdout
    return [d for d in yaml.safe_load_all(out) if d]


@cache
def rendered(target: str) -> Rendered:
    return Rendered(target, render(TARGETS[target]))


def container(workload: Doc) -> Doc:
    containers = workload["spec"]["template"]["spec"]["containers"]
    assert len(containers) == 1, f"{workload['metadata']['name']}: one container expected"
    return dict(containers[0])


def container_port(workload: Doc, port: int | str) -> int:
    """A probe's or Service's port (a number or a container port's name) as a number."""
    if isinstance(port, int):
        return port
    named = {p["name"]: p["containerPort"] for p in container(workload).get("ports", [])}
    assert port in named, f"{workload['metadata']['name']}: no container port named {port!r}"
    return int(named[port])


_REF = re.compile(r"\$\(([A-Za-z_][A-Za-z0-9_]*)\)")


def cpu_cores(quantity: str | int | float) -> Fraction:
    """A CPU quantity (``2``, ``1.5``, ``500m``) in cores."""
    text = str(quantity)
    return Fraction(text[:-1]) / 1000 if text.endswith("m") else Fraction(text)


def resource_field(workload: Doc, ref: Doc) -> int:
    """What the kubelet puts in an env var of a CPU ``resourceFieldRef``: the container's
    request or limit divided by the divisor, rounded up. A limit that is not set would
    be the node's allocatable CPU, which the manifests must not depend on."""
    kind, _, resource = ref["resource"].partition(".")
    assert resource == "cpu", f"unexpected resourceFieldRef {ref}"
    spec = container(workload)
    assert ref.get("containerName", spec["name"]) == spec["name"]
    value = spec.get("resources", {}).get(kind, {}).get("cpu")
    assert value is not None, f"{ref['resource']} is not set: the node's CPU would be used"
    return math.ceil(cpu_cores(value) / cpu_cores(ref.get("divisor", "1")))


def pod_env(target: Rendered, workload: Doc, pod_name: str, secret: str) -> dict[str, str]:
    """The environment the kubelet would give the container of ``pod_name``.

    envFrom first, then env in order; ``$(VAR)`` expands from what is defined so far,
    as Kubernetes does (an unknown reference stays as it is).
    """
    env: dict[str, str] = {}
    spec = container(workload)
    for source in spec.get("envFrom", []):
        env.update(target.one("ConfigMap", source["configMapRef"]["name"])["data"])
    for var in spec.get("env", []):
        if "value" in var:
            env[var["name"]] = _REF.sub(lambda m: env.get(m[1], m[0]), var["value"])
        elif var["valueFrom"].get("fieldRef", {}).get("fieldPath") == "metadata.name":
            env[var["name"]] = pod_name
        elif "resourceFieldRef" in var["valueFrom"]:
            env[var["name"]] = str(resource_field(workload, var["valueFrom"]["resourceFieldRef"]))
        elif "secretKeyRef" in var["valueFrom"]:
            ref = var["valueFrom"]["secretKeyRef"]
            found = target.find("Secret", ref["name"])
            env[var["name"]] = found["stringData"][ref["key"]] if found else secret
        else:
            raise AssertionError(f"unexpected env source {var}")
    return env
