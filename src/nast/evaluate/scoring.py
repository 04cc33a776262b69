"""Model scoring shared by ``nast evaluate`` and the trainer's per-epoch validation.

Everything here turns (model, table) into similarity arrays; the metric definitions live in
:mod:`nast.evaluate.metrics`. Texts and images are embedded once each (deduplicated) in batches
under ``torch.no_grad``; cosine similarity = dot product of the L2-normalised embeddings.
"""

from __future__ import annotations

import numpy as np
import polars as pl
import torch

from nast.evaluate import metrics as M
from nast.train.data import load_images, tokens_on_device


@torch.no_grad()
def text_embeddings(vl, texts: list[str], batch_size: int = 256) -> dict[str, np.ndarray]:
    uniq = sorted(set(texts))
    out: dict[str, np.ndarray] = {}
    for i in range(0, len(uniq), batch_size):
        chunk = uniq[i : i + batch_size]
        emb = vl.encode_text_trimmed(tokens_on_device(vl, chunk)).float().cpu().numpy()
        out.update(zip(chunk, emb))
    return out


@torch.no_grad()
def image_embeddings(vl, paths: list[str], batch_size: int = 64) -> dict[str, np.ndarray]:
    uniq = sorted(set(paths))
    out: dict[str, np.ndarray] = {}
    for i in range(0, len(uniq), batch_size):
        chunk = uniq[i : i + batch_size]
        pixels = load_images(vl, chunk).to(vl.device)
        emb = vl.encode_image(pixels).float().cpu().numpy()
        out.update(zip(chunk, emb))
    return out


def mcq_scores(bench: pl.DataFrame, img: dict, txt: dict, prefix: str) -> np.ndarray:
    """[N, 4] cosine(image, option text) for option columns ``{prefix}_A..D``."""
    rows = []
    for r in bench.iter_rows(named=True):
        e = img[r["image_path"]]
        rows.append([float(e @ txt[r[f"{prefix}_{L}"]]) for L in M.LETTERS])
    return np.asarray(rows, dtype=float).reshape(len(rows), 4)


def mcq_correct_index(bench: pl.DataFrame) -> np.ndarray:
    return np.asarray([M.LETTERS.index(c) for c in bench["correct"].to_list()], dtype=int)


def mcq_hits(vl, bench: pl.DataFrame) -> tuple[np.ndarray, np.ndarray]:
    """(negated hits, affirmative hits) per question of ``bench``."""
    if bench.height == 0:
        return np.zeros(0, bool), np.zeros(0, bool)
    texts = [t for p in ("negated", "affirmative") for L in M.LETTERS for t in bench[f"{p}_{L}"].to_list()]
    txt = text_embeddings(vl, texts)
    img = image_embeddings(vl, bench["image_path"].to_list())
    correct = mcq_correct_index(bench)
    neg = M.mcq_correct(mcq_scores(bench, img, txt, "negated"), correct)
    aff = M.mcq_correct(mcq_scores(bench, img, txt, "affirmative"), correct)
    return neg, aff


def claim_metrics(vl, contextual: pl.DataFrame, split: str) -> dict:
    df = contextual.filter(pl.col("split") == split)
    if df.height == 0:
        return M.claim_accuracy([], [], [], [])
    txt = text_embeddings(vl, df["caption"].to_list() + df["foil"].to_list())
    img = image_embeddings(vl, df["image_path"].to_list())
    cap = [float(img[p] @ txt[c]) for p, c in zip(df["image_path"], df["caption"])]
    foil = [float(img[p] @ txt[f]) for p, f in zip(df["image_path"], df["foil"])]
    group = [f"{d}\x00{c}" for d, c in zip(df["dicom_id"], df["caption"])]
    return M.claim_accuracy(cap, foil, group, df["foil_type"].to_list())


def validation_metrics(vl, benchmark: pl.DataFrame, contextual: pl.DataFrame, split: str = "validate") -> dict:
    """The per-epoch curve columns: val MCQ accuracies and val claim accuracy."""
    was_training = vl.model.training
    vl.model.eval()
    try:
        bench = benchmark.filter(pl.col("split") == split).sort("dicom_id")
        neg, aff = mcq_hits(vl, bench)
        claims = claim_metrics(vl, contextual, split)
    finally:
        vl.model.train(was_training)
    return {
        "val_mcq_negated_acc": M.accuracy(neg),
        "val_mcq_affirmative_acc": M.accuracy(aff),
        "val_claim_acc": claims["claim_acc"],
    }

