"""Claim extraction from radiology report text: ``nast extract-claims`` (any report CSV).

A *claim* is one mention of a CheXpert finding in a report with its polarity, location and severity:

    id | finding (CheXpert name) | polarity (positive|negative|uncertain) | location | severity | evidence

``location`` is the normalised laterality and zone ("left lower", "bilateral basilar", "right", or
null), ``severity`` the normalised severity word (mild|moderate|severe|small|large|borderline or null),
``evidence`` the sentence the mention was read from. The reading itself (medspaCy ConText over the
CSV lexicon in ``nast/text/data``) lives in :mod:`nast.text.polarity`; this module applies it to a
table: every text column of every row is read separately (a sentence never spans two sections) and
the mentions are stacked, in report order.

Works on any CSV with an id column and one or more text columns (MIMIC-CXR sections, Open-i
``indiana_reports.csv`` ``findings,impression``, a hospital export). A missing id/text column stops
with an error naming the file and column; empty or missing text is fine (no claims) and counted.
"""

from __future__ import annotations

import argparse
import logging
from pathlib import Path

import polars as pl

from nast.errors import StageError
from nast.io import require_columns, write_parquet

log = logging.getLogger(__name__)

CLAIM_SCHEMA: dict[str, pl.DataType] = {
    "id": pl.Utf8,
    "finding": pl.Utf8,
    "polarity": pl.Utf8,
    "location": pl.Utf8,
    "severity": pl.Utf8,
    "evidence": pl.Utf8,
}
POLARITIES = ("positive", "negative", "uncertain")

#: Great Expectations suite for claims tables (kept as data; see nast.validation.gate).
CLAIMS_EXPECTATIONS: list[tuple[str, dict]] = [
    ("ExpectColumnValuesToNotBeNull", {"column": "id"}),
    ("ExpectColumnValuesToNotBeNull", {"column": "finding"}),
    ("ExpectColumnValuesToNotBeNull", {"column": "evidence"}),
    ("ExpectColumnValuesToBeInSet", {"column": "polarity", "value_set": list(POLARITIES)}),
]


def _finding_set() -> list[str]:
    from nast.conditions import CONDITIONS

    return list(CONDITIONS)


def claims_expectations() -> list[tuple[str, dict]]:
    return CLAIMS_EXPECTATIONS + [
        ("ExpectColumnValuesToBeInSet", {"column": "finding", "value_set": _finding_set()}),
    ]


def extract_claims(
    df: pl.DataFrame, id_col: str, text_cols: list[str], source: str | Path = "<table>"
) -> tuple[pl.DataFrame, dict[str, int]]:
    """Claims of every row of ``df`` (pure: frame in, frame out).

    Returns the claims table (schema :data:`CLAIM_SCHEMA`, rows in input-row then report order) and
    counts: ``rows``, ``rows_empty`` (no text in any text column), ``rows_with_claims``, ``claims``.
    """
    from nast.text.polarity import extract_mentions_many

    require_columns(df, [id_col, *text_cols], source)
    ids = [None if v is None else str(v) for v in df[id_col].to_list()]
    if any(i is None for i in ids):
        n = sum(i is None for i in ids)
        raise StageError(f"{source}: column {id_col!r} has {n} empty id(s)")
    columns = [df[c].cast(pl.Utf8).to_list() for c in text_cols]
    texts: list[str | None] = []
    owners: list[int] = []
    for row in range(df.height):
        for col in columns:
            texts.append(col[row])
            owners.append(row)
    rows: list[dict] = []
    with_claims: set[int] = set()
    empty_rows = sum(
        1 for row in range(df.height) if not any((col[row] or "").strip() for col in columns)
    )
    step = max(1, len(texts) // 10)
    for k, (owner, mentions) in enumerate(zip(owners, extract_mentions_many(texts))):
        if k and k % step == 0:
            log.info("read %d/%d report sections", k, len(texts))
        for m in mentions:
            with_claims.add(owner)
            rows.append(
                {
                    "id": ids[owner],
                    "finding": m.finding,
                    "polarity": m.polarity,
                    "location": m.location,
                    "severity": m.severity,
                    "evidence": m.evidence,
                }
            )
    claims = pl.DataFrame(rows, schema=CLAIM_SCHEMA)
    stats = {
        "rows": df.height,
        "rows_empty": empty_rows,
        "rows_with_claims": len(with_claims),
        "claims": claims.height,
    }
    return claims, stats


def read_report_csv(path: str | Path) -> pl.DataFrame:
    path = Path(path)
    if not path.is_file():
        raise StageError(f"report CSV not found: {path}")
    try:
        return pl.read_csv(path, infer_schema_length=0)  # every column as text: ids stay verbatim
    except Exception as exc:  # noqa: BLE001 - polars raises several error types
        raise StageError(f"{path}: not a readable CSV: {exc}") from exc


def gate_claims(claims: pl.DataFrame, suite: str = "claims", report_dir: str | Path = "reports/validation") -> None:
    """Great Expectations gate (nast.validation) over a claims table; raises ValidationGateError."""
    from nast.validation import gate

    gate(claims, suite, claims_expectations(), report_dir=report_dir)


# --------------------------------------------------------------------------- CLI
def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("input", metavar="IN.csv", help="report CSV (any layout with an id column and text columns)")
    parser.add_argument("--id-col", required=True, help="column identifying a report (copied to the 'id' column)")
    parser.add_argument(
        "--text-cols",
        required=True,
        help="comma-separated text columns read in this order, e.g. findings,impression",
    )
    parser.add_argument("--out", required=True, help="output parquet: one row per finding mention")
    parser.add_argument("--no-gate", action="store_true", help="skip the Great Expectations gate")
    parser.add_argument(
        "--report-dir", default="reports/validation", help="where the gate writes extract_claims.md/.json"
    )


def run(args: argparse.Namespace, params: dict) -> int:
    text_cols = [c.strip() for c in args.text_cols.split(",") if c.strip()]
    if not text_cols:
        raise StageError("--text-cols: give at least one column name")
    df = read_report_csv(args.input)
    claims, stats = extract_claims(df, args.id_col, text_cols, source=args.input)
    claims = claims.sort(["id"], maintain_order=True)
    if not args.no_gate:
        gate_claims(claims, "extract_claims", args.report_dir)
    write_parquet(claims, args.out)
    log.info(
        "%s: %d reports (%d without text, %d with claims) -> %d claims -> %s",
        args.input, stats["rows"], stats["rows_empty"], stats["rows_with_claims"], stats["claims"], args.out,
    )
    return 0
