"""How stable are the CTE layer weights? Patching unit x averaging of the probing pairs.

Traces ALL verified probing pairs of a split once per ``trace.unit`` (``state``: one hidden
state at a time, the layer's CTE the mean over positions; ``block``: the whole write of one text
block), with the same pairs, model and code as ``nast trace``, then aggregates the per-example
layer CTEs with both ``trace.example_weighting`` choices and prints, for each combination:

* the per-layer CTE and its bootstrap 95 % half-width (resampling the pairs),
* the share of bootstrap resamples that keep the same highest / lowest-CTE text block,
* what NAST trains with: the per-block factors ``alpha_l^beta / mean`` (``nast.beta``,
  ``nast.normalize: mean``), and how much they move between two disjoint random halves of the
  pairs and between a random subset of ``--subset`` pairs and all pairs,
* for the state unit, the per-layer mean over pairs of ``sum_p CTE(l, p)`` (to first order 1 at
  every layer, which is why its per-layer mean carries little layer signal).

It ends with one line, all figures measured in this run on the same pairs::

    halves_change state=<..> block=<..> (weighting <w>) top_block_agreement state=<..> block=<..>

where ``halves_change`` is the mean |change| of the NAST block factors between disjoint halves
of the pairs under the weighting of ``trace.example_weighting``.

Usage (after ``make demo``, or with ``params.model`` pointing at a real checkpoint)::

    python benchmarks/cte_stability.py --params params.yaml --benchmark data/processed/benchmark.parquet
"""

from __future__ import annotations

import argparse
import time

import numpy as np


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--params", default="params.yaml")
    ap.add_argument("--benchmark", default="data/processed/benchmark.parquet")
    ap.add_argument("--split", default="train")
    ap.add_argument("--direction", choices=("caption", "foil"), default=None, help="default: trace.direction")
    ap.add_argument("--subset", type=int, default=64, help="subset size compared with all pairs")
    ap.add_argument("--boot", type=int, default=1000)
    ap.add_argument("--draws", type=int, default=200, help="random halves / subsets drawn")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--unit", choices=("state", "block"), default=None, help="trace one unit only (default: both)")
    args = ap.parse_args()

    import torch

    from nast.config import load_params
    from nast.io import read_parquet
    from nast.models import load_model
    from nast.models.data import load_image
    from nast.trace.cte import (
        alpha_stability,
        bootstrap_layer_cte,
        layer_cte,
        minmax_alpha,
        per_layer_example_cte,
        trace_pairs,
    )
    from nast.trace.pairs import probing_pairs

    torch.set_num_threads(args.threads)
    params = load_params(args.params)
    tp = params["trace"]
    direction = args.direction or tp["direction"]
    pairs, _, _ = probing_pairs(read_parquet(args.benchmark, "benchmark"), args.split)
    vl = load_model(params["model"])
    images = torch.stack([vl.preprocess(load_image(p)) for p in pairs["image_path"].to_list()])
    aff, neg = pairs["affirmative"].to_list(), pairs["negated"].to_list()
    src, tgt = (aff, neg) if direction == "caption" else (neg, aff)
    units = (args.unit,) if args.unit else ("state", "block")
    rng = np.random.default_rng(0)
    beta = float(params["nast"]["beta"])
    weight_default = tp["example_weighting"]
    summary = {}
    for unit in units:
        t0 = time.perf_counter()
        res = trace_pairs(vl, images, src, tgt, min_abs_d=float(tp["min_abs_d"]),
                          batch_size=int(tp["batch_size"]), unit=unit)
        print(f"\n=== unit={unit}: traced {len(res['kept'])} of {pairs.height} pairs ({res['n_skipped_small_d']} "
              f"with |d| < {tp['min_abs_d']}) in {time.perf_counter() - t0:.1f} s; direction={direction}; "
              f"{int((res['d'] < 0).sum())} pairs with d < 0")
        r = per_layer_example_cte(res)
        d = res["d"][res["kept"]]
        layers = res["layers"]
        E = r.shape[0]
        halves = [rng.permutation(E) for _ in range(args.draws)]
        subsets = [rng.choice(E, size=min(args.subset, E), replace=False) for _ in range(args.draws)]
        blocks = [i for i, layer in enumerate(layers) if layer >= 1]
        if unit == "state":
            sums = (res["cte"] * res["valid"][:, None, :]).sum(-1).mean(0)
            print("  mean over pairs of sum_p CTE(l, p): "
                  + ", ".join(f"layer {layer} {v:.3f}" for layer, v in zip(layers, sums)))

        def factors(idx, how):
            a = minmax_alpha(layer_cte(r[idx], d[idx], how))[blocks] ** beta
            return a / a.mean() if a.mean() > 0 else np.ones(len(blocks))

        for how in ("uniform", "abs_d"):
            full = layer_cte(r, d, how)
            boots = bootstrap_layer_cte(r, d, how, args.boot, seed=0)
            lo, hi = np.percentile(boots, [2.5, 97.5], axis=0)
            stab = alpha_stability(full, boots, layers)
            a_full = minmax_alpha(full)
            f_full = factors(np.arange(E), how)
            half = np.mean([np.abs(factors(h[: E // 2], how) - factors(h[E // 2:], how)).mean() for h in halves])
            sub = np.mean([np.abs(factors(x, how) - f_full).mean() for x in subsets])
            summary[(unit, how)] = {"half": half, **stab}
            print(f"\n{unit} / {how}:")
            print("  layer  cte       95% CI               alpha")
            for i, layer in enumerate(layers):
                print(f"  {layer:5d}  {full[i]:+.4f}  [{lo[i]:+.4f}, {hi[i]:+.4f}]  {a_full[i]:.3f}")
            print(f"  top block agreement {stab['top_block_agreement']:.2f}, bottom block agreement "
                  f"{stab['bottom_block_agreement']:.2f}")
            print(f"  NAST block factors (beta={beta:g}, mean-normalised): {np.round(f_full, 2).tolist()}; mean "
                  f"|change| between halves {half:.2f}, between {args.subset} pairs and all {sub:.2f}")
    print()
    print("halves_change " + " ".join(f"{u}={summary[(u, weight_default)]['half']:.2f}" for u in units)
          + f" (weighting {weight_default}) top_block_agreement "
          + " ".join(f"{u}={summary[(u, weight_default)]['top_block_agreement']:.2f}" for u in units))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
