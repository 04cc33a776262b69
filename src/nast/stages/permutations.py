"""``nast permutations``: read the inputs, run the core (:mod:`nast.permutations`, whose docstring
describes the outputs), write them, log to MLflow. The rule ``permutations``
(workflow/rules/permutations.smk) and the DVC stage of the same name run this module."""

from __future__ import annotations

import argparse
import logging
from pathlib import Path

from nast.permutations import build_permutations, gate_permutations

log = logging.getLogger(__name__)


#: the params.yaml keys (sections or dotted keys) this stage reads: its rule and DVC stage declare
#: exactly these (nast.codedeps.declared_params; the recording check of tests/conftest.py)
PARAMS_KEYS = ("permutations", "data.allow_empty")



# --------------------------------------------------------------------------- CLI edge
def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--cohort", required=True, help="input cohort parquet (from nast ingest)")
    parser.add_argument("--out", required=True, help="output permutations parquet (one row per eligible study)")
    parser.add_argument("--quarantine", required=True,
                        help="output quarantine parquet (a .summary.json with counts is written next to it)")
    parser.add_argument("--report-dir", "--validation-dir", dest="validation_dir", default="reports/validation",
                        help="folder of the Great Expectations report permutations.md/.json "
                             "(default: reports/validation)")



def run(args: argparse.Namespace, params: dict) -> int:
    from nast.io import read_table, write_json, write_parquet

    p = params["permutations"]
    cohort = read_table(args.cohort, "cohort table", params)
    out, quarantine, summary = build_permutations(
        cohort, k=int(p["k"]), min_zeros=int(p["min_zeros"]), min_ones=int(p["min_ones"]), seed=int(p["seed"]),
        source=str(args.cohort),
    )
    log.info("permutations: studies in=%d kept=%d quarantined=%d skipped(rule)=%d skipped(no frontal)=%d",
             summary["studies_in"], summary["kept"], summary["quarantined"], summary["skipped_rule"],
             summary["skipped_no_frontal"])
    q = Path(args.quarantine)
    write_parquet(quarantine, q)
    write_json(summary, q.with_name(q.stem + ".summary.json"))
    gate_permutations(out, int(p["k"]), report_dir=args.validation_dir)
    write_parquet(out, args.out)
    log.info("permutations: wrote %s", args.out)
    return 0
