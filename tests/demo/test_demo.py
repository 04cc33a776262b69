"""Tests of the demo dataset generator (nast demo-data): layout, tables, reports, images, determinism.

The report checks use their own keyword/cue regexes (not the generator's templates), so a template
that contradicts its label is caught.
"""

from __future__ import annotations

import gzip
import hashlib
import re
from pathlib import Path

import numpy as np
import polars as pl
import pytest
import yaml
from PIL import Image

from nast.cli import main
from nast.conditions import CHEXPERT_COLUMNS, CONDITIONS
from nast.demo.generate import generate_demo, plan_demo
from nast.demo.phantom import Anatomy, Finding, finding_bbox, render_frontal

SIZE = 96
CHEXPERT_HEADER = ["subject_id", "study_id", *CHEXPERT_COLUMNS]
METADATA_HEADER = [
    "dicom_id", "subject_id", "study_id", "PerformedProcedureStepDescription", "ViewPosition", "Rows", "Columns",
    "StudyDate", "StudyTime", "ProcedureCodeSequence_CodeMeaning", "ViewCodeSequence_CodeMeaning",
    "PatientOrientationCodeSequence_CodeMeaning",
]
SPLIT_HEADER = ["dicom_id", "study_id", "subject_id", "split"]
ANNOTATION_HEADER = ["dicom_id", "study_id", "subject_id", "finding", "location", "severity",
                     "x0", "y0", "x1", "y1", "twin_path"]
DICOM_RE = re.compile(r"^[0-9a-f]{8}(-[0-9a-f]{8}){4}$")

# independent readers of the report text
KEYWORDS = {
    "Atelectasis": r"atelecta|fully expanded|well expanded|lungs are clear",
    "Cardiomegaly": r"cardiomegaly|heart|cardiac|cardiomediastinal",
    "Consolidation": r"consolidat|lungs are clear",
    "Edema": r"edema|vascularity|lungs are clear",
    "Enlarged Cardiomediastinum": r"mediastin",
    "Fracture": r"fracture|osseous|bony",
    "Lung Lesion": r"nodule|\bmass\b|lesion|lungs are clear",
    "Lung Opacity": r"opacit|lungs are clear",
    "Pleural Effusion": r"effusion|costophrenic",
    "Pleural Other": r"pleural thickening|pleural scarring|pleural surfaces",
    "Pneumonia": r"pneumonia|lungs are clear",
    "Pneumothorax": r"pneumothorax|fully expanded|well expanded",
    "Support Devices": r"\btubes?\b|catheter|\blines?\b|pacemaker|\bdevices?\b",
}
NEG = re.compile(r"\bno\b|\bnot\b|without|free of")
HEDGE = re.compile(r"possible|cannot be excluded|cannot exclude|may represent|questionable")
NORMAL = re.compile(r"normal|sharp|clear|expanded|smooth|unremarkable|structures are intact")


def _sentences(text: str) -> list[str]:
    return [s.lower() for s in re.split(r"(?<=\.)\s+", " ".join(text.split())) if s.strip()]


def _body(report: str) -> str:
    """Text after the COMPARISON line: the FINDINGS / IMPRESSION sections."""
    return report.split("COMPARISON:", 1)[1].split("\n", 1)[1]


def _sev_ok(sentence: str, severity: str | None) -> bool:
    return severity is None or re.search(rf"\b{severity}", sentence) is not None


def _loc_ok(sentence: str, location: str | None) -> bool:
    return location is None or all(re.search(rf"\b{w}\b", sentence) for w in location.split())


def check_report(report: str, labels: dict, drawn: dict[str, tuple[str | None, str | None]]) -> list[str]:
    """Return a list of disagreements between a report and its labels (empty = consistent)."""
    problems = []
    sents = _sentences(_body(report))
    whole = report.lower()
    for c in CONDITIONS:
        kw = re.compile(KEYWORDS[c])
        hits = [s for s in sents if kw.search(s)]
        v = labels[c]
        if v is None:
            if kw.search(whole):
                problems.append(f"{c}: blank but mentioned")
            continue
        if not hits:
            problems.append(f"{c}: label {v} not stated")
            continue
        if v == 1:
            if any(NEG.search(s) or HEDGE.search(s) for s in hits):
                problems.append(f"{c}: positive but negated/hedged: {hits}")
            if c != "Support Devices" and any(NORMAL.search(s) for s in hits):
                problems.append(f"{c}: positive but stated normal: {hits}")
            loc, sev = drawn[c]
            if not any(_sev_ok(s, sev) and _loc_ok(s, loc) for s in hits):
                problems.append(f"{c}: positive without location {loc!r} / severity {sev!r}: {hits}")
        elif v == 0:
            bad = [s for s in hits if HEDGE.search(s) or not (NEG.search(s) or NORMAL.search(s))]
            if bad:
                problems.append(f"{c}: negative but not negated/normal: {bad}")
        elif v == -1:
            bad = [s for s in hits if not HEDGE.search(s)]
            if bad:
                problems.append(f"{c}: uncertain but not hedged: {bad}")
    return problems


@pytest.fixture(scope="module")
def demo(tmp_path_factory) -> tuple[Path, dict]:
    root = tmp_path_factory.mktemp("demo") / "raw"
    summary = generate_demo(root, n_subjects=14, studies_per_subject=(1, 3), image_size=SIZE, lateral_fraction=0.3,
                            seed=3)
    return root, summary


@pytest.fixture(scope="module")
def big_plan():
    return plan_demo(n_subjects=160, studies_per_subject=(1, 3), image_size=128, lateral_fraction=0.15, seed=0)


def _csv(root: Path, name: str) -> pl.DataFrame:
    return pl.read_csv(root / name, infer_schema_length=0)  # all as strings: check the raw text


# ----------------------------------------------------------------------------------------- layout


def test_layout_and_file_names(demo):
    root, summary = demo
    meta = _csv(root, "mimic-cxr-2.0.0-metadata.csv.gz")
    assert meta.height == summary["n_images"] > 0
    expected = set()
    for r in meta.iter_rows(named=True):
        s, st, d = r["subject_id"], r["study_id"], r["dicom_id"]
        assert re.fullmatch(r"1\d{7}", s) and int(s) >= 10_000_000
        assert re.fullmatch(r"5\d{7}", st) and int(st) >= 50_000_000
        assert DICOM_RE.match(d), d
        img = root / "files" / f"p{s[:2]}" / f"p{s}" / f"s{st}" / f"{d}.jpg"
        rep = root / "files" / f"p{s[:2]}" / f"p{s}" / f"s{st}.txt"
        expected |= {img, rep}
        with Image.open(img) as im:
            assert im.format == "JPEG" and im.mode == "L" and im.size == (SIZE, SIZE)
        assert rep.is_file()
    on_disk = {p for p in (root / "files").rglob("*") if p.is_file()}
    assert on_disk == expected  # nothing else under files/ (twins live outside)
    assert len({p for p in on_disk if p.suffix == ".txt"}) == summary["n_studies"]
    assert (root / "twins").is_dir() and len(list((root / "twins").glob("*.jpg"))) == summary["n_twins"] > 0
    assert meta["dicom_id"].n_unique() == meta.height


def test_csv_headers_and_values_like_mimic(demo):
    root, summary = demo
    for name, header in (("mimic-cxr-2.0.0-chexpert.csv.gz", CHEXPERT_HEADER),
                         ("mimic-cxr-2.0.0-metadata.csv.gz", METADATA_HEADER),
                         ("mimic-cxr-2.0.0-split.csv.gz", SPLIT_HEADER),
                         ("demo-annotations.csv.gz", ANNOTATION_HEADER)):
        with gzip.open(root / name, "rt") as fh:
            assert fh.readline().rstrip("\n").split(",") == header, name
    chex = _csv(root, "mimic-cxr-2.0.0-chexpert.csv.gz")
    assert chex.height == summary["n_studies"]
    assert chex.select("subject_id", "study_id").is_duplicated().sum() == 0
    for c in CHEXPERT_COLUMNS:
        vals = set(chex[c].to_list())
        assert vals <= {"1.0", "0.0", "-1.0", None}, (c, vals)
    seen = set().union(*(set(chex[c].to_list()) for c in CONDITIONS))
    assert seen == {"1.0", "0.0", "-1.0", None}  # all four states occur
    for r in chex.iter_rows(named=True):
        any_pos = any(r[c] in ("1.0", "-1.0") for c in CONDITIONS)
        assert r["No Finding"] == (None if any_pos else "1.0")
    meta = _csv(root, "mimic-cxr-2.0.0-metadata.csv.gz")
    assert set(meta["ViewPosition"]) <= {"PA", "AP", "LATERAL"} and "LATERAL" in set(meta["ViewPosition"])
    meaning = {"PA": "postero-anterior", "AP": "antero-posterior", "LATERAL": "lateral"}
    for r in meta.iter_rows(named=True):
        assert r["ViewCodeSequence_CodeMeaning"] == meaning[r["ViewPosition"]]
        assert r["Rows"] == r["Columns"] == str(SIZE)
        assert re.fullmatch(r"2\d{3}(0[1-9]|1[0-2])\d{2}", r["StudyDate"])
        assert re.fullmatch(r"\d{1,6}\.\d{1,3}", r["StudyTime"])
        assert r["PerformedProcedureStepDescription"] == r["ProcedureCodeSequence_CodeMeaning"]
    # every study has exactly one frontal image; study keys agree across tables
    frontal = meta.filter(pl.col("ViewPosition") != "LATERAL")
    assert frontal["study_id"].n_unique() == frontal.height == chex.height
    assert set(meta["study_id"]) == set(chex["study_id"])


def test_patient_level_split(demo, big_plan):
    root, _ = demo
    split = _csv(root, "mimic-cxr-2.0.0-split.csv.gz")
    meta = _csv(root, "mimic-cxr-2.0.0-metadata.csv.gz")
    assert sorted(split["dicom_id"]) == sorted(meta["dicom_id"])
    per_subject = split.group_by("subject_id").agg(pl.col("split").n_unique())
    assert per_subject["split"].max() == 1
    assert set(split["split"]) == {"train", "validate", "test"}
    shares = {k: sum(v == k for v in big_plan.split.values()) / 160 for k in ("train", "validate", "test")}
    assert shares == pytest.approx({"train": 0.7, "validate": 0.1, "test": 0.2}, abs=0.02)


# ------------------------------------------------------------------------------ labels and reports


def test_label_mix_supports_nast_permutations(big_plan):
    studies = big_plan.studies
    eligible = [len(s.labels.ones()) >= 2 and len(s.labels.zeros()) >= 3 for s in studies]
    assert np.mean(eligible) >= 0.6
    states = [s.labels.labels[c] for s in studies for c in CONDITIONS]
    for v in (1, 0, -1, None):
        assert states.count(v) / len(states) > 0.03, v
    for c in CONDITIONS:  # every condition occurs as a drawn positive in the default-size demo
        assert sum(s.labels.labels[c] == 1 for s in studies) >= 10, c
    # study ids 8 digits, unique; several studies per patient
    ids = [s.study_id for s in studies]
    assert len(set(ids)) == len(ids) and all(50_000_000 <= i < 60_000_000 for i in ids)
    assert len(studies) > 160 * 1.5


def test_reports_agree_with_labels_plan(big_plan):
    problems = []
    for s in big_plan.studies:
        drawn = {f.condition: (f.location, f.severity) for f in s.labels.findings}
        problems += [f"s{s.study_id}: {p}" for p in check_report(s.report, s.labels.labels, drawn)]
    assert problems == []


def test_reports_agree_with_labels_and_annotations_on_disk(demo):
    root, _ = demo
    chex = pl.read_csv(root / "mimic-cxr-2.0.0-chexpert.csv.gz")
    ann = pl.read_csv(root / "demo-annotations.csv.gz", infer_schema_length=0)
    meta = pl.read_csv(root / "mimic-cxr-2.0.0-metadata.csv.gz")
    n_checked = 0
    for r in chex.iter_rows(named=True):
        s, st = str(r["subject_id"]), r["study_id"]
        report = (root / "files" / f"p{s[:2]}" / f"p{s}" / f"s{st}.txt").read_text()
        labels = {c: None if r[c] is None else int(r[c]) for c in CONDITIONS}
        a = ann.filter(pl.col("study_id") == str(st))
        drawn = {x["finding"]: (x["location"], x["severity"]) for x in a.iter_rows(named=True)}
        # drawn findings == positive labels, only on the frontal image
        assert set(drawn) == {c for c in CONDITIONS if labels[c] == 1}
        views = dict(meta.filter(pl.col("study_id") == st).select("dicom_id", "ViewPosition").iter_rows())
        assert all(views[d] in ("PA", "AP") for d in a["dicom_id"])
        assert check_report(report, labels, drawn) == []
        n_checked += 1
    assert n_checked == chex.height > 10


def test_report_format_like_mimic(big_plan):
    layouts = {"standard": 0, "combined": 0, "impression_only": 0}
    for s in big_plan.studies:
        lines = s.report.split("\n")
        assert lines[0] == " " * 33 + "FINAL REPORT"
        assert all(line.startswith(" ") and len(line) <= 79 for line in lines[1:] if line)
        heads = [ln.strip() for ln in lines if re.match(r"^ [A-Z][A-Z ]+:", ln)]
        names = [h.split(":")[0] for h in heads]
        assert names[:4] == ["EXAMINATION", "INDICATION", "TECHNIQUE", "COMPARISON"]
        assert "___" in s.report.split("TECHNIQUE:")[0]  # de-identified indication
        rest = names[4:]
        kind = {("FINDINGS", "IMPRESSION"): "standard", ("FINDINGS AND IMPRESSION",): "combined",
                ("IMPRESSION",): "impression_only"}[tuple(rest)]
        assert kind == s.layout
        layouts[kind] += 1
    n = len(big_plan.studies)
    assert layouts["standard"] / n > 0.85
    assert 0 < layouts["combined"] / n < 0.1 and 0 < layouts["impression_only"] / n < 0.1
    # negatives are stated both ways across the corpus
    text = " ".join(s.report for s in big_plan.studies)
    for phrase in ("No pleural effusion", "costophrenic angles are sharp", "Heart size is normal",
                   "lungs are clear", "cannot be excluded", "pleural effusion"):
        assert phrase.lower() in text.lower(), phrase


def test_checker_catches_contradictions():
    """The report reader above is not vacuous: it flags each kind of disagreement."""
    rep = ("                                 FINAL REPORT\n EXAMINATION:  CHEST (PA)\n \n INDICATION:  ___M\n \n"
           " TECHNIQUE:  x\n \n COMPARISON:  None.\n \n FINDINGS: \n \n No pleural effusion. Possible pneumonia.\n"
           " Heart size is normal.\n")
    labels = dict.fromkeys(CONDITIONS)
    assert check_report(rep, labels | {"Pleural Effusion": 0, "Pneumonia": -1, "Cardiomegaly": 0}, {}) == []
    assert check_report(rep, labels | {"Pleural Effusion": 1, "Pneumonia": -1, "Cardiomegaly": 0},
                        {"Pleural Effusion": ("right", "small")})
    assert check_report(rep, labels | {"Pleural Effusion": 0, "Pneumonia": 0, "Cardiomegaly": 0}, {})
    assert check_report(rep, labels | {"Pleural Effusion": 0, "Pneumonia": -1, "Cardiomegaly": None}, {})
    assert check_report(rep, labels | {"Pleural Effusion": 0, "Pneumonia": -1, "Cardiomegaly": 0, "Edema": 0}, {})


# ------------------------------------------------------------------------------------------ images


def test_twin_differs_inside_box_only(demo):
    root, summary = demo
    ann = pl.read_csv(root / "demo-annotations.csv.gz")
    meta = pl.read_csv(root / "mimic-cxr-2.0.0-metadata.csv.gz")
    where = {r["dicom_id"]: (str(r["subject_id"]), r["study_id"]) for r in meta.iter_rows(named=True)}
    assert ann.height == summary["n_annotations"] > 15
    for r in ann.iter_rows(named=True):
        s, st = where[r["dicom_id"]]
        a = np.asarray(Image.open(root / "files" / f"p{s[:2]}" / f"p{s}" / f"s{st}" / f"{r['dicom_id']}.jpg"),
                       dtype=float)
        b = np.asarray(Image.open(root / r["twin_path"]), dtype=float)
        assert r["twin_path"] == f"twins/{r['dicom_id']}__{r['finding'].lower().replace(' ', '-')}.jpg"
        x0, y0, x1, y1 = r["x0"], r["y0"], r["x1"], r["y1"]
        assert 0 <= x0 < x1 <= SIZE and 0 <= y0 < y1 <= SIZE
        d = np.abs(a - b)
        inside = d[y0:y1, x0:x1]
        outside = np.ones_like(d, dtype=bool)
        outside[max(y0 - 8, 0):y1 + 8, max(x0 - 8, 0):x1 + 8] = False  # JPEG blocks touching the box
        assert inside.max() >= 15 and inside.mean() >= 1.5, r
        assert d[outside].mean() <= 0.1 and d[outside].mean() * 10 < inside.mean(), r


@pytest.mark.parametrize(("condition", "location"), [
    ("Pleural Effusion", "right"), ("Pneumothorax", "left"), ("Cardiomegaly", None),
    ("Lung Lesion", "right upper"), ("Consolidation", "left lower"), ("Edema", "bilateral"),
])
def test_severity_scales_the_drawing(condition, location):
    a = Anatomy()
    base = render_frontal(a, [], 64, noise_seed=1)
    scale = (("small", "moderate", "large")
             if condition in ("Pleural Effusion", "Pneumothorax", "Lung Lesion", "Consolidation")
             else ("mild", "moderate", "severe"))
    areas, boxes = [], []
    for sev in scale:
        img = render_frontal(a, [Finding(condition, location, sev, seed=5)], 64, noise_seed=1)
        areas.append(float(np.abs(img - base).sum()))
        boxes.append(finding_bbox(img, base))
    assert areas[0] < areas[1] < areas[2]
    if location and location != "bilateral":  # drawn on the stated side (patient right = image left)
        cx = (boxes[1][0] + boxes[1][2]) / 2
        assert (cx < 32) == location.startswith("right")
        if location.endswith("upper") or location.endswith("lower"):
            cy = (boxes[1][1] + boxes[1][3]) / 2
            assert (cy < 0.42 * 64) == location.endswith("upper")  # lung fields span y ~ 0.1-0.72


# ------------------------------------------------------------------------------- determinism, CLI


def _digest(root: Path) -> dict[str, str]:
    return {str(p.relative_to(root)): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(root.rglob("*")) if p.is_file()}


def test_same_seed_byte_identical_other_seed_differs(tmp_path):
    kw = dict(n_subjects=4, studies_per_subject=(1, 2), image_size=64, lateral_fraction=0.5)
    generate_demo(tmp_path / "a", seed=11, **kw)
    generate_demo(tmp_path / "b", seed=11, **kw)
    generate_demo(tmp_path / "c", seed=12, **kw)
    da, db, dc = _digest(tmp_path / "a"), _digest(tmp_path / "b"), _digest(tmp_path / "c")
    assert da == db and len(da) > 10
    assert da["mimic-cxr-2.0.0-chexpert.csv.gz"] != dc["mimic-cxr-2.0.0-chexpert.csv.gz"]


def test_cli_writes_replaces_and_refuses(tmp_path, capsys):
    params = yaml.safe_load((Path(__file__).resolve().parents[2] / "params.yaml").read_text())
    params["demo"].update(n_subjects=3, image_size=48, twins=False)
    pfile = tmp_path / "params.yaml"
    pfile.write_text(yaml.safe_dump(params))
    out = tmp_path / "raw" / "demo"
    assert main(["demo-data", "--params", str(pfile), "--out", str(out)]) == 0
    first = _digest(out)
    assert "mimic-cxr-2.0.0-chexpert.csv.gz" in first and not (out / "twins").exists()
    ann = pl.read_csv(out / "demo-annotations.csv.gz")
    assert ann["twin_path"].null_count() == ann.height
    assert main(["demo-data", "--params", str(pfile), "--out", str(out)]) == 0  # replaces an earlier demo tree
    assert _digest(out) == first
    assert [p.name for p in out.parent.iterdir()] == ["demo"]  # no staging folder left behind
    other = tmp_path / "precious"
    other.mkdir()
    (other / "notes.txt").write_text("keep")
    assert main(["demo-data", "--params", str(pfile), "--out", str(other)]) == 2
    assert "refusing to overwrite" in capsys.readouterr().err
    assert (other / "notes.txt").read_text() == "keep"


def _cli_params(tmp_path, **data):
    params = yaml.safe_load((Path(__file__).resolve().parents[2] / "params.yaml").read_text())
    params["demo"].update(n_subjects=3, image_size=48, twins=False)
    params["data"].update(data)
    pfile = tmp_path / "params.yaml"
    pfile.write_text(yaml.safe_dump(params))
    return pfile


def test_cli_refuses_a_mimic_root(tmp_path, capsys):
    """A MIMIC-CXR-JPG root has the same label table as a demo tree; only the demo's box table
    tells them apart, so a real dataset is never replaced."""
    pfile = _cli_params(tmp_path)
    root = tmp_path / "mimic-cxr-jpg"
    (root / "files" / "p10").mkdir(parents=True)
    for name in ("mimic-cxr-2.0.0-chexpert.csv.gz", "mimic-cxr-2.0.0-metadata.csv.gz"):
        (root / name).write_bytes(b"real data")
    before = _digest(root)
    assert main(["demo-data", "--params", str(pfile), "--out", str(root)]) == 2
    err = capsys.readouterr().err
    assert "refusing to overwrite" in err and "demo-annotations.csv.gz" in err
    assert _digest(root) == before
    assert sorted(p.name for p in tmp_path.iterdir()) == ["mimic-cxr-jpg", "params.yaml"]  # no staging folder


def test_cli_stops_when_params_name_another_source(tmp_path, capsys):
    """`dvc repro` with a dvc.yaml generated for the demo after params.yaml moved to MIMIC:
    demo_data stops loudly (naming `nast dvc-yaml`) and writes nothing."""
    for source in ("mimic", "openi"):
        pfile = _cli_params(tmp_path, source=source, root=str(tmp_path / "dataset"))
        out = tmp_path / "raw" / "demo"
        assert main(["demo-data", "--params", str(pfile), "--out", str(out)]) == 2
        err = capsys.readouterr().err
        assert "dvc.yaml was generated for the demo" in err, err
        assert f"says data.source: {source}" in err and "`nast dvc-yaml`" in err
        assert not out.exists() and not (tmp_path / "raw").exists()
