"""Claims tables: extract_claims (pure), the extract-claims CLI, the cohort claims stage."""

from __future__ import annotations

import polars as pl
import pytest

from nast.cli import main
from nast.errors import StageError
from nast.text.claims import CLAIM_SCHEMA, extract_claims
from nast.text.cohort_claims import OUTPUT_COLUMNS, cohort_claims

REPORTS = pl.DataFrame(
    {
        "rid": ["r1", "r2", "r3", "r4"],
        "findings": [
            "Small left pleural effusion. No pneumothorax.",
            None,
            "Heart size is normal. Right lower lobe opacity may represent atelectasis.",
            "",
        ],
        "impression": ["No change in the small left effusion.", "   ", "No acute disease.", None],
    }
)


def test_extract_claims_rows_and_counts(nlp):
    claims, quarantine, stats = extract_claims(REPORTS, "rid", ["findings", "impression"])
    assert dict(claims.schema) == CLAIM_SCHEMA
    assert quarantine.height == 0
    assert stats == {"rows": 4, "rows_quarantined": 0, "rows_empty": 2, "rows_with_claims": 2, "claims": claims.height}
    got = [tuple(r) for r in claims.select("id", "finding", "polarity", "location", "severity").iter_rows()]
    assert got == [
        ("r1", "Pleural Effusion", "positive", "left", "small"),
        ("r1", "Pneumothorax", "negative", None, None),
        ("r1", "Pleural Effusion", "positive", "left", "small"),  # the impression: pseudo-negation
        ("r3", "Cardiomegaly", "negative", None, None),
        ("r3", "Lung Opacity", "positive", "right lower", None),
        ("r3", "Atelectasis", "uncertain", "right", None),  # the side travels along "may represent"
    ]
    assert claims["evidence"][1] == "No pneumothorax."


def test_missing_column_names_file_and_column(nlp):
    with pytest.raises(StageError, match=r"reports\.csv.*'impression_text'"):
        extract_claims(REPORTS, "rid", ["findings", "impression_text"], source="reports.csv")


def _write_csv(tmp_path):
    path = tmp_path / "reports.csv"
    REPORTS.write_csv(path)
    return path


def test_extract_claims_cli(tmp_path, params_path, nlp):
    src = _write_csv(tmp_path)
    out = tmp_path / "claims.parquet"
    rc = main(["extract-claims", str(src), "--id-col", "rid", "--text-cols", "findings,impression",
               "--out", str(out), "--params", str(params_path), "--report-dir", str(tmp_path / "gx")])
    assert rc == 0
    claims = pl.read_parquet(out)
    assert claims.height == 6
    assert set(claims["id"]) == {"r1", "r3"}
    assert (tmp_path / "gx" / "extract_claims.md").is_file()


def test_extract_claims_cli_missing_column(tmp_path, params_path, capsys):
    src = _write_csv(tmp_path)
    rc = main(["extract-claims", str(src), "--id-col", "report_id", "--text-cols", "findings",
               "--out", str(tmp_path / "x.parquet"), "--params", str(params_path), "--no-gate"])
    assert rc == 2
    err = capsys.readouterr().err
    assert "reports.csv" in err and "'report_id'" in err
    assert not (tmp_path / "x.parquet").exists()


def tiny_cohort() -> pl.DataFrame:
    """Two subjects, three studies, one study with two images (text repeated per image)."""
    rows = [
        # subject, study, dicom, view, split, findings, impression
        (1, 11, "d11a", "PA", "train", "Moderate right pleural effusion. No pneumothorax.", "Mild cardiomegaly."),
        (1, 11, "d11b", "LATERAL", "train", "Moderate right pleural effusion. No pneumothorax.", "Mild cardiomegaly."),
        (1, 12, "d12a", "AP", "train", "Bilateral pleural effusions. Possible left lower lobe pneumonia.", None),
        (2, 21, "d21a", "PA", "test", None, None),
        (2, 22, "d22a", "LATERAL", "test", "Small left pneumothorax.", None),
    ]
    df = pl.DataFrame(
        rows, schema=["subject_id", "study_id", "dicom_id", "view", "split", "findings", "impression"], orient="row"
    )
    return df.with_columns(
        pl.col("subject_id").cast(pl.Int64), pl.col("study_id").cast(pl.Int64),
        pl.lit("demo").alias("dataset"), (pl.lit("img/") + pl.col("dicom_id") + ".jpg").alias("image_path"),
    )


def test_cohort_claims_one_report_per_study(nlp):
    claims, quarantine, stats = cohort_claims(tiny_cohort(), ["findings", "impression"])
    assert claims.columns == OUTPUT_COLUMNS and quarantine.height == 0
    assert stats["studies"] == 4 and stats["rows_empty"] == 1
    # study 11 has two images but its report is read once
    s11 = claims.filter(pl.col("study_id") == 11)
    assert sorted(s11["finding"]) == ["Cardiomegaly", "Pleural Effusion", "Pneumothorax"]
    assert set(claims["id"]) == {"11", "12", "22"}
    assert claims.filter(pl.col("study_id") == 22)["split"].to_list() == ["test"]
    assert claims["study_id"].is_sorted()


def test_cohort_claims_missing_text_column(nlp):
    with pytest.raises(StageError, match=r"cohort\.parquet.*'impression'"):
        cohort_claims(tiny_cohort().drop("impression"), ["findings", "impression"], source="cohort.parquet")


# --------------------------------------------------------------------------- the per-row guard
def test_unreadable_reports_are_quarantined_and_the_run_goes_on(nlp):
    df = pl.DataFrame({
        "rid": ["a", "b", "c", "a", "d", None],
        "findings": ["Small left pleural effusion.", "x" * 61, "caf\ufffd effusion", "Pneumothorax.",
                     "No pneumothorax.", "Edema."],
        "impression": ["Mild cardiomegaly.", "Large pneumothorax.", None, None, None, None],
    })
    claims, quarantine, stats = extract_claims(df, "rid", ["findings", "impression"], max_chars=60)
    assert stats["rows"] == 6 and stats["rows_quarantined"] == 4
    # b's short impression is not read either: a report is read whole or not at all
    assert sorted(set(claims["id"])) == ["a", "d"]
    assert claims.filter(pl.col("id") == "a")["finding"].to_list() == ["Pleural Effusion", "Cardiomegaly"]
    rows = {r["source"].rsplit(" ", 1)[1]: r for r in quarantine.iter_rows(named=True)}
    assert set(rows) == {"2", "3", "4", "6"}
    assert "'findings' is 61 characters long" in rows["2"]["reason"] and rows["2"]["key"] == "b"
    assert "undecodable" in rows["3"]["reason"] and "U+FFFD at character 3" in rows["3"]["reason"]
    assert rows["4"]["reason"] == "duplicate id 'a' (kept at row 1)"
    assert rows["6"]["reason"] == "empty id in column 'rid'"
    assert set(quarantine["stage"]) == {"extract_claims"}


def test_default_limit_is_spacys(nlp):
    """A section of 1,000,001 characters (spaCy E088 before the guard) is quarantined by default."""
    df = pl.DataFrame({"rid": ["big", "ok"], "findings": ["effusion " * 111_112, "No effusion."]})
    assert len(df["findings"][0].strip()) == 1_000_007
    claims, quarantine, _ = extract_claims(df, "rid", ["findings"])
    assert claims["id"].to_list() == ["ok"] and quarantine["key"].to_list() == ["big"]
    assert "over the reader's limit of 1,000,000" in quarantine["reason"][0]


def test_extract_claims_cli_quarantines_undecodable_bytes(tmp_path, params_path, nlp):
    src = tmp_path / "latin1.csv"
    src.write_bytes(b"rid,findings\nr1,Small left effusion.\nr2,Caf\xe9 au lait. Pneumothorax.\nr3,No edema.\n")
    out = tmp_path / "claims.parquet"
    rc = main(["extract-claims", str(src), "--id-col", "rid", "--text-cols", "findings", "--out", str(out),
               "--params", str(params_path), "--no-gate"])
    assert rc == 0
    assert sorted(set(pl.read_parquet(out)["id"])) == ["r1", "r3"]
    q = pl.read_parquet(tmp_path / "claims.quarantine.parquet")
    assert q["key"].to_list() == ["r2"] and q["source"].to_list() == [f"{src} row 2"]


def test_cohort_claims_quarantines_oversized_study(nlp):
    cohort = tiny_cohort().with_columns(
        pl.when(pl.col("study_id") == 12).then(pl.lit("y" * 100)).otherwise(pl.col("findings")).alias("findings")
    )
    claims, quarantine, stats = cohort_claims(cohort, ["findings", "impression"], "cohort.parquet", max_chars=80)
    assert quarantine["key"].to_list() == ["12"] and set(quarantine["stage"]) == {"claims"}
    assert quarantine["source"].to_list() == ["cohort.parquet"]
    assert set(claims["study_id"]) == {11, 22} and stats["rows_quarantined"] == 1
