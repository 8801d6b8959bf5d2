from __future__ import annotations

from dataclasses import dataclass

from components.adapters.config import AdapterConfig, help_field


@dataclass
class PrefixConfig(AdapterConfig):
    """Prefix tuning: per task and attention layer, P learnt keys and values (projected space) in front of K and V (not Q)."""

    method = "prefix"
    target_modules: list[str] = help_field(
        ["@attention"],
        "Attention to give prefixes: nn.MultiheadAttention (made explicit first, e.g. the Conformer's self_attn), a Hugging Face "
        "BERT-style self-attention (query/key/value Linears; absolute positions, encoder only: no cross-attention, cache, head_mask "
        "or output_attentions, else a TypeError/ValueError naming it), or a container: every such attention inside it "
        "(BERT's '@attention' block means its .self). A MultiheadAttention called with attn_mask is not supported.",
    )
    num_virtual_tokens: int = help_field(8, "Prefix length P: every attention layer sees P more keys/values (queries and outputs keep their length).")
    prefix_projection: bool = help_field(
        False,
        "Reparameterise (Li & Liang; peft's prefix_projection): per task an embedding (P, d) -> Linear(d, projection_hidden) -> tanh, "
        "then per layer Linear(projection_hidden, 2 d) gives its keys and values. More parameters train; the prefixes it yields are all inference needs.",
    )
    projection_hidden: int = help_field(512, "Hidden width of the reparameterisation MLP (peft's encoder_hidden_size); used only with prefix_projection.")
    init_std: float = help_field(
        1.0, "Standard deviation of the normal init of the prefixes (or, with prefix_projection, of its input embedding); 1.0 = nn.Embedding's default, as peft."
    )

    def validate(self) -> None:
        super().validate()
        if not isinstance(self.projection_hidden, int) or self.projection_hidden <= 0:
            raise ValueError(f"{type(self).__name__}.projection_hidden must be a positive int, got {self.projection_hidden!r}")
        if not self.init_std > 0:
            raise ValueError(f"{type(self).__name__}.init_std must be > 0, got {self.init_std!r}")
