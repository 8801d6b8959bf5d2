"""A stand-in Kubeflow Pipelines v2beta1 REST API on 127.0.0.1 that records what the kfp client sends.

It answers the calls kfp 2.16's client makes when ZenML submits a run: GET healthz, GET/POST experiments,
POST runs (one-off) or POST recurringruns (scheduled). The pipeline spec ZenML compiled is in the body.

    with FakeKFPAPI() as api:
        ...                                            # kubeflow orchestrator with kubeflow_hostname=api.url
        api.bodies("POST", "recurringruns")            # [{display_name, pipeline_spec, trigger, ...}]
"""

from __future__ import annotations

import json
import uuid

from tests.fake_api import FakeJSONAPI

API = "/apis/v2beta1"


class FakeKFPAPI(FakeJSONAPI):
    def __init__(self) -> None:
        super().__init__()
        self.experiments: list[dict] = []

    def answer(self, method: str, path: str, query: dict[str, str], body: dict | None) -> tuple[int, dict]:
        route = (method, path.removeprefix(API))
        if route == ("GET", "/healthz"):
            return 200, {"multi_user": False}
        if route == ("GET", "/experiments"):  # filtered by display name
            wanted = [p.get("string_value", p.get("stringValue")) for p in json.loads(query.get("filter", '{"predicates": []}'))["predicates"]]
            found = [e for e in self.experiments if not wanted or e["display_name"] in wanted]
            return 200, {"experiments": found, "total_size": len(found)} if found else {}
        if route == ("POST", "/experiments"):
            self.experiments.append({**body, "experiment_id": str(uuid.uuid4()), "storage_state": "AVAILABLE"})
            return 200, self.experiments[-1]
        if route == ("POST", "/runs"):
            return 200, {**body, "run_id": str(uuid.uuid4()), "state": "PENDING"}
        if route == ("POST", "/recurringruns"):
            return 200, {**body, "recurring_run_id": str(uuid.uuid4()), "status": "ENABLED"}
        # e.g. GET /experiments/<name>: the client then looks the experiment up by name
        return 404, {"error": f"not faked: {method} {path}", "code": 5}

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
