"""Probing pairs for causal tracing: (image, affirmative option, negated option) of the correct answer."""

from __future__ import annotations

import logging

import numpy as np
import polars as pl

from nast.io import quarantine_frame

log = logging.getLogger(__name__)


LETTERS = ("A", "B", "C", "D")



COLUMNS = ("study_id", "image_path", "split", "correct",
           *(f"negated_{x}" for x in LETTERS), *(f"affirmative_{x}" for x in LETTERS))



def probing_pairs(bench: pl.DataFrame, split: str = "train") -> tuple[pl.DataFrame, pl.DataFrame, dict]:
    """benchmark rows -> (pairs [study_id, image_path, affirmative, negated], quarantine, counts).

    Keeps ``split`` rows that passed verification; rows without usable texts are quarantined.
    """
    df = bench.filter(pl.col("split") == split).sort("study_id")
    counts = {"n_rows_split": df.height}
    for col in ("verified", "affirm_verified"):
        if col in df.columns:
            df = df.filter(pl.col(col).fill_null(False))
    counts["n_unverified"] = counts["n_rows_split"] - df.height
    rows, bad = [], []
    for r in df.iter_rows(named=True):
        letter = r["correct"]
        aff = r.get(f"affirmative_{letter}") if letter in LETTERS else None
        neg = r.get(f"negated_{letter}") if letter in LETTERS else None
        if letter not in LETTERS:
            bad.append({"stage": "trace", "key": r["study_id"], "reason": f"correct letter {letter!r} not in A-D"})
        elif not (aff and str(aff).strip()) or not (neg and str(neg).strip()):
            bad.append({"stage": "trace", "key": r["study_id"],
                        "reason": f"empty affirmative/negated text of option {letter}"})
        else:
            rows.append({"study_id": r["study_id"], "image_path": r["image_path"],
                         "affirmative": str(aff).strip(), "negated": str(neg).strip()})
    pairs = pl.DataFrame(rows, schema={"study_id": pl.Int64, "image_path": pl.Utf8,
                                       "affirmative": pl.Utf8, "negated": pl.Utf8})
    return pairs, quarantine_frame(bad), counts



def sample_pairs(pairs: pl.DataFrame, max_examples: int, seed: int) -> pl.DataFrame:
    """Deterministic subset of at most ``max_examples`` pairs (kept in study order)."""
    if pairs.height <= max_examples:
        return pairs
    idx = np.sort(np.random.default_rng(seed).choice(pairs.height, size=max_examples, replace=False))
    return pairs[idx.tolist()]
