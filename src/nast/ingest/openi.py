"""Open-i / IU X-ray (Indiana University chest X-ray collection) reader.

Layout under ``root`` (the widely used Kaggle/NLM repackaging)::

    indiana_reports.csv      uid, MeSH, Problems, image, indication, comparison, findings, impression
    indiana_projections.csv  uid, filename, projection (Frontal | Lateral)
    images/images_normalized/<filename>   or   images/<filename>   (found by file name)

Mapping to the cohort schema (one row per projection row = per image):

* ``subject_id = study_id = uid`` (Open-i has one study per patient); ``dicom_id`` = file name
  without the image suffix (``.png``/``.jpg``) and a trailing ``.dcm``
  (``1_IM-0001-4001.dcm.png`` -> ``1_IM-0001-4001``).
* ``view``: Frontal -> PA, Lateral -> LATERAL (Open-i does not tell PA from AP; frontal images are
  called PA), anything else upper-cased as given; then the ``data.views`` filter.
* ``findings`` / ``impression`` come from the CSV columns (whitespace normalised);
  ``report_path`` is null (the text lives in ``indiana_reports.csv``, not one file per study).
* Labels come from the manual MeSH encoding. **MeSH encodes only what was found, never a
  negative**, so a condition is 1 when one of its MeSH terms is present and null (not mentioned)
  otherwise; Open-i labels are never 0 or -1. ``normal`` -> ``No Finding`` = 1. The term -> CheXpert
  mapping (:data:`MESH_TO_CHEXPERT`, :data:`MESH_QUALIFIED`) follows the CheXpert labeler's
  mention phrases for each condition; it is a heuristic mapping, documented as data below.
  Consequently Open-i studies never meet the NAST permutation rule (which needs zeros); Open-i is
  meant for evaluation / retrieval, MIMIC-CXR for permutations.
* Splits: Open-i has no official split, so the deterministic patient-level split is used.

Row defects -> quarantine: no report row for the uid, several report rows for one uid
(``duplicate_report``, never merged), an image path outside the root (``path_escape``), image file missing or failing the image
check (``data.check_images`` / ``data.image_check``), no
findings/impression text (``data.require_report``).
"""

from __future__ import annotations

import logging
import os
import re
from pathlib import Path
from typing import Any

import polars as pl

from nast.conditions import CHEXPERT_COLUMNS
from nast.errors import StageError
from nast.ingest.common import (assign_splits, finish, flag, flag_images, flag_path_escape, init_flags,
                                read_csv_strings)
from nast.ingest.sections import normalize_whitespace

log = logging.getLogger(__name__)

REPORTS_CSV = "indiana_reports.csv"
PROJECTIONS_CSV = "indiana_projections.csv"
IMAGE_DIRS = ("images/images_normalized", "images", "images_normalized", ".")

#: MeSH heading (text before the first '/') -> CheXpert condition(s).
MESH_TO_CHEXPERT: dict[str, tuple[str, ...]] = {
    "cardiomegaly": ("Cardiomegaly",),
    "pulmonary atelectasis": ("Atelectasis",),
    "atelectasis": ("Atelectasis",),
    "consolidation": ("Consolidation",),
    "pulmonary edema": ("Edema",),
    "edema": ("Edema",),
    "pulmonary congestion": ("Edema",),
    "fractures, bone": ("Fracture",),
    "rib fractures": ("Fracture",),
    "fracture": ("Fracture",),
    "nodule": ("Lung Lesion",),
    "mass": ("Lung Lesion",),
    "lung neoplasms": ("Lung Lesion",),
    "neoplasms": ("Lung Lesion",),
    "cavitation": ("Lung Lesion",),
    "opacity": ("Lung Opacity",),
    "airspace disease": ("Lung Opacity",),
    "infiltrate": ("Lung Opacity",),
    "pleural effusion": ("Pleural Effusion",),
    "hydropneumothorax": ("Pleural Effusion", "Pneumothorax"),
    "pleural thickening": ("Pleural Other",),
    "pneumonia": ("Pneumonia",),
    "pneumothorax": ("Pneumothorax",),
    "catheters, indwelling": ("Support Devices",),
    "implanted medical device": ("Support Devices",),
    "tube, inserted": ("Support Devices",),
    "medical device": ("Support Devices",),
    "pacemaker, artificial": ("Support Devices",),
    "stents": ("Support Devices",),
}

#: (heading, a qualifier that must also appear) -> condition, for headings that are only a finding
#: with a qualifier, e.g. ``Cardiac Shadow/enlarged`` or ``Thickening/pleura``.
MESH_QUALIFIED: tuple[tuple[str, str, str], ...] = (
    ("cardiac shadow", "enlarged", "Cardiomegaly"),
    ("mediastinum", "enlarged", "Enlarged Cardiomediastinum"),
    ("mediastinum", "prominent", "Enlarged Cardiomediastinum"),
    ("mediastinum", "widened", "Enlarged Cardiomediastinum"),
    ("thickening", "pleura", "Pleural Other"),
    ("density", "lung", "Lung Opacity"),
)


def mesh_labels(mesh: str | None) -> dict[str, int | None]:
    """CheXpert labels of one MeSH string: 1 when a mapped term is present, else None."""
    out: dict[str, int | None] = {c: None for c in CHEXPERT_COLUMNS}
    if not mesh:
        return out
    for term in mesh.split(";"):
        parts = [p.strip().lower() for p in term.split("/")]
        head, quals = parts[0], set(parts[1:])
        if head == "normal":
            out["No Finding"] = 1
            continue
        for cond in MESH_TO_CHEXPERT.get(head, ()):
            out[cond] = 1
        for h, q, cond in MESH_QUALIFIED:
            if head == h and q in quals:
                out[cond] = 1
    return out


def dicom_id_of(filename: str) -> str:
    name = Path(filename).name
    name = re.sub(r"\.(png|jpe?g)$", "", name, flags=re.IGNORECASE)
    return re.sub(r"\.dcm$", "", name, flags=re.IGNORECASE)


def view_of(projection: str | None) -> str:
    p = (projection or "").strip()
    return {"frontal": "PA", "lateral": "LATERAL"}.get(p.lower(), p.upper())


def find_image_dir(root: Path, filenames: list[str]) -> Path:
    """The first of :data:`IMAGE_DIRS` that holds the first existing listed file (else images/)."""
    dirs = [root / d for d in IMAGE_DIRS if (root / d).is_dir()]
    for name in filenames[:50]:
        for d in dirs:
            if (d / name).is_file():
                return d
    return dirs[0] if dirs else root / "images"


def read_openi(
    root: str | Path,
    *,
    views: list[str],
    require_report: bool,
    check_images: bool,
    image_check: str = "fast",
    split_fractions: dict[str, float],
    seed: int,
) -> tuple[pl.DataFrame, pl.DataFrame, dict[str, Any]]:
    """Read an Open-i folder into ``(cohort, quarantine, summary)``."""
    root = Path(root)
    if not root.is_dir() or not os.access(root, os.R_OK | os.X_OK):
        raise StageError(f"dataset root not found or unreadable: {root}")
    rep_path, proj_path = root / REPORTS_CSV, root / PROJECTIONS_CSV
    for p in (rep_path, proj_path):
        if not p.is_file():
            raise StageError(f"Open-i file not found: {p}")
    reports = read_csv_strings(rep_path, ["uid", "MeSH", "findings", "impression"])
    proj = read_csv_strings(proj_path, ["uid", "filename", "projection"])

    rep = reports.select(
        pl.col("uid").str.strip_chars().cast(pl.Int64, strict=False).alias("study_id"),
        "MeSH", "findings", "impression",
    ).filter(pl.col("study_id").is_not_null())
    rep = rep.with_columns(_n_reports=pl.len().over("study_id")).unique(
        subset=["study_id"], keep="first", maintain_order=True)  # duplicates are quarantined below, never merged
    lab_rows = [mesh_labels(m) for m in rep["MeSH"].to_list()]
    rep = rep.with_columns(
        *[pl.Series(c, [r[c] for r in lab_rows], dtype=pl.Int8) for c in CHEXPERT_COLUMNS],
        pl.col("findings").map_elements(normalize_whitespace, return_dtype=pl.Utf8),
        pl.col("impression").map_elements(normalize_whitespace, return_dtype=pl.Utf8),
        _has_report=pl.lit(True),
    ).drop("MeSH")

    filenames = proj["filename"].fill_null("").str.strip_chars().to_list()
    image_dir = find_image_dir(root, filenames)
    df = proj.select(
        pl.Series("dicom_id", [dicom_id_of(f) for f in filenames], dtype=pl.Utf8),
        pl.col("uid").str.strip_chars().cast(pl.Int64, strict=False).alias("study_id"),
        pl.col("projection").map_elements(view_of, return_dtype=pl.Utf8).fill_null("").alias("view"),
        pl.Series("image_path", [os.path.join(str(image_dir), f) for f in filenames], dtype=pl.Utf8),
    ).with_columns(subject_id=pl.col("study_id"), report_path=pl.lit(None, dtype=pl.Utf8))
    df = init_flags(df, views)
    df = flag(df, pl.col("study_id").is_null(), "bad_id", "uid is not an integer", str(proj_path))
    df = flag(df, (pl.col("dicom_id") == "") | ~pl.col("dicom_id").is_first_distinct(), "duplicate_dicom_id",
              "empty or duplicate filename in projections", str(proj_path))
    df = df.join(rep, on="study_id", how="left", maintain_order="left")
    df = flag(df, pl.col("_has_report").is_null(), "no_label_row",
              pl.concat_str([pl.lit("no report row for uid "), pl.col("study_id").cast(pl.Utf8)]), str(rep_path))
    df = flag(df, pl.col("_n_reports") > 1, "duplicate_report",
              pl.concat_str([pl.col("_n_reports").cast(pl.Utf8), pl.lit(" report rows for uid "),
                             pl.col("study_id").cast(pl.Utf8)]), str(rep_path))
    df = flag_path_escape(df, root, str(proj_path))  # e.g. a filename of ../../x.png
    subjects = df.filter(pl.col("subject_id").is_not_null())["subject_id"]
    df = df.join(assign_splits(subjects, split_fractions, seed), on="subject_id", how="left", maintain_order="left")
    df = flag_images(df, check_images, image_check)
    if require_report:
        df = flag(df, pl.col("findings").is_null() & pl.col("impression").is_null(), "no_report_text",
                  "report has no findings or impression text", str(rep_path))
    cohort, quarantine, counts = finish(df, "openi")
    summary = {
        "source": "openi",
        "root": str(root),
        "image_dir": str(image_dir),
        "split_source": f"computed (data.split_fractions, seed {seed})",
        "reports_from": str(rep_path),
        **counts,
    }
    return cohort, quarantine, summary
