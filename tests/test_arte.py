"""ARTE's teacher material: SLURP annotation templates re-filled with other fillers of the same entity type
make valid SLURP records (spans match fillers, labels in the label set, the reader takes them back), and
templates and fillers come only from the records handed in: no test-split sentence is generated."""

from __future__ import annotations

import itertools

import pytest

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
