"""A trained multi-task adaptation as plain files: what a run exports, a model version carries and a
service loads. No pickle: JSON and safetensors.

    <root>/bundle.json                {"format", "system", "kind", "tasks", "backbone"[, "task_parameters"][, "asr_options"]}
    <root>/shared.safetensors         kind "adapter": what every task uses (components.adapters.state format)
    <root>/tasks/<task>.safetensors   kind "adapter": one task's adapter; kind "full": the task's own fine-tuned ASR

``backbone`` says which backbone the files adapt (the pipeline stores the ZenML artifact version id);
``task_parameters`` (kind full) the trainable parameters of one task's ASR (its file also holds buffers);
``asr_options`` the ASR run-time options the tasks trained with (Whisper: its padding), set again by ``attach``.
"""

from __future__ import annotations

import hashlib
import json
import math
import shutil
from pathlib import Path

import torch
from safetensors import safe_open
from torch import nn

from components.adapters import config_from_file, get_adapter, load_shared, load_task, save_shared, save_task
from components.adapters.inject import add_adapter
from components.data.atomic import atomic_path
from components.models.nlu import load_state_dict_file, save_state_dict

FORMAT = "cascadapt-task-adapters/1"
ADAPTER = "multitask"  # the name of the adapter a bundle attaches to the cascade
KINDS = ("adapter", "full")
SHARED_FILE = "shared.safetensors"


def task_path(root: str | Path, task: str) -> Path:
    return Path(root) / "tasks" / f"{task}.safetensors"


class TaskAdapters:
    """A bundle folder, read (and checked) at construction."""

    def __init__(self, root: str | Path) -> None:
        self.root = Path(root)
        path = self.root / "bundle.json"
        if not path.is_file():
            raise FileNotFoundError(f"{self.root}: not a task-adapter bundle (no bundle.json)")
        meta = json.loads(path.read_text())
        if meta.get("format") != FORMAT or meta.get("kind") not in KINDS:
            raise ValueError(f"{path}: format {meta.get('format')!r} kind {meta.get('kind')!r}; expected {FORMAT!r} and one of {KINDS}")
        if meta["kind"] == "full" and not isinstance(meta.get("task_parameters"), int):
            raise ValueError(f"{path}: a kind 'full' bundle needs task_parameters (an int)")
        self.system, self.kind, self.tasks, self.backbone = meta["system"], meta["kind"], list(meta["tasks"]), meta.get("backbone", "")
        self.task_parameters = meta.get("task_parameters")
        self.asr_options = dict(meta.get("asr_options") or {})
        for task in self.tasks:
            if not self.task_file(task).is_file():
                raise FileNotFoundError(f"{self.root}: bundle.json lists task {task!r} but {self.task_file(task)} is missing")

    def task_file(self, task: str) -> Path:
        return task_path(self.root, task)

    @property
    def shared_file(self) -> Path:
        return self.root / SHARED_FILE

    @property
    def config(self):
        """The adapter's config (kind adapter)."""
        return config_from_file(self.shared_file)

    # -- writing

    @classmethod
    def export_adapter(cls, model: nn.Module, root: str | Path, system: str, tasks: list[str] | None = None, backbone: str = "") -> "TaskAdapters":
        """The model's ``tasks`` adapter: its shared part and each task's file (default: every task it has),
        and the run-time options of the model's ASR."""
        method = get_adapter(model, ADAPTER)
        tasks = list(tasks or method.task_names)
        root = Path(root)
        save_shared(model, root / SHARED_FILE, name=ADAPTER)
        for task in tasks:
            save_task(model, task_path(root, task), task, name=ADAPTER)
        return cls.create(root, system, "adapter", tasks, backbone, asr_options=model.asr.runtime_settings())

    @classmethod
    def save_full_task(cls, asr: nn.Module, root: str | Path, task: str) -> None:
        """One task's fine-tuned ASR (full fine-tuning per task); ``create`` the bundle once every task is saved."""
        with atomic_path(task_path(root, task)) as tmp:
            save_state_dict(asr, tmp)

    @classmethod
    def create(
        cls, root: Path, system: str, kind: str, tasks: list[str], backbone: str, task_parameters: int | None = None, asr_options: dict | None = None
    ) -> "TaskAdapters":
        """Write bundle.json over task files already in ``root``."""
        meta = {"format": FORMAT, "system": system, "kind": kind, "tasks": tasks, "backbone": backbone}
        if task_parameters is not None:
            meta["task_parameters"] = task_parameters
        if asr_options:
            meta["asr_options"] = dict(asr_options)
        with atomic_path(Path(root) / "bundle.json") as tmp:
            tmp.write_text(json.dumps(meta, indent=1) + "\n")
        return cls(root)

    def digest(self) -> str:
        """sha256 over every file's relative path and bytes: the same bundle gives the same digest anywhere."""
        h = hashlib.sha256()
        for path in sorted(p for p in self.root.rglob("*") if p.is_file()):
            h.update(str(path.relative_to(self.root)).encode())
            h.update(path.read_bytes())
        return h.hexdigest()

    def copy_to(self, root: str | Path) -> "TaskAdapters":
        """The same bundle in another folder (which must not hold one already)."""
        root = Path(root)
        if (root / "bundle.json").exists():
            raise FileExistsError(f"{root} already holds a bundle; pick an empty folder")
        shutil.copytree(self.root, root, dirs_exist_ok=True)
        return TaskAdapters(root)

    # -- using

    def attach(self, cascade: nn.Module, tasks: list[str] | None = None) -> None:
        """The ASR's run-time options the tasks trained with; kind adapter: apply the adapter with ``tasks``
        (default: every task of the bundle; more come with ``load``); kind full: nothing more (``use`` swaps
        the ASR weights per task)."""
        cascade.asr.configure(**self.asr_options)
        if self.kind == "full":
            return
        add_adapter(cascade, self.config, name=ADAPTER, tasks=())
        load_shared(cascade, self.shared_file, name=ADAPTER)
        for task in self.tasks if tasks is None else tasks:
            self.load(cascade, task)

    def load(self, cascade: nn.Module, task: str) -> None:
        """Load one task's adapter into the attached cascade (kind adapter)."""
        if task not in self.tasks:
            raise KeyError(f"bundle {self.system!r} has no task {task!r}; tasks: {self.tasks}")
        load_task(cascade, self.task_file(task), name=ADAPTER, task=task)

    def refresh(self) -> list[str]:
        """Read bundle.json again: tasks added to the folder since (same system and kind) join ``tasks``; returns them."""
        fresh = TaskAdapters(self.root)
        if (fresh.system, fresh.kind) != (self.system, self.kind):
            raise ValueError(f"{self.root}: bundle.json now holds {fresh.kind} {fresh.system!r}, not {self.kind} {self.system!r}")
        added = [t for t in fresh.tasks if t not in self.tasks]
        self.tasks += added
        return added

    def use(self, cascade: nn.Module, task: str) -> None:
        """Make ``task`` the one the (attached) cascade runs."""
        if task not in self.tasks:
            raise KeyError(f"bundle {self.system!r} has no task {task!r}; tasks: {self.tasks}")
        if self.kind == "full":
            load_state_dict_file(cascade.asr, self.task_file(task))
        else:
            get_adapter(cascade, ADAPTER).set_task(task)

    def parameter_counts(self) -> dict:
        """{"shared": n, "tasks": {task: n}}: trainable parameters, counted in the exported files (kind adapter)."""
        if self.kind == "full":
            return {"shared": 0, "tasks": {t: self.task_parameters for t in self.tasks}}
        return {"shared": _numel(self.shared_file), "tasks": {t: _numel(self.task_file(t)) for t in self.tasks}}


def _numel(path: Path) -> int:
    with safe_open(str(path), framework="pt") as f:
        return sum(math.prod(f.get_slice(k).get_shape()) for k in f.keys())
