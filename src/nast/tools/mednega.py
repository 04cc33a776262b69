"""``nast mednega``: a tool (no rule of the DAG) over :mod:`nast.text.mednega`."""

from __future__ import annotations

import argparse
import json
import logging
from pathlib import Path
from typing import Any

from nast.io import read_parquet, require_columns, write_parquet, write_text
from nast.text.mednega import BENCHMARK_COLUMNS, from_records, read_records, to_records

log = logging.getLogger(__name__)


# ---------------------------------------------------------------------------------------------
# CLI
# ---------------------------------------------------------------------------------------------
def add_arguments(parser: argparse.ArgumentParser) -> None:
    sub = parser.add_subparsers(dest="action", metavar="ACTION", required=True)
    ex = sub.add_parser("export", help="benchmark.parquet -> MedNega-CXR JSON",
                        description="Write the benchmark in the official MedNega-CXR JSON layout.")
    ex.add_argument("--benchmark", required=True, help="benchmark.parquet written by `nast affirm`")
    ex.add_argument("--out", required=True, help="JSON file to write")
    ex.add_argument("--params", default=argparse.SUPPRESS, help="pipeline configuration (default: params.yaml)")
    im = sub.add_parser("import", help="MedNega-CXR JSON -> benchmark.parquet",
                        description="Read an official MedNega-CXR JSON file into the benchmark schema.")
    im.add_argument("json", help="MedNega-CXR JSON file (a list of records)")
    im.add_argument("--out", required=True, help="benchmark.parquet to write")
    im.add_argument("--cohort", help="cohort.parquet; attaches dicom_id/image_path/split by study_id "
                                     "(records without a frontal image are quarantined)")
    im.add_argument("--quarantine", help="quarantine parquet (default: <out stem>.quarantine.parquet)")
    im.add_argument("--params", default=argparse.SUPPRESS, help="pipeline configuration (default: params.yaml)")



def run(args: argparse.Namespace, params: dict[str, Any]) -> int:
    if args.action == "export":
        bench = read_parquet(args.benchmark, "benchmark table")
        require_columns(bench, [c for c in BENCHMARK_COLUMNS if c not in ("dicom_id", "image_path", "split")],
                        args.benchmark)
        records = to_records(bench)
        write_text(json.dumps(records, indent=2, ensure_ascii=False) + "\n", args.out)
        log.info("mednega export: %d records -> %s", len(records), args.out)
        return 0
    records = read_records(args.json, "MedNega-CXR JSON")
    cohort = None
    if args.cohort:
        cohort = read_parquet(args.cohort, "cohort table")
        require_columns(cohort, ["study_id", "dicom_id", "view", "image_path", "split"], args.cohort)
    df, qdf = from_records(records, cohort, source=str(Path(args.json)), n_process=params.mcq.n_process)
    out = Path(args.out)
    qpath = args.quarantine or out.with_name(out.stem + ".quarantine.parquet")
    write_parquet(df, out)
    write_parquet(qdf, qpath)
    log.info("mednega import: %d records -> %d rows, %d quarantined (%s); %d verified, %d affirm-verified",
             len(records), df.height, qdf.height, qpath, int(df["verified"].sum() or 0),
             int(df["affirm_verified"].sum() or 0))
    return 0
