"""ZenML materializers for the cascade and for task-adapter bundles: safetensors + JSON, never a pickle."""

import hashlib
import shutil
import tempfile
import weakref
from pathlib import Path
from typing import Any, Type

import torch

from zenml.enums import ArtifactType
from zenml.materializers.base_materializer import BaseMaterializer
from zenml.utils import io_utils

from components.metrics.params import count_parameters
from components.cascade_files import load_cascade, save_cascade
from components.models.cascade import Cascade
from components.multitask.bundle import TaskAdapters


class CascadeMaterializer(BaseMaterializer):
    ASSOCIATED_TYPES = (Cascade,)
    ASSOCIATED_ARTIFACT_TYPE = ArtifactType.MODEL

    def save(self, data: Cascade) -> None:
        with self.get_temporary_directory(delete_at_exit=True) as tmp:
            save_cascade(data, tmp)
            io_utils.copy_dir(tmp, self.uri)

    def load(self, data_type: Type[Any]) -> Cascade:
        with self.get_temporary_directory(delete_at_exit=True) as tmp:
            io_utils.copy_dir(self.uri, tmp)
            return load_cascade(tmp)

    def compute_content_hash(self, data: Cascade) -> str:
        """sha256 over parameter names and bytes: the same weights give the same hash in any run."""
        digest = hashlib.sha256()
        for name, tensor in sorted(data.state_dict().items()):
            digest.update(name.encode())
            digest.update(tensor.detach().cpu().contiguous().view(-1).view(torch.uint8).numpy().tobytes())
        return digest.hexdigest()

    def extract_metadata(self, data: Cascade) -> dict:
        counts = count_parameters(data)
        return {"parameters": counts["total"], **{f"parameters_{k}": v["total"] for k, v in counts["per_module"].items()}}


def removed_with(bundle: TaskAdapters) -> TaskAdapters:
    """A bundle in a scratch folder: the folder lives as long as the object."""
    weakref.finalize(bundle, shutil.rmtree, bundle.root, True)
    return bundle


class TaskAdaptersMaterializer(BaseMaterializer):
    """A task-adapter bundle (JSON + safetensors files) copied as is; loads into a fresh local folder."""

    ASSOCIATED_TYPES = (TaskAdapters,)
    ASSOCIATED_ARTIFACT_TYPE = ArtifactType.MODEL

    def save(self, data: TaskAdapters) -> None:
        io_utils.copy_dir(str(data.root), self.uri)

    def load(self, data_type: Type[Any]) -> TaskAdapters:
        local = Path(tempfile.mkdtemp(prefix="cascadapt-bundle-"))
        io_utils.copy_dir(self.uri, str(local))
        return removed_with(TaskAdapters(local))

    def compute_content_hash(self, data: TaskAdapters) -> str:
        return data.digest()

    def extract_metadata(self, data: TaskAdapters) -> dict:
        counts = data.parameter_counts()
        return {"system": data.system, "kind": data.kind, "tasks": len(data.tasks), "shared_parameters": counts["shared"], "parameters_per_task": max(counts["tasks"].values(), default=0)}
