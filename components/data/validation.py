"""Validate a corpus manifest row by row with Great Expectations.

Every check is a Great Expectations 1.x expectation run on a pandas DataFrame:
the manifest as read, plus derived columns (values coerced to numbers, the
result of probing each audio file, the number of splits a slurp_id falls in).
Failing rows come back identified by their ``utt_id`` and position, each with a
human-readable reason, in a :class:`ValidationReport` that can be written as
JSON or as a self-contained HTML page.

Manifest-level problems (unreadable file, missing columns) are not row
failures: :func:`components.data.manifest.read_manifest` raises
:class:`~components.data.manifest.ManifestError` for them.
"""

from __future__ import annotations

import html
import json
import logging
import math
import os
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Callable, Mapping

import numpy as np
import pandas as pd
import soundfile as sf

from components.data.manifest import read_manifest, resolve_audio
from components.data.splits import SPLITS

# GX logs every registration at DEBUG while importing; under ZenML's root logger that is hundreds of lines.
logging.getLogger("great_expectations").setLevel(logging.WARNING)

DEFAULT_LABELS = Path(__file__).parent / "sample" / "labels.json"
LABEL_KEYS = ("scenarios", "actions", "intents", "entity_types")
NUMERIC_COLUMNS = ("slurp_id", "duration", "sample_rate", "snr", "snr_measured")


class LabelSetError(ValueError):
    """A label set file that cannot be read."""


def load_label_set(path: str | os.PathLike | None = None) -> dict[str, set[str]]:
    """Read a label set: {scenarios, actions, intents, entity_types} -> set of names.

    ``path`` is a labels JSON file (default: the one shipped with the package),
    or a SLURP release ``.jsonl`` from which the labels are derived (intents as
    ``scenario_action``, as SLURP's scorer does).
    """
    path = Path(path) if path is not None else DEFAULT_LABELS
    if not path.is_file():
        raise LabelSetError(f"{path}: no such label set file")
    if path.suffix == ".jsonl":
        from components.data.slurp import read_slurp

        try:
            records = read_slurp(path)
        except (ValueError, OSError) as e:
            raise LabelSetError(f"{path}: unreadable SLURP release ({e})") from None
        labels: dict[str, set[str]] = {k: set() for k in LABEL_KEYS}
        for r in records:
            labels["scenarios"].add(r.scenario)
            labels["actions"].add(r.action)
            labels["intents"].add(r.intent)
            labels["entity_types"].update(e.type for e in r.entities)
        if not labels["intents"]:
            raise LabelSetError(f"{path}: no records, so no labels")
        return labels
    try:
        obj = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError) as e:
        raise LabelSetError(f"{path}: unreadable label set ({e})") from None
    except json.JSONDecodeError as e:
        raise LabelSetError(f"{path}: malformed JSON (line {e.lineno}, column {e.colno}: {e.msg})") from None
    if not isinstance(obj, dict) or not isinstance(obj.get("intents"), list):
        raise LabelSetError(f"{path}: expected a JSON object with an 'intents' list (and scenarios, actions, entity_types)")
    labels = {}
    for key in LABEL_KEYS:
        values = obj.get(key, [])
        if not isinstance(values, list) or not all(isinstance(v, str) for v in values):
            raise LabelSetError(f"{path}: '{key}' must be a list of strings")
        labels[key] = set(values)
    return labels


@dataclass
class ValidationLimits:
    sample_rate: int = 16000
    min_duration: float = 0.3  # seconds
    max_duration: float = 30.0
    min_snr: float = -10.0  # dB
    max_snr: float = 60.0
    snr_tolerance: float = 0.5  # |measured - requested| SNR, dB
    allow_unlabelled: bool = False  # rows with no scenario/action (text-only corpora, e.g. from lm.txt)


@dataclass
class RowFailure:
    utt_id: str
    row: int  # 0-based position in the manifest
    check: str
    reason: str


@dataclass
class ValidationReport:
    manifest: str
    ok: bool
    n_rows: int
    failures: list[RowFailure] = field(default_factory=list)
    checks: list[dict] = field(default_factory=list)  # {name, success, unexpected_count, description}

    @property
    def failing_rows(self) -> list[int]:
        return sorted({f.row for f in self.failures})

    def format_failures(self) -> str:
        return "\n".join(f"{f.utt_id} (row {f.row}): {f.reason}" for f in self.failures)

    def to_dict(self) -> dict:
        return asdict(self)

    def to_json(self, indent: int | None = 2) -> str:
        return json.dumps(self.to_dict(), indent=indent, ensure_ascii=False)

    @classmethod
    def from_dict(cls, d: Mapping) -> "ValidationReport":
        return cls(
            manifest=d["manifest"],
            ok=d["ok"],
            n_rows=d["n_rows"],
            failures=[RowFailure(**f) for f in d.get("failures", [])],
            checks=[dict(c) for c in d.get("checks", [])],
        )

    def to_html(self) -> str:
        e = html.escape
        status = "PASSED" if self.ok else "FAILED"
        check_rows = "\n".join(
            f'<tr class="{"ok" if c["success"] else "bad"}"><td>{e(c["name"])}</td>'
            f"<td>{e(c.get('description', ''))}</td>"
            f'<td>{"pass" if c["success"] else "FAIL"}</td><td class="num">{c["unexpected_count"]}</td></tr>'
            for c in self.checks
        )
        if self.failures:
            fail_rows = "\n".join(
                f'<tr><td class="num">{f.row}</td><td>{e(f.utt_id)}</td><td>{e(f.check)}</td><td>{e(f.reason)}</td></tr>'
                for f in self.failures
            )
            failures = (
                "<table><thead><tr><th>row</th><th>utt_id</th><th>check</th><th>reason</th></tr></thead>"
                f"<tbody>\n{fail_rows}\n</tbody></table>"
            )
        else:
            failures = "<p>No failing rows.</p>"
        return f"""<!DOCTYPE html>
<html lang="en">
<head>
<meta charset="utf-8">
<title>Manifest validation: {e(status)}: {e(self.manifest)}</title>
<style>
body {{ font-family: system-ui, sans-serif; margin: 2em; color: #222; }}
table {{ border-collapse: collapse; margin: 1em 0; }}
th, td {{ border: 1px solid #ccc; padding: 0.3em 0.6em; text-align: left; vertical-align: top; }}
th {{ background: #f0f0f0; }}
td.num {{ text-align: right; }}
tr.bad td {{ background: #fde8e8; }}
tr.ok td {{ background: #e8f6e8; }}
.status {{ font-weight: bold; color: {"#1a7f37" if self.ok else "#b42318"}; }}
</style>
</head>
<body>
<h1>Manifest validation</h1>
<table>
<tr><th>manifest</th><td>{e(self.manifest)}</td></tr>
<tr><th>status</th><td class="status">{status}</td></tr>
<tr><th>rows</th><td class="num">{self.n_rows}</td></tr>
<tr><th>failing rows</th><td class="num">{len(self.failing_rows)}</td></tr>
<tr><th>failures</th><td class="num">{len(self.failures)}</td></tr>
</table>
<h2>Checks</h2>
<table><thead><tr><th>check</th><th>what</th><th>result</th><th>failing rows</th></tr></thead>
<tbody>
{check_rows}
</tbody></table>
<h2>Failing rows</h2>
{failures}
</body>
</html>
"""


# --------------------------------------------------------------------------- checks


def _fmt(v: object) -> str:
    """A value for a message: numbers without a spurious .0, strings quoted."""
    if isinstance(v, (bool, np.bool_)):
        return str(v)
    if isinstance(v, (int, np.integer)):
        return str(int(v))
    if isinstance(v, (float, np.floating)):
        return f"{float(v):g}"
    return repr(v)


def _is_missing(v: object) -> bool:
    if v is None:
        return True
    if isinstance(v, float) and math.isnan(v):
        return True
    if isinstance(v, str) and not v.strip():
        return True
    try:
        return bool(pd.isna(v))
    except (TypeError, ValueError):
        return False


def _as_str(v: object) -> str:
    """A text-like value as a stripped string; missing values become ''."""
    if isinstance(v, str):
        return v.strip()
    return "" if _is_missing(v) else str(v).strip()


def _to_number(v: object) -> float:
    if isinstance(v, (bool, np.bool_)) or _is_missing(v):
        return math.nan
    try:
        return float(v)
    except (TypeError, ValueError):
        return math.nan


@dataclass
class _Probe:
    ok: bool
    error: str = ""
    sample_rate: float = math.nan
    frames: int = 0


def _probe_audio(path: Path) -> _Probe:
    """Open a file with soundfile and decode it fully (block by block)."""
    if not path.is_file():
        return _Probe(False, "does not exist")
    try:
        frames = 0
        with sf.SoundFile(path) as f:
            rate = f.samplerate
            for block in f.blocks(blocksize=1 << 16, dtype="float32"):
                frames += len(block)
    except Exception as e:  # libsndfile / soundfile raise several types for a bad file
        msg = getattr(e, "error_string", None) or str(e)
        return _Probe(False, f"cannot be decoded ({msg})")
    if frames == 0:
        return _Probe(False, "has no audio samples", float(rate), 0)
    return _Probe(True, "", float(rate), frames)


def _probe_column(manifest_path: Path, values: pd.Series, workers: int) -> list[_Probe]:
    rels = [_as_str(v) for v in values]
    unique = sorted({r for r in rels if r})
    with ThreadPoolExecutor(max(1, workers)) as pool:
        probes = dict(zip(unique, pool.map(lambda r: _probe_audio(resolve_audio(manifest_path, r)), unique)))
    return [probes[r] if r else _Probe(False, "missing") for r in rels]


@dataclass
class _Check:
    name: str
    description: str
    make: Callable[[], object]  # -> gx expectation
    reason: Callable[[pd.Series], str]  # row of the working frame -> why it failed
    audio: bool = False  # only run when audio is checked


def _checks(labels: dict[str, set[str]], lim: ValidationLimits, frame: pd.DataFrame) -> list[_Check]:
    import great_expectations.expectations as gxe

    checks: list[_Check] = []

    def add(name: str, description: str, make: Callable[[], object], reason: Callable[[pd.Series], str], audio: bool = False) -> None:
        checks.append(_Check(name, description, make, reason, audio))

    add(
        "utt_id_present",
        "utt_id is a non-empty string",
        lambda: gxe.ExpectColumnValueLengthsToBeBetween(column="utt_id", min_value=1),
        lambda r: "utt_id is missing",
    )
    counts = frame["utt_id_key"].value_counts()
    rows_by_id = frame.groupby("utt_id_key")["row"].agg(list)
    add(
        "utt_id_unique",
        "utt_id appears once",
        lambda: gxe.ExpectColumnValuesToBeUnique(column="utt_id_key"),
        lambda r: f"utt_id {r['utt_id']!r} appears {counts[r['utt_id_key']]} times (rows {', '.join(map(str, rows_by_id[r['utt_id_key']]))})",
    )
    for col in NUMERIC_COLUMNS:
        add(
            f"{col}_is_number",
            f"{col} is " + ("an integer" if col == "slurp_id" else "a number"),
            lambda col=col: gxe.ExpectColumnValuesToNotBeNull(column=f"{col}__num"),
            lambda r, col=col: f"{col} is missing"
            if _is_missing(r[col])
            else f"{col} {_fmt(r[col])} is not " + ("an integer" if col == "slurp_id" else "a number"),
        )
    add(
        "sample_rate",
        f"manifest sample_rate equals {lim.sample_rate}",
        lambda: gxe.ExpectColumnValuesToBeInSet(column="sample_rate__num", value_set=[lim.sample_rate]),
        lambda r: f"sample rate {_fmt(r['sample_rate__num'])} != {lim.sample_rate}",
    )
    for kind in ("clean", "noisy"):
        add(
            f"{kind}_file",
            f"{kind} audio file exists and decodes",
            lambda kind=kind: gxe.ExpectColumnValuesToBeInSet(column=f"{kind}_ok", value_set=[True]),
            lambda r, kind=kind: f"{kind}_path is missing"
            if r[f"{kind}_error"] == "missing"
            else f"{kind} file {_as_str(r[f'{kind}_path'])} {r[f'{kind}_error']}",
            audio=True,
        )
        add(
            f"{kind}_file_sample_rate",
            f"{kind} audio file is sampled at {lim.sample_rate} Hz",
            lambda kind=kind: gxe.ExpectColumnValuesToBeInSet(column=f"{kind}_file_sample_rate", value_set=[lim.sample_rate]),
            lambda r, kind=kind: f"{kind} file {_as_str(r[f'{kind}_path'])}: sample rate "
            f"{_fmt(r[f'{kind}_file_sample_rate'])} != {lim.sample_rate}",
            audio=True,
        )
    add(
        "duration",
        f"duration in [{lim.min_duration:g}, {lim.max_duration:g}] s",
        lambda: gxe.ExpectColumnValuesToBeBetween(column="duration__num", min_value=lim.min_duration, max_value=lim.max_duration),
        lambda r: f"duration {_fmt(r['duration__num'])} s outside [{lim.min_duration:g}, {lim.max_duration:g}] s",
    )
    add(
        "text_non_empty",
        "text is not empty",
        lambda: gxe.ExpectColumnValueLengthsToBeBetween(column="text__str", min_value=1),
        lambda r: "text is empty" if isinstance(r["text"], str) else "text is missing",
    )
    add(
        "intent_in_label_set",
        "intent is in the label set",
        lambda: gxe.ExpectColumnValuesToBeInSet(column="intent__str", value_set=sorted(labels["intents"])),
        lambda r: f"intent {r['intent__str']!r} not in the label set" if r["intent__str"] else "intent is missing",
    )
    add(
        "snr",
        f"requested SNR in [{lim.min_snr:g}, {lim.max_snr:g}] dB",
        lambda: gxe.ExpectColumnValuesToBeBetween(column="snr__num", min_value=lim.min_snr, max_value=lim.max_snr),
        lambda r: f"SNR {_fmt(r['snr__num'])} dB outside [{lim.min_snr:g}, {lim.max_snr:g}] dB",
    )
    add(
        "snr_measured",
        f"measured SNR in [{lim.min_snr:g}, {lim.max_snr:g}] dB",
        lambda: gxe.ExpectColumnValuesToBeBetween(column="snr_measured__num", min_value=lim.min_snr, max_value=lim.max_snr),
        lambda r: f"measured SNR {_fmt(r['snr_measured__num'])} dB outside [{lim.min_snr:g}, {lim.max_snr:g}] dB",
    )
    add(
        "snr_matches",
        f"|snr_measured - snr| <= {lim.snr_tolerance:g} dB",
        lambda: gxe.ExpectColumnValuesToBeBetween(column="snr__error", min_value=0, max_value=lim.snr_tolerance),
        lambda r: f"measured SNR {_fmt(r['snr_measured__num'])} dB differs from requested {_fmt(r['snr__num'])} dB "
        f"by {r['snr__error']:.3g} dB (tolerance {lim.snr_tolerance:g})",
    )
    add(
        "split",
        f"split is one of {', '.join(SPLITS)}",
        lambda: gxe.ExpectColumnValuesToBeInSet(column="split__str", value_set=list(SPLITS)),
        lambda r: f"split {r['split__str']!r} is not one of {', '.join(SPLITS)}" if r["split__str"] else "split is missing",
    )
    splits_of = frame[frame["split__str"].isin(SPLITS)].groupby("slurp_id__num")["split__str"].agg(lambda s: sorted(set(s)))
    add(
        "split_disjoint",
        "every slurp_id is in one split only",
        lambda: gxe.ExpectColumnValuesToBeInSet(column="slurp_id__n_splits", value_set=[1]),
        lambda r: f"slurp_id {_fmt(r['slurp_id__num'])} is in {int(r['slurp_id__n_splits'])} splits "
        f"({', '.join(splits_of[r['slurp_id__num']])})",
    )
    return checks


def _working_frame(df: pd.DataFrame, manifest_path: Path, check_audio: bool, workers: int) -> pd.DataFrame:
    """The manifest plus the derived columns the expectations run on."""
    w = df.reset_index(drop=True).copy()
    w["row"] = np.arange(len(w), dtype=np.int64)
    w["utt_id"] = [_as_str(v) for v in w["utt_id"]]
    w["utt_id_key"] = pd.Series([v if v else None for v in w["utt_id"]], dtype=object)
    for col in NUMERIC_COLUMNS:
        w[f"{col}__num"] = pd.Series([_to_number(v) for v in w[col]], dtype="float64")
    sid = w["slurp_id__num"]
    w.loc[sid.notna() & (sid != sid.round()), "slurp_id__num"] = math.nan
    for col in ("text", "intent", "split"):
        w[f"{col}__str"] = [_as_str(v) for v in w[col]]
    w["snr__error"] = (w["snr_measured__num"] - w["snr__num"]).abs()
    # Distinct valid splits per slurp_id; rows without a slurp_id or a valid split get NaN (not
    # checked here: the number and split checks report them).
    has = w["slurp_id__num"].notna() & w["split__str"].isin(SPLITS)
    n_splits = w[has].groupby("slurp_id__num")["split__str"].transform("nunique")
    w["slurp_id__n_splits"] = pd.Series(math.nan, index=w.index, dtype="float64")
    w.loc[has, "slurp_id__n_splits"] = n_splits.astype("float64")
    if check_audio:
        for kind in ("clean", "noisy"):
            probes = _probe_column(manifest_path, w[f"{kind}_path"], workers)
            w[f"{kind}_ok"] = pd.Series([p.ok for p in probes], dtype=bool)
            w[f"{kind}_error"] = [p.error for p in probes]
            w[f"{kind}_file_sample_rate"] = pd.Series([p.sample_rate for p in probes], dtype="float64")
        w["file_sample_rate"] = w["clean_file_sample_rate"]
    return w


def _gx_context():
    import great_expectations as gx
    from great_expectations.data_context.types.base import (
        DataContextConfig,
        InMemoryStoreBackendDefaults,
        ProgressBarsConfig,
    )

    config = DataContextConfig(
        store_backend_defaults=InMemoryStoreBackendDefaults(),
        analytics_enabled=False,
        progress_bars=ProgressBarsConfig(globally=False),
    )
    return gx.get_context(mode="ephemeral", project_config=config)


def validate_frame(
    df: pd.DataFrame,
    manifest_path: str | os.PathLike,
    labels: dict[str, set[str]] | str | os.PathLike | None = None,
    limits: ValidationLimits | None = None,
    check_audio: bool = True,
    workers: int | None = None,
) -> ValidationReport:
    """Validate an already-read manifest frame; audio paths resolve against manifest_path's folder."""
    import great_expectations as gx

    manifest_path = Path(manifest_path)
    limits = limits or ValidationLimits()
    if labels is None or isinstance(labels, (str, os.PathLike)):
        labels = load_label_set(labels)
    labels = {k: set(v) for k, v in labels.items()}
    if "intents" not in labels:
        raise ValueError("label set has no 'intents'")
    if limits.allow_unlabelled:
        labels["intents"].add("")
    workers = workers or min(8, (os.cpu_count() or 1) * 2)

    frame = _working_frame(df, manifest_path, check_audio, workers)
    checks = [c for c in _checks(labels, limits, frame) if check_audio or not c.audio]

    context = _gx_context()
    batch = (
        context.data_sources.add_pandas("manifest")
        .add_dataframe_asset("manifest")
        .add_batch_definition_whole_dataframe("whole manifest")
    )
    suite = context.suites.add(gx.ExpectationSuite(name="manifest"))
    for c in checks:
        exp = c.make()
        exp.meta = {"check": c.name}
        suite.add_expectation(exp)
    definition = context.validation_definitions.add(gx.ValidationDefinition(name="manifest", data=batch, suite=suite))
    result = definition.run(
        batch_parameters={"dataframe": frame},
        result_format={"result_format": "COMPLETE", "unexpected_index_column_names": ["utt_id", "row"]},
    )

    by_name = {c.name: c for c in checks}
    order = {c.name: i for i, c in enumerate(checks)}
    outcome: dict[str, dict] = {}
    failures: list[RowFailure] = []
    for r in result.results:
        name = (r.expectation_config.meta or {}).get("check")
        info = r.exception_info or {}
        if info.get("raised_exception"):
            raise RuntimeError(f"validation check {name} crashed: {info.get('exception_message')}")
        res = r.result or {}
        unexpected = res.get("unexpected_index_list") or []
        outcome[name] = {
            "name": name,
            "success": bool(r.success),
            "unexpected_count": int(res.get("unexpected_count", len(unexpected))),
            "description": by_name[name].description,
        }
        for idx in unexpected:
            row = frame.iloc[int(idx["row"])]
            failures.append(RowFailure(utt_id=str(idx["utt_id"]), row=int(idx["row"]), check=name, reason=by_name[name].reason(row)))
    failures.sort(key=lambda f: (f.row, order[f.check]))
    check_list = [outcome[c.name] for c in checks]
    return ValidationReport(
        manifest=str(manifest_path),
        ok=all(c["success"] for c in check_list) and not failures,
        n_rows=len(frame),
        failures=failures,
        checks=check_list,
    )


def validate_manifest(
    manifest_path: str | os.PathLike,
    labels: dict[str, set[str]] | str | os.PathLike | None = None,
    limits: ValidationLimits | None = None,
    check_audio: bool = True,
    workers: int | None = None,
) -> ValidationReport:
    """Read a manifest (jsonl, csv or parquet) and check every row; see ValidationReport.

    Raises ManifestError when the manifest itself cannot be read or lacks columns.
    """
    df = read_manifest(manifest_path)
    return validate_frame(df, manifest_path, labels=labels, limits=limits, check_audio=check_audio, workers=workers)
