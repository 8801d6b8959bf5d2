"""ZenML 0.98's kubeflow orchestrator, with the step resources it loses put back into the KFP spec.

Stock 0.98 (zenml/integrations/kubeflow/orchestrators/kubeflow_orchestrator.py:905-956) sets a GPU only
when a step's pod_settings.node_selectors has "accelerator", but KubeflowOrchestratorSettings' validator
(flavors/kubeflow_orchestrator_flavor.py:77-137) replaces any pod_settings with one built from the
deprecated top-level `node_selectors`, which the compiler strips as an unknown key and the component config
rejects: no configuration reaches it. It also hands ResourceSettings.get_memory() (a float of GB) to
kfp's set_memory_limit, which wants a string: TypeError. Here, per step:
    ResourceSettings.cpu_count -> CPU limit, .memory ("32GB", "8GiB") -> memory limit ("32G", "8Gi"),
    .gpu_count -> accelerator type nvidia.com/gpu with that count (KFP's driver makes it the pod's
    `limits: {nvidia.com/gpu: N}`).

Register:  zenml orchestrator flavor register cascadapt.kubeflow_gpu.GPUKubeflowOrchestratorFlavor
"""

from __future__ import annotations

from typing import Optional, Tuple, Type

from zenml.config.resource_settings import ResourceSettings
from zenml.integrations.kubeflow.flavors import KubeflowOrchestratorFlavor
from zenml.integrations.kubeflow.orchestrators import KubeflowOrchestrator

GPU_RESOURCE = "nvidia.com/gpu"


class GPUKubeflowOrchestrator(KubeflowOrchestrator):
    def _configure_container_resources(self, dynamic_component, resource_settings: ResourceSettings,
                                       node_selector_constraint: Optional[Tuple[str, str]] = None):
        task = dynamic_component
        if resource_settings.cpu_count:
            task = task.set_cpu_limit(str(resource_settings.cpu_count))
        if resource_settings.memory:  # ZenML "32GB" / "8GiB" -> Kubernetes "32G" / "8Gi"
            task = task.set_memory_limit(resource_settings.memory.removesuffix("B"))
        if resource_settings.gpu_count:
            accelerator = node_selector_constraint[1] if node_selector_constraint else GPU_RESOURCE
            task = task.set_accelerator_type(accelerator).set_accelerator_limit(resource_settings.gpu_count)
        return task


class GPUKubeflowOrchestratorFlavor(KubeflowOrchestratorFlavor):
    @property
    def name(self) -> str:
        return "kubeflow_gpu"

    @property
    def implementation_class(self) -> Type[GPUKubeflowOrchestrator]:
        return GPUKubeflowOrchestrator
