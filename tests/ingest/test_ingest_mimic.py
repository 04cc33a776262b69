"""MIMIC-CXR-JPG ingest on an unseen tree with known defects."""

from __future__ import annotations

import json
from pathlib import Path

import polars as pl
import pytest

from nast.cli import main
from nast.conditions import CHEXPERT_COLUMNS
from nast.config import section_defaults
from nast.errors import StageError
from nast.ingest import COHORT_COLUMNS, cohort_gate_frame
from nast.ingest.sources import ingest

DATA = {**section_defaults("data"),
    "source": "mimic",
    "root": "unused",
    "reports_zip": None,
    "views": ["PA", "AP"],
    "require_report": True,
    "check_images": True,
    "split_fractions": {"train": 0.7, "validate": 0.1, "test": 0.2},
    "seed": 0,
}


def _run(tree, **over):
    data = {**DATA, **over}
    return ingest("mimic", str(tree.root), data, reports_zip=data.get("reports_zip"))


def _check_defects(tree, cohort, quarantine, summary):
    assert sorted(cohort["dicom_id"].to_list()) == sorted(tree.kept)
    assert list(cohort.columns) == list(COHORT_COLUMNS)
    q = dict(zip(quarantine["key"].to_list(), quarantine["reason"].to_list()))
    assert set(q) == set(tree.quarantined)
    assert summary["quarantined_by_reason"] == {
        kind: sum(1 for v in tree.quarantined.values() if v == kind) for kind in set(tree.quarantined.values())
    }
    assert summary["filtered_view"] == len(tree.filtered)
    assert summary["rows_in"] == summary["kept"] + summary["quarantined"] + summary["filtered_view"]
    assert summary["rows_in"] == len(tree.kept) + len(tree.quarantined) + len(tree.filtered)
    assert (quarantine["stage"] == "ingest").all()
    bad = [r for k, r in q.items() if tree.quarantined[k] == "bad_label"]
    assert bad == ["bad label value in column 'Edema': '2'"]
    assert any("does not decode" in r for r in q.values())
    assert any("not found" in r for r in q.values())


def test_defects_are_quarantined_and_counts_reconcile(mimic_tree):
    cohort, quarantine, summary = _run(mimic_tree)
    _check_defects(mimic_tree, cohort, quarantine, summary)
    assert summary["split_source"].endswith("split.csv.gz")


def test_four_label_states_survive_round_trip(mimic_tree, tmp_path):
    cohort, _, _ = _run(mimic_tree)
    path = tmp_path / "cohort.parquet"
    cohort.write_parquet(path)
    back = pl.read_parquet(path)
    for c in CHEXPERT_COLUMNS:
        assert back.schema[c] == pl.Int8
    seen = set()
    raw_map = {"1.0": 1, "0.0": 0, "-1.0": -1, "": None}
    for row in back.iter_rows(named=True):
        for c in CHEXPERT_COLUMNS:
            expected = raw_map[mimic_tree.labels[row["study_id"]][c]]
            assert row[c] == expected, (row["study_id"], c)
            seen.add(row[c])
    assert seen == {1, 0, -1, None}


def test_split_file_wins_and_patient_disjoint(mimic_tree):
    cohort, _, _ = _run(mimic_tree, split_fractions={"train": 0.0, "validate": 0.0, "test": 1.0})
    for subj, split in cohort.select("subject_id", "split").iter_rows():
        assert split == mimic_tree.split_of_subject[subj]
    assert (cohort_gate_frame(cohort)["_subject_n_splits"] == 1).all()


def test_computed_split_without_split_file(tmp_path, build_tree):
    tree = build_tree(tmp_path / "m", split_file=False)
    c1, _, s1 = _run(tree)
    c2, _, _ = _run(tree)
    assert c1.equals(c2)
    assert s1["split_source"].startswith("computed")
    assert (cohort_gate_frame(c1)["_subject_n_splits"] == 1).all()
    c3, _, _ = _run(tree, split_fractions={"train": 0.0, "validate": 0.0, "test": 1.0})
    assert set(c3["split"]) == {"test"}


def test_plain_csv_and_reports_zip_variant(tmp_path, build_tree):
    tree = build_tree(tmp_path / "m", gz=False, reports="zip")
    assert not list(tree.root.glob("*.gz"))
    assert not list(tree.root.rglob("*.txt"))
    cohort, quarantine, summary = _run(tree)  # zip found at <root>/mimic-cxr-reports.zip
    _check_defects(tree, cohort, quarantine, summary)
    assert summary["reports_from"].endswith("mimic-cxr-reports.zip")
    assert cohort["report_path"].str.contains("::mimic-cxr-reports/files/").all()
    # explicit zip path, members without a top folder
    tree2 = build_tree(tmp_path / "m2", gz=False, reports="zip", zip_top="")
    cohort2, _, _ = _run(tree2, reports_zip=str(tree2.reports_zip))
    assert cohort2.drop("image_path", "report_path").equals(cohort.drop("image_path", "report_path"))


def test_findings_and_impression_report(mimic_tree):
    cohort, _, _ = _run(mimic_tree)
    row = cohort.filter(pl.col("study_id") == 50000030).row(0, named=True)
    assert row["impression"] == "Lungs are clear. No effusion."
    assert row["findings"] is None
    other = cohort.filter(pl.col("study_id") == 50000010).row(0, named=True)
    assert other["findings"] == "No focal consolidation. Small left pleural effusion."
    assert other["impression"] == "Small left pleural effusion."


def test_missing_chexpert_column_is_refused(tmp_path, build_tree):
    tree = build_tree(tmp_path / "m", drop_column="Pleural Effusion")
    with pytest.raises(StageError) as err:
        _run(tree)
    msg = str(err.value)
    assert "'Pleural Effusion'" in msg and "mimic-cxr-2.0.0-chexpert.csv" in msg


def test_structural_errors_name_the_file(tmp_path, build_tree):
    with pytest.raises(StageError, match="not found or unreadable"):
        _run(type("T", (), {"root": tmp_path / "nope"})())
    tree = build_tree(tmp_path / "m")
    (tree.root / "mimic-cxr-2.0.0-metadata.csv.gz").unlink()
    with pytest.raises(StageError, match="metadata.csv"):
        _run(tree)


def test_check_images_off_keeps_corrupt_but_not_missing(mimic_tree):
    cohort, quarantine, summary = _run(mimic_tree, check_images=False)
    assert "corrupt_image" not in summary["quarantined_by_reason"]
    assert summary["quarantined_by_reason"]["missing_image"] == 1
    assert "d1000003250000000a" in cohort["dicom_id"].to_list()


def test_require_report_off_keeps_reportless_studies(mimic_tree):
    cohort, _, summary = _run(mimic_tree, require_report=False)
    assert "missing_report" not in summary["quarantined_by_reason"]
    row = cohort.filter(pl.col("dicom_id") == "d1200002250000031c").row(0, named=True)
    assert row["report_path"] is None and row["findings"] is None


def test_cli_end_to_end_writes_outputs_and_gate_report(mimic_tree, tmp_path, monkeypatch):
    import yaml

    params = yaml.safe_load(Path("params.yaml").read_text())
    monkeypatch.chdir(tmp_path)
    (tmp_path / "params.yaml").write_text(yaml.safe_dump(params))
    out, q = tmp_path / "out/cohort.parquet", tmp_path / "out/q/ingest.parquet"
    rc = main(["ingest", "--source", "demo", "--root", str(mimic_tree.root), "--out", str(out),
               "--quarantine", str(q), "--validation-dir", str(tmp_path / "val")])
    assert rc == 0
    cohort = pl.read_parquet(out)
    assert set(cohort["dataset"]) == {"demo"}
    assert cohort.height == len(mimic_tree.kept)
    assert pl.read_parquet(q).height == len(mimic_tree.quarantined)
    summary = json.loads((tmp_path / "out/q/ingest.summary.json").read_text())
    assert summary["kept"] == cohort.height
    assert "PASSED" in (tmp_path / "val/cohort.md").read_text()
    # same input -> byte-identical parquet
    out2 = tmp_path / "out/cohort2.parquet"
    main(["ingest", "--source", "demo", "--root", str(mimic_tree.root), "--out", str(out2),
          "--quarantine", str(q), "--validation-dir", str(tmp_path / "val")])
    assert out.read_bytes() == out2.read_bytes()
    # structural error -> exit 2 with the message
    rc = main(["ingest", "--source", "mimic", "--root", str(tmp_path / "missing"), "--out", str(out),
               "--quarantine", str(q)])
    assert rc == 2


@pytest.mark.parametrize("mode", ["fast", "full"])
def test_image_check_modes_catch_truncated_and_garbage(mimic_tree, tmp_path, mode):
    from nast.ingest.common import check_image

    cohort, quarantine, summary = _run(mimic_tree, image_check=mode)
    assert summary["quarantined_by_reason"]["corrupt_image"] == 1
    assert sorted(cohort["dicom_id"].to_list()) == sorted(mimic_tree.kept)
    garbage = tmp_path / "g.jpg"
    garbage.write_bytes(b"\xff\xd8\xff\xe0 definitely not a jpeg")
    assert check_image(str(garbage), mode) is not None
    for path in cohort["image_path"].to_list():
        assert check_image(path, mode) is None
