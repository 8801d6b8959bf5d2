"""SLURP release format: read records, write them back, write predictions.

A release line (one JSON object per line) looks like::

    {"slurp_id": 13804, "sentence": "...", "sentence_annotation": "... [currency_name : japanese yen]",
     "intent": "qa_currency", "action": "currency", "scenario": "qa",
     "tokens": [{"surface": "siri", "id": 0, "lemma": "siri", "pos": "VB"}, ...],
     "recordings": [{"file": "audio-1434542201.flac", "wer": 0.0, "ent_wer": 0.0, "status": "correct"}],
     "entities": [{"span": [7, 8], "type": "currency_name"}]}

Entity spans are lists of token ids; the filler is their surfaces joined by
spaces and lower-cased, as the official scorer builds its gold fillers. The intent is rebuilt as ``scenario_action`` as SLURP's official scorer
does: the raw ``intent`` field of some rows holds only the action.

Predictions go out in the official evaluation format, one JSON object per
line: ``{"file": ..., "slurp_id": ..., "scenario": ..., "action": ...,
"entities": [{"type": ..., "filler": ...}]}``.
"""

from __future__ import annotations

import hashlib
import json
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Iterable

from components.data.atomic import atomic_write_text
from components.data.jsonl import iter_jsonl


class SlurpFormatError(ValueError):
    """A SLURP file line that is not valid JSON or misses a required field."""


@dataclass(frozen=True)
class Entity:
    type: str
    filler: str
    span: tuple[int, ...] = ()


@dataclass(frozen=True)
class SlurpRecord:
    slurp_id: int
    sentence: str
    sentence_annotation: str
    scenario: str
    action: str
    tokens: tuple[dict, ...]
    entities: tuple[Entity, ...]
    recordings: tuple[dict, ...] = ()  # {"file", "wer", "ent_wer", "status"} as released
    raw_intent: str = ""
    # Absolute paths of the recordings found under a local copy of the release.
    audio_paths: tuple[str, ...] = field(default=())

    @property
    def intent(self) -> str:
        """scenario_action; empty for unlabelled text (lm.txt)."""
        return f"{self.scenario}_{self.action}" if self.scenario or self.action else ""


REQUIRED_FIELDS = ("slurp_id", "sentence", "scenario", "action", "tokens", "entities")


def _parse_record(obj: dict, where: str, audio_dir: Path | None) -> SlurpRecord:
    if not isinstance(obj, dict):
        raise SlurpFormatError(f"{where}: expected a JSON object, got {type(obj).__name__}")
    missing = [k for k in REQUIRED_FIELDS if k not in obj]
    if missing:
        raise SlurpFormatError(f"{where}: missing field(s) {', '.join(missing)}")
    tokens = tuple(obj["tokens"])
    surface_by_id = {}
    for t in tokens:
        if not isinstance(t, dict) or "id" not in t or "surface" not in t:
            raise SlurpFormatError(f"{where}: token without 'id' and 'surface': {t!r}")
        surface_by_id[t["id"]] = t["surface"]
    entities = []
    for ent in obj["entities"]:
        span = tuple(ent.get("span", ()))
        unknown = [i for i in span if i not in surface_by_id]
        if "type" not in ent or not span or unknown:
            raise SlurpFormatError(
                f"{where}: entity {ent!r} has no type, an empty span or token ids {unknown} not in tokens"
            )
        # As SLURP's scorer builds gold fillers: lower-cased token surfaces ("mom 's").
        filler = " ".join(surface_by_id[i] for i in span).lower()
        entities.append(Entity(type=ent["type"], filler=filler, span=span))
    recordings = tuple(obj.get("recordings", ()))
    if any(not isinstance(r, dict) or "file" not in r for r in recordings):
        raise SlurpFormatError(f"{where}: a recording without 'file'")
    audio_paths: tuple[str, ...] = ()
    if audio_dir is not None:
        audio_paths = tuple(str(audio_dir / r["file"]) for r in recordings if (audio_dir / r["file"]).is_file())
    return SlurpRecord(
        slurp_id=int(obj["slurp_id"]),
        sentence=obj["sentence"],
        sentence_annotation=obj.get("sentence_annotation", obj["sentence"]),
        scenario=obj["scenario"],
        action=obj["action"],
        tokens=tokens,
        entities=tuple(entities),
        recordings=recordings,
        raw_intent=obj.get("intent", ""),
        audio_paths=audio_paths,
    )


def read_slurp(path: str | os.PathLike, audio_dir: str | os.PathLike | None = None) -> list[SlurpRecord]:
    """Read a SLURP release jsonl file.

    audio_dir: a local copy of the release's audio (``slurp_real/`` with the
    FLAC files); when given, each record's ``audio_paths`` lists the
    recordings found there.
    """
    path = Path(path)
    audio = Path(audio_dir) if audio_dir is not None else None
    return [_parse_record(obj, f"{path}:{lineno}", audio) for lineno, obj in iter_jsonl(path, SlurpFormatError)]


def read_text_lines(path: str | os.PathLike) -> list[SlurpRecord]:
    """Unlabelled records from plain text, one sentence per line (SLURP's lm.txt).

    Repeated lines are kept once. The slurp_id is a stable 13-digit hash of the
    text, far above the release's ids (< 100,000), so it never collides with them.
    """
    path = Path(path)
    seen: dict[str, None] = {}
    with open(path, encoding="utf-8") as f:
        for line in f:
            text = " ".join(line.split())
            if text:
                seen.setdefault(text, None)
    records = []
    for text in seen:
        sid = 10**12 + int.from_bytes(hashlib.sha256(text.encode()).digest()[:8], "big") % (9 * 10**12)
        tokens = tuple({"surface": w, "id": i} for i, w in enumerate(text.split()))
        records.append(SlurpRecord(sid, text, text, "", "", tokens, ()))
    return records


def read_records(path: str | os.PathLike) -> list[SlurpRecord]:
    """A SLURP release .jsonl, or plain text lines (.txt) as unlabelled records."""
    return read_text_lines(path) if Path(path).suffix == ".txt" else read_slurp(path)


def record_to_release(rec: SlurpRecord) -> dict:
    """The release-format object of a record (the inverse of the reader)."""
    return {
        "slurp_id": rec.slurp_id,
        "sentence": rec.sentence,
        "sentence_annotation": rec.sentence_annotation,
        "intent": rec.raw_intent or rec.intent,
        "action": rec.action,
        "tokens": list(rec.tokens),
        "scenario": rec.scenario,
        "recordings": list(rec.recordings),
        "entities": [{"span": list(e.span), "type": e.type} for e in rec.entities],
    }


def write_slurp(records: Iterable[SlurpRecord], path: str | os.PathLike) -> None:
    lines = (json.dumps(record_to_release(r), ensure_ascii=False) for r in records)
    atomic_write_text(Path(path), "".join(line + "\n" for line in lines))


@dataclass(frozen=True)
class Prediction:
    """One utterance's SLU output, as SLURP's scorer reads it."""

    file: str
    scenario: str
    action: str
    entities: tuple[Entity, ...] = ()
    slurp_id: int | None = None

    @property
    def intent(self) -> str:
        return f"{self.scenario}_{self.action}"

    @property
    def no_speech(self) -> bool:
        """No intent: the recogniser heard nobody speak (an NLU always names a scenario and an action)."""
        return not self.scenario and not self.action


def gold_prediction(rec: SlurpRecord, file: str | None = None) -> Prediction:
    """The reference of a record in prediction form (what a perfect system outputs)."""
    file = file or (rec.recordings[0]["file"] if rec.recordings else str(rec.slurp_id))
    return Prediction(file, rec.scenario, rec.action, tuple(Entity(e.type, e.filler) for e in rec.entities), rec.slurp_id)


def write_predictions(preds: Iterable[Prediction], path: str | os.PathLike) -> None:
    def obj(p: Prediction) -> dict:
        out = {
            "file": p.file,
            "scenario": p.scenario,
            "action": p.action,
            "entities": [{"type": e.type, "filler": e.filler} for e in p.entities],
        }
        if p.slurp_id is not None:
            out["slurp_id"] = p.slurp_id
        return out

    atomic_write_text(Path(path), "".join(json.dumps(obj(p), ensure_ascii=False) + "\n" for p in preds))


def read_predictions(path: str | os.PathLike) -> list[Prediction]:
    path = Path(path)
    preds = []
    for lineno, o in iter_jsonl(path, SlurpFormatError):
        missing = [k for k in ("file", "scenario", "action", "entities") if k not in o]
        if missing:
            raise SlurpFormatError(f"{path}:{lineno}: missing field(s) {', '.join(missing)}")
        ents = tuple(Entity(e["type"], e["filler"]) for e in o["entities"])
        preds.append(Prediction(o["file"], o["scenario"], o["action"], ents, o.get("slurp_id")))
    return preds
