"""``nast ingest``: read a dataset into the cohort table, quarantine table and a JSON summary.

Outputs: ``--out`` (cohort.parquet, one row per kept image, sorted by subject_id, study_id,
dicom_id), ``--quarantine`` (stage, key = dicom_id, reason, source) and next to it
``<quarantine stem>.summary.json`` (rows in / kept / quarantined / filtered by view, counts by
reason, split source). The cohort is gated by the ``cohort`` Great Expectations suite
(report in ``--validation-dir``/cohort.md).
"""

from __future__ import annotations

import argparse
import logging

from nast.ingest.sources import ingest, summary_path
from nast.io import write_json, write_parquet

log = logging.getLogger(__name__)

#: the params.yaml keys (sections or dotted keys) this stage reads: its rule and DVC stage declare
#: exactly these (nast.codedeps.declared_params; the recording check of tests/conftest.py)
PARAMS_KEYS = ("data",)


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--source", choices=["mimic", "openi", "demo"], default=None,
                        help="dataset layout (default: params data.source); demo = MIMIC layout, dataset 'demo'")
    parser.add_argument("--root", default=None, help="dataset root directory (default: params data.root)")
    parser.add_argument("--reports-zip", default=None,
                        help="mimic-cxr-reports.zip to read reports from (default: params data.reports_zip; "
                             "else <root>/mimic-cxr-reports.zip if present, else the files/ .txt tree)")
    parser.add_argument("--out", required=True, help="output cohort parquet")
    parser.add_argument("--quarantine", required=True,
                        help="output quarantine parquet (a .summary.json with counts is written next to it)")
    parser.add_argument("--report-dir", "--validation-dir", dest="validation_dir", default="reports/validation",
                        help="folder of the Great Expectations report cohort.md/.json (default: reports/validation)")



def run(args: argparse.Namespace, params: dict) -> int:
    from nast.ingest import gate_cohort

    data = params.data
    source = args.source or data.source
    root = args.root or data.root
    reports_zip = args.reports_zip or data.reports_zip
    cohort, quarantine, summary = ingest(source, root, data, reports_zip)
    log.info(
        "ingest: rows in=%d kept=%d quarantined=%d filtered(view)=%d (reconciled)",
        summary["rows_in"], summary["kept"], summary["quarantined"], summary["filtered_view"],
    )
    for reason, n in summary["quarantined_by_reason"].items():
        log.info("ingest: quarantined %-22s %d", reason, n)
    write_parquet(quarantine, args.quarantine)
    write_json(summary, summary_path(args.quarantine))
    gate_cohort(cohort, report_dir=args.validation_dir)
    write_parquet(cohort, args.out)
    log.info("ingest: wrote %s (%d images, %d studies, %d subjects)", args.out, cohort.height,
             summary["n_studies"], summary["n_subjects"])
    return 0
