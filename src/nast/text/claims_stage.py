"""``nast claims``: claims of every study's report in the cohort.

The cohort has one row per image; all images of a study share one report, so the study's first
row (by ``dicom_id``) carries the text. The text columns read are ``params.claims.text_cols``
(default ``findings, impression``), each read separately by :func:`nast.text.claims.extract_claims`.
Output: the claims table (``id`` = ``str(study_id)``, finding, polarity, location, severity,
evidence) plus ``study_id``, ``subject_id``, ``split``; rows sorted by study, then report order.
Studies without text have no claims; they are counted in the log line (nothing is dropped: claims
are mentions, not studies). The table passes the ``claims`` Great Expectations gate.
"""

from __future__ import annotations

import argparse
import logging
from pathlib import Path

import polars as pl

from nast.io import read_parquet, require_columns, write_parquet
from nast.text.claims import claims_expectations, extract_claims

log = logging.getLogger(__name__)

STUDY_COLUMNS = ["study_id", "subject_id", "split"]
OUTPUT_COLUMNS = ["id", "study_id", "subject_id", "split", "finding", "polarity", "location", "severity", "evidence"]


def stage_expectations() -> list[tuple[str, dict]]:
    return claims_expectations() + [
        ("ExpectColumnValuesToNotBeNull", {"column": "study_id"}),
        ("ExpectColumnValuesToNotBeNull", {"column": "subject_id"}),
        ("ExpectColumnValuesToBeInSet", {"column": "split", "value_set": ["train", "validate", "test"]}),
    ]


def study_reports(cohort: pl.DataFrame, text_cols: list[str], source: str | Path = "cohort") -> pl.DataFrame:
    """One row per study (its first image by dicom_id): study_id, subject_id, split + text columns."""
    require_columns(cohort, [*STUDY_COLUMNS, "dicom_id", *text_cols], source)
    return (
        cohort.sort(["study_id", "dicom_id"])
        .unique(subset=["study_id"], keep="first", maintain_order=True)
        .select([*STUDY_COLUMNS, *text_cols])
    )


def cohort_claims(
    cohort: pl.DataFrame, text_cols: list[str], source: str | Path = "cohort"
) -> tuple[pl.DataFrame, dict[str, int]]:
    """Claims of every study of the cohort (pure)."""
    studies = study_reports(cohort, text_cols, source)
    studies = studies.with_columns(pl.col("study_id").cast(pl.Utf8).alias("id"))
    claims, stats = extract_claims(studies, "id", text_cols, source)
    keys = studies.select("id", *STUDY_COLUMNS)
    out = claims.join(keys, on="id", how="left", maintain_order="left").select(OUTPUT_COLUMNS)
    out = out.sort("study_id", maintain_order=True)
    stats["studies"] = studies.height
    return out, stats


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--cohort", required=True, help="cohort parquet (nast ingest)")
    parser.add_argument("--out", required=True, help="claims parquet (one row per finding mention)")
    parser.add_argument("--report-dir", default="reports/validation", help="Great Expectations reports folder")


def run(args: argparse.Namespace, params: dict) -> int:
    from nast.validation import gate

    text_cols = list(params["claims"]["text_cols"])
    cohort = read_parquet(args.cohort, "cohort table")
    claims, stats = cohort_claims(cohort, text_cols, source=args.cohort)
    gate(claims, "claims", stage_expectations(), report_dir=args.report_dir)
    write_parquet(claims, args.out)
    log.info(
        "claims: %d studies (%d without report text, %d with claims) -> %d claims -> %s",
        stats["studies"], stats["rows_empty"], stats["rows_with_claims"], stats["claims"], args.out,
    )
    return 0
