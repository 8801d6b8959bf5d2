"""A stand-in Kubeflow Pipelines v2beta1 REST API on 127.0.0.1 that records what the kfp client sends.

It answers the calls kfp 2.16's client makes when ZenML submits a run: GET healthz, GET/POST experiments,
POST runs (one-off) or POST recurringruns (scheduled). The pipeline spec ZenML compiled is in the body.

    with FakeKFPAPI() as api:
        ...                                            # kubeflow orchestrator with kubeflow_hostname=api.url
        api.bodies("POST", "recurringruns")            # [{display_name, pipeline_spec, trigger, ...}]
"""

from __future__ import annotations

import json
import threading
import uuid
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import parse_qs, urlparse

API = "/apis/v2beta1"


class FakeKFPAPI:
    def __init__(self) -> None:
        self.requests: list[dict] = []  # {method, path, query, body}
        self.experiments: list[dict] = []
        api = self

        class Handler(BaseHTTPRequestHandler):
            def handle_any(self) -> None:
                size = int(self.headers.get("Content-Length") or 0)
                body = json.loads(self.rfile.read(size)) if size else None
                url = urlparse(self.path)
                query = {k: v[0] for k, v in parse_qs(url.query).items()}
                api.requests.append({"method": self.command, "path": url.path, "query": query, "body": body})
                route = (self.command, url.path.removeprefix(API))
                if route == ("GET", "/healthz"):
                    self.reply(200, {"multi_user": False})
                elif route == ("GET", "/experiments"):  # filtered by display name
                    wanted = [p.get("string_value", p.get("stringValue")) for p in json.loads(query.get("filter", '{"predicates": []}'))["predicates"]]
                    found = [e for e in api.experiments if not wanted or e["display_name"] in wanted]
                    self.reply(200, {"experiments": found, "total_size": len(found)} if found else {})
                elif route == ("POST", "/experiments"):
                    api.experiments.append({**body, "experiment_id": str(uuid.uuid4()), "storage_state": "AVAILABLE"})
                    self.reply(200, api.experiments[-1])
                elif route == ("POST", "/runs"):
                    self.reply(200, {**body, "run_id": str(uuid.uuid4()), "state": "PENDING"})
                elif route == ("POST", "/recurringruns"):
                    self.reply(200, {**body, "recurring_run_id": str(uuid.uuid4()), "status": "ENABLED"})
                else:  # e.g. GET /experiments/<name>: the client then looks the experiment up by name
                    self.reply(404, {"error": f"not faked: {self.command} {url.path}", "code": 5})

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

    def __enter__(self) -> "FakeKFPAPI":
        threading.Thread(target=self.server.serve_forever, daemon=True).start()
        return self

    def __exit__(self, *exc) -> None:
        self.server.shutdown()
        self.server.server_close()

    def bodies(self, method: str, resource: str) -> list[dict]:
        return [r["body"] for r in self.requests if r["method"] == method and r["path"] == f"{API}/{resource}"]


def steps_of(spec: dict) -> dict:
    """A KFP v2 IR pipeline spec -> {ZenML step name: {after, image, resources, args, env}}."""
    executors = spec["deploymentSpec"]["executors"]
    steps = {}
    for task in spec["root"]["dag"]["tasks"].values():
        container = executors[spec["components"][task["componentRef"]["name"]]["executorLabel"]]["container"]
        steps[task["taskInfo"]["name"]] = {
            "after": task.get("dependentTasks", []),
            "image": container["image"],
            "resources": container.get("resources", {}),
            "args": container.get("args", []),
            "env": {e["name"]: e.get("value") for e in container.get("env", [])},
        }
    return steps
