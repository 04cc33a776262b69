"""Benchmark: attribution throughput of ``nast evaluate-grounding`` (images per second).

Times every method of :mod:`nast.grounding.attribution` on a batch of random images with the
settings of ``params.grounding`` (occlusion grid, random masks, integrated-gradients steps) and
prints one line per method, then ``images_per_s <method>=... ...`` on the last line.

    python benchmarks/bench_attribution.py                       # demo architecture, CPU, 2 threads
    python benchmarks/bench_attribution.py --model params        # the model of params.yaml (e.g. the demo base)
    python benchmarks/bench_attribution.py --arch ViT-B-16 --device cuda --images 32   # 224 px ViT-B/16, random

``--arch`` names an open_clip model config shipped in the open_clip package (random weights;
nothing is downloaded).
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[1]


def build_model(args):
    from nast.models import load_model
    from nast.models.testing import save_tiny_open_clip

    if args.model == "params":
        from nast.config import load_params

        return load_model(load_params(args.params)["model"], args.device)
    if args.arch == "nast-tiny-clip":
        cfg = ROOT / "src" / "nast" / "models" / "configs" / "nast-tiny-clip.json"
    else:
        import open_clip

        cfg = Path(open_clip.__file__).parent / "model_configs" / f"{args.arch}.json"
        if not cfg.is_file():
            raise SystemExit(f"no open_clip config {cfg}")
    tmp = Path(tempfile.mkdtemp(prefix="bench_attr_"))
    return load_model(save_tiny_open_clip(cfg, tmp / "m", seed=0), args.device)


def main() -> int:
    from nast.config import load_params
    from nast.grounding.attribution import METHODS, attribute

    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--params", default=str(ROOT / "params.yaml"))
    ap.add_argument("--model", choices=["random", "params"], default="random")
    ap.add_argument("--arch", default="nast-tiny-clip", help="open_clip config for --model random")
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--images", type=int, default=16)
    ap.add_argument("--batch", type=int, default=16)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--methods", nargs="+", default=list(METHODS))
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    cfg = load_params(args.params)["grounding"]
    vl = build_model(args)
    vl.model.eval()
    for p in vl.model.parameters():
        p.requires_grad_(False)
    g = torch.Generator().manual_seed(0)
    pixels = torch.randn(args.images, 3, vl.image_size, vl.image_size, generator=g).to(vl.device)
    with torch.no_grad():
        dim = vl.encode_image(pixels[:1]).shape[-1]
    text = torch.nn.functional.normalize(torch.randn(args.images, dim, generator=g), dim=-1).to(vl.device)
    print(f"model={vl!r} device={vl.device} images={args.images} input={vl.image_size}px "
          f"occlusion_cells={cfg['occlusion_cells']} n_masks={cfg['n_masks']} ig_steps={cfg['ig_steps']}")
    rates = {}
    for name in args.methods:
        attribute(name, vl, pixels[:1], text[:1], cfg)  # warm-up
        if vl.device.type == "cuda":
            torch.cuda.synchronize()
        t0 = time.perf_counter()
        out = None
        for i in range(0, args.images, args.batch):
            out = attribute(name, vl, pixels[i : i + args.batch], text[i : i + args.batch], cfg, seed=i)
        if vl.device.type == "cuda":
            torch.cuda.synchronize()
        dt = time.perf_counter() - t0
        if out is None:
            print(f"{name}: not available for this architecture")
            continue
        rates[name] = args.images / dt
        print(f"{name}: {dt:.2f} s for {args.images} images ({rates[name]:.1f} images/s)")
    print("images_per_s " + " ".join(f"{k}={v:.1f}" for k, v in rates.items()))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
