"""``nast contextual``: read the inputs, run the core (:mod:`nast.text.contextual`, whose docstring
describes the outputs), write them, log to MLflow. The rule ``contextual``
(workflow/rules/contextual.smk) and the DVC stage of the same name run this module."""

from __future__ import annotations

import argparse
import logging

import polars as pl

from nast.errors import StageError
from nast.io import read_table, write_parquet
from nast.text.contextual import CONTEXTUAL_EXPECTATIONS, build_contextual

log = logging.getLogger(__name__)


#: the params.yaml keys (sections or dotted keys) this stage reads: its rule and DVC stage declare
#: exactly these (nast.codedeps.declared_params; the recording check of tests/conftest.py)
PARAMS_KEYS = ("contextual", "data.allow_empty")



def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--claims", required=True, help="claims parquet (nast claims)")
    parser.add_argument("--cohort", required=True, help="cohort parquet (for the study's frontal image)")
    parser.add_argument("--out", required=True, help="contextual parquet: one row per (true caption, foil)")
    parser.add_argument("--quarantine", required=True, help="parquet of studies that give no (caption, foil) row")
    parser.add_argument("--report-dir", default="reports/validation", help="Great Expectations reports folder")



def run(args: argparse.Namespace, params: dict) -> int:
    from nast.validation import gate

    cfg = params.contextual
    claims = read_table(args.claims, "claims table", params)
    cohort = read_table(args.cohort, "cohort table", params)
    if claims.height and claims["study_id"].null_count():
        raise StageError(f"{args.claims}: column 'study_id' has nulls (run `nast claims` on the cohort)")
    out, quarantine = build_contextual(
        claims, cohort, int(cfg.seed), int(cfg.max_foils_per_claim), args.claims, args.cohort
    )
    gate(out.with_columns((pl.col("caption") != pl.col("foil")).alias("caption_differs")),
         "contextual", CONTEXTUAL_EXPECTATIONS, report_dir=args.report_dir)
    write_parquet(out, args.out)
    write_parquet(quarantine, args.quarantine)
    counts = out.group_by("foil_type").len().sort("foil_type").rows() if out.height else []
    log.info("contextual: %d studies -> %d (caption, foil) rows %s; %d studies quarantined -> %s",
             out["study_id"].n_unique() if out.height else 0, out.height, dict(counts), quarantine.height, args.out)
    return 0
