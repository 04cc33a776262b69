"""A tiny grounding world: 64 x 64 grayscale radiograph-like images with a bright blob (the
finding), its removal (a twin), a cohort table and box CSVs in the three layouts."""

from __future__ import annotations

import gzip
from pathlib import Path

import numpy as np
import polars as pl
import pytest
import torch
import yaml
from PIL import Image

torch.set_num_threads(1)

REPO = Path(__file__).resolve().parents[2]
SIZE = 64
#: (dicom_id, split, finding, box) - the blob of each image fills its box
IMAGES = [
    ("d0", "test", "Lung Lesion", (12, 14, 22, 24)),
    ("d1", "test", "Pneumonia", (40, 16, 52, 28)),
    ("d2", "test", "Lung Lesion", (14, 34, 24, 44)),
    ("d3", "test", "Consolidation", (42, 30, 52, 40)),
    ("d4", "test", "Pneumothorax", (16, 12, 26, 22)),
    ("d5", "test", "Atelectasis", (38, 34, 48, 42)),
    ("d6", "train", "Lung Lesion", (14, 20, 24, 30)),
    ("d7", "train", "Pneumonia", (40, 20, 50, 30)),
]


def background(seed: int) -> np.ndarray:
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[0:SIZE, 0:SIZE] / SIZE
    lungs = 60 + 40 * ((np.abs(xx - 0.5) > 0.08) & (yy > 0.1) & (yy < 0.8))
    return np.clip(lungs + rng.normal(0, 6, (SIZE, SIZE)), 0, 255).astype(np.uint8)


def with_blob(bg: np.ndarray, box) -> np.ndarray:
    out = bg.copy()
    x0, y0, x1, y1 = box
    out[y0:y1, x0:x1] = 230
    return out


def write_png(arr: np.ndarray, path: Path) -> str:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(arr, mode="L").save(path, format="PNG")
    return str(path)


def gz_csv(df: pl.DataFrame, path: Path) -> Path:
    path.write_bytes(gzip.compress(df.write_csv().encode(), mtime=0))
    return path


@pytest.fixture(scope="session")
def grounding_world(tmp_path_factory):
    root = tmp_path_factory.mktemp("grounding_world")
    data = root / "data"
    cohort_rows, ann_rows, ms_rows, gen_rows = [], [], [], []
    for i, (dicom, split, finding, box) in enumerate(IMAGES):
        bg = background(i)
        rel = f"files/p10/p1000{i}/s5000{i}/{dicom}.png"
        path = write_png(with_blob(bg, box), data / rel)
        twin_rel = f"twins/{dicom}__{finding.lower().replace(' ', '-')}.png"
        # the twin differs from the source a little everywhere (as a re-encoded JPEG does): only its
        # box may enter the counterfactual
        jitter = np.random.default_rng(100 + i).integers(-3, 4, bg.shape)
        write_png(np.clip(bg.astype(int) + jitter, 0, 255).astype(np.uint8), data / twin_rel)
        cohort_rows.append({"dicom_id": dicom, "study_id": 50000 + i, "subject_id": 10000 + i, "split": split,
                            "view": "PA", "image_path": path})
        x0, y0, x1, y1 = box
        ann_rows.append({"dicom_id": dicom, "study_id": 50000 + i, "subject_id": 10000 + i, "finding": finding,
                         "location": None, "severity": None, "x0": x0, "y0": y0, "x1": x1, "y1": y1,
                         "twin_path": twin_rel})
        # MS-CXR layout: boxes in an image of twice the resolution (x, y, w, h)
        ms_rows.append({"dicom_id": dicom, "category_name": finding.lower().capitalize(), "label_text": "x",
                        "path": rel, "x": 2 * x0, "y": 2 * y0, "w": 2 * (x1 - x0), "h": 2 * (y1 - y0),
                        "image_width": 2 * SIZE, "image_height": 2 * SIZE})
        gen_rows.append({"image_path": rel, "finding": finding, "x0": x0, "y0": y0, "x1": x1, "y1": y1})
    cohort = pl.DataFrame(cohort_rows)
    cohort_path = root / "cohort.parquet"
    cohort.write_parquet(cohort_path)
    demo_csv = gz_csv(pl.DataFrame(ann_rows), data / "demo-annotations.csv.gz")
    ms_csv = root / "ms_cxr.csv"
    pl.DataFrame(ms_rows).write_csv(ms_csv)
    gen_csv = root / "generic.csv"
    pl.DataFrame(gen_rows).write_csv(gen_csv)
    params = yaml.safe_load((REPO / "params.yaml").read_text())
    params["model"]["device"] = "cpu"
    params["evaluate"]["bootstrap"] = 50
    g = params["grounding"]
    g.update(inpaint_margin=4, max_localization=0, max_attribution=0, examples=2, n_masks=16, ig_steps=4,
             occlusion_cells=8, mask_cells=8, min_area=4)
    params_path = root / "params.yaml"
    params_path.write_text(yaml.safe_dump(params, sort_keys=False))
    return {"root": root, "data": data, "cohort": cohort_path, "demo_csv": demo_csv, "ms_csv": ms_csv,
            "gen_csv": gen_csv, "params": params, "params_path": params_path, "images": IMAGES}


@pytest.fixture(autouse=True)
def _no_tracking(monkeypatch):
    monkeypatch.setenv("NAST_TRACKING", "0")
