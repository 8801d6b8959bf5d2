"""Greedy WER/CER of an ASR training checkpoint: seen (source) vs unseen (target) voices, clean and noisy.

    python benchmarks/asr_checkpoint.py --checkpoint ~/.cache/cascadapt/checkpoints/pretrain/asr/<key>
        [--asr '{"d_model": 144, "layers": 4, "ffn": 576}'] [--source-manifest data/source/manifest.jsonl]
        [--n 96] [--out benchmarks/results/asr_checkpoint.json]

For following a long pre-training while it runs: reads the newest checkpoint
written by components/training (safetensors, key prefix "model/"), decodes the
first --n utterances of the source corpus's nas_val split, and of --n SLURP
devel sentences spoken by the unseen "target" voices (synthesized on the fly).
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import torch  # noqa: E402
from safetensors.torch import load_file  # noqa: E402
from torch.utils.data import DataLoader  # noqa: E402

from benchmarks.machine import describe  # noqa: E402
from components.data.corpus import CorpusConfig, build_corpus  # noqa: E402
from components.data.dataset import SpeechDataset, collate  # noqa: E402
from components.data.manifest import read_manifest  # noqa: E402
from components.data.slurp import read_slurp  # noqa: E402
from components.data.speakers import PRESETS  # noqa: E402
from components.metrics.asr import cer, wer  # noqa: E402
from components.models.asr import ASRConfig, ConformerCTC, greedy_decode  # noqa: E402

REPO = Path(__file__).resolve().parents[1]


def load(checkpoint: Path, cfg: ASRConfig) -> tuple[ConformerCTC, int]:
    latest = json.loads((checkpoint / "latest.json").read_text())
    state = load_file(str(checkpoint / latest["model"]))
    model = ConformerCTC(cfg)
    model.load_state_dict({k.removeprefix("model/"): v for k, v in state.items() if k.startswith("model/")})
    return model.eval(), latest["step"]


@torch.no_grad()
def score(model: ConformerCTC, ds: SpeechDataset, audio: str) -> dict:
    refs, hyps = [], []
    for b in DataLoader(ds, batch_size=8, collate_fn=collate):
        hyps += greedy_decode(model(b[audio], b["lengths"]), model.vocab)
        refs += [m["text"] for m in b["meta"]]
    return {"wer": round(wer(refs, hyps), 4), "cer": round(cer(refs, hyps), 4), "n": len(refs), "example": {"ref": refs[0], "hyp": hyps[0]}}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--checkpoint", required=True, type=Path)
    parser.add_argument("--asr", default='{"d_model": 144, "heads": 4, "ffn": 576, "layers": 4, "conv_kernel": 31}')
    parser.add_argument("--source-manifest", default=str(REPO / "data/source/manifest.jsonl"))
    parser.add_argument("--devel", default=str(REPO.parent / "shared/data/slurp/devel.jsonl"))
    parser.add_argument("--n", type=int, default=96)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--out", default=str(REPO / "benchmarks/results/asr_checkpoint.json"))
    args = parser.parse_args()
    torch.set_num_threads(args.threads)

    model, step = load(args.checkpoint.expanduser(), ASRConfig(**json.loads(args.asr)))
    result = {"benchmark": "asr_checkpoint", "machine": describe(), "checkpoint": str(args.checkpoint), "step": step}
    source = read_manifest(args.source_manifest)
    source = source[source["split"] == "nas_val"].head(args.n)
    result["source_nas_val_clean"] = score(model, SpeechDataset(source, Path(args.source_manifest).parent), "clean")
    with tempfile.TemporaryDirectory() as tmp:
        manifest = build_corpus(read_slurp(args.devel)[: args.n], tmp, CorpusConfig(list(PRESETS["target"])), progress=False)
        target = SpeechDataset(read_manifest(manifest), tmp)
        result["target_clean"] = score(model, target, "clean")
        result["target_noisy"] = score(model, target, "noisy")
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps(result, indent=1) + "\n")
    for key in ("source_nas_val_clean", "target_clean", "target_noisy"):
        print(f"{key:22s} WER {100 * result[key]['wer']:6.1f}  CER {100 * result[key]['cer']:6.1f}")
    print(f"step {step}; wrote {args.out}")


if __name__ == "__main__":
    main()
