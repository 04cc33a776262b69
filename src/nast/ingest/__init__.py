"""Ingest: MIMIC-CXR-JPG / Open-i / demo -> ``cohort.parquet`` (+ quarantine + summary).

* :mod:`nast.ingest.mimic` - MIMIC-CXR-JPG 2.0.0 layout (also the synthetic demo tree)
* :mod:`nast.ingest.openi` - Open-i / IU X-ray ``indiana_*.csv``
* :mod:`nast.ingest.sections` - FINDINGS / IMPRESSION section parser
* :mod:`nast.ingest.common` - label parsing (4 states), patient-level splits, image checks,
  row bookkeeping (kept / quarantined / filtered)
* :mod:`nast.ingest.sources` - the reader of each layout (:func:`~nast.ingest.sources.ingest`);
  ``nast ingest`` is :mod:`nast.stages.ingest`

The cohort gate (:data:`COHORT_EXPECTATIONS`, run by :func:`gate_cohort`) checks the contract of
``cohort.parquet``: the exact column list, types, the label value set {1, 0, -1} (nulls allowed),
unique ``dicom_id``, split values and patient-disjoint splits (a derived column
``_subject_n_splits`` = number of distinct splits of the row's subject, expected to be 1).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import polars as pl

from nast.conditions import CHEXPERT_COLUMNS
from nast.ingest.common import COHORT_COLUMNS, COHORT_SCHEMA, SPLITS

__all__ = ["COHORT_COLUMNS", "COHORT_SCHEMA", "COHORT_EXPECTATIONS", "cohort_gate_frame", "gate_cohort"]

COHORT_EXPECTATIONS: list[tuple[str, dict[str, Any]]] = [
    ("ExpectTableRowCountToBeBetween", {"min_value": 1}),
    ("ExpectTableColumnsToMatchOrderedList", {"column_list": [*COHORT_COLUMNS, "_subject_n_splits"]}),
    *[("ExpectColumnValuesToNotBeNull", {"column": c})
      for c in ("dataset", "dicom_id", "subject_id", "study_id", "view", "split", "image_path")],
    *[("ExpectColumnValuesToBeOfType", {"column": c, "type_": "str"})
      for c in ("dataset", "dicom_id", "view", "split", "image_path")],
    *[("ExpectColumnValuesToBeOfType", {"column": c, "type_": "int"}) for c in ("subject_id", "study_id")],
    ("ExpectColumnValuesToBeInSet", {"column": "dataset", "value_set": ["demo", "mimic", "openi"]}),
    ("ExpectColumnValuesToBeUnique", {"column": "dicom_id"}),
    ("ExpectColumnValuesToBeInSet", {"column": "split", "value_set": list(SPLITS)}),
    ("ExpectColumnValuesToBeBetween", {"column": "_subject_n_splits", "min_value": 1, "max_value": 1}),
    *[("ExpectColumnValuesToBeInSet", {"column": c, "value_set": [1, 0, -1]}) for c in CHEXPERT_COLUMNS],
]


def cohort_gate_frame(cohort: pl.DataFrame) -> pl.DataFrame:
    """The cohort plus ``_subject_n_splits`` (distinct splits per subject; 1 when patient-disjoint)."""
    return cohort.with_columns(_subject_n_splits=pl.col("split").n_unique().over("subject_id").cast(pl.Int64))


def gate_cohort(cohort: pl.DataFrame, report_dir: str | Path = "reports/validation") -> dict[str, Any]:
    """Run the cohort suite (raises ValidationGateError on failure; report in report_dir/cohort.md)."""
    from nast.validation import gate

    return gate(cohort_gate_frame(cohort), "cohort", COHORT_EXPECTATIONS, report_dir=report_dir)
