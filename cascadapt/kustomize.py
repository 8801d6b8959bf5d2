"""The part of kustomize that k8s/ uses, so manifests can be built and validated where no kubectl is installed.

    objects = build("k8s/overlays/prod")        # the objects `kubectl kustomize k8s/overlays/prod` gives
    errors = validate(objects, "1.33.0")        # kubernetes-validate --strict; [] when all pass

Supported kustomization fields: resources (files and folders), namespace, labels (pairs, on metadata
only), images (newName, newTag), replicas, patches (JSON 6902, targeted by kind and name). Anything
else is an error that names the field, never silently ignored. tests/test_k8s.py checks that build()
equals kubectl's output wherever kubectl is installed.
"""

from __future__ import annotations

import copy
from pathlib import Path

import yaml

SUPPORTED = {"apiVersion", "kind", "resources", "namespace", "labels", "images", "replicas", "patches"}
CLUSTER_SCOPED = {"Namespace", "ClusterRole", "ClusterRoleBinding", "PersistentVolume", "StorageClass", "PriorityClass", "CustomResourceDefinition"}
SCALABLE = {"Deployment", "StatefulSet", "ReplicaSet", "ReplicationController"}  # what `replicas:` may set
POD_TEMPLATE_PATHS = [("spec", "template", "spec"), ("spec", "jobTemplate", "spec", "template", "spec")]


class KustomizeError(ValueError):
    pass


def build(folder: str | Path) -> list[dict]:
    """The objects a kustomization folder renders to, Namespaces first."""
    folder = Path(folder)
    path = folder / "kustomization.yaml"
    if not path.is_file():
        raise KustomizeError(f"{folder}: no kustomization.yaml")
    spec = yaml.safe_load(path.read_text()) or {}
    unknown = set(spec) - SUPPORTED
    if unknown:
        raise KustomizeError(f"{path}: field(s) {sorted(unknown)} not supported here (supported: {sorted(SUPPORTED)})")
    objects = []
    for entry in spec.get("resources", []):
        source = folder / entry
        objects += build(source) if source.is_dir() else _read_objects(source)
    for obj in objects:
        _apply_labels(obj, spec.get("labels", []), path)
        _apply_images(obj, spec.get("images", []))
        if "namespace" in spec:
            _apply_namespace(obj, spec["namespace"])
    for replica in spec.get("replicas", []):
        _target(objects, SCALABLE, replica["name"], path)["spec"]["replicas"] = replica["count"]
    for patch in spec.get("patches", []):
        kind = patch["target"].get("kind")
        target = _target(objects, {kind} if kind else None, patch["target"]["name"], path)
        for op in yaml.safe_load(patch["patch"]):
            _json6902(target, op, path)
    return sorted(objects, key=lambda o: o["kind"] != "Namespace")


def validate(objects: list[dict], kubernetes_version: str) -> list[str]:
    """kubernetes-validate --strict of every object: one message per failing object."""
    import kubernetes_validate

    errors = []
    for obj in objects:
        try:
            kubernetes_validate.validate(obj, kubernetes_version, strict=True)
        except kubernetes_validate.ValidationError as exc:
            where = "/".join(str(p) for p in exc.path)
            errors.append(f"{obj['kind']}/{obj['metadata']['name']}: {where}: {exc.message}")
    return errors


def _read_objects(path: Path) -> list[dict]:
    try:
        return [d for d in yaml.safe_load_all(path.read_text()) if d]
    except (OSError, yaml.YAMLError) as exc:
        raise KustomizeError(f"{path}: {exc}") from None


def _apply_labels(obj: dict, labels: list[dict], path: Path) -> None:
    for entry in labels:
        if entry.get("includeSelectors") or entry.get("includeTemplates"):
            raise KustomizeError(f"{path}: labels with includeSelectors/includeTemplates are not supported here")
        obj["metadata"].setdefault("labels", {}).update(entry["pairs"])


def _apply_images(obj: dict, images: list[dict]) -> None:
    for pod in _pod_specs(obj):
        for container in pod.get("containers", []) + pod.get("initContainers", []):
            name, tag = _split_image(container["image"])
            for image in images:
                if image["name"] == name:
                    container["image"] = f"{image.get('newName', name)}:{image.get('newTag', tag or 'latest')}"


def _split_image(image: str) -> tuple[str, str]:
    """"host:5000/app:1.2" -> ("host:5000/app", "1.2"): a tag is a colon after the last slash."""
    head, _, last = image.rpartition("/")
    name, _, tag = last.partition(":")
    return (f"{head}/{name}" if head else name), tag


def _pod_specs(obj: dict) -> list[dict]:
    specs = []
    for keys in POD_TEMPLATE_PATHS:
        node = obj
        for key in keys:
            node = node.get(key) if isinstance(node, dict) else None
        if node:
            specs.append(node)
    return specs


def _apply_namespace(obj: dict, namespace: str) -> None:
    if obj["kind"] not in CLUSTER_SCOPED:
        obj["metadata"]["namespace"] = namespace
    if obj["kind"] in ("RoleBinding", "ClusterRoleBinding"):
        for subject in obj.get("subjects", []):
            if subject.get("kind") == "ServiceAccount":
                subject["namespace"] = namespace


def _target(objects: list[dict], kinds: set[str] | None, name: str, path: Path) -> dict:
    found = [o for o in objects if o["metadata"]["name"] == name and (kinds is None or o["kind"] in kinds)]
    if len(found) != 1:
        raise KustomizeError(f"{path}: {len(found)} objects named {name!r} of kind {sorted(kinds) if kinds else 'any'}; exactly one must match")
    return found[0]


def _json6902(obj: dict, op: dict, path: Path) -> None:
    """add, replace, remove: the operations k8s/ needs (RFC 6902)."""
    *parents, last = [p.replace("~1", "/").replace("~0", "~") for p in op["path"].lstrip("/").split("/")]
    node = obj
    try:
        for key in parents:
            node = node[int(key)] if isinstance(node, list) else node[key]
        if op["op"] == "remove":
            del node[int(last) if isinstance(node, list) else last]
        elif op["op"] in ("add", "replace"):
            value = copy.deepcopy(op["value"])
            if isinstance(node, list):
                index = len(node) if last == "-" else int(last)
                if op["op"] == "add":
                    node.insert(index, value)
                else:
                    node[index] = value
            elif op["op"] == "replace" and last not in node:
                raise KeyError(last)
            else:
                node[last] = value
        else:
            raise KustomizeError(f"{path}: patch op {op['op']!r} not supported here (add, replace, remove)")
    except (KeyError, IndexError, ValueError, TypeError):
        raise KustomizeError(f"{path}: patch {op['op']} {op['path']}: no such path in {obj['kind']}/{obj['metadata']['name']}") from None
