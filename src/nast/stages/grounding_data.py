"""``nast grounding-data``: read the inputs, run the core (:mod:`nast.grounding.grounding_data`, whose
docstring describes the outputs), write them, log to MLflow. The rule ``grounding_data``
(workflow/rules/grounding_data.smk) and the DVC stage of the same name run this module."""

from __future__ import annotations

import argparse
import logging
from pathlib import Path

import polars as pl

from nast import io
from nast.errors import StageError
from nast.grounding import boxes as B
from nast.grounding.grounding_data import COHORT_COLUMNS, build, expectations, gate_frame

log = logging.getLogger(__name__)


#: the params.yaml keys (sections or dotted keys) this stage reads: its rule and DVC stage declare
#: exactly these (nast.codedeps.declared_params; the recording check of tests/conftest.py)
PARAMS_KEYS = ("grounding.box_format", "grounding.lung_fields", "grounding.inpaint_margin",
               "grounding.inpaint_max_side", "grounding.seed", "data.allow_empty")



def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--box-format", required=True, choices=B.FORMATS, help="layout of --boxes")
    parser.add_argument("--boxes", required=True,
                        help="box CSV (demo-annotations.csv.gz, MS_CXR_Local_Alignment_*.csv, ...)")
    parser.add_argument("--root", required=True,
                        help="dataset root (generic image paths and demo twins are relative to it)")
    parser.add_argument("--cohort", required=True, help="cohort.parquet (split, ids and image of every dicom_id)")
    parser.add_argument("--cf-dir", required=True, help="folder for the counterfactual and control PNGs")
    parser.add_argument("--out", required=True, help="grounding.parquet")
    parser.add_argument("--quarantine", required=True, help="quarantine parquet (rows that could not be used)")
    parser.add_argument("--report-dir", default="reports/validation", help="data-quality report folder")



def run(args: argparse.Namespace, params: dict) -> int:
    from nast.validation import gate

    cfg = params.grounding
    root = Path(args.root)
    cohort = io.read_table(args.cohort, "cohort", params)
    io.require_columns(cohort, COHORT_COLUMNS, args.cohort)
    box_rows = B.read_csv(args.boxes, args.box_format)
    cf_dir = Path(args.cf_dir)
    with io.staged_dir(cf_dir) as staging:
        table, quarantine = build(box_rows, cohort, args.box_format, root, staging, cfg, str(args.boxes))
        # paths in the table name the final folder
        table = table.with_columns(
            pl.col("cf_path").str.replace(str(staging), str(cf_dir), literal=True),
            pl.col("ctrl_path").str.replace(str(staging), str(cf_dir), literal=True))
        gate(gate_frame(table), "grounding", expectations(), report_dir=args.report_dir)
        if table.height == 0:
            raise StageError(f"grounding-data: no usable box in {args.boxes} ({quarantine.height} quarantined, "
                             f"reasons in {args.quarantine})")
    io.write_parquet(table, args.out)
    io.write_parquet(quarantine, args.quarantine)
    by_split = dict(table.group_by("split").len().sort("split").iter_rows())
    log.info("grounding-data: %d boxes in -> %d kept (%s; %d with a control), %d quarantined -> %s",
             box_rows.height, table.height, by_split, table["ctrl_path"].is_not_null().sum(),
             quarantine.height, args.out)
    return 0
