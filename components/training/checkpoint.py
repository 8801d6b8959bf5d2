"""Training checkpoints that survive a kill at any instant and load without pickle.

A checkpoint at optimizer step N is two files plus a pointer::

    ckpt-0000000N.safetensors   model weights ("model/<key>") and, once there is
                                one, the best weights so far ("best/<key>")
    ckpt-0000000N.pt            everything else: optimizer, GradScaler, RNG
                                states, counters, history (torch.save of plain
                                tensors / lists / dicts / numbers / strings)
    latest.json                 {"step": N, "model": ..., "state": ...}

Each file is written to a temporary name in the same folder and renamed onto
its final name (``os.replace`` is atomic), and the pointer is written last: a
kill between any two writes leaves the previous checkpoint intact and named by
the pointer. The state file is read back only with ``torch.load(...,
weights_only=True)``, so loading a checkpoint never runs arbitrary pickle code.
When the pointer is missing or names files that do not load, the newest
complete pair found in the folder is used instead.
"""

from __future__ import annotations

import json
import random
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from safetensors.torch import load_file, save_file

from components.data.atomic import atomic_path, atomic_write_text

LATEST = "latest.json"
_NAME = re.compile(r"^ckpt-(\d+)\.pt$")


@dataclass
class Checkpoint:
    step: int
    model_state: dict[str, torch.Tensor]
    best_state: dict[str, torch.Tensor] | None
    state: dict[str, Any]


def _stem(step: int) -> str:
    return f"ckpt-{step:08d}"


def _unshared(tensors: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """CPU, contiguous tensors that share no storage (safetensors refuses shared
    storage, e.g. tied embeddings): a tensor whose storage was already seen is cloned."""
    out, seen = {}, set()
    for key, t in tensors.items():
        t = t.detach().cpu().contiguous()
        ptr = t.untyped_storage().data_ptr()
        if ptr in seen and t.numel() > 0:
            t = t.clone()
        seen.add(ptr)
        out[key] = t
    return out


def save_checkpoint(
    directory: str | Path,
    step: int,
    model_state: dict[str, torch.Tensor],
    state: dict[str, Any],
    best_state: dict[str, torch.Tensor] | None = None,
    keep: int = 2,
) -> Path:
    """Write the checkpoint of ``step`` atomically, point ``latest.json`` at it and
    delete older checkpoints beyond the ``keep`` newest. Returns the state file's path."""
    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    stem = _stem(step)
    tensors = {f"model/{k}": v for k, v in model_state.items()}
    tensors.update({f"best/{k}": v for k, v in (best_state or {}).items()})
    tensors = _unshared(tensors)
    with atomic_path(directory / f"{stem}.safetensors") as tmp:
        save_file(tensors, str(tmp), metadata={"step": str(step)})
    with atomic_path(directory / f"{stem}.pt") as tmp:
        torch.save(state, tmp)
    pointer = {"step": step, "model": f"{stem}.safetensors", "state": f"{stem}.pt"}
    atomic_write_text(directory / LATEST, json.dumps(pointer))
    # Keep the `keep` newest up to this step; later ones belong to an abandoned
    # run (we resumed from before them) and would shadow this one.
    older = sorted((s for s in _steps_on_disk(directory) if s <= step), reverse=True)
    stale = older[max(keep, 1):] + [s for s in _steps_on_disk(directory) if s > step]
    for old in stale:
        for suffix in (".pt", ".safetensors"):
            (directory / f"{_stem(old)}{suffix}").unlink(missing_ok=True)
    return directory / f"{stem}.pt"


def _steps_on_disk(directory: Path) -> list[int]:
    return [int(m.group(1)) for p in directory.iterdir() if (m := _NAME.match(p.name))]


def _load(directory: Path, step: int) -> Checkpoint:
    stem = _stem(step)
    state = torch.load(directory / f"{stem}.pt", map_location="cpu", weights_only=True)
    tensors = load_file(str(directory / f"{stem}.safetensors"))
    model = {k[len("model/"):]: v for k, v in tensors.items() if k.startswith("model/")}
    best = {k[len("best/"):]: v for k, v in tensors.items() if k.startswith("best/")}
    return Checkpoint(step=step, model_state=model, best_state=best or None, state=state)


def load_checkpoint(directory: str | Path) -> Checkpoint | None:
    """The checkpoint named by ``latest.json``, else the newest complete one, else None."""
    directory = Path(directory)
    if not directory.is_dir():
        return None
    candidates: list[int] = []
    try:
        candidates.append(int(json.loads((directory / LATEST).read_text())["step"]))
    except (OSError, ValueError, KeyError, TypeError):
        pass
    candidates += sorted(set(_steps_on_disk(directory)) - set(candidates), reverse=True)
    for step in candidates:
        try:
            return _load(directory, step)
        except Exception:  # a truncated or foreign file: fall back to an older one
            continue
    return None


# --- RNG states as plain data (weights_only=True can load them) -------------


def rng_state() -> dict[str, Any]:
    """torch (cpu, cuda), numpy and python ``random`` generator states as tensors and lists."""
    version, py_state, gauss = random.getstate()
    kind, keys, pos, has_gauss, cached = np.random.get_state()
    return {
        "torch": torch.get_rng_state(),
        "cuda": torch.cuda.get_rng_state_all() if torch.cuda.is_available() else [],
        "numpy": {
            "kind": str(kind),
            "keys": torch.from_numpy(np.asarray(keys, dtype=np.int64)),
            "pos": int(pos),
            "has_gauss": int(has_gauss),
            "cached_gaussian": float(cached),
        },
        "python": {"version": int(version), "state": [int(x) for x in py_state], "gauss": gauss},
    }


def set_rng_state(s: dict[str, Any]) -> None:
    torch.set_rng_state(s["torch"])
    if s["cuda"] and torch.cuda.is_available() and len(s["cuda"]) == torch.cuda.device_count():
        torch.cuda.set_rng_state_all(s["cuda"])
    n = s["numpy"]
    np.random.set_state(
        (n["kind"], n["keys"].numpy().astype(np.uint32), n["pos"], n["has_gauss"], n["cached_gaussian"])
    )
    p = s["python"]
    random.setstate((p["version"], tuple(p["state"]), p["gauss"]))
