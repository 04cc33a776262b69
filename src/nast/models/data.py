"""Images and report captions for the model stages (pretrain-base, trace).

Report -> caption
-----------------
A report's impression and findings are split into sentences (spaCy's rule-based ``sentencizer``;
a blank English pipeline, nothing downloaded); a findings sentence that repeats an impression
sentence is dropped. A training caption for one epoch is built with the epoch's RNG: the
impression sentences (the summary of the positive findings, the caption CheXzero trained on) in a
shuffled order, then a random number (0..all, uniform) of the shuffled findings sentences, kept
greedily while the caption still fits the text context (``max_tokens`` BPE tokens, excluding the
start/end tokens); a sentence that does not fit is skipped, so no sentence is ever cut mid-way.
Each epoch thus sees a different order and subset of the report's statements, from short
impression-only captions (close to the MCQ options) to full-context ones -- an augmentation of the
tiny demo set that keeps every statement reachable even when the report is longer than the
context. Evaluation captions use the original order and all sentences that fit (``rng=None``).
"""

from __future__ import annotations

from functools import lru_cache
from pathlib import Path
from typing import TYPE_CHECKING, Sequence

import numpy as np
from PIL import Image, UnidentifiedImageError

from nast.errors import StageError

if TYPE_CHECKING:
    import torch


def load_image(path: str | Path) -> Image.Image:
    """Open an image file as 8-bit grayscale ("L"); a missing/corrupt file is a StageError naming it."""
    path = Path(path)
    if not path.is_file():
        raise StageError(f"image not found: {path}")
    try:
        with Image.open(path) as im:
            return im.convert("L")
    except (UnidentifiedImageError, OSError) as exc:
        raise StageError(f"{path}: unreadable image ({exc})") from None


@lru_cache(maxsize=1)
def _sentencizer():
    import spacy

    nlp = spacy.blank("en")
    nlp.add_pipe("sentencizer")
    return nlp


def report_sentences(*sections: str | None) -> list[str]:
    """Sentences of the non-empty sections, in order (whitespace normalised)."""
    return [x for group in report_sections(*sections) for x in group]


def report_sections(*sections: str | None) -> list[list[str]]:
    """Sentences per section; a sentence already seen in an earlier section is dropped."""
    nlp = _sentencizer()
    seen: set[str] = set()
    out: list[list[str]] = []
    for text in sections:
        group: list[str] = []
        text = " ".join(str(text or "").split())
        if text:
            for sent in nlp(text).sents:
                t = sent.text.strip()
                if t and t.lower() not in seen:
                    seen.add(t.lower())
                    group.append(t)
        out.append(group)
    return out


def build_caption(
    sentences: Sequence[str],
    n_tokens: Sequence[int],
    max_tokens: int,
    rng: np.random.Generator | None = None,
    groups: Sequence[int] | None = None,
) -> str:
    """Join sentences greedily while they fit ``max_tokens``.

    ``n_tokens[i]`` is the token count of ``sentences[i]``; ``groups[i]`` its section rank (lower
    first; default all 0). With ``rng`` the order is shuffled within each group, and each group
    after the first is cut to a random number of its sentences (0..all, uniform), so short captions
    (e.g. the impression alone) and long ones both occur. At least one sentence is always kept
    (the tokenizer truncates it if it alone is too long).
    """
    n = len(sentences)
    groups = np.zeros(n, dtype=int) if groups is None else np.asarray(groups)
    order: list[int] = []
    for rank, g in enumerate(sorted(set(groups.tolist()))):
        idx = np.flatnonzero(groups == g)
        if rng is not None:
            idx = rng.permutation(idx)
            if rank > 0:
                idx = idx[: int(rng.integers(0, len(idx) + 1))]
        order.extend(idx.tolist())
    kept: list[str] = []
    used = 0
    for i in order:
        k = int(n_tokens[i])
        if kept and used + k > max_tokens:
            continue
        kept.append(sentences[i])
        used += k
    return " ".join(kept)


class ReportCaptions:
    """Per-report caption material: sentences, their token counts and section ranks.

    ``mode``: ``impression`` keeps the impression sentences alone (the findings only when a report
    has no impression); ``report`` keeps impression then findings. :meth:`captions` draws one
    caption per report with :func:`build_caption` (``rng=None``: original order, all that fit).
    Token counts come from the model's own tokenizer (``vl.tokenize`` minus start/end tokens),
    so every family is measured the same way; ``max_tokens`` is the text context minus 2.
    """

    def __init__(self, vl, findings: Sequence[str | None], impressions: Sequence[str | None],
                 mode: str = "report"):
        if mode not in ("impression", "report"):
            raise ValueError(f"caption mode must be 'impression' or 'report', got {mode!r}")
        self.max_tokens = int(vl.context_length) - 2
        self.sentences: list[list[str]] = []
        self.groups: list[list[int]] = []
        for f, i in zip(findings, impressions):
            sec = report_sections(i, f)  # impression first
            if mode == "impression" and sec[0]:
                sec = sec[:1]
            self.sentences.append([x for g in sec for x in g])
            self.groups.append([r for r, g in enumerate(sec) for _ in g])
        flat = [s for ss in self.sentences for s in ss]
        counts: list[int] = []
        for k in range(0, len(flat), 512):
            chunk = flat[k:k + 512]
            counts.extend((vl.token_lengths(vl.tokenize(chunk)) - 2).clamp(min=1).tolist())
        self.n_tokens: list[list[int]] = []
        k = 0
        for ss in self.sentences:
            self.n_tokens.append([int(c) for c in counts[k:k + len(ss)]])
            k += len(ss)

    def __len__(self) -> int:
        return len(self.sentences)

    def captions(self, rng: np.random.Generator | None = None) -> list[str]:
        return [build_caption(s, n, self.max_tokens, rng, g)
                for s, n, g in zip(self.sentences, self.n_tokens, self.groups)]


def load_images(vl, paths: list[str], what: str = "image") -> torch.Tensor:
    """Preprocess each image once -> [N, C, H, W]; a missing/corrupt file stops with its path."""
    import torch

    out = []
    for p in paths:
        path = Path(p)
        if not path.is_file():
            raise StageError(f"{what} not found: {path}")
        try:
            with Image.open(path) as img:
                out.append(vl.preprocess(img))
        except OSError as exc:
            raise StageError(f"{what} unreadable: {path}: {exc}") from exc
    if not out:
        return torch.empty(0)
    return torch.stack(out)


def tokens_on_device(vl, texts: list[str]) -> dict:
    """Tokenize and move to the model's device (padding is trimmed later, by
    ``VLModel.encode_text_trimmed``, for every family)."""
    return {k: (v.to(vl.device) if hasattr(v, "to") else v) for k, v in vl.tokenize(texts).items()}
