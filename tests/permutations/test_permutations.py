"""NAST permutations: every rule, determinism, image choice, quarantine, gate, CLI."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import polars as pl
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from nast.cli import main
from nast.conditions import CHEXPERT_COLUMNS, CONDITIONS
from nast.errors import StageError, ValidationGateError
from nast.permutations import build_permutations, gate_permutations, permutations_gate_frame

STATES = [1, 0, -1, None]


def make_cohort(label_rows, views=None, start_study=5000):
    """One image per study (unless views lists several per study)."""
    n = len(label_rows)
    views = views or [["PA"]] * n
    rows = []
    for i, (labels, vs) in enumerate(zip(label_rows, views)):
        for j, v in enumerate(vs):
            row = {"dataset": "demo", "dicom_id": f"d{start_study + i}_{j}", "subject_id": 100 + i // 2,
                   "study_id": start_study + i, "view": v, "split": "train",
                   "image_path": f"/img/{start_study + i}_{j}.jpg", "report_path": None,
                   "findings": None, "impression": "x"}
            row.update(dict(zip(CHEXPERT_COLUMNS, labels)))
            rows.append(row)
    schema = {"dataset": pl.Utf8, "dicom_id": pl.Utf8, "subject_id": pl.Int64, "study_id": pl.Int64,
              "view": pl.Utf8, "split": pl.Utf8, "image_path": pl.Utf8, "report_path": pl.Utf8,
              "findings": pl.Utf8, "impression": pl.Utf8, **{c: pl.Int8 for c in CHEXPERT_COLUMNS}}
    return pl.DataFrame(rows, schema=schema)


def random_labels(n, seed):
    rng = np.random.default_rng(seed)
    idx = rng.choice(4, size=(n, len(CHEXPERT_COLUMNS)), p=[0.3, 0.35, 0.1, 0.25])
    return [[STATES[j] for j in row] for row in idx]


def check_rules(cohort, out, k, min_zeros, min_ones):
    """Assert every NAST rule on every output row (plain Python, independent of the implementation)."""
    by_study = {r["study_id"]: r for r in cohort.iter_rows(named=True)}
    letters = "ABCD"
    n_eligible = 0
    for r in cohort.unique("study_id").iter_rows(named=True):
        zeros = sum(r[c] == 0 for c in CONDITIONS)
        ones = sum(r[c] == 1 for c in CONDITIONS)
        n_eligible += zeros >= min_zeros and ones >= min_ones and zeros + ones >= k
    assert out.height == n_eligible
    for row in out.iter_rows(named=True):
        src = by_study[row["study_id"]]
        conds, true = row["conditions"], row["true_labels"]
        assert len(conds) == k == len(set(conds)) and set(conds) <= set(CONDITIONS)
        assert "No Finding" not in conds
        assert true == [src[c] for c in conds]  # true labels are the study's labels
        assert set(true) <= {0, 1}  # -1 and blank never sampled
        if min_ones >= 1 and min_zeros >= 1:
            assert 0 in true and 1 in true  # a mix of positives and negatives
        opts = [tuple(row[f"option_{x}"]) for x in letters]
        assert len(set(opts)) == 4
        assert all(len(o) == k and set(o) <= {0, 1} for o in opts)
        assert [o == tuple(true) for o in opts].count(True) == 1
        assert opts[letters.index(row["correct"])] == tuple(true)
        for o in opts:
            flips = sum(a != b for a, b in zip(o, true))
            assert flips == 0 or 1 <= flips <= k


def test_all_rules_over_many_studies():
    cohort = make_cohort(random_labels(3000, seed=1))
    out, quarantine, summary = build_permutations(cohort, k=3, min_zeros=3, min_ones=2, seed=0)
    assert out.height > 1000
    check_rules(cohort, out, 3, 3, 2)
    assert quarantine.height == 0
    assert summary["studies_in"] == summary["kept"] + summary["skipped_rule"] + summary["skipped_no_frontal"]
    # correct letter roughly uniform, distractors use 1, 2 and 3 flips
    counts = out["correct"].value_counts()
    assert counts.height == 4 and counts["count"].min() > out.height / 4 * 0.8
    assert all(v > 0 for v in summary["distractor_flip_counts"].values())


@pytest.mark.parametrize("k,min_zeros,min_ones", [(2, 1, 1), (4, 2, 2), (5, 0, 0)])
def test_rules_for_other_parameters(k, min_zeros, min_ones):
    cohort = make_cohort(random_labels(400, seed=k))
    out, _, _ = build_permutations(cohort, k=k, min_zeros=min_zeros, min_ones=min_ones, seed=3)
    check_rules(cohort, out, k, min_zeros, min_ones)


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    labels=st.lists(st.lists(st.sampled_from(STATES), min_size=14, max_size=14), min_size=1, max_size=30),
    seed=st.integers(0, 2**31),
    k=st.integers(2, 4),
)
def test_rules_hypothesis(labels, seed, k):
    cohort = make_cohort(labels)
    out, _, summary = build_permutations(cohort, k=k, min_zeros=1, min_ones=1, seed=seed)
    check_rules(cohort, out, k, 1, 1)
    assert summary["kept"] + summary["skipped_rule"] == len(labels)


def test_deterministic_and_independent_of_row_order_and_other_studies():
    labels = random_labels(600, seed=7)
    cohort = make_cohort(labels)
    a, _, _ = build_permutations(cohort, k=3, min_zeros=3, min_ones=2, seed=0)
    b, _, _ = build_permutations(cohort.sample(fraction=1.0, shuffle=True, seed=5), k=3, min_zeros=3, min_ones=2,
                                 seed=0)
    assert a.equals(b)
    half, _, _ = build_permutations(cohort.head(300), k=3, min_zeros=3, min_ones=2, seed=0)
    assert half.equals(a.filter(pl.col("study_id").is_in(half["study_id"].to_list())))
    c, _, _ = build_permutations(cohort, k=3, min_zeros=3, min_ones=2, seed=1)
    assert not a.equals(c)


def test_first_frontal_image_and_no_frontal_skip():
    lab = [1, 1, 0, 0, 0, 1, 0, 0, None, 0, 0, 0, 0, 1]
    cohort = make_cohort([lab, lab, lab], views=[["LATERAL", "AP", "PA", "PA"], ["AP", "LATERAL", "AP"], ["LATERAL"]])
    out, _, summary = build_permutations(cohort, k=3, min_zeros=3, min_ones=2, seed=0)
    assert dict(zip(out["study_id"], out["dicom_id"])) == {5000: "d5000_2", 5001: "d5001_0"}
    assert summary["skipped_no_frontal"] == 1 and summary["studies_in"] == 3


def test_bad_label_is_quarantined_and_missing_column_refused():
    lab = [1, 1, 0, 0, 0, 1, 0, 0, None, 0, 0, 0, 0, 1]
    bad = list(lab)
    bad[CHEXPERT_COLUMNS.index("Edema")] = 2
    cohort = make_cohort([lab, bad])
    out, quarantine, summary = build_permutations(cohort, k=3, min_zeros=3, min_ones=2, seed=0)
    assert out["study_id"].to_list() == [5000]
    assert quarantine.row(0, named=True)["key"] == "5001"
    assert "'Edema'" in quarantine.row(0, named=True)["reason"]
    assert summary["quarantined"] == 1
    with pytest.raises(StageError, match="'Pleural Effusion'"):
        build_permutations(cohort.drop("Pleural Effusion"), k=3, min_zeros=3, min_ones=2, seed=0, source="c.parquet")


def test_gate_passes_and_fails_on_broken_options(tmp_path):
    cohort = make_cohort(random_labels(200, seed=2))
    out, _, _ = build_permutations(cohort, k=3, min_zeros=3, min_ones=2, seed=0)
    gate_permutations(out, 3, report_dir=tmp_path)
    broken = out.with_columns(option_A=pl.col("option_B"), correct=pl.lit("E"))
    frame = permutations_gate_frame(broken)
    assert (frame["_n_equal_option_pairs"] >= 1).all()
    with pytest.raises(ValidationGateError, match="permutations.md"):
        gate_permutations(broken, 3, report_dir=tmp_path)
    md = (tmp_path / "permutations.md").read_text()
    assert "_n_equal_option_pairs" in md and "`correct`" in md


def test_cli(tmp_path, monkeypatch):
    import yaml

    params = yaml.safe_load(Path("params.yaml").read_text())
    monkeypatch.chdir(tmp_path)
    (tmp_path / "params.yaml").write_text(yaml.safe_dump(params))
    make_cohort(random_labels(300, seed=4)).write_parquet(tmp_path / "cohort.parquet")
    args = ["permutations", "--cohort", "cohort.parquet", "--out", "p.parquet", "--quarantine", "q/perm.parquet",
            "--validation-dir", "val"]
    assert main(args) == 0
    first = (tmp_path / "p.parquet").read_bytes()
    assert main(args) == 0
    assert (tmp_path / "p.parquet").read_bytes() == first
    summary = json.loads((tmp_path / "q/perm.summary.json").read_text())
    assert summary["kept"] == pl.read_parquet(tmp_path / "p.parquet").height
    assert "PASSED" in (tmp_path / "val/permutations.md").read_text()
    assert main(["permutations", "--cohort", "nope.parquet", "--out", "p.parquet", "--quarantine", "q.parquet"]) == 2
