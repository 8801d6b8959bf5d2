"""Whisper as an ASR backbone of the cascade: transformers' WhisperForConditionalGeneration inside (training,
adapters), or for inference of plain weights the plain-torch LeanWhisper (lean.py: ``pretrained(engine="lean")``).

    wave (B, L) 16 kHz --log-mel (features.py)--> (B, 80, F), F = 100 x context seconds (or the batch's longest)
    --encoder (positions sliced to F/2)--> encoder states (B, F/2, d)
    --greedy decoding (decode.py, no gradient)--> 1-best tokens (B, H)
    --decoder teacher-forced on prompt + 1-best--> states (B, 1 + H, d): the last prompt position, then one
      per hypothesis token; a word is the run of tokens from one with a leading space to the next
    training targets: prompt + " " + text + <|endoftext|>; the loss is token cross-entropy (teacher-forced)

The encoder runs its layers here rather than through transformers' WhisperEncoder.forward, which
refuses anything but 3000 frames: SLURP commands are 1-8 s, and a shorter context is 3-5x cheaper.
Transcribing (no targets), a clip longer than the window is cut at its quietest points and joined
(segments.py); training refuses it.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Sequence

import torch
from torch import nn
from torch.nn.utils.rnn import pad_sequence

from components.models.backbone import ASRBackbone, register_backbone
from components.models.whisper.decode import greedy_decode
from components.models.whisper.features import FRAMES_PER_SECOND, HOP, WhisperLogMel, frames_for
from components.models.whisper.lean import WHISPER_DIMENSIONS, LeanWhisper
from components.models.whisper.load import DEFAULT_MODEL, SpecialTokens, empty_whisper, export_ct2, export_hf, load_tokenizer, load_whisper, no_speech_id
from components.models.whisper.segments import cut_points, join_passes
from components.models.whisper.text import slurp_style
from components.models.whisper.vocabulary import GreedyVocabulary

TOKENIZER_FILE = "asr_tokenizer.json"
PAD_TO = ("context", "longest")
# the serving default for no_speech_threshold: the lowest that rejects <= 1% of the noisy nas_val commands heard
# through the bench cascade's enhancement (0.742, benchmarks/no_speech.py), rounded up
NO_SPEECH_THRESHOLD = 0.75


@dataclass
class WhisperASRConfig:
    source: str = DEFAULT_MODEL  # the name or directory the pre-trained weights came from (provenance)
    context_seconds: float = 10.0  # encoder window; 30 is Whisper's own
    pad_to: str = "context"  # "context": every clip padded to the window; "longest": to the batch's longest clip
    margin_seconds: float = 0.0  # with pad_to "longest": this much silence after the longest clip (within the window)
    max_tokens_per_second: float = 8.0  # decoding cap: 8 tokens a second of audio, plus 8
    max_repeats: int | None = 3  # stop when an n-gram comes a 4th time in a row (None: never)
    no_speech_threshold: float | None = None  # a row whose no-speech probability (the cascade probe's, else <|nospeech|>'s) is above it has no words (None: never)
    dims: dict = field(default_factory=dict)  # transformers WhisperConfig sizes
    tokens: dict = field(default_factory=dict)  # SpecialTokens as a dict

    def __post_init__(self) -> None:
        if self.pad_to not in PAD_TO:
            raise ValueError(f"pad_to must be one of {PAD_TO}, got {self.pad_to!r}")
        if self.margin_seconds < 0:
            raise ValueError(f"margin_seconds must be >= 0, got {self.margin_seconds}")
        if not 0 < self.context_seconds <= 30:
            raise ValueError(f"context_seconds must be in (0, 30], got {self.context_seconds}")
        if self.no_speech_threshold is not None and not 0 < self.no_speech_threshold <= 1:
            raise ValueError(f"no_speech_threshold must be in (0, 1] or None, got {self.no_speech_threshold}")


class AudioTooLong(ValueError):
    """A clip longer than the encoder's context."""


@register_backbone
class WhisperASR(ASRBackbone):
    kind = "whisper"
    config_cls = WhisperASRConfig
    runtime_options = ("pad_to", "margin_seconds", "max_tokens_per_second", "max_repeats", "no_speech_threshold")

    def __init__(self, config: WhisperASRConfig, whisper=None, tokenizer=None) -> None:
        """``whisper``/``tokenizer`` as loaded by ``pretrained``; without ``whisper``, the architecture of
        ``config.dims`` on the meta device (no memory), for a caller that loads the weights (load_state_dict_file)."""
        super().__init__()
        self.config = config
        self.whisper = empty_whisper(config.dims) if whisper is None else whisper
        self.tokenizer = tokenizer
        self.tokens = SpecialTokens(**config.tokens)
        if self.tokens.no_speech is None and tokenizer is not None:  # cascades saved before it was recorded
            self.tokens.no_speech = no_speech_id(tokenizer)
        self.log_mel = WhisperLogMel(self.whisper.config.num_mel_bins)
        self._space_starts = None  # (V,) bool: tokens that begin with a space, built on first use
        self._vocabulary = GreedyVocabulary()  # greedy decoding's int8 copy of the output projection

    @classmethod
    def pretrained(cls, source: str = DEFAULT_MODEL, engine: str = "transformers", **options) -> "WhisperASR":
        """Load pre-trained weights offline (a name, a CTranslate2 or a Hugging Face directory). ``engine``
        "lean": the plain-torch LeanWhisper, for inference (no dropout, no prompt or prefix tuning; start-up
        without importing transformers); "transformers": WhisperForConditionalGeneration, for everything."""
        whisper, tokenizer, tokens, files = load_whisper(source, engine)
        dims = {k: getattr(whisper.config, k) for k in WHISPER_DIMENSIONS}
        config = WhisperASRConfig(source=files.source, dims=dims, tokens=asdict(tokens), **options)
        return cls(config, whisper, tokenizer)

    create = pretrained  # a run config's {"kind": "whisper", "source": ..., ...} loads the pre-trained weights

    # ------------------------------------------------------------------ the interface

    @property
    def lean(self) -> bool:
        """True on the inference-only LeanWhisper engine."""
        return isinstance(self.whisper, LeanWhisper)

    def to_inference_engine(self) -> bool:
        """Run on LeanWhisper from now on, with the same weights (shared, not copied): for serving and
        prediction, not training (no dropout). Only plain weights move: a Whisper with adapters or search
        cells inside has other parameter names, and stays on transformers' (False). Adapters added
        afterwards attach to LeanWhisper by the same roles, except prompt and prefix tuning."""
        if self.lean:
            return True
        lean = empty_whisper(self.config.dims, "lean")
        state = self.whisper.state_dict()
        if set(state) != set(lean.state_dict()):
            return False
        lean.load_state_dict(state, strict=True, assign=True)
        lean.tie_weights()
        self.whisper = lean.eval()
        return True

    @property
    def hidden_size(self) -> int:
        return self.whisper.config.d_model

    @property
    def max_seconds(self) -> float:
        return self.config.context_seconds

    @property
    def context_frames(self) -> int:
        return int(round(self.config.context_seconds * FRAMES_PER_SECOND / 2)) * 2

    def encode_targets(self, texts: Sequence[str]) -> tuple[torch.Tensor, torch.Tensor]:
        """prompt + " " + text + <|endoftext|> per text -> (B, S) padded with <|endoftext|>, lengths (B,)."""
        rows = [torch.tensor(self.tokens.prompt + self.tokenizer.encode(" " + t.strip()) + [self.tokens.eot]) for t in texts]
        return pad_sequence(rows, batch_first=True, padding_value=self.tokens.eot), torch.tensor([len(r) for r in rows])

    @property
    def front_levels(self) -> tuple[tuple[str, str | None], ...]:
        """log-mel "features" (B, n_mels, F) read no parameter; "encoder_states" (B, F/2, d) read the encoder's.
        Only at a fixed window (a clip's features then do not depend on its batch) and without dropout."""
        c = self.whisper.config
        if self.config.pad_to != "context" or c.dropout or c.encoder_layerdrop:
            return ()
        return (("features", None), ("encoder_states", "whisper.model.encoder"))

    def front(self, wave: torch.Tensor, lengths: torch.Tensor, level: str) -> torch.Tensor:
        """wave (B, L) -> the front level: features (B, n_mels, F) or encoder states (B, F/2, d)."""
        if level not in dict(self.front_levels):
            raise ValueError(f"Whisper front level {level!r}: this configuration has {[name for name, _ in self.front_levels]}")
        self.check_durations(lengths)
        features = self.log_mel(wave, self.context_frames)
        return features if level == "features" else self.encode_features(features)

    def forward(
        self, wave: torch.Tensor, lengths: torch.Tensor, targets: torch.Tensor | None = None, target_lengths: torch.Tensor | None = None,
        words: bool = True, front: tuple[str, torch.Tensor] | None = None, no_speech: Sequence[float] | None = None,
    ) -> dict:
        """wave (B, L), lengths (B,) -> {states, lengths, words, texts, tokens, no_speech_prob, speech, encoder_states[, target_logits]};
        ``front``: (level, its tensor) computed earlier by ``front`` (wave then only gives the lengths);
        ``no_speech``: each row's probability that nobody spoke, decided before (the cascade's probe), in place of <|nospeech|>'s.
        Clips longer than the window, transcribed (no targets): cut into windows and joined (no encoder_states)."""
        if front is None and targets is None and words and max((int(n) for n in lengths), default=0) > self.context_frames * HOP:
            return self.long_hypotheses(wave, lengths, no_speech)
        if front is None:
            encoder_states = self.encode(wave, lengths)
        else:
            level, x = front
            encoder_states = x if level == "encoder_states" else self.encode_features(x)
        out: dict = {"encoder_states": encoder_states}
        if targets is not None:
            out["target_logits"] = self.whisper.proj_out(self.decoder_states(targets[:, :-1], encoder_states))  # (B, S - 1, V): token j + 1 from 0..j
        if words:
            out.update(self.hypotheses(encoder_states, lengths, no_speech))
        return out

    def loss(self, out: dict, targets: torch.Tensor, target_lengths: torch.Tensor) -> torch.Tensor:
        """Mean cross-entropy per target token (the text and <|endoftext|>, not the prompt)."""
        logits = out["target_logits"].float()  # (B, S - 1, V)
        labels = targets[:, 1:].clone()
        position = torch.arange(labels.shape[1], device=labels.device)[None, :]
        keep = (position >= len(self.tokens.prompt) - 1) & (position < (target_lengths.to(labels.device) - 1)[:, None])
        labels[~keep] = -100
        return nn.functional.cross_entropy(logits.transpose(1, 2), labels, ignore_index=-100)

    # ------------------------------------------------------------------ parts

    def check_durations(self, lengths: torch.Tensor | Sequence[int]) -> None:
        limit = self.context_frames * HOP
        for row, n in enumerate([int(x) for x in lengths]):
            if n > limit:
                raise AudioTooLong(f"row {row}: a clip of {n / 16000:.2f} s is longer than the Whisper context of {self.config.context_seconds:g} s; cut it, or use a longer context (at most 30 s)")

    def encode(self, wave: torch.Tensor, lengths: torch.Tensor) -> torch.Tensor:
        """wave (B, L) -> encoder states (B, F/2, d): conv front end, positions [0, F/2), layers, final norm."""
        self.check_durations(lengths)
        return self.encode_features(self.log_mel(wave, self.frames(lengths)))

    def frames(self, lengths: torch.Tensor | Sequence[int]) -> int:
        """Mel frames of a batch: the window, or (pad_to "longest") its longest clip plus the margin, within the window."""
        if self.config.pad_to == "context":
            return self.context_frames
        margin = int(self.config.margin_seconds * 16000)
        return max(2, frames_for([int(n) + margin for n in lengths], self.context_frames))

    def encode_features(self, features: torch.Tensor) -> torch.Tensor:
        """log-mel (B, n_mels, F), F even and <= 3000 -> (B, F/2, d)."""
        if self.lean:
            return self.whisper.encoder(features)
        enc = self.whisper.model.encoder
        x = nn.functional.gelu(enc.conv1(features))
        x = nn.functional.gelu(enc.conv2(x)).transpose(1, 2)  # (B, F/2, d)
        if x.shape[1] > enc.embed_positions.num_embeddings:
            raise AudioTooLong(f"{features.shape[-1]} mel frames exceed Whisper's {2 * enc.embed_positions.num_embeddings}")
        x = x + enc.embed_positions.weight[: x.shape[1]]
        x = nn.functional.dropout(x, p=enc.dropout, training=self.training)
        for layer in enc.layers:
            x = layer(x, None, layer_head_mask=None)[0]
        return enc.layer_norm(x)

    def decoder_states(self, inputs: torch.Tensor, encoder_states: torch.Tensor) -> torch.Tensor:
        """Token ids (B, S), teacher-forced -> the decoder's hidden states (B, S, d) after its final norm."""
        if self.lean:
            return self.whisper.teacher_forced(inputs, encoder_states)
        return self.whisper.model.decoder(input_ids=inputs, encoder_hidden_states=encoder_states, use_cache=False).last_hidden_state

    def long_hypotheses(self, wave: torch.Tensor, lengths: torch.Tensor, no_speech: Sequence[float] | None = None) -> dict:
        """Hypotheses of clips of any length: each cut into windows (at most 3 s, or half the window, before
        a window ends, at the quietest 20 ms), transcribed one window of every row per pass, then joined.
        A row out of windows gets 10 ms of silence in the later passes, dropped when joining."""
        window = self.context_frames * HOP
        cuts = [cut_points(wave[b, : int(n)], window, min(3 * 16000, window // 2)) for b, n in enumerate(lengths)]
        passes = []
        for k in range(max(len(c) for c in cuts)):
            pieces = [wave[b, c[k][0] : c[k][1]] if k < len(c) else wave.new_zeros(HOP) for b, c in enumerate(cuts)]
            piece_lengths = torch.tensor([p.numel() for p in pieces], device=wave.device)
            passes.append(self.hypotheses(self.encode(pad_sequence(pieces, batch_first=True), piece_lengths), piece_lengths, no_speech))
        return join_passes(passes, [len(c) for c in cuts])

    def max_new_tokens(self, lengths: torch.Tensor | Sequence[int]) -> list[int]:
        room = self.whisper.config.max_target_positions - len(self.tokens.prompt)
        return [min(room, math.ceil(int(n) / 16000 * self.config.max_tokens_per_second) + 8) for n in lengths]

    def hypotheses(self, encoder_states: torch.Tensor, lengths: torch.Tensor, no_speech: Sequence[float] | None = None) -> dict:
        """1-best tokens (greedy), then the decoder's states teacher-forced on them, with their word spans;
        ``speech``: False for a row whose no-speech probability (``no_speech`` where given, else <|nospeech|>'s
        at the first step) is above ``no_speech_threshold`` (no words)."""
        was_training = self.training
        self.eval()  # no dropout while choosing the 1-best
        try:
            best, own_no_speech = greedy_decode(
                self.whisper, encoder_states.detach(), self.tokens, self.max_new_tokens(lengths), self.config.max_repeats, self._vocabulary
            )
        finally:
            self.train(was_training)
        no_speech = own_no_speech if no_speech is None else [float(p) for p in no_speech]
        threshold = self.config.no_speech_threshold
        if threshold is not None and no_speech is None:
            raise ValueError("no_speech_threshold is set, but this Whisper's vocabulary has no <|nospeech|> token")
        speech = [True] * len(best) if threshold is None else [p <= threshold for p in no_speech]
        best = [tokens if spoken else [] for tokens, spoken in zip(best, speech)]
        P = len(self.tokens.prompt)
        inputs = pad_sequence([torch.tensor(self.tokens.prompt + b) for b in best], batch_first=True, padding_value=self.tokens.eot).to(encoder_states.device)
        hidden = self.decoder_states(inputs, encoder_states)
        return {
            "states": hidden[:, P - 1 :],  # (B, 1 + H, d): the last prompt position, then each 1-best token
            "lengths": torch.tensor([1 + len(b) for b in best], device=encoder_states.device),
            "words": [self.word_spans(b, offset=1) for b in best],
            "texts": [self.tokenizer.decode(b).strip() for b in best],
            "tokens": best,
            "no_speech_prob": no_speech,  # B floats, or None
            "speech": speech,
        }

    def mean_logprob(self, states: torch.Tensor, best: list[list[int]]) -> list[float]:
        """states (B, 1 + H, d) of ``hypotheses`` (teacher-forced on ``best``) -> each row's mean log
        probability of its tokens and the end of text, as OpenAI's decoding reports ``avg_logprob``: the
        decoder's confidence in what it wrote, with the tokens greedy decoding suppresses kept out.
        (OpenAI's transcribe keeps a clip its no-speech probability would silence when this is above -1;
        benchmarks/no_speech.py measured that rule here: it answers silence, so the gate does not use it.)"""
        scores = []
        for b, tokens in enumerate(best):  # one row at a time: (1 + H, V) logits, not (B, 1 + H, V)
            logits = self.whisper.proj_out(states[b, : len(tokens) + 1]).float()
            logits[:, self.tokens.suppress] = float("-inf")
            logits[0, self.tokens.suppress_at_begin] = float("-inf")
            targets = torch.tensor([*tokens, self.tokens.eot], device=logits.device)
            scores.append(float(logits.log_softmax(-1).gather(1, targets[:, None]).mean()))
        return scores

    def word_spans(self, ids: list[int], offset: int = 0) -> list[tuple[str, int, int]]:
        """SLURP-style words of a token list, each with its token span [start, end) (+ offset).

        A word starts at a token with a leading space; a written word can give several ("5pm" -> "five pm")."""
        starts = self._token_starts()
        groups: list[list[int]] = []
        for i, token in enumerate(ids):
            if not groups or starts[token]:
                groups.append([i])
            else:
                groups[-1].append(i)
        spans = []
        for group in groups:
            for word in slurp_style(self.tokenizer.decode([ids[i] for i in group])).split():
                spans.append((word, group[0] + offset, group[-1] + 1 + offset))
        return spans

    def _token_starts(self) -> list[bool]:
        if self._space_starts is None:
            vocab = self.tokenizer.token_strings(self.whisper.config.vocab_size)
            self._space_starts = [bool(t) and t.startswith("Ġ") for t in vocab]
        return self._space_starts

    # ------------------------------------------------------------------ saving

    def export_pretrained(self, directory: Path) -> Path:
        """A Hugging Face Whisper directory of the current weights (see load.export_hf); loads back with
        ``WhisperASR.pretrained(directory)``."""
        if self.lean:
            raise ValueError("the lean engine has no Hugging Face export; load the model with engine='transformers'")
        return export_hf(self.whisper, self.tokenizer, self.tokens, directory)

    def export_ct2(self, directory: Path) -> Path:
        """A CTranslate2 Whisper directory of the current weights (see load.export_ct2), for faster-whisper."""
        return export_ct2(self.whisper, self.config.source, directory)

    def save_files(self, directory: Path) -> dict:
        self.tokenizer.save(Path(directory) / TOKENIZER_FILE)
        return {"kind": self.kind, **asdict(self.config)}

    @classmethod
    def from_saved(cls, config: dict, directory: Path) -> "WhisperASR":
        path = Path(directory) / TOKENIZER_FILE
        if not path.is_file():
            raise FileNotFoundError(f"{directory}: {TOKENIZER_FILE} is missing (a Whisper cascade saves its tokenizer beside its weights)")
        return cls(WhisperASRConfig(**config), tokenizer=load_tokenizer(path))
