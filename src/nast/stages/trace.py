"""``nast trace``: causal tracing effects of the base model's text encoder (method: :mod:`nast.trace.cte`).

Probing pairs come from ``benchmark.parquet``: for each study of the TRAIN split (the traced
layers steer training, so the test split stays unseen) whose options passed both checkers
(``verified`` and ``affirm_verified`` when present), the correct option's affirmative text
(``affirmative_<correct>``) and its negated counterpart (``negated_<correct>``) with the study's
image. ``trace.max_examples`` pairs are drawn with ``trace.seed`` (all when fewer). A row with an
empty text or a missing/unreadable image goes to ``<out>/quarantine.parquet`` (counts reconcile).

``trace.direction``: ``caption`` = the affirmative run is the source whose states are patched into
the negated (target) run; ``foil`` = the reverse.

Outputs in ``--out``: ``cte.parquet`` (layer, position, effect, n), ``layer_weights.csv`` (layer,
cte, cte_lo, cte_hi, alpha; the interval is a bootstrap over the pairs), ``heatmap.png``,
``layers.png``, ``summary.json`` (n_examples, n_skipped_small_d, direction, how stable the
block ranking is under resampling, ...), ``quarantine.parquet``.
"""

from __future__ import annotations

import argparse
import logging
import time
from pathlib import Path

import numpy as np
import polars as pl

from nast.errors import StageError
from nast.io import quarantine_frame, read_table, reconcile, require_columns, write_json, write_parquet, write_text
from nast.trace.pairs import COLUMNS, probing_pairs, sample_pairs

log = logging.getLogger(__name__)

#: the params.yaml keys (sections or dotted keys) this stage reads: its rule and DVC stage declare
#: exactly these (nast.codedeps.declared_params; the recording check of tests/conftest.py)
PARAMS_KEYS = ("trace", "model", "data.allow_empty")


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--benchmark", required=True,
                        help="benchmark.parquet (negated_A..D, affirmative_A..D, correct)")
    parser.add_argument("--base", default=None,
                        help="the base model: a checkpoint or a folder holding it (the DAG's declared input; "
                             "default: params model.checkpoint)")
    parser.add_argument("--out", required=True,
                        help="output folder (cte.parquet, layer_weights.csv, heatmap.png, layers.png, summary.json)")
    parser.add_argument("--split", default="train", help="benchmark split the probing pairs come from (default: train)")
    parser.add_argument("--naive", action="store_true",
                        help="use the reference per-(layer, position) loop instead of the batched tracer "
                             "(slow; same result)")


def run(args: argparse.Namespace, params: dict) -> int:
    import torch

    from nast.models import base_params, load_model
    from nast.models.data import load_image
    from nast.trace.cte import aggregate, per_layer_example_cte, trace_pairs
    from nast.trace.plots import heatmap, layer_bars

    params = params.replace(model=base_params(params.model, args.base))
    tp = params.trace
    t0 = time.perf_counter()
    torch.manual_seed(int(tp.seed))
    out = Path(args.out)
    bench = read_table(args.benchmark, "benchmark", params)
    require_columns(bench, COLUMNS, args.benchmark)
    pairs, quarantine, counts = probing_pairs(bench, args.split)
    n_in = pairs.height + quarantine.height
    if n_in == 0:
        raise StageError(f"{args.benchmark}: no verified rows in split {args.split!r} to trace")

    vl = load_model(params.model)
    images, keep, bad = [], [], []
    for r in pairs.iter_rows(named=True):
        try:
            images.append(vl.preprocess(load_image(r["image_path"])))
            keep.append(True)
        except StageError as exc:
            bad.append({"stage": "trace", "key": r["study_id"], "reason": str(exc), "source": r["image_path"]})
            keep.append(False)
    quarantine = pl.concat([quarantine, quarantine_frame(bad)])
    ok_idx = [i for i, k in enumerate(keep) if k]
    pairs_ok = pairs[ok_idx]
    reconcile("trace", n_in, pairs_ok.height, quarantine.height)
    images_t = torch.stack(images) if images else torch.empty(0)
    sel = sample_pairs(pairs_ok.with_row_index("_i"), int(tp.max_examples), int(tp.seed))
    if sel.height == 0:
        raise StageError(f"{args.benchmark}: no usable probing pairs (see {out / 'quarantine.parquet'})")
    imgs = images_t[sel["_i"].to_list()]
    aff, neg = sel["affirmative"].to_list(), sel["negated"].to_list()
    sources, targets = (aff, neg) if tp.direction == "caption" else (neg, aff)
    log.info("trace: %d pairs, direction=%s, family=%s, %d text layers", sel.height, tp.direction,
             vl.family, vl.n_text_layers)
    unit = tp.unit
    res = trace_pairs(vl, imgs, sources, targets, min_abs_d=float(tp.min_abs_d),
                      batch_size=int(tp.batch_size), naive=args.naive, unit=unit, log=log.info)
    d_kept = res["d"][res["kept"]]
    table, weights, stability = aggregate(res["cte"], res["valid"], res["layers"], d=d_kept,
                                          weighting=tp.example_weighting, n_boot=int(tp.bootstrap),
                                          seed=int(tp.seed), per_example=per_layer_example_cte(res))
    write_parquet(table, out / "cte.parquet")
    write_text(weights.write_csv(float_precision=8), out / "layer_weights.csv")
    write_parquet(quarantine.sort("key"), out / "quarantine.parquet")
    title = f"{vl.family}: unit={unit}, direction={tp['direction']}, n={len(res['kept'])}"
    heatmap(table, out / "heatmap.png", title=f"CTE d*/d, one position patched ({title})")
    layer_bars(weights, out / "layers.png",
               title=f"per-layer CTE{' (whole block write)' if unit == 'block' else ''} ({title})")
    d = res["d"]
    summary = {
        "n_examples": len(res["kept"]),
        "n_skipped_small_d": int(res["n_skipped_small_d"]),
        "direction": tp.direction,
        "unit": unit,
        "n_pairs_sampled": int(sel.height),
        "n_pairs_available": int(pairs_ok.height),
        "n_quarantined": int(quarantine.height),
        "n_unverified": int(counts["n_unverified"]),
        "split": args.split,
        "family": vl.family,
        "n_layers": vl.n_text_layers,
        "min_abs_d": float(tp.min_abs_d),
        "mean_d": float(np.mean(d)) if d.size else None,
        "mean_abs_d": float(np.mean(np.abs(d))) if d.size else None,
        "layer_order": weights.sort("cte", descending=True)["layer"].to_list(),
        "example_weighting": tp.example_weighting,
        "bootstrap": int(tp.bootstrap),
        **stability,
        "method": "naive" if args.naive else "batched",
    }
    write_json(summary, out / "summary.json")
    top = stability["top_block_agreement"]
    if top is not None and top < 0.9:
        log.warning("trace: the highest-CTE text block changes in %.0f %% of bootstrap resamples of the %d "
                    "probing pairs: the layer weights (alpha) are partly sampling noise; see cte_lo/cte_hi "
                    "in %s and trace more pairs (trace.max_examples)", 100 * (1 - top), summary["n_examples"],
                    out / "layer_weights.csv")
    log.info("trace: %d examples traced, %d skipped (|d| < %g) in %.1f s -> %s", summary["n_examples"],
             summary["n_skipped_small_d"], tp.min_abs_d, time.perf_counter() - t0, out)
    return 0
