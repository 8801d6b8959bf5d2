"""Roles of known backbones, so configs can say '@ffn' instead of module paths.

A profile maps a role to globs relative to the backbone module. Roles:
  @encoder    the backbone itself (prompt tuning prepends to its input)
  @decoder    Whisper's decoder stack (prompt tuning: learnt decoder prompt embeddings)
  @layer      each block (hyperformer and layer-output adapters; HRA recurs over them, stack by stack)
  @encoder_layer  each block of the (acoustic or text) encoder stack only
  @attention  each attention block (Houlsby adapters go after it; LoRA adapts its projections)
  @ffn        each feed-forward block (Houlsby and Pfeiffer adapters go after it)
  @linear     every nn.Linear in the blocks (LoRA everywhere)
  @cross_attention  the decoder's attention over the encoder (Whisper)
  @norm       the blocks' layer norms
Scope a role to a sub-model with 'prefix:@role' (e.g. 'asr:@ffn' in the cascade).
``time_first``: globs of modules whose tensors are (T, B, d), not (B, T, d).
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field

from torch import nn


@dataclass(frozen=True)
class Profile:
    roles: dict[str, list[str]]
    time_first: list[str] = field(default_factory=list)


def _class_name(module: nn.Module) -> str:
    return f"{type(module).__module__}.{type(module).__qualname__}"


# Whisper's blocks, by transformers' module names (which the lean Whisper keeps)
WHISPER_BLOCK_ROLES: dict[str, list[str]] = {
    "layer": ["model.encoder.layers.*", "model.decoder.layers.*"],
    "encoder_layer": ["model.encoder.layers.*"],
    "attention": ["model.encoder.layers.*.self_attn", "model.decoder.layers.*.self_attn"],
    "cross_attention": ["model.decoder.layers.*.encoder_attn"],
    "ffn": ["model.encoder.layers.*.fc2", "model.decoder.layers.*.fc2"],
    "linear": [f"model.{stack}.layers.*.{part}" for stack in ("encoder", "decoder")
               for part in ("self_attn.q_proj", "self_attn.k_proj", "self_attn.v_proj", "self_attn.out_proj", "fc1", "fc2")]
              + [f"model.decoder.layers.*.encoder_attn.{p}_proj" for p in ("q", "k", "v", "out")],
    "norm": [f"model.{stack}.layers.*.{n}" for stack in ("encoder", "decoder") for n in ("self_attn_layer_norm", "final_layer_norm")]
            + ["model.decoder.layers.*.encoder_attn_layer_norm"],
}

# matched on the module's class path, so transformers need not be imported here
PROFILES: dict[str, Profile] = {
    "torchaudio.models.conformer.Conformer": Profile(
        roles={
            "encoder": [""],
            "layer": ["conformer_layers.*"],
            "encoder_layer": ["conformer_layers.*"],
            "attention": ["conformer_layers.*.self_attn"],
            "ffn": ["conformer_layers.*.ffn1", "conformer_layers.*.ffn2"],
            "linear": ["conformer_layers.*.ffn1.sequential.1", "conformer_layers.*.ffn1.sequential.4",
                       "conformer_layers.*.ffn2.sequential.1", "conformer_layers.*.ffn2.sequential.4",
                       "conformer_layers.*.self_attn"],
        },
        # the layers run (T, B, d); their conv module and the projections inside Attention see (B, T, d)
        time_first=["conformer_layers.*", "conformer_layers.*.self_attn", "conformer_layers.*.self_attn_layer_norm",
                    "conformer_layers.*.final_layer_norm", "conformer_layers.*.ffn1", "conformer_layers.*.ffn1.**",
                    "conformer_layers.*.ffn2", "conformer_layers.*.ffn2.**"],
    ),
    "transformers.models.bert.modeling_bert.BertModel": Profile(
        roles={
            "encoder": [""],
            "layer": ["encoder.layer.*"],
            "encoder_layer": ["encoder.layer.*"],
            "attention": ["encoder.layer.*.attention"],
            "ffn": ["encoder.layer.*.output"],
            "linear": ["encoder.layer.*.attention.self.query", "encoder.layer.*.attention.self.key",
                       "encoder.layer.*.attention.self.value", "encoder.layer.*.attention.output.dense",
                       "encoder.layer.*.intermediate.dense", "encoder.layer.*.output.dense"],
        },
    ),
    # Whisper: the encoder and the decoder stacks both. No '@encoder' role: WhisperASR runs the encoder's
    # layers itself (any window up to 30 s), so nothing calls WhisperEncoder.forward for a prompt to hook;
    # prompt tuning prepends to the decoder ('@decoder') instead.
    "transformers.models.whisper.modeling_whisper.WhisperForConditionalGeneration": Profile(roles={"decoder": ["model.decoder"], **WHISPER_BLOCK_ROLES}),
    # the plain-torch inference Whisper (components/models/whisper/lean.py): the same module names, every part
    # run through its forward; no '@decoder' (its decoder takes token ids, no prompt embeddings), and prefix
    # tuning finds no attention it knows there
    "components.models.whisper.lean.LeanWhisper": Profile(roles=WHISPER_BLOCK_ROLES),
    "components.models.se.MaskEnhancer": Profile(
        roles={"encoder": [""], "layer": ["rnn"], "encoder_layer": ["rnn"], "ffn": ["mask"], "linear": ["mask"]},
    ),
}


def register_profile(class_path: str, profile: Profile) -> None:
    """Teach the adapters a new backbone (class path as 'module.QualName')."""
    if class_path in PROFILES:
        raise ValueError(f"a profile for {class_path} already exists")
    PROFILES[class_path] = profile


def backbones(model: nn.Module) -> list[tuple[str, Profile]]:
    """(path, profile) of every known backbone inside ``model`` ('' = the model itself)."""
    return [(path, PROFILES[_class_name(m)]) for path, m in model.named_modules() if _class_name(m) in PROFILES]


def expand_role(model: nn.Module, pattern: str) -> list[str]:
    """'@ffn' or 'asr:@ffn' -> absolute globs; ValueError if no backbone in scope defines the role."""
    scope, _, role = pattern.rpartition(":")
    role = role.lstrip("@")
    found = [(path, profile) for path, profile in backbones(model) if _within(path, scope)]
    globs = [_join(path, g) for path, profile in found for g in profile.roles.get(role, [])]
    if not globs:
        kinds = sorted({type(model.get_submodule(p)).__name__ for p, _ in found}) or ["none"]
        known = sorted({r for _, profile in found for r in profile.roles}) or sorted({r for profile in PROFILES.values() for r in profile.roles})
        raise ValueError(f"role '@{role}' is not defined for the backbones in scope '{scope or '(whole model)'}': {kinds}; their roles: {', '.join(known)}")
    return globs


def is_time_first(model: nn.Module, path: str) -> bool:
    return any(glob_regex(_join(root, g)).match(path) for root, profile in backbones(model) for g in profile.time_first)


def _within(path: str, scope: str) -> bool:
    return not scope or path == scope or path.startswith(scope + ".")


def _join(a: str, b: str) -> str:
    return ".".join(p for p in (a, b) if p)


def glob_regex(pattern: str) -> re.Pattern:
    """'*' = one dotted component, '**' = any number of them."""
    parts = [".*" if p == "**" else re.escape(p).replace(r"\*", "[^.]*") for p in pattern.split(".")]
    return re.compile(r"\.".join(parts) + "$")
