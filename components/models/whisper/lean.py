"""Whisper for inference in plain torch, without transformers: the encoder, and a decoder that steps on
a static KV cache.

    model = LeanWhisper(dims)                      # dims: whisper_dimensions() of a CTranslate2 file
    model.load_state_dict(whisper_state_dict(v))   # the same names as transformers' WhisperForConditionalGeneration
    states = model.encoder(features)               # (B, n_mels, F) -> (B, F/2, d)
    cache = model.decoder.cache(states, max_len)   # cross-attention keys and values, computed once
    hidden = model.decoder(prompt, cache)          # (B, P) -> (B, P, d); then one token a step: (B, 1) -> (B, 1, d)
    logits = model.proj_out(hidden[:, -1])         # the last position only
    greedy_decode(model, states, tokens, max_new)  # decode.py drives it through model.decoder_steps

Why: importing transformers' Whisper is ~3 s of a one-command start-up, and its model holds more memory;
a decoding step costs the same on both with our loop (benchmarks/lean_whisper.py, README "Transcription
speed"). Modules carry transformers'
names (model.encoder.layers.0.self_attn.q_proj, ...), so its state dict loads as is, and every part runs
through its module's forward, so adapters attach by the same roles (components/adapters/profiles.py;
not prompt or prefix tuning, which need transformers' decoder and attention). No dropout: inference, as
``WhisperASR.pretrained(engine="lean")`` loads it for `cascadapt transcribe` and `predict`, and
``WhisperASR.to_inference_engine()`` moves a loaded model onto it for the service.
"""

from __future__ import annotations

from types import SimpleNamespace

import torch
from torch import nn
from torch.nn import functional as F


def _embedding(n: int, d: int) -> nn.Embedding:
    """An nn.Embedding left uninitialised: its weights are always loaded. (nn.Embedding's own init, normal_,
    has no C++ kernel on the meta device that load_whisper builds on; its Python fallback imports ~900
    modules, sympy among them: seconds and ~130 MB of a one-command start-up, timed by hand.)"""
    return nn.Embedding(n, d, _weight=torch.empty(n, d))


class KV:
    """One decoder attention's keys and values, (B, heads, S, d / heads) each.

    Self-attention (``max_len``): tensors of ``max_len`` positions, allocated at the first call and filled
    step by step (no concatenation a step). Cross-attention (``source``, the encoder states (B, T', d)):
    projected at the first call, then reused by every step."""

    def __init__(self, max_len: int | None = None, source: torch.Tensor | None = None) -> None:
        self.max_len, self.source = max_len, source
        self.keys: torch.Tensor | None = None
        self.values: torch.Tensor | None = None
        self.length = 0  # positions filled (self-attention)

    def append(self, keys: torch.Tensor, values: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Write n new positions (B, heads, n, d / heads); -> every position so far. n > 1 only on an empty cache."""
        n, start = keys.shape[2], self.length
        if self.keys is None:
            shape = (keys.shape[0], keys.shape[1], self.max_len, keys.shape[3])
            self.keys, self.values = keys.new_zeros(shape), values.new_zeros(shape)
        if start + n > self.max_len:
            raise ValueError(f"decoder cache of {self.max_len} positions is full")
        if start and n > 1:
            raise ValueError("several tokens a step only on an empty cache (the prompt)")
        self.keys[:, :, start : start + n] = keys
        self.values[:, :, start : start + n] = values
        self.length = start + n
        return self.keys[:, :, : self.length], self.values[:, :, : self.length]

    def keep(self, rows: torch.Tensor) -> None:
        """Keep only these rows of the batch."""
        if self.keys is not None:
            self.keys, self.values = self.keys.index_select(0, rows), self.values.index_select(0, rows)
        if self.source is not None:
            self.source = self.source.index_select(0, rows)


class Attention(nn.Module):
    """Multi-head attention with Whisper's projections (the key has no bias), on torch's SDPA."""

    def __init__(self, d: int, heads: int) -> None:
        super().__init__()
        self.heads = heads
        self.q_proj = nn.Linear(d, d)
        self.k_proj = nn.Linear(d, d, bias=False)
        self.v_proj = nn.Linear(d, d)
        self.out_proj = nn.Linear(d, d)

    def split(self, x: torch.Tensor) -> torch.Tensor:
        """(B, T, d) -> (B, heads, T, d / heads)"""
        B, T, d = x.shape
        return x.view(B, T, self.heads, d // self.heads).transpose(1, 2)

    def forward(self, x: torch.Tensor, kv: KV | None = None) -> torch.Tensor:
        """x (B, T, d) -> (B, T, d). ``kv`` None: self-attention over x, unmasked (the encoder); a cross KV:
        attention over the encoder states; a self KV: x's positions appended to the cache, causal."""
        causal = False
        if kv is None:
            keys, values = self.split(self.k_proj(x)), self.split(self.v_proj(x))
        elif kv.source is not None:
            if kv.keys is None:
                kv.keys, kv.values = self.split(self.k_proj(kv.source)), self.split(self.v_proj(kv.source))
            keys, values = kv.keys, kv.values
        else:
            keys, values = kv.append(self.split(self.k_proj(x)), self.split(self.v_proj(x)))
            causal = x.shape[1] > 1  # the prompt attends causally within itself
        out = F.scaled_dot_product_attention(self.split(self.q_proj(x)), keys, values, is_causal=causal)
        return self.out_proj(out.transpose(1, 2).flatten(2))


class Block(nn.Module):
    """A pre-norm transformer layer; with ``cross``, a decoder layer (self-attention, cross-attention, FFN).
    Every part runs through its module's forward, so adapters wrapping them (LoRA on a projection, a
    bottleneck after the FFN or the attention, HRA on the block's output) see every call."""

    def __init__(self, d: int, heads: int, ffn: int, cross: bool = False) -> None:
        super().__init__()
        self.self_attn, self.self_attn_layer_norm = Attention(d, heads), nn.LayerNorm(d)
        if cross:
            self.encoder_attn, self.encoder_attn_layer_norm = Attention(d, heads), nn.LayerNorm(d)
        self.fc1, self.fc2, self.final_layer_norm = nn.Linear(d, ffn), nn.Linear(ffn, d), nn.LayerNorm(d)

    def forward(self, x: torch.Tensor, self_kv: KV | None = None, cross_kv: KV | None = None) -> torch.Tensor:
        """x (B, T, d) -> (B, T, d); the decoder passes its layer's caches."""
        x = x + self.self_attn(self.self_attn_layer_norm(x), kv=self_kv)
        if cross_kv is not None:
            x = x + self.encoder_attn(self.encoder_attn_layer_norm(x), kv=cross_kv)
        return x + self.fc2(F.gelu(self.fc1(self.final_layer_norm(x))))


class Encoder(nn.Module):
    def __init__(self, n_mels: int, d: int, heads: int, ffn: int, layers: int, positions: int) -> None:
        super().__init__()
        self.conv1 = nn.Conv1d(n_mels, d, kernel_size=3, padding=1)
        self.conv2 = nn.Conv1d(d, d, kernel_size=3, stride=2, padding=1)
        self.embed_positions = _embedding(positions, d)
        self.layers = nn.ModuleList(Block(d, heads, ffn) for _ in range(layers))
        self.layer_norm = nn.LayerNorm(d)

    def forward(self, features: torch.Tensor) -> torch.Tensor:
        """log-mel (B, n_mels, F), F even -> (B, F/2, d)"""
        x = F.gelu(self.conv2(F.gelu(self.conv1(features)))).transpose(1, 2)
        if x.shape[1] > self.embed_positions.num_embeddings:
            raise ValueError(f"{features.shape[-1]} mel frames exceed Whisper's {2 * self.embed_positions.num_embeddings}")
        x = x + self.embed_positions.weight[: x.shape[1]]
        for layer in self.layers:
            x = layer(x)
        return self.layer_norm(x)


class DecoderCache:
    """The decoder's keys and values, a self KV and a cross KV a layer, and the positions filled."""

    def __init__(self, layers: int, encoder_states: torch.Tensor, max_len: int) -> None:
        self.self_kv = [KV(max_len=max_len) for _ in range(layers)]
        self.cross_kv = [KV(source=encoder_states) for _ in range(layers)]
        self.length = 0

    def keep(self, rows: torch.Tensor) -> None:
        """Keep only these rows of the batch (finished rows leave it)."""
        for kv in self.self_kv + self.cross_kv:
            kv.keep(rows)


class DecoderSteps:
    """The decoder one call a step on its cache (what greedy_decode drives); ``keep`` narrows the batch."""

    def __init__(self, decoder: "Decoder", encoder_states: torch.Tensor, max_len: int) -> None:
        self.decoder, self.cache = decoder, decoder.cache(encoder_states, max_len)

    def __call__(self, inputs: torch.Tensor) -> torch.Tensor:
        return self.decoder(inputs, self.cache)

    def keep(self, rows: torch.Tensor) -> None:
        self.cache.keep(rows)


class Decoder(nn.Module):
    def __init__(self, vocab: int, d: int, heads: int, ffn: int, layers: int, positions: int) -> None:
        super().__init__()
        self.embed_tokens = _embedding(vocab, d)
        self.embed_positions = _embedding(positions, d)
        self.layers = nn.ModuleList(Block(d, heads, ffn, cross=True) for _ in range(layers))
        self.layer_norm = nn.LayerNorm(d)

    def cache(self, encoder_states: torch.Tensor, max_len: int | None = None) -> DecoderCache:
        return DecoderCache(len(self.layers), encoder_states, max_len or self.embed_positions.num_embeddings)

    def forward(self, tokens: torch.Tensor, cache: DecoderCache) -> torch.Tensor:
        """tokens (B, n) at positions [cache.length, cache.length + n) -> hidden (B, n, d), after the final norm.
        n > 1 only on an empty cache (the prompt), which attends causally within itself."""
        start, n = cache.length, tokens.shape[1]
        x = self.embed_tokens(tokens) + self.embed_positions.weight[start : start + n]
        for layer, self_kv, cross_kv in zip(self.layers, cache.self_kv, cache.cross_kv):
            x = layer(x, self_kv, cross_kv)
        cache.length = start + n
        return self.layer_norm(x)


# the sizes a Whisper is built from (and a saved cascade records): whisper_dimensions() of a CTranslate2
# file, or the same fields of transformers' WhisperConfig / config.json
WHISPER_DIMENSIONS = ("vocab_size", "d_model", "num_mel_bins", "encoder_layers", "decoder_layers", "encoder_attention_heads",
                      "decoder_attention_heads", "encoder_ffn_dim", "decoder_ffn_dim", "max_source_positions", "max_target_positions")


class _Model(nn.Module):
    def __init__(self, encoder: Encoder, decoder: Decoder) -> None:
        super().__init__()
        self.encoder, self.decoder = encoder, decoder


class LeanWhisper(nn.Module):
    """Whisper from its sizes (``whisper_dimensions``: d_model, layers, heads, ...); proj_out shares the
    token embeddings, as in every Whisper."""

    def __init__(self, dims: dict) -> None:
        super().__init__()
        # what callers read of transformers' WhisperConfig: the sizes, and no dropout (inference)
        self.config = SimpleNamespace(**{k: dims[k] for k in WHISPER_DIMENSIONS}, dropout=0.0, encoder_layerdrop=0.0)
        d = dims["d_model"]
        encoder = Encoder(dims["num_mel_bins"], d, dims["encoder_attention_heads"], dims["encoder_ffn_dim"], dims["encoder_layers"], dims["max_source_positions"])
        decoder = Decoder(dims["vocab_size"], d, dims["decoder_attention_heads"], dims["decoder_ffn_dim"], dims["decoder_layers"], dims["max_target_positions"])
        self.model = _Model(encoder, decoder)
        self.proj_out = nn.Linear(d, dims["vocab_size"], bias=False)
        self.tie_weights()

    def tie_weights(self) -> None:
        """proj_out shares the token embeddings (again, after a load_state_dict with assign=True)."""
        self.proj_out.weight = self.decoder.embed_tokens.weight

    def teacher_forced(self, tokens: torch.Tensor, encoder_states: torch.Tensor) -> torch.Tensor:
        """tokens (B, S), encoder states (B, T', d) -> hidden (B, S, d): every position at once, causal."""
        return self.decoder(tokens, self.decoder.cache(encoder_states, tokens.shape[1]))

    def decoder_steps(self, encoder_states: torch.Tensor, max_len: int) -> DecoderSteps:
        return DecoderSteps(self.decoder, encoder_states, max_len)

    @property
    def encoder(self) -> Encoder:
        return self.model.encoder

    @property
    def decoder(self) -> Decoder:
        return self.model.decoder
