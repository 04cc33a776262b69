"""``nast mednega``: export / import the MedNega-CXR JSON layout of the official NAST code.

Layout (as written by the official ``scripts/construct_evaluation_benchmark.py`` of
Ali-the-Special/NAST): a JSON list of records ::

    {"subject_id": 10000032, "study_id": 50414267,
     "question": "Which statement best describes this chest X-ray?",
     "binary_raw_choice_1": {"Atelectasis": 1, "Cardiomegaly": 0, "Edema": 0},   # option A
     ... binary_raw_choice_4,
     "negation_mcq_choice_1": "Atelectasis without cardiomegaly or edema", ... _4,
     "affirmative_mcq_choice_1": "Atelectasis with normal heart size and ...", ... _4,
     "correct_answer": "A"}

The official code stores each ``binary_raw_choice_i`` as a JSON object mapping the CheXpert
condition name to its 0/1 label, in the order the conditions were sampled; ``export`` writes exactly
that (key order preserved). ``import`` also accepts the object serialised as a string (JSON or a
Python dict literal, as a pandas round trip produces) and a bare list string such as "[1, 0, 0]"
when the record carries a ``conditions`` list; anything else is a quarantined record.

``import`` maps records to the benchmark schema (docs/CONTRACTS.md, ``benchmark.parquet``):
``true_labels`` is the correct option's vector, ``mcq_backend`` is "mednega", ``verified`` /
``affirm_verified`` are recomputed with the medspaCy checker (imported data are flagged, not
dropped). Images are attached by joining an optional ``--cohort`` on ``study_id`` (first frontal —
PA, then AP — image by dicom_id); with a cohort, records whose study has no image are quarantined.
"""

from __future__ import annotations

import ast
import json
import logging
from pathlib import Path
from typing import Any

import polars as pl

from nast.conditions import CONDITIONS
from nast.errors import StageError
from nast.io import quarantine_frame, reconcile

log = logging.getLogger(__name__)

STAGE = "mednega"
LETTERS = ("A", "B", "C", "D")
FRONTAL_ORDER = {"PA": 0, "AP": 1}
RECORD_FIELDS = (
    ["subject_id", "study_id", "question"]
    + [f"binary_raw_choice_{i}" for i in range(1, 5)]
    + [f"negation_mcq_choice_{i}" for i in range(1, 5)]
    + [f"affirmative_mcq_choice_{i}" for i in range(1, 5)]
    + ["correct_answer"]
)
BENCHMARK_COLUMNS = (
    ["subject_id", "study_id", "dicom_id", "image_path", "split", "conditions", "true_labels"]
    + [f"option_{L}" for L in LETTERS] + ["correct", "question"] + [f"negated_{L}" for L in LETTERS]
    + ["mcq_backend", "verified"] + [f"affirmative_{L}" for L in LETTERS] + ["affirm_verified"]
)
BENCHMARK_SCHEMA: dict[str, pl.DataType] = {
    "subject_id": pl.Int64, "study_id": pl.Int64, "dicom_id": pl.Utf8, "image_path": pl.Utf8, "split": pl.Utf8,
    "conditions": pl.List(pl.Utf8), "true_labels": pl.List(pl.Int8),
    **{f"option_{L}": pl.List(pl.Int8) for L in LETTERS}, "correct": pl.Utf8, "question": pl.Utf8,
    **{f"negated_{L}": pl.Utf8 for L in LETTERS}, "mcq_backend": pl.Utf8, "verified": pl.Boolean,
    **{f"affirmative_{L}": pl.Utf8 for L in LETTERS}, "affirm_verified": pl.Boolean,
}


# ---------------------------------------------------------------------------------------------
# export
# ---------------------------------------------------------------------------------------------
def to_records(bench: pl.DataFrame) -> list[dict[str, Any]]:
    """Benchmark rows -> MedNega-CXR records (label vectors as {condition: 0/1}, sampling order)."""
    records = []
    for row in bench.sort(["subject_id", "study_id"]).iter_rows(named=True):
        rec: dict[str, Any] = {"subject_id": int(row["subject_id"]), "study_id": int(row["study_id"]),
                               "question": row["question"]}
        for i, L in enumerate(LETTERS, 1):
            rec[f"binary_raw_choice_{i}"] = {c: int(v) for c, v in zip(row["conditions"], row[f"option_{L}"])}
        for i, L in enumerate(LETTERS, 1):
            rec[f"negation_mcq_choice_{i}"] = row[f"negated_{L}"]
        for i, L in enumerate(LETTERS, 1):
            rec[f"affirmative_mcq_choice_{i}"] = row[f"affirmative_{L}"]
        rec["correct_answer"] = row["correct"]
        records.append(rec)
    return records


# ---------------------------------------------------------------------------------------------
# import
# ---------------------------------------------------------------------------------------------
def _parse_choice(value: Any, conditions_hint: list[str] | None) -> dict[str, int]:
    """One binary_raw_choice value -> ordered {condition: label}; ValueError with the reason."""
    if isinstance(value, str):
        text = value.strip()
        try:
            value = json.loads(text)
        except ValueError:
            try:
                value = ast.literal_eval(text)
            except (ValueError, SyntaxError):
                raise ValueError(f"unparseable label vector {text!r}") from None
    if isinstance(value, (list, tuple)):
        if not conditions_hint:
            raise ValueError(f"bare label list {list(value)} without a 'conditions' field")
        if len(value) != len(conditions_hint):
            raise ValueError(f"label list {list(value)} does not match conditions {conditions_hint}")
        value = dict(zip(conditions_hint, value))
    if not isinstance(value, dict) or not value:
        raise ValueError(f"label vector is not a condition->label mapping: {value!r}")
    out = {}
    for cond, lab in value.items():
        if cond not in CONDITIONS:
            raise ValueError(f"unknown condition {cond!r}")
        try:
            lab_f = float(lab)
        except (TypeError, ValueError):
            raise ValueError(f"label {lab!r} of {cond} is not a number") from None
        if lab_f not in (0.0, 1.0):
            raise ValueError(f"label {lab!r} of {cond} not in {{0, 1}}")
        out[cond] = int(lab_f)
    return out


def record_to_row(rec: dict[str, Any]) -> dict[str, Any]:
    """One MedNega-CXR record -> a benchmark row (without image columns); ValueError names the defect."""
    if not isinstance(rec, dict):
        raise ValueError("record is not a JSON object")
    missing = [f for f in RECORD_FIELDS if f not in rec]
    if missing:
        raise ValueError(f"missing field(s) {missing}")
    hint = rec.get("conditions")
    choices = [_parse_choice(rec[f"binary_raw_choice_{i}"], hint) for i in range(1, 5)]
    conditions = list(choices[0])
    for i, ch in enumerate(choices[1:], 2):
        if set(ch) != set(conditions):
            raise ValueError(f"binary_raw_choice_{i} has conditions {list(ch)}, choice 1 has {conditions}")
    vectors = [[ch[c] for c in conditions] for ch in choices]
    if len({tuple(v) for v in vectors}) != 4:
        raise ValueError("two options have the same label vector")
    correct = str(rec["correct_answer"]).strip().upper().rstrip(".)")
    if correct not in LETTERS:
        raise ValueError(f"correct_answer {rec['correct_answer']!r} not in A-D")
    texts = {}
    for kind in ("negation", "affirmative"):
        for i in range(1, 5):
            v = rec[f"{kind}_mcq_choice_{i}"]
            if not isinstance(v, str) or not v.strip():
                raise ValueError(f"{kind}_mcq_choice_{i} is empty")
            texts[(kind, i)] = v.strip()
    try:
        subject_id, study_id = int(rec["subject_id"]), int(rec["study_id"])
    except (TypeError, ValueError):
        raise ValueError("subject_id / study_id not integers") from None
    row = {"subject_id": subject_id, "study_id": study_id, "conditions": conditions,
           "true_labels": vectors[LETTERS.index(correct)], "correct": correct,
           "question": str(rec["question"] or "").strip()}
    for i, L in enumerate(LETTERS):
        row[f"option_{L}"] = vectors[i]
        row[f"negated_{L}"] = texts[("negation", i + 1)]
        row[f"affirmative_{L}"] = texts[("affirmative", i + 1)]
    return row


def first_frontal_images(cohort: pl.DataFrame) -> pl.DataFrame:
    """study_id -> dicom_id, image_path, split of the first frontal image (PA before AP, then dicom_id)."""
    return (
        cohort.filter(pl.col("view").is_in(list(FRONTAL_ORDER)))
        .with_columns(pl.col("view").replace_strict(FRONTAL_ORDER, default=9).alias("_rank"))
        .sort(["study_id", "_rank", "dicom_id"])
        .group_by("study_id", maintain_order=True)
        .first()
        .select("study_id", "dicom_id", "image_path", "split")
    )


def verify_rows(df: pl.DataFrame, n_process: int = 0) -> pl.DataFrame:
    """Recompute verified / affirm_verified with the medspaCy checker (flags, never drops)."""
    from nast.text.generation import PolarityVerifier

    v = PolarityVerifier(n_process)
    rows = df.to_dicts()
    v.prefetch([(r[f"{k}_{L}"], r["conditions"]) for r in rows for k in ("negated", "affirmative") for L in LETTERS],
               cues=True)
    neg_ok, aff_ok = [], []
    for r in rows:
        neg_ok.append(all(not v.mismatches(L, r[f"negated_{L}"], r["conditions"], r[f"option_{L}"]) for L in LETTERS))
        aff_ok.append(all(not v.mismatches(L, r[f"affirmative_{L}"], r["conditions"], r[f"option_{L}"])
                          and not v.has_cue(r[f"affirmative_{L}"]) for L in LETTERS))
    return df.with_columns(pl.Series("verified", neg_ok, dtype=pl.Boolean),
                           pl.Series("affirm_verified", aff_ok, dtype=pl.Boolean))


def read_records(path: str | Path, what: str = "MedNega-CXR JSON") -> list[Any]:
    """The official JSON file: a list of records; a missing file, bad JSON or another top level is a
    StageError naming the file (``what`` names it in the not-found message)."""
    path = Path(path)
    if not path.is_file():
        raise StageError(f"{what} not found: {path}")
    try:
        records = json.loads(path.read_text(encoding="utf-8"))
    except ValueError as exc:
        raise StageError(f"{path}: not valid JSON: {exc}") from None
    if not isinstance(records, list):
        raise StageError(f"{path}: top level must be a JSON list of records")
    return records


def from_records(records: list[Any], cohort: pl.DataFrame | None = None, source: str = "",
                 verify: bool = True, n_process: int = 0) -> tuple[pl.DataFrame, pl.DataFrame]:
    """MedNega-CXR records -> (benchmark table, quarantine). Pure apart from the checker."""
    rows, quarantine, seen = [], [], set()
    for n, rec in enumerate(records):
        key = rec.get("study_id", f"record {n}") if isinstance(rec, dict) else f"record {n}"
        try:
            row = record_to_row(rec)
        except ValueError as exc:
            quarantine.append({"stage": STAGE, "key": key, "reason": str(exc), "source": source})
            continue
        if row["study_id"] in seen:
            quarantine.append({"stage": STAGE, "key": key, "reason": "duplicate study_id", "source": source})
            continue
        seen.add(row["study_id"])
        rows.append(row)
    df = pl.DataFrame(rows, schema={k: v for k, v in BENCHMARK_SCHEMA.items()
                                    if k not in ("dicom_id", "image_path", "split", "mcq_backend", "verified",
                                                 "affirm_verified")})
    df = df.with_columns(pl.lit("mednega").alias("mcq_backend"))
    if cohort is not None:
        images = first_frontal_images(cohort)
        df = df.join(images, on="study_id", how="left")
        no_image = df.filter(pl.col("image_path").is_null())
        for sid in no_image["study_id"].to_list():
            quarantine.append({"stage": STAGE, "key": sid, "reason": "no frontal image for this study in the cohort",
                               "source": source})
        df = df.filter(pl.col("image_path").is_not_null())
    else:
        df = df.with_columns(pl.lit(None, dtype=pl.Utf8).alias(c) for c in ("dicom_id", "image_path", "split"))
    if verify and df.height:
        df = verify_rows(df, n_process)
    else:
        df = df.with_columns(pl.lit(None, dtype=pl.Boolean).alias("verified"),
                             pl.lit(None, dtype=pl.Boolean).alias("affirm_verified"))
    df = df.select(BENCHMARK_COLUMNS).cast(BENCHMARK_SCHEMA).sort(["subject_id", "study_id"])
    qdf = quarantine_frame(quarantine)
    reconcile(STAGE, len(records), df.height, qdf.height)
    return df, qdf



