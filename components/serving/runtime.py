"""One backbone cascade serving many tasks: every task's adapter is attached once, and a batch may mix
tasks (each row runs its own adapter). A service model folder holds what it needs, as plain files:

    <root>/cascade/   cascade.json + cascade.safetensors   (components.models.cascade.save_cascade)
    <root>/adapters/  a TaskAdapters bundle                 (components.multitask.bundle)
"""

from __future__ import annotations

from collections import OrderedDict
from pathlib import Path
from typing import Sequence

import torch
from torch.nn.utils.rnn import pad_sequence

from components.adapters import get_adapter
from components.cascade_files import load_cascade, save_cascade
from components.models.cascade import MODES, Cascade
from components.multitask.bundle import ADAPTER, TaskAdapters
from components.serving.audio import RequestError
from components.serving.torch_thread import run_on_torch_thread
from components.training.loop import resolve_device

CASCADE_DIR, ADAPTERS_DIR = "cascade", "adapters"


def write_service_model(root: str | Path, cascade: Cascade, bundle: TaskAdapters) -> Path:
    """Lay out a service model folder (``root`` must not hold one yet)."""
    root = Path(root)
    if (root / CASCADE_DIR).exists():
        raise FileExistsError(f"{root} already holds a service model; pick an empty folder")
    save_cascade(cascade, root / CASCADE_DIR)
    bundle.copy_to(root / ADAPTERS_DIR)
    return root


class TaskRuntime:
    """predict(waves, tasks) -> one SLURP result a request, whatever else shares its batch.

    Loading and predicting run on the process's torch thread (components.serving.torch_thread), which
    also serialises requests: the adapter's task routing is per model, one forward at a time.

    Tasks: every task of the bundle is served. With ``max_resident_tasks`` a task's adapter loads on its
    first request, and past the bound the least recently used one is dropped (it loads again when asked
    for). A request for a task the bundle does not list reads its bundle.json again first: a task added
    to the service model's adapters folder is served without a restart."""

    def __init__(
        self, cascade: Cascade, bundle: TaskAdapters, device: str = "auto", mode: str = "e2e", no_speech_threshold: float | None = None,
        max_resident_tasks: int | None = None, inference_engine: bool = True,
    ) -> None:
        """mode: "e2e" (the NLU reads the 1-best through the bridge) or "text" (the 1-best text alone);
        no_speech_threshold: above it, a request's no-speech probability means nobody spoke (the ASR's
        run-time option, where the backbone has one: Whisper; the Conformer-CTC answers every request);
        max_resident_tasks: how many tasks' adapters stay loaded (None: all, loaded at start);
        inference_engine: run the ASR on its inference-only form where the backbone has one (Whisper:
        LeanWhisper, the same outputs; see ASRBackbone.to_inference_engine), before the adapters attach."""
        if bundle.kind != "adapter":
            raise ValueError(f"bundle {bundle.system!r} is kind {bundle.kind!r}: serving holds one backbone and switches adapters, so it needs kind 'adapter'")
        if mode not in MODES:
            raise ValueError(f"serving mode must be one of {MODES}, got {mode!r}")
        if max_resident_tasks is not None and max_resident_tasks < 1:
            raise ValueError(f"max_resident_tasks must be >= 1 or None, got {max_resident_tasks}")
        self.max_resident_tasks = max_resident_tasks
        self.inference_engine = inference_engine  # True once the ASR runs on its inference engine
        self._resident: OrderedDict[str, None] = OrderedDict()  # loaded tasks, least recently used first
        self.device = resolve_device(device)
        self.bundle = bundle
        self.cascade = cascade
        self.mode = mode
        self._has_no_speech_gate = "no_speech_threshold" in cascade.asr.runtime_options
        self.no_speech_threshold = no_speech_threshold if self._has_no_speech_gate else None
        run_on_torch_thread(self._attach)

    def _attach(self) -> None:
        self.inference_engine = self.inference_engine and self.cascade.asr.to_inference_engine()
        preload = list(self.bundle.tasks) if self.max_resident_tasks is None else []
        self.bundle.attach(self.cascade, tasks=preload)
        self._resident.update(dict.fromkeys(preload))
        if self._has_no_speech_gate:
            self.cascade.asr.configure(no_speech_threshold=self.no_speech_threshold)
        self.cascade.to(self.device).eval()
        self._router = get_adapter(self.cascade, ADAPTER)

    @classmethod
    def load(cls, root: str | Path, device: str = "auto", mode: str = "e2e", no_speech_threshold: float | None = None,
             max_resident_tasks: int | None = None, inference_engine: bool = True) -> "TaskRuntime":
        root = Path(root)
        return run_on_torch_thread(
            lambda: cls(load_cascade(root / CASCADE_DIR, device="cpu"), TaskAdapters(root / ADAPTERS_DIR), device, mode, no_speech_threshold, max_resident_tasks, inference_engine)
        )

    @property
    def tasks(self) -> list[str]:
        return list(self.bundle.tasks)

    @property
    def resident_tasks(self) -> list[str]:
        """The tasks whose adapters are loaded now, least recently used first."""
        return list(self._resident)

    def check_task(self, task: str) -> None:
        if task not in self.bundle.tasks:
            try:
                self.bundle.refresh()
            except (OSError, ValueError):  # bundle.json mid-rewrite, or no longer this bundle: serve what is loaded
                pass
        if task not in self.bundle.tasks:
            shown = ", ".join(self.bundle.tasks[:10]) + (", ..." if len(self.bundle.tasks) > 10 else "")
            raise RequestError(404, f"unknown task {task!r}; this service has {len(self.bundle.tasks)} tasks: {shown} (GET /v1/tasks lists them)")

    def predict(self, waves: Sequence[torch.Tensor], tasks: Sequence[str]) -> list[dict]:
        """waves: (L_i,) at 16 kHz; tasks: one name each -> [{task, speech, transcript, scenario, action, intent, entities}];
        where the ASR heard nobody: speech false, an empty transcript, and scenario, action and intent None."""
        return run_on_torch_thread(self._predict, waves, tasks)

    def _predict(self, waves: Sequence[torch.Tensor], tasks: Sequence[str]) -> list[dict]:
        if len(waves) != len(tasks):
            raise ValueError(f"{len(waves)} waveforms but {len(tasks)} tasks")
        if not waves:
            return []
        for task in tasks:
            self.check_task(task)
        self._make_resident(tasks)  # outside inference mode: adapters loaded here are ordinary parameters
        return self._forward(waves, tasks)

    @torch.inference_mode()
    def _forward(self, waves: Sequence[torch.Tensor], tasks: Sequence[str]) -> list[dict]:
        noisy = pad_sequence(list(waves), batch_first=True).to(self.device)
        lengths = torch.tensor([len(w) for w in waves], device=self.device)
        meta = [{"utt_id": str(i), "slurp_id": -1} for i in range(len(waves))]
        with torch.autocast(self.device.type, enabled=self.device.type == "cuda"):
            self._router.set_task(list(tasks))
            results = self.cascade.predict(noisy, lengths, meta, mode=self.mode)
        return [
            {
                "task": task,
                "speech": not pred.no_speech,
                "transcript": transcript,
                "scenario": None if pred.no_speech else pred.scenario,
                "action": None if pred.no_speech else pred.action,
                "intent": None if pred.no_speech else pred.intent,
                "entities": [{"type": e.type, "filler": e.filler} for e in pred.entities],
            }
            for task, (pred, transcript) in zip(tasks, results)
        ]

    def _make_resident(self, tasks: Sequence[str]) -> None:
        """Load the batch's tasks that are not; past the bound, drop the least recently used others."""
        for task in dict.fromkeys(tasks):
            if task in self._resident:
                self._resident.move_to_end(task)
            else:
                self.bundle.load(self.cascade, task)
                self._resident[task] = None
        if self.max_resident_tasks is not None:
            while len(self._resident) > max(self.max_resident_tasks, len(set(tasks))):  # a batch may need more than the bound
                oldest = next(iter(self._resident))  # never one of this batch's: they were just moved to the end
                self._router.remove_task(oldest)
                del self._resident[oldest]
