"""``nast claims``: claims of every study's report in the cohort.

The cohort has one row per image; all images of a study share one report, so the study's first
row (by ``dicom_id``) carries the text. The text columns read are ``params.claims.text_cols``
(default ``findings, impression``), each read separately by :func:`nast.text.claims.extract_claims`.
Output: the claims table (``id`` = ``str(study_id)``, finding, polarity, location, severity,
evidence) plus ``study_id``, ``subject_id``, ``split``; rows sorted by study, then report order.
Studies without text have no claims; they are counted in the log line (nothing is dropped: claims
are mentions, not studies). A study whose report cannot be read (a section with undecodable bytes
or longer than ``params.claims.max_chars``, see :mod:`nast.text.screen`) is a row of the
``--quarantine`` table (stage ``claims``, key ``study_id``, reason) and the run goes on. The table
passes the ``claims`` Great Expectations gate.
"""

from __future__ import annotations

import argparse
import logging

from nast.io import read_table, write_parquet
from nast.text.claims import max_chars_of
from nast.text.cohort_claims import cohort_claims, stage_expectations

log = logging.getLogger(__name__)

#: the params.yaml keys (sections or dotted keys) this stage reads: its rule and DVC stage declare
#: exactly these (nast.codedeps.declared_params; the recording check of tests/conftest.py)
PARAMS_KEYS = ("claims", "data.allow_empty")


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--cohort", required=True, help="cohort parquet (nast ingest)")
    parser.add_argument("--out", required=True, help="claims parquet (one row per finding mention)")
    parser.add_argument("--quarantine", default=None,
                        help="studies whose report could not be read (default: OUT.quarantine.parquet)")
    parser.add_argument("--report-dir", default="reports/validation", help="Great Expectations reports folder")


def run(args: argparse.Namespace, params: dict) -> int:
    from nast.validation import gate

    text_cols = list(params.claims.text_cols)
    from nast.text.claims import default_quarantine_path

    cohort = read_table(args.cohort, "cohort table", params)
    claims, quarantine, stats = cohort_claims(cohort, text_cols, source=args.cohort,
                                              max_chars=max_chars_of(args, params))
    gate(claims, "claims", stage_expectations(), report_dir=args.report_dir)
    write_parquet(claims, args.out)
    qpath = args.quarantine or default_quarantine_path(args.out)
    write_parquet(quarantine, qpath)
    log.info(
        "claims: %d studies (%d quarantined, %d without report text, %d with claims) -> %d claims -> %s",
        stats["studies"], stats["rows_quarantined"], stats["rows_empty"], stats["rows_with_claims"],
        stats["claims"], args.out,
    )
    if quarantine.height:
        log.warning("claims: %d stud(ies) quarantined -> %s", quarantine.height, qpath)
    return 0
