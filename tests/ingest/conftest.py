"""A tiny, unseen MIMIC-CXR-JPG tree written in the test (PIL JPEGs), with known defects."""

from __future__ import annotations

import csv
import gzip
import io
import random
import zipfile
from dataclasses import dataclass, field
from pathlib import Path

import pytest
from PIL import Image

from nast.conditions import CHEXPERT_COLUMNS

REPORT = """                                 FINAL REPORT
 EXAMINATION:  CHEST (PA AND LAT)

 INDICATION:  ___ with cough

 COMPARISON:  None.

 FINDINGS:
 
 No focal consolidation.   Small left  pleural effusion.
 
 IMPRESSION: 
 
 Small left pleural effusion.

 NOTIFICATION:  Dr. ___ was paged.
"""  # noqa: W291, W293 -- the spaces on blank lines and after "IMPRESSION:" are test data
REPORT_COMBINED = " FINAL REPORT\n INDICATION: fever\n\n FINDINGS AND IMPRESSION:  Lungs are clear.\n  No effusion.\n"
REPORT_NO_SECTIONS = " FINAL REPORT\n INDICATION: fever\n COMPARISON: none\n"


def jpeg_bytes(seed: int, size: int = 48) -> bytes:
    rng = random.Random(seed)
    img = Image.new("L", (size, size))
    img.putdata([rng.randrange(256) for _ in range(size * size)])
    buf = io.BytesIO()
    img.save(buf, format="JPEG", quality=90)
    return buf.getvalue()


@dataclass
class Tree:
    root: Path
    kept: set[str] = field(default_factory=set)
    quarantined: dict[str, str] = field(default_factory=dict)  # dicom_id -> kind
    filtered: set[str] = field(default_factory=set)
    split_of_subject: dict[int, str] = field(default_factory=dict)
    labels: dict[int, dict[str, str]] = field(default_factory=dict)  # study -> column -> raw
    reports_zip: Path | None = None


def _write_csv(path: Path, header: list[str], rows: list[list], gz: bool) -> None:
    text = io.StringIO()
    w = csv.writer(text, lineterminator="\n")
    w.writerow(header)
    w.writerows(rows)
    data = text.getvalue().encode()
    if gz:
        path = path.with_name(path.name + ".gz")
        path.write_bytes(gzip.compress(data, mtime=0))
    else:
        path.write_bytes(data)


def build_mimic_tree(root: Path, *, gz: bool = True, split_file: bool = True, reports: str = "tree",
                     zip_top: str = "mimic-cxr-reports/", drop_column: str | None = None) -> Tree:
    """6 subjects x 1-2 studies; defects: corrupt JPEG, missing JPEG, label 2, no report,
    report without sections, image without label row, lateral (filtered)."""
    root.mkdir(parents=True, exist_ok=True)
    t = Tree(root=root)
    subjects = [10000032, 10000764, 11000011, 12000022, 13000033, 19999987]
    splits = ["train", "train", "validate", "test", "test", "train"]
    meta_rows, chex_rows, split_rows, report_files = [], [], [], {}
    n = 0
    for s_idx, (subj, split) in enumerate(zip(subjects, splits)):
        t.split_of_subject[subj] = split
        for k in range(1 + s_idx % 2):
            study = 50000000 + s_idx * 10 + k
            n += 1
            # label row: rotate through the four states per column
            raw = {}
            for c_idx, c in enumerate(CHEXPERT_COLUMNS):
                raw[c] = ["1.0", "0.0", "-1.0", ""][(c_idx + n) % 4]
            t.labels[study] = raw
            text = REPORT_COMBINED if study == 50000030 else REPORT
            report_files[(subj, study)] = text
            for view, suffix in (("PA", "a"), ("LATERAL", "b")) if k == 0 else (("AP", "c"),):
                dicom = f"d{subj}{study}{suffix}"
                meta_rows.append([dicom, subj, study, view])
                split_rows.append([dicom, study, subj, split])
                img = root / "files" / f"p{str(subj)[:2]}" / f"p{subj}" / f"s{study}" / f"{dicom}.jpg"
                img.parent.mkdir(parents=True, exist_ok=True)
                img.write_bytes(jpeg_bytes(n * 7 + len(suffix)))
                (t.filtered if view == "LATERAL" else t.kept).add(dicom)
            chex_rows.append([subj, study, *[raw[c] for c in CHEXPERT_COLUMNS]])

    def defect(dicom: str, kind: str) -> None:
        t.kept.discard(dicom)
        t.quarantined[dicom] = kind

    # corrupt JPEG: a truncated real JPEG
    d = f"d{subjects[0]}50000000a"
    p = root / "files/p10/p10000032/s50000000" / f"{d}.jpg"
    p.write_bytes(jpeg_bytes(99, size=96)[:400])
    defect(d, "corrupt_image")
    # missing JPEG
    d = f"d{subjects[1]}50000011c"
    (root / "files/p10/p10000764/s50000011" / f"{d}.jpg").unlink()
    defect(d, "missing_image")
    # label value 2 (study of subject 11000011)
    study = 50000020
    for row in chex_rows:
        if row[1] == study:
            row[2 + CHEXPERT_COLUMNS.index("Edema")] = "2"
    defect(f"d11000011{study}a", "bad_label")
    # study without report file
    report_files.pop((12000022, 50000031))
    defect("d1200002250000031c", "missing_report")
    # report with neither section
    report_files[(13000033, 50000040)] = REPORT_NO_SECTIONS
    defect("d1300003350000040a", "no_report_text")
    # image with no label row: an extra study in metadata only
    d = "d1999998750000099a"
    meta_rows.append([d, 19999987, 50000099, "PA"])
    split_rows.append([d, 50000099, 19999987, "train"])
    img = root / "files/p19/p19999987/s50000099" / f"{d}.jpg"
    img.parent.mkdir(parents=True, exist_ok=True)
    img.write_bytes(jpeg_bytes(5))
    report_files[(19999987, 50000099)] = REPORT
    defect(d, "no_label_row")

    chex_header = ["subject_id", "study_id", *CHEXPERT_COLUMNS]
    if drop_column:
        i = chex_header.index(drop_column)
        chex_header.pop(i)
        for row in chex_rows:
            row.pop(i)
    _write_csv(root / "mimic-cxr-2.0.0-chexpert.csv", chex_header, chex_rows, gz)
    _write_csv(root / "mimic-cxr-2.0.0-metadata.csv", ["dicom_id", "subject_id", "study_id", "ViewPosition"],
               meta_rows, gz)
    if split_file:
        _write_csv(root / "mimic-cxr-2.0.0-split.csv", ["dicom_id", "study_id", "subject_id", "split"],
                   split_rows, gz)
    if reports == "tree":
        for (subj, study), text in report_files.items():
            (root / "files" / f"p{str(subj)[:2]}" / f"p{subj}" / f"s{study}.txt").write_text(text)
    else:
        t.reports_zip = root / "mimic-cxr-reports.zip"
        with zipfile.ZipFile(t.reports_zip, "w") as zf:
            for (subj, study), text in sorted(report_files.items()):
                zf.writestr(f"{zip_top}files/p{str(subj)[:2]}/p{subj}/s{study}.txt", text)
    return t


@pytest.fixture()
def build_tree():
    """The tree builder: ``build_tree(root, gz=..., split_file=..., reports='tree'|'zip', ...)``."""
    return build_mimic_tree


@pytest.fixture()
def mimic_tree(tmp_path):
    return build_mimic_tree(tmp_path / "mimic")
