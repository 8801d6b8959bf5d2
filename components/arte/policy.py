"""The teacher's sampling policy, and its alignment to the student's preferences (ARTE, DPO-style).

The policy chooses each generated example's factors independently: which intent to speak (a template of
it), which voice, which noise condition... one categorical distribution per factor, as logits.

    policy = SamplingPolicy({"intent": intents, "voice": voices, "snr": ["0", "10", "20"]})
    batch = policy.sample(32, generator)                     # [{"intent": ..., "voice": ..., "snr": ...}, ...]
    align(policy, [(chosen_batch, rejected_batch), ...])     # the student gained more from chosen

Alignment is DPO (Rafailov et al. 2023) over batches: a batch's log-probability is the sum of its examples',
and with the policy before alignment as the reference,
    loss = -log sigmoid(beta * ((log p(chosen) - log p_ref(chosen)) - (log p(rejected) - log p_ref(rejected))))
so the policy moves toward what the preferred batches chose, and beta keeps it near the reference.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Mapping, Sequence

import torch

Choice = dict[str, str]


class SamplingPolicy(torch.nn.Module):
    def __init__(self, factors: Mapping[str, Sequence[str]]) -> None:
        super().__init__()
        empty = [name for name, values in factors.items() if not values]
        if empty:
            raise ValueError(f"factor(s) {empty} have no values to choose from")
        self.values = {name: list(values) for name, values in factors.items()}
        self.logits = torch.nn.ParameterDict({name: torch.nn.Parameter(torch.zeros(len(values))) for name, values in self.values.items()})

    def probabilities(self) -> dict[str, dict[str, float]]:
        return {name: dict(zip(self.values[name], self.logits[name].softmax(-1).tolist())) for name in self.values}

    def effective_choices(self) -> dict[str, float]:
        """exp(entropy) per factor: how many values it effectively still chooses among (collapse shows here)."""
        return {name: float(torch.special.entr(self.logits[name].detach().softmax(-1)).sum().exp()) for name in self.values}

    def logits_dict(self) -> dict[str, dict[str, float]]:
        """{factor: {value: logit}}: the policy as plain JSON (load it back with load_logits)."""
        return {name: dict(zip(self.values[name], self.logits[name].tolist())) for name in self.values}

    @torch.no_grad()
    def load_logits(self, saved: Mapping[str, Mapping[str, float]]) -> None:
        """Load logits_dict()'s output; ValueError when its factors or values are not this policy's."""
        for name, values in self.values.items():
            found = list(saved.get(name, {}))
            if found != values:
                raise ValueError(f"saved policy factor {name!r} has values {found}, this teacher's are {values}")
            self.logits[name].copy_(torch.tensor([float(saved[name][v]) for v in values]))
        extra = sorted(set(saved) - set(self.values))
        if extra:
            raise ValueError(f"saved policy has factor(s) {extra} this teacher does not choose")

    @torch.no_grad()
    def sample(self, n: int, generator: torch.Generator | None = None) -> list[Choice]:
        draws = {name: torch.multinomial(self.logits[name].softmax(-1), n, replacement=True, generator=generator).tolist() for name in self.values}
        return [{name: self.values[name][draws[name][i]] for name in self.values} for i in range(n)]

    def log_prob(self, batch: Sequence[Choice]) -> torch.Tensor:
        """Sum over the batch's examples and factors of log p(choice): a scalar with gradient."""
        total = torch.zeros(())
        for name, values in self.values.items():
            index = {v: i for i, v in enumerate(values)}
            try:
                picks = torch.tensor([index[example[name]] for example in batch], dtype=torch.long)
            except KeyError as exc:
                raise ValueError(f"factor {name!r}: {exc.args[0]!r} is not one of its values") from None
            total = total + self.logits[name].log_softmax(-1)[picks].sum()
        return total


@dataclass(frozen=True)
class AlignConfig:
    beta: float = 0.5  # how far from the reference the preferences may pull the policy (smaller: further)
    lr: float = 0.05
    steps: int = 100


def align(policy: SamplingPolicy, pairs: Sequence[tuple[Sequence[Choice], Sequence[Choice]]], cfg: AlignConfig = AlignConfig()) -> list[float]:
    """DPO over (chosen batch, rejected batch) pairs, in place; returns the loss at each step."""
    if not pairs:
        raise ValueError("no preference pairs to align with")
    with torch.no_grad():
        reference = [(policy.log_prob(chosen), policy.log_prob(rejected)) for chosen, rejected in pairs]
    optimizer = torch.optim.Adam(policy.parameters(), lr=cfg.lr)
    losses = []
    for _ in range(cfg.steps):
        margins = torch.stack([
            (policy.log_prob(chosen) - ref_chosen) - (policy.log_prob(rejected) - ref_rejected)
            for (chosen, rejected), (ref_chosen, ref_rejected) in zip(pairs, reference)
        ])
        loss = -torch.nn.functional.logsigmoid(cfg.beta * margins).mean()
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        losses.append(float(loss.detach()))
    return losses
