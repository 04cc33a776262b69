"""Streaming image embeddings and the per-base-model embedding store (``nast embed-images``).

Streaming
---------
Images are read, decoded and preprocessed (``vl.preprocess``) one batch at a time by a torch
``DataLoader`` (:func:`image_batches`; worker processes: env ``NAST_IMAGE_WORKERS``, default 0 =
in the main process; pinned memory when the model is on CUDA), in the given order, so the peak
memory of a stage does not grow with the number of images (only the [N, D] embeddings do). With a
pre-resized cache attached to the model (:meth:`VLModel.use_image_cache`, ``nast cache-images``)
the cached images' crops are read instead of their files (the same tensors).
The batches (``batch_size`` 64, in path order) are the ones the stages used before streaming,
so the embeddings are the same numbers.

The store
---------
With the vision tower frozen (every method unless ``train.train_vision``), every training job,
evaluation and validation pass embeds the same images with the same base tower. ``nast
embed-images`` embeds every image once per base model into a folder (:data:`EMBEDDINGS_DIR`)::

    embeddings.npy    float32 [N, D], row i = the image of index.parquet row i
    index.parquet     image_path (sorted, unique)
    manifest.json     n, dim, family, the base model's fingerprint (sha256 of its checkpoint and
                      config files), batch size

:func:`open_store` refuses a store whose fingerprint differs from the base model a stage loads,
naming the file that differs; :meth:`EmbeddingStore.lookup` refuses a path the store lacks.
"""

from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path
from typing import Any, Iterator, Sequence

import numpy as np

from nast.errors import StageError

#: the store's DAG path (docs/CONTRACTS.md)
EMBEDDINGS_DIR = "data/processed/image_embeddings"
MANIFEST = "manifest.json"
ARRAY = "embeddings.npy"
INDEX = "index.parquet"
#: images per encoder batch (the stages' historical batch; the same batches give the same floats)
BATCH = 64


def loader_workers() -> int:
    """DataLoader worker processes (env ``NAST_IMAGE_WORKERS``, default 0). Results do not depend on it."""
    raw = os.environ.get("NAST_IMAGE_WORKERS", "0").strip() or "0"
    try:
        n = int(raw)
    except ValueError:
        raise StageError(f"NAST_IMAGE_WORKERS must be an integer >= 0, got {raw!r}") from None
    if n < 0:
        raise StageError(f"NAST_IMAGE_WORKERS must be an integer >= 0, got {raw!r}")
    return n


class ImageFiles:
    """Map-style dataset: item i = ``preprocess(open(paths[i]))`` (a [C, H, W] tensor), or, for an
    image the pre-resized ``cache`` holds (:class:`nast.models.image_cache.ImageCache`),
    ``from_crop(cache.crop(paths[i]))`` -- the same tensor without decoding the file.

    A missing or unreadable file is a :class:`StageError` naming it (``what`` says which kind)."""

    def __init__(self, preprocess, paths: Sequence[str], what: str = "image", cache=None, from_crop=None):
        self.preprocess = preprocess
        self.paths = list(paths)
        self.what = what
        self.cache = cache
        self.from_crop = from_crop
        if cache is not None and from_crop is None:
            raise ValueError("ImageFiles: a cache needs from_crop")

    def __len__(self) -> int:
        return len(self.paths)

    def __getitem__(self, i: int):
        from PIL import Image

        if self.cache is not None:
            crop = self.cache.crop(self.paths[i])
            if crop is not None:
                return self.from_crop(crop)
        path = Path(self.paths[i])
        if not path.is_file():
            raise StageError(f"{self.what} not found: {path}")
        try:
            with Image.open(path) as img:
                return self.preprocess(img)
        except OSError as exc:
            raise StageError(f"{self.what} unreadable: {path}: {exc}") from exc


def _on_cuda(vl) -> bool:
    return str(getattr(vl, "device", "cpu")).startswith("cuda")


def image_batches(vl, paths: Sequence[str], batch_size: int = BATCH, what: str = "image",
                  workers: int | None = None) -> Iterator:
    """Pixel batches [b, C, H, W] of ``paths`` in order (``batch_size`` each, the last shorter);
    images in the model's pre-resized cache (``vl.image_cache``, :meth:`VLModel.use_image_cache`)
    come from it, the rest from their files."""
    from torch.utils.data import DataLoader

    if not paths:
        return iter(())
    workers = loader_workers() if workers is None else workers
    cache = getattr(vl, "image_cache", None)
    data = ImageFiles(vl.preprocess, paths, what, cache=cache, from_crop=vl.from_crop if cache is not None else None)
    loader = DataLoader(data, batch_size=batch_size, shuffle=False,
                        num_workers=workers, pin_memory=_on_cuda(vl), drop_last=False,
                        prefetch_factor=2 if workers else None, persistent_workers=False)
    return iter(loader)


def load_pixels(vl, paths: Sequence[str], what: str = "image"):
    """[len(paths), C, H, W] pixels of a few images (one training batch), through the same loader."""
    import torch

    batches = list(image_batches(vl, paths, batch_size=max(len(paths), 1), what=what, workers=0))
    return batches[0] if batches else torch.empty(0)


def embed_paths(vl, paths: Sequence[str], batch_size: int = BATCH, what: str = "image"):
    """[N, D] image embeddings (on ``vl.device``) of ``paths`` in order, streamed in batches under
    ``no_grad``; the pixels of one batch at a time are in memory."""
    import torch

    out = []
    with torch.no_grad():
        for pixels in image_batches(vl, paths, batch_size, what):
            out.append(vl.encode_image(pixels.to(vl.device, non_blocking=True)))
    if not out:
        return torch.empty(0)
    return torch.cat(out)


# ------------------------------------------------------------------------------ fingerprint
def _sha256(path: Path) -> str:
    """sha256 of a model file's content. A torch zip checkpoint is hashed by its records with the
    archive's folder name stripped and its per-save ``serialization_id`` left out: ``torch.save``
    names the folder after the (temporary) file it wrote and draws a new id each time, so two saves
    of the same weights differ in bytes but not here. Any other file: its bytes."""
    import zipfile

    h = hashlib.sha256()
    if zipfile.is_zipfile(path):
        with zipfile.ZipFile(path) as zf:
            members = {n.split("/", 1)[-1]: n for n in zf.namelist()}
            for name in sorted(members):
                if name.endswith("serialization_id"):
                    continue
                full = members[name]
                h.update(name.encode() + b"\0")
                with zf.open(full) as fh:
                    for chunk in iter(lambda: fh.read(1 << 20), b""):
                        h.update(chunk)
        return h.hexdigest()
    with open(path, "rb") as fh:
        for chunk in iter(lambda: fh.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def base_fingerprint(model_params: dict[str, Any]) -> dict[str, Any]:
    """What the image embeddings depend on: the family, and per model file (``checkpoint``, and
    ``name`` where it is a config file or folder) its path and sha256 (a folder: every file's)."""
    out: dict[str, Any] = {"family": model_params["family"], "files": {}}
    for key in ("checkpoint", "name"):
        value = model_params[key]
        if not value:
            continue
        path = Path(str(value))
        if path.is_file():
            out["files"][key] = {"path": str(path), "sha256": _sha256(path)}
        elif path.is_dir():
            files = sorted(p for p in path.rglob("*") if p.is_file())
            out["files"][key] = {"path": str(path),
                                 "sha256": {str(p.relative_to(path)): _sha256(p) for p in files}}
        else:
            out["files"][key] = {"path": str(value), "sha256": None}  # a built-in config name
    return out


def check_fingerprint(stored: dict[str, Any], current: dict[str, Any], store: str | Path) -> None:
    """StageError naming the base-model file whose content differs from the store's."""
    if stored.get("family") != current.get("family"):
        raise StageError(f"{store}: image embeddings of a {stored.get('family')!r} model, but the base model is "
                         f"{current.get('family')!r}; rerun nast embed-images --base <the base model>")
    for key in sorted(set(stored.get("files", {})) | set(current.get("files", {}))):
        a, b = stored.get("files", {}).get(key), current.get("files", {}).get(key)
        if a is None or b is None or a.get("sha256") != b.get("sha256"):
            was = a["path"] if a else "nothing"
            now = b["path"] if b else "nothing"
            raise StageError(
                f"{store}: the image embeddings were computed from base model {key} {was}, which differs from "
                f"{now} (sha256 mismatch); rerun nast embed-images --base <the base model> "
                "(the vision tower changed, so the cached embeddings are stale)")


# ------------------------------------------------------------------------------------ store
def write_store(out_dir: str | Path, paths: Sequence[str], emb, fingerprint: dict[str, Any],
                extra: dict[str, Any] | None = None) -> dict[str, Any]:
    """Write the store (sorted unique ``paths``, their [N, D] ``emb``) atomically per file."""
    import polars as pl

    from nast import io

    out = Path(out_dir)
    arr = np.ascontiguousarray(np.asarray(emb.detach().float().cpu() if hasattr(emb, "detach") else emb,
                                          dtype=np.float32))
    if arr.shape[0] != len(paths):
        raise StageError(f"{len(paths)} image paths but {arr.shape[0]} embeddings")
    out.mkdir(parents=True, exist_ok=True)
    with io.atomic_write(out / ARRAY) as tmp, open(tmp, "wb") as fh:
        np.save(fh, arr, allow_pickle=False)
    with io.atomic_write(out / INDEX) as tmp:
        pl.DataFrame({"image_path": list(paths)}, schema={"image_path": pl.Utf8}).write_parquet(tmp)
    manifest = {"n": int(arr.shape[0]), "dim": int(arr.shape[1]) if arr.ndim == 2 else 0, "batch_size": BATCH,
                "base": fingerprint, "files": [ARRAY, INDEX], **(extra or {})}
    io.write_json(manifest, out / MANIFEST)
    return manifest


class EmbeddingStore:
    """An opened store: :meth:`lookup` gives the rows of a list of image paths."""

    def __init__(self, folder: str | Path):
        import polars as pl

        self.folder = Path(folder)
        for name in (MANIFEST, ARRAY, INDEX):
            if not (self.folder / name).is_file():
                raise StageError(f"image embeddings: {self.folder / name} not found (write it with nast embed-images)")
        self.manifest = json.loads((self.folder / MANIFEST).read_text())
        self.array = np.load(self.folder / ARRAY, mmap_mode="r")
        paths = pl.read_parquet(self.folder / INDEX)["image_path"].to_list()
        if len(paths) != self.array.shape[0]:
            raise StageError(f"{self.folder}: {len(paths)} paths in {INDEX} but {self.array.shape[0]} rows in {ARRAY}")
        self.row = {p: i for i, p in enumerate(paths)}

    def __len__(self) -> int:
        return len(self.row)

    def lookup(self, paths: Sequence[str], device=None):
        """[len(paths), D] float32 tensor (on ``device``) of the stored embeddings of ``paths``."""
        import torch

        missing = [p for p in paths if p not in self.row]
        if missing:
            raise StageError(f"{self.folder}: no image embedding for {len(missing)} image(s), e.g. {missing[0]} "
                             "(the store was written from other tables; rerun nast embed-images)")
        if not paths:
            return torch.empty(0)
        idx = np.fromiter((self.row[p] for p in paths), dtype=np.int64, count=len(paths))
        t = torch.from_numpy(np.asarray(self.array[idx], dtype=np.float32))
        return t.to(device) if device is not None else t


def open_store(folder: str | Path | None, model_params: dict[str, Any]) -> EmbeddingStore | None:
    """The store at ``folder`` checked against the base model ``model_params`` (None: None)."""
    if not folder:
        return None
    store = EmbeddingStore(folder)
    check_fingerprint(store.manifest.get("base", {}), base_fingerprint(model_params), store.folder)
    return store


def vision_trained(model_dir: str | Path | None) -> bool:
    """Did ``nast train`` train the vision tower of ``model_dir``? Its manifest.json says so
    (``vision_trained``: ``train.train_vision`` true or naming the method); a folder written before
    that field existed is read from its params_used.json (``train.train_vision: true``). Then the base
    model's image embeddings are not this model's."""
    if not model_dir:
        return False
    folder = Path(model_dir)
    try:
        manifest = json.loads((folder / "manifest.json").read_text())
    except (OSError, ValueError):
        return False
    if not manifest.get("trained"):
        return False
    if "vision_trained" in manifest:
        return bool(manifest["vision_trained"])
    try:
        used = json.loads((folder / "params_used.json").read_text())
    except (OSError, ValueError):
        return False
    return used.get("train", {}).get("train_vision") is True


def store_for_model(folder: str | Path | None, model_params: dict[str, Any],
                    model_dir: str | Path | None = None) -> EmbeddingStore | None:
    """The checked store for scoring the model of ``model_dir``; None without ``folder`` or when
    that model's vision tower was trained (its images are then embedded by the model itself)."""
    import logging

    if not folder:
        return None
    if vision_trained(model_dir):
        logging.getLogger(__name__).info("%s: vision tower trained (train.train_vision); not reading the base "
                                         "model's image embeddings %s", model_dir, folder)
        return None
    return open_store(folder, model_params)
