"""Conformer-CTC speech recogniser: waveform -> character posteriors.

    wave (B, L) 16 kHz --log-mel--> (B, T, 80)          T = L / 160 + 1 (10 ms frames)
    --2x Conv2d stride 2--> (B, T/4, C * 19) --Linear--> (B, T', d)
    --torchaudio Conformer x N--> states (B, T', d) --Linear--> logits (B, T', V)

Trained with CTC over CharVocab (blank = 0). Greedy decoding here; beam search
with a lexicon and an n-gram LM lives in components/models/beam.py. As an ASR
backbone (components/models/backbone.py) its states are the encoder frames and a
word is the span of frames from its first to its last character of the greedy path.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass

import torch
import torchaudio
from torch import nn
from torch.nn.utils.rnn import pad_sequence

from components.models.backbone import ASRBackbone, register_backbone
from components.models.text import CharVocab

HOP = 160  # samples per 10 ms frame at 16 kHz


@dataclass
class ASRConfig:
    n_mels: int = 80
    subsampling_channels: int = 64
    d_model: int = 144
    heads: int = 4
    ffn: int = 576
    layers: int = 4
    conv_kernel: int = 31
    dropout: float = 0.1

    def to_dict(self) -> dict:
        return asdict(self)


class LogMel(nn.Module):
    """Log-mel features normalised per utterance over its valid frames.

    Each row's STFT runs on that row's own samples (edges reflected as for the utterance alone), so an
    utterance gets the same features whatever it is batched with.
    """

    def __init__(self, n_mels: int) -> None:
        super().__init__()
        self.mel = torchaudio.transforms.MelSpectrogram(16_000, n_fft=400, hop_length=HOP, n_mels=n_mels)

    def forward(self, wave: torch.Tensor, lengths: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        rows = [self.mel(wave[b, :n].float()).transpose(0, 1) for b, n in enumerate(lengths.tolist())]  # (T_b, n_mels)
        feats = torch.log(pad_sequence(rows, batch_first=True) + 1e-6)  # (B, T, n_mels)
        frames = lengths // HOP + 1
        valid = (torch.arange(feats.shape[1], device=wave.device)[None, :] < frames[:, None]).unsqueeze(-1)  # (B, T, 1)
        count = valid.sum(1, keepdim=True).clamp(min=1)
        mean = (feats * valid).sum(1, keepdim=True) / count
        std = (((feats - mean) ** 2 * valid).sum(1, keepdim=True) / count).sqrt().clamp(min=1e-3)
        return (feats - mean) / std * valid, frames


class ConvSubsampling(nn.Module):
    """4x fewer frames: two 3x3 convolutions with stride 2 over (time, mel)."""

    def __init__(self, n_mels: int, channels: int, d_model: int) -> None:
        super().__init__()
        self.conv = nn.Sequential(nn.Conv2d(1, channels, 3, stride=2), nn.ReLU(), nn.Conv2d(channels, channels, 3, stride=2), nn.ReLU())
        freq = ((n_mels - 3) // 2 + 1 - 3) // 2 + 1
        self.out = nn.Linear(channels * freq, d_model)

    def forward(self, feats: torch.Tensor, frames: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        x = self.conv(feats.unsqueeze(1))  # (B, C, T', F')
        x = self.out(x.permute(0, 2, 1, 3).flatten(2))  # (B, T', d)
        for _ in range(2):
            frames = (frames - 3) // 2 + 1
        return x, frames.clamp(min=1)


@register_backbone
class ConformerCTC(ASRBackbone):
    kind = "conformer_ctc"
    config_cls = ASRConfig

    def __init__(self, cfg: ASRConfig | None = None, vocab: CharVocab | None = None) -> None:
        super().__init__()
        self.config = cfg = cfg or ASRConfig()
        self.vocab = vocab or CharVocab()
        self.features = LogMel(cfg.n_mels)
        self.subsampling = ConvSubsampling(cfg.n_mels, cfg.subsampling_channels, cfg.d_model)
        self.encoder = torchaudio.models.Conformer(
            input_dim=cfg.d_model,
            num_heads=cfg.heads,
            ffn_dim=cfg.ffn,
            num_layers=cfg.layers,
            depthwise_conv_kernel_size=cfg.conv_kernel,
            dropout=cfg.dropout,
        )
        self.ctc_head = nn.Linear(cfg.d_model, len(self.vocab))
        # The conformer's depthwise convolutions would read padded frames into the real ones; zeroing
        # those frames first makes them see what they see at the end of an utterance alone.
        self._valid_frames: torch.Tensor | None = None  # (B, 1, T') during forward
        for layer in self.encoder.conformer_layers:
            layer.conv_module.sequential[2].register_forward_pre_hook(self._zero_padded_frames)

    def _zero_padded_frames(self, conv: nn.Module, args: tuple) -> tuple | None:
        if self._valid_frames is None:
            return None
        return (args[0] * self._valid_frames,)  # (B, C, T')

    @property
    def hidden_size(self) -> int:
        return self.config.d_model

    def encode_targets(self, texts) -> tuple[torch.Tensor, torch.Tensor]:
        """CharVocab ids per text -> (B, S) padded with the blank, lengths (B,)."""
        rows = [self.vocab.encode(t) for t in texts]
        return pad_sequence(rows, batch_first=True), torch.tensor([r.numel() for r in rows])

    def loss(self, out: dict, targets: torch.Tensor, target_lengths: torch.Tensor) -> torch.Tensor:
        return ctc_loss(out, targets, target_lengths)

    def forward(self, wave: torch.Tensor, lengths: torch.Tensor, targets=None, target_lengths=None, words: bool = True) -> dict:
        """wave (B, L), lengths (B,) in samples -> logits (B, T', V), states (B, T', d), lengths (B,);
        with ``words``: the greedy path's words with their frame spans, and its text.

        Each utterance's output does not depend on the padding of its batch. The targets are not needed
        (CTC reads the logits)."""
        feats, frames = self.features(wave, lengths)
        x, frames = self.subsampling(feats, frames)
        frames = frames.clamp(max=x.shape[1])
        self._valid_frames = (torch.arange(x.shape[1], device=x.device)[None, :] < frames[:, None]).unsqueeze(1).to(x.dtype)
        try:
            states, frames = self.encoder(x, frames)
        finally:
            self._valid_frames = None
        out = {"logits": self.ctc_head(states), "states": states, "lengths": frames}
        if words:
            out["words"] = [hypothesis_words(p, self.vocab) for p in greedy_paths(out["logits"].detach(), frames)]
            out["texts"] = [" ".join(w for w, _, _ in h) for h in out["words"]]
        return out


def ctc_loss(out: dict[str, torch.Tensor], targets: torch.Tensor, target_lengths: torch.Tensor) -> torch.Tensor:
    """Mean CTC loss per target character; targets (B, S) padded, blank = 0."""
    log_probs = out["logits"].float().log_softmax(-1).transpose(0, 1)  # (T', B, V)
    return nn.functional.ctc_loss(log_probs, targets, out["lengths"], target_lengths, blank=0, reduction="mean", zero_infinity=True)


def greedy_paths(logits: torch.Tensor, lengths: torch.Tensor) -> list[list[int]]:
    """Best symbol per frame, per utterance, cut to its length: (B, T', V) -> B lists of ids."""
    best = logits.argmax(-1).tolist()
    return [row[:n] for row, n in zip(best, lengths.tolist())]


def collapse(path: list[int], blank: int = 0) -> list[int]:
    out, prev = [], None
    for s in path:
        if s != prev and s != blank:
            out.append(s)
        prev = s
    return out


def hypothesis_words(path: list[int], vocab: CharVocab) -> list[tuple[str, int, int]]:
    """Words of a greedy CTC path with their frame spans [start, end): [(word, start, end), ...]."""
    space = vocab.index[" "]
    words, chars, start, prev = [], [], None, None
    for t, s in enumerate(path + [space]):
        if s == vocab.blank:
            prev = s
            continue
        if s == space:
            if chars:
                words.append(("".join(chars), start, t))
            chars, start = [], None
        elif s != prev:
            chars.append(vocab.symbols[s])
            start = t if start is None else start
        prev = s
    return words


def greedy_decode(out: dict[str, torch.Tensor], vocab: CharVocab) -> list[str]:
    return [" ".join(vocab.decode(collapse(p)).split()) for p in greedy_paths(out["logits"], out["lengths"])]
