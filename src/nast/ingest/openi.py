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
* Labels (``data.openi_labels``): ``reader`` (default) reads each report's findings and
  impression with the report reader, as ``nast label`` does (4 states, CheXpert-style aggregation,
  :mod:`nast.text.label`), the way MIMIC-CXR's labels were made by a labeler over its reports; so
  Open-i studies have zeros and pass the NAST permutation rule. The MeSH labels are kept beside
  them as counts in the summary (``mesh_agreement``: per condition, MeSH positives the reader calls
  1 / -1 / 0 / blank, and reader positives MeSH lacks). A report whose text cannot be read
  (undecodable, over ``claims``' default limit) is quarantined (``unreadable_report``).
  ``mesh``: the manual MeSH encoding. **MeSH encodes only what was found, never a negative**, so a
  condition is 1 when one of its MeSH terms is present and null (not mentioned) otherwise; MeSH
  labels are never 0 or -1 and no study meets the permutation rule. ``normal`` -> ``No Finding`` =
  1. The term -> CheXpert mapping (:data:`MESH_TO_CHEXPERT`, :data:`MESH_QUALIFIED`) follows the
  CheXpert labeler's mention phrases for each condition; it is a heuristic mapping, documented as
  data below.
* Splits: Open-i has no official split, so the deterministic patient-level split is used.

Row defects -> quarantine: no report row for the uid, several report rows for one uid
(``duplicate_report``, never merged), an image path outside the root (``path_escape``), image file
missing or failing the image check (``data.check_images`` / ``data.image_check``), no
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
from nast.ingest.common import assign_splits, finish, flag, flag_images, flag_path_escape, init_flags, read_csv_strings
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


def reader_labels(rep: pl.DataFrame) -> tuple[list[dict[str, int | None]], list[str | None]]:
    """4-state labels of each report row (``study_id``, ``findings``, ``impression``) read by the
    report reader (:func:`nast.text.label.label_reports`, its default aggregation), and per row the
    reason it could not be read (undecodable or oversized text) or None. A report without text gets
    no label (all blank; ``data.require_report`` quarantines it)."""
    from nast.text.label import label_reports

    frame = rep.select(pl.col("study_id").cast(pl.Utf8).alias("uid"), "findings", "impression")
    labelled, quarantine, _ = label_reports(frame, ["uid"], ["findings", "impression"], source=REPORTS_CSV)
    by_uid = {row["uid"]: row for row in labelled.iter_rows(named=True)}
    why = {k: r for k, r in zip(quarantine["key"].to_list(), quarantine["reason"].to_list())
           if not r.startswith("no report text")}
    rows, unreadable = [], []
    for uid in frame["uid"].to_list():
        row = by_uid.get(uid)
        rows.append({c: (row[c] if row else None) for c in CHEXPERT_COLUMNS})
        unreadable.append(why.get(uid))
    return rows, unreadable


def mesh_agreement(reader: list[dict], mesh: list[dict]) -> dict[str, dict[str, int]]:
    """Per condition over the reports: MeSH positive and reader 1 (``both``), MeSH positive and the
    reader -1 / 0 / blank, and reader 1 where MeSH has nothing (``reader_only``)."""
    out: dict[str, dict[str, int]] = {}
    for c in CHEXPERT_COLUMNS:
        counts = {"both": 0, "mesh_only_reader_uncertain": 0, "mesh_only_reader_negative": 0,
                  "mesh_only_reader_blank": 0, "reader_only": 0}
        for r, m in zip(reader, mesh):
            if m[c] == 1:
                key = {1: "both", -1: "mesh_only_reader_uncertain", 0: "mesh_only_reader_negative"}.get(
                    r[c], "mesh_only_reader_blank")
                counts[key] += 1
            elif r[c] == 1:
                counts["reader_only"] += 1
        out[c] = counts
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
    labels: str = "reader",
) -> tuple[pl.DataFrame, pl.DataFrame, dict[str, Any]]:
    """Read an Open-i folder into ``(cohort, quarantine, summary)``; labels from ``reader`` or ``mesh``."""
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
    mesh_rows = [mesh_labels(m) for m in rep["MeSH"].to_list()]
    rep = rep.with_columns(
        pl.col("findings").map_elements(normalize_whitespace, return_dtype=pl.Utf8),
        pl.col("impression").map_elements(normalize_whitespace, return_dtype=pl.Utf8),
        _has_report=pl.lit(True),
    ).drop("MeSH")
    if labels == "mesh":
        lab_rows = mesh_rows
        agreement = None
    elif labels == "reader":
        lab_rows, unreadable = reader_labels(rep)
        agreement = mesh_agreement(lab_rows, mesh_rows)
    else:
        raise StageError(f"data.openi_labels must be 'reader' or 'mesh', not {labels!r}")
    rep = rep.with_columns(*[pl.Series(c, [r[c] for r in lab_rows], dtype=pl.Int8) for c in CHEXPERT_COLUMNS])
    if labels == "reader":
        rep = rep.with_columns(pl.Series("_unreadable", unreadable, dtype=pl.Utf8))

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
    if labels == "reader":
        df = flag(df, pl.col("_unreadable").is_not_null(), "unreadable_report", pl.col("_unreadable"), str(rep_path))
    cohort, quarantine, counts = finish(df, "openi")
    summary = {
        "source": "openi",
        "labels_from": "report reader (nast label, MeSH compared in mesh_agreement)" if labels == "reader"
        else "MeSH",
        "mesh_agreement": agreement,
        "root": str(root),
        "image_dir": str(image_dir),
        "split_source": f"computed (data.split_fractions, seed {seed})",
        "reports_from": str(rep_path),
        **counts,
    }
    return cohort, quarantine, summary
