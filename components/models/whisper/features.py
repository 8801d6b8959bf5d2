"""Whisper's log-mel features in torch (differentiable, so SE losses reach through them).

OpenAI's pipeline, as transformers' ``WhisperFeatureExtractor`` computes it:

    wave (B, L) 16 kHz, zero-padded to the context (30 s = 480,000 samples for the reference)
    --STFT n_fft 400, hop 160, periodic Hann, centred with reflection--> |X|^2 (B, 201, F + 1)
    drop the last frame --slaney mel filters (80 or 128)--> (B, n_mels, F)
    log10(max(., 1e-10)); floor at (the utterance's max - 8); (x + 4) / 4

F = samples / 160: 3000 frames for 30 s. An utterance's frames over its own audio do not depend
on how far it is padded (the padding is silence at the floor), so a batch can be padded to its
own longest clip instead of to 30 s.
"""

from __future__ import annotations

import torch
import torchaudio
from torch import nn

SAMPLE_RATE = 16_000
HOP = 160
N_FFT = 400
FRAMES_PER_SECOND = SAMPLE_RATE // HOP  # 100 mel frames a second; the encoder halves it (conv2 stride 2)


class WhisperLogMel(nn.Module):
    def __init__(self, n_mels: int = 80) -> None:
        super().__init__()
        # (201, n_mels); the same filters as transformers' mel_filter_bank(norm="slaney", mel_scale="slaney")
        filters = torchaudio.functional.melscale_fbanks(N_FFT // 2 + 1, 0.0, 8000.0, n_mels, SAMPLE_RATE, norm="slaney", mel_scale="slaney")
        self.register_buffer("filters", filters, persistent=False)
        self.register_buffer("window", torch.hann_window(N_FFT), persistent=False)

    def forward(self, wave: torch.Tensor, frames: int) -> torch.Tensor:
        """wave (B, L) zero-padded or cut to frames * 160 samples -> features (B, n_mels, frames)."""
        samples = frames * HOP
        wave = wave.float()
        if wave.shape[1] < samples:
            wave = nn.functional.pad(wave, (0, samples - wave.shape[1]))
        wave = wave[:, :samples]
        spec = torch.stft(wave, N_FFT, HOP, window=self.window, center=True, pad_mode="reflect", return_complex=True)
        power = spec[..., :-1].abs() ** 2  # (B, 201, frames)
        mel = (self.filters.T @ power).clamp(min=1e-10).log10()  # (B, n_mels, frames)
        floor = mel.amax(dim=(1, 2), keepdim=True) - 8.0
        return (torch.maximum(mel, floor) + 4.0) / 4.0


def frames_for(lengths: torch.Tensor | list[int], context_frames: int) -> int:
    """Mel frames for a batch padded to its own longest clip: even (the encoder halves it), at most the context."""
    longest = int(max(lengths)) if len(lengths) else 0
    needed = -(-longest // HOP)
    return min(context_frames, needed + (needed % 2))
