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

from nast import io
from nast.errors import StageError
from nast.evaluate.evaluation import COHORT_COLUMNS, evaluate, mednega_block
from nast.models.image_cache import ARGUMENT_HELP

log = logging.getLogger(__name__)

#: the params.yaml keys (sections or dotted keys) this stage reads: its rule and DVC stage declare
#: exactly these (nast.codedeps.declared_params; the recording check of tests/conftest.py)
PARAMS_KEYS = ("evaluate", "model", "data.allow_empty")


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
    parser.add_argument("--image-cache", default=None, help=ARGUMENT_HELP)
    parser.add_argument("--out", required=True, help="output JSON, e.g. reports/eval/M.json")



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
    params = params.replace(model=base_params(params.model, args.base))

    torch.manual_seed(int(params.evaluate.seed))
    vl = load_model(params.model, device=params.model.device)
    cfg = load_trained(vl, args.model_dir)
    from nast.models.embeddings import store_for_model
    from nast.models.image_cache import open_cache

    store = store_for_model(args.embeddings, params.model, args.model_dir)
    vl.use_image_cache(open_cache(args.image_cache))
    log.info("%s: evaluating %s (%s)", args.method, args.model_dir, "trained" if cfg.get("trained") else "base model")
    with torch.no_grad():
        result = evaluate(vl, cohort, benchmark, contextual, params.evaluate, store)
        if params.evaluate.mednega_json:
            result["mednega"] = mednega_block(vl, params.evaluate.mednega_json, cohort, params.evaluate, store)
    result = {"method": args.method, **result}
    io.write_json(io.json_safe(result), args.out)
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
