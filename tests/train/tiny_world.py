"""A tiny, fully offline world for the train/evaluate/report tests: 8 images, 3 tables, a random
tiny model of each family (built by nast.models.testing, loaded through nast.models.load_model),
layer weights and a params.yaml. Everything is deterministic."""

from __future__ import annotations

import copy
from pathlib import Path

import numpy as np
import polars as pl
import yaml
from PIL import Image

from nast.conditions import CHEXPERT_COLUMNS

REPO = Path(__file__).resolve().parents[2]
CONFIGS = Path(__file__).resolve().parent / "configs"
SPLITS = ["train", "train", "train", "train", "validate", "validate", "test", "test"]
FINDINGS = ["pleural effusion", "pneumothorax", "edema", "atelectasis"]
COND = ["Pleural Effusion", "Pneumothorax", "Edema", "Atelectasis"]


def images(root: Path, n: int = 8) -> list[str]:
    rng = np.random.default_rng(0)
    root.mkdir(parents=True, exist_ok=True)
    paths = []
    for i in range(n):
        arr = (rng.random((32, 32)) * 80 + 40 * (i % 4)).astype(np.uint8)
        p = root / f"d{i}.jpg"
        Image.fromarray(arr, mode="L").save(p, quality=95)
        paths.append(str(p))
    return paths


def tables(paths: list[str], splits: list[str] | None = None,
           subjects: list[int] | None = None) -> tuple[pl.DataFrame, pl.DataFrame, pl.DataFrame]:
    """``splits`` / ``subjects``: per image (default SPLITS, subject 10 + i: one image per patient)."""
    splits = SPLITS if splits is None else splits
    subjects = [10 + i for i in range(len(paths))] if subjects is None else subjects
    assert len(splits) == len(subjects) == len(paths)
    cohort_rows, bench_rows, ctx_rows = [], [], []
    for i, p in enumerate(paths):
        pos = i % 4
        labels = {c: None for c in CHEXPERT_COLUMNS}
        for j, c in enumerate(COND):
            labels[c] = 1 if j == pos else 0
        if i == 7:
            labels["Edema"] = -1  # uncertain: excluded from AUROC
        f_pos, f_neg = FINDINGS[pos], FINDINGS[(pos + 1) % 4]
        cohort_rows.append({
            "dataset": "demo", "dicom_id": f"d{i}", "subject_id": subjects[i], "study_id": 100 + i, "view": "PA",
            "split": splits[i], "image_path": p, "report_path": None,
            "findings": f"there is {f_pos}. no {f_neg}.", "impression": f"{f_pos}." if i % 2 else None, **labels,
        })
        conds = [COND[pos], COND[(pos + 1) % 4], COND[(pos + 2) % 4]]
        true = [1, 0, 0]
        opts = {"A": [1, 0, 0], "B": [0, 1, 0], "C": [1, 1, 0], "D": [0, 0, 1]}
        letters = "ABCD"
        correct = letters[i % 4]
        # rotate so that the true vector sits at the correct letter
        order = [k for k in letters if opts[k] != true]
        vecs = {}
        it = iter(order)
        for L in letters:
            vecs[L] = true if L == correct else opts[next(it)]

        def neg_text(v):
            return ", ".join(("" if x else "no ") + c.lower() for c, x in zip(conds, v))

        def aff_text(v):
            return ", ".join(c.lower() + (" present" if x else " absent") for c, x in zip(conds, v))

        bench_rows.append({
            "subject_id": subjects[i], "study_id": 100 + i, "dicom_id": f"d{i}", "image_path": p, "split": splits[i],
            "conditions": conds, "true_labels": true, "correct": correct,
            **{f"option_{L}": vecs[L] for L in letters},
            "question": "which is true?",
            **{f"negated_{L}": neg_text(vecs[L]) for L in letters},
            **{f"affirmative_{L}": aff_text(vecs[L]) for L in letters},
            "mcq_backend": "template", "verified": True, "affirm_verified": True,
        })
        for cap, foils in (
            (f"there is {f_pos}", [(f"there is no {f_pos}", "polarity"), (f"there is severe {f_pos}", "severity")]),
            (f"left {f_neg} absent", [(f"right {f_neg} absent", "laterality")]),
        ):
            for foil, kind in foils:
                ctx_rows.append({"study_id": 100 + i, "subject_id": subjects[i], "dicom_id": f"d{i}", "image_path": p,
                                 "split": splits[i], "claim_id": f"{100 + i}-{cap}", "finding": f_pos,
                                 "caption": cap, "foil": foil, "foil_type": kind})
    cohort = pl.DataFrame(cohort_rows).with_columns([pl.col(c).cast(pl.Int8) for c in CHEXPERT_COLUMNS])
    bench = pl.DataFrame(bench_rows).with_columns(
        [pl.col(c).cast(pl.List(pl.Int8)) for c in ("true_labels", "option_A", "option_B", "option_C", "option_D")])
    return cohort, bench, pl.DataFrame(ctx_rows)


def layer_weights(path: Path, alphas=(0.3, 0.0, 0.5, 1.0)) -> Path:
    rows = ["layer,cte,alpha"] + [f"{layer},{a * 2 - 0.1:.3f},{a}" for layer, a in enumerate(alphas)]
    path.write_text("\n".join(rows) + "\n")
    return path


def build(tmp: Path, family: str = "open_clip", *, splits: list[str] | None = None,
          subjects: list[int] | None = None, **overrides) -> dict:
    """``splits`` (one per image; its length = the number of images) and ``subjects``: see
    :func:`tables`; ``overrides``: params sections to update."""
    from nast.models.testing import save_tiny

    paths = images(tmp / "img", len(splits) if splits is not None else len(SPLITS))
    cohort, bench, ctx = tables(paths, splits, subjects)
    files = {"cohort": tmp / "cohort.parquet", "benchmark": tmp / "benchmark.parquet",
             "contextual": tmp / "contextual.parquet", "layer_weights": layer_weights(tmp / "layer_weights.csv")}
    cohort.write_parquet(files["cohort"])
    bench.write_parquet(files["benchmark"])
    ctx.write_parquet(files["contextual"])
    model = save_tiny(family, CONFIGS, tmp / f"base-{family}", seed=0)
    params = copy.deepcopy(yaml.safe_load((REPO / "params.yaml").read_text()))
    params["model"] = model
    params["train"].update(epochs=2, batch_size=4, lr=0.01, seed=0)
    params["evaluate"].update(bootstrap=50)
    for section, values in overrides.items():
        params[section].update(values)
    files["params"] = tmp / "params.yaml"
    files["params"].write_text(yaml.safe_dump(params))
    return {"params": params, "files": {k: str(v) for k, v in files.items()}, "tmp": tmp}
