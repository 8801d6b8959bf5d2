"""The retraining schedule on Kubeflow Pipelines: ZenML's kubeflow orchestrator (KFP v2, kfp 2.16), given
configs/retrain_kubeflow.yaml, creates one recurring run on a stand-in KFP API (127.0.0.1) with our cron, the
prebuilt image, and a GPU for train_hra_linear only (through cascadapt/kubeflow_gpu.py: ZenML 0.98's own
flavor cannot set one). The ZenML store is a real local ZenML server: the orchestrator is a remote component."""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap

import pytest
import yaml

from tests.conftest import REPO
from tests.fake_kfp import FakeKFPAPI, steps_of
from tests.zenml_server import REGISTER_TINY_BACKBONE, local_zenml_server

BIN = os.path.dirname(sys.executable)
CONFIG = REPO / "configs/retrain_kubeflow.yaml"

REGISTER = textwrap.dedent(
    """
    import sys
    from zenml.client import Client
    from zenml.enums import StackComponentType as T

    c = Client()
    c.create_flavor(source="cascadapt.kubeflow_gpu.GPUKubeflowOrchestratorFlavor", component_type=T.ORCHESTRATOR)
    c.create_stack_component("kubeflow", flavor="kubeflow_gpu", component_type=T.ORCHESTRATOR,
                             configuration={"kubeflow_hostname": sys.argv[1], "synchronous": False})
    c.create_stack_component("registry", flavor="default", component_type=T.CONTAINER_REGISTRY, configuration={"uri": "registry.example.com/cascadapt"})
    c.create_stack_component("builder", flavor="local", component_type=T.IMAGE_BUILDER, configuration={})
    c.create_stack("kubeflow", components={T.ORCHESTRATOR: "kubeflow", T.ARTIFACT_STORE: "default", T.CONTAINER_REGISTRY: "registry", T.IMAGE_BUILDER: "builder"})
    """
)


def test_stock_kubeflow_settings_drop_the_accelerator_node_selector():
    """Why cascadapt/kubeflow_gpu.py exists: ZenML 0.98 rebuilds pod_settings from a deprecated key."""
    from zenml.integrations.kubeflow.flavors.kubeflow_orchestrator_flavor import KubeflowOrchestratorSettings

    settings = KubeflowOrchestratorSettings(pod_settings={"node_selectors": {"accelerator": "nvidia.com/gpu"}})
    assert settings.pod_settings.node_selectors == {}


@pytest.mark.timeout(900)
def test_the_retraining_schedule_becomes_a_kfp_recurring_run_with_a_gpu_for_training(tmp_path):
    with local_zenml_server(tmp_path / "server") as server_url, FakeKFPAPI() as api:
        env = {**os.environ, "ZENML_CONFIG_PATH": str(tmp_path / "client"), "ZENML_STORE_URL": server_url, "ZENML_STORE_TYPE": "rest",
               "ZENML_ANALYTICS_OPT_IN": "false", "HOME": str(tmp_path),  # HOME: the kfp client reads ~/.config/kfp when present
               "ZENML_SKIP_STACK_VALIDATION": "true"}  # the flavor refuses a local artifact store and, unlike kubernetes, has no switch for it

        def run(*args):
            proc = subprocess.run(args, cwd=REPO, env=env, capture_output=True, text=True, timeout=600)
            assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]

        run(sys.executable, "-c", REGISTER, api.url)
        run(sys.executable, "-c", REGISTER_TINY_BACKBONE)
        run(f"{BIN}/zenml", "pipeline", "run", "pipelines.multitask_pipeline.multitask_pipeline", "-c", str(CONFIG), "-s", "kubeflow")
    config = yaml.safe_load(CONFIG.read_text())

    assert api.bodies("POST", "runs") == [] and len(api.bodies("POST", "recurringruns")) == 1
    recurring = api.bodies("POST", "recurringruns")[0]
    cron = recurring["trigger"]["cron_schedule"]["cron"]
    assert cron == config["schedule"]["cron_expression"] and len(cron.split()) == 6  # KFP's cron: seconds first
    assert recurring["max_concurrency"] == 1 and recurring["no_catchup"] is True  # never two retrains at once

    steps = steps_of(recurring["pipeline_spec"])
    assert {"train_hra_linear", "evaluate_hra_linear", "promote_adapters"} <= set(steps)
    assert "train-hra-linear" in steps["evaluate_hra_linear"]["after"]
    for name, step in steps.items():
        assert step["image"] == config["settings"]["docker"]["parent_image"] and step["env"]["ZENML_STORE_URL"] == server_url
        assert step["args"][step["args"].index("--step_name") + 1] == name
    train = steps["train_hra_linear"]["resources"]
    assert (train["accelerator"]["resourceType"], train["accelerator"]["resourceCount"]) == ("nvidia.com/gpu", "1") and train["resourceCpuLimit"] == "8.0"
    assert all("accelerator" not in s["resources"] and s["resources"]["resourceCpuLimit"] == "4.0" for name, s in steps.items() if name != "train_hra_linear")
