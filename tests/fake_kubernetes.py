"""A stand-in Kubernetes API server on 127.0.0.1 that records what a client asks of it.

There is no cluster here; what we test is what ZenML's kubernetes orchestrator sends. Creates (POST)
are answered 201 with the object echoed back, as the API server does; reads get an empty list.

    with FakeKubernetesAPI() as api:
        api.write_kubeconfig(path, namespace="cascadapt")   # context "fake"
        ...                                                  # a client with KUBECONFIG=path
        api.created("cronjobs")                              # [the CronJob bodies it POSTed]
"""

from __future__ import annotations

import json
from pathlib import Path

import yaml

from tests.fake_api import FakeJSONAPI


class FakeKubernetesAPI(FakeJSONAPI):
    def answer(self, method: str, path: str, query: dict[str, str], body: dict | None) -> tuple[int, dict]:
        if method == "POST":
            echoed = json.loads(json.dumps(body or {}))
            echoed.setdefault("metadata", {}).update(uid="00000000-0000-0000-0000-000000000001", creationTimestamp="2026-01-01T00:00:00Z")
            return 201, echoed
        if method == "GET":
            return 200, {"kind": "List", "apiVersion": "v1", "metadata": {}, "items": []}
        return 200, body or {}

    def write_kubeconfig(self, path: Path, namespace: str) -> Path:
        path.write_text(yaml.safe_dump({
            "apiVersion": "v1", "kind": "Config", "current-context": "fake",
            "clusters": [{"name": "fake", "cluster": {"server": self.url}}],
            "users": [{"name": "fake", "user": {"token": "not-a-secret"}}],
            "contexts": [{"name": "fake", "context": {"cluster": "fake", "user": "fake", "namespace": namespace}}],
        }))
        return path

    def created(self, resource: str) -> list[dict]:
        """The bodies of the POSTs that created ``resource`` (e.g. "cronjobs")."""
        return [r["body"] for r in self.requests if r["method"] == "POST" and r["path"].endswith(f"/{resource}")]
