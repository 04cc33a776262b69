"""Contextual captions and minimal-edit foils: every kept foil contradicts the report."""

from __future__ import annotations

import polars as pl
import pytest

from nast.cli import main
from nast.text.contextual import Claim, render, study_rows
from nast.text.polarity import check, extract_mentions

from .test_claims import tiny_cohort


def C(finding, polarity, location=None, severity=None):
    return Claim.from_row(finding, polarity, location, severity)


def foils_of(rows, caption):
    return {(r["foil_type"], r["foil"]) for r in rows if r["caption"] == caption}


def test_captions_and_foils_of_a_study():
    claims = [
        C("Pleural Effusion", "positive", "right", "moderate"),
        C("Pneumothorax", "negative"),
        C("Cardiomegaly", "positive", None, "mild"),
        C("Pneumonia", "uncertain", "left lower"),
    ]
    rows = study_rows(claims, seed=0, study_key="1", max_foils=10)
    assert {r["caption"] for r in rows} == {"moderate right pleural effusion", "no pneumothorax", "mild cardiomegaly"}
    assert foils_of(rows, "moderate right pleural effusion") == {
        ("polarity", "no right pleural effusion"),
        ("laterality", "moderate left pleural effusion"),
        ("laterality", "moderate bilateral pleural effusion"),
        ("severity", "severe right pleural effusion"),
    }
    assert foils_of(rows, "no pneumothorax") == {("polarity", "pneumothorax")}
    assert foils_of(rows, "mild cardiomegaly") == {("polarity", "no cardiomegaly"), ("severity", "severe cardiomegaly")}


@pytest.mark.parametrize(
    "claims,caption,absent_foil",
    [
        # bilateral -> one side is also true
        ([C("Pleural Effusion", "positive", "bilateral", "small")], "small bilateral pleural effusion",
         "small left pleural effusion"),
        # also present on the other side
        ([C("Pleural Effusion", "positive", "left"), C("Pleural Effusion", "positive", "right")],
         "left pleural effusion", "right pleural effusion"),
        # mentioned without a side: a side swap might be true
        ([C("Atelectasis", "positive", "left basilar"), C("Atelectasis", "positive")],
         "left basilar atelectasis", "right basilar atelectasis"),
        # uncertain on the other side
        ([C("Consolidation", "positive", "right"), C("Consolidation", "uncertain", "left")],
         "right consolidation", "left consolidation"),
        # polarity flip onto an uncertain finding
        ([C("Edema", "negative"), C("Edema", "uncertain")], "no pulmonary edema", "pulmonary edema"),
        # another mention carries the swapped severity
        ([C("Pleural Effusion", "positive", "left", "small"), C("Pleural Effusion", "positive", "right", "large")],
         "small left pleural effusion", "large left pleural effusion"),
    ],
)
def test_foils_that_are_also_true_are_dropped(claims, caption, absent_foil):
    rows = study_rows(claims, seed=0, study_key="1", max_foils=10)
    assert absent_foil not in {r["foil"] for r in rows}
    assert all(r["caption"] != r["foil"] for r in rows)


def test_negative_claim_of_a_present_finding_makes_no_caption():
    rows = study_rows([C("Pleural Effusion", "negative"), C("Pleural Effusion", "positive", "left", "small")],
                      seed=0, study_key="1", max_foils=10)
    assert "no pleural effusion" not in {r["caption"] for r in rows}
    assert "no pleural effusion" not in {r["foil"] for r in rows}  # polarity flip keeps the side


def test_max_foils_and_determinism():
    claims = [C("Pleural Effusion", "positive", "left", "small")]
    a = study_rows(claims, seed=3, study_key="7", max_foils=2)
    assert len(a) == 2 and len({r["foil_type"] for r in a}) == 2  # round-robin over foil types
    assert a == study_rows(claims, seed=3, study_key="7", max_foils=2)
    draws = {tuple(r["foil"] for r in study_rows(claims, seed=s, study_key="7", max_foils=2)) for s in range(12)}
    assert len(draws) > 1  # the seed matters


REPORTS = {
    11: "Moderate right pleural effusion. No pneumothorax. Mild cardiomegaly.",
    12: "Bilateral pleural effusions. Possible left lower lobe pneumonia.",
    22: "Small left pneumothorax.",
}


def assert_foils_contradict(table: pl.DataFrame, reports: dict[int, str]):
    """Independent check with the reader itself: read the foil and the report, compare."""
    assert table.height > 0
    for row in table.iter_rows(named=True):
        report = reports[row["study_id"]]
        finding = row["finding"]
        truth = check(report, [finding])[finding]
        foil_state = check(row["foil"], [finding])[finding]
        caption_state = check(row["caption"], [finding])[finding]
        assert caption_state == truth or (caption_state == "absent" and truth == "absent"), row
        if row["foil_type"] == "polarity":
            assert truth in ("present", "absent") and foil_state != truth, row
        else:
            (foil_m,) = [m for m in extract_mentions(row["foil"]) if m.finding == finding]
            reported = [m for m in extract_mentions(report) if m.finding == finding and m.polarity != "negative"]
            if row["foil_type"] == "laterality":
                side = foil_m.location.split(" ")[0]
                assert all(m.location and m.location.split(" ")[0] not in (side, "bilateral") for m in reported), row
            else:
                assert all(m.severity != foil_m.severity for m in reported), row


def test_stage_end_to_end(tmp_path, params_path, nlp):
    cohort_path = tmp_path / "cohort.parquet"
    tiny_cohort().write_parquet(cohort_path)
    claims_path, out, q = tmp_path / "claims.parquet", tmp_path / "contextual.parquet", tmp_path / "q.parquet"
    gx = str(tmp_path / "gx")
    common = ["--params", str(params_path), "--report-dir", gx]
    assert main(["claims", "--cohort", str(cohort_path), "--out", str(claims_path), *common]) == 0
    args = ["contextual", "--claims", str(claims_path), "--cohort", str(cohort_path), "--out", str(out),
            "--quarantine", str(q), *common]
    assert main(args) == 0
    table, quarantine = pl.read_parquet(out), pl.read_parquet(q)
    assert table.columns == ["study_id", "subject_id", "dicom_id", "image_path", "split", "claim_id", "finding",
                             "caption", "foil", "foil_type"]
    # study 22 has only a LATERAL image; 21 has no text (no claims, so not an input row)
    assert quarantine.select("key", "reason").rows() == [("22", "no frontal (PA/AP) image for this study")]
    assert set(table["study_id"]) == {11, 12}
    assert set(table.filter(pl.col("study_id") == 11)["dicom_id"]) == {"d11a"}
    assert set(table["foil_type"]) == {"polarity", "laterality", "severity"}
    assert table.group_by("caption", "study_id").len()["len"].max() <= 3  # params max_foils_per_claim
    # bilateral effusion: no single-side foil; uncertain pneumonia: no caption
    s12 = table.filter(pl.col("study_id") == 12)
    assert set(s12["caption"]) == {"bilateral pleural effusion"}
    assert set(s12["foil"]) == {"no bilateral pleural effusion"}
    assert_foils_contradict(table, REPORTS)
    first = out.read_bytes()
    assert main(args) == 0
    assert out.read_bytes() == first  # same seed, same bytes


def test_render():
    assert render("Pleural Effusion", False, "left", "basilar", "small") == "small left basilar pleural effusion"
    assert render("Atelectasis", False, "right", "lower") == "right lower lobe atelectasis"
    assert render("Pneumothorax", True) == "no pneumothorax"


@pytest.mark.parametrize("finding", sorted(__import__("nast.text.contextual", fromlist=["PHRASES"]).PHRASES))
def test_every_rendered_caption_reads_back(nlp, finding):
    """Captions and foils are written in the reader's own vocabulary: reading one back gives its claim."""
    for negative, laterality, zone, severity in [
        (False, None, None, None), (True, None, None, None), (False, "left", "upper", "small"),
        (False, "bilateral", "basilar", "moderate"), (True, "right", None, None),
        (False, "right", "apical", "borderline"),
    ]:
        text = render(finding, negative, laterality, zone, severity)
        (m,) = [m for m in extract_mentions(text) if m.finding == finding]
        assert m.polarity == ("negative" if negative else "positive"), text
        if not negative:
            assert m.severity == severity, text
            assert m.location == (" ".join(w for w in (laterality, zone) if w) or None), text
