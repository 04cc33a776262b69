"""Benchmark: batched causal tracing (nast.trace.cte.patched_scores) vs the naive reference loop.

Both run in this process on the same model, the same probing pairs and the same image embeddings;
the script prints both timings and ends with the line

    speedup=<naive seconds / batched seconds> max_abs_diff=<max |score_batched - score_naive|>

Model: ``--model params`` uses ``params.model`` (e.g. the pretrained demo model), otherwise a
random model of ``--family`` (the demo architecture ``nast-tiny-clip`` for open_clip, the tiny
test configs for open_clip_hf / hf_clip). Usage::

    python benchmarks/bench_cte.py                      # demo architecture, 8 pairs, 2 threads
    python benchmarks/bench_cte.py --model params --params params.yaml
    python benchmarks/bench_cte.py --family hf_clip --examples 4
    python benchmarks/bench_cte.py --unit state          # hidden-state patches (default: block writes)

Each path is timed ``--repeat`` times (interleaved) and the fastest run is reported: on a shared
machine a single timing mostly measures the other jobs. The script also times the trace stage's
core (:func:`nast.trace.cte.trace_pairs`, ``trace.batch_size`` 16) on a random 12-block, 77-token
open_clip text encoder (``nast/models/tiny/open_clip_12layer.json``, width 64) over
``--trace-examples`` pairs (``--trace-examples 0`` skips it).

``--unit`` is ``trace.unit``: ``block`` traces the single positions plus the whole block write per
layer (the patches ``nast trace`` runs by default), ``state`` the single positions only.
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[1]

PAIRS = [  # (affirmative, negated) MCQ-style options
    ("Pleural effusion is present, the heart size is normal and the lungs are clear.",
     "There is pleural effusion, no cardiomegaly and no consolidation."),
    ("Sharp costophrenic angles, mild pulmonary edema.", "No pleural effusion, there is mild pulmonary edema."),
    ("The mediastinum is widened; the lungs are well expanded.", "Widened mediastinum, no atelectasis."),
    ("Large left pneumothorax with a normal cardiac silhouette.", "Large left pneumothorax, no cardiomegaly."),
    ("Support devices are in place and the lungs are clear.", "Support devices, no focal consolidation."),
    ("Normal heart size, right lower lobe opacity.", "No cardiomegaly, there is a right lower lobe opacity."),
    ("Fractured left rib, the pleural spaces are clear.", "Left rib fracture, no pleural effusion or pneumothorax."),
    ("Moderate cardiomegaly and bilateral edema.", "Cardiomegaly and edema, no pneumonia."),
]


def build_model(args):
    from nast.models import load_model
    from nast.models.testing import TINY_CONFIGS, save_tiny, save_tiny_open_clip

    if args.model == "params":
        from nast.config import load_params

        return load_model(load_params(args.params)["model"], args.device)
    tmp = Path(tempfile.mkdtemp(prefix="bench_cte_"))
    if args.family == "open_clip":
        cfg = ROOT / "src" / "nast" / "models" / "configs" / "nast-tiny-clip.json"
        return load_model(save_tiny_open_clip(cfg, tmp / "m", seed=0), args.device)
    return load_model(save_tiny(args.family, TINY_CONFIGS, tmp / "m", seed=0), args.device)


def time_trace_12_blocks(args) -> tuple[float, int, int, int]:
    """Fastest of ``--repeat`` runs of ``trace_pairs`` on the random 12-block, 77-token encoder."""
    from nast.models import load_model
    from nast.models.testing import TINY_CONFIGS, save_tiny_open_clip
    from nast.trace.cte import trace_pairs

    tmp = Path(tempfile.mkdtemp(prefix="bench_cte12_"))
    cfg = TINY_CONFIGS / "open_clip_12layer.json"
    vl = load_model(save_tiny_open_clip(cfg, tmp / "m", seed=0), args.device)
    pairs = (PAIRS * (1 + args.trace_examples // len(PAIRS)))[: args.trace_examples]
    images = torch.randn(len(pairs), vl.channels, vl.image_size, vl.image_size)
    best = float("inf")
    for _ in range(max(1, args.repeat)):
        t0 = time.perf_counter()
        trace_pairs(vl, images, [a for a, _ in pairs], [n for _, n in pairs], min_abs_d=0.0, batch_size=16,
                    unit=args.unit)
        _sync(vl)
        best = min(best, time.perf_counter() - t0)
    return best, len(pairs), vl.n_text_layers, int(vl.tokenize(["x"])["input_ids"].shape[1])


def _sync(vl) -> None:
    if str(vl.device).startswith("cuda"):
        torch.cuda.synchronize()


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--family", default="open_clip", choices=["open_clip", "open_clip_hf", "hf_clip"])
    ap.add_argument("--model", default="random", choices=["random", "params"])
    ap.add_argument("--params", default="params.yaml")
    ap.add_argument("--examples", type=int, default=8)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--device", default="cpu", help="cpu | cuda (timings synchronise the GPU)")
    ap.add_argument("--unit", default="block", choices=["block", "state"], help="trace.unit (default block)")
    ap.add_argument("--repeat", type=int, default=3, help="timed runs of each path; the fastest is reported")
    ap.add_argument("--trace-examples", type=int, default=64,
                    help="pairs traced on the 12-block, 77-token encoder (0 = skip)")
    args = ap.parse_args(argv)
    torch.set_num_threads(args.threads)
    torch.manual_seed(0)

    from nast.trace.cte import common_length, patched_scores, patched_scores_naive, position_masks

    vl = build_model(args)
    pairs = (PAIRS * (1 + args.examples // len(PAIRS)))[: args.examples]
    src = {k: v.to(vl.device) for k, v in vl.tokenize([a for a, _ in pairs]).items()}
    tgt = {k: v.to(vl.device) for k, v in vl.tokenize([n for _, n in pairs]).items()}
    with torch.no_grad():
        img = vl.encode_image(torch.randn(len(pairs), vl.channels, vl.image_size, vl.image_size, device=vl.device))
    P = common_length(vl, src, tgt)
    L = vl.n_text_layers
    mask = position_masks(P, args.unit, device=vl.device)
    print(f"model: {vl}  examples={len(pairs)}  positions={P}  layers={L + 1}  unit={args.unit}  "
          f"threads={args.threads}  device={vl.device}")
    print(f"patched runs: {len(pairs) * (L + 1) * mask.shape[0]}")

    patched_scores(vl, src, tgt, img, mask=mask, unit=args.unit)  # warm-up (allocator, lazy init)
    _sync(vl)
    t_fast = t_slow = float("inf")
    for _ in range(max(1, args.repeat)):  # interleaved, so both paths see the same load
        t0 = time.perf_counter()
        fast = patched_scores(vl, src, tgt, img, mask=mask, unit=args.unit)
        _sync(vl)
        t_fast = min(t_fast, time.perf_counter() - t0)
        t0 = time.perf_counter()
        slow = patched_scores_naive(vl, src, tgt, img, mask=mask, unit=args.unit)
        _sync(vl)
        t_slow = min(t_slow, time.perf_counter() - t0)
    diff = max(float((a.cpu() - b.cpu()).abs().max()) for a, b in zip(fast, slow))
    d = fast[1] - fast[2]
    cte_fast = (fast[0] - fast[2][:, None, None]) / d[:, None, None]
    cte_slow = (slow[0] - slow[2][:, None, None]) / (slow[1] - slow[2])[:, None, None]
    print(f"naive:   {t_slow:.3f} s  ({t_slow / len(pairs) * 1000:.1f} ms/example)")
    print(f"batched: {t_fast:.3f} s  ({t_fast / len(pairs) * 1000:.1f} ms/example)")
    print(f"max |CTE diff| = {float((cte_fast - cte_slow).abs().max()):.3g}  (min |d| = {float(d.abs().min()):.3g})")
    if args.trace_examples > 0:
        t_trace, n_pairs, n_layers, ctx = time_trace_12_blocks(args)
        print(f"trace stage (trace_pairs, batch 16, unit={args.unit}) on a {n_layers}-block, {ctx}-token text "
              f"encoder (width 64): {t_trace:.3f} s for {n_pairs} pairs ({t_trace / n_pairs * 1000:.1f} ms/pair)")
    print(f"speedup={t_slow / t_fast:.2f} max_abs_diff={diff:.3g}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
