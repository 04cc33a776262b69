"""``nast label``: 4-state CheXpert labels per report, checked against labels written by hand.

The expected labels below were written by reading each tiny report (the oracle does not call the
reader). Only the mentioned conditions are listed; every other condition is blank.
"""

from __future__ import annotations

import gzip
from types import SimpleNamespace as M

import polars as pl
import pytest

from nast.cli import main
from nast.conditions import CHEXPERT_COLUMNS
from nast.ingest.common import parse_label_columns, read_csv_strings
from nast.text.label import chexpert_labels, label_reports

# id -> (findings, impression, {condition: label}); "No Finding" listed where it is 1
HAND_LABELLED = {
    "r1": ("Small left pleural effusion. No pneumothorax.", "Possible pneumonia.",
           {"Pleural Effusion": 1, "Pneumothorax": 0, "Pneumonia": -1}),
    # positive beats uncertain across sentences and sections (CheXpert's aggregation, the default)
    "r2": ("Right lower lobe pneumonia.", "Possible pneumonia or atelectasis.",
           {"Pneumonia": 1, "Atelectasis": -1}),
    # positive beats negative
    "r3": ("No effusion on the left.", "Small right pleural effusion.", {"Pleural Effusion": 1}),
    # No Finding: nothing positive or uncertain
    "r4": ("Heart size is normal. The lungs are clear. No pneumothorax or pleural effusion.", "No acute disease.",
           {"Cardiomegaly": 0, "Lung Opacity": 0, "Pneumothorax": 0, "Pleural Effusion": 0, "No Finding": 1}),
    # Support Devices do not cancel No Finding
    "r5": ("Pacemaker in place.", "No pneumothorax.", {"Support Devices": 1, "Pneumothorax": 0, "No Finding": 1}),
    # an uncertain finding does cancel it
    "r6": ("Possible small left effusion.", None, {"Pleural Effusion": -1}),
    # text without any condition: CheXpert's rule gives No Finding
    "r7": ("Comparison is made to the prior study.", "", {"No Finding": 1}),
    "r8": (None, "Mild cardiomegaly. No edema.", {"Cardiomegaly": 1, "Edema": 0}),
}


def _frame(rows: dict) -> pl.DataFrame:
    return pl.DataFrame(
        {"rid": list(rows), "findings": [v[0] for v in rows.values()], "impression": [v[1] for v in rows.values()]},
        schema={"rid": pl.Utf8, "findings": pl.Utf8, "impression": pl.Utf8},
    )


def _expected(rid: str) -> dict:
    return {c: HAND_LABELLED[rid][2].get(c) for c in CHEXPERT_COLUMNS}


def test_labels_match_hand_labels(nlp):
    labels, quarantine, stats = label_reports(_frame(HAND_LABELLED), ["rid"], ["findings", "impression"])
    assert labels.columns == ["rid", *CHEXPERT_COLUMNS]
    assert all(labels[c].dtype == pl.Int8 for c in CHEXPERT_COLUMNS)
    assert labels["rid"].to_list() == list(HAND_LABELLED) and quarantine.height == 0
    for row in labels.iter_rows(named=True):
        assert {c: row[c] for c in CHEXPERT_COLUMNS} == _expected(row["rid"]), row["rid"]
    assert stats["labelled"] == 8 and stats["with_negative"] == 4  # r1, r4, r5, r8 (r3's 0 was overruled)
    assert stats["states"]["Pleural Effusion"] == {"1": 2, "0": 1, "-1": 1, "blank": 4}


def test_aggregation_rules_on_given_mentions():
    """The aggregation alone, on mentions given by hand (no reader involved)."""
    def labels(*pairs):
        return chexpert_labels([M(finding=f, polarity=p) for f, p in pairs])

    assert labels(("Edema", "negative"), ("Edema", "positive"), ("Edema", "negative"))["Edema"] == 1
    assert labels(("Edema", "positive"), ("Edema", "uncertain"))["Edema"] == 1
    assert labels(("Edema", "uncertain"), ("Edema", "negative"))["Edema"] == -1
    assert labels(("Edema", "negative"))["Edema"] == 0
    assert labels()["Edema"] is None and labels()["No Finding"] == 1
    assert labels(("Support Devices", "positive"), ("Edema", "negative"))["No Finding"] == 1
    assert labels(("Support Devices", "uncertain"))["No Finding"] == 1
    assert labels(("Fracture", "uncertain"))["No Finding"] is None
    assert labels(("Pleural Other", "positive"))["No Finding"] is None
    assert labels(("Edema", "negative"), ("Cardiomegaly", "negative"))["No Finding"] == 1


def test_unlabellable_rows_are_quarantined_not_fatal(nlp):
    rows = {
        "a": ("Small left pleural effusion.", None),
        "b": ("Large right pneumothorax. " * 4, None),  # 104 characters: over max_chars=100
        "c": ("Caf\ufffd effusion.", None),
        "a ": ("Pneumothorax.", None),  # duplicate of "a" once stripped
        "d": ("   ", None),
        "": ("Edema.", None),
        "e": ("No pneumothorax.", "Heart size normal."),
    }
    df = pl.DataFrame({"rid": list(rows), "findings": [v[0] for v in rows.values()],
                       "impression": [v[1] for v in rows.values()]})
    labels, quarantine, stats = label_reports(df, ["rid"], ["findings", "impression"], max_chars=100, source="in.csv")
    assert labels["rid"].to_list() == ["a", "e"]
    assert labels.height + quarantine.height == df.height == stats["rows_in"]
    assert stats["quarantined_by_reason"] == {"duplicate_id": 1, "empty_id": 1, "no_text": 1, "oversized": 1,
                                              "undecodable": 1}
    by_row = dict(zip(quarantine["source"], quarantine["reason"]))
    assert by_row["in.csv row 4"] == "duplicate id 'a' (kept at row 1)"
    assert by_row["in.csv row 2"].startswith("column 'findings' is 103 characters long")
    assert by_row["in.csv row 5"] == "no report text in column(s) findings, impression"
    a, e = labels.iter_rows(named=True)
    assert a["Pleural Effusion"] == 1 and a["Pneumothorax"] is None and a["No Finding"] is None
    assert e["Pneumothorax"] == 0 and e["Cardiomegaly"] == 0 and e["No Finding"] == 1


def test_two_id_columns_write_the_mimic_layout_ingest_reads(tmp_path, params_path, nlp):
    src = tmp_path / "reports.csv"
    src.write_bytes(
        b"subject_id,study_id,findings,impression\n"
        b"10,100,\"Small left pleural effusion.\nNo pneumothorax.\",Possible pneumonia.\n"
        b"10,101,Caf\xe9 au lait spots.,Normal.\n"
        b"11,100,Heart size is normal.,No acute disease.\n"
        b"10,100,Duplicate report.,\n"
    )
    out = tmp_path / "labels" / "mimic-cxr-2.0.0-chexpert.csv.gz"
    rc = main(["label", str(src), "--id-col", "subject_id,study_id", "--text-cols", "findings,impression",
               "--out", str(out), "--params", str(params_path)])
    assert rc == 0
    text = gzip.decompress(out.read_bytes()).decode()
    assert text.splitlines()[0] == ",".join(["subject_id", "study_id", *CHEXPERT_COLUMNS])
    assert text.splitlines()[1] == "10,100,,,,,,,,,,1.0,,-1.0,0.0,"
    # the ingest's own reader takes it as a CheXpert label file: no bad values, same states
    parsed = parse_label_columns(read_csv_strings(out, ["subject_id", "study_id", *CHEXPERT_COLUMNS]))
    assert parsed["_label_error"].null_count() == parsed.height == 2
    assert parsed.row(1, named=True)["Cardiomegaly"] == 0 and parsed.row(1, named=True)["No Finding"] == 1
    q = pl.read_csv(tmp_path / "labels" / "mimic-cxr-2.0.0-chexpert.quarantine.csv")
    assert q["key"].to_list() == ["10/101", "10/100"]
    assert q["reason"][0].startswith("undecodable bytes in column 'findings'")
    assert (tmp_path / "labels" / "mimic-cxr-2.0.0-chexpert.summary.json").is_file()


def test_cli_structural_errors(tmp_path, params_path, capsys):
    src = tmp_path / "r.csv"
    src.write_text("uid,findings\n1,No effusion.\n")
    rc = main(["label", str(src), "--id-col", "uid", "--text-cols", "findings,impression",
               "--out", str(tmp_path / "l.csv"), "--params", str(params_path)])
    assert rc == 2 and "'impression'" in capsys.readouterr().err
    rc = main(["label", str(src), "--id-col", "uid", "--text-cols", "findings", "--out", str(tmp_path / "l.parquet"),
               "--params", str(params_path)])
    assert rc == 2 and ".csv or .csv.gz" in capsys.readouterr().err
    rc = main(["label", str(src), "--id-col", "uid", "--text-cols", "findings", "--max-chars", "2000000",
               "--out", str(tmp_path / "l.csv"), "--params", str(params_path)])
    assert rc == 2 and "1,000,000" in capsys.readouterr().err
    assert not (tmp_path / "l.csv").exists()


@pytest.mark.parametrize("max_chars", [0, 1_000_001])
def test_max_chars_bounds(max_chars):
    with pytest.raises(Exception, match="max_chars"):
        label_reports(_frame({"x": HAND_LABELLED["r1"]}), ["rid"], ["findings", "impression"], max_chars=max_chars)


def test_workers_and_repeated_sections_give_the_same_labels(nlp, monkeypatch):
    import nast.text.label as label_mod

    frame = _frame({**HAND_LABELLED, **{f"{k}-again": v for k, v in HAND_LABELLED.items()}})
    serial, _, _ = label_reports(frame, ["rid"], ["findings", "impression"])
    monkeypatch.setattr(label_mod, "MIN_PARALLEL_SECTIONS", 0)
    monkeypatch.setattr(label_mod, "CHUNK", 3)
    forked, _, _ = label_reports(frame, ["rid"], ["findings", "impression"], workers=2)
    assert forked.equals(serial)
    for row in forked.iter_rows(named=True):
        assert {c: row[c] for c in CHEXPERT_COLUMNS} == _expected(row["rid"].removesuffix("-again")), row["rid"]


def test_chexpert_precedence_is_the_labelers():
    """--precedence chexpert: chexpert-labeler's aggregate.py (positive > uncertain > negative)."""
    pairs = [("Edema", "uncertain"), ("Edema", "positive"), ("Fracture", "uncertain"), ("Fracture", "negative")]
    got = chexpert_labels([M(finding=f, polarity=p) for f, p in pairs], "chexpert")
    assert (got["Edema"], got["Fracture"]) == (1, -1)
    assert chexpert_labels(pairs) == got  # the default since issue 17
    first = chexpert_labels([M(finding=f, polarity=p) for f, p in pairs], "uncertain-first")
    assert (first["Edema"], first["Fracture"]) == (-1, -1)
