"""The pre-resized image cache (``nast cache-images``, CheXzero-style): every image of the cohort
(and the grounding table's counterfactuals and controls) decoded once, at the model's input size.

What is stored
--------------
The image stages' preprocessing (:meth:`nast.models.base.VLModel.preprocess`) is: luminance, a
bicubic antialiased resize of the shorter side to the input size, a centre crop, then scaling to
[0, 1], channel replication and normalisation. The cache stores the first part's output, the
``uint8`` grayscale crop (:func:`nast.models.base.grayscale_crop`), so a stage that reads it gets
the same tensor as from the JPEG (:meth:`VLModel.from_crop`, the same float operations), at one
byte per pixel: 224 px x 377k MIMIC-CXR-JPG images = 19 GB instead of decoding ~2500 x 3000 px
JPEGs (~10 ms each) again for every base model and every pixel-reading stage.

Layout of the folder (:data:`CACHE_DIR` in the DAG)::

    manifest.json          size, n, n per split, the shards (file, split, n, sha256 of their paths)
    index.parquet          image_path (sorted), shard (int), row (int)
    {split}-{k:04d}.npy    uint8 [n, size, size], at most SHARD images each (np.load mmap_mode="r")
    {split}-{k:04d}.json   the shard's paths digest and size (resume)

Shards are the cohort's splits (``train``, ``validate``, ``test``, in path order) cut every
:data:`SHARD` images, and a ``grounding`` split for the counterfactual and control images that are
not cohort images. Each shard is written atomically with its sidecar, so a killed run resumes: a
rerun keeps every shard whose sidecar matches its paths and size and writes the rest. Decoding is
streamed through a torch DataLoader (env ``NAST_IMAGE_WORKERS`` worker processes): the memory of
the stage does not grow with the number of images.

Reading: :func:`open_cache` opens the folder and :meth:`nast.models.base.VLModel.use_image_cache`
refuses a cache at another size than the model's input (naming ``data.image_cache_size`` and the
file); an image the cache lacks is read from its file. ``nast cache-images`` already refuses to
build a cache at another size than the one the model's config files declare.
"""

from __future__ import annotations

import hashlib
import json
import logging
from pathlib import Path
from typing import Iterable, Sequence

import numpy as np

from nast.errors import StageError

log = logging.getLogger(__name__)

#: the cache's DAG path (docs/CONTRACTS.md)
CACHE_DIR = "data/processed/image_cache"
MANIFEST = "manifest.json"
INDEX = "index.parquet"
#: images per shard file (at 224 px: 0.8 GB)
SHARD = 16384
#: the split of the grounding table's images that are not cohort images
GROUNDING_SPLIT = "grounding"
#: the --image-cache option's help, the same in every stage that reads pixels
ARGUMENT_HELP = ("optional pre-resized image cache (nast cache-images, data/processed/image_cache): the crops of the "
                 "images it holds are read instead of their JPEGs (the same pixels)")


def _digest(paths: Iterable[str]) -> str:
    h = hashlib.sha256()
    for p in paths:
        h.update(p.encode() + b"\0")
    return h.hexdigest()


def plan(paths_by_split: dict[str, Sequence[str]], shard: int = SHARD) -> list[dict]:
    """The shards: per split (sorted by name), its sorted unique paths cut every ``shard``."""
    if shard < 1:
        raise StageError(f"image cache: shard size must be >= 1, got {shard}")
    out = []
    for split in sorted(paths_by_split):
        paths = sorted(set(paths_by_split[split]))
        for k, i in enumerate(range(0, len(paths), shard)):
            chunk = paths[i : i + shard]
            out.append({"file": f"{split}-{k:04d}.npy", "split": split, "n": len(chunk),
                        "paths_sha256": _digest(chunk), "paths": chunk})
    return out


class _Crops:
    """Map-style dataset: item i = the uint8 [1, size, size] crop of ``paths[i]``."""

    def __init__(self, paths: Sequence[str], size: int):
        self.paths = list(paths)
        self.size = int(size)

    def __len__(self) -> int:
        return len(self.paths)

    def __getitem__(self, i: int):
        from PIL import Image

        from nast.models.base import grayscale_crop

        path = Path(self.paths[i])
        if not path.is_file():
            raise StageError(f"image not found: {path}")
        try:
            with Image.open(path) as img:
                return grayscale_crop(img, self.size)
        except OSError as exc:
            raise StageError(f"image unreadable: {path}: {exc}") from exc


def _crop_batches(paths: Sequence[str], size: int, batch: int = 256, workers: int | None = None):
    from torch.utils.data import DataLoader

    from nast.models.embeddings import loader_workers

    workers = loader_workers() if workers is None else workers
    loader = DataLoader(_Crops(paths, size), batch_size=batch, shuffle=False, num_workers=workers,
                        drop_last=False, prefetch_factor=2 if workers else None)
    return iter(loader)


def _sidecar(folder: Path, entry: dict) -> Path:
    return folder / (entry["file"][: -len(".npy")] + ".json")


def _shard_done(folder: Path, entry: dict, size: int) -> bool:
    side, arr = _sidecar(folder, entry), folder / entry["file"]
    if not (side.is_file() and arr.is_file()):
        return False
    try:
        meta = json.loads(side.read_text())
        shape = np.load(arr, mmap_mode="r").shape
    except (OSError, ValueError):
        return False
    return (meta.get("paths_sha256") == entry["paths_sha256"] and meta.get("size") == size
            and tuple(shape) == (entry["n"], size, size))


def write_cache(out_dir: str | Path, paths_by_split: dict[str, Sequence[str]], size: int,
                shard: int = SHARD, workers: int | None = None) -> dict:
    """Write (or resume) the cache of ``paths_by_split`` at ``size`` px; returns the manifest.

    Counts reconcile: every path is in exactly one shard and one index row (an image listed under
    two splits is a StageError naming it)."""
    import polars as pl

    from nast import io

    if size < 16:
        raise StageError(f"image cache: size must be >= 16 px, got {size}")
    seen: dict[str, str] = {}
    for split, paths in paths_by_split.items():
        for p in paths:
            if seen.setdefault(p, split) != split:
                raise StageError(f"image cache: {p} is in two splits ({seen[p]!r} and {split!r})")
    folder = Path(out_dir)
    folder.mkdir(parents=True, exist_ok=True)
    shards = plan(paths_by_split, shard)
    kept = written = 0
    for entry in shards:
        if _shard_done(folder, entry, size):
            kept += 1
            continue
        with io.atomic_write(folder / entry["file"]) as tmp:
            arr = np.lib.format.open_memmap(tmp, mode="w+", dtype=np.uint8, shape=(entry["n"], size, size))
            i = 0
            for crops in _crop_batches(entry["paths"], size, workers=workers):
                arr[i : i + crops.shape[0]] = crops[:, 0].numpy()
                i += crops.shape[0]
            if i != entry["n"]:
                raise StageError(f"image cache: {entry['file']}: {i} crops for {entry['n']} images")
            arr.flush()
            del arr
        io.write_json({"paths_sha256": entry["paths_sha256"], "size": size, "n": entry["n"]},
                      _sidecar(folder, entry))
        written += 1
        log.info("image cache: %s (%d images) written", entry["file"], entry["n"])
    expected = {e["file"] for e in shards} | {_sidecar(folder, e).name for e in shards} | {MANIFEST, INDEX}
    for stale in sorted(p for p in folder.iterdir() if p.is_file() and p.name not in expected):
        stale.unlink()  # shards of an earlier plan (other paths or shard size)
    rows = [(p, s, r) for s, e in enumerate(shards) for r, p in enumerate(e["paths"])]
    rows.sort()
    with io.atomic_write(folder / INDEX) as tmp:
        pl.DataFrame(rows, schema={"image_path": pl.Utf8, "shard": pl.Int32, "row": pl.Int32},
                     orient="row").write_parquet(tmp)
    n_by_split: dict[str, int] = {}
    for e in shards:
        n_by_split[e["split"]] = n_by_split.get(e["split"], 0) + e["n"]
    manifest = {"size": int(size), "dtype": "uint8", "layout": "[n, size, size] grayscale crop (grayscale_crop)",
                "n": len(rows), "n_by_split": n_by_split, "shard_size": int(shard),
                "shards": [{k: e[k] for k in ("file", "split", "n", "paths_sha256")} for e in shards]}
    io.write_json(manifest, folder / MANIFEST)
    log.info("image cache: %d images in %d shards (%d kept from an earlier run, %d written) at %d px -> %s",
             len(rows), len(shards), kept, written, size, folder)
    return {**manifest, "shards_kept": kept, "shards_written": written}


class ImageCache:
    """An opened cache: :meth:`crop` gives an image's stored uint8 crop, or None if it lacks it."""

    def __init__(self, folder: str | Path):
        import polars as pl

        self.folder = Path(folder)
        for name in (MANIFEST, INDEX):
            if not (self.folder / name).is_file():
                raise StageError(f"image cache: {self.folder / name} not found (write it with nast cache-images)")
        self.manifest = json.loads((self.folder / MANIFEST).read_text())
        self.size = int(self.manifest["size"])
        files = [s["file"] for s in self.manifest["shards"]]
        for f in files:
            if not (self.folder / f).is_file():
                raise StageError(f"image cache: shard {self.folder / f} not found (rerun nast cache-images)")
        self._files = files
        self._arrays: dict[int, np.ndarray] = {}
        index = pl.read_parquet(self.folder / INDEX)
        if index.height != int(self.manifest["n"]):
            raise StageError(f"image cache: {index.height} rows in {self.folder / INDEX}, manifest says "
                             f"{self.manifest['n']}")
        self.row = {p: (int(s), int(r)) for p, s, r in index.iter_rows()}

    def __len__(self) -> int:
        return len(self.row)

    def __contains__(self, path: str) -> bool:
        return path in self.row

    def _array(self, shard: int) -> np.ndarray:
        arr = self._arrays.get(shard)
        if arr is None:
            arr = np.load(self.folder / self._files[shard], mmap_mode="r")
            self._arrays[shard] = arr
        return arr

    def crop(self, path: str):
        """uint8 [1, size, size] tensor of ``path`` (a copy), or None when the cache lacks it."""
        import torch

        where = self.row.get(path)
        if where is None:
            return None
        return torch.from_numpy(np.array(self._array(where[0])[where[1]], dtype=np.uint8))[None]


def open_cache(folder: str | Path | None) -> ImageCache | None:
    """The cache at ``folder`` (None: None). :meth:`VLModel.use_image_cache` refuses one at
    another size than the model's input."""
    return ImageCache(folder) if folder else None


__all__ = ["CACHE_DIR", "ImageCache", "open_cache", "plan", "write_cache"]
