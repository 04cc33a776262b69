"""``nast grounding-data``: finding boxes, counterfactual images and background controls.

Reads a box CSV (``--box-format demo | ms-cxr | generic``, :mod:`nast.grounding.boxes`), joins it
to the cohort (``dicom_id``; ``generic`` by image path) and writes, per kept box:

* the **counterfactual** ``cf_path``: the image with the finding removed. ``demo``: the pixels of
  the demo's counterfactual twin inside every box of that finding pasted into the source
  (``cf_kind = twin``); otherwise every box of that finding inpainted from its surroundings
  (scikit-image biharmonic inpainting, ``cf_kind = inpainted``). One counterfactual per (image,
  finding): removing one of two boxes would leave the finding in the image.
* the **background control** ``ctrl_path``: the same inpainting applied to a box of the same size
  elsewhere (:func:`nast.grounding.edits.control_box`: centre inside the lung fields
  ``grounding.lung_fields``, at least ``grounding.inpaint_margin`` pixels from every annotated box
  of the image, so its inpainting never reads a finding, drawn with
  ``grounding.seed`` and the row's identity). Where no such place exists (a box as large as a
  lung) the row keeps its counterfactual with null control columns and ``ctrl_note`` says why.

Images are decoded as 8-bit grayscale and written losslessly (PNG) under ``--cf-dir``, so every
pixel outside the edited box(es) equals the decoded source. Boxes given in another frame
(MS-CXR ``image_width``/``image_height``) are rescaled to the JPEG as read.

Bad rows go to ``--quarantine`` with the reason (box outside the image, zero area, a finding
outside the 13 CheXpert findings, an image not in the cohort, a missing or unreadable file, a twin
of another size); ``rows in = kept + quarantined`` is asserted and a Great Expectations gate runs
on the table (``<report-dir>/grounding.md``).
"""

from __future__ import annotations

import logging
import os
from pathlib import Path

import numpy as np
import polars as pl
from PIL import Image

from nast import io
from nast.grounding import boxes as B
from nast.grounding import edits as E

log = logging.getLogger(__name__)


STAGE = "grounding_data"
COHORT_COLUMNS = ("dicom_id", "study_id", "subject_id", "split", "view", "image_path")

GROUNDING_SCHEMA: dict[str, pl.DataType] = {
    "dicom_id": pl.Utf8, "study_id": pl.Int64, "subject_id": pl.Int64, "split": pl.Utf8, "view": pl.Utf8,
    "finding": pl.Utf8, "box_index": pl.Int32, "image_path": pl.Utf8, "width": pl.Int32, "height": pl.Int32,
    "x0": pl.Int32, "y0": pl.Int32, "x1": pl.Int32, "y1": pl.Int32,
    "cf_path": pl.Utf8, "cf_kind": pl.Utf8,
    "ctrl_path": pl.Utf8, "ctrl_x0": pl.Int32, "ctrl_y0": pl.Int32, "ctrl_x1": pl.Int32, "ctrl_y1": pl.Int32,
    "ctrl_note": pl.Utf8, "box_row": pl.Int64,
}



def _decode(path: Path) -> tuple[np.ndarray | None, str | None]:
    if not path.is_file():
        return None, f"image file missing: {path}"
    try:
        with Image.open(path) as im:
            return np.asarray(im.convert("L"), dtype=np.uint8).copy(), None
    except OSError as exc:
        return None, f"image unreadable: {path}: {exc}"


def _png(arr: np.ndarray, path: Path) -> None:
    # lossless; fast on 3000 px
    Image.fromarray(arr, mode="L").save(path, format="PNG", optimize=False, compress_level=1)


def resolve_images(box_rows: pl.DataFrame, cohort: pl.DataFrame, box_format: str, root: Path) -> pl.DataFrame:
    """Attach the cohort row of each box (by dicom_id; ``generic`` without one by image path)."""
    co = cohort.select(*COHORT_COLUMNS)
    if box_format == "generic":
        def norm(p: str | None) -> str | None:
            if p is None:
                return None
            q = Path(p)
            return os.path.normpath(str(q if q.is_absolute() else root / q))

        by_path = {os.path.normpath(p): d for d, p in co.select("dicom_id", "image_path").iter_rows()}
        ids = [d if d is not None else by_path.get(norm(p))
               for d, p in box_rows.select("dicom_id", "image_ref").iter_rows()]
        box_rows = box_rows.with_columns(pl.Series("dicom_id", ids, dtype=pl.Utf8))
    return box_rows.join(co, on="dicom_id", how="left")


def build(box_rows: pl.DataFrame, cohort: pl.DataFrame, box_format: str, root: Path, cf_dir: Path,
          cfg: dict, source: str) -> tuple[pl.DataFrame, pl.DataFrame]:
    """Write the counterfactual and control PNGs into ``cf_dir``; return (table, quarantine)."""
    rows = resolve_images(box_rows, cohort, box_format, root)
    bad: list[dict] = []
    good: list[dict] = []

    def reject(r: dict, reason: str) -> None:
        bad.append({"stage": STAGE, "key": f"row {r['row']}" + (f" ({r['dicom_id']})" if r.get("dicom_id") else ""),
                    "reason": reason, "source": source})

    for r in rows.iter_rows(named=True):
        finding = B.chexpert_name(r["finding_raw"])
        if finding is None:
            reject(r, f"finding {r['finding_raw']!r} is not one of the 13 CheXpert findings")
        elif r["dicom_id"] is None or r["image_path"] is None:
            reject(r, "image not in the cohort" + (f": {r['image_ref']}" if r.get("image_ref") else ""))
        else:
            good.append({**r, "finding": finding})

    out: list[dict] = []
    fields = cfg["lung_fields"]
    margin = int(cfg["inpaint_margin"])
    max_side = int(cfg["inpaint_max_side"])
    seed = int(cfg["seed"])
    by_image: dict[str, list[dict]] = {}
    for r in good:
        by_image.setdefault(r["dicom_id"], []).append(r)
    for dicom_id in sorted(by_image):
        items = by_image[dicom_id]
        src, why = _decode(Path(items[0]["image_path"]))
        if src is None:
            for r in items:
                reject(r, why)
            continue
        size = (src.shape[1], src.shape[0])
        placed: list[dict] = []
        for r in items:
            try:
                fbox = B.scale_box((r["x0"], r["y0"], r["x1"], r["y1"]), (r["ref_width"], r["ref_height"]), size)
            except ValueError as exc:
                reject(r, str(exc))
                continue
            pbox, why = B.pixel_box(fbox, size)
            if pbox is None:
                reject(r, why)
                continue
            placed.append({**r, "box": pbox})
        annotated = [p["box"] for p in placed]
        by_finding: dict[str, list[dict]] = {}
        for p in placed:
            by_finding.setdefault(p["finding"], []).append(p)
        for finding in sorted(by_finding):
            group = sorted(by_finding[finding], key=lambda p: (p["box"], p["row"]))
            slug = finding.lower().replace(" ", "-")
            fboxes = [p["box"] for p in group]
            if box_format == "demo":
                twin_rel = group[0]["twin_path"]
                if not twin_rel:
                    for p in group:
                        reject(p, "no counterfactual twin in the demo annotations")
                    continue
                twin, why = _decode(root / twin_rel)
                if twin is None or twin.shape != src.shape:
                    for p in group:
                        reject(p, why or f"twin {twin_rel} is {twin.shape[1]} x {twin.shape[0]}, "
                                         f"the image {size[0]} x {size[1]}")
                    continue
                cf, kind = E.paste_box(src, twin, fboxes), "twin"
            else:
                cf, kind = E.inpaint_box(src, fboxes, margin, max_side), "inpainted"
            cf_path = cf_dir / f"{dicom_id}__{slug}.cf.png"
            _png(cf, cf_path)
            for k, p in enumerate(group):
                cbox, note = E.control_box(size, p["box"], annotated, fields, E.row_seed(seed, dicom_id, finding, k),
                                            gap=margin)
                ctrl_path = None
                if cbox is not None:
                    ctrl_path = cf_dir / f"{dicom_id}__{slug}__{k}.ctrl.png"
                    _png(E.inpaint_box(src, cbox, margin, max_side), ctrl_path)
                x0, y0, x1, y1 = p["box"]
                c = cbox or (None, None, None, None)
                out.append({
                    "dicom_id": dicom_id, "study_id": p["study_id"], "subject_id": p["subject_id"],
                    "split": p["split"], "view": p["view"], "finding": finding, "box_index": k,
                    "image_path": p["image_path"], "width": size[0], "height": size[1],
                    "x0": x0, "y0": y0, "x1": x1, "y1": y1, "cf_path": str(cf_path), "cf_kind": kind,
                    "ctrl_path": None if ctrl_path is None else str(ctrl_path),
                    "ctrl_x0": c[0], "ctrl_y0": c[1], "ctrl_x1": c[2], "ctrl_y1": c[3], "ctrl_note": note,
                    "box_row": p["row"],
                })
    table = pl.DataFrame(out, schema=GROUNDING_SCHEMA).sort("dicom_id", "finding", "box_index")
    quarantine = io.quarantine_frame(bad)
    io.reconcile(STAGE, box_rows.height, table.height, quarantine.height)
    return table, quarantine


def gate_frame(table: pl.DataFrame) -> pl.DataFrame:
    """Derived columns for the data gate: areas, the control inside the image and off the box."""
    has_ctrl = pl.col("ctrl_path").is_not_null()
    return table.with_columns(
        ((pl.col("x1") - pl.col("x0")) * (pl.col("y1") - pl.col("y0"))).alias("box_area"),
        ((pl.col("x0") >= 0) & (pl.col("y0") >= 0) & (pl.col("x1") <= pl.col("width"))
         & (pl.col("y1") <= pl.col("height"))).alias("box_inside"),
        pl.when(has_ctrl).then(
            (pl.col("ctrl_x0") >= 0) & (pl.col("ctrl_y0") >= 0) & (pl.col("ctrl_x1") <= pl.col("width"))
            & (pl.col("ctrl_y1") <= pl.col("height"))
            & ((pl.col("ctrl_x1") - pl.col("ctrl_x0")) == (pl.col("x1") - pl.col("x0")))
            & ((pl.col("ctrl_y1") - pl.col("ctrl_y0")) == (pl.col("y1") - pl.col("y0")))
            & ~((pl.col("ctrl_x0") < pl.col("x1")) & (pl.col("x0") < pl.col("ctrl_x1"))
                & (pl.col("ctrl_y0") < pl.col("y1")) & (pl.col("y0") < pl.col("ctrl_y1")))
        ).otherwise(pl.lit(True)).alias("ctrl_ok"),
        pl.concat_str("dicom_id", "finding", "box_index", separator="|").alias("row_key"),
    )


def expectations() -> list:
    from nast.conditions import CONDITIONS

    return [
        ("ExpectColumnValuesToNotBeNull", {"column": c})
        for c in ("dicom_id", "split", "finding", "image_path", "cf_path", "x0", "y0", "x1", "y1")
    ] + [
        ("ExpectColumnValuesToBeInSet", {"column": "finding", "value_set": list(CONDITIONS)}),
        ("ExpectColumnValuesToBeInSet", {"column": "split", "value_set": ["train", "validate", "test"]}),
        ("ExpectColumnValuesToBeInSet", {"column": "cf_kind", "value_set": ["twin", "inpainted"]}),
        ("ExpectColumnValuesToBeBetween", {"column": "box_area", "min_value": 1}),
        ("ExpectColumnValuesToBeInSet", {"column": "box_inside", "value_set": [True]}),
        ("ExpectColumnValuesToBeInSet", {"column": "ctrl_ok", "value_set": [True]}),
        ("ExpectColumnValuesToBeUnique", {"column": "row_key"}),
    ]


