"""The retraining schedule: ZenML's kubernetes orchestrator, given configs/retrain.yaml, creates a CronJob on a
stand-in Kubernetes API (127.0.0.1) with our schedule, no overlapping runs, our pod settings, and a manifest
that validates; the step pods it will start carry the GPU limit and /dev/shm. The ZenML store is a real
ZenML server (`zenml login --local`) under its own config, as the pods would need a server."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap

import pytest
import yaml

from cascadapt.kustomize import validate
from tests.conftest import REPO
from tests.fake_kubernetes import FakeKubernetesAPI
from tests.test_k8s import KUBERNETES_VERSIONS
from tests.zenml_server import REGISTER_TINY_BACKBONE, local_zenml_server

BIN = os.path.dirname(sys.executable)
RETRAIN = REPO / "configs/retrain.yaml"
NAMESPACE = "cascadapt"

# The stack of the README's "Operations" section.
REGISTER = textwrap.dedent(
    """
    from zenml.client import Client
    from zenml.enums import StackComponentType as T

    c = Client()
    c.create_stack_component("k8s", flavor="kubernetes", component_type=T.ORCHESTRATOR,
                             configuration={"kubernetes_context": "fake", "kubernetes_namespace": "%(namespace)s",
                                            "skip_local_validations": True})  # no remote artifact store here (a cluster needs one)
    c.create_stack_component("registry", flavor="default", component_type=T.CONTAINER_REGISTRY, configuration={"uri": "registry.example.com/cascadapt"})
    c.create_stack_component("builder", flavor="local", component_type=T.IMAGE_BUILDER, configuration={})
    c.create_stack("k8s", components={T.ORCHESTRATOR: "k8s", T.ARTIFACT_STORE: "default", T.CONTAINER_REGISTRY: "registry", T.IMAGE_BUILDER: "builder"})
    """
)

STEP_SETTINGS = textwrap.dedent(
    """
    import json, sys
    from zenml.client import Client
    c = Client()
    c.activate_stack("k8s")
    schedule = c.list_schedules(size=1, sort_by="desc:created").items[0]
    snapshot = c.get_snapshot(sys.argv[1])
    orchestrator = c.active_stack.orchestrator
    json.dump({
        "schedule": {"name": schedule.name, "cron": schedule.cron_expression, "metadata": schedule.run_metadata},
        "steps": {name: orchestrator.get_settings(step).pod_settings.model_dump(mode="json") for name, step in snapshot.step_configurations.items()},
    }, sys.stdout)
    """
)


@pytest.fixture(scope="module")
def zenml_server(tmp_path_factory):
    """A local ZenML server under its own config: to the client below it is a remote server."""
    with local_zenml_server(tmp_path_factory.mktemp("zenml_server") / "config") as url:
        yield url


@pytest.mark.timeout(900)
def test_the_retraining_schedule_becomes_a_cronjob_with_our_settings(zenml_server, tmp_path):
    with FakeKubernetesAPI() as api:
        env = {**os.environ, "ZENML_CONFIG_PATH": str(tmp_path / "client"), "ZENML_STORE_URL": zenml_server, "ZENML_STORE_TYPE": "rest",
               "KUBECONFIG": str(api.write_kubeconfig(tmp_path / "kubeconfig", NAMESPACE)), "ZENML_ANALYTICS_OPT_IN": "false"}

        def run(*args):
            proc = subprocess.run(args, cwd=REPO, env=env, capture_output=True, text=True, timeout=600)
            assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
            return proc.stdout

        run(sys.executable, "-c", REGISTER % {"namespace": NAMESPACE})
        run(sys.executable, "-c", REGISTER_TINY_BACKBONE)
        run(f"{BIN}/zenml", "pipeline", "run", "pipelines.multitask_pipeline.multitask_pipeline", "-c", str(RETRAIN), "-s", "k8s")
        cronjobs = api.created("cronjobs")
        assert [r["method"] for r in api.requests] == ["POST"]  # a service account is named: no RBAC or account created

    config = yaml.safe_load(RETRAIN.read_text())
    k8s_settings = config["settings"]["orchestrator.kubernetes"]
    assert len(cronjobs) == 1
    cronjob = cronjobs[0]
    assert api.requests[0]["path"] == f"/apis/batch/v1/namespaces/{NAMESPACE}/cronjobs"
    spec = cronjob["spec"]
    assert spec["schedule"] == config["schedule"]["cron_expression"]
    assert spec["concurrencyPolicy"] == "Forbid"  # the next retrain never starts while one runs
    assert spec["successfulJobsHistoryLimit"] == k8s_settings["successful_jobs_history_limit"]
    assert spec["startingDeadlineSeconds"] == k8s_settings["starting_deadline_seconds"]
    pod = spec["jobTemplate"]["spec"]["template"]["spec"]
    assert pod["serviceAccountName"] == "cascadapt-orchestrator"  # the account k8s/base gives the Role
    assert pod["containers"][0]["resources"] == k8s_settings["orchestrator_pod_settings"]["resources"]
    assert pod["containers"][0]["image"] == config["settings"]["docker"]["parent_image"]
    env_vars = {e["name"]: e.get("value") for e in pod["containers"][0]["env"]}
    assert env_vars["ZENML_STORE_URL"] == zenml_server and "hostPath" not in json.dumps(pod)  # pods reach the server, not a local file
    for version in (KUBERNETES_VERSIONS[0], KUBERNETES_VERSIONS[-1]):
        assert validate([cronjob], version) == []

    # the step pods: the orchestrator pod builds them at run time from the stored snapshot's settings
    args = pod["containers"][0]["args"]
    found = json.loads(run(sys.executable, "-c", STEP_SETTINGS, args[args.index("--snapshot_id") + 1]))
    assert found["schedule"]["cron"] == config["schedule"]["cron_expression"] and found["schedule"]["metadata"]["cron_job_name"]
    train = found["steps"]["train_hra_linear"]
    assert train["resources"]["limits"]["nvidia.com/gpu"] == "1"
    assert {"name": "dshm", "mountPath": "/dev/shm"} in train["volume_mounts"]
    assert any(v.get("emptyDir", {}).get("medium") == "Memory" for v in train["volumes"])
    others = [s for name, s in found["steps"].items() if name != "train_hra_linear"]
    assert others and all("nvidia.com/gpu" not in s["resources"].get("limits", {}) and s["resources"]["requests"] for s in others)
