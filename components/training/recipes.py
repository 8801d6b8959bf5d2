"""What to train and how to score it: one function a module (SE, ASR, NLU, bridge), full
fine-tuning of the cascade, and evaluation on a manifest split. All run on the shared loop."""

from __future__ import annotations

import time
from typing import Callable, Sequence

import torch
from torch.utils.data import DataLoader, Dataset

from components.data.dataset import SpeechDataset, collate
from components.data.slurp import Entity, Prediction, SlurpRecord
from components.data.tts import SAMPLE_RATE
from components.metrics.asr import cer, wer
from components.metrics.slu import align, slu_metrics
from components.models.backbone import ASRBackbone
from components.models.cascade import Cascade, align_words, asr_targets, cascade_loss, pool_words
from components.models.nlu import NluLabels, NluModel, batch_from_records, decode, encode_texts, load_tokenizer, nlu_loss, param_groups, split_words
from components.models.se import MaskEnhancer, se_loss, si_snr
from components.training.front_cache import FrontCache
from components.training.loop import TrainConfig, TrainResult, resolve_device, to_device, train

MetricsFn = Callable[[dict], None] | None


def _mean_over(loader: DataLoader, model, fn, device, max_batches: int | None = None) -> dict[str, float]:
    sums: dict[str, float] = {}
    n = 0
    for i, batch in enumerate(loader):
        if max_batches is not None and i >= max_batches:
            break
        for k, v in fn(model, to_device(batch, device)).items():
            sums[k] = sums.get(k, 0.0) + float(v)
        n += 1
    return {k: v / max(n, 1) for k, v in sums.items()}


def validation_fn(ds: Dataset, fn, cfg: TrainConfig, collate_fn=collate, max_batches: int | None = 50):
    loader = DataLoader(ds, batch_size=cfg.batch_size, collate_fn=collate_fn)
    device = resolve_device(cfg.device)
    return lambda model: _mean_over(loader, model, fn, device, max_batches)


# --------------------------------------------------------------------------- modules


def train_se(se: MaskEnhancer, train_ds: SpeechDataset, val_ds: SpeechDataset, cfg: TrainConfig, on_metrics: MetricsFn = None) -> TrainResult:
    """Noisy -> clean on pairs; validation loss and SI-SNR of the enhanced speech."""

    def loss(model, b):
        return se_loss(model(b["noisy"], b["lengths"]), b["clean"], b["lengths"], model)

    def val(model, b):
        enhanced = model(b["noisy"], b["lengths"])
        return {"val_loss": se_loss(enhanced, b["clean"], b["lengths"], model), "val_si_snr": si_snr(enhanced, b["clean"]).mean()}

    return train(se, loss, train_ds, cfg, collate_fn=collate, val_fn=validation_fn(val_ds, val, cfg), on_metrics=on_metrics)


def asr_loss(asr: ASRBackbone, audio: torch.Tensor, b: dict) -> torch.Tensor:
    """The backbone's own training loss (CTC, token cross-entropy) on ``audio`` for the batch's transcripts."""
    targets, lengths = asr_targets(asr, b)
    return asr.loss(asr(audio, b["lengths"], targets, lengths, words=False), targets, lengths)


def train_asr(asr: ASRBackbone, train_ds: SpeechDataset, val_ds: SpeechDataset, cfg: TrainConfig, on_metrics: MetricsFn = None, audio: str = "clean") -> TrainResult:
    """The ASR's own loss on the clean (source pre-training) or noisy audio."""

    def loss(model, b):
        return asr_loss(model, b[audio], b)

    def val(model, b):
        return {"val_loss": loss(model, b)}

    return train(asr, loss, train_ds, cfg, collate_fn=collate, val_fn=validation_fn(val_ds, val, cfg), on_metrics=on_metrics)


def enhanced_asr_loss(cascade: Cascade, b: dict, cache: FrontCache | None = None) -> torch.Tensor:
    """The ASR's loss on the noisy audio as the (frozen) SE enhances it: what the ASR hears inside the cascade.
    With ``cache``, the frozen front (features, or encoder states) comes from it where it can."""
    front = cache.front(cascade, b) if cache is not None else None
    if front is not None:
        targets, lengths = asr_targets(cascade.asr, b)
        return cascade.asr.loss(cascade.asr(b["noisy"], b["lengths"], targets, lengths, words=False, front=front), targets, lengths)
    with torch.no_grad():
        audio = cascade.se(b["noisy"], b["lengths"]) if cascade.se is not None else b["noisy"]
    return asr_loss(cascade.asr, audio, b)


def train_asr_enhanced(cascade: Cascade, train_ds: SpeechDataset, val_ds: SpeechDataset, cfg: TrainConfig, on_metrics: MetricsFn = None) -> TrainResult:
    """Multi-condition stage: the ASR continues on enhanced noisy audio. Only the ASR trains."""
    return _train_part(cascade, "asr.", enhanced_asr_loss, train_ds, val_ds, cfg, on_metrics)


def _train_part(cascade: Cascade, prefix: str, loss, train_ds: SpeechDataset, val_ds: SpeechDataset, cfg: TrainConfig, on_metrics: MetricsFn) -> TrainResult:
    """Train only the cascade's parameters under ``prefix`` (validated on the same loss), then make everything trainable again."""
    for name, p in cascade.named_parameters():
        p.requires_grad = name.startswith(prefix)
    try:
        return train(cascade, loss, train_ds, cfg, collate_fn=collate, val_fn=validation_fn(val_ds, lambda model, b: {"val_loss": loss(model, b)}, cfg), on_metrics=on_metrics)
    finally:
        for p in cascade.parameters():
            p.requires_grad = True


class RecordDataset(Dataset):
    def __init__(self, records: Sequence[SlurpRecord]) -> None:
        self.records = list(records)

    def __len__(self) -> int:
        return len(self.records)

    def __getitem__(self, i: int) -> SlurpRecord:
        return self.records[i]


def train_nlu(nlu: NluModel, labels: NluLabels, train_records, val_records, cfg: TrainConfig, on_metrics: MetricsFn = None, head_lr_factor: float = 10.0) -> TrainResult:
    """Gold text -> scenario, action, tags; the heads learn faster than the pre-trained encoder."""
    tokenizer = load_tokenizer()
    return _train_nlu_on(nlu, train_records, val_records, lambda records: batch_from_records(tokenizer, records, labels), cfg, on_metrics, head_lr_factor)


def _train_nlu_on(nlu: NluModel, train_items: Sequence, val_items: Sequence, batchify, cfg: TrainConfig, on_metrics: MetricsFn, head_lr_factor: float) -> TrainResult:
    """The NLU on text items that ``batchify`` turns into (model inputs, targets); heads at head_lr_factor x lr."""

    def loss(model, b):
        inputs, targets = b
        return nlu_loss(model(**inputs), targets)

    def val(model, b):
        return {"val_loss": loss(model, b)}

    optimizer = lambda m: torch.optim.AdamW(param_groups(m, cfg.lr, cfg.lr * head_lr_factor))  # noqa: E731
    return train(nlu, loss, RecordDataset(train_items), cfg, collate_fn=batchify, val_fn=validation_fn(RecordDataset(val_items), val, cfg, batchify), on_metrics=on_metrics, optimizer=optimizer)


@torch.no_grad()
def transcribe_items(cascade: Cascade, ds: SpeechDataset, batch_size: int = 16, device: str = "auto") -> list[tuple[list[str], dict]]:
    """(1-best words, meta) for every utterance of ds: SE + ASR on the noisy audio, greedy, as at inference."""
    dev = resolve_device(device)
    was_training = cascade.training
    cascade.to(dev).eval()
    items = []
    for b in DataLoader(ds, batch_size=batch_size, collate_fn=collate):
        hyps = cascade.transcribe(b["noisy"].to(dev), b["lengths"].to(dev))["hyps"]
        items += [([w for w, _, _ in h], m) for h, m in zip(hyps, b["meta"])]
    cascade.train(was_training)
    return items


def train_nlu_on_transcripts(cascade: Cascade, train_ds: SpeechDataset, val_ds: SpeechDataset, cfg: TrainConfig, on_metrics: MetricsFn = None, head_lr_factor: float = 10.0, max_words: int = 64) -> TrainResult:
    """The NLU on the frozen ASR's own 1-best text (the text cascade adapted to its recogniser's errors):
    gold scenario and action, gold tags carried onto the hypothesised words by alignment. The train and
    validation audio is transcribed once; only the NLU trains."""
    tokenizer = load_tokenizer()
    train_items, val_items = transcribe_items(cascade, train_ds, device=cfg.device), transcribe_items(cascade, val_ds, device=cfg.device)

    def batchify(items):
        words = [w[:max_words] for w, _ in items]
        targets = cascade.nlu_targets(words, [m for _, m in items], max(max(len(w) for w in words), 1))
        return encode_texts(tokenizer, [w or ["<empty>"] for w in words], max_words=max_words), targets

    return _train_nlu_on(cascade.nlu, train_items, val_items, batchify, cfg, on_metrics, head_lr_factor)


def bridge_targets(cascade: Cascade, words: Sequence[Sequence[str]], meta: Sequence[dict], tokenizer, width: int) -> tuple[torch.Tensor, torch.Tensor]:
    """What MiniLM would have embedded for each hypothesised word: the mean word-piece embedding
    of the aligned reference word. (B, W, 384) targets and a (B, W) mask (inserted words: no target)."""
    table = cascade.nlu.encoder.embeddings.word_embeddings.weight.detach()  # (vocab, 384)
    targets = table.new_zeros(len(words), width, table.shape[1])
    mask = torch.zeros(len(words), width, dtype=torch.bool)
    for b, (hyp, m) in enumerate(zip(words, meta)):
        ref = split_words(m["text"])
        for w, j in enumerate(align_words(hyp, ref)):
            if j is not None and w < width:
                ids = tokenizer(ref[j], add_special_tokens=False)["input_ids"]
                if ids:
                    targets[b, w] = table[ids].mean(0)
                    mask[b, w] = True
    return targets, mask.to(table.device)


def train_bridge(cascade: Cascade, train_ds: SpeechDataset, val_ds: SpeechDataset, cfg: TrainConfig, on_metrics: MetricsFn = None) -> TrainResult:
    """Teach the bridge to map pooled ASR states to MiniLM's input embedding of the spoken word
    (self-supervised: transcripts only, no SLU labels). Only the bridge trains."""
    tokenizer = load_tokenizer()

    def loss(model, b):
        with torch.no_grad():  # SE + ASR on the noisy audio, as at inference
            out = model.transcribe(b["noisy"], b["lengths"])
            hyps = out["hyps"]
            pooled, _ = pool_words(out["asr"]["states"], [[(a, z) for _, a, z in h] for h in hyps])
        target, mask = bridge_targets(model, [[w for w, _, _ in h] for h in hyps], b["meta"], tokenizer, pooled.shape[1])
        if not mask.any():
            return (model.bridge.weight * 0).sum()
        diff = (model.embed_words(pooled) - target)[mask]
        return (diff**2).mean() / target[mask].pow(2).mean()  # relative MSE

    return _train_part(cascade, "bridge.", loss, train_ds, val_ds, cfg, on_metrics)


def finetune_cascade(cascade: Cascade, train_ds: SpeechDataset, val_ds: SpeechDataset, cfg: TrainConfig, on_metrics: MetricsFn = None, weights: dict | None = None) -> TrainResult:
    """Full fine-tuning on the target domain: every parameter, NLU loss plus the ASR and SE terms."""

    def loss(model, b):
        return cascade_loss(model, b, weights)

    def val(model, b):
        total, parts = cascade_loss(model, b, weights)
        return {"val_loss": total, **{f"val_{k}": v for k, v in parts.items()}}

    return train(cascade, loss, train_ds, cfg, collate_fn=collate, val_fn=validation_fn(val_ds, val, cfg), on_metrics=on_metrics)


# --------------------------------------------------------------------------- evaluation


def gold_of(meta: dict) -> Prediction:
    return Prediction(meta["utt_id"], meta["scenario"], meta["action"], tuple(Entity(e["type"], e["filler"]) for e in meta["entities"]), int(meta["slurp_id"]))


@torch.no_grad()
def evaluate_cascade(cascade: Cascade, ds: SpeechDataset, mode: str = "e2e", batch_size: int = 16, device: str = "auto", beam=None) -> tuple[dict, list[tuple[Prediction, str]]]:
    """WER/CER of the transcripts (overall and per TTS engine), SLURP's SLU metrics and the real-time
    factor on ds; returns (metrics, [(prediction, transcript)]).

    beam: a BeamDecoder (lexicon + n-gram LM) for the text mode's transcripts."""
    dev = resolve_device(device)
    cascade = cascade.to(dev).eval()
    tokenizer = load_tokenizer() if mode == "text" else None
    results, metas, seconds, audio_seconds = [], [], 0.0, 0.0
    for b in DataLoader(ds, batch_size=batch_size, collate_fn=collate):
        start = time.perf_counter()
        results += cascade.predict(b["noisy"].to(dev), b["lengths"].to(dev), b["meta"], mode=mode, tokenizer=tokenizer, beam=beam)
        seconds += time.perf_counter() - start
        audio_seconds += float(b["lengths"].sum()) / SAMPLE_RATE
        metas += b["meta"]
    return _score(metas, results, seconds / max(audio_seconds, 1e-9)), results


def _score(metas: list[dict], results: list[tuple[Prediction, str]], rtf: float) -> dict:
    """wer, cer, wer_<engine> for each TTS engine present, SLURP's SLU metrics, rtf (processing seconds
    per second of audio)."""
    refs, hyps = [m["text"] for m in metas], [t for _, t in results]
    scores = {"wer": wer(refs, hyps), "cer": cer(refs, hyps)}
    for engine in sorted({m["engine"] for m in metas}):
        rows = [i for i, m in enumerate(metas) if m["engine"] == engine]
        scores[f"wer_{engine}"] = wer([refs[i] for i in rows], [hyps[i] for i in rows])
    return scores | slu_metrics(align([gold_of(m) for m in metas], [p for p, _ in results])) | {"rtf": round(rtf, 4)}


@torch.no_grad()
def evaluate_external_asr(transcribe: Callable[[list], list[str]], cascade: Cascade, ds: SpeechDataset, batch_size: int = 16) -> tuple[dict, list[tuple[Prediction, str]]]:
    """An outside recogniser (e.g. pocketsphinx) on the noisy audio, its text into the cascade's NLU;
    the real-time factor counts the recogniser only."""
    tokenizer = load_tokenizer()
    nlu = cascade.nlu.eval()
    results, metas, seconds, audio_seconds = [], [], 0.0, 0.0
    for b in DataLoader(ds, batch_size=batch_size, collate_fn=collate):
        waves = [w[:n].numpy() for w, n in zip(b["noisy"], b["lengths"].tolist())]
        start = time.perf_counter()
        texts = transcribe(waves)
        seconds += time.perf_counter() - start
        audio_seconds += float(b["lengths"].sum()) / SAMPLE_RATE
        words = [split_words(t) or ["<empty>"] for t in texts]
        decoded = decode(nlu(**encode_texts(tokenizer, words)), words, cascade.labels)
        for (scenario, action, entities), text, m in zip(decoded, texts, b["meta"]):
            results.append((Prediction(m["utt_id"], scenario, action, tuple(entities), int(m["slurp_id"])), text))
        metas += b["meta"]
    return _score(metas, results, seconds / max(audio_seconds, 1e-9)), results
