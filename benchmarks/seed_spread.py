"""How much of a difference between two methods is training-seed noise?

Trains and evaluates each ``--methods`` entry once per ``--seeds`` value (``train.seed``; all
else from ``--params``) through the ``nast train`` / ``nast evaluate`` commands, on the data and
layer weights the pipeline already built (run ``make demo`` first), in ``--work`` (MLflow off).
Prints one line per (method, seed), then per method the mean and standard deviation over seeds
of the negated accuracy, the affirmative accuracy and the gap, and per seed the paired
difference of the first two methods on the same questions. Besides the trainer's methods,
``--methods`` takes ``nast-reversed``: nast with the CTE's layer weights reversed over the text
blocks (:func:`nast.train.trainer.reversed_layer_weights`; the same learning-rate budget on the
opposite layers), the control for whether the CTE's choice of layers matters. Ends with the line

    <m1>_minus_<m2> negated_diff mean=<..> sd=<..> over <n> seeds; gap_diff mean=<..> sd=<..>

Usage::

    python benchmarks/seed_spread.py --seeds 0 1 2 3 --methods nast lora_uniform
    python benchmarks/seed_spread.py --seeds 0 1 2 3 4 --methods nast nast-reversed --work reports/seed_spread_rev
"""

from __future__ import annotations

import argparse
import json
import sys
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
import yaml
from pipeline_runs import add_artifact_arguments, prepare_work, train_and_evaluate


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--params", default="params.yaml")
    ap.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2, 3])
    ap.add_argument("--methods", nargs="+", default=["nast", "lora_uniform"])
    ap.add_argument("--work", default="reports/seed_spread", help="scratch folder (params, models, eval JSON)")
    ap.add_argument("--jobs", type=int, default=2, help="train/evaluate processes at once")
    add_artifact_arguments(ap)
    args = ap.parse_args()

    from nast.evaluate.metrics import compare_hits

    work = Path(args.work)
    base = yaml.safe_load(Path(args.params).read_text())
    prepare_work(work, [args.params, base["model"]["checkpoint"], args.cohort, args.benchmark, args.contextual,
                        args.layer_weights])

    controls = {}  # pseudo-method -> (trainer method, layer weights file)
    if "nast-reversed" in args.methods:
        from nast.train.trainer import read_layer_weights, reversed_layer_weights

        rev = work / "layer_weights_reversed.csv"
        rev_lw = reversed_layer_weights(read_layer_weights(args.layer_weights))
        rev.write_text(rev_lw.write_csv(float_precision=8))
        controls["nast-reversed"] = ("nast", rev)
        print(f"nast-reversed: alpha by block {rev_lw.filter(rev_lw['layer'] >= 1)['alpha'].to_list()}")

    def one(method: str, seed: int) -> dict:
        model, out = work / "models" / f"{method}-seed{seed}", work / "eval" / f"{method}-seed{seed}.json"
        trainer_method, lw = controls.get(method, (method, None))
        train_and_evaluate(args, work / f"params_seed{seed}.yaml", trainer_method, model, out,
                           work / f"{method}-seed{seed}.log", layer_weights=lw)
        return json.loads(out.read_text())

    for seed in args.seeds:  # one params file per seed, written before the workers start
        (work / f"params_seed{seed}.yaml").write_text(
            yaml.safe_dump({**base, "train": {**base["train"], "seed": seed}}))
    jobs = [(m, s) for s in args.seeds for m in args.methods]
    with ThreadPoolExecutor(args.jobs) as pool:
        results = dict(zip(jobs, pool.map(lambda ms: one(*ms), jobs)))

    print("method          seed  negated  affirmative  gap     claim   R@5")
    for (m, s), r in results.items():
        print(f"{m:15s} {s:4d}  {r['mcq_negated_acc']:.3f}    {r['mcq_affirmative_acc']:.3f}        "
              f"{r['mcq_gap']:+.3f}  {r['claim_acc']:.3f}  {r['retrieval_r5']:.3f}")
    print()
    for m in args.methods:
        v = {k: np.array([results[(m, s)][k] for s in args.seeds]) for k in
             ("mcq_negated_acc", "mcq_affirmative_acc", "mcq_gap")}
        print(f"{m:15s} negated {v['mcq_negated_acc'].mean():.3f} ± {v['mcq_negated_acc'].std(ddof=1):.3f}, "
              f"affirmative {v['mcq_affirmative_acc'].mean():.3f} ± {v['mcq_affirmative_acc'].std(ddof=1):.3f}, "
              f"gap {v['mcq_gap'].mean():+.3f} ± {v['mcq_gap'].std(ddof=1):.3f} "
              f"(mean ± sd over {len(args.seeds)} seeds)")
    if len(args.methods) >= 2:
        a, b = args.methods[:2]
        nd, gd = [], []
        print()
        for s in args.seeds:
            c = compare_hits(results[(a, s)]["mcq_hits"], results[(b, s)]["mcq_hits"], 1000, 0)
            if c is None:
                raise SystemExit(f"seed {s}: {a} and {b} were scored on different questions")
            nd.append(c["negated_diff"])
            gd.append(c["gap_diff"])
            print(f"seed {s}: {a} - {b}: negated {c['negated_diff']:+.3f} ({c['negated_diff_lo']:+.3f}, "
                  f"{c['negated_diff_hi']:+.3f}), gap {c['gap_diff']:+.3f} ({c['gap_diff_lo']:+.3f}, "
                  f"{c['gap_diff_hi']:+.3f})  [paired bootstrap over the questions]")
        nd, gd = np.array(nd), np.array(gd)

        def sd(x):
            return x.std(ddof=1) if x.size > 1 else float("nan")

        print(f"\n{a}_minus_{b} negated_diff mean={nd.mean():+.3f} sd={sd(nd):.3f} over {nd.size} seeds; "
              f"gap_diff mean={gd.mean():+.3f} sd={sd(gd):.3f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
