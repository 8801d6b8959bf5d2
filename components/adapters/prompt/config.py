from __future__ import annotations

from dataclasses import dataclass

from components.adapters.config import AdapterConfig, help_field

PROMPT_INITS = ("normal", "vocab")


@dataclass
class PromptConfig(AdapterConfig):
    """Prompt tuning: per task, num_virtual_tokens learnt vectors prepended to an encoder's input; their outputs are cut off."""

    method = "prompt"
    target_modules: list[str] = help_field(
        ["@encoder"],
        "Encoders whose input gets the prompts: a torchaudio Conformer (forward(input (B, T, D), lengths)) or a Hugging Face "
        "encoder with get_input_embeddings() (called with input_ids= or inputs_embeds=, attention_mask=). Anything else is a TypeError.",
    )
    num_virtual_tokens: int = help_field(
        8,
        "Prompt length P. The encoder sees P more frames/tokens (its cost grows accordingly); outputs keep the original length. "
        "A Hugging Face encoder's absolute positions shift by P (as in peft); its pooler, if any, reads a prompt position.",
    )
    init: str = help_field(
        "normal",
        "'normal': prompts ~ N(0, init_std^2) (peft's RANDOM init with init_std=1); 'vocab': copies of randomly drawn rows of the "
        "encoder's word-embedding table (Hugging Face encoders only; peft's SAMPLE_VOCAB).",
    )
    init_std: float = help_field(1.0, "Standard deviation of the 'normal' init (1.0 = nn.Embedding's default, as peft).")

    def validate(self) -> None:
        super().validate()
        if self.init not in PROMPT_INITS:
            raise ValueError(f"{type(self).__name__}.init must be one of {PROMPT_INITS}, got {self.init!r}")
        if not self.init_std > 0:
            raise ValueError(f"{type(self).__name__}.init_std must be > 0, got {self.init_std!r}")
