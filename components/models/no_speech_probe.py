"""Did anybody speak? A logistic regression over a clip's spectral statistics, fitted on commands and
synthesized non-speech (components/data/nonspeech.py), and calibrated on held-out commands.

    statistics = NoSpeechProbe().statistics(wave (B, L), lengths (B,))   # (B, 4 n_mels)
    probe = NoSpeechProbe.fit(speech (N, 4M), nonspeech (K, 4M))
    probe.calibrate(commands (C, 4M), max_false_rejection=0.01, threshold=0.6)
    probe(wave, lengths) -> (B,) probability that nobody spoke

A cascade holds it (Cascade.set_no_speech_probe) and asks it about the raw input, before its speech
enhancement; the ASR then takes the probe's probability in place of its own (Whisper: <|nospeech|> at
the first step).

The statistics are, per mel bin, the spread of the clip's frames and of their change over 10, 50 and
200 ms (LAGS): speech moves from phone to phone and syllable to syllable; hum, tones and noise move
little, and a crowd's babble moves fast but not at a syllable's pace. A log-mel floored relative to
the clip's own maximum (Whisper's) shifts every frame alike when the clip gets louder, so none of them
depends on its level (a quiet command is not "nobody"); means would.

Chosen on nas_val and the calibration non-speech set (seed 0), by hand, at 1 % of commands rejected:
with the 10 ms change alone, 4-5 of 112 non-speech clips were answered (babble); with the 3 lags, 0-1.
Read after the enhancer, the same statistics answered 11 (its output of noise moves like speech);
with their means, the commands 25 dB quieter were nearly all rejected. benchmarks/no_speech.py measures
the probe against Whisper's own probability on the test split. Everything is a buffer, so no optimizer
touches the probe when the model around it trains.
"""

from __future__ import annotations

import math

import torch
from torch import nn

from components.models.whisper.features import HOP, WhisperLogMel, frames_for

LAGS = (1, 5, 20)  # mel frames (10 ms each) between the frames whose change is spread
CUT_MARGIN = 1e-3  # logits: the highest command that must be answered sits this far under the threshold (float32 rounding)


def mel_statistics(features: torch.Tensor, frames: torch.Tensor, lags: tuple[int, ...] = LAGS) -> torch.Tensor:
    """features (B, M, F), each row's first ``frames[b]`` frames its own -> (B, (1 + len(lags)) M): per bin the
    standard deviation over the row's frames, then that of the change over each lag (frames apart)."""
    B, M, F = features.shape
    frames = frames.to(features.device).clamp(1, F)
    own = (torch.arange(F, device=features.device)[None, :] < frames[:, None]).to(features.dtype)[:, None, :]  # (B, 1, F)

    def spread(x: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:  # (B, M, T), (B, 1, T) -> (B, M); 0 under 2 frames
        n = mask.sum(-1)
        mean = (x * mask).sum(-1) / n.clamp(min=1)
        return ((((x - mean[..., None]) ** 2) * mask).sum(-1) / (n - 1).clamp(min=1)).sqrt()

    parts = [spread(features, own)]
    for lag in lags:
        change, both = (features[..., lag:] - features[..., :-lag], own[..., lag:] * own[..., :-lag]) if lag < F else (features[..., :0], own[..., :0])
        parts.append(spread(change, both))
    return torch.cat(parts, dim=1)


class NoSpeechProbe(nn.Module):
    def __init__(self, n_mels: int = 80) -> None:
        super().__init__()
        self.n_mels = n_mels
        self.log_mel = WhisperLogMel(n_mels)  # floored at the clip's max - 8: the level shifts every frame alike
        size = (1 + len(LAGS)) * n_mels
        self.register_buffer("center", torch.zeros(size))  # the fit set's mean and std of each statistic
        self.register_buffer("scale", torch.ones(size))
        self.register_buffer("weight", torch.zeros(size))
        self.register_buffer("bias", torch.zeros(()))

    def statistics(self, wave: torch.Tensor, lengths: torch.Tensor) -> torch.Tensor:
        """wave (B, L) 16 kHz, each row's first ``lengths[b]`` samples its own -> (B, 4 n_mels); any padding."""
        lengths = torch.as_tensor(lengths)
        return mel_statistics(self.log_mel(wave, max(2, frames_for(lengths, 1 << 30))), (lengths + HOP - 1) // HOP)

    def forward(self, wave: torch.Tensor, lengths: torch.Tensor) -> torch.Tensor:
        """wave (B, L), lengths (B,) -> (B,) probability that nobody spoke."""
        return self.probability(self.statistics(wave, lengths))

    def logit(self, statistics: torch.Tensor) -> torch.Tensor:
        return ((statistics.float() - self.center) / self.scale) @ self.weight + self.bias

    @classmethod
    def fit(cls, speech: torch.Tensor, nonspeech: torch.Tensor, weight_decay: float = 1e-4, max_iter: int = 500) -> "NoSpeechProbe":
        """Statistics of clips with speech (N, size) and without (K, size) -> the probe (L-BFGS on the mean
        cross-entropy, each class weighted to half, plus ``weight_decay`` * |w|^2 on standardised inputs)."""
        if len(speech) < 2 or len(nonspeech) < 2:
            raise ValueError(f"a no-speech probe needs at least 2 clips of each kind, got {len(speech)} with speech and {len(nonspeech)} without")
        x = torch.cat([speech, nonspeech]).double()
        y = torch.cat([torch.zeros(len(speech)), torch.ones(len(nonspeech))]).double()
        balance = torch.cat([torch.full((len(speech),), 0.5 / len(speech)), torch.full((len(nonspeech),), 0.5 / len(nonspeech))]).double()
        center, scale = x.mean(0), x.std(0).clamp(min=1e-6)
        z = (x - center) / scale
        w = torch.zeros(x.shape[1], dtype=torch.float64, requires_grad=True)
        b = torch.zeros((), dtype=torch.float64, requires_grad=True)
        optimizer = torch.optim.LBFGS([w, b], max_iter=max_iter, line_search_fn="strong_wolfe")

        def objective() -> torch.Tensor:
            optimizer.zero_grad()
            loss = (nn.functional.binary_cross_entropy_with_logits(z @ w + b, y, reduction="none") * balance).sum() + weight_decay * (w**2).sum()
            loss.backward()
            return loss

        with torch.enable_grad():
            optimizer.step(objective)
        probe = cls(x.shape[1] // (1 + len(LAGS)))
        probe.center.copy_(center)
        probe.scale.copy_(scale)
        probe.weight.copy_(w.detach())
        probe.bias.copy_(b.detach())
        return probe

    def probability(self, statistics: torch.Tensor) -> torch.Tensor:
        """(B, 4 n_mels) from ``statistics`` -> (B,) probability that nobody spoke."""
        return torch.sigmoid(self.logit(statistics))

    def calibrate(self, commands: torch.Tensor, max_false_rejection: float, threshold: float) -> float:
        """Shift the bias so that a probability above ``threshold`` rejects at most ``max_false_rejection``
        of ``commands`` (statistics of held-out clips with speech), at the least margin: the threshold then
        sits at the score of the highest command still answered. Returns the shift (in logits)."""
        with torch.no_grad():
            scores = self.logit(commands).sort(descending=True).values
            allowed = math.floor(max_false_rejection * len(scores))
            cut = float(scores[min(allowed, len(scores) - 1)])  # the highest score that must stay answered
            shift = math.log(threshold / (1 - threshold)) - cut - CUT_MARGIN
            self.bias += shift
        return shift
