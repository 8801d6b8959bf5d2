"""Prefix tuning (Li & Liang, 2021) on attention layers, per task.

Each wrapped attention layer concatenates P learnt keys and values (after the
k/v projections, before the heads split; (P, d) each) in front of its own K
and V; queries are untouched, so outputs keep their length. Prefix positions
are never masked: the key padding mask grows by P "attend" entries.

Three attention kinds:

* nn.MultiheadAttention, made explicit (attention.Attention); the layer wraps
  the Attention, its forward is the base's, and it sets the Attention's
  ``kv_hook`` to add the prefixes; detach() clears the hook so remove_adapter
  gives back the original MultiheadAttention.
* Hugging Face BERT-style self-attention (``attention.self``): the layer
  re-implements its forward (transformers 4.57: q/k/v Linears, additive
  extended mask, softmax attention with dropout on the probabilities) with the
  prefixes added; inactive, it calls the base unchanged.
* transformers' WhisperAttention (encoder and decoder self-attention,
  cross-attention), re-implemented the same way; the KV cache holds only
  the real keys (PrefixWhisperAttentionLayer).

Parameters: ``tasks.<task>.key`` / ``.value`` (P, d) per layer; with
``prefix_projection`` the method holds ``tasks.<task>.embedding`` (P, d0) and
``.down`` (d0 -> hidden) and each layer ``tasks.<task>.up`` (hidden -> 2 d),
which is peft's one MLP with its output rows split by layer.

Not zero-init: even zero prefixes take softmax mass from the real keys.
"""

from __future__ import annotations

import inspect
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from components.adapters.attention import Attention, explicit_attention
from components.adapters.base import AdapterLayer, AdapterMethod
from components.adapters.prefix.config import PrefixConfig
from components.adapters.prompt.layer import task_rows
from components.adapters.registry import register


def is_hf_self_attention(module: nn.Module) -> bool:
    """BERT-style self-attention: query/key/value Linears and a head count (BertSelfAttention, BertSdpaSelfAttention, copies)."""
    return all(isinstance(getattr(module, n, None), nn.Linear) for n in ("query", "key", "value")) and hasattr(module, "num_attention_heads")


def is_whisper_attention(module: nn.Module) -> bool:
    """transformers' WhisperAttention (and copies): q/k/v/out_proj Linears, heads, scaling, a KV-cache layer index."""
    return all(isinstance(getattr(module, n, None), nn.Linear) for n in ("q_proj", "k_proj", "v_proj", "out_proj")) and all(
        hasattr(module, n) for n in ("num_heads", "head_dim", "scaling", "is_causal", "layer_idx")
    )


def attention_width(module: nn.Module) -> int:
    if isinstance(module, Attention):
        return module.mha.embed_dim
    return module.embed_dim if is_whisper_attention(module) else module.all_head_size


class PrefixLayer(AdapterLayer):
    """Owns one attention layer's per-task prefixes; subclasses put them into the attention."""

    def __init__(self, base: nn.Module, method: AdapterMethod, path: str, depth: int, batch_dim: int) -> None:
        super().__init__(base, method, path, depth, batch_dim)
        self.width = attention_width(base)  # d: width of the projected keys / values
        self.n_tokens = self.adapter_config.num_virtual_tokens

    def new_task(self, task: str) -> nn.Module:
        cfg, module = self.adapter_config, nn.Module()
        if cfg.prefix_projection:
            module.up = nn.Linear(cfg.projection_hidden, 2 * self.width)  # -> [keys | values]
        else:
            module.key = nn.Parameter(torch.randn(self.n_tokens, self.width) * cfg.init_std)  # (P, d)
            module.value = nn.Parameter(torch.randn(self.n_tokens, self.width) * cfg.init_std)  # (P, d)
        return module

    def task_kv(self, task: str) -> torch.Tensor:
        """(P, 2 d): the task's keys then values."""
        t = self.tasks[task]
        if self.adapter_config.prefix_projection:
            return t.up(self.method.hidden(task))
        return torch.cat([t.key, t.value], dim=-1)

    def prefixes(self, batch: int, like: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Each row's task keys and values, (B, P, d) each, in ``like``'s dtype."""
        kv = task_rows(self.method.router, batch, like.device, self.task_kv).to(like.dtype)  # (B, P, 2d)
        return kv[..., : self.width], kv[..., self.width :]


class PrefixAttentionLayer(PrefixLayer):
    """Around an explicit Attention: the prefixes go in through its kv_hook."""

    def __init__(self, base: Attention, method: AdapterMethod, path: str, depth: int, batch_dim: int) -> None:
        if base.kv_hook is not None:
            raise ValueError(f"prefix: the attention at '{path}' already has a kv_hook (another prefix adapter?); remove that one first")
        super().__init__(base, method, path, depth, batch_dim)
        base.kv_hook = self.extend

    def forward(self, *args: Any, **kwargs: Any) -> Any:
        attn_mask = kwargs.get("attn_mask", args[5] if len(args) > 5 else None)  # Attention.forward's 6th argument
        if attn_mask is not None and self.method.active:
            raise ValueError(f"prefix at '{self.path}': attn_mask (T, S) is not supported; the key padding mask is")
        return self.base(*args, **kwargs)

    def extend(self, k: torch.Tensor, v: torch.Tensor, key_padding_mask: torch.Tensor | None):
        """k, v (B, S, d) -> (B, P+S, d); the mask (B, S) -> (B, P+S) with the prefixes unmasked."""
        if not self.method.active:
            return k, v, key_padding_mask
        B = k.size(0)
        pk, pv = self.prefixes(B, k)
        if key_padding_mask is not None:  # bool True = padding, or additive floats: False / 0.0 attends either way
            key_padding_mask = torch.cat([key_padding_mask.new_zeros(B, self.n_tokens), key_padding_mask], dim=1)
        return torch.cat([pk, k], dim=1), torch.cat([pv, v], dim=1), key_padding_mask


class PrefixSelfAttentionLayer(PrefixLayer):
    """Around a Hugging Face BERT-style self-attention, whose forward it re-implements with the prefixes."""

    def __init__(self, base: nn.Module, method: AdapterMethod, path: str, depth: int, batch_dim: int) -> None:
        kind = type(base).__name__
        if getattr(base, "position_embedding_type", "absolute") != "absolute":
            raise TypeError(f"prefix: '{path}' ({kind}) uses {base.position_embedding_type!r} position scores; only 'absolute' is supported")
        if getattr(base, "is_decoder", False):
            raise TypeError(f"prefix: '{path}' ({kind}) is a decoder's (causal / cross) attention; only encoder self-attention is supported")
        super().__init__(base, method, path, depth, batch_dim)
        self.heads, self.head_dim = base.num_attention_heads, base.attention_head_size
        self._signature = inspect.signature(base.forward)

    def forward(self, *args: Any, **kwargs: Any) -> tuple[torch.Tensor, None]:
        if not self.method.active:
            return self.base(*args, **kwargs)
        a = self._signature.bind(*args, **kwargs).arguments
        for name in ("head_mask", "encoder_hidden_states", "past_key_values", "past_key_value", "output_attentions"):
            value = a.get(name)
            if value is not None and value is not False:
                raise ValueError(f"prefix at '{self.path}': {name} is not supported by prefix tuning")
        hidden = a["hidden_states"]
        pk, pv = self.prefixes(hidden.size(0), hidden)
        return self.attend(hidden, a.get("attention_mask"), pk, pv), None

    def attend(self, hidden: torch.Tensor, mask: torch.Tensor | None, pk: torch.Tensor, pv: torch.Tensor) -> torch.Tensor:
        """BERT self-attention over [prefix; tokens]: hidden (B, T, D), mask additive (B|1, 1, T|1, T) or None, pk/pv (B, P, d) -> (B, T, d)."""
        base = self.base
        B, T, _ = hidden.shape
        P = pk.size(1)
        q = base.query(hidden)  # (B, T, d)
        k = torch.cat([pk, base.key(hidden)], dim=1)  # (B, P+T, d)
        v = torch.cat([pv, base.value(hidden)], dim=1)
        q, k, v = (t.view(B, -1, self.heads, self.head_dim).transpose(1, 2) for t in (q, k, v))  # (B, h, T|P+T, d/h)
        if mask is not None:
            attend = torch.ones((), dtype=torch.bool) if mask.dtype == torch.bool else torch.zeros((), dtype=mask.dtype)  # SDPA: bool True / 0.0 = attend
            mask = torch.cat([attend.to(mask.device).expand(*mask.shape[:-1], P), mask], dim=-1)  # (..., P+T)
        dropout = base.dropout.p if base.training else 0.0  # the base's mode: a fresh wrapper starts in train mode
        out = F.scaled_dot_product_attention(q, k, v, attn_mask=mask, dropout_p=dropout)  # (B, h, T, d/h)
        return out.transpose(1, 2).reshape(B, T, self.width)


class PrefixWhisperAttentionLayer(PrefixLayer):
    """Around transformers' WhisperAttention (self- or cross-attention), whose forward it re-implements
    (transformers 4.57) with the prefixes in front of the keys and values.

    The KV cache keeps only the real keys: the prefixes join after it, so a decoding step on the cache
    sees them once. With no mask and a causal attention (the decoder's self-attention), the causal mask
    is built here: query i (at position past + i) sees the prefixes and keys 0 .. past + i."""

    def forward(self, hidden_states: torch.Tensor, key_value_states: torch.Tensor | None = None, past_key_values: Any = None,
                attention_mask: torch.Tensor | None = None, layer_head_mask: torch.Tensor | None = None, output_attentions: bool = False,
                cache_position: torch.Tensor | None = None, **kwargs: Any) -> tuple[torch.Tensor, None]:
        base = self.base
        if not self.method.active:
            return base(hidden_states, key_value_states, past_key_values, attention_mask, layer_head_mask, output_attentions, cache_position, **kwargs)
        if layer_head_mask is not None or output_attentions:
            raise ValueError(f"prefix at '{self.path}': layer_head_mask and output_attentions are not supported by prefix tuning")
        B, T = hidden_states.shape[:-1]
        heads = lambda t: t.view(B, -1, base.num_heads, base.head_dim).transpose(1, 2)  # (B, L, d) -> (B, h, L, d/h)
        q = heads(base.q_proj(hidden_states) * base.scaling)  # scaled before the product, as Whisper does
        k, v = self._keys_values(hidden_states, key_value_states, past_key_values, cache_position, heads)  # (B, h, S, d/h)
        pk, pv = (heads(t) for t in self.prefixes(B, hidden_states))  # (B, h, P, d/h)
        S = k.shape[2]
        mask = attention_mask[..., :S] if attention_mask is not None else None  # (B|1, 1, T, S), as Whisper's eager path slices it
        if mask is None and base.is_causal and key_value_states is None and T > 1:
            mask = torch.ones(T, S, dtype=torch.bool, device=q.device).tril(S - T)  # True = attend
        if mask is not None:
            attend = torch.ones((), dtype=torch.bool) if mask.dtype == torch.bool else torch.zeros((), dtype=mask.dtype)
            mask = torch.cat([attend.to(mask.device).expand(*mask.shape[:-1], self.n_tokens), mask], dim=-1)  # (..., P+S)
        dropout = base.dropout if base.training else 0.0
        out = F.scaled_dot_product_attention(q, torch.cat([pk, k], dim=2), torch.cat([pv, v], dim=2), attn_mask=mask, dropout_p=dropout, scale=1.0)
        return base.out_proj(out.transpose(1, 2).reshape(B, T, self.width)), None

    def _keys_values(self, hidden_states, key_value_states, cache, cache_position, heads):
        """The real keys and values (B, h, S, d/h), from the cache where Whisper would read them, else projected (and cached)."""
        base = self.base
        cross = key_value_states is not None
        if cache is not None and hasattr(cache, "cross_attention_cache"):  # an EncoderDecoderCache
            updated = cache.is_updated.get(base.layer_idx)
            if cross:
                cache.is_updated[base.layer_idx] = True
                if updated:
                    layer = cache.cross_attention_cache.layers[base.layer_idx]
                    return layer.keys, layer.values
            cache = cache.cross_attention_cache if cross else cache.self_attention_cache
        source = key_value_states if cross else hidden_states
        k, v = heads(base.k_proj(source)), heads(base.v_proj(source))
        if cache is not None:
            k, v = cache.update(k, v, base.layer_idx, {"cache_position": None if cross else cache_position})
        return k, v


def attention_targets(model: nn.Module, path: str, module: nn.Module) -> list[tuple[str, nn.Module]]:
    """The attention modules at or inside ``path`` (outermost only); MultiheadAttention made explicit."""
    found: list[str] = []

    def visit(sub: str, m: nn.Module) -> None:
        if isinstance(m, PrefixLayer):
            raise ValueError(f"prefix: '{path}.{sub}' already has a prefix adapter")
        if isinstance(m, (nn.MultiheadAttention, Attention)) or is_hf_self_attention(m) or is_whisper_attention(m):
            found.append(f"{path}.{sub}" if sub else path)
            return
        for name, child in m.named_children():
            visit(f"{sub}.{name}" if sub else name, child)

    visit("", module)
    if not found:
        raise TypeError(
            f"prefix adapts attention (nn.MultiheadAttention, a BERT-style self-attention or a WhisperAttention); target '{path}' ({type(module).__name__}) holds none"
        )
    out = []
    for p in found:
        m = model.get_submodule(p)
        out.append((p, explicit_attention(model, p) if isinstance(m, nn.MultiheadAttention) else m))
    return out


@register
class PrefixMethod(AdapterMethod):
    config_cls = PrefixConfig
    layer_cls = PrefixLayer

    def select(self, model: nn.Module, path: str, module: nn.Module) -> list[tuple[str, nn.Module]]:
        return attention_targets(model, path, module)

    def prepare(self, targets: list[tuple[str, nn.Module]]) -> None:
        self.embed_width = attention_width(targets[0][1]) if targets else 0  # the projection's input width (peft: token_dim)

    def wrap(self, path: str, module: nn.Module, depth: int, batch_dim: int) -> PrefixLayer:
        if isinstance(module, Attention):
            cls = PrefixAttentionLayer
        else:
            cls = PrefixWhisperAttentionLayer if is_whisper_attention(module) else PrefixSelfAttentionLayer
        return cls(module, self, path, depth, batch_dim)

    def new_task(self, task: str) -> nn.Module | None:
        cfg = self.config
        if not cfg.prefix_projection:
            return None
        module = nn.Module()
        module.embedding = nn.Parameter(torch.randn(cfg.num_virtual_tokens, self.embed_width) * cfg.init_std)  # (P, d0)
        module.down = nn.Linear(self.embed_width, cfg.projection_hidden)
        return module

    def hidden(self, task: str) -> torch.Tensor:
        """(P, projection_hidden): the reparameterisation's shared hidden layer for ``task``."""
        t = self.tasks[task]
        return torch.tanh(t.down(t.embedding))

    def detach(self, model: nn.Module) -> None:
        for layer in self.layers.values():
            if isinstance(layer, PrefixAttentionLayer) and layer.base.kv_hook == layer.extend:
                layer.base.kv_hook = None
