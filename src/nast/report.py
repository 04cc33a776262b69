"""``nast report``: comparison tables and plots over every ``reports/eval/*.json``.

Tables (``--out``, default reports/tables)
    summary.csv / summary.md   one row per method: MCQ negated / affirmative accuracy, gap
                               (affirmative - negated) with 95 % bootstrap CIs, share of the
                               zero-shot gap closed, claim accuracy, retrieval R@1/5/10, mean AUROC
    per_condition.csv          method x condition: negated / affirmative MCQ accuracy
    by_n_negated.csv           method x number of negated conditions in the correct option
    by_foil_type.csv           method x foil type: claim accuracy
    beta_sweep.csv             the nast-beta{B} runs: beta and the headline metrics
    paired.csv                 each method against zero_shot and lora_uniform on the same test
                               questions: difference in negated accuracy and in the gap, with
                               paired bootstrap 95 % CIs (``evaluate.bootstrap``/``seed``); also
                               the second table of summary.md
    metrics.json               headline metrics per method (DVC metrics file)

Plots (``--plots``, default reports/plots)
    gap_by_method.png, claim_by_foil_type.png, beta_sweep.png, training_curves.png (from
    ``--models-dir``/*/curve.csv).

All fractions are in [0, 1]; ``gap_closed = 1 - gap(method) / gap(zero_shot)`` (only when the
zero-shot gap is positive). The tables and plots (aggregates only) are logged to the MLflow
pipeline run together with the CTE heatmap.
"""

from __future__ import annotations

import json
import logging
import math
import re
from pathlib import Path
from typing import Any

import polars as pl

from nast import io
from nast.errors import StageError

log = logging.getLogger(__name__)


ORDER = ("zero_shot", "lora_uniform", "nast", "full_ft", "hard_negative", "topk_layers", "grounded", "nast-grounded",
         "dpo", "nast-dpo")
HEADLINE = ("mcq_negated_acc", "mcq_affirmative_acc", "mcq_gap", "claim_acc", "retrieval_r5")
BETA_RE = re.compile(r"^nast-beta(?P<beta>[0-9.]+)$")



def method_key(name: str) -> tuple:
    m = BETA_RE.match(name)
    if m:
        return (len(ORDER), float(m.group("beta")), name)
    return (ORDER.index(name) if name in ORDER else len(ORDER) + 1, 0.0, name)


def load_evals(eval_dir: str | Path, methods: list[str] | None = None) -> list[dict[str, Any]]:
    """The evaluation JSONs of ``methods`` in ``eval_dir`` (every JSON there when None), in
    :func:`method_key` order."""
    out = []
    for path in io.method_files(eval_dir, methods, "eval"):
        try:
            data = json.loads(path.read_text(encoding="utf-8"))
        except (ValueError, UnicodeDecodeError) as exc:
            raise StageError(f"{path}: not a readable evaluation JSON (truncated or corrupt?): {exc}") from None
        if not isinstance(data, dict):
            raise StageError(f"{path}: an evaluation JSON must be an object")
        for key in ("method", *HEADLINE):
            if key not in data:
                raise StageError(f"{path}: missing key '{key}'")
        io.check_method_name(path, data)
        out.append(data)
    if not out:
        raise StageError(f"no evaluation JSON in {eval_dir}")
    return sorted(out, key=lambda d: method_key(d["method"]))


def _f(x) -> float:
    return float("nan") if x is None else float(x)


def summary_table(evals: list[dict[str, Any]]) -> pl.DataFrame:
    zs = next((e for e in evals if e["method"] == "zero_shot"), None)
    zs_gap = _f(zs["mcq_gap"]) if zs else float("nan")
    rows = []
    for e in evals:
        row: dict[str, Any] = {"method": e["method"]}
        for k in ("mcq_negated_acc", "mcq_affirmative_acc", "mcq_gap"):
            row[k] = _f(e[k])
            lo, hi = (e.get(f"{k}_ci") or [None, None])
            row[f"{k}_lo"], row[f"{k}_hi"] = _f(lo), _f(hi)
        row["gap_closed"] = (1 - row["mcq_gap"] / zs_gap) if zs_gap > 0 else float("nan")
        lb = (e.get("mcq_length_bias") or {}).get("negated") or {}
        row["negated_acc_longest"] = _f(lb.get("longest_acc"))
        row["negated_acc_shortest"] = _f(lb.get("shortest_acc"))
        row["negated_acc_length_controlled"] = _f(lb.get("length_controlled_acc"))
        row["claim_acc"] = _f(e["claim_acc"])
        row["claim_pair_acc"] = _f(e.get("claim_pair_acc"))
        row["claim_acc_image_shuffled"] = _f(e.get("claim_acc_image_shuffled"))
        shuffled = e.get("claim_acc_by_foil_type_image_shuffled") or {}
        row["claim_polarity_image_shuffled"] = _f(shuffled.get("polarity"))
        ret = e.get("retrieval", {})
        for k in ("i2t_r1", "i2t_r5", "i2t_r10", "t2i_r1", "t2i_r5", "t2i_r10"):
            row[k] = _f(ret.get(k))
        row["retrieval_r5"] = _f(e["retrieval_r5"])
        row["auroc_mean"] = _f(e.get("auroc_mean"))
        row["n_mcq"] = int(e.get("n_mcq") or 0)
        rows.append(row)
    return pl.DataFrame(rows).with_columns(pl.col(pl.Float64).fill_nan(None))


def long_table(evals, key: str, label: str, value: str, other_key: str | None = None,
               other_value: str | None = None) -> pl.DataFrame:
    rows = []
    for e in evals:
        other = e.get(other_key, {}) if other_key else {}
        for k, v in (e.get(key) or {}).items():
            row = {"method": e["method"], label: str(k), value: _f(v)}
            if other_key:
                row[other_value] = _f(other.get(k))
            rows.append(row)
    schema = {"method": pl.Utf8, label: pl.Utf8, value: pl.Float64}
    if other_key:
        schema[other_value] = pl.Float64
    return pl.DataFrame(rows, schema=schema)


def beta_sweep_table(evals) -> pl.DataFrame:
    rows = []
    for e in evals:
        m = BETA_RE.match(e["method"])
        if m:
            rows.append({"beta": float(m.group("beta")), "method": e["method"],
                         **{k: _f(e[k]) for k in HEADLINE}})
    schema = {"beta": pl.Float64, "method": pl.Utf8, **{k: pl.Float64 for k in HEADLINE}}
    return pl.DataFrame(rows, schema=schema).sort("beta")


REFERENCES = ("zero_shot", "lora_uniform")
PAIRED_SCHEMA = {"method": pl.Utf8, "reference": pl.Utf8, "negated_diff": pl.Float64, "negated_diff_lo": pl.Float64,
                 "negated_diff_hi": pl.Float64, "gap_diff": pl.Float64, "gap_diff_lo": pl.Float64,
                 "gap_diff_hi": pl.Float64, "n_mcq": pl.Int64}


def paired_table(evals: list[dict[str, Any]], n_boot: int, seed: int) -> pl.DataFrame:
    """Each method minus each reference method (zero_shot, lora_uniform), question by question.

    ``negated_diff`` = negated accuracy(method) - negated accuracy(reference); ``gap_diff`` = gap(method)
    - gap(reference) (negative: the method has the smaller gap). Paired bootstrap over the test
    questions (:func:`nast.evaluate.metrics.paired_difference`). Methods whose JSON has no
    ``mcq_hits`` or another question set than the reference are left out with a warning.
    """
    from nast.evaluate import metrics as M

    by_name = {e["method"]: e for e in evals}
    rows = []
    for ref in REFERENCES:
        r = by_name.get(ref)
        if r is None or not r.get("mcq_hits"):
            continue
        for e in evals:
            if e["method"] in (ref, "zero_shot"):  # the base is a reference, never the compared method
                continue
            row = M.compare_hits(e.get("mcq_hits"), r["mcq_hits"], n_boot, seed)
            if row is None:
                log.warning("report: %s has no per-question hits of the questions %s was scored on; not paired",
                            e["method"], ref)
                continue
            rows.append({"method": e["method"], "reference": ref, **row})
    return pl.DataFrame(rows, schema=PAIRED_SCHEMA)


def to_markdown(df: pl.DataFrame) -> str:
    def cell(v):
        if v is None or (isinstance(v, float) and math.isnan(v)):
            return "-"
        return f"{v:.3f}" if isinstance(v, float) else str(v)

    lines = ["| " + " | ".join(df.columns) + " |", "|" + "---|" * len(df.columns)]
    lines += ["| " + " | ".join(cell(v) for v in row) + " |" for row in df.iter_rows()]
    return "\n".join(lines) + "\n"


def read_curves(models_dir: str | Path, methods: list[str] | None = None) -> dict[str, pl.DataFrame]:
    """``models/{method}/curve.csv`` of ``methods`` that have one (zero_shot trains nothing), or of
    every model folder when None."""
    paths = (sorted(Path(models_dir).glob("*/curve.csv")) if methods is None
             else [p for p in (Path(models_dir) / m / "curve.csv" for m in methods) if p.is_file()])
    return {path.parent.name: pl.read_csv(path) for path in paths}


# ------------------------------------------------------------------------------- plots
def _plt():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def plot_gap(summary: pl.DataFrame, path: Path) -> None:
    plt = _plt()
    fig, ax = plt.subplots(figsize=(max(4, 0.9 * summary.height + 2), 3.5))
    x = range(summary.height)
    for off, col, color in ((-0.2, "mcq_negated_acc", "#c44"), (0.2, "mcq_affirmative_acc", "#48c")):
        v = summary[col].fill_null(float("nan")).to_list()
        lo = [a - b if b is not None else 0 for a, b in zip(v, summary[f"{col}_lo"].to_list())]
        hi = [b - a if b is not None else 0 for a, b in zip(v, summary[f"{col}_hi"].to_list())]
        ax.bar([i + off for i in x], v, width=0.4, yerr=[lo, hi], capsize=3, color=color,
               label=col.replace("mcq_", "").replace("_acc", ""))
    gap = summary["mcq_gap"].to_list()
    for i, g in zip(x, gap):
        if g is not None and not math.isnan(g):
            ax.annotate(f"gap {g:+.2f}", (i, 1.02), ha="center", fontsize=7)
    ax.set_xticks(list(x), summary["method"].to_list(), rotation=30, ha="right")
    ax.set_ylim(0, 1.1)
    ax.set_ylabel("MCQ accuracy (95% CI)")
    ax.legend(fontsize=7, loc="lower right")
    fig.tight_layout()
    _save(fig, path)
    plt.close(fig)


def _save(fig, path: Path) -> None:
    """Write a PNG atomically (unique temp name in the same folder, then rename)."""
    from nast.io import atomic_write

    with atomic_write(path) as tmp:
        fig.savefig(tmp, dpi=120, format="png")


def plot_foil_types(table: pl.DataFrame, path: Path) -> None:
    plt = _plt()
    methods = list(dict.fromkeys(table["method"].to_list()))
    types = sorted(set(table["foil_type"].to_list()))
    fig, ax = plt.subplots(figsize=(max(4, 0.9 * len(methods) + 2), 3.5))
    w = 0.8 / max(len(types), 1)
    for j, t in enumerate(types):
        sub = {r["method"]: r["claim_acc"] for r in table.filter(pl.col("foil_type") == t).iter_rows(named=True)}
        ax.bar([i - 0.4 + w * (j + 0.5) for i in range(len(methods))], [sub.get(m, float("nan")) for m in methods],
               width=w, label=t)
    ax.set_xticks(range(len(methods)), methods, rotation=30, ha="right")
    ax.set_ylim(0, 1)
    ax.set_ylabel("claim accuracy")
    ax.legend(fontsize=7)
    fig.tight_layout()
    _save(fig, path)
    plt.close(fig)


def plot_beta(sweep: pl.DataFrame, path: Path) -> None:
    plt = _plt()
    fig, ax = plt.subplots(figsize=(4.5, 3.5))
    for col in ("mcq_negated_acc", "mcq_gap", "claim_acc", "retrieval_r5"):
        ax.plot(sweep["beta"].to_list(), sweep[col].to_list(), marker="o", label=col)
    ax.set_xlabel("beta")
    ax.set_ylabel("value")
    ax.axhline(0, color="grey", lw=0.5)
    ax.legend(fontsize=7)
    ax.set_title("beta sweep" if sweep.height else "beta sweep (no nast-beta runs)")
    fig.tight_layout()
    _save(fig, path)
    plt.close(fig)


def plot_curves(curves: dict[str, pl.DataFrame], path: Path) -> None:
    plt = _plt()
    fig, axes = plt.subplots(1, 2, figsize=(9, 3.5))
    for name, df in curves.items():
        if "loss" in df.columns:
            axes[0].plot(df["epoch"].to_list(), df["loss"].to_list(), marker=".", label=name)
        if "val_mcq_negated_acc" in df.columns:
            axes[1].plot(df["epoch"].to_list(), df["val_mcq_negated_acc"].to_list(), marker=".", label=name)
    axes[0].set_title("training loss")
    axes[1].set_title("validation MCQ accuracy (negated)")
    for ax in axes:
        ax.set_xlabel("epoch")
        if curves:
            ax.legend(fontsize=6)
    fig.tight_layout()
    _save(fig, path)
    plt.close(fig)


def build(evals: list[dict[str, Any]], curves: dict[str, pl.DataFrame], out: Path, plots: Path,
          n_boot: int = 1000, seed: int = 0) -> dict[str, Path]:
    """Write every table and plot; returns name -> path. n_boot/seed: the paired bootstrap."""
    summary = summary_table(evals)
    per_cond = long_table(evals, "mcq_by_condition", "condition", "negated_acc",
                          "mcq_affirmative_by_condition", "affirmative_acc")
    by_n = long_table(evals, "mcq_by_n_negated", "n_negated", "negated_acc",
                      "mcq_affirmative_by_n_negated", "affirmative_acc")
    foil = long_table(evals, "claim_acc_by_foil_type", "foil_type", "claim_acc")
    sweep = beta_sweep_table(evals)
    paired = paired_table(evals, n_boot, seed)
    files: dict[str, Path] = {}
    for name, df in (("summary", summary), ("per_condition", per_cond), ("by_n_negated", by_n),
                     ("by_foil_type", foil), ("beta_sweep", sweep), ("paired", paired)):
        files[f"{name}.csv"] = io.write_text(df.write_csv(float_precision=4, null_value=""), out / f"{name}.csv")
    files["summary.md"] = io.write_text(
        "# NAST comparison (test split)\n\n" + to_markdown(summary.select(
            "method", "mcq_negated_acc", "mcq_affirmative_acc", "mcq_gap", "mcq_gap_lo", "mcq_gap_hi",
            "gap_closed", "negated_acc_longest", "negated_acc_shortest", "negated_acc_length_controlled",
            "claim_acc", "claim_acc_image_shuffled", "retrieval_r5", "auroc_mean", "n_mcq"))
        + "\nMCQ gap = affirmative - negated accuracy (95% bootstrap CI lo/hi); gap_closed relative to zero_shot."
          " claim_acc_image_shuffled = claim accuracy with every claim scored against another patient's image"
          " (what the caption text alone decides; claim_acc far above it is image-conditioned)."
          " negated_acc_longest / _shortest: negated accuracy on the questions whose correct option is strictly the"
          " longest / shortest of the four (tokens); _length_controlled: the mean over the correct option's length"
          " ranks.\n"
        + "\n## Paired differences (same test questions)\n\n" + to_markdown(paired)
        + "\nnegated_diff = negated accuracy of the method - that of the reference; gap_diff = gap of the method"
          " - gap of the reference (negative = smaller gap); paired bootstrap 95% CI over the questions. A CI that"
          " contains 0 is no evidence of a difference.\n",
        out / "summary.md")
    metrics = {r["method"]: {k: r[k] for k in (*HEADLINE, "gap_closed")} for r in summary.iter_rows(named=True)}
    files["metrics.json"] = io.write_json(metrics, out / "metrics.json")
    plots.mkdir(parents=True, exist_ok=True)
    plot_gap(summary, plots / "gap_by_method.png")
    plot_foil_types(foil, plots / "claim_by_foil_type.png")
    plot_beta(sweep, plots / "beta_sweep.png")
    plot_curves(curves, plots / "training_curves.png")
    for name in ("gap_by_method.png", "claim_by_foil_type.png", "beta_sweep.png", "training_curves.png"):
        files[name] = plots / name
    return files


def build_grounding(grounding_dir: Path, table: Path | None, out: Path, plots: Path, n_boot: int = 1000,
                    seed: int = 0, methods: list[str] | None = None) -> dict[str, Path]:
    """grounding.csv/.md, paired_grounding.csv, attribution.csv/.md and the example picture
    (:mod:`nast.grounding.tables`); n_boot/seed: the paired bootstrap."""
    from nast.grounding import tables as T

    evals = T.load(grounding_dir, method_key, methods)
    grounding, attribution = T.grounding_table(evals), T.attribution_table(evals)
    paired = T.paired_table(evals, n_boot, seed)
    files: dict[str, Path] = {}
    files["paired_grounding.csv"] = io.write_text(paired.write_csv(float_precision=4, null_value=""),
                                                  out / "paired_grounding.csv")
    files["grounding.csv"] = io.write_text(grounding.write_csv(float_precision=4, null_value=""), out / "grounding.csv")
    files["attribution.csv"] = io.write_text(attribution.write_csv(float_precision=4, null_value=""),
                                             out / "attribution.csv")
    files["grounding.md"] = io.write_text(
        "# Counterfactual grounding (test split)\n\n" + to_markdown(grounding.select(
            "method", "cf_pos_acc", "cf_pos_acc_lo", "cf_pos_acc_hi", "cf_neg_acc", "cf_neg_acc_lo", "cf_neg_acc_hi",
            "ctrl_pos_acc", "ctrl_neg_acc", "cf_pref_acc", "cf_pref_acc_lo", "cf_pref_acc_hi", "ctrl_pref_acc",
            "loc_iou", "pointing_game", "n_pairs", "n_ctrl", "n_kept"))
        + "\ncf_pos_acc = P[s(I, X) > s(I without X, X)], cf_neg_acc = P[s(I without X, no X) > s(I, no X)] (ties"
          " count 1/2: a model that ignores the image scores 0.5); ctrl_* = the same against a background edit"
          " of the same size (near 0.5 for a grounded model). cf_pref_acc = P[the preference s(X) - s(no X) is"
          " larger on I than without X] (cancels a shift of the image towards every finding text alike)."
          " loc_iou / pointing_game: the localisation map over"
          " all pairs, boxed by the MedFocus protocol. n_kept = pairs whose counterfactual flips the model's"
          " preference for X over no X while the control does not.\n"
        + "\n## Paired differences (same pairs)\n\n" + to_markdown(paired)
        + "\ndiff = accuracy of the method - that of the baseline on the same pairs, paired bootstrap 95% CI;"
          " a CI that contains 0 is no evidence of a difference.\n",
        out / "grounding.md")
    files["attribution.md"] = io.write_text(
        "# Counterfactually verified attribution (test split)\n\n"
        + to_markdown(attribution.select("method", "attribution", "iou", "iou_lo", "iou_hi", "f1", "pointing",
                                         "n_kept", "n"))
        + "\nOnly pairs whose counterfactual flips the preference for X over no X while the background control"
          " does not (n_kept; n = those attributed). IoU / F1 of the union of the top boxes of the min-max scaled"
          " map (0.9 quantile, 8-connected components >= 16 px, top 10) with the ground-truth box.\n",
        out / "attribution.md")
    if table is not None and T.plot_examples(grounding_dir, table, [e["method"] for e in evals],
                                             plots / "grounding_examples.png"):
        files["grounding_examples.png"] = plots / "grounding_examples.png"
    return files


