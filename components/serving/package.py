"""The BentoML side of packaging: a service model in the model store, and a bento built from it offline.

BentoML's stores live in $BENTOML_HOME (default ~/bentoml)."""

from __future__ import annotations

from pathlib import Path

import bentoml

from components.models.cascade import Cascade
from components.multitask.bundle import TaskAdapters
from components.serving.runtime import write_service_model
from components.serving.service import MODEL_NAME

SERVICE = "components.serving.service:CascadeSLU"
REPO = Path(__file__).resolve().parents[2]
# The service's own code (and the model code it loads); the venv's packages come from requirements.
INCLUDE = ["components/**/*.py", "components/data/sample/*"]


def save_service_model(cascade: Cascade, bundle: TaskAdapters, name: str = MODEL_NAME, labels: dict | None = None, metadata: dict | None = None) -> str:
    """A new version of model ``name`` in the BentoML model store holding the backbone and the bundle; its tag."""
    counts = bundle.parameter_counts()
    meta = {"system": bundle.system, "backbone": bundle.backbone, "tasks": len(bundle.tasks), "digest": bundle.digest(),
            "shared_parameters": counts["shared"], "task_parameters": sum(counts["tasks"].values())} | (metadata or {})
    with bentoml.models.create(name, labels=labels or {}, metadata=meta) as model:
        write_service_model(model.path, cascade, bundle)
    return str(model.tag)


def build_bento(model_tag: str, args: dict | None = None, labels: dict | None = None, version: str | None = None) -> str:
    """``bentoml build`` of the service around ``model_tag``, offline (no package locking); the bento's tag.

    args: more bento arguments (ServingArgs) baked in; ``bentoml serve <tag> --arg ...`` overrides them."""
    bento = bentoml.bentos.build(
        SERVICE,
        name="cascadapt_slu_service",
        version=version,
        labels=labels or {},
        include=INCLUDE,
        models=[model_tag],
        python={"lock_packages": False, "requirements_txt": "requirements-serving.txt"},  # relative to build_ctx
        args={"model": model_tag} | (args or {}),
        build_ctx=str(REPO),
    )
    return str(bento.tag)
