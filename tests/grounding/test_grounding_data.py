"""nast grounding-data: the three box layouts, counterfactual/control images, quarantine."""

from __future__ import annotations

import numpy as np
import polars as pl
import pytest
from PIL import Image

from nast.cli import main
from nast.grounding import boxes as B
from nast.grounding import edits as E


def run_stage(world, tmp_path, fmt, boxes, **kw):
    out = tmp_path / "grounding.parquet"
    q = tmp_path / "q.parquet"
    args = ["grounding-data", "--params", str(world["params_path"]), "--box-format", fmt, "--boxes", str(boxes),
            "--root", str(world["data"]), "--cohort", str(kw.get("cohort", world["cohort"])),
            "--cf-dir", str(tmp_path / "cf"), "--out", str(out), "--quarantine", str(q),
            "--report-dir", str(tmp_path / "validation")]
    rc = main(args)
    return rc, (pl.read_parquet(out) if out.exists() else None), (pl.read_parquet(q) if q.exists() else None)


def gray(path) -> np.ndarray:
    with Image.open(path) as im:
        return np.asarray(im.convert("L"))


def outside_equal(a: np.ndarray, b: np.ndarray, box) -> bool:
    m = np.ones(a.shape, bool)
    x0, y0, x1, y1 = box
    m[y0:y1, x0:x1] = False
    return bool(np.array_equal(a[m], b[m]))


def test_demo_layout_twins_and_controls(grounding_world, tmp_path):
    rc, t, q = run_stage(grounding_world, tmp_path, "demo", grounding_world["demo_csv"])
    assert rc == 0 and q.height == 0 and t.height == len(grounding_world["images"])
    assert set(t["cf_kind"]) == {"twin"}
    for r in t.iter_rows(named=True):
        src, cf = gray(r["image_path"]), gray(r["cf_path"])
        box = (r["x0"], r["y0"], r["x1"], r["y1"])
        assert outside_equal(src, cf, box)          # only the box changed
        x0, y0, x1, y1 = box
        assert src[y0:y1, x0:x1].mean() > 200 and cf[y0:y1, x0:x1].mean() < 150  # the blob is gone
        assert r["ctrl_path"] is not None, r
        c = (r["ctrl_x0"], r["ctrl_y0"], r["ctrl_x1"], r["ctrl_y1"])
        assert (c[2] - c[0], c[3] - c[1]) == (x1 - x0, y1 - y0)      # same size
        assert 0 <= c[0] and 0 <= c[1] and c[2] <= r["width"] and c[3] <= r["height"]
        assert not E.overlaps(c, box)                                   # off the finding
        ctrl = gray(r["ctrl_path"])
        assert outside_equal(src, ctrl, c) and not np.array_equal(src, ctrl)
    assert (tmp_path / "validation" / "grounding.md").is_file()


def test_ms_cxr_boxes_at_twice_the_resolution_are_rescaled(grounding_world, tmp_path):
    rc, t, q = run_stage(grounding_world, tmp_path, "ms-cxr", grounding_world["ms_csv"])
    assert rc == 0 and q.height == 0
    want = {d: b for d, _s, _f, b in grounding_world["images"]}
    for r in t.iter_rows(named=True):
        assert (r["x0"], r["y0"], r["x1"], r["y1"]) == want[r["dicom_id"]]
        assert r["cf_kind"] == "inpainted"
        src, cf = gray(r["image_path"]), gray(r["cf_path"])
        assert outside_equal(src, cf, want[r["dicom_id"]])
        x0, y0, x1, y1 = want[r["dicom_id"]]
        assert cf[y0:y1, x0:x1].mean() < 160  # inpainted from the darker surroundings
    # same seed, same controls
    rc2, t2, _ = run_stage(grounding_world, tmp_path / "again", "ms-cxr", grounding_world["ms_csv"])
    assert t2.select("ctrl_x0", "ctrl_y0").equals(t.select("ctrl_x0", "ctrl_y0"))


def test_bad_rows_are_quarantined_with_reasons(grounding_world, tmp_path):
    rows = pl.read_csv(grounding_world["gen_csv"])
    bad = pl.DataFrame([
        {"image_path": rows["image_path"][0], "finding": "Lung Lesion", "x0": 50, "y0": 50, "x1": 90, "y1": 60},
        {"image_path": rows["image_path"][1], "finding": "Pneumonia", "x0": 10, "y0": 10, "x1": 10, "y1": 20},
        {"image_path": rows["image_path"][2], "finding": "Aortic enlargement", "x0": 1, "y0": 1, "x1": 5, "y1": 5},
        {"image_path": "files/p99/p999/s999/nope.png", "finding": "Edema", "x0": 1, "y0": 1, "x1": 5, "y1": 5},
    ])
    csv = tmp_path / "boxes.csv"
    pl.concat([rows, bad.cast(rows.schema)]).write_csv(csv)
    rc, t, q = run_stage(grounding_world, tmp_path, "generic", csv)
    assert rc == 0
    assert t.height + q.height == rows.height + bad.height and q.height == 4
    reasons = " | ".join(q["reason"])
    assert "outside the image" in reasons and "zero or negative area" in reasons
    assert "not one of the 13 CheXpert findings" in reasons and "image not in the cohort" in reasons
    # an image in the cohort whose file is missing (boxes joined by dicom_id)
    cohort = pl.read_parquet(grounding_world["cohort"])
    cohort = cohort.with_columns(pl.when(pl.col("dicom_id") == "d7").then(pl.lit(str(tmp_path / "gone.png")))
                                 .otherwise(pl.col("image_path")).alias("image_path"))
    cpath = tmp_path / "cohort.parquet"
    cohort.write_parquet(cpath)
    rc, t, q = run_stage(grounding_world, tmp_path / "ms", "ms-cxr", grounding_world["ms_csv"], cohort=cpath)
    assert rc == 0 and q.height == 1 and t.height == len(grounding_world["images"]) - 1
    assert q["reason"][0].startswith("image file missing") and "d7" in q["key"][0]


def test_missing_column_names_file_and_column(grounding_world, tmp_path):
    csv = tmp_path / "boxes.csv"
    pl.read_csv(grounding_world["gen_csv"]).drop("y1").write_csv(csv)
    with pytest.raises(Exception, match="y1"):
        B.read_csv(csv, "generic")
    assert main(["grounding-data", "--params", str(grounding_world["params_path"]), "--box-format", "generic",
                 "--boxes", str(csv), "--root", str(grounding_world["data"]),
                 "--cohort", str(grounding_world["cohort"]),
                 "--cf-dir", str(tmp_path / "cf"), "--out", str(tmp_path / "o.parquet"),
                 "--quarantine", str(tmp_path / "q.parquet"), "--report-dir", str(tmp_path / "v")]) == 2


def test_inpainting_changes_only_the_box():
    rng = np.random.default_rng(1)
    img = rng.integers(0, 255, (40, 50)).astype(np.uint8)
    out = E.inpaint_box(img, (10, 5, 30, 20), margin=3)
    assert outside_equal(img, out, (10, 5, 30, 20))
    assert not np.array_equal(img[5:20, 10:30], out[5:20, 10:30])
    smooth = np.tile(np.linspace(0, 200, 50).astype(np.uint8), (40, 1))
    filled = E.inpaint_box(smooth, (20, 10, 26, 16), margin=4)
    assert np.abs(filled.astype(int) - smooth.astype(int)).max() <= 2  # a ramp is continued, not blurred
    # a box longer than max_side is solved at reduced resolution: same guarantees
    big = np.tile(np.linspace(0, 250, 300).astype(np.uint8), (260, 1))
    box = (40, 30, 250, 220)
    out = E.inpaint_box(big, box, margin=4, max_side=32)
    assert outside_equal(big, out, box)
    assert np.abs(out.astype(int) - big.astype(int)).max() <= 4


def test_control_box_respects_fields_and_annotations():
    size, box = (100, 100), (20, 20, 30, 30)
    avoid = [box, (55, 20, 80, 60)]
    fields = [[0.1, 0.1, 0.45, 0.7], [0.55, 0.1, 0.9, 0.7]]
    seen = set()
    for seed in range(40):
        c, why = E.control_box(size, box, avoid, fields, seed)
        assert why is None
        cx, cy = (c[0] + c[2]) / 2, (c[1] + c[3]) / 2
        assert (10 <= cx < 45 or 55 <= cx < 90) and 10 <= cy < 70
        assert not any(E.overlaps(c, a) for a in avoid)
        seen.add(c)
    assert len(seen) > 5  # drawn, not fixed
    assert E.control_box(size, box, avoid, fields, 3) == E.control_box(size, box, avoid, fields, 3)
    for seed in range(20):  # with a gap, nothing within 6 px of an annotated box
        c, _ = E.control_box(size, box, avoid, fields, seed, gap=6)
        assert not any(E.overlaps(c, (a[0] - 6, a[1] - 6, a[2] + 6, a[3] + 6)) for a in avoid)
    big, why = E.control_box(size, (0, 0, 90, 90), [(0, 0, 90, 90)], fields, 0)
    assert big is None and "no lung-field position" in why


def test_finding_names_and_pixel_boxes():
    assert B.chexpert_name("Pleural effusion") == "Pleural Effusion"
    assert B.chexpert_name("Nodule/Mass") == "Lung Lesion"
    assert B.chexpert_name("No Finding") is None and B.chexpert_name("Infiltration") is None
    assert B.scale_box((10, 20, 30, 40), (200, 100), (100, 50)) == (5, 10, 15, 20)
    assert B.pixel_box((0.2, 0.4, 9.6, 9.5), (10, 10)) == ((0, 0, 10, 10), None)
    assert B.pixel_box((0, 0, 12, 5), (10, 10))[0] is None
