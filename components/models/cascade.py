"""The SE -> ASR -> NLU cascade, differentiable end to end.

    noisy (B, L) --SE--> enhanced (B, L) --ASR backbone--> states (B, S, d) and the 1-best words,
      each a span of states (Conformer-CTC: encoder frames of the greedy path's characters;
      Whisper: decoder states teacher-forced on the 1-best tokens)
      states pooled per word (B, W, d) --layer norm, bridge Linear--> (B, W, 384)
      residual bridge (the default): added to the input embedding of each of the word's pieces,
        1-best word pieces (B, L, 384) + bridge(word) --NLU--> scenario (B, S), action (B, A), tags (B, W, T)
      bridge "layer_norm" / "raw": one vector per word, [CLS] w_1 .. w_n [SEP] --NLU--> the same

The word segmentation is discrete (from the 1-best), but the pooled states are not: NLU
losses reach the bridge, the ASR and the SE. The residual bridge starts at zero, so e2e starts
as the text mode's prediction from the greedy 1-best and learns what the acoustics add; the
per-word bridges replace the words with a linear map of the states, which the NLU, trained on
text, reads worse (README "The bridge": after full fine-tuning e2e trailed text by 14 intent
points with the per-word bridge, by 2.5-3.4 with the residual one). `mode="text"` is the classic
cascade (ASR 1-best text -> NLU tokenizer), the baseline without that gradient path. The ASR is any
components.models.backbone.ASRBackbone; saving and loading live in components/cascade_files.py.
"""

from __future__ import annotations

import functools
import math
from typing import Sequence

import torch
from torch import nn

from components.data.slurp import Entity, Prediction
from components.models.backbone import ASRBackbone
from components.models.nlu import HIDDEN, IGNORE, NluLabels, NluModel, decode, encode_texts, load_tokenizer, nlu_loss, split_words
from components.models.no_speech_probe import NoSpeechProbe
from components.models.se import MaskEnhancer, se_loss

MODULES = ("se", "asr", "bridge", "nlu")
MODES = ("e2e", "text")  # what the NLU reads: the 1-best through the bridge, or the 1-best's words alone
# What the bridge reads and feeds: "residual", the pooled states normalised per word (no parameters),
# mapped to a correction of the 1-best word pieces' input embeddings (zero at the start); "layer_norm",
# the normalised states mapped to the word's only input vector, so one bridge init suits every backbone
# (Whisper's decoder states have rms ~10, the Conformer's ~1); "raw", the pooled states as they are
# (cascades saved before format 3).
BRIDGE_INPUTS = ("residual", "layer_norm", "raw")
MINILM_EMBEDDING_RMS = 0.056  # MiniLM's input word embeddings: the scale the bridge's outputs start at


def pool_words(states: torch.Tensor, spans: Sequence[Sequence[tuple[int, int]]]) -> tuple[torch.Tensor, torch.Tensor]:
    """Mean of states (B, T', d) over each word's frames -> (B, W, d) and word_mask (B, W).

    An utterance with no recognised word gets one slot pooled over all its frames,
    so scenario and action can still be predicted.
    """
    B, T, d = states.shape
    W = max(1, max((len(s) for s in spans), default=0))
    weights = states.new_zeros(B, W, T)
    mask = torch.zeros(B, W, dtype=torch.bool, device=states.device)
    for b, word_spans in enumerate(spans):
        for w, (start, end) in enumerate(word_spans or [(0, T)]):
            weights[b, w, start:end] = 1.0 / max(1, end - start)
            mask[b, w] = True
    return weights @ states, mask


def tags_from_fillers(words: Sequence[str], entities: Sequence[dict | Entity]) -> list[str]:
    """BIO tags of words from entity fillers: each filler is matched at its first unused occurrence."""
    tags = ["O"] * len(words)
    for ent in entities:
        etype, filler = (ent["type"], ent["filler"]) if isinstance(ent, dict) else (ent.type, ent.filler)
        target = filler.split()
        for i in range(len(words) - len(target) + 1):
            if words[i : i + len(target)] == target and all(t == "O" for t in tags[i : i + len(target)]):
                tags[i : i + len(target)] = [f"B-{etype}"] + [f"I-{etype}"] * (len(target) - 1)
                break
    return tags


def align_words(hyp: Sequence[str], ref: Sequence[str]) -> list[int | None]:
    """For each hypothesis word, the reference word it is aligned to (match or substitution), or None
    (insertion), by a Levenshtein alignment."""
    n, m = len(hyp), len(ref)
    cost = [[0] * (m + 1) for _ in range(n + 1)]
    for i in range(n + 1):
        cost[i][0] = i
    for j in range(m + 1):
        cost[0][j] = j
    for i in range(1, n + 1):
        for j in range(1, m + 1):
            cost[i][j] = min(cost[i - 1][j] + 1, cost[i][j - 1] + 1, cost[i - 1][j - 1] + (hyp[i - 1] != ref[j - 1]))
    link: list[int | None] = [None] * n
    i, j = n, m
    while i > 0 and j > 0:
        if cost[i][j] == cost[i - 1][j - 1] + (hyp[i - 1] != ref[j - 1]):
            link[i - 1] = j - 1
            i, j = i - 1, j - 1
        elif cost[i][j] == cost[i - 1][j] + 1:
            i -= 1
        else:
            j -= 1
    return link


def align_tags(hyp: Sequence[str], ref: Sequence[str], ref_tags: Sequence[str]) -> list[str]:
    """Carry reference tags onto hypothesis words through the alignment; insertions get O."""
    tags = [ref_tags[j] if j is not None else "O" for j in align_words(hyp, ref)]
    # a run that lost its B- (the B word was deleted) starts with B-
    for k, tag in enumerate(tags):
        if tag.startswith("I-") and (k == 0 or tags[k - 1][2:] != tag[2:]):
            tags[k] = "B-" + tag[2:]
    return tags


def slurp_pieces(words: Sequence[tuple[str, int, int]]) -> list[tuple[str, int, int]]:
    """Clitics split as SLURP tokenises ("mom's" -> "mom", "'s"); both pieces keep the word's span."""
    return [(piece, a, b) for word, a, b in words for piece in split_words(word)]


class Cascade(nn.Module):
    def __init__(
        self, se: MaskEnhancer | None, asr: ASRBackbone, nlu: NluModel, labels: NluLabels, bridge_input: str = "residual", bridge_dropout: float = 0.0
    ) -> None:
        """bridge_dropout: in training, the share of utterances whose residual bridge is left out (the NLU
        then reads the 1-best alone, as in text mode), so the NLU does not come to lean on the acoustics."""
        super().__init__()
        if bridge_input not in BRIDGE_INPUTS:
            raise ValueError(f"bridge_input must be one of {BRIDGE_INPUTS}, got {bridge_input!r}")
        if not 0.0 <= bridge_dropout < 1.0 or (bridge_dropout and bridge_input != "residual"):
            raise ValueError(f"bridge_dropout must be in [0, 1) and needs the residual bridge, got {bridge_dropout} with {bridge_input!r}")
        self.se, self.asr, self.nlu, self.labels, self.bridge_input = se, asr, nlu, labels, bridge_input
        self.no_speech_probe: NoSpeechProbe | None = None  # set_no_speech_probe
        self.bridge_dropout = bridge_dropout
        self.bridge = nn.Linear(asr.hidden_size, HIDDEN)
        with torch.no_grad():
            if bridge_input == "residual":  # e2e starts as the text mode on the greedy 1-best
                self.bridge.weight.zero_()
                self.bridge.bias.zero_()
            elif bridge_input == "layer_norm":  # unit-rms inputs: outputs start at MiniLM's embedding scale, not ~10x above it
                self.bridge.weight.mul_(MINILM_EMBEDDING_RMS * math.sqrt(3.0))
                self.bridge.bias.zero_()

    @functools.cached_property
    def tokenizer(self):
        """MiniLM's tokenizer (shipped, offline): the residual bridge reads the 1-best's word pieces."""
        return load_tokenizer()

    def embed_words(self, pooled: torch.Tensor) -> torch.Tensor:
        """Pooled ASR states (B, W, d) -> the bridge's vectors (B, W, 384)."""
        if self.bridge_input != "raw":
            pooled = nn.functional.layer_norm(pooled, pooled.shape[-1:])
        return self.bridge(pooled)

    def read_text(self, words: Sequence[Sequence[str]], device: torch.device, tokenizer=None) -> dict:
        """The NLU on the words alone (B lists; text mode): no bridge, no acoustics."""
        enc = encode_texts(tokenizer or self.tokenizer, [w or ["<empty>"] for w in words])
        return self.nlu(**{k: v.to(device) for k, v in enc.items()})

    def read_words(self, words: Sequence[Sequence[str]], pooled: torch.Tensor, word_mask: torch.Tensor) -> dict:
        """The NLU on the 1-best words (B lists) and their pooled states (B, W, d), through the bridge."""
        if self.bridge_input != "residual":
            return self.nlu(inputs_embeds=self.embed_words(pooled), word_mask=word_mask, add_special_tokens=True)
        enc = {k: v.to(pooled.device) for k, v in encode_texts(self.tokenizer, [w or ["<empty>"] for w in words], piece_words=True).items()}
        piece_word = enc.pop("piece_word")  # (B, L); an empty 1-best's "<empty>" is word 0, pooled over all frames
        acoustic = self.embed_words(pooled)  # (B, W, 384)
        per_piece = acoustic.gather(1, piece_word.clamp(min=0).unsqueeze(-1).expand(-1, -1, acoustic.shape[-1]))  # (B, L, 384)
        lexical = self.nlu.encoder.get_input_embeddings()(enc.pop("input_ids"))  # (B, L, 384)
        keep = (piece_word >= 0).unsqueeze(-1)  # (B, L, 1): pieces of words
        if self.training and self.bridge_dropout:
            keep = keep & (torch.rand(keep.shape[0], 1, 1, device=keep.device) >= self.bridge_dropout)  # whole utterances
        return self.nlu(inputs_embeds=lexical + per_piece * keep.to(per_piece.dtype), **enc)

    def set_no_speech_probe(self, probe: NoSpeechProbe | None) -> None:
        """Decide that nobody spoke with ``probe`` on the raw input (before the SE), in place of the ASR's own
        probability; saved with the cascade. Only for an ASR with a no-speech decision (components/models/backbone.py)."""
        if probe is not None and "no_speech_threshold" not in self.asr.runtime_options:
            raise ValueError(f"the {self.asr.kind} backbone has no no-speech decision to give a probe's probability to")
        self.no_speech_probe = probe

    def transcribe(self, noisy: torch.Tensor, lengths: torch.Tensor, targets: torch.Tensor | None = None, target_lengths: torch.Tensor | None = None) -> dict:
        """SE and ASR only: {enhanced, asr: {...}, hyps: B lists of (word, start, end)}; targets (from
        asr.encode_targets) when the ASR loss is wanted."""
        enhanced = self.se(noisy, lengths) if self.se is not None else noisy
        if self.no_speech_probe is None:
            asr_out = self.asr(enhanced, lengths, targets, target_lengths)
        else:
            asr_out = self.asr(enhanced, lengths, targets, target_lengths, no_speech=self.no_speech_probe(noisy, lengths).tolist())
        return {"enhanced": enhanced, "asr": asr_out, "hyps": [slurp_pieces(h) for h in asr_out["words"]]}

    def forward(
        self, noisy: torch.Tensor, lengths: torch.Tensor, targets: torch.Tensor | None = None, target_lengths: torch.Tensor | None = None, mode: str = "e2e",
    ) -> dict:
        """noisy (B, L) -> {enhanced, asr: {...}, words: B lists of str, nlu: {...}}; the NLU reads the 1-best
        through the bridge (mode "e2e") or its words alone ("text")."""
        if mode not in MODES:
            raise ValueError(f"unknown cascade mode {mode!r}; use one of {MODES}")
        out = self.transcribe(noisy, lengths, targets, target_lengths)
        words = [[w for w, _, _ in h] for h in out["hyps"]]
        if mode == "text":
            nlu_out = self.read_text(words, noisy.device)
        else:
            pooled, word_mask = pool_words(out["asr"]["states"], [[(a, b) for _, a, b in h] for h in out["hyps"]])
            nlu_out = self.read_words(words, pooled, word_mask)
        return {"enhanced": out["enhanced"], "asr": out["asr"], "words": words, "nlu": nlu_out}

    def nlu_targets(self, words: Sequence[Sequence[str]], meta: Sequence[dict], width: int) -> dict:
        """Targets for the hypothesised words: gold scenario/action, gold tags aligned onto the words."""
        s_index = {s: i for i, s in enumerate(self.labels.scenarios)}
        a_index = {a: i for i, a in enumerate(self.labels.actions)}
        t_index = {t: i for i, t in enumerate(self.labels.tags)}
        tags = torch.full((len(meta), width), IGNORE, dtype=torch.long)
        for b, (hyp, m) in enumerate(zip(words, meta)):
            ref = split_words(m["text"])
            hyp_tags = align_tags(hyp, ref, tags_from_fillers(ref, m["entities"])) if hyp else ["O"]
            tags[b, : len(hyp_tags)] = torch.tensor([t_index[t] for t in hyp_tags])
        return {
            "scenario": torch.tensor([s_index[m["scenario"]] for m in meta]),
            "action": torch.tensor([a_index[m["action"]] for m in meta]),
            "tags": tags,
        }

    @torch.no_grad()
    def predict(self, noisy: torch.Tensor, lengths: torch.Tensor, meta: Sequence[dict], mode: str = "e2e", tokenizer=None, beam=None) -> list[tuple[Prediction, str]]:
        """(SLURP prediction, transcript) per utterance. mode "e2e" (through the bridge) or "text" (1-best text -> NLU).

        tokenizer: the text mode's NLU tokenizer (default: the cascade's, MiniLM's shipped one).
        beam: a components.models.beam.BeamDecoder for the text mode's transcripts (e2e needs the
        greedy path's word spans).
        """
        if mode == "text":
            out = self.transcribe(noisy, lengths)
            if beam is not None:
                words = [split_words(t) for t in beam.decode(out["asr"])]
            else:
                words = [[w for w, _, _ in h] for h in out["hyps"]]
            nlu_out = self.read_text(words, noisy.device, tokenizer)
        else:
            out = self(noisy, lengths, mode=mode)
            words, nlu_out = out["words"], out["nlu"]
        decoded = decode(nlu_out, [w or ["<empty>"] for w in words], self.labels)
        speech = out["asr"].get("speech") or [True] * len(meta)  # an ASR that hears nobody: no transcript, no intent
        results = []
        for (scenario, action, entities), hyp, m, spoken in zip(decoded, words, meta, speech):
            if not spoken:
                scenario, action, entities, hyp = "", "", [], []
            transcript = " ".join(hyp).replace(" '", "'").replace(" n't", "n't")
            pred = Prediction(file=m["utt_id"], scenario=scenario, action=action, entities=tuple(entities), slurp_id=int(m["slurp_id"]))
            results.append((pred, transcript))
        return results


def asr_targets(asr: ASRBackbone, batch: dict) -> tuple[torch.Tensor, torch.Tensor]:
    """The backbone's training targets for the batch's transcripts, on the batch's device."""
    targets, lengths = asr.encode_targets([m["text"] for m in batch["meta"]])
    device = batch["lengths"].device
    return targets.to(device), lengths.to(device)


LOSS_WEIGHTS = {"nlu": 1.0, "asr": 0.5, "se": 0.5}


def cascade_loss(model: Cascade, batch: dict, weights: dict[str, float] | None = None, mode: str = "e2e") -> tuple[torch.Tensor, dict]:
    """Weighted sum of the NLU loss and, as auxiliary terms, the ASR's own loss (CTC, token cross-entropy)
    and the SE loss; also the parts as floats. ``weights`` keys: nlu, asr, se. ``mode``: the NLU reads the
    1-best through the bridge ("e2e") or its words alone ("text": the bridge gets no gradient)."""
    unknown = sorted(set(weights or {}) - set(LOSS_WEIGHTS))
    if unknown:
        raise ValueError(f"unknown loss weight(s) {unknown}; use {sorted(LOSS_WEIGHTS)}")
    w = LOSS_WEIGHTS | (weights or {})
    targets, target_lengths = asr_targets(model.asr, batch) if w["asr"] else (None, None)
    out = model(batch["noisy"], batch["lengths"], targets, target_lengths, mode=mode)
    nlu_out = out["nlu"]
    tags = model.nlu_targets(out["words"], batch["meta"], nlu_out["tag_logits"].shape[1])
    parts = {"nlu": nlu_loss(nlu_out, {**tags, "word_mask": nlu_out["word_mask"]})}
    if w["asr"]:
        parts["asr"] = model.asr.loss(out["asr"], targets, target_lengths)
    if w["se"] and model.se is not None:
        parts["se"] = se_loss(out["enhanced"], batch["clean"], batch["lengths"], model.se)
    total = sum(w[k] * v for k, v in parts.items())
    return total, {k: float(v.detach()) for k, v in parts.items()}
