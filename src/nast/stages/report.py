"""``nast report``: read the inputs, run the core (:mod:`nast.report`, whose docstring describes the
outputs), write them, log to MLflow. The rule ``report`` (workflow/rules/report.smk) and the DVC
stage of the same name run this module."""

from __future__ import annotations

import argparse
import logging
from pathlib import Path

from nast.report import HEADLINE, build, build_grounding, load_evals, read_curves

log = logging.getLogger(__name__)


#: the params.yaml keys (sections or dotted keys) this stage reads: its rule and DVC stage declare
#: exactly these (nast.codedeps.declared_params; the recording check of tests/conftest.py)
PARAMS_KEYS = ("evaluate.bootstrap", "evaluate.seed", "data.source")



def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--eval-dir", required=True, help="folder of reports/eval/{method}.json")
    parser.add_argument("--methods", nargs="+", default=None, metavar="M",
                        help="the methods to tabulate: {eval-dir}/M.json, {grounding-dir}/M.json and "
                             "{models-dir}/M/curve.csv of these only (the DAG passes its methods and the "
                             "beta sweep; default: every JSON in --eval-dir)")
    parser.add_argument("--out", required=True, help="tables folder, e.g. reports/tables")
    parser.add_argument("--plots", required=True, help="plots folder, e.g. reports/plots")
    parser.add_argument("--models-dir", default="models", help="trained models (for */curve.csv; default: models)")
    parser.add_argument("--cte-dir", default="reports/cte",
                        help="CTE outputs (heatmap logged to MLflow; default: reports/cte)")
    parser.add_argument("--grounding-dir", default=None,
                        help="reports/grounding (nast evaluate-grounding): grounding.csv, attribution.csv, "
                             "example picture")
    parser.add_argument("--grounding-table", default=None,
                        help="grounding.parquet (the pairs' images, for the example picture); with --grounding-dir")



def run(args: argparse.Namespace, params: dict) -> int:
    from nast import tracking

    evals = load_evals(args.eval_dir, args.methods)
    curves = read_curves(args.models_dir, args.methods)
    files = build(evals, curves, Path(args.out), Path(args.plots), n_boot=int(params.evaluate.bootstrap),
                  seed=int(params.evaluate.seed))
    log.info("report: %d methods, %d training curves -> %s, %s", len(evals), len(curves), args.out, args.plots)
    if args.grounding_dir:
        files.update(build_grounding(Path(args.grounding_dir),
                                     Path(args.grounding_table) if args.grounding_table else None,
                                     Path(args.out), Path(args.plots), n_boot=int(params.evaluate.bootstrap),
                                     seed=int(params.evaluate.seed), methods=args.methods))
        log.info("report: grounding tables -> %s", args.out)
    flat = {}
    for e in evals:
        for k in HEADLINE:
            if isinstance(e.get(k), (int, float)):
                flat[f"{e['method']}.{k}"] = e[k]
    extra = [p for p in (Path(args.cte_dir) / "heatmap.png", Path(args.cte_dir) / "layers.png",
                         Path(args.cte_dir) / "layer_weights.csv") if p.is_file()]
    # the example picture shows patients' images: logged to MLflow on the demo only
    plots = ([Path(args.plots)] if params.data.source == "demo"
             else [p for p in sorted(Path(args.plots).glob("*.png")) if p.name != "grounding_examples.png"])
    tracking.log_pipeline_artifacts(params, [Path(args.out), *plots, *extra], flat)
    return 0
