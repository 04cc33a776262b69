"""MIMIC-CXR-JPG 2.0.0 reader (also used for the synthetic demo tree, which has the same layout).

Layout under ``root``::

    mimic-cxr-2.0.0-chexpert.csv[.gz]   subject_id, study_id, 14 CheXpert columns (1.0/0.0/-1.0/blank)
    mimic-cxr-2.0.0-metadata.csv[.gz]   dicom_id, subject_id, study_id, ViewPosition, ...
    mimic-cxr-2.0.0-split.csv[.gz]      dicom_id, study_id, subject_id, split   (optional)
    files/pXX/pSUBJECT/sSTUDY/DICOM.jpg
    files/pXX/pSUBJECT/sSTUDY.txt        reports, or instead
    mimic-cxr-reports.zip                with files/pXX/pSUBJECT/sSTUDY.txt inside (optionally under
                                         a top folder such as mimic-cxr-reports/)

One cohort row per metadata row (= per image). Checks in order; the first defect quarantines the
row (stage ``ingest``, key ``dicom_id``):

0. view not in ``data.views`` -> *filtered* (counted, not quarantined, no further checks)
1. unparsable ``subject_id``/``study_id``, duplicate ``dicom_id``, a ``dicom_id`` that is not a plain
   file name (``/``, ``..``: ``unsafe_id``)
2. no CheXpert row for the study, duplicate CheXpert rows, label value outside {1, 0, -1, blank}
   (the reason names the column and the value)
3. with a split file: image missing from it or an unknown split value
4. image path outside the dataset root (``path_escape``; checked before any file is opened);
   JPEG missing; JPEG that fails the image check (``data.check_images``; ``data.image_check``
   ``fast`` = headers + end-of-image marker, ``full`` = decode, see
   :func:`nast.ingest.common.check_image`)
5. report not UTF-8 (``bad_report_encoding``, with the byte and offset; never decoded with U+FFFD);
   several reports for one study in the reports zip (``duplicate_report``, the members named; never
   merged or one picked silently); report missing or without FINDINGS/IMPRESSION text
   (``data.require_report``)

A CSV that is not UTF-8 stops the stage with the line and byte (:func:`nast.ingest.common.read_csv_strings`).

Structural problems stop the stage (:class:`~nast.errors.StageError` naming file and column): an
unreadable root, a missing CheXpert/metadata CSV, a missing column (e.g. a CheXpert condition).

Splits: the official split file wins when present; otherwise a deterministic patient-level split
(:func:`nast.ingest.common.assign_splits`, ``data.split_fractions`` and ``data.seed``).
"""

from __future__ import annotations

import logging
import os
import re
import zipfile
from pathlib import Path
from typing import Any

import polars as pl

from nast.conditions import CHEXPERT_COLUMNS
from nast.errors import StageError
from nast.ingest.common import (
    SPLITS,
    assign_splits,
    finish,
    flag,
    flag_images,
    flag_path_escape,
    flag_unsafe_ids,
    init_flags,
    ok_rows,
    parse_label_columns,
    read_csv_strings,
)
from nast.ingest.sections import parse_sections

log = logging.getLogger(__name__)

PREFIX = "mimic-cxr-2.0.0"
REPORTS_ZIP_NAME = "mimic-cxr-reports.zip"
_ZIP_MEMBER = re.compile(r"(?:^|/)files/p\d+/p(\d+)/s(\d+)\.txt$")


def find_table(root: Path, name: str, required: bool = True) -> Path | None:
    """``<root>/mimic-cxr-2.0.0-<name>.csv.gz`` or ``.csv`` (first that exists)."""
    for suffix in (".csv.gz", ".csv"):
        p = root / f"{PREFIX}-{name}{suffix}"
        if p.is_file():
            return p
    if required:
        raise StageError(f"MIMIC-CXR-JPG file not found: {root / f'{PREFIX}-{name}.csv'}[.gz]")
    return None


def _id(col: str) -> pl.Expr:
    return pl.col(col).cast(pl.Utf8).str.strip_chars().cast(pl.Int64, strict=False)


Report = tuple[str | None, str | None, str | None]  # (path, text, error)


def decode_report(raw: bytes, where: str) -> tuple[str | None, str | None]:
    """``(text, None)`` for UTF-8 bytes, else ``(None, reason)`` (never a silent U+FFFD)."""
    try:
        return raw.decode("utf-8"), None
    except UnicodeDecodeError as exc:
        return None, (f"report is not UTF-8: byte 0x{raw[exc.start]:02x} at offset {exc.start} of {where}")


def _read_reports_tree(keys: list[tuple[int, int]], root: Path) -> dict[tuple[int, int], Report]:
    out: dict[tuple[int, int], Report] = {}
    for subj, study in keys:
        s = str(subj)
        path = os.path.join(str(root), "files", f"p{s[:2]}", f"p{s}", f"s{study}.txt")
        try:
            with open(path, "rb") as fh:
                text, err = decode_report(fh.read(), path)
            out[(subj, study)] = (path, text, err)
        except FileNotFoundError:
            out[(subj, study)] = (None, None, None)
    return out


def _read_reports_zip(keys: list[tuple[int, int]], zpath: Path) -> dict[tuple[int, int], Report]:
    try:
        zf = zipfile.ZipFile(zpath)
    except (OSError, zipfile.BadZipFile) as exc:
        raise StageError(f"{zpath}: cannot open reports zip: {exc}") from None
    with zf:
        index: dict[tuple[int, int], list[str]] = {}
        for name in zf.namelist():
            m = _ZIP_MEMBER.search(name)
            if m:
                index.setdefault((int(m.group(1)), int(m.group(2))), []).append(name)
        if not index:
            raise StageError(f"{zpath}: no files/pXX/pSUBJECT/sSTUDY.txt members in the reports zip")
        n_dup = sum(len(v) > 1 for v in index.values())
        if n_dup:
            log.warning("ingest: %d studies have several reports in %s (quarantined as duplicate_report)", n_dup, zpath)
        out: dict[tuple[int, int], Report] = {}
        for key in keys:
            names = index.get(key)
            if names is None:
                out[key] = (None, None, None)
            elif len(names) > 1:  # never merge or pick one silently
                out[key] = (f"{zpath}::{names[0]}", None,
                            f"{len(names)} reports for study {key[1]} in {zpath}: {', '.join(names)}")
            else:
                where = f"{zpath}::{names[0]}"
                text, err = decode_report(zf.read(names[0]), where)
                out[key] = (where, text, err)
    return out


def read_reports(keys: list[tuple[int, int]], root: Path, reports_zip: Path | None) -> pl.DataFrame:
    """``(subject_id, study_id, report_path, findings, impression)`` for the given studies.

    ``report_path`` is the .txt path, or ``<zip>::<member>`` for the zip; null when absent.
    """
    raw = _read_reports_zip(keys, reports_zip) if reports_zip else _read_reports_tree(keys, root)
    rows = {"subject_id": [], "study_id": [], "report_path": [], "findings": [], "impression": [],
            "_report_error": []}
    for (subj, study), (path, text, err) in raw.items():
        f, i = parse_sections(text)
        rows["subject_id"].append(subj)
        rows["study_id"].append(study)
        rows["report_path"].append(path)
        rows["findings"].append(f)
        rows["impression"].append(i)
        rows["_report_error"].append(err)
    return pl.DataFrame(rows, schema={"subject_id": pl.Int64, "study_id": pl.Int64, "report_path": pl.Utf8,
                                      "findings": pl.Utf8, "impression": pl.Utf8, "_report_error": pl.Utf8})


def resolve_reports_zip(root: Path, reports_zip: str | Path | None) -> Path | None:
    """The reports zip to read: the configured one (must exist), else ``<root>/mimic-cxr-reports.zip``
    when present and there is no ``files/`` tree of .txt reports, else None (read the tree)."""
    if reports_zip:
        p = Path(reports_zip)
        if not p.is_file():
            raise StageError(f"reports zip not found: {p} (data.reports_zip / --reports-zip)")
        return p
    p = root / REPORTS_ZIP_NAME
    return p if p.is_file() else None


def read_mimic(
    root: str | Path,
    *,
    dataset: str = "mimic",
    views: list[str],
    require_report: bool,
    check_images: bool,
    image_check: str = "fast",
    split_fractions: dict[str, float],
    seed: int,
    reports_zip: str | Path | None = None,
) -> tuple[pl.DataFrame, pl.DataFrame, dict[str, Any]]:
    """Read a MIMIC-CXR-JPG tree into ``(cohort, quarantine, summary)``."""
    root_s = str(root)
    root = Path(root)
    if not root.is_dir() or not os.access(root, os.R_OK | os.X_OK):
        raise StageError(f"dataset root not found or unreadable: {root}")
    chex_path = find_table(root, "chexpert")
    meta_path = find_table(root, "metadata")
    split_path = find_table(root, "split", required=False)
    zpath = resolve_reports_zip(root, reports_zip)

    meta = read_csv_strings(meta_path, ["dicom_id", "subject_id", "study_id", "ViewPosition"])
    chex = read_csv_strings(chex_path, ["subject_id", "study_id", *CHEXPERT_COLUMNS])
    log.info("ingest: %d images in %s, %d label rows in %s", meta.height, meta_path.name, chex.height, chex_path.name)

    df = meta.select(
        pl.col("dicom_id").str.strip_chars(),
        _id("subject_id").alias("subject_id"),
        _id("study_id").alias("study_id"),
        pl.col("ViewPosition").str.strip_chars().fill_null("").alias("view"),
    )
    df = init_flags(df, views)
    df = flag(df, pl.col("subject_id").is_null() | pl.col("study_id").is_null(), "bad_id",
              "subject_id or study_id is not an integer", str(meta_path))
    df = flag(df, pl.col("dicom_id").is_null() | (pl.col("dicom_id") == ""), "bad_id", "empty dicom_id", str(meta_path))
    df = flag(df, ~pl.col("dicom_id").is_first_distinct(), "duplicate_dicom_id",
              "duplicate dicom_id in metadata", str(meta_path))
    df = flag_unsafe_ids(df, "dicom_id", str(meta_path))

    # labels: one row per study
    labels = parse_label_columns(
        chex.with_columns(_id("subject_id").alias("subject_id"), _id("study_id").alias("study_id"))
    ).filter(pl.col("subject_id").is_not_null() & pl.col("study_id").is_not_null())
    labels = labels.with_columns(_dup_label=pl.len().over("subject_id", "study_id") > 1)
    labels = labels.unique(subset=["subject_id", "study_id"], keep="first", maintain_order=True)
    labels = labels.select("subject_id", "study_id", *CHEXPERT_COLUMNS, "_label_error", "_dup_label",
                           pl.lit(True).alias("_has_label"))
    df = df.join(labels, on=["subject_id", "study_id"], how="left", maintain_order="left")
    df = flag(df, pl.col("_has_label").is_null(), "no_label_row",
              pl.concat_str([pl.lit("no CheXpert label row for study "), pl.col("study_id").cast(pl.Utf8)]),
              str(chex_path))
    df = flag(df, pl.col("_dup_label"), "duplicate_label_rows",
              pl.concat_str([pl.lit("several CheXpert label rows for study "), pl.col("study_id").cast(pl.Utf8)]),
              str(chex_path))
    df = flag(df, pl.col("_label_error").is_not_null(), "bad_label", pl.col("_label_error"), str(chex_path))

    # splits
    if split_path is not None:
        sp = read_csv_strings(split_path, ["dicom_id", "split"]).select(
            pl.col("dicom_id").str.strip_chars(), pl.col("split").str.strip_chars()
        ).unique(subset=["dicom_id"], keep="first", maintain_order=True)
        df = df.join(sp, on="dicom_id", how="left", maintain_order="left")
        df = flag(df, pl.col("split").is_null(), "no_split", "dicom_id not in the split file", str(split_path))
        df = flag(df, ~pl.col("split").is_in(list(SPLITS)), "bad_split",
                  pl.concat_str([pl.lit("unknown split value '"), pl.col("split"), pl.lit("'")]), str(split_path))
        split_source = str(split_path)
    else:
        subjects = df.filter(pl.col("subject_id").is_not_null())["subject_id"]
        df = df.join(assign_splits(subjects, split_fractions, seed), on="subject_id", how="left",
                     maintain_order="left")
        split_source = f"computed (data.split_fractions, seed {seed})"
    log.info("ingest: splits from %s", split_source)

    # images
    sid = pl.col("subject_id").cast(pl.Utf8)
    df = df.with_columns(
        image_path=pl.concat_str([
            pl.lit(root_s.rstrip("/") + "/files/p"), sid.str.slice(0, 2), pl.lit("/p"), sid,
            pl.lit("/s"), pl.col("study_id").cast(pl.Utf8), pl.lit("/"), pl.col("dicom_id"), pl.lit(".jpg"),
        ])
    )
    df = flag_path_escape(df, root, str(meta_path))  # before any file is opened
    df = flag_images(df, check_images, image_check)

    # reports for the studies still in play
    keys = df.filter(ok_rows(df)).select("subject_id", "study_id").unique().sort("subject_id", "study_id")
    reports = read_reports(list(keys.iter_rows()), root, zpath)
    df = df.join(reports, on=["subject_id", "study_id"], how="left", maintain_order="left")
    df = flag(df, pl.col("_report_error").str.contains("^report is not UTF-8"), "bad_report_encoding",
              pl.col("_report_error"), pl.col("report_path"))
    df = flag(df, pl.col("_report_error").is_not_null(), "duplicate_report", pl.col("_report_error"),
              pl.col("report_path"))
    if require_report:
        expected = pl.lit(str(zpath)) if zpath else pl.concat_str([
            pl.lit(root_s.rstrip("/") + "/files/p"), sid.str.slice(0, 2), pl.lit("/p"), sid,
            pl.lit("/s"), pl.col("study_id").cast(pl.Utf8), pl.lit(".txt"),
        ])
        df = flag(df, pl.col("report_path").is_null(), "missing_report",
                  pl.concat_str([pl.lit("report not found for study "), pl.col("study_id").cast(pl.Utf8)]),
                  expected)
        df = flag(df, pl.col("findings").is_null() & pl.col("impression").is_null(), "no_report_text",
                  "report has no FINDINGS or IMPRESSION text", pl.col("report_path"))

    cohort, quarantine, counts = finish(df, dataset)
    summary = {
        "source": dataset,
        "root": root_s,
        "split_source": split_source,
        "reports_from": str(zpath) if zpath else "files/ tree",
        **counts,
    }
    return cohort, quarantine, summary
