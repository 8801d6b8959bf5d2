"""ARTE's teacher material: SLURP annotation templates re-filled with other fillers of the same entity type
make valid SLURP records (spans match fillers, labels in the label set, the reader takes them back), and
templates and fillers come only from the records handed in: no test-split sentence is generated."""

from __future__ import annotations

import itertools
import json

import pytest
import torch

from components.arte import GENERATED_ID_BASE, Slot, fill, fillers_from, parse_annotation, templates_from
from components.data.slurp import read_records, read_slurp, write_slurp
from components.data.splits import split_of
from components.data.validation import load_label_set
from tests.conftest import SAMPLE

ANNOTATIONS = {  # annotation -> parts
    "turn the lights off please": ("turn", "the", "lights", "off", "please"),
    "[player_setting : loop] this track": (Slot("player_setting", "loop"), "this", "track"),
    "wake me up at [time : six am] [date : tomorrow] please": ("wake", "me", "up", "at", Slot("time", "six am"), Slot("date", "tomorrow"), "please"),
    "tell me [date : today's]  [media_type :  newspaper's ] headlines": ("tell", "me", Slot("date", "today's"), Slot("media_type", "newspaper's"), "headlines"),
}


@pytest.mark.parametrize("annotation", ANNOTATIONS)
def test_annotations_parse_into_words_and_slots(annotation):
    assert parse_annotation(annotation) == ANNOTATIONS[annotation]


def split_records():
    records = read_records(SAMPLE)
    return [r for r in records if split_of(r.slurp_id) == "train"], [r for r in records if split_of(r.slurp_id) == "test"]


def generate(templates, fillers, n):
    """Every template with each of its first slot type's fillers, the other slots kept: n records."""
    ids = itertools.count(GENERATED_ID_BASE)
    out = []
    for template in templates:
        for filler in fillers[template.slot_types[0]]:
            values = [filler] + [p.original for p in template.parts if isinstance(p, Slot)][1:]
            out.append(fill(template, values, next(ids)))
            if len(out) == n:
                return out
    return out


def test_refilled_templates_are_valid_slurp_records(tmp_path):
    train, _ = split_records()
    templates, fillers = templates_from(train), fillers_from(train)
    assert templates and all(t.slot_types for t in templates)
    records = generate(templates, fillers, 200)
    assert len(records) == 200 and len({r.sentence for r in records}) > 150

    path = tmp_path / "generated.jsonl"
    write_slurp(records, path)
    back = read_slurp(path)  # the release reader checks every span against the tokens
    labels = load_label_set()
    for record, read in zip(records, back):
        assert read.entities == record.entities and read.sentence == record.sentence and read.intent == record.intent
        words = record.sentence.split()
        for entity in record.entities:
            assert " ".join(words[i] for i in entity.span) == entity.filler and entity.filler in fillers[entity.type]
            assert entity.type in labels["entity_types"]
        assert record.intent in labels["intents"] and record.scenario in labels["scenarios"] and record.action in labels["actions"]


def test_nothing_of_the_test_split_is_generated():
    train, test = split_records()
    records = generate(templates_from(train), fillers_from(train), 10_000)
    test_sentences = {" ".join(r.sentence.lower().split()) for r in test}
    assert records and not test_sentences & {r.sentence for r in records}
    assert {t.source_id for t in templates_from(train)} <= {r.slurp_id for r in train}
    assert all(r.slurp_id >= GENERATED_ID_BASE for r in records)  # never mistaken for a release id


def test_a_missing_filler_is_named():
    template = templates_from(read_records(SAMPLE))[0]
    with pytest.raises(ValueError, match=rf"template {template.source_id}: no filler for slot 0 \('{template.slot_types[0]}'\)"):
        fill(template, {}, GENERATED_ID_BASE)


# --------------------------------------------------------------------------- the sampling policy and its alignment


def test_sampling_follows_the_policy_and_is_seeded():
    from components.arte.policy import SamplingPolicy

    policy = SamplingPolicy({"intent": ["a", "b"], "snr": ["0", "20"]})
    with torch.no_grad():
        policy.logits["intent"].copy_(torch.tensor([0.0, 2.0]))  # p(b) = 0.88
    batch = policy.sample(2000, torch.Generator().manual_seed(0))
    assert batch == policy.sample(2000, torch.Generator().manual_seed(0))
    share_b = sum(example["intent"] == "b" for example in batch) / len(batch)
    assert abs(share_b - policy.probabilities()["intent"]["b"]) < 0.03
    assert abs(sum(example["snr"] == "0" for example in batch) / len(batch) - 0.5) < 0.05


def test_alignment_moves_the_policy_toward_the_preferred_choices():
    """Batches rich in intent 'b' at 20 dB helped the student more than batches rich in 'a' at 0 dB: after DPO
    the policy prefers 'b' and 20 dB, leaves the factor the pairs do not separate (voice) alone, and a
    larger beta moves it less far."""
    from components.arte.policy import AlignConfig, SamplingPolicy, align

    factors = {"intent": ["a", "b", "c"], "snr": ["0", "20"], "voice": ["x", "y"]}
    chosen = [{"intent": "b", "snr": "20", "voice": v} for v in "xy"] * 4
    rejected = [{"intent": "a", "snr": "0", "voice": v} for v in "xy"] * 4
    moved = {}
    for beta in (0.1, 1.0):
        policy = SamplingPolicy(factors)
        losses = align(policy, [(chosen, rejected)] * 3, AlignConfig(beta=beta, steps=100))
        p = policy.probabilities()
        assert losses[-1] < losses[0]
        assert p["intent"]["b"] > 1 / 3 > p["intent"]["a"] and p["snr"]["20"] > 0.5
        assert abs(p["voice"]["x"] - 0.5) < 1e-6
        moved[beta] = p["intent"]["b"]
    assert moved[1.0] < moved[0.1]  # a larger beta holds the policy nearer the reference


def test_a_choice_outside_the_policy_is_named():
    from components.arte.policy import SamplingPolicy

    with pytest.raises(ValueError, match="factor 'snr': '5' is not one of its values"):
        SamplingPolicy({"snr": ["0", "20"]}).log_prob([{"snr": "5"}])
    with pytest.raises(ValueError, match=r"factor\(s\) \['voice'\] have no values"):
        SamplingPolicy({"voice": []})


def test_the_teacher_proposes_valid_records_with_their_choices(tmp_path):
    from components.arte.teacher import Teacher

    train, test = split_records()
    teacher = Teacher(templates_from(train), fillers_from(train), voices=["flite:slt", "espeak-ng:en-us"], snrs=[0, 10, 20])
    examples = teacher.propose(64, torch.Generator().manual_seed(0))
    again = Teacher(templates_from(train), fillers_from(train), voices=["flite:slt", "espeak-ng:en-us"], snrs=[0, 10, 20]).propose(64, torch.Generator().manual_seed(0))
    assert [e.record.sentence for e in examples] == [e.record.sentence for e in again]  # seeded
    assert len({e.record.slurp_id for e in examples}) == 64 and all(e.record.intent == e.choice["intent"] for e in examples)
    assert {e.choice["snr"] for e in examples} <= {"0", "10", "20"} and {e.choice["voice"] for e in examples} <= {"flite:slt", "espeak-ng:en-us"}
    assert {e.choice["noise"] for e in examples} == {"white"}  # the default condition
    write_slurp([e.record for e in examples], tmp_path / "proposed.jsonl")
    assert len(read_slurp(tmp_path / "proposed.jsonl")) == 64
    assert not {" ".join(r.sentence.lower().split()) for r in test} & {e.record.sentence for e in examples}
    assert teacher.policy.log_prob([e.choice for e in examples]).item() < 0


# --------------------------------------------------------------------------- student preferences


def test_the_student_prefers_the_batch_that_teaches_what_it_gets_wrong():
    """A real (tiny) student: a linear intent classifier over 4 features. It already knows intent 0 and
    gets intent 1 wrong; a batch of intent-1 examples gains on the preference set, a batch of intent-0
    examples does not. Pairs and the discriminative items follow, and the student is left untouched."""
    from components.arte.preferences import discriminative_items, measure_gains, preference_pairs

    torch.manual_seed(0)
    student = torch.nn.Linear(4, 2)
    with torch.no_grad():
        student.weight.copy_(torch.tensor([[1.0, 0, 0, 0], [0, 0, 0, 0]]))
        student.bias.zero_()
    items_x = torch.cat([torch.eye(4)[:1].repeat(8, 1), torch.eye(4)[1:2].repeat(8, 1)])  # 8 of intent 0, 8 of intent 1
    items_y = torch.tensor([0] * 8 + [1] * 8)
    batches = {"intent 1": (torch.eye(4)[1:2].repeat(16, 1), torch.ones(16, dtype=torch.long)),
               "intent 0": (torch.eye(4)[:1].repeat(16, 1), torch.zeros(16, dtype=torch.long))}

    def update(model, batch):
        optimizer = torch.optim.SGD(model.parameters(), lr=0.5)
        for _ in range(5):
            optimizer.zero_grad()
            torch.nn.functional.cross_entropy(model(batch[0]), batch[1]).backward()
            optimizer.step()

    def item_losses(model):
        return torch.nn.functional.cross_entropy(model(items_x), items_y, reduction="none")

    weights = student.weight.detach().clone()
    gains, losses = measure_gains(student, list(batches.values()), update, item_losses)
    assert gains[0] > 0.05 > 0 > gains[1] and torch.equal(student.weight, weights), gains
    chosen, rejected = preference_pairs(list(batches), gains)[0]
    assert (chosen, rejected) == ("intent 1", "intent 0")
    assert set(discriminative_items(losses, k=8).tolist()) == set(range(8, 16))  # the intent-1 items tell them apart
    assert preference_pairs(list(batches), [0.1, 0.1], min_margin=0.01) == []


def test_the_policy_shift_plot_shows_every_factor():
    from components.arte.plots import policy_shift_html
    from components.arte.policy import AlignConfig, SamplingPolicy, align

    policy = SamplingPolicy({"intent": ["a", "b"], "snr": ["0", "20"]})
    before = policy.probabilities()
    align(policy, [([{"intent": "b", "snr": "20"}], [{"intent": "a", "snr": "0"}])], AlignConfig(steps=20))
    page = policy_shift_html(before, policy.probabilities())
    assert page.startswith("<html>") and "data:image/png;base64," in page and len(page) > 5_000


def test_the_loop_aligns_the_teacher_to_the_intents_the_student_needs():
    """The full loop on the shipped sample's templates with a real tiny student (bag of words -> intent).
    The preference set holds sentences of three intents only; the teacher learns to propose those."""
    from components.arte.loop import ArteConfig, tailor
    from components.arte.policy import AlignConfig
    from components.arte.teacher import Teacher

    train, _ = split_records()
    teacher = Teacher(templates_from(train), fillers_from(train), voices=["flite:slt"], snrs=[20])
    intents = teacher.policy.values["intent"]
    wanted = sorted(intents, key=lambda i: -len(teacher.by_intent[i]))[:3]  # the three with the most templates
    preference = [r for r in train if r.intent in wanted]

    def features(sentences):  # (n, 256) hashed bag of words: a real, tiny text student
        x = torch.zeros(len(sentences), 256)
        for row, sentence in enumerate(sentences):
            for word in sentence.split():
                x[row, sum(map(ord, word)) % 256] += 1.0
        return x

    index = {intent: i for i, intent in enumerate(intents)}
    items_x, items_y = features([r.sentence for r in preference]), torch.tensor([index[r.intent] for r in preference])
    student = torch.nn.Linear(256, len(intents))
    torch.nn.init.zeros_(student.weight), torch.nn.init.zeros_(student.bias)

    def update(model, examples):
        x, y = features([e.record.sentence for e in examples]), torch.tensor([index[e.record.intent] for e in examples])
        optimizer = torch.optim.SGD(model.parameters(), lr=0.5)
        for _ in range(3):
            optimizer.zero_grad()
            torch.nn.functional.cross_entropy(model(x), y).backward()
            optimizer.step()

    def item_losses(model, items):
        losses = torch.nn.functional.cross_entropy(model(items_x), items_y, reduction="none")
        return losses if items is None else losses[items]

    start = sum(teacher.policy.probabilities()["intent"][i] for i in wanted)
    history = tailor(teacher, student, update, item_losses, ArteConfig(rounds=3, candidates=6, batch_size=12, preference_items=6, align=AlignConfig(steps=50)), torch.Generator().manual_seed(0))
    end = sum(history[-1]["policy"]["intent"][i] for i in wanted)
    assert len(history) == 3 and all(h["pairs"] for h in history)
    assert [h["items"] for h in history] == [len(preference), 6, 6]  # after round 1 only the discriminative items
    assert end > 2 * start, (start, end)
    tailored = teacher.propose(200, torch.Generator().manual_seed(1))
    assert sum(e.record.intent in wanted for e in tailored) / 200 > 2 * start


def test_excluded_sentences_are_never_proposed():
    """Re-filling train templates can rebuild a test sentence: the teacher draws again instead, and leaves
    out a template that can only make excluded sentences."""
    from components.arte.teacher import Teacher

    train, _ = split_records()
    templates, fillers = templates_from(train), fillers_from(train)
    first = Teacher(templates, fillers, voices=["v"], snrs=[20]).propose(300, torch.Generator().manual_seed(0))
    banned = {e.record.sentence.upper() for e in first[:60]}  # compared case- and space-insensitively
    teacher = Teacher(templates, fillers, voices=["v"], snrs=[20], exclude=banned)
    again = teacher.propose(300, torch.Generator().manual_seed(0))
    assert not {e.record.sentence.upper() for e in again} & banned
    assert teacher.dropped  # e.g. a one-filler template whose only sentence was banned
    for template in teacher.dropped:
        assert all(r.sentence.upper() in banned for r in generate([template], fillers, 10_000))
    kept = {t.intent for t in templates if t not in teacher.dropped}
    assert teacher.policy.values["intent"] == sorted(kept)

    one_each = {k: v[:1] for k, v in fillers.items()}  # every template makes one sentence; exclude them all
    every = {fill(t, [one_each[p.type][0] for p in t.parts if isinstance(p, Slot)], 0).sentence for t in templates}
    with pytest.raises(ValueError, match=rf"no templates: .*\({len(templates)} make only excluded sentences\)"):
        Teacher(templates, one_each, voices=["v"], snrs=[20], exclude=every)


def test_the_policy_round_trips_as_json_and_names_a_mismatch():
    from components.arte.policy import SamplingPolicy

    policy = SamplingPolicy({"intent": ["a", "b"], "snr": ["0", "20"]})
    with torch.no_grad():
        policy.logits["intent"].copy_(torch.tensor([0.5, -1.0]))
    saved = json.loads(json.dumps(policy.logits_dict()))
    back = SamplingPolicy({"intent": ["a", "b"], "snr": ["0", "20"]})
    back.load_logits(saved)
    assert back.probabilities() == policy.probabilities()
    with pytest.raises(ValueError, match=r"saved policy factor 'intent' has values \['a', 'b'\], this teacher's are \['a', 'c'\]"):
        SamplingPolicy({"intent": ["a", "c"], "snr": ["0", "20"]}).load_logits(saved)
    with pytest.raises(ValueError, match=r"factor\(s\) \['snr'\] this teacher does not choose"):
        SamplingPolicy({"intent": ["a", "b"]}).load_logits(saved)


# --------------------------------------------------------------------------- speech and the cascade student


@pytest.fixture(scope="module")
def spoken(tmp_path_factory):
    """Eight proposed examples, spoken by two real TTS voices in two noise conditions."""
    from components.arte.speech import folder_name, speak, speech_config
    from components.arte.teacher import Teacher
    from components.data.speakers import Speaker

    train, test = split_records()
    speakers = [Speaker("flite", "slt"), Speaker("espeak-ng", "en-us")]
    cfg = speech_config(speakers, snrs=[0, 20], noises=["white", "pink"], workers=2)
    teacher = Teacher(templates_from(train), fillers_from(train), voices=[s.id for s in speakers], snrs=[0, 20], noises=["white", "pink"], exclude=[r.sentence for r in test])
    examples = teacher.propose(8, torch.Generator().manual_seed(0))
    out = tmp_path_factory.mktemp("arte") / folder_name("tailored", examples, cfg)
    return examples, cfg, out, speak(examples, out, cfg)


def test_spoken_examples_follow_their_choices_and_pass_validation(spoken):
    from components.arte.speech import folder_name
    from components.data.validation import validate_frame

    examples, cfg, out, manifest = spoken
    assert len(manifest) == 8 and set(manifest["split"]) == {"train"}
    for e, row in zip(examples, manifest.to_dict("records")):
        assert (row["speaker"], row["noise"], row["snr"]) == (e.choice["voice"], e.choice["noise"], float(e.choice["snr"]))
        assert row["text"] == e.record.sentence and row["intent"] == e.record.intent and row["slurp_id"] == e.record.slurp_id
        assert abs(row["snr_measured"] - row["snr"]) < 1.0 and row["duration"] > 0.3
    report = validate_frame(manifest, out / "manifest.jsonl")
    assert report.ok, report.failures[:3]
    assert [r.sentence for r in read_slurp(out / "slurp.jsonl")] == [e.record.sentence for e in examples]
    # content-addressed: another choice is another folder
    other = [examples[0].__class__(examples[0].record, examples[0].choice | {"snr": "0" if examples[0].choice["snr"] == "20" else "20"}), *examples[1:]]
    assert folder_name("tailored", examples, cfg) == out.name != folder_name("tailored", other, cfg)


def test_a_voice_outside_the_corpus_is_named(spoken, tmp_path):
    from components.arte.speech import speak

    examples, cfg, _, _ = spoken
    wrong = examples[0].__class__(examples[0].record, examples[0].choice | {"voice": "festival-kal_diphone-p+0-r1"})
    with pytest.raises(ValueError, match=rf"example {wrong.record.slurp_id}: voice 'festival-kal_diphone-p\+0-r1' is not one of the corpus speakers"):
        speak([wrong], tmp_path, cfg)
    assert not (tmp_path / "manifest.jsonl").exists()


def test_per_utterance_nlu_losses_match_the_batch_loss():
    from components.models.nlu import IGNORE, nlu_loss

    torch.manual_seed(0)
    outputs = {"scenario_logits": torch.randn(3, 4), "action_logits": torch.randn(3, 5), "tag_logits": torch.randn(3, 6, 7)}
    tags = torch.randint(0, 7, (3, 6))
    tags[1, 4:] = IGNORE
    targets = {"scenario": torch.tensor([0, 1, 2]), "action": torch.tensor([4, 0, 1]), "tags": tags}
    per_item = nlu_loss(outputs, targets, reduction="none")
    assert per_item.shape == (3,)
    for i in range(3):
        one = nlu_loss({k: v[i : i + 1] for k, v in outputs.items()}, {k: v[i : i + 1] for k, v in targets.items()})
        torch.testing.assert_close(per_item[i], one)
    with pytest.raises(ValueError, match="reduction must be 'mean' or 'none'"):
        nlu_loss(outputs, targets, reduction="sum")


def test_the_cascade_student_learns_from_a_spoken_batch_and_stays_unchanged(spoken):
    """A real cascade (tiny ASR, MiniLM NLU) with adapters everywhere: a short update on the spoken batch
    lowers its NLU loss on those utterances; measure_gains trains copies, never the student."""
    from components.arte.preferences import measure_gains
    from components.arte.student import CascadeStudent
    from components.data.dataset import SpeechDataset
    from components.models.asr import ASRConfig, ConformerCTC
    from components.models.cascade import Cascade
    from components.models.nlu import NluLabels, build_nlu
    from components.models.se import MaskEnhancer
    from components.nas import Architecture, attach_cells
    from components.training.loop import TrainConfig

    examples, cfg, out, manifest = spoken
    torch.manual_seed(0)
    labels = NluLabels.from_label_set()
    cascade = Cascade(MaskEnhancer(), ConformerCTC(ASRConfig(d_model=64, ffn=128, layers=1, heads=4, dropout=0.0)), build_nlu(labels), labels)
    cells = attach_cells(cascade, "NA")
    choices = {name: "adapter" for name in cells}
    Architecture(cells).fix(choices)
    student = CascadeStudent(choices, SpeechDataset(manifest, out), cfg, out, TrainConfig(max_steps=6, batch_size=4, lr=0.003, progress=False, patience=None))
    before = {k: v.clone() for k, v in cascade.state_dict().items()}
    all_items = student.item_losses(cascade, None)
    assert all_items.shape == (8,) and (all_items > 0).all()
    torch.testing.assert_close(student.item_losses(cascade, torch.tensor([1, 5])), all_items[[1, 5]])
    gains, losses = measure_gains(cascade, [examples], student.update, lambda m: student.item_losses(m, None))
    assert gains[0] > 0 and losses.shape == (1, 8), gains
    assert all(torch.equal(before[k], v) for k, v in cascade.state_dict().items())


def test_effective_choices_count_what_the_policy_still_chooses():
    from components.arte.policy import SamplingPolicy

    policy = SamplingPolicy({"intent": ["a", "b", "c", "d"], "snr": ["0", "20"]})
    assert policy.effective_choices() == pytest.approx({"intent": 4.0, "snr": 2.0})
    with torch.no_grad():
        policy.logits["intent"].copy_(torch.tensor([0.0, 0.0, -30.0, -30.0]))
    assert policy.effective_choices()["intent"] == pytest.approx(2.0, abs=1e-6)


def test_the_steps_refuse_an_empty_preference_set_and_nothing_to_generate():
    import pandas as pd

    from steps.arte import align_teacher, generate_examples

    empty = pd.DataFrame(columns=["slurp_id", "text"])
    with pytest.raises(ValueError, match="the nas_val split is empty"):
        align_teacher.entrypoint(None, {}, empty, empty, empty, "manifest.jsonl", "slurp.jsonl", {}, {})
    with pytest.raises(ValueError, match=r"n \(examples to generate\) must be at least 1, got 0"):
        generate_examples.entrypoint(empty, empty, empty, "manifest.jsonl", "slurp.jsonl", 0)
