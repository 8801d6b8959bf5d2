"""Speech enhancement by spectral masking: noisy waveform -> enhanced waveform.

    noisy (B, L) --STFT--> X (B, F, T) complex --log1p|X|--> GRU over time --> mask (B, F, T) in (0, 1)
    enhanced = iSTFT(mask * X)   (B, L)

The output is a waveform, so it feeds the ASR front end (log-mel) directly and
gradients of ASR/NLU losses reach the enhancer.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn
from torch.nn.utils.rnn import pad_sequence


@dataclass
class SEConfig:
    n_fft: int = 512  # 32 ms at 16 kHz -> F = 257 bins
    hop: int = 128
    hidden: int = 128
    layers: int = 2
    mask_bias: float = 3.0  # sigmoid(3) ~ 0.95: starts close to the identity


class MaskEnhancer(nn.Module):
    def __init__(self, cfg: SEConfig | None = None) -> None:
        super().__init__()
        self.cfg = cfg = cfg or SEConfig()
        bins = cfg.n_fft // 2 + 1
        self.register_buffer("window", torch.hann_window(cfg.n_fft), persistent=False)
        self.rnn = nn.GRU(bins, cfg.hidden, num_layers=cfg.layers, batch_first=True)
        self.mask = nn.Linear(cfg.hidden, bins)
        nn.init.zeros_(self.mask.weight)
        nn.init.constant_(self.mask.bias, cfg.mask_bias)

    def stft(self, wave: torch.Tensor) -> torch.Tensor:
        return torch.stft(wave.float(), self.cfg.n_fft, self.cfg.hop, window=self.window, return_complex=True)

    def forward(self, noisy: torch.Tensor, lengths: torch.Tensor | None = None) -> torch.Tensor:
        """noisy (B, L), lengths (B,) in samples (default: all L) -> enhanced (B, L), zero past each length.

        The STFT and iSTFT run per row on the row's own samples and the GRU is causal, so an utterance
        is enhanced the same whatever it is batched with."""
        lengths = lengths.tolist() if lengths is not None else [noisy.shape[-1]] * noisy.shape[0]
        specs = [self.stft(noisy[b, :n]) for b, n in enumerate(lengths)]  # (F, T_b)
        feats = pad_sequence([torch.log1p(s.abs()).transpose(0, 1) for s in specs], batch_first=True)  # (B, T, F)
        hidden, _ = self.rnn(feats)
        masks = torch.sigmoid(self.mask(hidden)).transpose(1, 2)  # (B, F, T)
        rows = [torch.istft(s * masks[b, :, : s.shape[-1]], self.cfg.n_fft, self.cfg.hop, window=self.window, length=n) for b, (s, n) in enumerate(zip(specs, lengths))]
        return pad_sequence(rows, batch_first=True, padding_value=0.0)[:, : noisy.shape[-1]].to(noisy.dtype) if rows else noisy


def _magnitude(spec: torch.Tensor) -> torch.Tensor:
    """|spec| with a finite gradient at 0 (padding is exactly 0; |.|^0.3 and complex abs are not differentiable there)."""
    return torch.sqrt(spec.real**2 + spec.imag**2 + 1e-9)


def se_loss(enhanced: torch.Tensor, clean: torch.Tensor, lengths: torch.Tensor, model: MaskEnhancer) -> torch.Tensor:
    """Compressed-magnitude MSE (|.|^0.3, robust across levels), over the valid frames only."""
    est, ref = _magnitude(model.stft(enhanced)) ** 0.3, _magnitude(model.stft(clean)) ** 0.3  # (B, F, T)
    frames = torch.arange(est.shape[-1], device=est.device)
    valid = (frames[None, :] * model.cfg.hop < lengths[:, None]).float()[:, None, :]  # (B, 1, T)
    return ((est - ref) ** 2 * valid).sum() / (valid.sum() * est.shape[1]).clamp(min=1)


def si_snr(estimate: torch.Tensor, reference: torch.Tensor, eps: float = 1e-8) -> torch.Tensor:
    """Scale-invariant SNR in dB per utterance, (B, L) x (B, L) -> (B,)."""
    estimate = estimate - estimate.mean(-1, keepdim=True)
    reference = reference - reference.mean(-1, keepdim=True)
    target = (estimate * reference).sum(-1, keepdim=True) / (reference.pow(2).sum(-1, keepdim=True) + eps) * reference
    noise = estimate - target
    return 10 * torch.log10(target.pow(2).sum(-1) / (noise.pow(2).sum(-1) + eps) + eps)
