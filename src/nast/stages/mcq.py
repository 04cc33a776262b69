"""``nast mcq``: read the inputs, run the core (:mod:`nast.text.mcq`, whose docstring describes the
outputs), write them, log to MLflow. The rule ``mcq`` (workflow/rules/mcq.smk) and the DVC stage of
the same name run this module."""

from __future__ import annotations

import argparse
import logging
from typing import Any

from nast.io import read_table, require_columns, write_json, write_parquet
from nast.text.generation import LETTERS, PERMUTATION_COLUMNS, check_kept, expectations, gate_table, summary_path
from nast.text.mcq import STAGE, build_mcq

log = logging.getLogger(__name__)


#: the params.yaml keys (sections or dotted keys) this stage reads: its rule and DVC stage declare
#: exactly these (nast.codedeps.declared_params; the recording check of tests/conftest.py)
PARAMS_KEYS = ("mcq", "llm", "data.source", "data.allow_empty")



# ---------------------------------------------------------------------------------------------
# CLI
# ---------------------------------------------------------------------------------------------
def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--permutations", required=True, help="permutations.parquet (input)")
    parser.add_argument("--out", required=True,
                        help="mcq.parquet to write (a <stem>.summary.json is written next to it)")
    parser.add_argument("--quarantine", required=True,
                        help="parquet of questions that failed verification or had bad input")
    parser.add_argument("--report-dir", default="reports/validation",
                        help="folder of the Great Expectations report SUITE.md/.json (default: reports/validation)")
    parser.epilog = ("Backend, seed and re-asks come from params mcq.* (template | openai); the openai backend "
                     "reads llm.* and the API key from the environment variable named by llm.api_key_env.")



def run(args: argparse.Namespace, params: dict[str, Any]) -> int:
    perm = read_table(args.permutations, "permutations table", params)
    require_columns(perm, PERMUTATION_COLUMNS, args.permutations)
    out, qdf, summary = build_mcq(perm, params)
    text_cols = ["question", *[f"negated_{L}" for L in LETTERS]]
    write_parquet(qdf, args.quarantine)
    write_json(summary, summary_path(args.out))
    check_kept(STAGE, summary, params.mcq.min_kept_fraction, args.quarantine)
    gate_table(out, "mcq", expectations(text_cols), args.report_dir)  # on empty tables too
    write_parquet(out, args.out)
    log.info("mcq (%s): %d questions kept, %d quarantined; %.1f%% of options verified -> %s",
             summary["backend"], summary["rows_kept"], summary["rows_quarantined"],
             100 * (summary["share_options_verified"] or 0), args.out)
    return 0
