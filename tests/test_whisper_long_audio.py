"""Long audio on Whisper: cuts at the quietest point, and a long clip's hypothesis is its windows' joined."""

from __future__ import annotations

import pytest
import torch

from components.models.whisper.segments import FRAME, cut_points
from tests.test_nas_whisper import tokenizer  # noqa: F401


def test_cuts_fall_in_the_quiet_and_windows_fit():
    torch.manual_seed(0)
    wave = torch.randn(16000 * 25) * 0.1
    wave[16000 * 9 : 16000 * 9 + 1600] = 0.0  # a 0.1 s pause at 9 s, inside the search span of the first window
    cuts = cut_points(wave, window=16000 * 10, search=16000 * 3)
    assert cuts[0][0] == 0 and cuts[-1][1] == wave.numel() and all(a[1] == b[0] for a, b in zip(cuts, cuts[1:]))
    assert all(e - s <= 16000 * 10 for s, e in cuts) and all(e - s >= 16000 * 7 for s, e in cuts[:-1])
    assert 16000 * 9 <= cuts[0][1] < 16000 * 9 + 1600
    assert cut_points(wave[:16000], window=16000 * 10, search=16000 * 3) == [(0, 16000)]
    with pytest.raises(ValueError, match="search"):
        cut_points(wave, window=16000, search=16000)
    assert FRAME == 320


def test_a_long_clip_is_its_windows_decoded_alone_and_joined_and_its_batch_neighbour_is_unchanged(tokenizer):  # noqa: F811
    from tests.test_adapters_whisper import tiny_whisper

    asr = tiny_whisper(tokenizer, context_seconds=2.0)
    torch.manual_seed(1)
    long, short = torch.randn(16000 * 5) * 0.1, torch.randn(12000) * 0.1
    with torch.no_grad():
        both = asr(torch.stack([long, torch.nn.functional.pad(short, (0, long.numel() - short.numel()))]), torch.tensor([long.numel(), short.numel()]))
        alone = asr(short[None], torch.tensor([short.numel()]))
        windows = [asr(long[None, s:e], torch.tensor([e - s])) for s, e in cut_points(long, 32000, 16000)]
    assert len(windows) >= 3 and all(w["tokens"][0] for w in windows)  # every window decodes something
    assert both["tokens"][1] == alone["tokens"][0] and both["texts"][1] == alone["texts"][0]
    assert both["tokens"][0] == [t for w in windows for t in w["tokens"][0]]
    assert both["texts"][0] == " ".join(w["texts"][0] for w in windows if w["texts"][0])
    joined = torch.cat([w["states"][0, : int(w["lengths"][0])] for w in windows])
    torch.testing.assert_close(both["states"][0, : int(both["lengths"][0])], joined, rtol=1e-4, atol=1e-4)
    for word, start, end in both["words"][0]:
        assert 0 <= start < end <= int(both["lengths"][0])
