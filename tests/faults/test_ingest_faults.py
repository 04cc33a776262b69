"""Hostile dataset trees: path escapes, undecodable reports, duplicate reports, non-UTF-8 CSVs.
Each becomes a quarantine row with its reason (the rest of the run goes on) or, for a broken CSV,
an error with the line number."""

from __future__ import annotations

import zipfile

import polars as pl
import pytest
from faultkit import build_mimic_tree, jpeg_bytes
from PIL import Image

from nast.config import section_defaults
from nast.errors import StageError
from nast.ingest.sources import ingest

DATA = {**section_defaults("data"), "source": "mimic", "root": "unused", "reports_zip": None, "views": ["PA", "AP"],
        "require_report": True, "check_images": True, "split_fractions": {"train": 0.7, "validate": 0.1, "test": 0.2},
        "seed": 0}
META = "mimic-cxr-2.0.0-metadata.csv"


def _ingest(tree, **over):
    data = {**DATA, **over}
    return ingest("mimic", str(tree.root), data, reports_zip=data.get("reports_zip"))


def _append_meta(tree, row: str) -> None:
    p = tree.root / META
    p.write_text(p.read_text() + row + "\n")


def _q(quarantine):
    return dict(zip(quarantine["key"].to_list(), zip(quarantine["reason"].to_list(), quarantine["source"].to_list())))


def test_dicom_id_escaping_the_root_is_quarantined_and_never_read(tmp_path):
    tree = build_mimic_tree(tmp_path / "mimic", gz=False)
    evil = "../../../../../outside/evil"
    target = tmp_path / "outside" / "evil.jpg"  # where the path would resolve: a valid JPEG outside the root
    target.parent.mkdir()
    target.write_bytes(jpeg_bytes(3))
    _append_meta(tree, f"{evil},10000032,50000000,PA")
    cohort, quarantine, summary = _ingest(tree)
    q = _q(quarantine)
    assert evil in q and "not a plain file name" in q[evil][0] and q[evil][1].endswith(META)
    assert evil not in cohort["dicom_id"].to_list()
    assert not any("outside" in p for p in cohort["image_path"].to_list())
    assert summary["quarantined_by_reason"]["unsafe_id"] == 1
    assert sorted(cohort["dicom_id"]) == sorted(tree.kept)  # the rest of the run goes on


def test_path_escape_check_is_lexical_and_names_the_root(tmp_path):
    from nast.ingest.common import flag_path_escape, init_flags

    root = tmp_path / "root"
    df = pl.DataFrame({"view": ["PA"] * 3, "image_path": [f"{root}/files/a.jpg", f"{root}/files/../../x.jpg",
                                                           "/etc/passwd"], "dicom_id": ["a", "b", "c"]})
    out = flag_path_escape(init_flags(df, ["PA"]), root, "meta.csv")
    assert out["_kind"].to_list() == [None, "path_escape", "path_escape"]
    assert "outside the dataset root" in out["_reason"][1] and str(root) in out["_reason"][1]


def test_non_utf8_report_is_quarantined_with_the_byte(tmp_path):
    tree = build_mimic_tree(tmp_path / "mimic", gz=False)
    report = tree.root / "files/p10/p10000764/s50000010.txt"
    report.write_bytes(b"FINDINGS: small \xe9panchement pleural.\nIMPRESSION: effusion.\n")  # latin-1
    cohort, quarantine, summary = _ingest(tree)
    q = _q(quarantine)
    hit = {k: v for k, v in q.items() if "not UTF-8" in v[0]}
    assert set(hit) == {"d1000076450000010a", "d1000076450000010b"} - tree.filtered
    reason, source = next(iter(hit.values()))
    assert "byte 0xe9 at offset 16" in reason and source == str(report)
    assert summary["quarantined_by_reason"]["bad_report_encoding"] == len(hit)
    texts = cohort["findings"].drop_nulls().to_list() + cohort["impression"].drop_nulls().to_list()
    assert not any("\ufffd" in t for t in texts)


def test_duplicate_reports_in_the_zip_are_reported_not_merged(tmp_path):
    tree = build_mimic_tree(tmp_path / "mimic", gz=False, reports="zip")
    with zipfile.ZipFile(tree.reports_zip, "a") as zf:
        zf.writestr("other-top/files/p10/p10000764/s50000010.txt", "FINDINGS: a second report.\n")
    cohort, quarantine, summary = _ingest(tree, reports_zip=str(tree.reports_zip))
    dup = {k: v for k, v in _q(quarantine).items() if "2 reports for study 50000010" in v[0]}
    assert set(dup) == {"d1000076450000010a"}  # (its lateral image is filtered by view)
    assert "other-top/files/p10/p10000764/s50000010.txt" in next(iter(dup.values()))[0]
    assert 50000010 not in cohort["study_id"].to_list()
    assert summary["quarantined_by_reason"]["duplicate_report"] == 1


def test_latin1_byte_in_a_csv_names_the_line(tmp_path):
    tree = build_mimic_tree(tmp_path / "mimic", gz=False)
    p = tree.root / META
    lines = p.read_bytes().split(b"\n")
    lines[3] = lines[3].replace(b",PA", b",P\xc9A")  # line 4 of the file
    p.write_bytes(b"\n".join(lines))
    with pytest.raises(StageError, match=r"mimic-cxr-2.0.0-metadata.csv: line 4, column \d+: byte 0xc9 is not UTF-8"):
        _ingest(tree)


def test_openi_duplicate_report_rows_and_escaping_filenames(tmp_path):
    root = tmp_path / "openi"
    img_dir = root / "images"
    img_dir.mkdir(parents=True)
    rep = pl.DataFrame({"uid": ["1", "2", "2", "3"], "MeSH": ["normal"] * 4,
                        "findings": ["Clear.", "Clear.", "Effusion.", "Clear."], "impression": ["Normal."] * 4})
    rep.write_csv(root / "indiana_reports.csv")
    names = ["1_IM-1.dcm.png", "2_IM-2.dcm.png", "../../evil.png"]
    for n in names[:2]:
        Image.new("L", (16, 16)).save(img_dir / n)
    Image.new("L", (16, 16)).save(tmp_path / "evil.png")
    pl.DataFrame({"uid": ["1", "2", "3"], "filename": names, "projection": ["Frontal"] * 3}).write_csv(
        root / "indiana_projections.csv")
    cohort, quarantine, _ = ingest("openi", str(root), {**DATA, "source": "openi"})
    q = dict(zip(quarantine["key"].to_list(), quarantine["reason"].to_list()))
    assert cohort["dicom_id"].to_list() == ["1_IM-1"]
    assert q["2_IM-2"] == "2 report rows for uid 2"
    assert "outside the dataset root" in q["evil"]
