"""Whisper's vocabulary projection for greedy decoding: an int8 shortlist, then the exact fp32 argmax.

A decoder step of tiny.en reads the (V=51864, d=384) output embedding, 80 MB in fp32, to score 8 rows:
on a CPU that read, not the arithmetic, is most of the step. An int8 copy (per-token scales, fbgemm's
dynamic linear: 20 MB) scores every token approximately, with a bound on each score's error. The best
approximate token is scored exactly; only tokens whose upper bound reaches that exact score can be the
argmax (a few dozen of 51864), and those are scored exactly too. The result is the fp32 argmax, not an
approximation of it.

Conditioning: the hidden state h comes out of the decoder's final LayerNorm, h = n * g + b with n
normalised. fbgemm quantizes its input per tensor, and the large gains g would set a coarse scale, so
the int8 product runs on n against W * g (per column), plus the exact constant W b:
    h W^T = n (W g)^T + W b.
Error bound of the int8 product for token v (x: the input n, w: row v of W g, ~: their quantized values;
x per tensor in 7 bits, scale s_x = range / 127; w per row, scale s_v = max|w| / 127):
    |x.w - x~.w~| <= |x - x~|.|w| + |x~|.|w - w~| <= s_x/2 * ||w||_1 + s_v/2 * (||x||_1 + d * s_x/2)
with 1 % slack for fp32 rounding.

Off the CPU (or without fbgemm), or when the projection is no plain bias-free Linear (an adapter
wraps it), the projection runs as is and nothing is quantized. Making the int8 copy costs a few tenths
of a second and ~130 MB of transient memory (timed by hand), and saves ~10 ms a step at a batch of 16
(transcribe.json's profile): a short job (one command; 60 commands are ~100 steps) never wins it back. The first
``int8_after`` calls (256 by default) run the plain fp32 projection, and the copy is made at the next.
"""

from __future__ import annotations

import torch
from torch import nn

_ENGINES = ("x86", "fbgemm")


def pack_int8_rows(weight: torch.Tensor, bias: torch.Tensor | None = None) -> tuple[object, torch.Tensor]:
    """weight (out, in) -> (fbgemm's packed int8 copy, one scale per row = max|row| / 127 (out,)), for
    torch.ops.quantized.linear_dynamic."""
    scales = weight.abs().amax(1).clamp_min(1e-12) / 127
    qweight = torch.quantize_per_channel(weight, scales.double(), torch.zeros_like(scales, dtype=torch.long), 0, torch.qint8)
    return torch.ops.quantized.linear_prepack(qweight, bias), scales


class GreedyVocabulary:
    """argmax over the vocabulary of ``proj_out(hidden) + mask``: a (V,) mask of 0 and -inf keeps tokens out.

    Holds only the int8 copy of the projection's weight (and of the norm's parameters it folds in),
    remade when one of them changes in place (an optimizer step) or is another tensor; a copy of its
    owner (deepcopy, pickle) starts without one."""

    def __init__(self, int8_after: int = 256) -> None:
        self.int8_after = int8_after  # calls on the plain fp32 projection before the int8 copy is made
        self._calls = 0
        self._key = None  # (data_ptr, _version) of each tensor the int8 copy was made from

    def __getstate__(self) -> dict:
        return {"int8_after": self.int8_after}

    def __setstate__(self, state: dict) -> None:
        self.__init__(**state)

    def _shortlist_ready(self, proj_out: nn.Module, norm: nn.LayerNorm | None, hidden: torch.Tensor) -> bool:
        """Make the int8 copy if it is missing or stale; False where the shortlist does not apply."""
        if type(proj_out) is not nn.Linear or proj_out.bias is not None or hidden.device.type != "cpu" or hidden.dtype != torch.float32:
            return False
        if torch.backends.quantized.engine not in _ENGINES:
            return False
        weight = proj_out.weight.detach()
        d = weight.shape[1]
        gain, shift = (norm.weight.detach(), norm.bias.detach()) if norm is not None and norm.elementwise_affine else (weight.new_ones(d), weight.new_zeros(d))
        key = tuple((t.data_ptr(), t._version) for t in (weight, gain, shift))
        if key != self._key:
            self._gain = torch.where(gain.abs() < 1e-3, torch.full_like(gain, 1e-3), gain)  # any nonzero gain keeps the identity
            self._shift = shift.clone()
            folded = weight * self._gain  # (V, d)
            self._constant = weight @ self._shift  # (V,)
            self._packed, self._scales = pack_int8_rows(folded)  # scales (V,)
            self._row_l1 = folded.abs().sum(1)  # (V,)
            self._key = key
        return True

    @torch.no_grad()
    def argmax(self, proj_out: nn.Module, hidden: torch.Tensor, mask: torch.Tensor, norm: nn.LayerNorm | None = None) -> torch.Tensor:
        """hidden (B, d), mask (V,) -> (B,) the fp32 argmax of proj_out(hidden) + mask.
        ``norm``: the LayerNorm that made ``hidden`` (its gain and bias condition the int8 product), or None."""
        self._calls += 1
        if self._calls <= self.int8_after or not self._shortlist_ready(proj_out, norm, hidden):
            return (proj_out(hidden).float() + mask).argmax(-1)
        x = (hidden - self._shift) / self._gain  # (B, d)
        approx = torch.ops.quantized.linear_dynamic(x, self._packed, True) + self._constant  # (B, V); reduce_range: x in 7 bits
        s_x = float(x.max().clamp_min(0) - x.min().clamp_max(0)) / 127
        x_l1 = x.abs().sum(1, keepdim=True) + x.shape[1] * s_x / 2  # (B, 1)
        error = 1.01 * (s_x / 2 * self._row_l1 + self._scales / 2 * x_l1)  # (B, V)
        approx += mask
        guess = approx.argmax(-1)  # (B,)
        floor = (hidden * proj_out.weight[guess]).sum(-1, keepdim=True)  # (B, 1): an exact logit, so the max is >= it
        keep = approx + error >= floor  # (B, V): the tokens that can be the argmax (the guess among them)
        columns = keep.any(0).nonzero().squeeze(1)  # (C,) the union of the rows' shortlists
        exact = hidden @ proj_out.weight[columns].T  # (B, C)
        exact[~keep[:, columns]] = float("-inf")
        return columns[exact.argmax(-1)]
