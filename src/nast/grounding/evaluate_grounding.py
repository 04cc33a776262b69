"""``nast evaluate-grounding``: does a method read the finding, and its negation, from the image?

Scores one method (the base model of ``params.model`` with the weights of ``--model-dir``) on the
``grounding.split`` rows of the grounding table (``nast grounding-data``) and writes
``reports/grounding/{method}.json``:

a. **Counterfactual polarity** (:mod:`nast.grounding.metrics`): ``cf_pos_acc``, ``cf_neg_acc`` and
   the same on the background controls (``ctrl_pos_acc``, ``ctrl_neg_acc``), overall with bootstrap
   95 % CIs (``evaluate.bootstrap``, ``evaluate.seed``) and per finding, plus the per-pair hits
   (``pair_hits``: strings of 0/h/1/-, with a digest of the pair order, for paired comparisons).
   Phrasing: per pair one name of the finding from the clinical phrase table
   (``nast/text/data/phrases.csv``, the names the reports and the MCQ options use) and one
   negation cue of :data:`nast.text.templates.ABSENCE_CUES` ("no", "without", "negative for",
   ...), drawn with ``grounding.seed`` and the pair's identity, so every method is asked the same
   texts: "X" = the name, "no X" = cue + name. The image, its counterfactual and its control are
   compared on the same two texts.
b. **Localisation**: the map of ``s(I, "X")`` by ``grounding.localization`` (an attribution method
   of :mod:`nast.grounding.attribution`) over every pair (at most ``grounding.max_localization``,
   0 = all, in a fixed seeded order), boxed by the MedFocus protocol
   (:mod:`nast.grounding.protocol`): ``loc_iou`` (and precision / recall / F1) of the union of the
   boxes with the ground-truth box, and ``pointing_game``.
c. **Counterfactually verified attribution**: only pairs where the model prefers "X" over
   "no X" on I, the preference flips on Ĩ and holds on the control (``n_kept``); on at most
   ``grounding.max_attribution`` of them every method of ``grounding.attributions`` is scored by
   the same protocol (``attribution``: method -> iou, f1, precision, recall, pointing, n).

It also writes ``--maps`` (``.npz``): the localisation maps of the first ``grounding.examples``
pairs with a control (the same pairs for every method), for ``nast report``'s example picture.
Only aggregates go to the JSON and to MLflow; no image, text or patient id.
"""

from __future__ import annotations

import logging

import numpy as np
import polars as pl

from nast.errors import StageError
from nast.grounding import metrics as G
from nast.grounding import protocol as P
from nast.grounding.texts import PAIR_COLUMNS, phrasing

log = logging.getLogger(__name__)


TABLE_COLUMNS = PAIR_COLUMNS



def pair_order(df: pl.DataFrame, seed: int) -> pl.DataFrame:
    """The split's pairs in a fixed seeded order (a cap takes a random, reproducible subset)."""
    from nast.grounding.edits import row_seed

    keys = [row_seed(seed, d, f, k) for d, f, k in df.select("dicom_id", "finding", "box_index").iter_rows()]
    return df.with_columns(pl.Series("_order", keys, dtype=pl.UInt64)).sort("_order").drop("_order")


def scores(vl, df: pl.DataFrame, texts_pos: list[str], texts_neg: list[str], store=None) -> dict[str, np.ndarray]:
    """The six score arrays of :func:`nast.grounding.metrics.pair_hits` (NaN: no control); image
    embeddings from ``store`` (the base model's, :mod:`nast.models.embeddings`) when given."""
    from nast.evaluate import scoring as S

    paths = df["image_path"].to_list() + df["cf_path"].to_list() + [p for p in df["ctrl_path"].to_list() if p]
    img = S.image_embeddings(vl, paths, store=store)
    txt = S.text_embeddings(vl, texts_pos + texts_neg)
    out: dict[str, np.ndarray] = {}
    for name, col in (("img", "image_path"), ("cf", "cf_path"), ("ctrl", "ctrl_path")):
        for pol, texts in (("pos", texts_pos), ("neg", texts_neg)):
            out[f"{name}_{pol}"] = np.array(
                [float(img[p] @ txt[t]) if p else np.nan for p, t in zip(df[col].to_list(), texts)], dtype=float)
    return out


def _mean_ci(values: np.ndarray, n_boot: int, seed: int) -> tuple[float, list[float], int]:
    from nast.evaluate import metrics as M

    v = np.asarray(values, dtype=float)
    v = v[~np.isnan(v)]
    if v.size == 0:
        return float("nan"), [float("nan"), float("nan")], 0
    return float(v.mean()), list(M.bootstrap_ci(v, n_boot, seed)), int(v.size)


def maps_for(vl, df: pl.DataFrame, texts: list[str], method: str, cfg: dict, seed: int, batch: int = 16
             ) -> list[np.ndarray | None]:
    """``method``'s map of s(I, text) for every row, over the model input (None: no such map)."""
    import torch

    from nast.evaluate.scoring import text_embeddings
    from nast.grounding.attribution import attribute
    from nast.models.embeddings import load_pixels

    txt = text_embeddings(vl, texts)
    out: list[np.ndarray | None] = []
    for i in range(0, df.height, batch):
        chunk = df.slice(i, batch)
        pixels = load_pixels(vl, chunk["image_path"].to_list()).to(vl.device)
        t = torch.tensor(np.stack([txt[x] for x in texts[i : i + batch]]), device=vl.device, dtype=pixels.dtype)
        m = attribute(method, vl, pixels, t, cfg, seed=seed + i)
        out.extend([None] * chunk.height if m is None else list(m.cpu().numpy()))
    return out


def protocol_scores(df: pl.DataFrame, maps: list[np.ndarray | None], cfg: dict) -> dict[str, np.ndarray] | None:
    """Per row: the protocol's IoU / precision / recall / F1 / pointing of its map in image pixels."""
    if not maps or any(m is None for m in maps):
        return None
    rows = []
    for r, m in zip(df.iter_rows(named=True), maps):
        full = P.map_to_image(m, int(r["width"]), int(r["height"]))
        rows.append(P.score_map(full, (r["x0"], r["y0"], r["x1"], r["y1"]), cfg["quantile"], cfg["min_area"],
                                cfg["top_k"]))
    return {k: np.array([x[k] for x in rows], dtype=float) for k in ("iou", "precision", "recall", "f1", "pointing")}


def evaluate(vl, table: pl.DataFrame, cfg: dict, ev: dict, store=None) -> tuple[dict, dict]:
    """(metrics JSON, example maps) of one model on the grounding table (pure apart from the model);
    ``store``: the base model's image embeddings for the similarity scores (not the maps)."""
    from nast.evaluate import metrics as M

    n_boot, seed = int(ev["bootstrap"]), int(ev["seed"])
    gseed = int(cfg["seed"])
    df = pair_order(table.filter(pl.col("split") == cfg["split"]), gseed)
    if df.height == 0:
        raise StageError(f"grounding table has no {cfg['split']!r} pairs (grounding.split)")
    texts = [phrasing(d, f, k, gseed) for d, f, k in df.select("dicom_id", "finding", "box_index").iter_rows()]
    pos, neg = [t[0] for t in texts], [t[1] for t in texts]
    s = scores(vl, df, pos, neg, store)
    hits = G.pair_hits(s)
    out: dict = {"n_pairs": df.height, "n_ctrl": int(df["ctrl_path"].is_not_null().sum()), "split": cfg["split"]}
    for key, h in hits.items():
        mean, ci, _n = _mean_ci(h, n_boot, seed)
        out[f"{key}_acc"], out[f"{key}_acc_ci"] = mean, ci
    out["cf_pos_margin"] = float(np.mean(s["img_pos"] - s["cf_pos"]))
    out["cf_neg_margin"] = float(np.mean(s["cf_neg"] - s["img_neg"]))
    by_finding: dict[str, dict] = {}
    findings = df["finding"].to_list()
    for f in sorted(set(findings)):
        sel = np.array([x == f for x in findings])
        by_finding[f] = {f"{k}_acc": (float(np.nanmean(h[sel])) if np.any(~np.isnan(h[sel])) else None)
                         for k, h in hits.items()} | {"n": int(sel.sum())}
    out["by_finding"] = by_finding
    keys = [f"{d}|{f}|{k}" for d, f, k in df.select("dicom_id", "finding", "box_index").iter_rows()]
    out["pair_hits"] = {"pairs": M.question_digest(keys), **{k: G.encode_half_hits(h) for k, h in hits.items()}}

    # (b) localisation over the pairs (capped)
    cap = int(cfg["max_localization"])
    loc_df = df if cap <= 0 else df.head(cap)
    method = cfg["localization"]
    loc_maps = maps_for(vl, loc_df, pos[: loc_df.height], method, cfg, gseed)
    loc = protocol_scores(loc_df, loc_maps, cfg)
    out["localization"] = method
    out["n_localized"] = loc_df.height if loc is not None else 0
    for k in ("iou", "precision", "recall", "f1"):
        out[f"loc_{k}"], out[f"loc_{k}_ci"], _ = _mean_ci(loc[k] if loc else np.array([]), n_boot, seed)
    out["pointing_game"], out["pointing_game_ci"], _ = _mean_ci(loc["pointing"] if loc else np.array([]), n_boot, seed)

    # (c) counterfactually verified attribution
    keep = G.verified(s)
    out["n_kept"] = int(keep.sum())
    kept = df.filter(pl.Series(keep))
    kept_pos = [p for p, k in zip(pos, keep) if k]
    cap = int(cfg["max_attribution"])
    if cap > 0:
        kept, kept_pos = kept.head(cap), kept_pos[:cap]
    out["n_attributed"] = kept.height
    attribution: dict[str, dict] = {}
    for name in cfg["attributions"]:
        res = protocol_scores(kept, maps_for(vl, kept, kept_pos, name, cfg, gseed), cfg) if kept.height else None
        if res is None and kept.height:
            attribution[name] = {"available": False, "n": 0}
            continue
        entry: dict = {"available": True, "n": kept.height}
        for k in ("iou", "f1", "precision", "recall", "pointing"):
            entry[k], entry[f"{k}_ci"], _ = _mean_ci(res[k] if res else np.array([]), n_boot, seed)
        attribution[name] = entry
    out["attribution"] = attribution

    # example maps: the first pairs with a control, the same for every method
    ex = df.filter(pl.col("ctrl_path").is_not_null()).head(int(cfg["examples"]))
    ex_pos = [phrasing(d, f, k, gseed)[0] for d, f, k in ex.select("dicom_id", "finding", "box_index").iter_rows()]
    ex_maps = maps_for(vl, ex, ex_pos, method, cfg, gseed) if ex.height else []
    examples = {
        "keys": np.array([f"{d}|{f}|{k}" for d, f, k in ex.select("dicom_id", "finding", "box_index").iter_rows()]),
        "maps": np.stack(ex_maps) if ex_maps and all(m is not None for m in ex_maps) else np.zeros((0, 0, 0)),
        "method": np.array(method),
    }
    return out, examples



