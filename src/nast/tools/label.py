"""``nast label``: a tool (no rule of the DAG) over :mod:`nast.text.label`."""

from __future__ import annotations

import argparse
import gzip
import logging
from pathlib import Path

from nast.errors import StageError
from nast.io import write_json, write_text
from nast.text.label import DEFAULT_PRECEDENCE, PRECEDENCE, label_reports, to_chexpert_csv
from nast.text.screen import read_report_csv

log = logging.getLogger(__name__)


def _write_csv_text(text: str, path: Path) -> None:
    if path.name.endswith(".gz"):
        from nast.io import atomic_write  # the same temp-and-rename as every other write

        with atomic_write(path) as tmp:
            tmp.write_bytes(gzip.compress(text.encode("utf-8"), mtime=0))
    else:
        write_text(text, path)



def _split_cols(value: str, flag: str) -> list[str]:
    cols = [c.strip() for c in value.split(",") if c.strip()]
    if not cols:
        raise StageError(f"{flag}: give at least one column name")
    return cols



# --------------------------------------------------------------------------- CLI
def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("input", metavar="IN.csv",
                        help="report CSV (plain or .gz; any layout with id and text columns)")
    parser.add_argument("--id-col", required=True,
                        help="column(s) identifying a report, comma-separated (e.g. uid, or subject_id,study_id)")
    parser.add_argument("--text-cols", required=True, help="comma-separated text columns, e.g. findings,impression")
    parser.add_argument("--out", required=True,
                        help="labels CSV (.csv or .csv.gz) in the layout of mimic-cxr-2.0.0-chexpert.csv")
    parser.add_argument("--quarantine", default=None,
                        help="rows that could not be labelled (stage,key,reason,source); default OUT.quarantine.csv")
    parser.add_argument("--max-chars", type=int, default=None,
                        help="longest readable section in characters "
                             "(default params claims.max_chars, at most 1,000,000)")
    parser.add_argument("--workers", type=int, default=1,
                        help="reader processes (default 1; 0 = one per available CPU core)")
    parser.add_argument("--precedence", choices=sorted(PRECEDENCE), default=DEFAULT_PRECEDENCE,
                        help="which state wins when a report has several for one condition: chexpert "
                             "(default: the CheXpert labeler's 1 > -1 > 0) or uncertain-first (-1 > 1 > 0)")



def run(args: argparse.Namespace, params: dict) -> int:
    from nast.text.claims import default_quarantine_path, max_chars_of, sibling_path

    id_cols = _split_cols(args.id_col, "--id-col")
    text_cols = _split_cols(args.text_cols, "--text-cols")
    out = Path(args.out)
    if not (out.name.endswith(".csv") or out.name.endswith(".csv.gz")):
        raise StageError(f"--out must end in .csv or .csv.gz: {out}")
    df = read_report_csv(args.input)
    labels, quarantine, stats = label_reports(df, id_cols, text_cols, max_chars=max_chars_of(args, params),
                                              precedence=args.precedence, workers=args.workers,
                                              source=args.input)
    qpath = Path(args.quarantine) if args.quarantine else default_quarantine_path(out, ".csv")
    _write_csv_text(to_chexpert_csv(labels), out)
    write_text(quarantine.write_csv(), qpath)
    write_json({**stats, "input": str(args.input), "out": str(out), "quarantine": str(qpath)},
               sibling_path(out, ".summary.json"))
    log.info("label: %s: %d rows -> %d labelled (%d with a negative label), %d quarantined -> %s",
             args.input, stats["rows_in"], stats["labelled"], stats["with_negative"], stats["quarantined"], out)
    if quarantine.height:
        log.warning("label: %d row(s) quarantined %s -> %s", quarantine.height, stats["quarantined_by_reason"], qpath)
    return 0
