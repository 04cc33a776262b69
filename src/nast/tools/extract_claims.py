"""``nast extract-claims``: a tool (no rule of the DAG) over :mod:`nast.text.claims`."""

from __future__ import annotations

import argparse
import logging
from pathlib import Path

from nast.errors import StageError
from nast.io import write_parquet
from nast.text.claims import default_quarantine_path, extract_claims, gate_claims, max_chars_of
from nast.text.screen import read_report_csv

log = logging.getLogger(__name__)


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("input", metavar="IN.csv", help="report CSV (any layout with an id column and text columns)")
    parser.add_argument("--id-col", required=True, help="column identifying a report (copied to the 'id' column)")
    parser.add_argument(
        "--text-cols",
        required=True,
        help="comma-separated text columns read in this order, e.g. findings,impression",
    )
    parser.add_argument("--out", required=True, help="output parquet: one row per finding mention")
    parser.add_argument(
        "--quarantine", default=None,
        help="reports that could not be read (stage/key/reason/source); default OUT.quarantine.parquet",
    )
    parser.add_argument(
        "--max-chars", type=int, default=None,
        help="longest readable section in characters (default params claims.max_chars, at most 1,000,000)",
    )
    parser.add_argument("--no-gate", action="store_true", help="skip the Great Expectations gate")
    parser.add_argument(
        "--report-dir", default="reports/validation", help="where the gate writes extract_claims.md/.json"
    )



def run(args: argparse.Namespace, params: dict) -> int:
    text_cols = [c.strip() for c in args.text_cols.split(",") if c.strip()]
    if not text_cols:
        raise StageError("--text-cols: give at least one column name")
    df = read_report_csv(args.input)
    claims, quarantine, stats = extract_claims(
        df, args.id_col, text_cols, source=args.input, max_chars=max_chars_of(args, params)
    )
    claims = claims.sort(["id"], maintain_order=True)
    if not args.no_gate:
        gate_claims(claims, "extract_claims", args.report_dir)
    qpath = Path(args.quarantine) if args.quarantine else default_quarantine_path(args.out)
    write_parquet(claims, args.out)
    write_parquet(quarantine, qpath)
    log.info(
        "%s: %d reports (%d quarantined, %d without text, %d with claims) -> %d claims -> %s",
        args.input, stats["rows"], stats["rows_quarantined"], stats["rows_empty"], stats["rows_with_claims"],
        stats["claims"], args.out,
    )
    if quarantine.height:
        log.warning("%d report(s) quarantined -> %s", quarantine.height, qpath)
    return 0
