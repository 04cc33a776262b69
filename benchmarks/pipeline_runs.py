"""Shared by the benchmark scripts that train and evaluate through the ``nast`` CLI
(``seed_spread.py``, ``layer_oracle.py``): the pipeline-artifact arguments and one
train (+ evaluate) run in a scratch folder, with MLflow tracking off."""

from __future__ import annotations

import argparse
import os
import subprocess
from pathlib import Path


def add_artifact_arguments(ap: argparse.ArgumentParser) -> None:
    """The inputs ``make demo`` built (defaults: the pipeline's paths)."""
    ap.add_argument("--cohort", default="data/interim/cohort.parquet")
    ap.add_argument("--benchmark", default="data/processed/benchmark.parquet")
    ap.add_argument("--contextual", default="data/processed/contextual.parquet")
    ap.add_argument("--layer-weights", default="reports/cte/layer_weights.csv")


def train_and_evaluate(args: argparse.Namespace, params_file: Path, method: str, model_dir: Path,
                       eval_out: Path | None, log_path: Path, layer_weights: str | Path | None = None) -> None:
    """``nast train`` into ``model_dir`` unless it is finished, then ``nast evaluate`` into
    ``eval_out`` unless it exists (``eval_out=None``: no evaluation). Output goes to ``log_path``."""
    env = {**os.environ, "NAST_TRACKING": "0"}
    data = ["--cohort", args.cohort, "--benchmark", args.benchmark, "--contextual", args.contextual]
    lw = str(layer_weights if layer_weights is not None else args.layer_weights)
    with open(log_path, "a") as log:
        if not (model_dir / "manifest.json").is_file():
            subprocess.run(["nast", "train", "--params", str(params_file), "--method", method, *data,
                            "--layer-weights", lw, "--out", str(model_dir)],
                           check=True, env=env, stdout=log, stderr=subprocess.STDOUT)
        if eval_out is not None and not eval_out.is_file():
            subprocess.run(["nast", "evaluate", "--params", str(params_file), "--method", method,
                            "--model-dir", str(model_dir), *data, "--out", str(eval_out)],
                           check=True, env=env, stdout=log, stderr=subprocess.STDOUT)


def prepare_work(work: Path, inputs: list[str | Path]) -> None:
    """Create ``work`` and tie it to the contents of ``inputs`` (the runs in it are reused on a
    rerun): a folder left by runs on other inputs (another params file, base model, data or layer
    weights) is refused with a clear message instead of silently mixing old and new results."""
    from nast.tracking import data_hash

    work.mkdir(parents=True, exist_ok=True)
    stamp = work / "inputs.sha256"
    digest = data_hash(inputs)
    if stamp.is_file() and stamp.read_text().strip() != digest:
        raise SystemExit(f"{work} holds runs made from other inputs than {', '.join(map(str, inputs))}; "
                         "delete it or pass another --work")
    stamp.write_text(digest + "\n")
