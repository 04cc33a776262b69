"""NAST label permutations: per study, k conditions and four candidate label vectors A-D.

The rule (NAST / MedNega-CXR construction)
------------------------------------------
1. **One image per study**: the first frontal image, ordered by view ``PA`` then ``AP`` then
   ``dicom_id``. A study without a PA/AP image is skipped (counted as ``skipped_no_frontal``).
2. **Eligibility**: among the 13 CheXpert conditions (``No Finding`` excluded) the study needs
   at least ``permutations.min_zeros`` negatives (0) and ``permutations.min_ones`` positives (1),
   and at least ``k`` of them in total. Uncertain (-1) and blank (null) conditions are never
   sampled. An ineligible study is not a defect: it is counted (``skipped_rule``), not quarantined.
3. **k conditions** are sampled among the study's 0/1 conditions so that the set mixes polarities:
   one positive (uniform among the positives) and one negative (uniform among the negatives) are
   always drawn when the study has them, the other ``k-2`` uniformly among the remaining 0/1
   conditions. The k conditions are then put in a uniformly random order (``conditions`` lists
   them in that order; ``true_labels`` are their labels).
4. **Options**: the correct option is ``true_labels``. The three distractors are
   ``true_labels XOR m`` for three *distinct non-zero* flip masks ``m`` in ``[1, 2^k - 1]`` drawn
   uniformly without replacement (so each distractor flips between 1 and k labels, and no two
   options are equal). The correct letter is uniform over A-D; the distractors fill the other
   letters in draw order.

Randomness is counter-based: every random number of a study is ``splitmix64(seed, study_id,
stream)``, so a study's permutation depends only on ``(seed, study_id)`` - not on row order and
not on which other studies are in the cohort - and the whole stage is vectorised with numpy over
an ``n_studies x 13`` label matrix (no Python loop over studies; ~227k studies in well under a
second of core time).

Row-level defects (quarantined, key ``study_id``): a label outside {1, 0, -1, null} in the chosen
image row, or a null ``image_path``/``split``. ``studies in = kept + quarantined + skipped_rule +
skipped_no_frontal`` is asserted. The output is gated by the ``permutations`` Great Expectations
suite (:data:`PERMUTATION_EXPECTATIONS` on :func:`permutations_gate_frame`).
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

import numpy as np
import polars as pl

from nast.conditions import CONDITIONS
from nast.config import params_file as _pf
from nast.errors import StageError

log = logging.getLogger(__name__)


LETTERS: tuple[str, ...] = ("A", "B", "C", "D")
OPTION_COLUMNS: tuple[str, ...] = tuple(f"option_{x}" for x in LETTERS)
FRONTAL_ORDER: dict[str, int] = {"PA": 0, "AP": 1}
INPUT_COLUMNS: tuple[str, ...] = ("subject_id", "study_id", "dicom_id", "view", "image_path", "split", *CONDITIONS)
OUTPUT_COLUMNS: tuple[str, ...] = (
    "subject_id", "study_id", "dicom_id", "image_path", "split", "conditions", "true_labels", *OPTION_COLUMNS,
    "correct",
)

# random streams (per study): 0..12 condition scores, 13..25 order keys, 26..28 masks, 29 letter
_S_SCORE, _S_ORDER, _S_MASK, _S_LETTER = 0, 13, 26, 29

_M1 = np.uint64(0xBF58476D1CE4E5B9)
_M2 = np.uint64(0x94D049BB133111EB)
_GOLD = np.uint64(0x9E3779B97F4A7C15)


def _splitmix64(x: np.ndarray) -> np.ndarray:
    x = x + _GOLD
    x = (x ^ (x >> np.uint64(30))) * _M1
    x = (x ^ (x >> np.uint64(27))) * _M2
    return x ^ (x >> np.uint64(31))


def uniforms(seed: int, keys: np.ndarray, streams: int, first_stream: int = 0) -> np.ndarray:
    """``[n, streams]`` uniforms in [0, 1), a pure function of (seed, key, stream index)."""
    with np.errstate(over="ignore"):
        k = _splitmix64(keys.astype(np.int64).view(np.uint64) ^ _splitmix64(np.array([seed], dtype=np.uint64)))
        s = np.arange(first_stream, first_stream + streams, dtype=np.uint64)
        h = _splitmix64(k[:, None] * _M1 + s[None, :])
    return (h >> np.uint64(11)).astype(np.float64) * (1.0 / (1 << 53))


# --------------------------------------------------------------------------- core (pure)
def select_images(cohort: pl.DataFrame) -> tuple[pl.DataFrame, int]:
    """One row per study: its first frontal image (PA, then AP, then dicom_id).

    Returns the frame and the number of studies without a frontal image.
    """
    n_studies = cohort.select(pl.struct("subject_id", "study_id").n_unique()).item() if cohort.height else 0
    frontal = cohort.filter(pl.col("view").is_in(list(FRONTAL_ORDER)))
    first = (
        frontal.with_columns(_vrank=pl.col("view").replace_strict(FRONTAL_ORDER, return_dtype=pl.Int8))
        .sort(["subject_id", "study_id", "_vrank", "dicom_id"])
        .unique(subset=["subject_id", "study_id"], keep="first", maintain_order=True)
        .drop("_vrank")
    )
    return first, n_studies - first.height


def sample_permutations(labels: np.ndarray, study_ids: np.ndarray, k: int, seed: int) -> dict[str, np.ndarray]:
    """Vectorised NAST sampling for eligible studies.

    Args:
        labels: ``[n, 13]`` int8 labels of :data:`nast.conditions.CONDITIONS` (1, 0, -1; null as -2).
        study_ids: ``[n]`` keys of the random streams.
        k: conditions per study (each row must have >= k labels in {0, 1}).

    Returns:
        ``cond_idx [n, k]`` (indices into CONDITIONS, in sampling order), ``true [n, k]`` int8,
        ``options [n, 4, k]`` int8 (A-D), ``correct [n]`` int (0-3), ``flips [n, 4]`` labels flipped
        per option (0 for the correct one).
    """
    n, c = labels.shape
    if not 2 <= k <= min(c, 62):
        raise StageError(f"{_pf()}: permutations.k must be between 2 and {min(c, 62)}, got {k}")
    u = uniforms(seed, study_ids, 30)
    eligible = (labels == 0) | (labels == 1)
    score = np.where(eligible, u[:, _S_SCORE:_S_SCORE + c], -np.inf)
    rows = np.arange(n)
    for value in (1, 0):  # force one positive and one negative where the study has them
        s = np.where(labels == value, score, -np.inf)
        j = s.argmax(axis=1)
        has = np.isfinite(s[rows, j])
        score[rows[has], j[has]] += 2.0
    chosen = np.argsort(-score, axis=1, kind="stable")[:, :k]  # top-k scores
    order = np.argsort(u[:, _S_ORDER:_S_ORDER + c][rows[:, None], chosen], axis=1, kind="stable")
    cond_idx = np.take_along_axis(chosen, order, axis=1)
    true = labels[rows[:, None], cond_idx].astype(np.int8)

    # three distinct non-zero flip masks: sequential sampling without replacement from [1, 2^k - 1]
    m = (1 << k) - 1
    um = u[:, _S_MASK:_S_MASK + 3]
    a = np.floor(um[:, 0] * m).astype(np.int64)
    b = np.floor(um[:, 1] * (m - 1)).astype(np.int64)
    b += b >= a
    lo, hi = np.minimum(a, b), np.maximum(a, b)
    cc = np.floor(um[:, 2] * (m - 2)).astype(np.int64)
    cc += cc >= lo
    cc += cc >= hi
    masks = np.stack([a, b, cc], axis=1) + 1  # [n, 3] in [1, m]
    bits = ((masks[:, :, None] >> np.arange(k)[None, None, :]) & 1).astype(np.int8)  # [n, 3, k]
    distractors = true[:, None, :] ^ bits

    correct = np.minimum(np.floor(u[:, _S_LETTER] * 4).astype(np.int64), 3)
    slot = np.arange(4)[None, :]  # option slot -> distractor index (skipping the correct slot)
    d_index = np.where(slot < correct[:, None], slot, slot - 1).clip(0, 2)
    options = np.where(
        (slot == correct[:, None])[:, :, None],
        true[:, None, :],
        np.take_along_axis(distractors, d_index[:, :, None].repeat(k, axis=2), axis=1),
    ).astype(np.int8)
    flips = (options != true[:, None, :]).sum(axis=2)
    return {"cond_idx": cond_idx, "true": true, "options": options, "correct": correct, "flips": flips}


def build_permutations(
    cohort: pl.DataFrame, *, k: int, min_zeros: int, min_ones: int, seed: int, source: str = "cohort"
) -> tuple[pl.DataFrame, pl.DataFrame, dict[str, Any]]:
    """Cohort -> ``(permutations, quarantine, summary)`` (pure; see the module docstring)."""
    from nast.io import quarantine_frame, reconcile, require_columns

    require_columns(cohort, INPUT_COLUMNS, source)
    if k > min_zeros + min_ones:
        log.info("permutations: k=%d > min_zeros+min_ones; studies also need >= k labelled conditions", k)
    first, n_no_frontal = select_images(cohort)
    n_in = first.height + n_no_frontal

    # row-level defects
    label_ok = pl.all_horizontal([pl.col(c).is_null() | pl.col(c).is_in([1, 0, -1]) for c in CONDITIONS])
    bad_label = pl.coalesce([
        pl.when(~(pl.col(c).is_null() | pl.col(c).is_in([1, 0, -1])))
        .then(pl.concat_str([pl.lit(f"bad label value in column '{c}': "), pl.col(c).cast(pl.Utf8)]))
        for c in CONDITIONS
    ])
    first = first.with_columns(
        _reason=pl.when(~label_ok).then(bad_label)
        .when(pl.col("image_path").is_null() | pl.col("dicom_id").is_null()).then(pl.lit("no image_path/dicom_id"))
        .when(pl.col("split").is_null()).then(pl.lit("no split"))
    )
    bad = first.filter(pl.col("_reason").is_not_null()).sort("study_id")
    quarantine = quarantine_frame(
        {"stage": "permutations", "key": s, "reason": r, "source": source}
        for s, r in zip(bad["study_id"].to_list(), bad["_reason"].to_list())
    )
    good = first.filter(pl.col("_reason").is_null())

    n_zero = pl.sum_horizontal([(pl.col(c) == 0).fill_null(False).cast(pl.Int32) for c in CONDITIONS])
    n_one = pl.sum_horizontal([(pl.col(c) == 1).fill_null(False).cast(pl.Int32) for c in CONDITIONS])
    good = good.with_columns(_n0=n_zero, _n1=n_one)
    rule = (pl.col("_n0") >= min_zeros) & (pl.col("_n1") >= min_ones) & (pl.col("_n0") + pl.col("_n1") >= k)
    eligible = good.filter(rule).sort(["subject_id", "study_id"])
    n_skipped = good.height - eligible.height

    labels = eligible.select([pl.col(c).fill_null(-2).cast(pl.Int8) for c in CONDITIONS]).to_numpy()
    labels = labels.reshape(eligible.height, len(CONDITIONS))
    res = sample_permutations(labels, eligible["study_id"].to_numpy(), k, seed)
    n = eligible.height

    def as_list(name: str, values: np.ndarray | pl.Series, dtype: pl.DataType) -> pl.Series:
        # flat values -> [n, k] Array -> List (no per-row Python objects)
        flat = values if isinstance(values, pl.Series) else pl.Series(np.ascontiguousarray(values).ravel())
        return flat.reshape((n, k)).cast(pl.List(dtype)).alias(name)

    names = pl.Series(list(CONDITIONS), dtype=pl.Utf8)
    out = eligible.select("subject_id", "study_id", "dicom_id", "image_path", "split").with_columns(
        as_list("conditions", names.gather(res["cond_idx"].ravel()), pl.Utf8),
        as_list("true_labels", res["true"], pl.Int8),
        *[as_list(col, res["options"][:, i, :], pl.Int8) for i, col in enumerate(OPTION_COLUMNS)],
        pl.Series("correct", LETTERS, dtype=pl.Utf8).gather(res["correct"]),
    ).select(OUTPUT_COLUMNS)

    reconcile("permutations", n_in - n_skipped - n_no_frontal, out.height, quarantine.height)
    flips = res["flips"][res["flips"] > 0]
    sampled = np.bincount(res["cond_idx"].ravel(), minlength=len(CONDITIONS)) if out.height else np.zeros(13, int)
    summary = {
        "studies_in": n_in,
        "kept": out.height,
        "quarantined": quarantine.height,
        "skipped_rule": n_skipped,
        "skipped_no_frontal": n_no_frontal,
        "rule": {"k": k, "min_zeros": min_zeros, "min_ones": min_ones, "seed": seed},
        "correct_letter_counts": {x: int((res["correct"] == i).sum()) for i, x in enumerate(LETTERS)},
        "distractor_flip_counts": {str(f): int((flips == f).sum()) for f in range(1, k + 1)},
        "true_label_ones": int(res["true"].sum()),
        "true_label_zeros": int((res["true"] == 0).sum()),
        "sampled_condition_counts": {c: int(n) for c, n in zip(CONDITIONS, sampled)},
    }
    return out, quarantine, summary


# --------------------------------------------------------------------------- validation suite
def permutations_gate_frame(df: pl.DataFrame) -> pl.DataFrame:
    """Scalar per-study checks derived from the list columns (what the GX suite validates)."""
    eq = {x: pl.col(f"option_{x}") == pl.col("true_labels") for x in LETTERS}
    pairs = [(a, b) for i, a in enumerate(LETTERS) for b in LETTERS[i + 1:]]
    all_labels = pl.concat_list(["true_labels", *OPTION_COLUMNS])
    return df.select(
        "study_id", "dicom_id", "image_path", "split", "correct",
        _n_options_equal_true=pl.sum_horizontal([e.cast(pl.Int32) for e in eq.values()]),
        _correct_is_true=pl.coalesce([pl.when(pl.col("correct") == x).then(e) for x, e in eq.items()]).fill_null(False),
        _n_equal_option_pairs=pl.sum_horizontal(
            [(pl.col(f"option_{a}") == pl.col(f"option_{b}")).cast(pl.Int32) for a, b in pairs]),
        _n_conditions=pl.col("conditions").list.len().cast(pl.Int64),
        _n_distinct_conditions=pl.col("conditions").list.n_unique().cast(pl.Int64),
        _conditions_known=pl.col("conditions").list.eval(pl.element().is_in(list(CONDITIONS))).list.all(),
        _option_lengths_ok=pl.all_horizontal(
            [pl.col(c).list.len() == pl.col("conditions").list.len() for c in ("true_labels", *OPTION_COLUMNS)]),
        _min_label=all_labels.list.min().cast(pl.Int64),
        _max_label=all_labels.list.max().cast(pl.Int64),
    )


def permutation_expectations(k: int) -> list[tuple[str, dict[str, Any]]]:
    """The ``permutations`` suite as data (run on :func:`permutations_gate_frame`)."""
    one = {"min_value": 1, "max_value": 1}
    return [
        ("ExpectTableRowCountToBeBetween", {"min_value": 1}),
        ("ExpectColumnValuesToBeUnique", {"column": "study_id"}),
        *[("ExpectColumnValuesToNotBeNull", {"column": c}) for c in ("dicom_id", "image_path", "split", "correct")],
        ("ExpectColumnValuesToBeInSet", {"column": "correct", "value_set": list(LETTERS)}),
        ("ExpectColumnValuesToBeInSet", {"column": "split", "value_set": ["train", "validate", "test"]}),
        ("ExpectColumnValuesToBeBetween", {"column": "_n_options_equal_true", **one}),
        ("ExpectColumnValuesToBeInSet", {"column": "_correct_is_true", "value_set": [True]}),
        ("ExpectColumnValuesToBeBetween", {"column": "_n_equal_option_pairs", "min_value": 0, "max_value": 0}),
        ("ExpectColumnValuesToBeBetween", {"column": "_n_conditions", "min_value": k, "max_value": k}),
        ("ExpectColumnValuesToBeBetween", {"column": "_n_distinct_conditions", "min_value": k, "max_value": k}),
        ("ExpectColumnValuesToBeInSet", {"column": "_conditions_known", "value_set": [True]}),
        ("ExpectColumnValuesToBeInSet", {"column": "_option_lengths_ok", "value_set": [True]}),
        ("ExpectColumnValuesToBeBetween", {"column": "_min_label", "min_value": 0, "max_value": 1}),
        ("ExpectColumnValuesToBeBetween", {"column": "_max_label", "min_value": 0, "max_value": 1}),
    ]


#: the suite for the default k = 3 (params permutations.k)
PERMUTATION_EXPECTATIONS = permutation_expectations(3)


def gate_permutations(df: pl.DataFrame, k: int, report_dir: str | Path = "reports/validation") -> dict[str, Any]:
    from nast.validation import gate

    return gate(permutations_gate_frame(df), "permutations", permutation_expectations(k), report_dir=report_dir)



