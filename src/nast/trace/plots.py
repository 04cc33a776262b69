"""Figures of ``nast trace``: the layer x position CTE heatmap and the per-layer bar chart."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import polars as pl

from nast.io import atomic_write


def _save(fig, path: str | Path) -> Path:
    with atomic_write(path) as tmp:
        fig.savefig(tmp, dpi=120, bbox_inches="tight", format="png", metadata={"Software": None})
    return Path(path)


def heatmap(table: pl.DataFrame, path: str | Path, title: str = "") -> Path:
    """``cte.parquet`` rows -> imshow of effect[layer, position] (blank where no example has p)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    n_layers = int(table["layer"].max()) + 1 if table.height else 1
    n_pos = int(table["position"].max()) + 1 if table.height else 1
    grid = np.full((n_layers, n_pos), np.nan)
    for layer, pos, eff in table.select("layer", "position", "effect").iter_rows():
        grid[layer, pos] = eff
    fig, ax = plt.subplots(figsize=(max(4.0, 0.25 * n_pos + 2), max(2.5, 0.35 * n_layers + 1.5)))
    lim = float(np.nanmax(np.abs(grid))) if np.isfinite(grid).any() else 1.0
    im = ax.imshow(grid, aspect="auto", origin="lower", cmap="RdBu_r", vmin=-lim, vmax=lim,
                   interpolation="nearest")
    ax.set_xlabel("token position (index-aligned)")
    ax.set_ylabel("layer (0 = embeddings)")
    ax.set_yticks(range(n_layers))
    ax.set_title(title or "causal tracing effect d*/d")
    fig.colorbar(im, ax=ax, label="mean CTE")
    try:
        return _save(fig, path)
    finally:
        plt.close(fig)


def layer_bars(weights: pl.DataFrame, path: str | Path, title: str = "") -> Path:
    """``layer_weights.csv`` -> bars of per-layer CTE (with the bootstrap interval when present) and
    alpha on a second axis."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(max(4.0, 0.45 * weights.height + 2), 3.0))
    cte = weights["cte"].to_numpy()
    yerr = None
    if {"cte_lo", "cte_hi"} <= set(weights.columns) and np.isfinite(weights["cte_lo"].to_numpy()).all():
        # bootstrap 95 % interval over the probing pairs
        yerr = np.vstack([cte - weights["cte_lo"].to_numpy(), weights["cte_hi"].to_numpy() - cte]).clip(min=0)
    ax.bar(weights["layer"].to_list(), cte, color="#4477aa", yerr=yerr, capsize=3)
    ax.axhline(0, color="black", lw=0.6)
    ax.set_xlabel("layer (0 = embeddings, l = output of block l-1)")
    ax.set_ylabel("mean CTE" + (" (bootstrap 95% CI)" if yerr is not None else ""))
    ax.set_xticks(weights["layer"].to_list())
    ax2 = ax.twinx()
    ax2.plot(weights["layer"].to_list(), weights["alpha"].to_list(), "o-", color="#cc6677")
    ax2.set_ylabel("alpha (min-max)")
    ax2.set_ylim(-0.05, 1.05)
    ax.set_title(title or "per-layer causal tracing effect")
    try:
        return _save(fig, path)
    finally:
        plt.close(fig)
