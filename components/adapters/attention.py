"""nn.MultiheadAttention made explicit, so adapters can reach its projections.

torch's MultiheadAttention never calls modules for its q/k/v projections (one
raw ``in_proj_weight``) and reads ``out_proj.weight`` directly, so a LoRA
wrapped around them gets no input and no gradient. ``Attention`` computes the
same function (identical in eval, same dropout when training) from the very
same parameters, but calls ``q_proj``, ``k_proj``, ``v_proj`` and
``mha.out_proj`` as modules and offers a ``kv_hook`` for prefix tuning. It owns
the original module (``mha``) and ``restore()`` gives it back untouched.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn


class ProjectionSlice(nn.Module):
    """Rows [index*d, (index+1)*d) of the MHA's packed in-projection, as a Linear-like module."""

    def __init__(self, mha: nn.MultiheadAttention, index: int) -> None:
        super().__init__()
        if not mha._qkv_same_embed_dim:
            raise ValueError("MultiheadAttention with kdim/vdim != embed_dim is not supported")
        self._mha = [mha]  # not a child: the parameters stay registered on the MHA only
        self.index = index
        self.in_features = self.out_features = mha.embed_dim

    @property
    def weight(self) -> torch.Tensor:  # (d, d), a view: merging into it edits the MHA's parameter
        d = self.out_features
        return self._mha[0].in_proj_weight[self.index * d : (self.index + 1) * d]

    @property
    def bias(self) -> torch.Tensor | None:
        b = self._mha[0].in_proj_bias
        d = self.out_features
        return None if b is None else b[self.index * d : (self.index + 1) * d]

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.linear(x, self.weight, self.bias)


class Attention(nn.Module):
    def __init__(self, mha: nn.MultiheadAttention) -> None:
        super().__init__()
        if mha.bias_k is not None or mha.add_zero_attn:
            raise ValueError("MultiheadAttention with add_bias_kv or add_zero_attn is not supported")
        self.mha = mha
        self.q_proj, self.k_proj, self.v_proj = (ProjectionSlice(mha, i) for i in range(3))
        self.kv_hook = None  # fn(k, v, key_padding_mask) -> (k, v, mask); k, v (B, S, d)

    def restore(self) -> nn.MultiheadAttention:
        return self.mha

    def forward(
        self,
        query: torch.Tensor,
        key: torch.Tensor,
        value: torch.Tensor,
        key_padding_mask: torch.Tensor | None = None,
        need_weights: bool = False,
        attn_mask: torch.Tensor | None = None,
        average_attn_weights: bool = True,
        is_causal: bool = False,
    ) -> tuple[torch.Tensor, None]:
        mha = self.mha
        if need_weights:
            raise ValueError("adapted attention does not return attention weights (need_weights=True)")
        if not mha.batch_first:  # (T, B, d) -> (B, T, d)
            query, key, value = (t.transpose(0, 1) for t in (query, key, value))
        q, k, v = self.q_proj(query), self.k_proj(key), self.v_proj(value)  # (B, T|S, d)
        if self.kv_hook is not None:
            k, v, key_padding_mask = self.kv_hook(k, v, key_padding_mask)
        B, T, d = q.shape
        S, h = k.shape[1], mha.num_heads
        q, k, v = (t.reshape(B, -1, h, d // h).transpose(1, 2) for t in (q, k, v))  # (B, h, T|S, d/h)
        mask = _additive_mask(key_padding_mask, attn_mask, B, h, T, S, q.dtype)
        out = F.scaled_dot_product_attention(q, k, v, attn_mask=mask, dropout_p=mha.dropout if self.training else 0.0, is_causal=is_causal and mask is None)
        out = mha.out_proj(out.transpose(1, 2).reshape(B, T, d))  # (B, T, d)
        return (out if mha.batch_first else out.transpose(0, 1)), None


def _additive_mask(key_padding_mask, attn_mask, B, h, T, S, dtype) -> torch.Tensor | None:
    """(B, h|1, T|1, S) float mask with -inf where attention is not allowed, or None."""
    mask = None
    if key_padding_mask is not None:  # (B, S), True = padding (or additive floats)
        mask = _as_additive(key_padding_mask, dtype)[:, None, None, :]
    if attn_mask is not None:  # (T, S) or (B*h, T, S)
        extra = _as_additive(attn_mask, dtype)
        extra = extra.reshape(-1, h, T, S) if extra.dim() == 3 else extra
        mask = extra if mask is None else mask + extra
    return mask


def _as_additive(mask: torch.Tensor, dtype: torch.dtype) -> torch.Tensor:
    if mask.dtype == torch.bool:
        return torch.zeros(mask.shape, dtype=dtype, device=mask.device).masked_fill(mask, float("-inf"))
    return mask.to(dtype)


def explicit_attention(model: nn.Module, path: str) -> Attention:
    """Replace the MultiheadAttention at ``path`` by an equivalent Attention (once) and return it."""
    module = model.get_submodule(path)
    if isinstance(module, Attention):
        return module
    if not isinstance(module, nn.MultiheadAttention):
        raise TypeError(f"'{path}' is a {type(module).__name__}, not a MultiheadAttention")
    attention = Attention(module).train(module.training)
    set_submodule(model, path, attention)
    return attention


def set_submodule(model: nn.Module, path: str, module: nn.Module) -> None:
    parent_path, _, name = path.rpartition(".")
    parent = model.get_submodule(parent_path) if parent_path else model
    setattr(parent, name, module)
