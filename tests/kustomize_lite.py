"""A small kustomize: renders k8s/ in the tests without the kustomize binary.

PyPI has no kustomize renderer (the ``kustomize`` package there builds manifests in
Python; it does not read kustomization.yaml), and the real one is a Go program. This
implements only what k8s/ uses, in kustomize's order, and refuses everything else,
so that it can never silently render something kustomize would render differently:

- ``resources``: files (multi-document YAML) and directories with a kustomization;
- ``patches``: JSON 6902 patches (``add``, ``remove``, ``replace``) with a ``target``
  selected by ``kind``/``name``/``group``/``version`` (anchored regular expressions,
  as in kustomize), and strategic-merge patches that only ``$patch: delete``;
- ``namespace``, ``replicas``, ``images``.

``tests/unit/test_k8s.py`` compares its output with ``kubectl kustomize`` wherever
that is installed.
"""

from __future__ import annotations

import copy
import re
from pathlib import Path
from typing import Any

import yaml

__all__ = ["UnsupportedKustomization", "render"]

Doc = dict[str, Any]

KNOWN_FIELDS = {"apiVersion", "kind", "resources", "namespace", "patches", "images", "replicas"}
# Kinds the namespace transformer leaves alone (the ones a kustomization could hold).
CLUSTER_SCOPED = {
    "APIService",
    "ClusterRole",
    "ClusterRoleBinding",
    "CustomResourceDefinition",
    "IngressClass",
    "MutatingWebhookConfiguration",
    "Namespace",
    "PersistentVolume",
    "PriorityClass",
    "StorageClass",
    "ValidatingWebhookConfiguration",
}
REPLICATED_KINDS = {"Deployment", "ReplicaSet", "ReplicationController", "StatefulSet"}


class UnsupportedKustomization(ValueError):
    """The kustomization uses something this renderer does not implement."""


def render(directory: Path) -> list[Doc]:
    """The resources ``kustomize build directory`` would produce, in input order."""
    path = directory / "kustomization.yaml"
    spec = yaml.safe_load(path.read_text())
    unknown = set(spec) - KNOWN_FIELDS
    if unknown:
        raise UnsupportedKustomization(f"{path}: unsupported fields {sorted(unknown)}")
    docs: list[Doc] = []
    for entry in spec.get("resources", []):
        source = (directory / entry).resolve()
        if source.is_dir():
            docs.extend(render(source))
        else:
            docs.extend(d for d in yaml.safe_load_all(source.read_text()) if d)
    _check_unique(docs, path)
    for patch in spec.get("patches", []):
        docs = _apply_patch(docs, patch, directory)
    if "namespace" in spec:
        for doc in docs:
            if doc["kind"] not in CLUSTER_SCOPED:
                doc["metadata"]["namespace"] = spec["namespace"]
    for replicas in spec.get("replicas", []):
        _set_replicas(docs, replicas)
    for image in spec.get("images", []):
        _set_image(docs, image)
    return docs


def _check_unique(docs: list[Doc], path: Path) -> None:
    seen: set[tuple[str, str, str | None]] = set()
    for doc in docs:
        key = (doc["kind"], doc["metadata"]["name"], doc["metadata"].get("namespace"))
        if key in seen:
            raise UnsupportedKustomization(f"{path}: {key} appears twice")
        seen.add(key)


# -- patches -------------------------------------------------------------------


def _apply_patch(docs: list[Doc], patch: Doc, directory: Path) -> list[Doc]:
    unknown = set(patch) - {"path", "patch", "target"}
    if unknown:
        raise UnsupportedKustomization(f"patch options {sorted(unknown)}")
    text = (directory / patch["path"]).read_text() if "path" in patch else patch["patch"]
    body = yaml.safe_load(text)
    if isinstance(body, list):
        if "target" not in patch:
            raise UnsupportedKustomization("a JSON 6902 patch needs a target")
        targets = [d for d in docs if _selected(d, patch["target"])]
        if not targets:
            raise UnsupportedKustomization(f"patch target {patch['target']} matches nothing")
        for doc in targets:
            for op in body:
                _json_patch_op(doc, op)
        return docs
    if isinstance(body, dict) and body.get("$patch") == "delete" and "target" not in patch:
        gone = [d for d in docs if _same_resource(d, body)]
        if not gone:
            raise UnsupportedKustomization(f"delete patch for {body['metadata']} matches nothing")
        return [d for d in docs if not any(d is g for g in gone)]
    raise UnsupportedKustomization("only JSON 6902 patches and `$patch: delete` are supported")


def _selected(doc: Doc, target: Doc) -> bool:
    unknown = set(target) - {"kind", "name", "group", "version"}
    if unknown:
        raise UnsupportedKustomization(f"target selectors {sorted(unknown)}")
    group, _, version = doc["apiVersion"].rpartition("/")
    actual = {"kind": doc["kind"], "name": doc["metadata"]["name"]}
    actual |= {"group": group, "version": version}
    return all(re.fullmatch(str(want), actual[key]) for key, want in target.items())


def _same_resource(doc: Doc, body: Doc) -> bool:
    return (
        doc["apiVersion"] == body["apiVersion"]
        and doc["kind"] == body["kind"]
        and doc["metadata"]["name"] == body["metadata"]["name"]
    )


def _pointer(path: str) -> list[str]:
    if not path.startswith("/"):
        raise UnsupportedKustomization(f"bad JSON pointer {path!r}")
    return [p.replace("~1", "/").replace("~0", "~") for p in path[1:].split("/")]


def _json_patch_op(doc: Doc, op: Doc) -> None:
    *parents, last = _pointer(op["path"])
    node: Any = doc
    for part in parents:
        node = node[int(part)] if isinstance(node, list) else node[part]
    kind = op["op"]
    if isinstance(node, list):
        if kind == "add":
            index = len(node) if last == "-" else int(last)
            node.insert(index, copy.deepcopy(op["value"]))
        elif kind == "replace":
            node[int(last)] = copy.deepcopy(op["value"])
        elif kind == "remove":
            del node[int(last)]
        else:
            raise UnsupportedKustomization(f"JSON patch op {kind!r}")
        return
    if kind == "add":
        node[last] = copy.deepcopy(op["value"])
    elif kind in ("replace", "remove"):
        if last not in node:  # RFC 6902: the target must exist
            raise UnsupportedKustomization(f"{kind} of missing {op['path']}")
        if kind == "replace":
            node[last] = copy.deepcopy(op["value"])
        else:
            del node[last]
    else:
        raise UnsupportedKustomization(f"JSON patch op {kind!r}")


# -- replicas and images --------------------------------------------------------------


def _set_replicas(docs: list[Doc], entry: Doc) -> None:
    matched = [
        d for d in docs if d["kind"] in REPLICATED_KINDS and d["metadata"]["name"] == entry["name"]
    ]
    if not matched:
        raise UnsupportedKustomization(f"replicas for {entry['name']!r} match nothing")
    for doc in matched:
        doc["spec"]["replicas"] = entry["count"]


def _set_image(docs: list[Doc], entry: Doc) -> None:
    unknown = set(entry) - {"name", "newName", "newTag"}
    if unknown:
        raise UnsupportedKustomization(f"image options {sorted(unknown)}")
    for container in _containers(docs):
        name, tag = _split_image(container["image"])
        if name != entry["name"]:
            continue
        if entry.get("newTag") is not None:
            tag = str(entry["newTag"])
        new = str(entry.get("newName", name))
        container["image"] = new if tag is None else f"{new}:{tag}"


def _split_image(image: str) -> tuple[str, str | None]:
    if "@" in image:
        raise UnsupportedKustomization(f"image digests ({image})")
    slash = image.rfind("/")
    colon = image.rfind(":")
    if colon > slash:  # a colon before the last slash is a registry port
        return image[:colon], image[colon + 1 :]
    return image, None


def _containers(node: Any) -> list[Doc]:
    found: list[Doc] = []
    if isinstance(node, dict):
        for key, value in node.items():
            if key in ("containers", "initContainers") and isinstance(value, list):
                found.extend(c for c in value if isinstance(c, dict) and "image" in c)
            else:
                found.extend(_containers(value))
    elif isinstance(node, list):
        for value in node:
            found.extend(_containers(value))
    return found
