"""The frozen-front cache on a tiny random Whisper cascade and real synthesized speech (8 clips, 2 tasks): the level follows
what trains (features under HRA, encoder states under a decoder-only LoRA, nothing when the SE trains),
cached training gives bit-identical losses to recomputing every clip, and matches the batched path."""

from __future__ import annotations

import copy

import pytest
import torch

from components import adapters as A
from components.multitask import TASK, train_task_adapters
from components.training.front_cache import STORE, ByteLRU, FrontCache
from components.training.loop import TrainConfig

CFG = TrainConfig(max_epochs=2, batch_size=4, lr=1e-2, progress=False, device="cpu", patience=None, log_every=1, seed=3)
DECODER_LORA = lambda: A.LoraConfig(target_modules=["asr.whisper.model.decoder.layers.*.self_attn.q_proj", "asr.whisper.model.decoder.layers.*.self_attn.v_proj"], r=4)  # noqa: E731
HRA = lambda: A.HRAConfig(target_modules=["asr:@layer"], r=8)  # noqa: E731


@pytest.fixture(scope="module")
def speech(two_speaker_speech):
    """Two speakers say the same 4 sentences in pink noise: two tasks of 4 clips (conftest)."""
    return two_speaker_speech


@pytest.fixture(scope="module")
def cascade():
    from components.models.cascade import Cascade
    from components.models.nlu import NluLabels, build_nlu
    from components.models.se import MaskEnhancer, SEConfig
    from components.models.whisper.load import DEFAULT_MODEL, load_tokenizer, whisper_files
    from tests.test_adapters_whisper import tiny_whisper

    torch.manual_seed(0)
    labels = NluLabels.from_label_set()
    asr = tiny_whisper(load_tokenizer(whisper_files(DEFAULT_MODEL).tokenizer))
    asr.config.context_seconds = 6.0  # the synthesized commands are 2-6 s
    return Cascade(MaskEnhancer(SEConfig(hidden=16, layers=1)), asr, build_nlu(labels), labels)


def _losses(cascade, speech, config, cache_mb: float) -> list[float]:
    """Per-step training losses of the tasks' adapters, from an empty process cache."""
    model = copy.deepcopy(cascade)
    tasks = sorted({row[TASK] for row in speech.rows})
    records = []
    STORE.clear()
    torch.manual_seed(0)  # the adapter's initial weights
    train_task_adapters(model, config(), tasks, speech, speech, TrainConfig(**{**CFG.__dict__, "front_cache_mb": cache_mb}), records.append)
    return [r["loss"] for r in records if "loss" in r]


@pytest.mark.parametrize("config, level", [(HRA, "features"), (DECODER_LORA, "encoder_states")], ids=["hra", "decoder_lora"])
def test_cached_training_is_bit_identical_to_recomputing(cascade, speech, config, level):
    model = copy.deepcopy(cascade)
    A.add_adapter(model, config(), name="x")
    A.freeze_backbone(model)
    assert FrontCache(1).level(model)[0] == level
    cached = _losses(cascade, speech, config, 512)
    assert STORE.hits > 0 and STORE.misses == len(speech), "each clip computed once, then read from the cache"
    recomputed = _losses(cascade, speech, config, 1e-9)  # a bound no row fits: every clip recomputed every time
    assert STORE.hits == 0
    assert len(cached) == 4 and cached == recomputed
    batched = _losses(cascade, speech, config, 0)  # no cache: the batched SE -> features -> encoder path
    torch.testing.assert_close(torch.tensor(batched), torch.tensor(cached), rtol=1e-4, atol=1e-5)


def test_level_follows_what_trains(cascade):
    model = copy.deepcopy(cascade)
    for p in model.parameters():
        p.requires_grad_(False)
    assert FrontCache(1).level(model)[0] == "encoder_states"
    model.asr.whisper.model.encoder.layers[0].fc1.weight.requires_grad_(True)
    assert FrontCache(1).level(model)[0] == "features"
    model.se.mask.weight.requires_grad_(True)
    assert FrontCache(1).level(model) is None


def test_store_is_bounded_and_content_addressed(cascade, speech):
    store = ByteLRU()
    cache = FrontCache(0.5, store)  # 0.5 MiB: two 80 x 600 float rows (192,000 bytes each) at most
    model = copy.deepcopy(cascade)
    A.add_adapter(model, HRA(), name="x")
    A.freeze_backbone(model)
    batch = next(iter(torch.utils.data.DataLoader(speech, batch_size=len(speech), collate_fn=__import__("components.data.dataset", fromlist=["collate"]).collate)))
    level, x = cache.front(model, batch)
    assert level == "features" and x.shape == (len(speech), 80, 600) and len(speech) > 2
    assert store.bytes <= 2**19 and len(store.items) == 2
    other = copy.deepcopy(model)
    with torch.no_grad():
        other.se.mask.bias.add_(0.1)  # another SE: another digest, no stale hit
    hits = store.hits
    _, y = FrontCache(0.5, store).front(other, batch)
    assert store.hits == hits and not torch.equal(x, y)
