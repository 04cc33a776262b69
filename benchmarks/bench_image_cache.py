"""What the pre-resized image cache saves: per image, the model input from a MIMIC-CXR-JPG-sized
JPEG (decode + resize + crop + normalise, ``VLModel.preprocess``) against the same tensor from the
cache (``VLModel.from_crop`` of the stored uint8 crop), and the cost of building the cache.

    PYTHONPATH=src python benchmarks/bench_image_cache.py [--images 48] [--width 2544 --height 3056] [--size 224]

Synthetic grayscale JPEGs at MIMIC-CXR-JPG's typical size (smooth noise, quality 95, ~1-2 MB each
like the real files); one process, the DataLoader in the main process (``NAST_IMAGE_WORKERS`` 0).
Prints the per-image milliseconds of both paths, the cache's bytes per image, the build time, and
ends with ``jpeg_ms=J cache_ms=C ratio=R`` (R = J / C). Checks that both give the same tensors.
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

import numpy as np


def _jpegs(folder: Path, n: int, width: int, height: int, seed: int = 0) -> list[str]:
    from PIL import Image, ImageFilter

    rng = np.random.default_rng(seed)
    paths = []
    for i in range(n):
        small = (rng.random((height // 16, width // 16)) * 255).astype(np.uint8)
        img = Image.fromarray(small, mode="L").resize((width, height), Image.BICUBIC)
        img = img.filter(ImageFilter.GaussianBlur(2))
        noise = Image.fromarray((rng.random((height, width)) * 24).astype(np.uint8), mode="L")
        img = Image.blend(img, noise, 0.1)
        p = folder / f"img{i:04d}.jpg"
        img.save(p, quality=95)
        paths.append(str(p))
    return paths


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--images", type=int, default=48)
    ap.add_argument("--width", type=int, default=2544)
    ap.add_argument("--height", type=int, default=3056)
    ap.add_argument("--size", type=int, default=224, help="the model's input size (the cache's crop size)")
    args = ap.parse_args(argv)

    import torch
    from PIL import Image

    from nast.models import image_cache as C
    from nast.models.base import OPENAI_MEAN, OPENAI_STD, VLModel

    torch.set_num_threads(1)
    vl = VLModel(torch.nn.Identity(), image_size=args.size, mean=OPENAI_MEAN, std=OPENAI_STD)
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        paths = _jpegs(tmp, args.images, args.width, args.height)
        mb = sum(Path(p).stat().st_size for p in paths) / len(paths) / 2**20
        print(f"{args.images} JPEGs of {args.width}x{args.height} px, {mb:.2f} MB each on average")

        t0 = time.perf_counter()
        C.write_cache(tmp / "cache", {"train": paths}, args.size, workers=0)
        build = (time.perf_counter() - t0) / len(paths) * 1e3
        cache = C.ImageCache(tmp / "cache")
        per_image = sum((tmp / "cache" / s["file"]).stat().st_size for s in cache.manifest["shards"]) / len(paths)

        t0 = time.perf_counter()
        from_jpeg = []
        for p in paths:
            with Image.open(p) as img:
                from_jpeg.append(vl.preprocess(img))
        jpeg_ms = (time.perf_counter() - t0) / len(paths) * 1e3

        t0 = time.perf_counter()
        from_cache = [vl.from_crop(cache.crop(p)) for p in paths]
        cache_ms = (time.perf_counter() - t0) / len(paths) * 1e3
        same = all(torch.equal(a, b) for a, b in zip(from_jpeg, from_cache))
    print(f"build the cache: {build:.1f} ms per image; {per_image / 1e3:.1f} kB per image in the cache "
          f"(x 377,110 MIMIC-CXR-JPG images = {per_image * 377_110 / 1e9:.1f} GB)")
    print(f"model input from the JPEG: {jpeg_ms:.2f} ms per image; from the cache: {cache_ms:.3f} ms per image; "
          f"same tensors: {same}")
    if not same:
        raise SystemExit("the cache's tensors differ from the JPEGs'")
    print(f"jpeg_ms={jpeg_ms:.2f} cache_ms={cache_ms:.3f} ratio={jpeg_ms / cache_ms:.1f}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
