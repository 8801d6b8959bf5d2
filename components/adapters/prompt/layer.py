"""Prompt tuning (Lester et al., 2021) on a whole encoder, per task.

The layer wraps the encoder. Each task owns P learnt vectors of the encoder's
input width (``tasks.<task>.prompt``, (P, D)); every row of the batch gets
its own task's prompts in front of its input, the encoder runs on P + T
positions, and the first P outputs are cut off, so callers see the original
length. Two encoder interfaces:

* torchaudio Conformer: ``forward(input (B, T, D), lengths (B,)) -> (output, lengths)``;
  the prompts are real frames for it (lengths + P), padding stays at the end.
* Hugging Face encoders (``get_input_embeddings()``): ``input_ids`` become
  word embeddings, prompts go in front, ``attention_mask`` / ``token_type_ids``
  grow by P (ones / zeros) and the base runs on ``inputs_embeds``, as peft's
  prompt tuning does (so absolute positions of the real tokens shift by P).
  A decoder with a KV cache (Whisper's, the '@decoder' role: learnt decoder
  prompt embeddings) gets the prompts on its first step only; later steps find
  them in the cache, and its positions go on from P + the tokens so far.

Not zero-init: the prompts take part in attention from the first step.
"""

from __future__ import annotations

import inspect
from typing import Any, Callable

import torch
from torch import nn

from components.adapters.base import AdapterLayer, AdapterMethod
from components.adapters.prompt.config import PromptConfig
from components.adapters.registry import register
from components.adapters.tasks import TaskRouter, per_task

CONFORMER = "conformer"
HF = "hf"


def task_rows(router: TaskRouter, batch: int, device: torch.device, fn: Callable[[str], torch.Tensor]) -> torch.Tensor:
    """fn(task) (...) of each row's task, stacked: (batch, ...). One task: fn(task) expanded (no copy)."""
    rows = torch.empty(batch, 0, device=device)  # only carries the batch size through per_task

    def expand(task: str, x: torch.Tensor) -> torch.Tensor:
        value = fn(task)
        return value.unsqueeze(0).expand(x.size(0), *value.shape)

    return per_task(router, rows, 0, expand)


def encoder_kind(module: nn.Module) -> str | None:
    """CONFORMER, HF or None (not an encoder prompt tuning knows how to feed)."""
    from torchaudio.models import Conformer  # lazy: the adapters package does not need torchaudio otherwise

    if isinstance(module, Conformer):
        return CONFORMER
    if callable(getattr(module, "get_input_embeddings", None)):
        return HF
    return None


def input_width(module: nn.Module, kind: str) -> int:
    if kind == HF:
        return module.get_input_embeddings().embedding_dim
    # a Conformer's first module is ffn1's LayerNorm(input_dim); it stores input_dim nowhere else
    return next(m for m in module.modules() if isinstance(m, nn.LayerNorm)).normalized_shape[-1]


def _cached_positions(cache: Any, path: str) -> int:
    """Positions a Hugging Face KV cache already holds (0 without a cache)."""
    if cache is None:
        return 0
    if not callable(getattr(cache, "get_seq_length", None)):
        raise ValueError(f"prompt at '{path}': past_key_values must be a transformers Cache, got {type(cache).__name__}")
    return int(cache.get_seq_length())


class PromptLayer(AdapterLayer):
    def __init__(self, base: nn.Module, method: AdapterMethod, path: str, depth: int, batch_dim: int) -> None:
        super().__init__(base, method, path, depth, batch_dim)
        kind = encoder_kind(base)
        if kind is None:
            raise TypeError(f"prompt: '{path}' is a {type(base).__name__}, not a torchaudio Conformer or a Hugging Face encoder")
        self.kind = kind
        self.width = input_width(base, kind)
        self.n_tokens = self.adapter_config.num_virtual_tokens
        self._signature = inspect.signature(base.forward) if kind == HF else None

    def __getattr__(self, name: str) -> Any:
        """Attributes the wrapped encoder has and the layer does not (get_input_embeddings, embeddings, ...) come from it,
        so code that reaches into the encoder (NluModel, and its HF ``config``) keeps working."""
        try:
            return super().__getattr__(name)
        except AttributeError:
            base = self.__dict__.get("_modules", {}).get("base")
            if base is None:
                raise
            return getattr(base, name)

    def new_task(self, task: str) -> nn.Module:
        cfg = self.adapter_config
        if cfg.init == "vocab":
            table = self.base.get_input_embeddings().weight.detach()  # (V, D)
            prompt = table[torch.randint(0, table.size(0), (self.n_tokens,), device=table.device)].clone()
        else:
            prompt = torch.randn(self.n_tokens, self.width) * cfg.init_std
        module = nn.Module()
        module.prompt = nn.Parameter(prompt)  # (P, D)
        return module

    def prompts(self, batch: int, like: torch.Tensor) -> torch.Tensor:
        """Each row's task prompts (B, P, D), in ``like``'s dtype."""
        return task_rows(self.method.router, batch, like.device, lambda task: self.tasks[task].prompt).to(like.dtype)

    def forward(self, *args: Any, **kwargs: Any) -> Any:
        if not self.method.active:
            return self.base(*args, **kwargs)
        if self.kind == CONFORMER:
            return self._conformer(*args, **kwargs)
        return self._hf(*args, **kwargs)

    def _conformer(self, input: torch.Tensor, lengths: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        P = self.n_tokens
        x = torch.cat([self.prompts(input.size(0), input), input], dim=1)  # (B, P+T, D)
        out, _ = self.base(x, lengths + P)  # (B, P+T, D); prompts are always valid frames
        return out[:, P:], lengths

    def _hf(self, *args: Any, **kwargs: Any) -> Any:
        a = self._arguments(args, kwargs)
        P = self.n_tokens
        ids, embeds = a.pop("input_ids", None), a.pop("inputs_embeds", None)
        if (ids is None) == (embeds is None):
            raise ValueError(f"prompt at '{self.path}': give exactly one of input_ids or inputs_embeds")
        if a.get("position_ids") is not None:
            raise ValueError(f"prompt at '{self.path}': position_ids is not supported (the prompts shift every position by {P})")
        if _cached_positions(a.get("past_key_values"), self.path) > 0:
            # a decoder's later step on its KV cache: the first step put the prompts into the cache already
            return self.base(input_ids=ids, inputs_embeds=embeds, **a)
        if embeds is None:
            embeds = self.base.get_input_embeddings()(ids)  # (B, L, D)
        B = embeds.size(0)
        x = torch.cat([self.prompts(B, embeds), embeds], dim=1)  # (B, P+L, D)
        mask = a.get("attention_mask")
        if mask is not None:
            if mask.dim() != 2:
                raise ValueError(f"prompt at '{self.path}': attention_mask must be (B, L), got shape {tuple(mask.shape)}")
            a["attention_mask"] = torch.cat([mask.new_ones(B, P), mask], dim=1)  # prompts are never masked
        types = a.get("token_type_ids")
        if types is not None:
            a["token_type_ids"] = torch.cat([types.new_zeros(B, P), types], dim=1)  # segment 0 (peft drops the ids instead)
        return self._strip(self.base(inputs_embeds=x, **a))

    def _arguments(self, args: tuple, kwargs: dict) -> dict:
        """The call's arguments by name (positional ones too), **kwargs flattened in."""
        bound = self._signature.bind_partial(*args, **kwargs).arguments
        out = {}
        for name, value in bound.items():
            kind = self._signature.parameters[name].kind
            if kind is inspect.Parameter.VAR_KEYWORD:
                out.update(value)
            elif kind is inspect.Parameter.VAR_POSITIONAL:
                if value:
                    raise TypeError(f"prompt at '{self.path}': extra positional arguments are not supported")
            else:
                out[name] = value
        return out

    def _strip(self, out: Any) -> Any:
        """Drop the P prompt positions from the sequence outputs; the output keeps its type."""
        P = self.n_tokens
        if isinstance(out, tuple):  # return_dict=False: (last_hidden_state, ...)
            return (out[0][:, P:], *out[1:])
        out.last_hidden_state = out.last_hidden_state[:, P:]
        if getattr(out, "hidden_states", None) is not None:
            out.hidden_states = tuple(h[:, P:] for h in out.hidden_states)
        return out  # attentions, if asked for, still cover P + L positions


@register
class PromptMethod(AdapterMethod):
    config_cls = PromptConfig
    layer_cls = PromptLayer

    def select(self, model: nn.Module, path: str, module: nn.Module) -> list[tuple[str, nn.Module]]:
        kind = encoder_kind(module)
        if kind is None:
            raise TypeError(
                f"prompt tuning prepends to an encoder's input: a torchaudio Conformer or a Hugging Face encoder with "
                f"get_input_embeddings(); target '{path}' is a {type(module).__name__} (use '@encoder')"
            )
        if self.config.init == "vocab" and kind != HF:
            raise ValueError(f"PromptConfig.init='vocab' needs a word-embedding table; target '{path}' is a {type(module).__name__}")
        return [(path, module)]
