"""Model scoring shared by ``nast evaluate`` and the trainer's per-epoch validation.

Everything here turns (model, table) into similarity arrays; the metric definitions live in
:mod:`nast.evaluate.metrics`. Texts and images are embedded once each (deduplicated) in batches
under ``torch.no_grad``; cosine similarity = dot product of the L2-normalised embeddings.
Images are streamed through a DataLoader (:func:`nast.models.embeddings.embed_paths`), or, given
``store`` (the base model's :class:`nast.models.embeddings.EmbeddingStore`, for a model whose
vision tower is the base's), read from it.
"""

from __future__ import annotations

import numpy as np
import polars as pl
import torch

from nast.evaluate import metrics as M
from nast.models.data import tokens_on_device
from nast.models.embeddings import embed_paths


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
def image_embeddings(vl, paths: list[str], batch_size: int = 64, store=None) -> dict[str, np.ndarray]:
    uniq = sorted(set(paths))
    if not uniq:
        return {}
    emb = store.lookup(uniq) if store is not None else embed_paths(vl, uniq, batch_size)
    return dict(zip(uniq, emb.float().cpu().numpy()))


def mcq_scores(bench: pl.DataFrame, img: dict, txt: dict, prefix: str) -> np.ndarray:
    """[N, 4] cosine(image, option text) for option columns ``{prefix}_A..D``."""
    rows = []
    for r in bench.iter_rows(named=True):
        e = img[r["image_path"]]
        rows.append([float(e @ txt[r[f"{prefix}_{L}"]]) for L in M.LETTERS])
    return np.asarray(rows, dtype=float).reshape(len(rows), 4)


def option_token_lengths(vl, bench: pl.DataFrame, prefix: str) -> np.ndarray:
    """[N, 4] real token counts (specials included) of the option texts ``{prefix}_A..D``."""
    if bench.height == 0:
        return np.zeros((0, 4))
    texts = [t for r in bench.iter_rows(named=True) for t in (r[f"{prefix}_{L}"] for L in M.LETTERS)]
    counts = []
    for i in range(0, len(texts), 512):
        counts.append(vl.token_lengths(vl.tokenize(texts[i : i + 512])).cpu().numpy())
    return np.concatenate(counts).reshape(bench.height, 4)


def mcq_correct_index(bench: pl.DataFrame) -> np.ndarray:
    return np.asarray([M.LETTERS.index(c) for c in bench["correct"].to_list()], dtype=int)


def mcq_hits(vl, bench: pl.DataFrame, store=None) -> tuple[np.ndarray, np.ndarray]:
    """(negated hits, affirmative hits) per question of ``bench``."""
    if bench.height == 0:
        return np.zeros(0, bool), np.zeros(0, bool)
    texts = [t for p in ("negated", "affirmative") for L in M.LETTERS for t in bench[f"{p}_{L}"].to_list()]
    txt = text_embeddings(vl, texts)
    img = image_embeddings(vl, bench["image_path"].to_list(), store=store)
    correct = mcq_correct_index(bench)
    neg = M.mcq_correct(mcq_scores(bench, img, txt, "negated"), correct)
    aff = M.mcq_correct(mcq_scores(bench, img, txt, "affirmative"), correct)
    return neg, aff


def other_subject_images(df: pl.DataFrame, seed: int) -> dict[str, str]:
    """image_path -> the image of ANOTHER subject (seeded): subjects in a random cycle, each
    image of subject j mapped to an image of the next subject (its k-th, cycling). With one
    subject there is no other image and the mapping is empty."""
    per_subject: dict[int, list[str]] = {}
    for subj, path in df.select("subject_id", "image_path").unique().sort("subject_id", "image_path").iter_rows():
        per_subject.setdefault(int(subj), []).append(path)
    subjects = sorted(per_subject)
    if len(subjects) < 2:
        return {}
    order = [subjects[i] for i in np.random.default_rng(seed).permutation(len(subjects))]
    out = {}
    for j, subj in enumerate(order):
        nxt = per_subject[order[(j + 1) % len(order)]]
        for k, path in enumerate(per_subject[subj]):
            out[path] = nxt[k % len(nxt)]
    return out


def claim_metrics(vl, contextual: pl.DataFrame, split: str, shuffle_seed: int | None = None,
                  store=None) -> dict:
    """Claim metrics of ``split``. With ``shuffle_seed`` also the text-only control: each claim
    scored against another subject's image (:func:`other_subject_images`), i.e. what the captions
    alone decide (a trained model that wins there learned a text prior, e.g. "the negated caption
    is usually the true one", not image-conditioned polarity), under the keys
    ``claim_acc_image_shuffled`` and ``claim_acc_by_foil_type_image_shuffled``. Texts and images
    are embedded once for both."""
    df = contextual.filter(pl.col("split") == split)
    if df.height == 0:
        out = M.claim_accuracy([], [], [], [])
        mapping = {}
    else:
        txt = text_embeddings(vl, df["caption"].to_list() + df["foil"].to_list())
        img = image_embeddings(vl, df["image_path"].to_list(), store=store)
        group = [f"{d}\x00{c}" for d, c in zip(df["dicom_id"], df["caption"])]
        types = df["foil_type"].to_list()

        def score(image_of) -> dict:
            paths = [image_of(p) for p in df["image_path"]]
            cap = [float(img[p] @ txt[c]) for p, c in zip(paths, df["caption"])]
            foil = [float(img[p] @ txt[f]) for p, f in zip(paths, df["foil"])]
            return M.claim_accuracy(cap, foil, group, types)

        out = score(lambda p: p)
        mapping = other_subject_images(df, shuffle_seed) if shuffle_seed is not None else {}
    if shuffle_seed is not None:
        if mapping:
            shuffled = score(mapping.__getitem__)
            out.update(claim_acc_image_shuffled=shuffled["claim_acc"],
                       claim_acc_by_foil_type_image_shuffled=shuffled["claim_acc_by_foil_type"])
        else:
            out.update(claim_acc_image_shuffled=float("nan"), claim_acc_by_foil_type_image_shuffled={})
    return out


def validation_metrics(vl, benchmark: pl.DataFrame, contextual: pl.DataFrame, split: str = "validate",
                       store=None) -> dict:
    """The per-epoch curve columns: val MCQ accuracies and val claim accuracy (``store``: the
    base model's image embeddings, for a frozen vision tower)."""
    was_training = vl.model.training
    vl.model.eval()
    try:
        bench = benchmark.filter(pl.col("split") == split).sort("dicom_id")
        neg, aff = mcq_hits(vl, bench, store)
        claims = claim_metrics(vl, contextual, split, store=store)
    finally:
        vl.model.train(was_training)
    return {
        "val_mcq_negated_acc": M.accuracy(neg),
        "val_mcq_affirmative_acc": M.accuracy(aff),
        "val_claim_acc": claims["claim_acc"],
    }

