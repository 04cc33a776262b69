"""MedNega-CXR JSON export/import: official layout, round trip, cohort join, quarantine."""

from __future__ import annotations

import json

import polars as pl
import pytest
from conftest import CHECKER_NORMAL_CONDITIONS, REPO, make_permutations

from nast.cli import main
from nast.io import write_parquet
from nast.text.affirm import build_benchmark
from nast.text.mcq import build_mcq
from nast.text.mednega import BENCHMARK_COLUMNS, from_records, to_records

LETTERS = "ABCD"


@pytest.fixture(scope="module")
def bench(base_params):
    perm = make_permutations(6, seed=31, conditions=CHECKER_NORMAL_CONDITIONS)
    mcq, _, _ = build_mcq(perm, base_params)
    b, q, _ = build_benchmark(mcq, base_params)
    assert q.height == 0
    return b


def _cohort(bench: pl.DataFrame, drop_study: int) -> pl.DataFrame:
    rows = []
    for r in bench.iter_rows(named=True):
        if r["study_id"] == drop_study:
            rows.append({"study_id": r["study_id"], "dicom_id": "lat1", "view": "LATERAL", "image_path": "x/lat1.jpg",
                         "split": "test"})  # only a lateral image -> no frontal image
            continue
        rows.append({"study_id": r["study_id"], "dicom_id": "z-ap", "view": "AP",
                     "image_path": f"img/{r['study_id']}_ap.jpg", "split": "train"})
        rows.append({"study_id": r["study_id"], "dicom_id": "y-pa", "view": "PA",
                     "image_path": f"img/{r['study_id']}_pa.jpg", "split": "train"})
    return pl.DataFrame(rows)


def test_export_layout_matches_official(bench):
    recs = to_records(bench)
    r, row = recs[0], bench.sort(["subject_id", "study_id"]).row(0, named=True)
    assert list(r) == (["subject_id", "study_id", "question"] + [f"binary_raw_choice_{i}" for i in range(1, 5)]
                       + [f"negation_mcq_choice_{i}" for i in range(1, 5)]
                       + [f"affirmative_mcq_choice_{i}" for i in range(1, 5)] + ["correct_answer"])
    assert list(r["binary_raw_choice_2"]) == row["conditions"]          # sampling order kept
    assert list(r["binary_raw_choice_2"].values()) == row["option_B"]
    assert r["negation_mcq_choice_3"] == row["negated_C"] and r["affirmative_mcq_choice_4"] == row["affirmative_D"]
    assert r["correct_answer"] == row["correct"]


def test_cli_round_trip_with_cohort(bench, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    write_parquet(bench, tmp_path / "benchmark.parquet")
    drop = bench["study_id"][2]
    write_parquet(_cohort(bench, drop), tmp_path / "cohort.parquet")
    assert main(["mednega", "export", "--benchmark", "benchmark.parquet", "--out", "mednega.json",
                 "--params", str(REPO / "params.yaml")]) == 0
    records = json.loads((tmp_path / "mednega.json").read_text())
    assert len(records) == bench.height
    assert main(["mednega", "--params", str(REPO / "params.yaml"), "import", "mednega.json", "--out", "back.parquet",
                 "--cohort", "cohort.parquet"]) == 0
    back = pl.read_parquet(tmp_path / "back.parquet")
    q = pl.read_parquet(tmp_path / "back.quarantine.parquet")
    assert back.columns == BENCHMARK_COLUMNS
    assert q["key"].to_list() == [str(drop)] and "no frontal image" in q["reason"][0]
    assert back.height == bench.height - 1
    expect = bench.filter(pl.col("study_id") != drop).sort(["subject_id", "study_id"])
    same = [c for c in BENCHMARK_COLUMNS if c not in ("dicom_id", "image_path", "split", "mcq_backend")]
    assert back.select(same).equals(expect.select(same))
    assert back["dicom_id"].unique().to_list() == ["y-pa"]           # PA preferred over AP
    assert set(back["mcq_backend"]) == {"mednega"} and back["verified"].all() and back["affirm_verified"].all()
    # re-export gives the same records (minus the quarantined one)
    assert to_records(back) == [r for r in records if r["study_id"] != drop]


def test_import_accepts_string_label_forms_and_quarantines_defects(bench):
    recs = to_records(bench)
    good_str = dict(recs[0], **{f"binary_raw_choice_{i}": json.dumps(recs[0][f"binary_raw_choice_{i}"])
                                for i in range(1, 5)})
    pyrepr = dict(recs[1], **{f"binary_raw_choice_{i}": repr(recs[1][f"binary_raw_choice_{i}"]) for i in range(1, 5)})
    conds = list(recs[2]["binary_raw_choice_1"])
    bare = dict(recs[2], conditions=conds,
                **{f"binary_raw_choice_{i}": str(list(recs[2][f"binary_raw_choice_{i}"].values()))
                   for i in range(1, 5)})
    bare_no_conds = dict(recs[3], binary_raw_choice_1="[1, 0, 0]")
    bad_label = dict(recs[4], binary_raw_choice_2={**recs[4]["binary_raw_choice_2"], conds[0]: -1})
    bad_letter = dict(recs[5], correct_answer="E")
    missing = {k: v for k, v in recs[5].items() if k != "question"}
    df, q = from_records([good_str, pyrepr, bare, bare_no_conds, bad_label, bad_letter, missing, recs[0]], verify=False)
    assert df.height == 3 and q.height == 5
    reasons = " | ".join(q["reason"])
    for needle in ("without a 'conditions' field", "not in {0, 1}", "not in A-D", "missing field(s) ['question']",
                   "duplicate study_id"):
        assert needle in reasons
    assert df.sort("study_id")["option_A"].to_list() == bench.sort("study_id")["option_A"].to_list()[:3]


def test_import_flags_unverified_text(bench):
    recs = to_records(bench)
    wrong = dict(recs[0], negation_mcq_choice_1="The quick brown fox")
    df, q = from_records([wrong, recs[1]])
    assert q.height == 0
    flags = dict(zip(df["study_id"].to_list(), df["verified"].to_list()))
    assert flags == {recs[0]["study_id"]: False, recs[1]["study_id"]: True}
