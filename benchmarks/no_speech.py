"""Calibrate and measure the no-speech decision: Whisper's <|nospeech|> probability at its first step,
the clip's level (rms dBFS) as an energy gate, and the no-speech probe (components/no_speech.py).

    python benchmarks/no_speech.py [--per-kind 4] [--max-false-rejection 0.01] [--run NAME] [--out benchmarks/results/no_speech.json]

The backbone cascade and the splits are the newest target run's (benchmarks/runs.py); every clip goes
through the cascade's speech enhancement, then its Whisper, the path the service and ``transcribe``
take (the level, dBFS, is the input's). Calibration: the noisy
nas_val commands and a non-speech set (components/data/nonspeech.py, seed 0; babble from train clips).
The threshold is the lowest that rejects at most ``--max-false-rejection`` of the nas_val commands;
the energy gate sits 10 dB under the quietest nas_val command; OpenAI's rescue keeps a clip whose 1-best has
a mean log probability above -1 (at that threshold, and at the lowest threshold that allows it); the serving default (NO_SPEECH_THRESHOLD,
that threshold rounded) is scored as a rule of its own. Measurement, with both fixed: the noisy
test commands (held-out sentences, unseen voices) and a fresh non-speech set (seed 1), and the test
commands 20 dB quieter (``test_quiet``). The probe is fitted and calibrated as the multi-task
pipeline's fit_no_speech step does it (training commands against non-speech of seed 10; its bias set on
nas_val so that the serving default rejects at most --max-false-rejection of them). Each clip's
probabilities, level and 1-best are kept, so another rule can be tried on the JSON.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from benchmarks.machine import describe, git_commit  # noqa: E402
from benchmarks.runs import newest_target_run, target_inputs  # noqa: E402

REPO = Path(__file__).resolve().parents[1]
ENERGY_MARGIN_DB = 10.0
LOGPROB_RESCUE = -1.0  # OpenAI's transcribe(): a clip is silent only if its avg_logprob is at most this too
QUIET_DB = -20.0  # the test commands again, this much quieter: a rule that reads the level would reject them


def level_dbfs(wave: np.ndarray) -> float:
    return float(10 * np.log10(max(float(np.mean(np.square(wave, dtype=np.float64))), 1e-12)))


def score_clips(cascade, clips: list[tuple[str, np.ndarray]], probe, batch_size: int = 16) -> list[dict]:
    """[(name, wave)] -> [{name, no_speech_prob, probe_prob, avg_logprob, dbfs, text}] from the cascade's greedy
    pass (no gate): its speech enhancement, then its Whisper, as the service and ``transcribe`` hear a clip;
    ``probe_prob``: the no-speech probe's probability on the same clip, as the cascade asks it (before the enhancement)."""
    import torch
    from torch.nn.utils.rnn import pad_sequence

    rows = []
    cascade.eval()
    with torch.inference_mode():
        for start in range(0, len(clips), batch_size):
            batch = clips[start : start + batch_size]
            waves = [torch.from_numpy(np.asarray(w, dtype=np.float32)) for _, w in batch]
            wave, lengths = pad_sequence(waves, batch_first=True), torch.tensor([len(w) for w in waves])
            out = cascade.transcribe(wave, lengths)["asr"]
            logprobs = cascade.asr.mean_logprob(out["states"], out["tokens"])
            probe_probs = probe(wave, lengths).tolist()
            for (name, wave), p, q, logprob, text in zip(batch, out["no_speech_prob"], probe_probs, logprobs, out["texts"]):
                rows.append({"name": name, "no_speech_prob": round(float(p), 5), "probe_prob": round(q, 5), "avg_logprob": round(logprob, 4),
                             "dbfs": round(level_dbfs(wave), 2), "text": text})
            print(f"{start + len(batch)}/{len(clips)} clips", end="\r", flush=True)
    print()
    return rows


def rejected(rows: list[dict], threshold: float, energy_dbfs: float | None, logprob: float | None = None, key: str = "no_speech_prob") -> list[bool]:
    """Nobody spoke: a no-speech probability (``key``: Whisper's, or the probe's) above ``threshold`` (unless the
    transcript's mean log probability is above ``logprob``: OpenAI's rescue of a confident transcript), or a
    level under ``energy_dbfs``."""
    return [
        (r[key] > threshold and (logprob is None or r["avg_logprob"] <= logprob)) or (energy_dbfs is not None and r["dbfs"] < energy_dbfs)
        for r in rows
    ]


def lowest_threshold(commands: list[dict], max_false_rejection: float, logprob: float | None = None) -> float:
    """The lowest no-speech threshold that rejects at most ``max_false_rejection`` of ``commands``."""
    allowed = int(np.floor(max_false_rejection * len(commands)))
    for p in sorted({r["no_speech_prob"] for r in commands}):
        if sum(rejected(commands, p, None, logprob)) <= allowed:
            return p
    return 1.0


def rates(commands: list[dict], nonspeech: list[dict], threshold: float, energy_dbfs: float | None, logprob: float | None = None, key: str = "no_speech_prob") -> dict:
    false_rejections = sum(rejected(commands, threshold, energy_dbfs, logprob, key))
    caught = rejected(nonspeech, threshold, energy_dbfs, logprob, key)
    missed_kinds: dict[str, int] = {}
    for row, hit in zip(nonspeech, caught):
        if not hit:
            kind = row["name"].split("#")[0]
            missed_kinds[kind] = missed_kinds.get(kind, 0) + 1
    return {
        "false_rejection": round(false_rejections / len(commands), 4), "false_rejections": false_rejections, "commands": len(commands),
        "nonspeech_rejected": round(sum(caught) / len(nonspeech), 4), "nonspeech_answered": len(nonspeech) - sum(caught), "nonspeech": len(nonspeech),
        "answered_by_kind": missed_kinds,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--per-kind", type=int, default=4, help="non-speech clips of each kind at each level")
    parser.add_argument("--max-false-rejection", type=float, default=0.01)
    parser.add_argument("--run", help="the target run whose backbone and splits to use (default: the newest)")
    parser.add_argument("--out", default=str(REPO / "benchmarks/results/no_speech.json"))
    args = parser.parse_args()
    from zenml.client import Client

    from components.data.dataset import SpeechDataset
    from components.data.nonspeech import nonspeech_set
    from components.models.whisper.model import NO_SPEECH_THRESHOLD
    from components.no_speech import fit_no_speech_probe, probe_clip_sets

    run = Client().get_pipeline_run(args.run) if args.run else newest_target_run()
    splits, root, artifact = target_inputs(run)
    cascade = artifact.load()
    asr = cascade.asr
    asr.configure(no_speech_threshold=None)
    cascade.set_no_speech_probe(None)  # Whisper's own probability; the probe is scored beside it

    def commands(split: str) -> list[tuple[str, np.ndarray]]:
        ds = SpeechDataset(splits[split], root)
        return [(item["meta"]["utt_id"], item["noisy"].numpy()) for item in (ds[i] for i in range(len(ds)))]

    train = SpeechDataset(splits["train"], root)
    talkers = [train[i]["clean"].numpy() for i in range(0, min(len(train), 400), 10)]  # 40 training clips, never a test voice's sentence
    print(f"{run.name}: backbone {artifact.name} v{artifact.version}", flush=True)
    probe, fit = fit_no_speech_probe(**probe_clip_sets(train, SpeechDataset(splits["nas_val"], root)), max_false_rejection=args.max_false_rejection, threshold=NO_SPEECH_THRESHOLD)
    print(f"no-speech probe: {fit}", flush=True)
    test = commands("test")
    scored = {
        "nas_val": score_clips(cascade, commands("nas_val"), probe),
        "nonspeech_calibration": score_clips(cascade, nonspeech_set(args.per_kind, seed=0, talkers=talkers), probe),
        "test": score_clips(cascade, test, probe),
        "nonspeech_test": score_clips(cascade, nonspeech_set(args.per_kind, seed=1, talkers=talkers), probe),
        "test_quiet": score_clips(cascade, [(name, wave * 10 ** (QUIET_DB / 20)) for name, wave in test], probe),
    }
    threshold = lowest_threshold(scored["nas_val"], args.max_false_rejection)
    with_rescue = lowest_threshold(scored["nas_val"], args.max_false_rejection, LOGPROB_RESCUE)
    energy = min(r["dbfs"] for r in scored["nas_val"]) - ENERGY_MARGIN_DB
    rules = {}
    for name, limit, gate, logprob, key in (
        ("no_speech_prob", threshold, None, None, "no_speech_prob"),
        ("no_speech_prob+energy", threshold, energy, None, "no_speech_prob"),
        ("no_speech_prob+logprob", threshold, None, LOGPROB_RESCUE, "no_speech_prob"),  # the same threshold, confident transcripts rescued
        ("no_speech_prob+logprob_recalibrated", with_rescue, None, LOGPROB_RESCUE, "no_speech_prob"),  # the lowest threshold under the rescue
        ("serving_default", NO_SPEECH_THRESHOLD, None, None, "no_speech_prob"),
        ("probe", NO_SPEECH_THRESHOLD, None, None, "probe_prob"),  # calibrated (its bias) on nas_val at the serving default
    ):
        quiet = sum(rejected(scored["test_quiet"], limit, gate, logprob, key))
        rules[name] = {
            "threshold": limit, "energy_dbfs": gate, "logprob_rescue": logprob, "probability": key,
            "calibration": rates(scored["nas_val"], scored["nonspeech_calibration"], limit, gate, logprob, key),
            "test": rates(scored["test"], scored["nonspeech_test"], limit, gate, logprob, key),
            "test_quiet": {"false_rejection": round(quiet / len(test), 4), "false_rejections": quiet, "commands": len(test), "gain_db": QUIET_DB},
        }
        print(name, json.dumps(rules[name]), flush=True)
    out = {
        "benchmark": "no_speech", "machine": describe(), "commit": git_commit(),
        "config": {"per_kind": args.per_kind, "max_false_rejection": args.max_false_rejection, "energy_margin_db": ENERGY_MARGIN_DB,
                   "pad_to": asr.config.pad_to, "context_seconds": asr.config.context_seconds},
        "run": run.name, "backbone_artifact": {"name": artifact.name, "version": str(artifact.version), "id": str(artifact.id)},
        "probe_fit": fit, "rules": rules, "clips": scored,
    }
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps(out, indent=1) + "\n")
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
