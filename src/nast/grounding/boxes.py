"""Finding boxes from three layouts, read into one frame (pure, no pixels).

``demo``
    the demo tree's ``demo-annotations.csv.gz`` (``dicom_id, study_id, subject_id, finding, location,
    severity, x0, y0, x1, y1, twin_path``): boxes in pixels of the demo JPEG, x1/y1 exclusive, and
    the counterfactual twin of each drawn finding.
``ms-cxr``
    MS-CXR phrase grounding for MIMIC-CXR (``MS_CXR_Local_Alignment_v1.1.0.csv``: ``dicom_id,
    category_name, label_text, path, x, y, w, h, image_width, image_height`` and an optional
    ``split``, which is ignored: the cohort's patient-level split wins). ``x, y, w, h`` are pixels
    of the original image of size ``image_width x image_height``; they are rescaled when the JPEG
    that is read has another size (:func:`scale_box`).
``generic``
    ``image_path, finding, x0, y0, x1, y1`` (VinDr-CXR / ChestX-ray8-style boxes converted to
    corners, pixels of the JPEG as read, x1/y1 exclusive); ``image_path`` relative to the dataset
    root or absolute; an optional ``dicom_id`` column is used as given.

Every reader returns :data:`BOX_COLUMNS` with ``row`` = the 1-based data row of the CSV (the
quarantine's key), coordinates as floats in the box's own frame (``ref_width``/``ref_height``, null
when the frame is the JPEG itself) and ``finding_raw`` as written; :func:`chexpert_name` maps it.
A missing file or column stops with a message naming the file and the column.
"""

from __future__ import annotations

import math
from pathlib import Path

import polars as pl

from nast.conditions import CONDITIONS
from nast.errors import StageError

FORMATS = ("demo", "ms-cxr", "generic")

BOX_COLUMNS: dict[str, pl.DataType] = {
    "row": pl.Int64,
    "dicom_id": pl.Utf8,
    "image_ref": pl.Utf8,
    "finding_raw": pl.Utf8,
    "x0": pl.Float64,
    "y0": pl.Float64,
    "x1": pl.Float64,
    "y1": pl.Float64,
    "ref_width": pl.Float64,
    "ref_height": pl.Float64,
    "twin_path": pl.Utf8,
}

REQUIRED: dict[str, tuple[str, ...]] = {
    "demo": ("dicom_id", "finding", "x0", "y0", "x1", "y1", "twin_path"),
    "ms-cxr": ("dicom_id", "category_name", "x", "y", "w", "h", "image_width", "image_height"),
    "generic": ("image_path", "finding", "x0", "y0", "x1", "y1"),
}

#: names other box sets use for a CheXpert finding (compared case-insensitively; CheXpert names
#: themselves always match). Only unambiguous synonyms: "Infiltration", "Aortic enlargement" etc.
#: are not CheXpert findings and are quarantined.
SYNONYMS: dict[str, str] = {
    "effusion": "Pleural Effusion",
    "pleural thickening": "Pleural Other",
    "nodule": "Lung Lesion",
    "mass": "Lung Lesion",
    "nodule/mass": "Lung Lesion",
    "opacity": "Lung Opacity",
}


def chexpert_name(raw: str | None) -> str | None:
    """CheXpert name of a box's finding, or None (not one of the 13 CheXpert findings; "No Finding"
    has no box)."""
    if raw is None:
        return None
    key = " ".join(str(raw).strip().lower().replace("_", " ").split())
    for name in CONDITIONS:
        if name.lower() == key:
            return name
    return SYNONYMS.get(key)


def read_csv(path: str | Path, box_format: str) -> pl.DataFrame:
    """Read a box CSV (plain or gzipped) of ``box_format`` into :data:`BOX_COLUMNS`."""
    if box_format not in FORMATS:
        raise StageError(f"unknown box format {box_format!r} (choose from {', '.join(FORMATS)})")
    path = Path(path)
    if not path.is_file():
        raise StageError(f"box file not found: {path}")
    try:
        raw = pl.read_csv(path, infer_schema=False)
    except Exception as exc:  # noqa: BLE001 - polars raises several kinds for a bad CSV
        raise StageError(f"{path}: not a readable CSV: {exc}") from exc
    missing = [c for c in REQUIRED[box_format] if c not in raw.columns]
    if missing:
        raise StageError(f"{path}: missing column(s) for box format {box_format!r}: "
                         + ", ".join(repr(c) for c in missing))
    raw = raw.with_row_index("row", offset=1).with_columns(pl.col("row").cast(pl.Int64))

    def num(col: str) -> pl.Expr:
        return pl.col(col).str.strip_chars().cast(pl.Float64, strict=False)

    if box_format == "demo":
        out = raw.select(
            "row", "dicom_id", pl.lit(None, pl.Utf8).alias("image_ref"), pl.col("finding").alias("finding_raw"),
            num("x0").alias("x0"), num("y0").alias("y0"), num("x1").alias("x1"), num("y1").alias("y1"),
            pl.lit(None, pl.Float64).alias("ref_width"), pl.lit(None, pl.Float64).alias("ref_height"),
            "twin_path")
    elif box_format == "ms-cxr":
        out = raw.select(
            "row", "dicom_id",
            (pl.col("path") if "path" in raw.columns else pl.lit(None, pl.Utf8)).alias("image_ref"),
            pl.col("category_name").alias("finding_raw"),
            num("x").alias("x0"), num("y").alias("y0"), (num("x") + num("w")).alias("x1"),
            (num("y") + num("h")).alias("y1"), num("image_width").alias("ref_width"),
            num("image_height").alias("ref_height"), pl.lit(None, pl.Utf8).alias("twin_path"))
    else:
        out = raw.select(
            "row", (pl.col("dicom_id") if "dicom_id" in raw.columns else pl.lit(None, pl.Utf8)).alias("dicom_id"),
            pl.col("image_path").alias("image_ref"), pl.col("finding").alias("finding_raw"),
            num("x0").alias("x0"), num("y0").alias("y0"), num("x1").alias("x1"), num("y1").alias("y1"),
            pl.lit(None, pl.Float64).alias("ref_width"), pl.lit(None, pl.Float64).alias("ref_height"),
            pl.lit(None, pl.Utf8).alias("twin_path"))
    return out.cast(BOX_COLUMNS)


def scale_box(box: tuple[float, float, float, float], ref: tuple[float | None, float | None],
              size: tuple[int, int]) -> tuple[float, float, float, float]:
    """A box given in a ``ref`` = (width, height) frame, in pixels of an image of ``size`` =
    (width, height). ``ref`` of None (or equal to ``size``) leaves the box as it is."""
    rw, rh = ref
    w, h = size
    if rw is None or rh is None or (rw == w and rh == h):
        return box
    if not (rw > 0 and rh > 0):
        raise ValueError(f"reference size {rw} x {rh} is not positive")
    sx, sy = w / rw, h / rh
    x0, y0, x1, y1 = box
    return x0 * sx, y0 * sy, x1 * sx, y1 * sy


def pixel_box(box: tuple[float, float, float, float], size: tuple[int, int], tol: float = 1.0
              ) -> tuple[tuple[int, int, int, int] | None, str | None]:
    """Integer pixel box (x0, y0, x1, y1; x1/y1 exclusive) covering a float box, or (None, reason).

    A corner more than ``tol`` pixels outside the image is an error (a box given in another frame,
    or a typo), not something to clip silently; within ``tol`` it is clipped (rounding of a rescaled
    box). Zero or negative area is an error."""
    w, h = size
    x0, y0, x1, y1 = box
    if any(v is None or not math.isfinite(v) for v in box):
        return None, "box coordinate missing or not a number"
    if x1 <= x0 or y1 <= y0:
        return None, f"box has zero or negative area ({x0:g}, {y0:g}, {x1:g}, {y1:g})"
    if x0 < -tol or y0 < -tol or x1 > w + tol or y1 > h + tol:
        return None, f"box ({x0:g}, {y0:g}, {x1:g}, {y1:g}) outside the image ({w} x {h})"
    ix0, iy0 = max(0, int(math.floor(x0))), max(0, int(math.floor(y0)))
    ix1, iy1 = min(w, int(math.ceil(x1))), min(h, int(math.ceil(y1)))
    if ix1 <= ix0 or iy1 <= iy0:
        return None, f"box ({x0:g}, {y0:g}, {x1:g}, {y1:g}) has no pixel inside the image ({w} x {h})"
    return (ix0, iy0, ix1, iy1), None
