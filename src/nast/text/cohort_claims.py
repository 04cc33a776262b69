"""Claims of every study's report in the cohort (the core of ``nast claims``)."""

from __future__ import annotations

import logging
from pathlib import Path

import polars as pl

from nast.io import require_columns
from nast.text.claims import claims_expectations, extract_claims
from nast.text.screen import DEFAULT_MAX_CHARS

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
    cohort: pl.DataFrame, text_cols: list[str], source: str | Path = "cohort", *, max_chars: int = DEFAULT_MAX_CHARS
) -> tuple[pl.DataFrame, pl.DataFrame, dict[str, int]]:
    """Claims of every study of the cohort (pure): (claims, quarantine, counts)."""
    studies = study_reports(cohort, text_cols, source)
    studies = studies.with_columns(pl.col("study_id").cast(pl.Utf8).alias("id"))
    claims, quarantine, stats = extract_claims(studies, "id", text_cols, source, max_chars=max_chars, stage="claims",
                                               row_in_source=False)  # key = study_id; row numbers would be the studies
    keys = studies.select("id", *STUDY_COLUMNS)
    out = claims.join(keys, on="id", how="left", maintain_order="left").select(OUTPUT_COLUMNS)
    out = out.sort("study_id", maintain_order=True)
    stats["studies"] = studies.height
    return out, quarantine, stats
