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
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import yaml


class FakeKubernetesAPI:
    def __init__(self) -> None:
        self.requests: list[dict] = []  # {method, path, body}
        api = self

        class Handler(BaseHTTPRequestHandler):
            def handle_any(self) -> None:
                size = int(self.headers.get("Content-Length") or 0)
                body = json.loads(self.rfile.read(size)) if size else None
                api.requests.append({"method": self.command, "path": self.path, "body": body})
                if self.command == "POST":
                    echoed = json.loads(json.dumps(body or {}))
                    echoed.setdefault("metadata", {}).update(uid="00000000-0000-0000-0000-000000000001", creationTimestamp="2026-01-01T00:00:00Z")
                    self.reply(201, echoed)
                elif self.command == "GET":
                    self.reply(200, {"kind": "List", "apiVersion": "v1", "metadata": {}, "items": []})
                else:
                    self.reply(200, body or {})

            do_GET = do_POST = do_PATCH = do_PUT = do_DELETE = handle_any

            def reply(self, status: int, obj: dict) -> None:
                data = json.dumps(obj).encode()
                self.send_response(status)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

            def log_message(self, *args) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"

    def __enter__(self) -> "FakeKubernetesAPI":
        threading.Thread(target=self.server.serve_forever, daemon=True).start()
        return self

    def __exit__(self, *exc) -> None:
        self.server.shutdown()
        self.server.server_close()

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
        return [r["body"] for r in self.requests if r["method"] == "POST" and r["path"].split("?")[0].endswith(f"/{resource}")]
