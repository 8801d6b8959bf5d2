"""The BentoML side of packaging: a service model in the model store, and a bento built from it offline
(bentofile.yaml).

BentoML's stores live in $BENTOML_HOME (default ~/bentoml)."""

from __future__ import annotations

import subprocess
import sys
import tempfile
from pathlib import Path

import yaml

import bentoml

from components.models.cascade import Cascade
from components.multitask.bundle import TaskAdapters
from components.serving.runtime import write_service_model

MODEL_NAME = "cascadapt_slu"
REPO = Path(__file__).resolve().parents[2]


def save_service_model(cascade: Cascade, bundle: TaskAdapters, name: str = MODEL_NAME, labels: dict | None = None, metadata: dict | None = None) -> str:
    """A new version of model ``name`` in the BentoML model store holding the backbone and the bundle; its tag."""
    counts = bundle.parameter_counts()
    meta = {"system": bundle.system, "backbone": bundle.backbone, "tasks": len(bundle.tasks), "digest": bundle.digest(),
            "shared_parameters": counts["shared"], "task_parameters": sum(counts["tasks"].values())} | (metadata or {})
    with bentoml.models.create(name, labels=labels or {}, metadata=meta) as model:
        write_service_model(model.path, cascade, bundle)
    return str(model.tag)


def build_bento(model_tag: str, args: dict | None = None, labels: dict | None = None, version: str | None = None) -> str:
    """``bentoml build`` (bentofile.yaml) around ``model_tag``, offline; the bento's tag.

    A subprocess, so that the service module is imported with this build's arguments. args: more bento
    arguments (ServingArgs) baked in; ``bentoml serve <tag> --arg ...`` overrides them."""
    with tempfile.TemporaryDirectory() as tmp:
        arg_file = Path(tmp) / "args.yaml"
        arg_file.write_text(yaml.safe_dump({"model": model_tag} | (args or {})))
        cmd = [sys.executable, "-m", "bentoml", "build", "-f", "bentofile.yaml", "--arg-file", str(arg_file), "-o", "tag", "."]
        cmd += [f"--label={k}={v}" for k, v in (labels or {}).items()] + (["--version", version] if version else [])
        proc = subprocess.run(cmd, cwd=REPO, capture_output=True, text=True)
    if proc.returncode != 0:
        raise RuntimeError(f"bentoml build failed ({proc.returncode}):\n{proc.stdout[-3000:]}{proc.stderr[-3000:]}")
    return proc.stdout.strip().splitlines()[-1].removeprefix("__tag__:")
