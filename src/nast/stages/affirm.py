"""``nast affirm``: read the inputs, run the core (:mod:`nast.text.affirm`, whose docstring describes
the outputs), write them, log to MLflow. The rule ``affirm`` (workflow/rules/affirm.smk) and the DVC
stage of the same name run this module."""

from __future__ import annotations

import argparse
import logging
from typing import Any

from nast.io import read_table, require_columns, write_json, write_parquet
from nast.text.affirm import MCQ_COLUMNS, STAGE, build_benchmark
from nast.text.generation import (
    LETTERS,
    check_kept,
    expectations,
    gate_table,
    summary_path,
)

log = logging.getLogger(__name__)


#: the params.yaml keys (sections or dotted keys) this stage reads: its rule and DVC stage declare
#: exactly these (nast.codedeps.declared_params; the recording check of tests/conftest.py)
PARAMS_KEYS = ("affirm", "llm", "data.source", "data.allow_empty")



def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--mcq", required=True, help="mcq.parquet written by `nast mcq` (input)")
    parser.add_argument("--out", required=True,
                        help="benchmark.parquet to write (a <stem>.summary.json is written next to it)")
    parser.add_argument("--quarantine", required=True, help="parquet of questions whose rewrite failed verification")
    parser.add_argument("--report-dir", default="reports/validation",
                        help="folder of the Great Expectations report SUITE.md/.json (default: reports/validation)")
    parser.epilog = ("Backend, seed and re-asks come from params affirm.* (template | openai); the phrasings "
                     "are the table nast/text/data/affirmative.csv.")



def run(args: argparse.Namespace, params: dict[str, Any]) -> int:
    mcq = read_table(args.mcq, "mcq table", params)
    require_columns(mcq, MCQ_COLUMNS, args.mcq)
    out, qdf, summary = build_benchmark(mcq, params)
    write_parquet(qdf, args.quarantine)
    write_json(summary, summary_path(args.out))
    check_kept(STAGE, summary, params.affirm.min_kept_fraction, args.quarantine)
    gate_table(out, "benchmark", expectations(["question", *[f"affirmative_{L}" for L in LETTERS]]), args.report_dir)
    write_parquet(out, args.out)
    log.info("affirm (%s): %d questions kept, %d quarantined; %.1f%% of rewrites verified -> %s",
             summary["backend"], summary["rows_kept"], summary["rows_quarantined"],
             100 * (summary["share_options_verified"] or 0), args.out)
    return 0
