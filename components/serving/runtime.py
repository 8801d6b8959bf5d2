"""One backbone cascade serving many tasks: every task's adapter is attached once, and a batch may mix
tasks (each row runs its own adapter). A service model folder holds what it needs, as plain files:

    <root>/cascade/   cascade.json + cascade.safetensors   (components.models.cascade.save_cascade)
    <root>/adapters/  a TaskAdapters bundle                 (components.multitask.bundle)
"""

from __future__ import annotations

from pathlib import Path
from typing import Sequence

import torch
from torch.nn.utils.rnn import pad_sequence

from components.adapters import get_adapter
from components.cascade_files import load_cascade, save_cascade
from components.models.cascade import Cascade
from components.models.nlu import load_tokenizer
from components.multitask.bundle import ADAPTER, TaskAdapters
from components.serving.audio import RequestError
from components.serving.torch_thread import run_on_torch_thread
from components.training.loop import resolve_device

CASCADE_DIR, ADAPTERS_DIR = "cascade", "adapters"
MODES = ("e2e", "text")


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
    also serialises requests: the adapter's task routing is per model, one forward at a time."""

    def __init__(self, cascade: Cascade, bundle: TaskAdapters, device: str = "auto", mode: str = "e2e", no_speech_threshold: float | None = None) -> None:
        """mode: "e2e" (the NLU reads the 1-best through the bridge) or "text" (the 1-best text alone);
        no_speech_threshold: above it, a request's no-speech probability means nobody spoke (the ASR's
        run-time option, where the backbone has one: Whisper; the Conformer-CTC answers every request)."""
        if bundle.kind != "adapter":
            raise ValueError(f"bundle {bundle.system!r} is kind {bundle.kind!r}: serving holds one backbone and switches adapters, so it needs kind 'adapter'")
        if mode not in MODES:
            raise ValueError(f"serving mode must be one of {MODES}, got {mode!r}")
        self.device = resolve_device(device)
        self.bundle = bundle
        self.cascade = cascade
        self.mode = mode
        self._has_no_speech_gate = "no_speech_threshold" in cascade.asr.runtime_options
        self.no_speech_threshold = no_speech_threshold if self._has_no_speech_gate else None
        self._tokenizer = load_tokenizer() if mode == "text" else None
        run_on_torch_thread(self._attach)

    def _attach(self) -> None:
        self.bundle.attach(self.cascade)
        if self._has_no_speech_gate:
            self.cascade.asr.configure(no_speech_threshold=self.no_speech_threshold)
        self.cascade.to(self.device).eval()
        self._router = get_adapter(self.cascade, ADAPTER)

    @classmethod
    def load(cls, root: str | Path, device: str = "auto", mode: str = "e2e", no_speech_threshold: float | None = None) -> "TaskRuntime":
        root = Path(root)
        return run_on_torch_thread(lambda: cls(load_cascade(root / CASCADE_DIR, device="cpu"), TaskAdapters(root / ADAPTERS_DIR), device, mode, no_speech_threshold))

    @property
    def tasks(self) -> list[str]:
        return list(self.bundle.tasks)

    def check_task(self, task: str) -> None:
        if task not in self.bundle.tasks:
            shown = ", ".join(self.bundle.tasks[:10]) + (", ..." if len(self.bundle.tasks) > 10 else "")
            raise RequestError(404, f"unknown task {task!r}; this service has {len(self.bundle.tasks)} tasks: {shown} (GET /v1/tasks lists them)")

    def predict(self, waves: Sequence[torch.Tensor], tasks: Sequence[str]) -> list[dict]:
        """waves: (L_i,) at 16 kHz; tasks: one name each -> [{task, speech, transcript, scenario, action, intent, entities}];
        where the ASR heard nobody: speech false, an empty transcript, and scenario, action and intent None."""
        return run_on_torch_thread(self._predict, waves, tasks)

    @torch.inference_mode()
    def _predict(self, waves: Sequence[torch.Tensor], tasks: Sequence[str]) -> list[dict]:
        if len(waves) != len(tasks):
            raise ValueError(f"{len(waves)} waveforms but {len(tasks)} tasks")
        if not waves:
            return []
        for task in tasks:
            self.check_task(task)
        noisy = pad_sequence(list(waves), batch_first=True).to(self.device)
        lengths = torch.tensor([len(w) for w in waves], device=self.device)
        meta = [{"utt_id": str(i), "slurp_id": -1} for i in range(len(waves))]
        with torch.autocast(self.device.type, enabled=self.device.type == "cuda"):
            self._router.set_task(list(tasks))
            results = self.cascade.predict(noisy, lengths, meta, mode=self.mode, tokenizer=self._tokenizer)
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
