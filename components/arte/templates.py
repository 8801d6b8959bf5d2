"""SLURP annotation templates and the fillers to re-fill them with: the teacher's raw material (ARTE).

    templates = templates_from(train_records)          # "wake me up at [time : five am]" -> words and slots
    fillers = fillers_from(train_records)              # {"time": ["five am", "noon", ...], ...}
    record = fill(templates[0], {"time": "noon"}, slurp_id=90_000_001)   # a valid SlurpRecord

A generated record is a SLURP release record: the sentence is the template's words with the new fillers,
tokens are its whitespace-separated words, each entity spans exactly its filler's tokens, scenario and
action are the template's. Only the records handed in are read, so nothing of another split can leak.
"""

from __future__ import annotations

import re
from collections import defaultdict
from dataclasses import dataclass
from typing import Iterable, Mapping, Sequence

from components.data.slurp import Entity, SlurpRecord

SLOT = re.compile(r"\[\s*([^\]:]+?)\s*:\s*([^\]]+?)\s*\]")
GENERATED_ID_BASE = 90_000_000  # generated slurp_ids start here: above every id of the SLURP release


@dataclass(frozen=True)
class Template:
    """A sentence with slots: parts are plain words (str) or slot types (Slot), in order."""

    source_id: int  # the slurp_id it was read from
    scenario: str
    action: str
    parts: tuple  # str | Slot

    @property
    def slot_types(self) -> tuple[str, ...]:
        return tuple(p.type for p in self.parts if isinstance(p, Slot))

    @property
    def intent(self) -> str:
        return f"{self.scenario}_{self.action}"


@dataclass(frozen=True)
class Slot:
    type: str
    original: str  # the filler the template came with


def parse_annotation(annotation: str) -> tuple:
    """"set an alarm for [time : six am] please" -> ("set", "an", "alarm", "for", Slot("time", "six am"), "please")."""
    parts: list = []
    position = 0
    for match in SLOT.finditer(annotation):
        parts += annotation[position : match.start()].split()
        parts.append(Slot(match.group(1).strip(), " ".join(match.group(2).split())))
        position = match.end()
    parts += annotation[position:].split()
    return tuple(parts)


def templates_from(records: Iterable[SlurpRecord]) -> list[Template]:
    """One template per labelled record with at least one slot, in the records' order."""
    templates = []
    for record in records:
        if not record.scenario:
            continue
        parts = parse_annotation(record.sentence_annotation)
        if any(isinstance(p, Slot) for p in parts):
            templates.append(Template(record.slurp_id, record.scenario, record.action, parts))
    return templates


def fillers_from(records: Iterable[SlurpRecord]) -> dict[str, list[str]]:
    """Every distinct filler of each entity type, as written in the annotations, in first-seen order."""
    found: dict[str, dict[str, None]] = defaultdict(dict)
    for template in templates_from(records):
        for part in template.parts:
            if isinstance(part, Slot):
                found[part.type][part.original.lower()] = None
    return {slot_type: list(values) for slot_type, values in found.items()}


def fill(template: Template, fillers: Mapping[str, str] | Sequence[str], slurp_id: int) -> SlurpRecord:
    """The template with its slots filled: a mapping by slot type (every slot of that type gets it), or one
    filler per slot in order. Raises ValueError naming the slot left without a filler."""
    words: list[str] = []
    annotation: list[str] = []
    entities: list[Entity] = []
    slot_index = 0
    for part in template.parts:
        if not isinstance(part, Slot):
            words.append(part)
            annotation.append(part)
            continue
        if isinstance(fillers, Mapping):
            filler = fillers.get(part.type)
        else:
            filler = fillers[slot_index] if slot_index < len(fillers) else None
        if not filler or not filler.split():
            raise ValueError(f"template {template.source_id}: no filler for slot {slot_index} ({part.type!r})")
        filler_words = filler.lower().split()
        span = tuple(range(len(words), len(words) + len(filler_words)))
        words += filler_words
        annotation.append(f"[{part.type} : {' '.join(filler_words)}]")
        entities.append(Entity(type=part.type, filler=" ".join(filler_words), span=span))
        slot_index += 1
    return SlurpRecord(
        slurp_id=slurp_id,
        sentence=" ".join(words),
        sentence_annotation=" ".join(annotation),
        scenario=template.scenario,
        action=template.action,
        tokens=tuple({"surface": w, "id": i, "lemma": w, "pos": ""} for i, w in enumerate(words)),
        entities=tuple(entities),
        raw_intent=template.action,
    )
