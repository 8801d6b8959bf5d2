"""Word n-gram ARPA LM (components/models/lm.py) and CTC beam search (components/models/beam.py)."""

from __future__ import annotations


import pytest
import torch

from components.data.slurp import read_slurp
from components.models.asr import greedy_decode
from components.models.beam import BLANK_TOKEN, SIL_TOKEN, BeamDecoder, from_text, spell, token_names
from components.models.lm import BOS, EOS, UNK, ArpaLM, build_arpa, vocabulary
from components.models.text import CharVocab, normalise
from tests.conftest import SHARED_DEVEL

torch.set_num_threads(1)

LM_TXT = SHARED_DEVEL.parent / "lm.txt"
SMALL = ["turn the lights off", "turn the lights on please", "turn on the lights", "set the volume to low", "set an alarm", "the lights", "lights off"]


@pytest.fixture(scope="module")
def corpus(slurp_jsonl) -> list[str]:
    """SLURP's lm.txt when ../shared has it, else the transcripts of the devel records."""
    if LM_TXT.is_file():
        return LM_TXT.read_text(encoding="utf-8").splitlines()
    return [r.sentence for r in read_slurp(slurp_jsonl)]


@pytest.fixture(scope="module")
def corpus_arpa(corpus, tmp_path_factory):
    return build_arpa(corpus, order=3, path=tmp_path_factory.mktemp("lm") / "lm3.arpa")


# ---------------------------------------------------------------- ARPA ----


def _predictable(lm: ArpaLM) -> list[str]:
    return [w for w in lm.vocab if w != BOS]


def _contexts(lm: ArpaLM) -> list[tuple[str, ...]]:
    """Every context the model knows, plus some it does not (backoff through unseen words)."""
    known = [g for k in range(1, lm.order) for g in lm.sections[k] if g[-1] != EOS]
    unseen = [("qqq",), ("qqq", "the"), ("the", "qqq"), (BOS, "qqq")] if lm.order > 1 else []
    return [(), *known, *unseen]


def test_vocabulary_is_sorted_normalised_words():
    assert vocabulary(["Turn the LIGHTS off!", "the  lights"]) == ["lights", "off", "the", "turn"]


@pytest.mark.parametrize("order", [1, 2, 3, 4])
@pytest.mark.parametrize("discount", [None, 0.7])
def test_arpa_is_valid_and_every_context_sums_to_one(tmp_path, order, discount):
    path = build_arpa(SMALL, order=order, path=tmp_path / "small.arpa", discount=discount)
    text = path.read_text()
    assert text.startswith("\\data\\\n") and text.rstrip().endswith("\\end\\")
    lm = ArpaLM(path)
    assert lm.order == order
    assert lm.header == {k: len(lm.sections[k]) for k in range(1, order + 1)}
    for k in range(1, order + 1):
        assert lm.sections[k] == sorted(lm.sections[k])
        for g in lm.sections[k]:
            assert g in lm.logp
            assert lm.logp[g] <= 0
            if k == order:
                assert g not in lm.logbow  # no backoff weights on the highest order
            if k > 1:  # prefixes and suffixes of every n-gram are there (KenLM needs the former)
                assert g[:-1] in lm.logp and g[1:] in lm.logp
    assert {BOS, EOS, UNK} <= set(lm.vocab)
    assert set(_predictable(lm)) == set(vocabulary(SMALL)) | {EOS, UNK}
    assert lm.logp[(BOS,)] == -99
    for ctx in _contexts(lm):
        total = sum(10 ** lm.log10_prob(w, ctx) for w in _predictable(lm))
        assert total == pytest.approx(1.0, abs=1e-5), ctx
    # seen continuations beat unseen ones
    if order > 1:
        assert lm.log10_prob("lights", ("the",)) > lm.log10_prob("alarm", ("the",))


def test_arpa_on_slurp_text_sums_to_one_and_kenlm_agrees(corpus, corpus_arpa):
    from flashlight.lib.text.decoder.kenlm import KenLM
    from flashlight.lib.text.dictionary import create_word_dict

    lm = ArpaLM(corpus_arpa)
    assert lm.header == {k: len(lm.sections[k]) for k in (1, 2, 3)}
    assert set(_predictable(lm)) == set(vocabulary(corpus)) | {EOS, UNK}
    words = _predictable(lm)
    ctxs = [(), (BOS,), ("the",), ("qqq",), ("qqq", "the")] + lm.sections[2][:: max(1, len(lm.sections[2]) // 25)]
    for ctx in ctxs:
        assert sum(10 ** lm.log10_prob(w, ctx) for w in words) == pytest.approx(1.0, abs=1e-4), ctx

    # KenLM (what the decoder uses) reads the file and scores sentences as our reader does.
    wd = create_word_dict({w: [[w]] for w in lm.vocab})
    ken = KenLM(str(corpus_arpa), wd)
    for sentence in corpus[:20] + ["set the qqq alarm"]:
        state, ours, theirs = ken.start(False), 0.0, 0.0
        ctx: tuple[str, ...] = (BOS,)
        for w in normalise(sentence).split():
            state, s = ken.score(state, wd.get_index(w if (w,) in lm.logp else UNK))
            theirs += s
            ours += lm.log10_prob(w, ctx)
            ctx = (*ctx, w)
        state, s = ken.finish(state)
        theirs += s
        ours += lm.log10_prob(EOS, ctx)
        assert theirs == pytest.approx(ours, abs=1e-3), sentence


def test_build_arpa_rejects_empty_input(tmp_path):
    with pytest.raises(ValueError):
        build_arpa(["", "  ", "!!"], path=tmp_path / "x.arpa")


# ---------------------------------------------------------------- beam ----

VOCAB = CharVocab()
PEAK = 6.0


def _frames(text: str, confusions: dict[int, tuple[str, float]] | None = None) -> torch.Tensor:
    """Peaked CTC logits (T, V) spelling text: a blank frame, two frames per character, a blank after each.

    confusions: character position -> (wrong character, its logit); the right one keeps PEAK - 1.
    """
    confusions = confusions or {}
    rows: list[torch.Tensor] = []

    def frame(scores: dict[int, float]) -> torch.Tensor:
        row = torch.zeros(len(VOCAB))
        for i, s in scores.items():
            row[i] = s
        return row

    rows.append(frame({VOCAB.blank: PEAK}))
    for pos, c in enumerate(text):
        if pos in confusions:
            wrong, score = confusions[pos]
            scores = {VOCAB.index[wrong]: score, VOCAB.index[c]: PEAK - 1}
        else:
            scores = {VOCAB.index[c]: PEAK}
        rows += [frame(scores), frame(scores), frame({VOCAB.blank: PEAK})]
    return torch.stack(rows)


def _batch(frames: list[torch.Tensor], pad_with: str = "z") -> dict[str, torch.Tensor]:
    """Pad to one length with frames that shout `pad_with`, so that ignoring lengths would show."""
    t = max(f.shape[0] for f in frames)
    logits = torch.zeros(len(frames), t, len(VOCAB))
    logits[:, :, VOCAB.index[pad_with]] = PEAK + 2
    for b, f in enumerate(frames):
        logits[b, : f.shape[0]] = f
    return {"logits": logits, "lengths": torch.tensor([f.shape[0] for f in frames])}


def _noisy(out: dict[str, torch.Tensor], sigma: float = 0.3, seed: int = 0) -> dict[str, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    return {**out, "logits": out["logits"] + sigma * torch.randn(out["logits"].shape, generator=g)}


def test_tokens_map_blank_and_space_to_decoder_names():
    names = token_names(VOCAB)
    assert names[VOCAB.blank] == BLANK_TOKEN and names[VOCAB.index[" "]] == SIL_TOKEN
    assert names[VOCAB.index["a"]] == "a" and names[VOCAB.index["'"]] == "'" and len(names) == len(VOCAB)
    assert spell("Hi, you!") == ["h", "i", SIL_TOKEN, "y", "o", "u"]


def test_lexicon_and_lm_fix_a_misspelling_greedy_gets_wrong(corpus, tmp_path):
    sentence = "what is the weather in los angeles"
    words = vocabulary(corpus)
    assert set(sentence.split()) <= set(words)
    # 'weather' heard as 'weathar', and 'angeles' as 'angelos': neither is a word
    pos_a = sentence.index("weather") + 5
    pos_o = sentence.index("angeles") + 5
    assert "weathar" not in words and "angelos" not in words
    out = _noisy(_batch([_frames(sentence, {pos_a: ("a", PEAK), pos_o: ("o", PEAK)})]))

    assert greedy_decode(out, VOCAB) == ["what is the weathar in los angelos"]
    dec = from_text(corpus, VOCAB, order=3, workdir=tmp_path)
    assert (tmp_path / "lm3.arpa").is_file() and (tmp_path / "lexicon.txt").is_file() and (tmp_path / "tokens.txt").is_file()
    assert dec.decode(out) == [sentence]


def test_lm_chooses_between_lexicon_words(corpus, corpus_arpa):
    """'new' vs 'now' (both words): acoustics lean to 'now', the LM knows 'new york'."""
    sentence = "what is the current time in new york"
    words = vocabulary(corpus)
    assert {"new", "now", "york"} <= set(words)
    out = _noisy(_batch([_frames(sentence, {sentence.index("new") + 1: ("o", PEAK + 1)})]))
    wrong = "what is the current time in now york"
    assert greedy_decode(out, VOCAB) == [wrong]
    assert BeamDecoder(VOCAB, words, None).decode(out) == [wrong]
    assert BeamDecoder(VOCAB, words, corpus_arpa).decode(out) == [sentence]


CLEAN = ["turn the lights off", "i'll call mom's office", "book a flight to the u. s.", "a", "see  seed   sees"]


def test_without_lm_beam_equals_greedy_on_clean_emissions():
    out = _noisy(_batch([_frames(normalise(s)) for s in CLEAN]), sigma=0.1)
    greedy = greedy_decode(out, VOCAB)
    assert greedy == [normalise(s) for s in CLEAN]
    assert BeamDecoder(VOCAB, None, None).decode(out) == greedy  # lexicon-free
    assert BeamDecoder(VOCAB, vocabulary(CLEAN), None).decode(out) == greedy  # lexicon, no LM


def test_batch_decoding_respects_lengths(corpus_arpa, corpus):
    sents = ["turn the lights off", "set an alarm", "what is the weather in los angeles"]
    out = _noisy(_batch([_frames(s) for s in sents]))  # padding frames say "zzzz"
    assert out["lengths"].unique().numel() == 3
    assert greedy_decode(out, VOCAB) == sents
    for dec in (BeamDecoder(VOCAB, None, None), BeamDecoder(VOCAB, vocabulary(corpus), corpus_arpa)):
        batch = dec.decode(out)
        assert batch == sents
        singles = [dec.decode({"logits": out["logits"][b : b + 1, :n], "lengths": out["lengths"][b : b + 1]})[0] for b, n in enumerate(out["lengths"].tolist())]
        assert singles == batch


def test_lexicon_free_decoder_with_a_token_lm(tmp_path):
    """A character n-gram over decoder tokens drives lexicon-free search: 'lihgts' -> 'lights'."""
    arpa = build_arpa(SMALL * 3, order=4, path=tmp_path / "chars.arpa", units=spell)
    sentence = "turn the lights off"
    pos = sentence.index("lights") + 2
    out = _batch([_frames(sentence, {pos: ("h", PEAK)})])
    assert greedy_decode(out, VOCAB) == ["turn the lihhts off"]
    assert BeamDecoder(VOCAB, None, arpa, lm_weight=3.0).decode(out) == [sentence]
