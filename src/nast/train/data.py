"""Training/validation data for the NAST trainer, built from the pipeline tables (pure polars).

The training unit is a **caption group**: one image, one true contextual caption, and that
caption's minimal-edit foils (with their foil types), taken from ``contextual.parquet``
(one row per (caption, foil)). Only the requested split is used (the trainer uses ``train``;
per-epoch validation uses ``validate``). Groups are sorted by (dicom_id, caption) so the same
tables always give the same order; shuffling is done by the trainer with a seeded generator.
"""

from __future__ import annotations

from pathlib import Path

import polars as pl
import torch
from PIL import Image

from nast.errors import StageError
from nast.io import require_columns

CONTEXTUAL_COLUMNS = ("dicom_id", "image_path", "split", "caption", "foil", "foil_type")
BENCHMARK_COLUMNS = ("dicom_id", "image_path", "split", "correct", "conditions",
                     "option_A", "option_B", "option_C", "option_D",
                     "negated_A", "negated_B", "negated_C", "negated_D",
                     "affirmative_A", "affirmative_B", "affirmative_C", "affirmative_D")


def caption_groups(contextual: pl.DataFrame, split: str, source: str = "contextual.parquet") -> pl.DataFrame:
    """One row per (image, true caption): dicom_id, image_path, caption, foils list, foil_types list."""
    require_columns(contextual, CONTEXTUAL_COLUMNS, source)
    df = contextual.filter(pl.col("split") == split).sort(["dicom_id", "caption", "foil_type", "foil"])
    return (
        df.group_by(["dicom_id", "image_path", "caption"], maintain_order=True)
        .agg(pl.col("foil"), pl.col("foil_type"))
        .rename({"foil": "foils", "foil_type": "foil_types"})
        .sort(["dicom_id", "caption"])
    )


def benchmark_split(benchmark: pl.DataFrame, split: str, source: str = "benchmark.parquet") -> pl.DataFrame:
    require_columns(benchmark, BENCHMARK_COLUMNS, source)
    return benchmark.filter(pl.col("split") == split).sort(["dicom_id"])


def load_images(vl, paths: list[str], what: str = "image") -> torch.Tensor:
    """Preprocess each image once -> [N, C, H, W]; a missing/corrupt file stops with its path."""
    out = []
    for p in paths:
        path = Path(p)
        if not path.is_file():
            raise StageError(f"{what} not found: {path}")
        try:
            with Image.open(path) as img:
                out.append(vl.preprocess(img))
        except OSError as exc:
            raise StageError(f"{what} unreadable: {path}: {exc}") from exc
    if not out:
        return torch.empty(0)
    return torch.stack(out)


def not_negative_mask(image_keys: list[str], captions: list[str]) -> torch.Tensor:
    """[B,B] True where pair (i, j) is not a true negative: same image or identical caption text."""
    b = len(image_keys)
    m = torch.zeros(b, b, dtype=torch.bool)
    for i in range(b):
        for j in range(b):
            if i != j and (image_keys[i] == image_keys[j] or captions[i] == captions[j]):
                m[i, j] = True
    return m


def tokens_on_device(vl, texts: list[str]) -> dict:
    """Tokenize and move to the model's device (padding is trimmed later, by
    ``VLModel.encode_text_trimmed``, for every family)."""
    return {k: (v.to(vl.device) if hasattr(v, "to") else v) for k, v in vl.tokenize(texts).items()}
