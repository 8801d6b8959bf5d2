"""What torch's int8 on the CPU does to Whisper: WER and time with the linears of the encoder, the
decoder, or both run as fbgemm dynamic int8 (weights per row, activations per tensor in 7 bits).

    .venv/bin/python benchmarks/int8_linears.py [--clips 60] [--threads 2] [--batch-size 16]
        [--out benchmarks/results/int8_linears.json]

The clips are benchmarks/transcribe.py's (test split, SNR 20, the target voices), tiny.en at its 10 s
window, greedy with the backbone's guards; the vocabulary projection keeps its exact shortlist in every
variant. Each variant runs the clips twice and keeps the second pass (the first packs the int8 weights).
Time: the encoder, and the whole (encoder + decoding), summed over the batches.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import torch
from torch import nn

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from components.models.whisper.vocabulary import pack_int8_rows  # noqa: E402

REPO = Path(__file__).resolve().parents[1]
VARIANTS = {"fp32": lambda path: False, "encoder": lambda path: ".encoder." in path, "decoder": lambda path: ".decoder." in path,
            "encoder_and_decoder": lambda path: True}


class Int8Linear(nn.Linear):
    """nn.Linear whose no-grad fp32 forward runs fbgemm's dynamic int8 on a packed copy of its weight."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if torch.is_grad_enabled() or x.dtype != torch.float32:
            return super().forward(x)
        key = (self.weight.data_ptr(), self.weight._version)
        if getattr(self, "_int8_key", None) != key:
            self._packed, _ = pack_int8_rows(self.weight.detach(), None if self.bias is None else self.bias.detach())
            self._int8_key = key
        return torch.ops.quantized.linear_dynamic(x.reshape(-1, x.shape[-1]), self._packed, True).reshape(*x.shape[:-1], -1)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--clips", type=int, default=60)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--batch-size", type=int, default=16)
    parser.add_argument("--out", default=str(REPO / "benchmarks/results/int8_linears.json"))
    args = parser.parse_args()
    import soundfile as sf
    from torch.nn.utils.rnn import pad_sequence

    from benchmarks.machine import describe, git_commit
    from benchmarks.transcribe import DEFAULT_CORPUS, held_out_rows
    from components.metrics.asr import wer
    from components.models.whisper.model import WhisperASR
    from components.models.whisper.text import slurp_style

    commit = git_commit()
    torch.set_num_threads(args.threads)
    rows = held_out_rows(DEFAULT_CORPUS, args.clips)
    waves = [torch.from_numpy(sf.read(r["audio"], dtype="float32")[0]) for r in rows]
    asr = WhisperASR.pretrained().eval()
    linears = [(path, m) for path, m in asr.whisper.named_modules() if isinstance(m, nn.Linear) and path != "proj_out"]

    def run() -> tuple[list[str], float, float]:
        hyps, encoder_s, total_s = [], 0.0, 0.0
        for start in range(0, len(waves), args.batch_size):
            batch = waves[start : start + args.batch_size]
            wave, lengths = pad_sequence(batch, batch_first=True), torch.tensor([w.numel() for w in batch])
            with torch.no_grad():
                t0 = time.perf_counter()
                states = asr.encode(wave, lengths)
                t1 = time.perf_counter()
                texts = asr.hypotheses(states, lengths)["texts"]
                t2 = time.perf_counter()
            encoder_s, total_s, hyps = encoder_s + t1 - t0, total_s + t2 - t0, hyps + [slurp_style(t) for t in texts]
        return hyps, encoder_s, total_s

    results = {}
    for name, chosen in VARIANTS.items():
        for path, module in linears:
            module.__class__ = Int8Linear if chosen("." + path) else nn.Linear
        run()
        hyps, encoder_s, total_s = run()
        results[name] = {"wer": round(wer([r["text"] for r in rows], hyps), 4), "encoder_s": round(encoder_s, 3), "total_s": round(total_s, 3)}
        print(name, results[name], flush=True)
    base = results["fp32"]
    for r in results.values():
        r["speedup"] = round(base["total_s"] / r["total_s"], 3)
        r["wer_points_vs_fp32"] = round(100 * (r["wer"] - base["wer"]), 2)
    out = {"machine": describe(), "commit": commit, "config": vars(args) | {"model": "whisper-tiny.en", "window_s": 10}, "variants": results}
    Path(args.out).write_text(json.dumps(out, indent=2))
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
