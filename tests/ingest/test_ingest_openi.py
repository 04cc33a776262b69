"""Open-i ingest on the shared dev sample of real reports (tests/shared_data.py: skipped when absent,
failed instead under CI)."""

from __future__ import annotations

import polars as pl
import pytest
from PIL import Image

from nast.conditions import CHEXPERT_COLUMNS
from nast.config import section_defaults
from nast.ingest.openi import dicom_id_of, mesh_labels, view_of
from nast.ingest.sources import ingest

N = 40

DATA = {**section_defaults("data"),
    "source": "openi",
    "root": "unused",
    "reports_zip": None,
    "views": ["PA", "AP"],
    "require_report": True,
    "check_images": True,
    "split_fractions": {"train": 0.7, "validate": 0.1, "test": 0.2},
    "seed": 0,
    "openi_labels": "mesh",
}


def test_mesh_mapping_units():
    labels = mesh_labels("Cardiomegaly/borderline;Pulmonary Artery/enlarged;Thickening/pleura/apex")
    assert labels["Cardiomegaly"] == 1 and labels["Pleural Other"] == 1
    assert labels["Edema"] is None and labels["No Finding"] is None
    assert mesh_labels("normal")["No Finding"] == 1
    assert set(mesh_labels("normal").values()) == {1, None}
    assert dicom_id_of("1_IM-0001-4001.dcm.png") == "1_IM-0001-4001"
    assert view_of("Frontal") == "PA" and view_of("Lateral") == "LATERAL"


@pytest.fixture()
def openi_root(tmp_path, openi_dev_csv):
    reports = pl.read_csv(openi_dev_csv, infer_schema=False).head(N)
    root = tmp_path / "openi"
    img_dir = root / "images" / "images_normalized"
    img_dir.mkdir(parents=True)
    reports.write_csv(root / "indiana_reports.csv")
    rows = []
    for i, uid in enumerate(reports["uid"].to_list()):
        for j, proj in enumerate(("Frontal", "Lateral")):
            name = f"{uid}_IM-{i:04d}-{j + 1:04d}.dcm.png"
            rows.append({"uid": uid, "filename": name, "projection": proj})
            if i == 3 and proj == "Frontal":
                continue  # missing image
            Image.new("L", (16, 16), color=(i * 5) % 256).save(img_dir / name)
    rows.append({"uid": "999999", "filename": "999999_IM-9-1.dcm.png", "projection": "Frontal"})
    Image.new("L", (16, 16)).save(img_dir / "999999_IM-9-1.dcm.png")  # no report row
    pl.DataFrame(rows).write_csv(root / "indiana_projections.csv")
    return root, reports


def test_openi_dev_sample(openi_root, tmp_path):
    root, reports = openi_root
    cohort, quarantine, summary = ingest("openi", str(root), DATA)
    assert summary["rows_in"] == 2 * N + 1
    assert summary["filtered_view"] == N  # laterals
    assert summary["rows_in"] == summary["kept"] + summary["quarantined"] + summary["filtered_view"]
    assert summary["quarantined_by_reason"].get("missing_image") == 1
    assert summary["quarantined_by_reason"].get("no_label_row") == 1
    assert set(cohort["view"]) == {"PA"}
    assert set(cohort["dataset"]) == {"openi"}
    assert (cohort["subject_id"] == cohort["study_id"]).all()
    assert not cohort["dicom_id"].str.ends_with(".png").any()
    # labels: only 1 or null (MeSH encodes no negatives), and they follow the MeSH column
    for c in CHEXPERT_COLUMNS:
        assert set(cohort[c].drop_nulls().to_list()) <= {1}
    mesh = dict(zip(reports["uid"].cast(pl.Int64).to_list(), reports["MeSH"].to_list()))
    n_normal = n_cardio = 0
    for row in cohort.iter_rows(named=True):
        m = mesh[row["study_id"]] or ""
        is_normal = m.strip().lower() == "normal"
        assert (row["No Finding"] == 1) == is_normal
        has_cardio = "cardiomegaly" in m.lower()
        assert (row["Cardiomegaly"] == 1) == (has_cardio or "cardiac shadow/enlarged" in m.lower())
        n_normal += is_normal
        n_cardio += has_cardio
        if row["findings"]:
            assert "  " not in row["findings"] and row["findings"] == row["findings"].strip()
    assert n_normal > 0 and n_cardio > 0
    assert (quarantine["stage"] == "ingest").all()
    from nast.ingest import gate_cohort

    assert gate_cohort(cohort, report_dir=tmp_path / "val")["success"]


def test_openi_reader_labels_feed_the_permutations(openi_root):
    """data.openi_labels: reader (the default): 4-state labels read from the reports, MeSH compared."""
    assert section_defaults("data")["openi_labels"] == "reader"
    from nast.permutations import build_permutations
    from nast.text.label import label_reports

    root, reports = openi_root
    default = section_defaults("data")["openi_labels"]
    cohort, quarantine, summary = ingest("openi", str(root), {**DATA, "openi_labels": default})
    assert summary["rows_in"] == summary["kept"] + summary["quarantined"] + summary["filtered_view"]
    assert summary["labels_from"].startswith("report reader")
    # the cohort's labels are exactly what nast label writes for the same reports
    frame = reports.select("uid", "findings", "impression")
    expected, _, _ = label_reports(frame.with_columns(pl.col("findings", "impression").str.replace_all(r"\s+", " ")
                                                      .str.strip_chars()), ["uid"], ["findings", "impression"])
    want = {int(r["uid"]): r for r in expected.iter_rows(named=True)}
    for row in cohort.iter_rows(named=True):
        assert all(row[c] == want[row["study_id"]][c] for c in CHEXPERT_COLUMNS), row["study_id"]
    assert (cohort["Pneumothorax"] == 0).any()  # negatives exist now
    agree = summary["mesh_agreement"]["Cardiomegaly"]
    n_mesh = sum(1 for m in reports["MeSH"].to_list() if "cardiomegaly" in (m or "").lower())
    assert agree["both"] > 0 and sum(v for k, v in agree.items() if k != "reader_only") >= n_mesh
    perms, _, psummary = build_permutations(cohort, k=3, min_zeros=3, min_ones=2, seed=0)
    assert perms.height > 0  # with MeSH labels (no zeros) no study passes the NAST rule
    mesh_cohort, _, _ = ingest("openi", str(root), DATA)
    assert build_permutations(mesh_cohort, k=3, min_zeros=3, min_ones=2, seed=0)[0].height == 0
