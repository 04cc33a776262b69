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
    aggs = [pl.col("foil"), pl.col("foil_type")]
    if "finding" in df.columns:
        aggs.append(pl.col("finding").first())
    return (
        df.group_by(["dicom_id", "image_path", "caption"], maintain_order=True)
        .agg(*aggs)
        .rename({"foil": "foils", "foil_type": "foil_types"})
        .sort(["dicom_id", "caption"])
    )


def claim_polarity_labels(groups: pl.DataFrame, cohort: pl.DataFrame, source: str = "cohort.parquet"
                          ) -> tuple[torch.Tensor, torch.Tensor]:
    """For the image direction of the claim loss: ``(finding_idx [G], image_labels [G, F])``.

    Per caption group: the index of its finding
    among the cohort's finding columns, and the label vector (1 / 0, or -1 for uncertain and not
    mentioned) of the group's image. ``opposite(i, j)`` in a batch is then
    ``image_labels[j, finding_idx[i]] == 1 - image_labels[i, finding_idx[i]]`` with both in {0, 1}.
    Groups whose finding is not a cohort column get index -1 (never contradicted).
    """
    require_columns(groups, ("image_path", "finding"), "caption groups")
    require_columns(cohort, ("image_path",), source)
    findings = sorted({f for f in groups["finding"].to_list() if f is not None and f in cohort.columns})
    idx = {f: i for i, f in enumerate(findings)}
    rows = cohort.select("image_path", *findings).unique("image_path", keep="first")
    by_path = {r[0]: r[1:] for r in rows.iter_rows()}
    missing = sorted({p for p in groups["image_path"].to_list() if p not in by_path})
    if missing:
        raise StageError(f"{source}: no labels for {len(missing)} training image(s), e.g. {missing[0]}")
    lab = torch.tensor([[(-1 if v is None or v not in (0, 1) else int(v)) for v in by_path[p]] or [-1]
                        for p in groups["image_path"].to_list()], dtype=torch.long)
    fidx = torch.tensor([idx.get(f, -1) for f in groups["finding"].to_list()], dtype=torch.long)
    return fidx, lab


def opposite_mask(finding_idx: torch.Tensor, image_labels: torch.Tensor) -> torch.Tensor:
    """[B,B] bool from a batch's ``finding_idx [B]`` and ``image_labels [B, F]``: image j's label
    of caption i's finding is the opposite (0 vs 1) of image i's."""
    f = finding_idx.clamp(min=0)
    own = image_labels.gather(1, f[:, None]).squeeze(1)  # [B] label of finding_i in image i
    other = image_labels[:, f].T  # [B(i), B(j)] label of finding_i in image j
    known = (finding_idx >= 0) & (own >= 0)
    return known[:, None] & (other >= 0) & (other == 1 - own[:, None])


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
