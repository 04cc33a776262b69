"""Plan and write the synthetic demo dataset in the exact MIMIC-CXR-JPG 2.0.0 layout.

:func:`plan_demo` is pure (seed in, records out: patients, studies, labels, reports, image specs);
:func:`render_image` turns one image spec into pixels; :func:`generate_demo` writes the tree::

    DIR/mimic-cxr-2.0.0-chexpert.csv.gz     subject_id, study_id, 14 CheXpert columns (1.0/0.0/-1.0/empty)
    DIR/mimic-cxr-2.0.0-metadata.csv.gz     dicom_id, subject_id, study_id, ViewPosition, Rows, ... (12 columns)
    DIR/mimic-cxr-2.0.0-split.csv.gz        dicom_id, study_id, subject_id, split (patient-level)
    DIR/files/pXX/pSUBJECT/sSTUDY/DICOM.jpg grayscale JPEGs (frontal PA/AP, some LATERAL)
    DIR/files/pXX/pSUBJECT/sSTUDY.txt       free-text report (see nast.demo.reports)
    DIR/demo-annotations.csv.gz             one row per drawn finding: location, severity, box, twin_path
    DIR/twins/DICOM__finding-slug.jpg       counterfactual twin: same phantom and noise, that finding removed

Findings are drawn on the frontal image only (the lateral view is a plain side phantom); uncertain
(-1) labels are never drawn. Boxes are ``x0, y0, x1, y1`` in pixels (x1/y1 exclusive), measured as
the pixels that change by more than 2 % of the range when the finding is removed.

Everything derives from ``seed`` (numpy ``SeedSequence`` per patient); files are written with a
fixed JPEG quality, gzip ``mtime=0`` and sorted rows, so the same seed gives byte-identical files.
The tree is built in a sibling staging folder and moved into place at the end (atomic for readers).
"""

from __future__ import annotations

import datetime as dt
import gzip
import io
import logging
import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import polars as pl
from PIL import Image

from nast.conditions import CHEXPERT_COLUMNS
from nast.demo.labels import StudyLabels, sample_study_labels
from nast.demo.phantom import (
    Anatomy,
    Finding,
    finding_bbox,
    jitter_study,
    render_frontal,
    render_lateral,
    sample_anatomy,
    to_uint8,
)
from nast.demo.reports import compose_report
from nast.errors import StageError
from nast.io import staged_dir as io_staged_dir

log = logging.getLogger(__name__)

CHEXPERT_FILE = "mimic-cxr-2.0.0-chexpert.csv.gz"
METADATA_FILE = "mimic-cxr-2.0.0-metadata.csv.gz"
SPLIT_FILE = "mimic-cxr-2.0.0-split.csv.gz"
ANNOTATIONS_FILE = "demo-annotations.csv.gz"

METADATA_COLUMNS = (
    "dicom_id", "subject_id", "study_id", "PerformedProcedureStepDescription", "ViewPosition", "Rows",
    "Columns", "StudyDate", "StudyTime", "ProcedureCodeSequence_CodeMeaning", "ViewCodeSequence_CodeMeaning",
    "PatientOrientationCodeSequence_CodeMeaning",
)
ANNOTATION_COLUMNS = ("dicom_id", "study_id", "subject_id", "finding", "location", "severity",
                      "x0", "y0", "x1", "y1", "twin_path")
VIEW_MEANING = {"PA": "postero-anterior", "AP": "antero-posterior", "LATERAL": "lateral"}
JPEG_QUALITY = 95
AP_FRACTION = 0.3


@dataclass(frozen=True)
class ImageSpec:
    dicom_id: str
    subject_id: int
    study_id: int
    view: str
    anatomy: Anatomy
    noise_seed: int
    findings: tuple[Finding, ...]          # drawn findings (frontal only)

    @property
    def rel_path(self) -> str:
        s = str(self.subject_id)
        return f"files/p{s[:2]}/p{s}/s{self.study_id}/{self.dicom_id}.jpg"


@dataclass(frozen=True)
class StudySpec:
    subject_id: int
    study_id: int
    labels: StudyLabels
    report: str
    layout: str
    procedure: str
    date: int
    time: float
    orientation: str
    images: tuple[ImageSpec, ...]

    @property
    def report_rel_path(self) -> str:
        s = str(self.subject_id)
        return f"files/p{s[:2]}/p{s}/s{self.study_id}.txt"


@dataclass(frozen=True)
class DemoPlan:
    studies: tuple[StudySpec, ...]
    split: dict[int, str]                  # subject_id -> train|validate|test
    image_size: int


def _dicom_id(rng: np.random.Generator) -> str:
    return "-".join(f"{int(v):08x}" for v in rng.integers(0, 2**32, size=5, dtype=np.uint64))


def _split_subjects(subject_ids: list[int], rng: np.random.Generator,
                    fractions: tuple[float, float, float]) -> dict[int, str]:
    n = len(subject_ids)
    order = [subject_ids[int(i)] for i in rng.permutation(n)]
    n_val = int(round(fractions[1] * n))
    n_test = int(round(fractions[2] * n))
    if n >= 3:
        n_val, n_test = max(n_val, 1), max(n_test, 1)
    n_train = max(n - n_val - n_test, 0)
    out = {}
    for i, sid in enumerate(order):
        out[sid] = "train" if i < n_train else "validate" if i < n_train + n_val else "test"
    return out


def plan_demo(
    *,
    n_subjects: int,
    studies_per_subject: tuple[int, int] = (1, 3),
    image_size: int = 128,
    lateral_fraction: float = 0.15,
    seed: int = 0,
    split_fractions: tuple[float, float, float] = (0.7, 0.1, 0.2),
) -> DemoPlan:
    """Pure planning step: every id, label, report and image spec, from ``seed``."""
    lo, hi = int(studies_per_subject[0]), int(studies_per_subject[1])
    if n_subjects < 1 or lo < 1 or hi < lo:
        raise ValueError(f"bad demo size: n_subjects={n_subjects}, studies_per_subject={studies_per_subject}")
    master = np.random.default_rng(np.random.SeedSequence([seed, 0]))
    subject_ids = (10_000_000 + np.cumsum(master.integers(1, 3000, size=n_subjects))).tolist()
    children = np.random.SeedSequence([seed, 1]).spawn(n_subjects)
    n_studies = [int(np.random.default_rng(c).integers(lo, hi + 1)) for c in children]
    study_ids = (50_000_000 + master.choice(10_000_000, size=sum(n_studies), replace=False)).tolist()
    split = _split_subjects(subject_ids, master, split_fractions)

    studies: list[StudySpec] = []
    k = 0
    for subject_id, child, n_st in zip(subject_ids, children, n_studies):
        rng = np.random.default_rng(child)
        rng.integers(lo, hi + 1)  # the draw of n_studies above (keeps the stream aligned)
        anat = sample_anatomy(rng)
        sex = "M" if rng.random() < 0.5 else "F"
        day = dt.date(2110, 1, 1) + dt.timedelta(days=int(rng.integers(0, 70 * 365)))
        for j in range(n_st):
            study_id = int(study_ids[k])
            k += 1
            if j:
                day += dt.timedelta(days=int(rng.integers(1, 400)))
            portable = rng.random() < AP_FRACTION
            frontal = "AP" if portable else "PA"
            views = [frontal] + (["LATERAL"] if rng.random() < lateral_fraction else [])
            labels = sample_study_labels(rng, portable=portable)
            report, layout = compose_report(labels, rng, views=views, sex=sex, first_study=j == 0)
            images = []
            for v in views:
                a = jitter_study(anat, rng, v)
                images.append(ImageSpec(
                    dicom_id=_dicom_id(rng), subject_id=subject_id, study_id=study_id, view=v, anatomy=a,
                    noise_seed=int(rng.integers(0, 2**31 - 1)),
                    findings=tuple(labels.findings) if v != "LATERAL" else (),
                ))
            secs = int(rng.integers(0, 86400))   # StudyTime is HHMMSS.fff stored as a float, as in MIMIC
            time = round(secs // 3600 * 10000 + secs % 3600 // 60 * 100 + secs % 60
                         + int(rng.integers(0, 1000)) / 1000, 3)
            orientation = ("Recumbent" if rng.random() < 0.5 else "Erect") if portable else "Erect"
            procedure = "CHEST (PORTABLE AP)" if portable else "CHEST (PA AND LAT)"
            studies.append(StudySpec(
                subject_id=subject_id, study_id=study_id, labels=labels, report=report, layout=layout,
                procedure=procedure, date=int(day.strftime("%Y%m%d")), time=time,
                orientation=orientation, images=tuple(images),
            ))
    dicoms = [im.dicom_id for s in studies for im in s.images]
    if len(set(dicoms)) != len(dicoms):  # pragma: no cover - 160-bit ids
        raise RuntimeError("duplicate dicom_id drawn; change demo.seed")
    studies.sort(key=lambda s: (s.subject_id, s.study_id))
    return DemoPlan(studies=tuple(studies), split=split, image_size=image_size)


def render_image(im: ImageSpec, size: int, drop: str | None = None) -> np.ndarray:
    """Float pixels of one image; ``drop`` = a condition to leave out (its counterfactual twin)."""
    if im.view == "LATERAL":
        return render_lateral(im.anatomy, size, im.noise_seed)
    return render_frontal(im.anatomy, [f for f in im.findings if f.condition != drop], size, im.noise_seed)


# ------------------------------------------------------------------------------------------- tables


def _label_float(v: int | None) -> float | None:
    return None if v is None else float(v)


def chexpert_frame(plan: DemoPlan) -> pl.DataFrame:
    rows = [{"subject_id": s.subject_id, "study_id": s.study_id,
             **{c: _label_float(s.labels.labels[c]) for c in CHEXPERT_COLUMNS}} for s in plan.studies]
    schema = {"subject_id": pl.Int64, "study_id": pl.Int64, **{c: pl.Float64 for c in CHEXPERT_COLUMNS}}
    return pl.DataFrame(rows, schema=schema).sort("subject_id", "study_id")


def metadata_frame(plan: DemoPlan) -> pl.DataFrame:
    rows = []
    for s in plan.studies:
        for im in s.images:
            rows.append({
                "dicom_id": im.dicom_id, "subject_id": s.subject_id, "study_id": s.study_id,
                "PerformedProcedureStepDescription": s.procedure, "ViewPosition": im.view,
                "Rows": plan.image_size, "Columns": plan.image_size, "StudyDate": s.date,
                "StudyTime": s.time, "ProcedureCodeSequence_CodeMeaning": s.procedure,
                "ViewCodeSequence_CodeMeaning": VIEW_MEANING[im.view],
                "PatientOrientationCodeSequence_CodeMeaning": s.orientation,
            })
    schema = {c: pl.Utf8 for c in METADATA_COLUMNS} | {"subject_id": pl.Int64, "study_id": pl.Int64,
                                                        "Rows": pl.Int64, "Columns": pl.Int64, "StudyDate": pl.Int64,
                                                        "StudyTime": pl.Float64}
    return pl.DataFrame(rows, schema=schema).sort("subject_id", "study_id", "dicom_id")


def split_frame(plan: DemoPlan) -> pl.DataFrame:
    rows = [{"dicom_id": im.dicom_id, "study_id": s.study_id, "subject_id": s.subject_id,
             "split": plan.split[s.subject_id]}
            for s in plan.studies for im in s.images]
    schema = {"dicom_id": pl.Utf8, "study_id": pl.Int64, "subject_id": pl.Int64, "split": pl.Utf8}
    return pl.DataFrame(rows, schema=schema).sort("subject_id", "study_id", "dicom_id")


def _gz_csv(df: pl.DataFrame) -> bytes:
    return gzip.compress(df.write_csv().encode("utf-8"), compresslevel=6, mtime=0)


def _jpeg(pixels: np.ndarray) -> bytes:
    buf = io.BytesIO()
    Image.fromarray(to_uint8(pixels), mode="L").save(buf, format="JPEG", quality=JPEG_QUALITY)
    return buf.getvalue()


# ------------------------------------------------------------------------------------------ writing


def is_demo_tree(path: str | os.PathLike) -> bool:
    """An earlier demo tree: the MIMIC-CXR-JPG label table *and* the demo's own box table. A real
    MIMIC-CXR-JPG root has the first but never ``demo-annotations.csv.gz``."""
    path = Path(path)
    return (path / CHEXPERT_FILE).is_file() and (path / ANNOTATIONS_FILE).is_file()


def _check_target(out: Path) -> None:
    """Refuse to clobber a folder that is not an earlier demo tree (a dataset root, anything else)."""
    if out.exists():
        if not out.is_dir():
            raise StageError(f"demo output is not a directory: {out}")
        if any(out.iterdir()) and not is_demo_tree(out):
            raise StageError(
                f"refusing to overwrite {out}: not empty and not a demo tree (no {CHEXPERT_FILE} + "
                f"{ANNOTATIONS_FILE}); nothing written - choose an empty or new folder"
            )


def generate_demo(
    out_dir: str | os.PathLike,
    *,
    n_subjects: int,
    studies_per_subject: tuple[int, int] = (1, 3),
    image_size: int = 128,
    lateral_fraction: float = 0.15,
    twins: bool = True,
    seed: int = 0,
    split_fractions: tuple[float, float, float] = (0.7, 0.1, 0.2),
) -> dict:
    """Write the demo tree to ``out_dir`` (replacing an earlier demo tree); return summary counts."""
    out = Path(out_dir)
    out.parent.mkdir(parents=True, exist_ok=True)
    plan = plan_demo(n_subjects=n_subjects, studies_per_subject=studies_per_subject, image_size=image_size,
                     lateral_fraction=lateral_fraction, seed=seed, split_fractions=split_fractions)
    _check_target(out)
    with io_staged_dir(out) as stage:
        ann_rows = _write_files(plan, stage, twins)
        ann_schema = {c: pl.Utf8 for c in ANNOTATION_COLUMNS} | {
            "study_id": pl.Int64, "subject_id": pl.Int64,
            "x0": pl.Int64, "y0": pl.Int64, "x1": pl.Int64, "y1": pl.Int64}
        ann = pl.DataFrame(ann_rows, schema=ann_schema).sort("subject_id", "study_id", "dicom_id", "finding")
        for name, df in ((CHEXPERT_FILE, chexpert_frame(plan)), (METADATA_FILE, metadata_frame(plan)),
                         (SPLIT_FILE, split_frame(plan)), (ANNOTATIONS_FILE, ann)):
            (stage / name).write_bytes(_gz_csv(df))
    summary = summarize(plan)
    summary["n_annotations"] = len(ann_rows)
    summary["n_twins"] = len(ann_rows) if twins else 0
    log.info("demo-data: wrote %s: %s", out, summary)
    return summary


def _write_files(plan: DemoPlan, root: Path, twins: bool) -> list[dict]:
    size = plan.image_size
    rows: list[dict] = []
    n = len(plan.studies)
    step = max(n // 10, 1)
    made_dirs: set[Path] = set()
    for i, s in enumerate(plan.studies):
        report_path = root / s.report_rel_path
        study_dir = report_path.with_suffix("")          # files/pXX/pSUBJECT/sSTUDY/
        if study_dir not in made_dirs:
            study_dir.mkdir(parents=True, exist_ok=True)
            made_dirs.add(study_dir)
        report_path.write_text(s.report)
        for im in s.images:
            full = render_image(im, size)
            (root / im.rel_path).write_bytes(_jpeg(full))
            for f in im.findings:
                twin = render_image(im, size, drop=f.condition)
                box = finding_bbox(full, twin)
                if box is None:  # pragma: no cover - every finding is drawn visibly by construction
                    raise RuntimeError(f"{f.condition} left no visible trace on {im.dicom_id}")
                twin_rel = f"twins/{im.dicom_id}__{f.slug}.jpg"
                if twins:
                    (root / "twins").mkdir(exist_ok=True)
                    (root / twin_rel).write_bytes(_jpeg(twin))
                rows.append({
                    "dicom_id": im.dicom_id, "study_id": s.study_id, "subject_id": s.subject_id,
                    "finding": f.condition, "location": f.location, "severity": f.severity,
                    "x0": box[0], "y0": box[1], "x1": box[2], "y1": box[3],
                    "twin_path": twin_rel if twins else None,
                })
        if (i + 1) % step == 0 or i + 1 == n:
            log.info("demo-data: %d/%d studies rendered", i + 1, n)
    return rows


def summarize(plan: DemoPlan) -> dict:
    """Counts of the plan (no pixels needed)."""
    from nast.conditions import CONDITIONS

    n_img = sum(len(s.images) for s in plan.studies)
    n_lat = sum(im.view == "LATERAL" for s in plan.studies for im in s.images)
    eligible = sum(len(s.labels.ones()) >= 2 and len(s.labels.zeros()) >= 3 for s in plan.studies)
    states = {"1": 0, "0": 0, "-1": 0, "blank": 0}
    for s in plan.studies:
        for c in CONDITIONS:
            v = s.labels.labels[c]
            states["blank" if v is None else str(v)] += 1
    return {
        "n_subjects": len(plan.split),
        "n_studies": len(plan.studies),
        "n_images": n_img,
        "n_frontal": n_img - n_lat,
        "n_lateral": n_lat,
        "n_nast_eligible_studies": eligible,
        "label_states": states,
        "layouts": {k: sum(s.layout == k for s in plan.studies) for k in ("standard", "combined", "impression_only")},
        "split_subjects": {k: sum(v == k for v in plan.split.values()) for k in ("train", "validate", "test")},
    }
