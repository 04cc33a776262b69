"""``nast evaluate``: score one method on the TEST split and write ``reports/eval/{method}.json``.

Loads the base model from ``params.model``, applies the trained adapter/weights of ``--model-dir``
(nothing for zero_shot) and computes (definitions in :mod:`nast.evaluate.metrics`):

* MCQ on the negated and on the affirmative wording of the same questions (argmax cosine), their
  gap (affirmative - negated), bootstrap 95 % CIs (``evaluate.bootstrap`` resamples, ``evaluate.seed``),
  negated accuracy by the number of negated conditions in the correct option and by condition,
  and the per-question hits (``mcq_hits``: 0/1 strings and a digest of the question order) that
  ``nast report`` pairs across methods; ``mcq_length_bias`` per set: accuracy when the correct
  option is strictly the longest / shortest of the four (model tokens) and the length-controlled
  accuracy (:func:`nast.evaluate.metrics.length_bias`);
* contextual claims: ``claim_acc`` (true caption beats all its foils), by foil type, pairwise;
* image->report and report->image R@1/5/10 (one frontal image per test study; the report text
  is the impression followed by as many whole findings sentences as fit the text context,
  :class:`nast.models.data.ReportCaptions` with ``rng=None``);
* zero-shot AUROC per CheXpert condition with ("{finding}", "no {finding}") on the test images,
  cohort labels 1 vs 0;
* optionally the official MedNega-CXR JSON (``evaluate.mednega_json``), read with
  ``nast.text.mednega.from_records`` (images joined from the cohort by study_id), MCQ metrics
  reported under ``mednega``.

Only aggregates are written (no report text, captions or images).
"""

from __future__ import annotations

import argparse
import logging
from pathlib import Path

import numpy as np
import polars as pl

from nast import io
from nast.conditions import CONDITIONS
from nast.errors import StageError
from nast.evaluate import metrics as M

log = logging.getLogger(__name__)

#: the params.yaml keys (sections or dotted keys) this stage reads: its rule and DVC stage declare
#: exactly these (nast.codedeps.declared_params; the recording check of tests/conftest.py)
PARAMS_KEYS = ("evaluate", "model", "data.allow_empty")

COHORT_COLUMNS = ("dicom_id", "study_id", "split", "image_path", "findings", "impression", *CONDITIONS)


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--method", required=True,
                        help="method name recorded in the JSON (zero_shot, lora_uniform, nast, nast-beta0.5, ...)")
    parser.add_argument("--model-dir", required=True, help="folder written by nast train (models/M)")
    parser.add_argument("--base", default=None,
                        help="the base model: a checkpoint or a folder holding it (the DAG's declared input; "
                             "default: params model.checkpoint)")
    parser.add_argument("--cohort", required=True, help="cohort.parquet (retrieval and AUROC on the test split)")
    parser.add_argument("--benchmark", required=True, help="benchmark.parquet (MCQ on the test split)")
    parser.add_argument("--contextual", required=True, help="contextual.parquet (claims on the test split)")
    parser.add_argument("--embeddings", default=None,
                        help="the base model's image embeddings (nast embed-images, data/processed/image_embeddings); "
                             "read instead of embedding the images when the model's vision tower is the base's")
    parser.add_argument("--out", required=True, help="output JSON, e.g. reports/eval/M.json")


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


def _mednega(vl, path: str, cohort: pl.DataFrame, ev: dict, store=None) -> dict:
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


def _clean(obj):
    """NaN -> None so the JSON is standard."""
    if isinstance(obj, dict):
        return {str(k): _clean(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [_clean(v) for v in obj]
    if isinstance(obj, float) and obj != obj:
        return None
    return obj


def run(args: argparse.Namespace, params: dict) -> int:
    import torch

    from nast import tracking
    from nast.io import BENCHMARK_COLUMNS, CONTEXTUAL_COLUMNS
    from nast.models import base_params, load_model
    from nast.models.adapters import load_trained

    cohort = io.read_table(args.cohort, "cohort", params)
    benchmark = io.read_table(args.benchmark, "benchmark", params)
    contextual = io.read_table(args.contextual, "contextual table", params)
    io.require_columns(cohort, COHORT_COLUMNS, args.cohort)
    io.require_columns(benchmark, BENCHMARK_COLUMNS, args.benchmark)
    io.require_columns(contextual, CONTEXTUAL_COLUMNS, args.contextual)
    if not Path(args.model_dir).is_dir():
        raise StageError(f"model folder not found: {args.model_dir}")
    params = {**params, "model": base_params(params["model"], args.base)}

    torch.manual_seed(int(params["evaluate"]["seed"]))
    vl = load_model(params["model"], device=params["model"]["device"])
    cfg = load_trained(vl, args.model_dir)
    from nast.models.embeddings import store_for_model

    store = store_for_model(args.embeddings, params["model"], args.model_dir)
    log.info("%s: evaluating %s (%s)", args.method, args.model_dir, "trained" if cfg.get("trained") else "base model")
    with torch.no_grad():
        result = evaluate(vl, cohort, benchmark, contextual, params["evaluate"], store)
        if params["evaluate"].get("mednega_json"):
            result["mednega"] = _mednega(vl, params["evaluate"]["mednega_json"], cohort, params["evaluate"], store)
    result = {"method": args.method, **result}
    io.write_json(_clean(result), args.out)
    log.info("%s: negated %.3f affirmative %.3f gap %.3f claim %.3f R@5 %.3f -> %s", args.method,
             result["mcq_negated_acc"], result["mcq_affirmative_acc"], result["mcq_gap"],
             result["claim_acc"], result["retrieval_r5"], args.out)
    flat = {k: v for k, v in result.items() if isinstance(v, (int, float))}
    flat.update({f"retrieval_{k}": v for k, v in result["retrieval"].items()})
    flat.update({f"claim_acc_{k}": v for k, v in result["claim_acc_by_foil_type"].items()})
    flat.update({f"claim_acc_{k}_image_shuffled": v
                 for k, v in result["claim_acc_by_foil_type_image_shuffled"].items()})
    flat.update({f"auroc_{k.replace(' ', '_')}": v for k, v in result["auroc"].items()})
    tracking.log_method(params, args.method, stage="evaluate",
                        inputs=[args.cohort, args.benchmark, args.contextual],
                        final_metrics=flat, artifacts=[args.out], artifact_dir="eval")
    return 0
