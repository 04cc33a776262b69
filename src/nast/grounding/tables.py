"""Grounding tables and the example picture of ``nast report`` (from ``reports/grounding/*``).

``grounding.csv``    one row per method: the four counterfactual accuracies with CI columns
                     (``*_lo``/``*_hi``), ``loc_iou``, ``pointing_game`` (with CIs), ``n_pairs``,
                     ``n_ctrl``, ``n_kept``
``paired_grounding.csv``  each method against zero_shot and lora_uniform on the same pairs:
                     ``method, baseline, metric, diff, lo, hi, n`` (paired bootstrap 95 % CI)
``attribution.csv``  one row per (method, attribution): IoU, F1, precision, recall and the pointing
                     game of the protocol on the counterfactually verified pairs, ``n_kept``
                     (verified pairs) and ``n`` (those attributed)
``grounding_examples.png``  for a few test pairs: image | counterfactual | control | each
                     method's localisation map, the ground-truth box drawn on each
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np
import polars as pl

from nast.errors import StageError
from nast.io import check_method_name, method_files

ACC = ("cf_pos_acc", "cf_neg_acc", "ctrl_pos_acc", "ctrl_neg_acc", "cf_pref_acc", "ctrl_pref_acc")
REQUIRED = ("method", *ACC[:4], "loc_iou", "pointing_game", "n_pairs", "attribution")


def _f(x) -> float:
    return float("nan") if x is None else float(x)


def load(grounding_dir: str | Path, order, methods: list[str] | None = None) -> list[dict[str, Any]]:
    """The grounding JSONs of ``methods`` in ``grounding_dir`` (every JSON there when None), sorted
    by ``order``; each must be named after its ``method`` (:func:`nast.io.check_method_name`)."""
    d = Path(grounding_dir)
    out = []
    for path in method_files(d, methods, "grounding"):
        try:
            data = json.loads(path.read_text(encoding="utf-8"))
        except (ValueError, UnicodeDecodeError) as exc:
            raise StageError(f"{path}: not a readable grounding JSON (truncated or corrupt?): {exc}") from None
        for key in REQUIRED:
            if key not in data:
                raise StageError(f"{path}: missing key '{key}'")
        check_method_name(path, data)
        out.append(data)
    if not out:
        raise StageError(f"no grounding JSON in {d}")
    return sorted(out, key=lambda e: order(e["method"]))


def grounding_table(evals: list[dict[str, Any]]) -> pl.DataFrame:
    rows = []
    for e in evals:
        row: dict[str, Any] = {"method": e["method"]}
        for k in (*ACC, "loc_iou", "pointing_game"):
            row[k] = _f(e.get(k))
            lo, hi = e.get(f"{k}_ci") or [None, None]
            row[f"{k}_lo"], row[f"{k}_hi"] = _f(lo), _f(hi)
        row["loc_f1"] = _f(e.get("loc_f1"))
        row["localization"] = e.get("localization")
        for k in ("n_pairs", "n_ctrl", "n_localized", "n_kept"):
            row[k] = int(e.get(k) or 0)
        rows.append(row)
    return pl.DataFrame(rows).with_columns(pl.col(pl.Float64).fill_nan(None))


ATTR_SCHEMA = {"method": pl.Utf8, "attribution": pl.Utf8, "iou": pl.Float64, "iou_lo": pl.Float64,
               "iou_hi": pl.Float64, "f1": pl.Float64, "f1_lo": pl.Float64, "f1_hi": pl.Float64,
               "precision": pl.Float64, "recall": pl.Float64, "pointing": pl.Float64, "n_kept": pl.Int64,
               "n": pl.Int64, "available": pl.Boolean}


def attribution_table(evals: list[dict[str, Any]]) -> pl.DataFrame:
    rows = []
    for e in evals:
        for name, a in (e.get("attribution") or {}).items():
            row = {"method": e["method"], "attribution": name, "n_kept": int(e.get("n_kept") or 0),
                   "n": int(a.get("n") or 0), "available": bool(a.get("available", True))}
            for k in ("iou", "f1"):
                row[k] = _f(a.get(k))
                lo, hi = a.get(f"{k}_ci") or [None, None]
                row[f"{k}_lo"], row[f"{k}_hi"] = _f(lo), _f(hi)
            for k in ("precision", "recall", "pointing"):
                row[k] = _f(a.get(k))
            rows.append(row)
    return pl.DataFrame(rows, schema=ATTR_SCHEMA).with_columns(pl.col(pl.Float64).fill_nan(None))


PAIRED_SCHEMA = {"method": pl.Utf8, "baseline": pl.Utf8, "metric": pl.Utf8, "diff": pl.Float64, "lo": pl.Float64,
                 "hi": pl.Float64, "n": pl.Int64}
PAIRED_METRICS = ("cf_pos", "cf_neg", "cf_pref", "ctrl_pos", "ctrl_neg", "ctrl_pref")


def paired_table(evals: list[dict[str, Any]], n_boot: int, seed: int,
                 baselines: tuple[str, ...] = ("zero_shot", "lora_uniform")) -> pl.DataFrame:
    """Each method minus each baseline on the same pairs (``pair_hits``), per metric: the
    difference of the accuracies with a paired bootstrap 95 % CI over the pairs (control metrics
    over the pairs that have a control). A method scored on other pairs than the baseline (another
    digest) is left out."""
    from nast.evaluate.metrics import paired_difference
    from nast.grounding.metrics import decode_half_hits

    by_name = {e["method"]: e for e in evals}
    rows = []
    for base in baselines:
        ref = by_name.get(base)
        if ref is None or not ref.get("pair_hits"):
            continue
        for e in evals:
            if e["method"] in (base, "zero_shot") or not e.get("pair_hits"):
                continue
            if e["pair_hits"].get("pairs") != ref["pair_hits"].get("pairs"):
                continue
            for k in PAIRED_METRICS:
                if k not in e["pair_hits"] or k not in ref["pair_hits"]:
                    continue
                a, b = decode_half_hits(e["pair_hits"][k]), decode_half_hits(ref["pair_hits"][k])
                keep = ~(np.isnan(a) | np.isnan(b))
                d, lo, hi = paired_difference(a[keep], b[keep], n_boot, seed)
                rows.append({"method": e["method"], "baseline": base, "metric": f"{k}_acc", "diff": d, "lo": lo,
                             "hi": hi, "n": int(keep.sum())})
    return pl.DataFrame(rows, schema=PAIRED_SCHEMA).with_columns(pl.col(pl.Float64).fill_nan(None))


def plot_examples(grounding_dir: Path, table_path: Path, methods: list[str], path: Path) -> bool:
    """The example picture (False, and nothing written, when there are no example maps)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from matplotlib.patches import Rectangle
    from PIL import Image

    from nast.grounding.protocol import map_to_image

    table = pl.read_parquet(table_path)
    maps: dict[str, dict] = {}
    for m in methods:
        f = grounding_dir / f"{m}.npz"
        if f.is_file():
            with np.load(f, allow_pickle=False) as z:
                if z["maps"].size:
                    maps[m] = {"keys": [str(k) for k in z["keys"]], "maps": z["maps"], "kind": str(z["method"])}
    if not maps:
        return False
    keys = next(iter(maps.values()))["keys"]
    rows = {f"{d}|{f}|{k}": r for d, f, k, r in zip(table["dicom_id"], table["finding"], table["box_index"],
                                                   table.iter_rows(named=True))}
    keys = [k for k in keys if k in rows]
    if not keys:
        return False
    cols = 3 + len(maps)
    fig, axes = plt.subplots(len(keys), cols, figsize=(1.9 * cols, 2.0 * len(keys) + 0.4), squeeze=False)
    for i, key in enumerate(keys):
        r = rows[key]
        box = (r["x0"], r["y0"], r["x1"], r["y1"])
        panels = [("image", r["image_path"], box), ("counterfactual", r["cf_path"], box),
                  ("control", r["ctrl_path"], (r["ctrl_x0"], r["ctrl_y0"], r["ctrl_x1"], r["ctrl_y1"]))]
        for j, (title, p, b) in enumerate(panels):
            ax = axes[i][j]
            with Image.open(p) as im:
                ax.imshow(np.asarray(im.convert("L")), cmap="gray", vmin=0, vmax=255)
            ax.add_patch(Rectangle((b[0] - 0.5, b[1] - 0.5), b[2] - b[0], b[3] - b[1], fill=False,
                                   edgecolor="lime" if title == "control" else "red", linewidth=1))
            ax.set_title(title if i == 0 else "", fontsize=7)
            ax.set_ylabel(r["finding"] if j == 0 else "", fontsize=7)
        for j, (m, d) in enumerate(maps.items()):
            ax = axes[i][3 + j]
            if key not in d["keys"]:
                ax.axis("off")
                continue
            full = map_to_image(d["maps"][d["keys"].index(key)], int(r["width"]), int(r["height"]))
            ax.imshow(full, cmap="magma")
            ax.add_patch(Rectangle((box[0] - 0.5, box[1] - 0.5), box[2] - box[0], box[3] - box[1], fill=False,
                                   edgecolor="cyan", linewidth=1))
            ax.set_title(f"{m}" if i == 0 else "", fontsize=7)
        for ax in axes[i]:
            ax.set_xticks([])
            ax.set_yticks([])
    kind = next(iter(maps.values()))["kind"]
    fig.suptitle(f"counterfactual pairs (box red, control green) and each method's {kind} map of s(I, 'X')",
                 fontsize=8)
    fig.tight_layout()
    from nast.io import atomic_write

    with atomic_write(path) as tmp:
        fig.savefig(tmp, dpi=110, format="png")
    plt.close(fig)
    return True
