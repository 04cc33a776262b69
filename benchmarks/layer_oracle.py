"""Does the CTE point at the text blocks where training repairs negation? (a per-block oracle)

NAST's premise is that the layers with the highest causal tracing effect are the ones worth
training. This script measures that premise on the model and data the pipeline already built
(run ``make demo`` first, or point ``--params`` at your own): for every text block ``i`` it trains
LoRA on block ``i`` alone -- the ``topk_layers`` method with ``k = 1`` and a layer-weights file that
ranks block ``i`` first, so the trainer, loss, data and learning rate are exactly the pipeline's --
and reads the block's gain from the run's own validation curve (``curve.csv``, the VALIDATE split:
the test split stays unseen). Optionally (``--evaluate``) each run is also scored on the test split.

Per block it prints the CTE of the block's output layer (``reports/cte/layer_weights.csv``), the
NAST learning-rate factor it gets, and the validate-split negated/affirmative MCQ accuracy and
claim accuracy after training. It ends with the line

    oracle spearman(cte, negated_gain)=<rho> spearman(cte, claim_gain)=<rho> best_block=<i>
    best_claim_block=<i> top_cte_block=<j> blocks=<n>

where ``negated_gain`` is the block's validate negated MCQ accuracy minus the base's (zero_shot)
and ``claim_gain`` the same for the contextual claim accuracy (true caption against its
polarity / laterality / severity foils; many more comparisons than MCQs, so less noisy). A rho
near +1 says the CTE ranks the blocks as training does; near 0 or below, NAST's weighting has
nothing to work with on this model. With few validation questions the per-block MCQ accuracies
are noisy: read them with ``--seeds`` over several training seeds.

Usage::

    python benchmarks/layer_oracle.py --seeds 0 1 --jobs 2
"""

from __future__ import annotations

import argparse
import csv
import json
import sys
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
import yaml
from pipeline_runs import add_artifact_arguments, prepare_work, train_and_evaluate


def spearman(x: list[float], y: list[float]) -> float:
    """Spearman's rank correlation (polars; average ranks for ties, nan when a side is constant)."""
    import polars as pl

    return float(pl.DataFrame({"x": x, "y": y}).select(pl.corr("x", "y", method="spearman")).item())


def one_hot_weights(layers: list[int], block: int) -> str:
    """layer_weights.csv text whose CTE ranks layer ``block + 1`` (text block ``block``) first."""
    lines = ["layer,cte,alpha"]
    for layer in layers:
        hit = float(layer == block + 1)
        lines.append(f"{layer},{hit},{hit}")
    return "\n".join(lines) + "\n"


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--params", default="params.yaml")
    ap.add_argument("--seeds", type=int, nargs="+", default=[0], help="train.seed values (results are averaged)")
    ap.add_argument("--work", default="reports/layer_oracle", help="scratch folder (params, models, logs)")
    ap.add_argument("--jobs", type=int, default=2, help="train processes at once")
    ap.add_argument("--evaluate", action="store_true", help="also run nast evaluate (test split) on every run")
    add_artifact_arguments(ap)
    args = ap.parse_args()

    from nast.config import load_params
    from nast.evaluate.scoring import validation_metrics
    from nast.models import load_model
    from nast.train.trainer import layer_scales, normalize_scales, read_layer_weights

    work = Path(args.work)
    base = yaml.safe_load(Path(args.params).read_text())
    params = load_params(args.params)
    # the single-block runs do not depend on the layer weights (only the CTE column does)
    prepare_work(work, [args.params, params["model"]["checkpoint"], args.cohort, args.benchmark, args.contextual])
    lw = read_layer_weights(args.layer_weights)

    import polars as pl
    import torch

    torch.set_num_threads(int(params["train"]["num_threads"]))
    vl = load_model(params["model"])
    n_blocks = vl.n_text_layers
    base_val = validation_metrics(vl, pl.read_parquet(args.benchmark), pl.read_parquet(args.contextual), "validate")
    del vl
    nast_factors = normalize_scales(layer_scales(lw, n_blocks, float(params["nast"]["beta"])),
                                    str(params["nast"]["normalize"]))
    cte_by_block = {layer - 1: cte for layer, cte in zip(lw["layer"], lw["cte"]) if 1 <= layer <= n_blocks}

    for seed in args.seeds:
        (work / f"params_seed{seed}.yaml").write_text(yaml.safe_dump(
            {**base, "train": {**base["train"], "seed": seed, "topk_layers": 1}}))
    for b in range(n_blocks):
        (work / f"block{b}_weights.csv").write_text(one_hot_weights(lw["layer"].to_list(), b))

    def one(block: int, seed: int) -> dict:
        model = work / "models" / f"block{block}-seed{seed}"
        out = work / "eval" / f"block{block}-seed{seed}.json"
        train_and_evaluate(args, work / f"params_seed{seed}.yaml", "topk_layers", model,
                           out if args.evaluate else None, work / f"block{block}-seed{seed}.log",
                           layer_weights=work / f"block{block}_weights.csv")
        blocks = json.loads((model / "adapter_config.json").read_text())["blocks"]
        if blocks != [block]:
            raise SystemExit(f"{model}: trained blocks {blocks}, expected [{block}]")
        last = list(csv.DictReader(open(model / "curve.csv")))[-1]
        res = {k: float(last[k]) for k in ("val_mcq_negated_acc", "val_mcq_affirmative_acc", "val_claim_acc")}
        if args.evaluate:
            ev = json.loads(out.read_text())
            res.update(test_negated=ev["mcq_negated_acc"], test_affirmative=ev["mcq_affirmative_acc"])
        return res

    jobs = [(b, s) for s in args.seeds for b in range(n_blocks)]
    with ThreadPoolExecutor(args.jobs) as pool:
        results = dict(zip(jobs, pool.map(lambda bs: one(*bs), jobs)))

    print(f"base (zero_shot) validate: negated {base_val['val_mcq_negated_acc']:.3f}  "
          f"affirmative {base_val['val_mcq_affirmative_acc']:.3f}  claim {base_val['val_claim_acc']:.3f}")
    head = "block  cte      nast_lr_factor  val_negated  val_affirmative  val_claim"
    print(head + ("  test_negated  test_affirmative" if args.evaluate else ""))
    gains, claim_gains, ctes = [], [], []
    for b in range(n_blocks):
        rs = [results[(b, s)] for s in args.seeds]
        mean = {k: float(np.mean([r[k] for r in rs])) for k in rs[0]}
        gains.append(mean["val_mcq_negated_acc"] - base_val["val_mcq_negated_acc"])
        claim_gains.append(mean["val_claim_acc"] - base_val["val_claim_acc"])
        ctes.append(cte_by_block[b])
        line = (f"{b:5d}  {cte_by_block[b]:.5f}  {nast_factors[b]:14.3f}  {mean['val_mcq_negated_acc']:11.3f}  "
                f"{mean['val_mcq_affirmative_acc']:15.3f}  {mean['val_claim_acc']:9.3f}")
        if args.evaluate:
            line += f"  {mean['test_negated']:12.3f}  {mean['test_affirmative']:16.3f}"
        print(line)
    rho = spearman(ctes, gains)
    rho_claim = spearman(ctes, claim_gains)
    best = int(np.argmax(gains))
    top = int(np.argmax(ctes))
    print(f"(means over seeds {args.seeds}; validate split; *_gain = the block's value - the base's; "
          f"cte from {args.layer_weights})")
    print(f"oracle spearman(cte, negated_gain)={rho:+.3f} spearman(cte, claim_gain)={rho_claim:+.3f} "
          f"best_block={best} best_claim_block={int(np.argmax(claim_gains))} top_cte_block={top} blocks={n_blocks}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
