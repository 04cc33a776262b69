"""Evaluate one model: MCQ negated/affirmative, contextual claims, retrieval, AUROC (the core of ``nast evaluate``)."""

from __future__ import annotations

import logging

import numpy as np
import polars as pl

from nast.conditions import CONDITIONS
from nast.evaluate import metrics as M

log = logging.getLogger(__name__)


COHORT_COLUMNS = ("dicom_id", "study_id", "split", "image_path", "findings", "impression", *CONDITIONS)



def mcq_block(neg: np.ndarray, aff: np.ndarray, bench: pl.DataFrame, n_boot: int, seed: int,
              prefix: str = "mcq") -> dict:
    """MCQ metrics from per-question hits (pure)."""
    correct = bench["correct"].to_list()
    n_negated = [M.n_negated_in_option(r[f"option_{c}"]) for r, c in zip(bench.iter_rows(named=True), correct)]
    conds = bench["conditions"].to_list() if "conditions" in bench.columns else [[] for _ in correct]
    return {
        f"{prefix}_negated_acc": M.accuracy(neg),
        f"{prefix}_affirmative_acc": M.accuracy(aff),
        f"{prefix}_gap": M.accuracy(aff) - M.accuracy(neg),
        f"{prefix}_negated_acc_ci": list(M.bootstrap_ci(neg, n_boot, seed)),
        f"{prefix}_affirmative_acc_ci": list(M.bootstrap_ci(aff, n_boot, seed)),
        f"{prefix}_gap_ci": list(M.bootstrap_ci(aff, n_boot, seed, paired_with=neg)),
        f"{prefix}_by_n_negated": M.grouped_accuracy(neg, n_negated),
        f"{prefix}_affirmative_by_n_negated": M.grouped_accuracy(aff, n_negated),
        f"{prefix}_by_condition": M.grouped_accuracy(neg, conds),
        f"{prefix}_affirmative_by_condition": M.grouped_accuracy(aff, conds),
        f"n_{prefix}": int(len(neg)),
        # per-question hits for paired comparisons between methods (nast report); no ids or text
        f"{prefix}_hits": {"questions": M.question_digest(bench["dicom_id"].to_list()),
                           "negated": M.encode_hits(neg), "affirmative": M.encode_hits(aff)},
    }



def retrieval_pairs(cohort: pl.DataFrame, split: str = "test") -> pl.DataFrame:
    """One image per study (smallest dicom_id) with its report text (findings + impression)."""
    df = cohort.filter(pl.col("split") == split).with_columns(
        pl.concat_str([pl.col("findings").fill_null(""), pl.col("impression").fill_null("")], separator=" ")
        .str.strip_chars().alias("report")
    ).filter(pl.col("report") != "")
    return df.sort(["study_id", "dicom_id"]).group_by("study_id", maintain_order=True).first().sort("study_id")



def evaluate(vl, cohort: pl.DataFrame, benchmark: pl.DataFrame, contextual: pl.DataFrame, ev: dict,
             store=None) -> dict:
    from nast.evaluate import scoring as S

    n_boot, seed = int(ev["bootstrap"]), int(ev["seed"])
    vl.model.eval()
    bench = benchmark.filter(pl.col("split") == "test").sort("dicom_id")
    neg, aff = S.mcq_hits(vl, bench, store)
    out = mcq_block(neg, aff, bench, n_boot, seed)
    correct = S.mcq_correct_index(bench)
    out["mcq_length_bias"] = {
        "negated": M.length_bias(neg, S.option_token_lengths(vl, bench, "negated"), correct),
        "affirmative": M.length_bias(aff, S.option_token_lengths(vl, bench, "affirmative"), correct),
    }
    for which, lb in out["mcq_length_bias"].items():  # flat copies (MLflow metrics, summary table)
        out[f"mcq_{which}_acc_longest"] = lb["longest_acc"]
        out[f"mcq_{which}_acc_shortest"] = lb["shortest_acc"]
        out[f"mcq_{which}_length_controlled_acc"] = lb["length_controlled_acc"]
    log.info("MCQ: %d test questions, negated %.3f, affirmative %.3f", len(neg), out["mcq_negated_acc"],
             out["mcq_affirmative_acc"])

    out.update(S.claim_metrics(vl, contextual, "test", shuffle_seed=seed, store=store))

    pairs = retrieval_pairs(cohort)
    if pairs.height:
        from nast.models.data import ReportCaptions

        # impression first, then whole findings sentences while they fit the text context (a plain
        # "findings + impression" string is cut mid-sentence by the tokenizer, dropping the impression)
        reports = ReportCaptions(vl, pairs["findings"].to_list(),
                                 pairs["impression"].to_list(), "report").captions(None)
        img = S.image_embeddings(vl, pairs["image_path"].to_list(), store=store)
        txt = S.text_embeddings(vl, reports)
        img_mat = np.stack([img[p] for p in pairs["image_path"]])
        T = np.stack([txt[r] for r in reports])
        same = np.array([[a == b for b in reports] for a in reports], dtype=bool)
        retrieval = M.retrieval_metrics(img_mat @ T.T, positives=same)
    else:
        retrieval = {f"{d}_r{k}": float("nan") for d in ("i2t", "t2i") for k in (1, 5, 10)}
    out["retrieval"] = retrieval
    out["retrieval_r5"] = (retrieval["i2t_r5"] + retrieval["t2i_r5"]) / 2
    out["n_retrieval"] = pairs.height

    test = cohort.filter(pl.col("split") == "test").sort("dicom_id")
    aurocs: dict[str, float] = {}
    if test.height:
        img = S.image_embeddings(vl, test["image_path"].to_list(), store=store)
        prompts = [t for c in CONDITIONS for t in (c.lower(), f"no {c.lower()}")]
        txt = S.text_embeddings(vl, prompts)
        img_mat = np.stack([img[p] for p in test["image_path"]])
        for c in CONDITIONS:
            labels = test[c].to_numpy()
            keep = np.isin(labels, [0, 1]) & ~test[c].is_null().to_numpy()
            score = img_mat @ txt[c.lower()] - img_mat @ txt[f"no {c.lower()}"]
            value = M.auroc(score[keep], labels[keep].astype(int))
            if value is not None:
                aurocs[c] = value
    out["auroc"] = aurocs
    out["auroc_mean"] = float(np.mean(list(aurocs.values()))) if aurocs else float("nan")
    out["n_auroc_images"] = test.height
    return out



def mednega_block(vl, path: str, cohort: pl.DataFrame, ev: dict, store=None) -> dict:
    """Evaluate the official MedNega-CXR JSON (all its records with an image in the cohort).

    Records are read by ``nast.text.mednega.from_records`` (images attached by study_id from the
    cohort); records without an image are counted in ``n_mednega_skipped``.
    """
    from nast.evaluate import scoring as S
    from nast.text.mednega import from_records, read_records

    records = read_records(path, "evaluate.mednega_json")
    bench, skipped = from_records(records, cohort, source=str(path), verify=False)
    bench = bench.sort("dicom_id")
    neg, aff = S.mcq_hits(vl, bench, store if store is not None and all(
        p in store.row for p in bench["image_path"]) else None)
    out = mcq_block(neg, aff, bench, int(ev["bootstrap"]), int(ev["seed"]))
    out["n_mednega_skipped"] = skipped.height
    return out



