"""CTC beam search for ConformerCTC: a lexicon and a word n-gram LM (flashlight via torchaudio).

    logits (B, T', V) --log_softmax, CPU float32--> torchaudio ctc_decoder --> words

Our CharVocab has the blank at index 0 and the space symbol as the word
boundary; flashlight wants named tokens, so the tokens file lists them in
CharVocab order with the blank named ``<blank>`` and the space named ``|``
(the decoder's silence / word-separator token). Lexicon entries spell a word
with its characters and end with ``|``: words are separated by the space the
model emits between them, and flashlight emits a word when its trailing ``|``
is consumed. The model emits no space after the last word, so in lexicon mode
``decode`` appends one frame that is certainly ``|`` to every utterance: the
last word closes like the others instead of paying for a ``|`` forced onto a
blank frame (a hypothesis already at a word boundary absorbs the extra frame
at no cost).

Without a lexicon the decoder is lexicon-free: any character string can come
out, and an LM, if given, must be over the token names (``spell`` builds the
token sentences for ``build_arpa``: ``build_arpa(sentences, units=spell)``).
"""

from __future__ import annotations

import os
import tempfile
from collections.abc import Iterable
from pathlib import Path

import torch
from torchaudio.models.decoder import ctc_decoder

from components.models.lm import build_arpa, vocabulary
from components.models.text import CharVocab, normalise

BLANK_TOKEN = "<blank>"
SIL_TOKEN = "|"

# Defaults chosen on synthetic emissions (noisy peaked logits of 150 held-out SLURP
# devel sentences, lexicon + trigram LM from lm.txt; WER 0.39 greedy): lm_weight
# 1/2/3/4/6 gave 0.27/0.20/0.18/0.21/0.33 at word_score -1, and word scores -2..1
# moved WER by about 0.03, favouring a small penalty. LM scores are log10 (KenLM),
# acoustic ones natural log. Retune both on a real dev set once a trained model exists.
LM_WEIGHT = 3.0
WORD_SCORE = -1.0


def token_names(vocab: CharVocab) -> list[str]:
    """The decoder's token names in CharVocab index order (blank -> <blank>, space -> |)."""
    return [BLANK_TOKEN if i == vocab.blank else SIL_TOKEN if s == " " else s for i, s in enumerate(vocab.symbols)]


def spell(sentence: str) -> list[str]:
    """A sentence as decoder tokens (a token-level LM for lexicon-free decoding): 'hi you' -> h i | y o u."""
    return [SIL_TOKEN if c == " " else c for c in normalise(sentence)]


class BeamDecoder:
    """Beam search over ConformerCTC outputs.

    lexicon_words: the words the decoder may output (None = lexicon-free).
    arpa_path: a KenLM ARPA (or binary) file; None = no LM.
    lm_weight, word_score: added to the acoustic log-probability (natural log) as
    lm_weight * LM score (log10) + word_score per word; word_score only acts
    with a lexicon. workdir keeps tokens.txt and lexicon.txt (temporary if None).
    """

    def __init__(
        self,
        vocab: CharVocab,
        lexicon_words: list[str] | None = None,
        arpa_path: str | os.PathLike | None = None,
        beam_size: int = 50,
        lm_weight: float = LM_WEIGHT,
        word_score: float = WORD_SCORE,
        beam_threshold: float = 25.0,
        workdir: str | os.PathLike | None = None,
    ) -> None:
        if " " not in vocab.index:
            raise ValueError("the vocabulary has no space symbol to use as the word boundary")
        self.vocab = vocab
        self.sil = vocab.index[" "]
        self._tmp = None if workdir is not None else tempfile.TemporaryDirectory(prefix="beam-")
        self.workdir = Path(workdir if workdir is not None else self._tmp.name)
        self.workdir.mkdir(parents=True, exist_ok=True)

        self.tokens = token_names(vocab)
        tokens_path = self.workdir / "tokens.txt"
        tokens_path.write_text("".join(t + "\n" for t in self.tokens), encoding="utf-8")

        lexicon_path = None
        self.words: list[str] | None = None
        if lexicon_words is not None:
            allowed = set(vocab.symbols[1:]) - {" "}
            spelled = {word for entry in lexicon_words for word in normalise(entry).split()}
            self.words = sorted(word for word in spelled if set(word) <= allowed)
            if not self.words:
                raise ValueError("no lexicon word can be spelled with the vocabulary")
            lexicon_path = self.workdir / "lexicon.txt"
            lexicon_path.write_text("".join(f"{w}\t{' '.join(w)} {SIL_TOKEN}\n" for w in self.words), encoding="utf-8")

        self.decoder = ctc_decoder(
            lexicon=str(lexicon_path) if lexicon_path else None,
            tokens=str(tokens_path),
            lm=str(arpa_path) if arpa_path is not None else None,
            # Lexicon-free: the LM is queried with token indices, so its dictionary must be the
            # tokens in index order (torchaudio's own lexicon-free word dict comes out in hash
            # order, which scores the wrong tokens).
            lm_dict=str(tokens_path) if lexicon_path is None and arpa_path is not None else None,
            beam_size=beam_size,
            beam_threshold=beam_threshold,
            lm_weight=lm_weight if arpa_path is not None else 0.0,
            word_score=word_score,
            blank_token=BLANK_TOKEN,
            sil_token=SIL_TOKEN,
        )

    def emissions(self, out: dict[str, torch.Tensor]) -> tuple[torch.Tensor, torch.Tensor]:
        """Log-posteriors on CPU float32 and int32 lengths for the decoder.

        Lexicon mode: (B, T'+1, V), each utterance closed by one certain-space frame.
        """
        logp = out["logits"].detach().float().log_softmax(-1).cpu()
        lengths = out["lengths"].detach().cpu().long().clamp(max=logp.shape[1])
        if self.words is None:
            return logp.contiguous(), lengths.to(torch.int32)
        b, t, v = logp.shape
        em = torch.full((b, t + 1, v), -1e4, dtype=torch.float32)
        em[:, :t] = logp
        em[torch.arange(b), lengths, :] = -1e4
        em[torch.arange(b), lengths, self.sil] = 0.0
        return em.contiguous(), (lengths + 1).to(torch.int32)

    def decode(self, out: dict[str, torch.Tensor]) -> list[str]:
        """Best transcript per utterance (normalised words) from a ConformerCTC output dict."""
        em, lengths = self.emissions(out)
        texts = []
        for hyps in self.decoder(em, lengths):
            if not hyps:
                texts.append("")
            elif self.words is not None:
                texts.append(" ".join(w for w in hyps[0].words if w))
            else:
                chars = "".join(" " if t == SIL_TOKEN else t for t in self.decoder.idxs_to_tokens(hyps[0].tokens))
                texts.append(normalise(chars))
        return texts

    __call__ = decode


def from_text(
    sentences: Iterable[str],
    vocab: CharVocab | None = None,
    order: int = 3,
    workdir: str | os.PathLike | None = None,
    **kwargs,
) -> BeamDecoder:
    """A BeamDecoder whose lexicon is the sentences' words and whose LM is their ``order``-gram ARPA.

    workdir keeps the ARPA, tokens and lexicon files (a temporary directory when None,
    removed with the decoder). kwargs go to BeamDecoder (beam_size, lm_weight, word_score...).
    """
    vocab = vocab or CharVocab()
    sentences = list(sentences)
    tmp = None
    if workdir is None:
        tmp = tempfile.TemporaryDirectory(prefix="beam-")
        workdir = tmp.name
    workdir = Path(workdir)
    arpa = build_arpa(sentences, order=order, path=workdir / f"lm{order}.arpa")
    dec = BeamDecoder(vocab, vocabulary(sentences), arpa, workdir=workdir, **kwargs)
    if tmp is not None:
        dec._tmp = tmp
    return dec
