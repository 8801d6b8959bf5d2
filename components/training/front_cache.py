"""Reuse what sits below the lowest trainable parameter: the frozen front of the cascade's ASR path.

With the SE frozen, a clip's enhanced audio and its log-mel features are a pure function of the clip; with
the ASR's encoder frozen too (and no adapter inside it), so are its encoder states. Training recomputes them
every epoch, for every method. ``FrontCache`` computes them once per clip and keeps them:

    cache = FrontCache(max_mb=2048)
    level, x = cache.front(cascade, batch)      # (B, ...) the deepest frozen level, rows from the cache
    out = cascade.asr(noisy, lengths, targets, target_lengths, front=(level, x))

The level is the deepest of the backbone's ``front_levels`` whose modules (and the SE) hold no trainable
parameter and no adapter. Rows are computed one clip at a time from the clip's own samples, so a row is
the same bits whatever batch it lands in, and a cached row equals a recomputed one exactly. The store is
content-addressed: a key is the SHA-256 of the level, a digest of the frozen weights it read and the
clip's samples, so another backbone, another SE or other audio never hits a stale entry. It is one
in-memory LRU per process, bounded in bytes, shared by every training run of the process (every method of
a multi-task pipeline run reads the features the first one computed).
"""

from __future__ import annotations

import hashlib
from collections import OrderedDict

import torch
from torch import nn

from components.adapters.base import AdapterLayer
from components.models.cascade import Cascade


class ByteLRU:
    """key -> tensor, least recently used evicted first once the tensors' bytes exceed the bound."""

    def __init__(self) -> None:
        self.items: OrderedDict[str, torch.Tensor] = OrderedDict()
        self.bytes = 0
        self.hits = self.misses = 0

    def clear(self) -> None:
        self.items.clear()
        self.bytes = self.hits = self.misses = 0

    def get(self, key: str) -> torch.Tensor | None:
        value = self.items.get(key)
        if value is None:
            self.misses += 1
            return None
        self.hits += 1
        self.items.move_to_end(key)
        return value

    def put(self, key: str, value: torch.Tensor, max_bytes: int) -> None:
        size = value.numel() * value.element_size()
        if size > max_bytes:
            return
        if key in self.items:
            self.bytes -= self._size(self.items.pop(key))
        self.items[key] = value
        self.bytes += size
        while self.bytes > max_bytes:
            _, old = self.items.popitem(last=False)
            self.bytes -= self._size(old)

    @staticmethod
    def _size(t: torch.Tensor) -> int:
        return t.numel() * t.element_size()


STORE = ByteLRU()  # one per process: runs of one process share it


def weights_digest(*modules: nn.Module | None) -> str:
    """SHA-256 over the named parameters and buffers of ``modules`` (None skipped)."""
    h = hashlib.sha256()
    for i, module in enumerate(modules):
        if module is None:
            continue
        for name, t in [*module.named_parameters(), *module.named_buffers()]:
            h.update(f"{i}.{name}:{tuple(t.shape)}:{t.dtype}".encode())
            h.update(t.detach().to("cpu").contiguous().view(torch.uint8).numpy().tobytes())
    return h.hexdigest()


def is_frozen(module: nn.Module | None) -> bool:
    """No trainable parameter and no adapter inside (an adapter's shared parameters live outside the module)."""
    return module is None or not any(p.requires_grad for p in module.parameters()) and not any(isinstance(m, AdapterLayer) for m in module.modules())


class FrontCache:
    def __init__(self, max_mb: float, store: ByteLRU = STORE) -> None:
        self.max_bytes = int(max_mb * 2**20)
        self.store = store
        self._digests: dict[tuple[int, str], str] = {}  # (id of the cascade, level) -> digest, computed once per run

    def level(self, cascade: Cascade) -> tuple[str, nn.Module | None] | None:
        """The deepest frozen front level of the cascade's ASR and the module it reads, or None."""
        if not is_frozen(cascade.se):
            return None
        chosen = None
        for name, path in cascade.asr.front_levels:
            module = cascade.asr.get_submodule(path) if path else None
            if not is_frozen(module):
                break
            chosen = (name, module)
        return chosen

    def front(self, cascade: Cascade, batch: dict) -> tuple[str, torch.Tensor] | None:
        """(level, (B, ...) tensor) for the batch's noisy clips, or None when nothing below the trainable part is frozen."""
        found = self.level(cascade)
        if found is None:
            return None
        level, module = found
        key = (id(cascade), level)
        if key not in self._digests:
            self._digests[key] = weights_digest(cascade.se, module)
        digest = self._digests[key]
        rows = []
        for wave, n in zip(batch["noisy"], batch["lengths"].tolist()):
            clip = wave[:n].contiguous()
            row_key = hashlib.sha256(f"{level}:{digest}:{n}:{clip.dtype}".encode() + clip.detach().to("cpu").numpy().tobytes()).hexdigest()
            value = self.store.get(row_key)
            if value is None:
                value = self._compute(cascade, clip, n, level)
                self.store.put(row_key, value, self.max_bytes)
            rows.append(value)
        return level, torch.stack(rows)

    @staticmethod
    @torch.no_grad()
    def _compute(cascade: Cascade, clip: torch.Tensor, n: int, level: str) -> torch.Tensor:
        """One clip's level from its own samples: (SE) -> the backbone's front, without the batch dimension."""
        lengths = torch.tensor([n], device=clip.device)
        audio = cascade.se(clip[None], lengths) if cascade.se is not None else clip[None]
        return cascade.asr.front(audio, lengths, level)[0]
